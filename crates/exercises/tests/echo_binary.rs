//! Tests of exercise `echo_binary`: run with `cargo run -p exercises -- check echo_binary`.

use std::time::Duration;

use exercises::echo_binary::run;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Starts the exercise's server and connects a WebSocket client to `/echo`.
async fn connect()
-> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(run(listener, std::future::pending()));
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/echo"))
        .await
        .expect("WebSocket handshake");
    socket
}

/// Text still comes straight back.
#[tokio::test]
async fn text_is_echoed() {
    let mut socket = connect().await;
    socket.send(Message::text("hello")).await.expect("send");
    let answer = timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no echo within 5 s");
    assert_eq!(
        answer.expect("open").expect("a message"),
        Message::text("hello")
    );
}

/// Binary data is refused with close code 1003, not echoed.
#[tokio::test]
async fn binary_is_refused_with_1003() {
    let mut socket = connect().await;
    socket
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    let answer = timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no answer within 5 s")
        .expect("the connection ended without a Close frame")
        .expect("a frame");
    match answer {
        Message::Close(Some(frame)) => assert_eq!(
            frame.code,
            CloseCode::Unsupported,
            "the close code for binary data must be 1003 (unsupported data)"
        ),
        other => panic!(
            "after a binary message the server must close with 1003, but it sent {other:?}; \
             see the TODO in exercises/echo_binary.rs"
        ),
    }
}
