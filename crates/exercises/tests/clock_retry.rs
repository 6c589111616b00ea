//! Tests of exercise `clock_retry`: run with `cargo run -p exercises -- check clock_retry`.

use std::time::Duration;

use exercises::clock_retry::{Config, run};
use realtime_kit::client::EventStream;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Starts the exercise's clock on a free port and returns its `/events` URL.
async fn start(retry: Option<Duration>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let config = Config {
        tick_interval: Duration::from_millis(20),
        retry,
    };
    tokio::spawn(run(listener, config, std::future::pending()));
    format!("http://{address}/events")
}

/// Connects and reads the first event, so everything before it (the `retry:` line) is parsed.
async fn first_event(url: &str) -> EventStream {
    let mut stream = EventStream::connect(url, &[]).await.expect("connect");
    let event = timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("no tick within 5 s: is the ticker still running?")
        .expect("read the stream");
    assert!(event.is_some(), "the stream ended before its first tick");
    stream
}

/// A configured delay goes out as `retry:` before the first event.
#[tokio::test]
async fn configured_retry_is_sent_first() {
    let url = start(Some(Duration::from_millis(5000))).await;
    let stream = first_event(&url).await;
    assert_eq!(
        stream.retry(),
        Some(Duration::from_millis(5000)),
        "the stream must start with `retry: 5000` when Config::retry is 5 s; \
         see the TODO in exercises/clock_retry.rs"
    );
}

/// Without a configured delay, no `retry:` line is sent: the browser keeps its default.
#[tokio::test]
async fn no_retry_line_without_a_delay() {
    let url = start(None).await;
    let stream = first_event(&url).await;
    assert_eq!(
        stream.retry(),
        None,
        "with Config::retry = None the stream must not send any `retry:` line"
    );
}
