//! Tests of exercise `ticker_unsubscribe`: run with
//! `cargo run -p exercises -- check ticker_unsubscribe`.

use std::time::Duration;

use exercises::ticker_unsubscribe::{Config, run};
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

/// After the `unsubscribed` confirmation, no quote of that symbol arrives; the others go on.
#[tokio::test]
async fn unsubscribe_stops_that_symbols_quotes() {
    let mut socket = connect().await;
    send(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["ACME", "GLOBEX"]}),
    )
    .await;
    assert_eq!(next(&mut socket).await["type"], "subscribed");
    send(
        &mut socket,
        json!({"type": "unsubscribe", "symbols": ["ACME"]}),
    )
    .await;
    // Quotes sent before the command was read may still come; then the confirmation.
    loop {
        let message = next(&mut socket).await;
        match message["type"].as_str() {
            Some("quote") => continue,
            Some("unsubscribed") => {
                assert_eq!(
                    message["symbols"],
                    json!(["ACME"]),
                    "confirm the symbols dropped"
                );
                break;
            }
            _ => panic!(
                "`unsubscribe` must be confirmed with {{\"type\":\"unsubscribed\",\"symbols\":\
                 [\"ACME\"]}}, got {message}; see the TODOs in exercises/ticker_unsubscribe.rs"
            ),
        }
    }
    for _ in 0..10 {
        let quote = next(&mut socket).await;
        assert_eq!(quote["type"], "quote");
        assert_eq!(
            quote["symbol"], "GLOBEX",
            "after `unsubscribed`, only GLOBEX quotes may come, got {quote}"
        );
    }
}

/// A command the server does not know is answered with an error, and the socket stays open.
#[tokio::test]
async fn unknown_command_is_an_error_not_a_disconnect() {
    let mut socket = connect().await;
    send(&mut socket, json!({"type": "buy", "symbols": ["ACME"]})).await;
    assert_eq!(next(&mut socket).await["type"], "error");
    send(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["INITECH"]}),
    )
    .await;
    assert_eq!(
        next(&mut socket).await["type"],
        "subscribed",
        "the socket stays usable"
    );
}
