//! Tests of exercise `clock_resume`: run with `cargo run -p exercises -- check clock_resume`.

use std::time::Duration;

use exercises::clock_resume::{Config, run};
use http::StatusCode;
use realtime_kit::client::EventStream;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Starts the exercise's clock, ticking every 20 ms, and returns its `/events` URL.
async fn start() -> String {
    start_ticking_every(Duration::from_millis(20)).await
}

async fn start_ticking_every(tick_interval: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let config = Config { tick_interval };
    tokio::spawn(run(listener, config, std::future::pending()));
    format!("http://{address}/events")
}

/// The ids of the first `count` ticks a client sending `headers` receives.
async fn first_ids(url: &str, headers: &[(&str, &str)], count: usize) -> Vec<u64> {
    let mut stream = EventStream::connect(url, headers).await.expect("connect");
    assert_eq!(stream.status(), StatusCode::OK);
    let mut ids = Vec::new();
    while ids.len() < count {
        let event = timeout(Duration::from_secs(5), stream.next_event())
            .await
            .expect("no tick within 5 s")
            .expect("read the stream")
            .expect("the stream ended");
        ids.push(event.last_event_id.parse().expect("tick ids are numbers"));
    }
    ids
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A client that reconnects with the id of the last tick it saw gets only later ticks, in order.
/// (Ticks come every 300 ms here, so the reconnect arrives while the tick it saw is the latest.)
#[tokio::test]
async fn a_reconnecting_client_resumes_after_its_last_event_id() {
    let url = start_ticking_every(Duration::from_millis(300)).await;
    let seen = first_ids(&url, &[], 1).await[0];
    let seen_text = seen.to_string();
    let ids = first_ids(&url, &[("last-event-id", &seen_text)], 3).await;
    assert!(
        ids[0] > seen,
        "a client that reconnected with `Last-Event-ID: {seen}` was sent tick {} again (or an \
         older one): it must get only ticks with ids above {seen}; see the TODO in \
         exercises/clock_resume.rs",
        ids[0]
    );
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids must increase: {ids:?}"
    );
}

/// What one client claims changes nothing for the others: after a client sent a huge id, a new
/// client still gets ticks numbered by the clock.
#[tokio::test]
async fn one_clients_id_changes_nothing_for_the_others() {
    let url = start().await;
    let _claimant = EventStream::connect(&url, &[("last-event-id", "9007199254740990")])
        .await
        .expect("connect");
    let ids = first_ids(&url, &[], 2).await;
    assert!(
        ids.iter().all(|id| id.abs_diff(now_ms()) < 60_000),
        "after one client sent `Last-Event-ID: 9007199254740990`, another was sent ids {ids:?}, \
         far from the clock's time: a client's id must not move anything the others get"
    );
}

/// An id from the future (a clock set back, or made up) is ignored: that client gets the
/// current tick at once instead of waiting for a day.
#[tokio::test]
async fn an_id_from_the_future_starts_at_the_current_tick() {
    let url = start().await;
    let tomorrow = (now_ms() + 86_400_000).to_string();
    let ids = first_ids(&url, &[("last-event-id", &tomorrow)], 1).await;
    assert!(
        ids[0].abs_diff(now_ms()) < 60_000,
        "a client that sent an id from tomorrow was sent {ids:?}"
    );
}

/// A `Last-Event-ID` that is not a number is a client error, with a JSON body saying so.
#[tokio::test]
async fn a_malformed_last_event_id_is_400() {
    let url = start().await;
    let stream = EventStream::connect(&url, &[("last-event-id", "yesterday")])
        .await
        .expect("connect");
    assert_eq!(
        stream.status(),
        StatusCode::BAD_REQUEST,
        "`Last-Event-ID: yesterday` must be answered 400 with a JSON error"
    );
}
