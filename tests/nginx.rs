//! The demos behind nginx, as `examples/deploy/nginx.conf` deploys them: each test starts its
//! own Redis, chat instances (each in a runtime of its own, so a test can crash one) and an
//! nginx running the shipped configuration on free ports.
//!
//! Run with `cargo test --test nginx` (needs `redis-server`, `nginx` and `openssl`:
//! `apt-get install redis-server nginx openssl`; without them the tests skip, except under CI).

use futures_util::{SinkExt, StreamExt};
use http::Method;
use realtime_kit::client::{self, EventStream};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::services::{CrashableChat, TestNginx, TestRedis};
use common::{TestServer, within};

async fn post(url: &str, text: &str) -> Value {
    let body = json!({ "user": "ann", "text": text }).to_string();
    let response = within(client::fetch(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body,
    ))
    .await
    .expect("POST");
    assert_eq!(response.status, 201, "{}", response.text());
    response.json().expect("JSON")
}

/// The next `message` event's JSON, or `None` when the stream ended.
async fn next_message(stream: &mut EventStream) -> Option<Value> {
    loop {
        let event = within(stream.next_event()).await.ok()??;
        if event.event == "message" {
            return Some(serde_json::from_str(&event.data).expect("JSON"));
        }
    }
}

// ANCHOR: failover
/// Through nginx, an event stream is delivered as it happens; when the instance serving it is
/// killed, the client reconnects through nginx with `Last-Event-ID`, lands on another
/// instance, and gets exactly what it missed: nothing lost, nothing twice.
#[tokio::test]
async fn a_killed_instance_s_clients_resume_on_another_through_nginx() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let mut a = CrashableChat::start(redis.url());
    let b = CrashableChat::start(redis.url());
    // B as nginx's backup: every stream starts on A, so the test knows which one to kill.
    let upstream = [a.addr.to_string(), format!("{} backup", b.addr)];
    let Some(nginx) = TestNginx::start(&upstream, "127.0.0.1:9").await else {
        return;
    };
    let front = |path: &str| format!("http://127.0.0.1:{}{path}", nginx.chat_http);

    let mut stream = within(EventStream::connect(&front("/events"), &[]))
        .await
        .expect("connect through nginx");
    assert_eq!(stream.status(), 200, "{}", nginx.error_log());
    let mut posted = Vec::new();
    for n in 0..3 {
        posted.push(post(&front("/messages"), &format!("before {n}")).await);
        let received = next_message(&mut stream).await.expect("live through nginx");
        assert_eq!(received, posted[n]);
    }

    a.crash();
    // The stream ends (nginx closes it when its upstream connection breaks).
    assert_eq!(next_message(&mut stream).await, None);
    let last_seen = stream.last_event_id().to_owned();
    for n in 0..3 {
        posted.push(post(&front("/messages"), &format!("after {n}")).await);
    }
    let mut resumed = within(EventStream::connect(
        &front("/events"),
        &[("last-event-id", &last_seen)],
    ))
    .await
    .expect("reconnect through nginx");
    assert_eq!(resumed.status(), 200, "{}", nginx.error_log());
    for expected in &posted[3..] {
        assert_eq!(next_message(&mut resumed).await.as_ref(), Some(expected));
    }
    let live = post(&front("/messages"), "live").await;
    assert_eq!(next_message(&mut resumed).await, Some(live));
}
// ANCHOR_END: failover

/// nginx passes the WebSocket upgrade on (the `Upgrade`/`Connection` headers of the shipped
/// configuration): echo-ws's `/echo` answers through it.
#[tokio::test]
async fn a_websocket_upgrades_through_nginx() {
    let echo = TestServer::start(|listener, signal| {
        echo_ws::run(listener, echo_ws::Config::default(), signal)
    })
    .await;
    // No chat behind this one: a port nothing listens on (nginx needs one server per upstream).
    let no_chat = ["127.0.0.1:9".to_owned()];
    let Some(nginx) = TestNginx::start(&no_chat, &echo.addr.to_string()).await else {
        return;
    };
    let url = format!("ws://127.0.0.1:{}/echo", nginx.echo_http);
    let (mut socket, response) = within(tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap_or_else(|error| panic!("upgrade through nginx: {error}\n{}", nginx.error_log()));
    assert_eq!(response.status(), 101);
    within(socket.send(Message::text("through nginx")))
        .await
        .expect("send");
    let reply = within(socket.next())
        .await
        .expect("a reply")
        .expect("a frame");
    assert_eq!(reply, Message::text("through nginx"));
}
