//! Tests of exercise `ticker_range`: run with `cargo run -p exercises -- check ticker_range`.

use std::time::Duration;

use exercises::ticker_range::{Config, run};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts the exercise's ticker and connects a WebSocket client to it.
async fn connect() -> Socket {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let config = Config {
        quote_interval: Duration::from_millis(5),
    };
    tokio::spawn(run(listener, config, std::future::pending()));
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/quotes/ws"))
        .await
        .expect("WebSocket handshake");
    socket
}

async fn send(socket: &mut Socket, command: Value) {
    socket
        .send(Message::text(command.to_string()))
        .await
        .expect("send");
}

/// The next JSON message from the server.
async fn next(socket: &mut Socket) -> Value {
    let message = timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no message within 5 s")
        .expect("the connection ended")
        .expect("a frame");
    match message {
        Message::Text(text) => serde_json::from_str(&text).expect("JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Every quote carries its symbol's range since the opening price, which only ever widens.
#[tokio::test]
async fn quotes_carry_the_days_range() {
    let mut socket = connect().await;
    send(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["ACME"]}),
    )
    .await;
    assert_eq!(next(&mut socket).await["type"], "subscribed");
    // The market opens at 100.00: the day's range includes the opening price.
    let (mut lowest, mut highest) = (10_000, 10_000);
    let mut previous: Option<(i64, i64)> = None;
    for _ in 0..20 {
        let quote = next(&mut socket).await;
        let field = |name: &str| {
            quote[name]
                .as_i64()
                .unwrap_or_else(|| panic!("each quote needs a whole number `{name}`, got {quote}"))
        };
        let (price, low, high) = (
            field("price_cents"),
            field("low_cents"),
            field("high_cents"),
        );
        lowest = lowest.min(price);
        highest = highest.max(price);
        assert!(
            low <= lowest && high >= highest,
            "the range must hold every price of the day (opening 10000 and all seen so far: \
             {lowest}..={highest}), got {low}..={high}; see the TODO in exercises/ticker_range.rs"
        );
        if let Some((previous_low, previous_high)) = previous {
            assert!(
                low <= previous_low && high >= previous_high,
                "a day's range never narrows"
            );
        }
        previous = Some((low, high));
    }
}
