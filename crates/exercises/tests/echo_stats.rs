//! Tests of exercise `echo_stats`: run with `cargo run -p exercises -- check echo_stats`.

use std::net::SocketAddr;
use std::time::Duration;

use exercises::echo_stats::run;
use futures_util::{SinkExt, StreamExt};
use realtime_kit::client::get;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// Starts the exercise's server and returns its address.
async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(run(listener, std::future::pending()));
    address
}

async fn stats(address: SocketAddr) -> serde_json::Value {
    let response = get(&format!("http://{address}/stats"))
        .await
        .expect("GET /stats");
    response.json().expect("/stats answers JSON")
}

/// Polls `/stats` until `open` is `expected`; sessions end a moment after the client's Close.
async fn wait_for_open(address: SocketAddr, expected: u64) {
    let waited = timeout(Duration::from_secs(3), async {
        loop {
            let open = stats(address).await["open"].as_u64();
            if open == Some(expected) {
                return;
            }
            // Not a guess at how long it takes: a short pause between polls, bounded above.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "`open` in /stats must become {expected}, but it is {}; see the TODO in \
         exercises/echo_stats.rs",
        stats(address).await["open"]
    );
}

/// `open` follows the sockets up and down, and `echoed` counts every echoed message.
#[tokio::test]
async fn stats_count_open_sockets_and_echoed_messages() {
    let address = start().await;
    let url = format!("ws://{address}/echo");
    let (mut first, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("handshake");
    let (second, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("handshake");
    wait_for_open(address, 2).await;
    for text in ["a", "b", "c"] {
        first.send(Message::text(text)).await.expect("send");
        let echo = timeout(Duration::from_secs(5), first.next())
            .await
            .expect("no echo in 5 s");
        assert_eq!(echo.expect("open").expect("a message"), Message::text(text));
    }
    assert_eq!(
        stats(address).await["echoed"],
        3,
        "after 3 echoes `echoed` must be 3; see the TODO in exercises/echo_stats.rs"
    );
    drop(second); // gone without a Close frame, as a crashed client would
    wait_for_open(address, 1).await;
    first.close(None).await.expect("close");
    wait_for_open(address, 0).await;
}
