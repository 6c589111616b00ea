//! stock-ticker as one market instance and serving instances on one Redis: each test starts
//! its own `redis-server` and its instances on `127.0.0.1:0`.
//!
//! Run with `cargo test --test ticker_redis` (needs `redis-server`; without it the test skips,
//! except under CI).

use std::collections::BTreeMap;
use std::time::Duration;

use realtime_kit::backplane::{Backplane, RedisBackplane};
use realtime_kit::client::EventStream;
use stock_ticker::{Config, Role};
use tokio::time::timeout;

mod common;
use common::TestServer;
use common::services::TestRedis;

async fn start(redis: &TestRedis, role: Role) -> TestServer {
    let config = Config {
        backplane: Backplane::Redis(RedisBackplane::open(&redis.url()).expect("a valid URL")),
        role,
        update_interval: Duration::from_millis(5),
        ..Config::default()
    };
    TestServer::start(|listener, signal| stock_ticker::run(listener, config, signal)).await
}

/// Reads `quote` events from `/quotes/stream` until it has `count`, and returns them by
/// sequence number.
async fn quotes(server: &TestServer, count: usize) -> BTreeMap<u64, String> {
    let mut stream = EventStream::connect(&server.url("/quotes/stream"), &[])
        .await
        .expect("connect");
    assert_eq!(stream.status(), 200);
    let mut quotes = BTreeMap::new();
    while quotes.len() < count {
        let event = timeout(Duration::from_secs(10), stream.next_event())
            .await
            .expect("quotes keep coming")
            .expect("stream error")
            .expect("the stream ended");
        if event.event == "quote" {
            let seq = event.last_event_id.parse().expect("the id is the seq");
            quotes.insert(seq, event.data);
        }
    }
    quotes
}

/// Two serving instances and the market instance give the same quote (the same JSON) for the
/// same sequence number: one market, however many instances serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_instances_give_the_same_quotes_for_the_same_sequence_numbers() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let market = start(&redis, Role::Market).await;
    let first = start(&redis, Role::Serve).await;
    let second = start(&redis, Role::Serve).await;
    let (from_market, from_first, from_second) = tokio::join!(
        quotes(&market, 200),
        quotes(&first, 200),
        quotes(&second, 200)
    );
    let mut compared = 0;
    for (seq, quote) in &from_first {
        if let Some(other) = from_second.get(seq) {
            assert_eq!(quote, other, "seq {seq}");
            compared += 1;
        }
        if let Some(original) = from_market.get(seq) {
            assert_eq!(quote, original, "seq {seq} as the market made it");
        }
    }
    assert!(
        compared >= 100,
        "only {compared} sequence numbers in common"
    );
}
