//! Tests of exercise `clock_minute`: run with `cargo run -p exercises -- check clock_minute`.

use std::time::Duration;

use exercises::clock_minute::{Config, run};
use realtime_kit::client::EventStream;
use realtime_kit::parser::MessageEvent;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Starts the exercise's clock (3 ticks a "minute") and opens a stream to it.
async fn connect() -> EventStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let config = Config {
        tick_interval: Duration::from_millis(20),
        ticks_per_minute: 3,
    };
    tokio::spawn(run(listener, config, std::future::pending()));
    EventStream::connect(&format!("http://{address}/events"), &[])
        .await
        .expect("connect")
}

async fn next(stream: &mut EventStream) -> MessageEvent {
    timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("no event within 5 s: is the ticker still running?")
        .expect("read the stream")
        .expect("the stream ended")
}

/// After every third tick comes a `minute` event numbering the minutes, right after its tick.
#[tokio::test]
async fn a_minute_event_follows_every_third_tick() {
    let mut stream = connect().await;
    let mut minutes = Vec::new();
    let mut previous_tick: Option<u64> = None;
    // 12 ticks hold at least 3 whole minutes, wherever the stream joined.
    for _ in 0..16 {
        let event = next(&mut stream).await;
        match event.event.as_str() {
            "tick" => previous_tick = event.last_event_id.parse().ok(),
            "minute" => {
                let data: serde_json::Value = serde_json::from_str(&event.data)
                    .expect("the `minute` data must be JSON, like {\"minute\":1}");
                let tick = previous_tick.expect("a `minute` event must come right after its tick");
                assert_eq!(
                    tick % 3,
                    0,
                    "`minute` must follow ticks 3, 6, 9... (came after {tick})"
                );
                assert_eq!(
                    data["minute"].as_u64(),
                    Some(tick / 3),
                    "after tick {tick} the data must be {{\"minute\":{}}}",
                    tick / 3
                );
                minutes.push(tick / 3);
            }
            other => panic!("unexpected event name `{other}`"),
        }
    }
    assert!(
        minutes.len() >= 3,
        "16 events with 3 ticks a minute must hold at least 3 `minute` events, got {minutes:?}; \
         see the TODO in exercises/clock_minute.rs"
    );
}
