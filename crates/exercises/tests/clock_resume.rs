//! Tests of exercise `clock_resume`: run with `cargo run -p exercises -- check clock_resume`.
#![cfg(feature = "check")]

use std::time::Duration;

use exercises::clock_resume::{Config, run};
use http::StatusCode;
use realtime_kit::client::EventStream;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Starts the exercise's clock and returns its `/events` URL.
async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let config = Config {
        tick_interval: Duration::from_millis(20),
    };
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

/// A client that has seen tick 500 (from before a restart) gets only later ticks, in order.
#[tokio::test]
async fn a_reconnecting_client_resumes_after_its_last_event_id() {
    let url = start().await;
    let ids = first_ids(&url, &[("last-event-id", "500")], 3).await;
    assert!(
        ids[0] > 500,
        "a client sending `Last-Event-ID: 500` must get ticks numbered above 500, got {ids:?}; \
         see the TODO in exercises/clock_resume.rs"
    );
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids must increase: {ids:?}"
    );
}

/// Once one client moved the counter, a new client sees the same high numbers: one sequence.
#[tokio::test]
async fn the_counter_moves_for_everyone() {
    let url = start().await;
    first_ids(&url, &[("last-event-id", "900")], 1).await;
    let ids = first_ids(&url, &[], 2).await;
    assert!(
        ids[1] > 900,
        "after a client resumed from 900, new clients must see ids above 900 too, got {ids:?}"
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
        "`Last-Event-ID: yesterday` must be answered 400 (use realtime_kit::respond::error)"
    );
}
