//! Tests of exercise `chat_typing`: run with `cargo run -p exercises -- check chat_typing`.

use std::time::Duration;

use exercises::chat_typing::run;
use http::{Method, StatusCode};
use realtime_kit::client::{EventStream, Fetched, fetch};
use realtime_kit::parser::MessageEvent;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// Starts the exercise's room and returns its base URL.
async fn start() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(run(listener, std::future::pending()));
    format!("http://{address}")
}

async fn post(url: &str, body: serde_json::Value) -> Fetched {
    fetch(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
    .expect("POST")
}

async fn next(stream: &mut EventStream) -> MessageEvent {
    timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("no event within 5 s")
        .expect("read the stream")
        .expect("the stream ended")
}

/// `POST /typing` reaches every stream as a `typing` event that does not move `lastEventId`.
#[tokio::test]
async fn typing_is_broadcast_without_an_id() {
    let base = start().await;
    let mut stream = EventStream::connect(&format!("{base}/events"), &[])
        .await
        .expect("connect");
    post(
        &format!("{base}/send"),
        serde_json::json!({"name": "bob", "text": "hi"}),
    )
    .await;
    assert_eq!(next(&mut stream).await.event, "message");
    let answer = post(
        &format!("{base}/typing"),
        serde_json::json!({"name": "ann"}),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "POST /typing must answer 202; see the TODOs in exercises/chat_typing.rs"
    );
    let event = next(&mut stream).await;
    assert_eq!(
        event.event, "typing",
        "the stream must get a named `typing` event"
    );
    let data: serde_json::Value = serde_json::from_str(&event.data).expect("JSON data");
    assert_eq!(data["name"], "ann", "its data must be {{\"name\":\"ann\"}}");
    assert_eq!(
        event.last_event_id, "1",
        "a `typing` event must not carry an `id`: the last id must stay the last message's"
    );
}

/// A typing notice with an empty name is refused with a JSON error.
#[tokio::test]
async fn typing_without_a_name_is_400() {
    let base = start().await;
    let answer = post(&format!("{base}/typing"), serde_json::json!({"name": " "})).await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "an empty name must be answered 400"
    );
    assert!(
        answer.json().is_ok_and(|body| body["error"].is_string()),
        "with {{\"error\": ...}}"
    );
}
