//! echo-ws end to end: the real server on `127.0.0.1:0`, talked to by tokio-tungstenite as the
//! client, or by a raw TCP socket where the exact bytes matter (the handshake, a frame that no
//! correct client would send).
//!
//! Run with `cargo test --test echo_ws`. Heartbeats and timeouts are shortened here; every wait is
//! bounded by a timeout, none is a bare sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use echo_ws::Config;
use futures_util::{SinkExt, StreamExt};
use realtime_kit::client;
use realtime_kit::ws::OriginPolicy;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::{TestServer, within};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An echo-ws server running in the test's runtime, with the WebSocket requests of these tests.
struct TestEcho(TestServer);

impl std::ops::Deref for TestEcho {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.0
    }
}

impl std::ops::DerefMut for TestEcho {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.0
    }
}

impl TestEcho {
    async fn start(config: Config) -> Self {
        Self(TestServer::start(|listener, signal| echo_ws::run(listener, config, signal)).await)
    }

    async fn default() -> Self {
        Self::start(Config::default()).await
    }

    /// Opens a WebSocket to `path` with extra request headers; the handshake's error if refused.
    async fn try_connect(
        &self,
        path: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let mut request = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .expect("a valid URL");
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, value.parse().expect("a valid header value"));
        }
        let (socket, _response) = within(tokio_tungstenite::connect_async(request)).await?;
        Ok(socket)
    }

    async fn connect(&self, path: &str) -> Client {
        self.try_connect(path, &[]).await.expect("connect")
    }

    /// Joins the room and reads the welcome: returns the client and its number.
    async fn join(&self) -> (Client, u64) {
        let mut socket = self.connect("/ws").await;
        let welcome = next_json(&mut socket).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let id = welcome["client"].as_u64().expect("a client number");
        (socket, id)
    }

    async fn stats(&self) -> Value {
        let response = within(client::get(&self.url("/stats")))
            .await
            .expect("GET /stats");
        assert_eq!(response.status, 200);
        response.json().expect("stats are JSON")
    }
}

/// The next data message (Pings and Pongs are skipped; tungstenite answers Pings by itself).
async fn next_message(socket: &mut Client) -> Message {
    loop {
        let message = within(socket.next())
            .await
            .expect("the socket is still open")
            .expect("no protocol error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next room event, parsed.
async fn next_json(socket: &mut Client) -> Value {
    match next_message(socket).await {
        Message::Text(text) => serde_json::from_str(&text).expect("room events are JSON"),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Reads room events until one matches `wanted`, and returns it.
async fn next_json_where(socket: &mut Client, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let event = next_json(socket).await;
        if wanted(&event) {
            return event;
        }
    }
}

/// Reads until the server's Close frame, skipping everything before it.
async fn close_frame(socket: &mut Client) -> CloseFrame {
    loop {
        match next_message(socket).await {
            Message::Close(Some(frame)) => return frame,
            Message::Close(None) => panic!("a Close frame without a code"),
            _ => {}
        }
    }
}

// ANCHOR: accept_key
/// The handshake of RFC 6455 section 1.3: for the example key `dGhlIHNhbXBsZSBub25jZQ==` the
/// server must answer `Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`, which is
/// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). Sent byte for byte over TCP.
#[tokio::test]
async fn handshake_answers_the_rfc_example_key() {
    use tungstenite::handshake::derive_accept_key;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_eq!(
        derive_accept_key(key.as_bytes()),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );

    let server = TestEcho::default().await;
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let head = within(read_head(&mut tcp)).await.to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
}
// ANCHOR_END: accept_key

/// Reads an HTTP response head (up to the blank line) from a raw socket.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tcp.read(&mut byte).await.expect("read");
        assert_eq!(read, 1, "the server closed the connection");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("an ASCII head")
}

/// `/echo` sends text and binary messages back unchanged, to the sender only.
#[tokio::test]
async fn echo_returns_text_and_binary() {
    let server = TestEcho::default().await;
    let mut socket = server.connect("/echo").await;
    let mut bystander = server.connect("/echo").await;
    socket.send(Message::text("héllo")).await.expect("send");
    assert_eq!(next_message(&mut socket).await, Message::text("héllo"));
    let bytes = vec![0u8, 1, 2, 255];
    socket
        .send(Message::binary(bytes.clone()))
        .await
        .expect("send");
    assert_eq!(next_message(&mut socket).await, Message::binary(bytes));
    assert_eq!(server.stats().await["echo_sockets"], 2);

    // The bystander got nothing: its next message is the echo of its own.
    bystander.send(Message::text("mine")).await.expect("send");
    assert_eq!(next_message(&mut bystander).await, Message::text("mine"));
}

// ANCHOR: broadcast_test
/// Every text message reaches every client in the room, the sender too, wrapped in JSON with the
/// sender's number, and all clients see the messages in the same order (each sender's in the
/// order it sent them).
#[tokio::test]
async fn broadcast_reaches_three_clients_in_order() {
    let server = TestEcho::default().await;
    let (mut a, id_a) = server.join().await;
    let (mut b, id_b) = server.join().await;
    let (mut c, _) = server.join().await;
    for text in ["one", "three"] {
        a.send(Message::text(text)).await.expect("send");
    }
    for text in ["two", "four"] {
        b.send(Message::text(text)).await.expect("send");
    }
    let mut heard_by = Vec::new();
    for client in [&mut a, &mut b, &mut c] {
        let mut heard = Vec::new();
        while heard.len() < 4 {
            let event = next_json(client).await;
            if event["type"] == "message" {
                heard.push(event);
            }
        }
        heard_by.push(heard);
    }
    assert_eq!(heard_by[0], heard_by[1], "a and b saw the same order");
    assert_eq!(heard_by[0], heard_by[2], "a and c saw the same order");
    let texts_from = |id: u64| -> Vec<Value> {
        heard_by[0]
            .iter()
            .filter(|event| event["from"] == id)
            .map(|event| event["text"].clone())
            .collect()
    };
    assert_eq!(texts_from(id_a), [json!("one"), json!("three")]);
    assert_eq!(texts_from(id_b), [json!("two"), json!("four")]);
    assert_eq!(server.stats().await["messages_relayed"], 4);
}
// ANCHOR_END: broadcast_test

/// A newcomer learns its number; everyone hears joins and leaves with the number of clients.
#[tokio::test]
async fn join_and_leave_notices_carry_the_client_count() {
    let server = TestEcho::default().await;
    let mut first = server.connect("/ws").await;
    assert_eq!(
        next_json(&mut first).await,
        json!({ "type": "welcome", "client": 1, "clients": 1 })
    );
    assert_eq!(
        next_json(&mut first).await,
        json!({ "type": "join", "client": 1, "clients": 1 })
    );

    let (mut second, id) = server.join().await;
    assert_eq!(
        next_json(&mut first).await,
        json!({ "type": "join", "client": id, "clients": 2 })
    );
    assert_eq!(server.stats().await["clients"], 2);

    second.close(None).await.expect("close");
    assert_eq!(
        next_json(&mut first).await,
        json!({ "type": "leave", "client": id, "clients": 1, "reason": "closed" })
    );
    assert_eq!(server.stats().await["clients"], 1);
}

/// A crowd joining at once is told to the room in a few notices, not one per join, and nobody is
/// closed. Here a watcher's session is stuck writing to a full socket while 100 clients join; when
/// the watcher reads again it gets every message and a handful of join or `presence` notices (the
/// last saying 102 clients), and it is still in the room. One notice per join to everyone costs
/// O(n²) when n arrive together; with a notice per join this watcher would get about a hundred.
#[tokio::test]
async fn a_crowd_joining_at_once_is_told_in_a_few_notices_and_nobody_is_closed() {
    // Small server send buffers, so that a client that stops reading blocks its session soon.
    let listener = common::listener_with_send_buffer(4096);
    let server = TestEcho(TestServer::start_on(listener, |listener, signal| {
        echo_ws::run(listener, Config::default(), signal)
    }));
    let (mut watcher, _) = server.join().await;
    let (mut sender, sender_id) = server.join().await;

    // Fill the watcher's socket: it reads nothing while 40 messages of 16 KiB go out.
    let padding = "x".repeat(16 * 1024);
    for n in 0..40 {
        let text = format!("{n} {padding}");
        sender
            .send(Message::text(text.clone()))
            .await
            .expect("send");
        next_json_where(&mut sender, |event| {
            event["from"] == sender_id && event["text"] == text.as_str()
        })
        .await;
    }
    let mut crowd = Vec::new();
    for _ in 0..100 {
        crowd.push(server.join().await.0);
    }
    assert_eq!(server.stats().await["clients"], 102);

    // Messages and notices travel in separate rings, so they may interleave in any order.
    let (mut messages, mut notices) = (0, Vec::new());
    while messages < 40
        || notices
            .last()
            .is_none_or(|notice: &Value| notice["clients"] != 102)
    {
        let event = next_json(&mut watcher).await;
        match event["type"].as_str() {
            Some("message") => messages += 1,
            Some("join" | "presence") => notices.push(event),
            _ => {}
        }
    }
    assert!(
        notices.len() < 50,
        "100 joins took {} notices: {notices:?}",
        notices.len()
    );
    assert!(
        notices
            .iter()
            .any(|notice| notice["type"] == "presence" && notice["joined"].as_u64() > Some(1)),
        "several joins were told together: {notices:?}"
    );
    watcher
        .send(Message::text("still here"))
        .await
        .expect("send");
    let echoed = next_json_where(&mut watcher, |event| event["text"] == "still here").await;
    assert_eq!(echoed["type"], "message");
    assert_eq!(server.stats().await["clients"], 102, "nobody was closed");
}

/// A client that falls behind on join and leave notices skips them: it gets one `presence`
/// notice saying how many it missed and how many clients are in the room, every message, and it
/// stays. Here a watcher's session is stuck writing to a full socket while five clients join one
/// by one, more notices than its presence ring (2) holds; a room that closed it, or skipped the
/// notices without a word, fails this test.
#[tokio::test]
async fn a_client_behind_on_notices_gets_a_presence_summary_and_stays() {
    let listener = common::listener_with_send_buffer(4096);
    let config = Config {
        presence_backlog: 2,
        ..Config::default()
    };
    let server = TestEcho(TestServer::start_on(listener, |listener, signal| {
        echo_ws::run(listener, config, signal)
    }));
    let (mut watcher, _) = server.join().await;
    let (mut sender, sender_id) = server.join().await;

    // Fill the watcher's socket: it reads nothing while 40 messages of 16 KiB go out, so its
    // session is stuck in a write and takes nothing from either ring.
    let padding = "x".repeat(16 * 1024);
    for n in 0..40 {
        let text = format!("{n} {padding}");
        sender
            .send(Message::text(text.clone()))
            .await
            .expect("send");
        next_json_where(&mut sender, |event| {
            event["from"] == sender_id && event["text"] == text.as_str()
        })
        .await;
    }
    // Five joins, each told to the room before the next: five notices in the presence ring.
    let mut newcomers = Vec::new();
    for clients in 3..=7 {
        newcomers.push(server.join().await.0);
        next_json_where(&mut sender, |event| event["clients"] == clients).await;
    }

    let (mut messages, mut summary) = (0, None);
    while messages < 40 || summary.is_none() {
        let event = next_json(&mut watcher).await;
        match event["type"].as_str() {
            Some("message") => messages += 1,
            Some("presence") if event.get("missed").is_some() => summary = Some(event),
            _ => {}
        }
    }
    let summary = summary.expect("a presence summary");
    assert!(summary["missed"].as_u64() >= Some(1), "{summary}");
    assert_eq!(summary["clients"], 7, "{summary}");
    watcher
        .send(Message::text("still here"))
        .await
        .expect("send");
    next_json_where(&mut watcher, |event| event["text"] == "still here").await;
    assert_eq!(server.stats().await["clients"], 7, "nobody was closed");
}

/// A burst from one client does not get the others closed as too slow. Here 300 small messages
/// arrive in one TCP segment, more than the room's ring (128) holds; every other client must
/// receive all of them, in order, and stay. A session that published the whole burst before the
/// others had a turn would put every other client more than a ring behind.
#[tokio::test]
async fn a_burst_from_one_client_reaches_everyone_and_nobody_is_closed() {
    let server = TestEcho::default().await;
    let (mut first, _) = server.join().await;
    let (mut second, _) = server.join().await;
    let mut burster = raw_handshake(&server, "/ws").await;

    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut burst = Vec::new();
    for n in 0..300 {
        let text = format!("m{n}");
        burst.extend_from_slice(&[0x81, 0x80 | u8::try_from(text.len()).expect("short")]);
        burst.extend_from_slice(&mask);
        burst.extend(
            text.bytes()
                .zip(mask.iter().cycle())
                .map(|(byte, key)| byte ^ key),
        );
    }
    burster.write_all(&burst).await.expect("send the burst");

    for watcher in [&mut first, &mut second] {
        let mut texts = Vec::new();
        while texts.len() < 300 {
            let event = next_json(watcher).await;
            if event["type"] == "message" {
                texts.push(event["text"].as_str().unwrap_or("").to_owned());
            }
        }
        let sent: Vec<String> = (0..300).map(|n| format!("m{n}")).collect();
        assert_eq!(texts, sent, "every message of the burst, in order");
    }
    assert_eq!(server.stats().await["clients"], 3, "nobody was closed");
}

/// The room relays text only: a binary message closes the socket with 1003 (unsupported data).
#[tokio::test]
async fn binary_in_the_room_closes_with_1003() {
    let server = TestEcho::default().await;
    let (mut socket, _) = server.join().await;
    socket
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    assert_eq!(u16::from(close_frame(&mut socket).await.code), 1003);
}

/// A message over the room's 64 KiB limit closes the socket with 1009 (message too big), and
/// the server goes on serving others.
#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let server = TestEcho::default().await;
    let (mut socket, _) = server.join().await;
    let too_big = "x".repeat(Config::default().room_limits.max_message_size + 1);
    socket.send(Message::text(too_big)).await.expect("send");
    assert_eq!(u16::from(close_frame(&mut socket).await.code), 1009);

    let (mut other, _) = server.join().await;
    other.send(Message::text("still here")).await.expect("send");
    next_json_where(&mut other, |event| event["text"] == "still here").await;
}

// ANCHOR: invalid_utf8
/// A text frame that is not UTF-8 closes the socket with 1007 (invalid data). tungstenite's
/// client will not send such a frame, so this test writes the handshake and the frame itself.
#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestEcho::default().await;
    let mut tcp = raw_handshake(&server, "/ws").await;

    // FIN + text opcode; MASK bit + length 2; a masking key; 0xFF 0xFE masked with it.
    // A client must mask every frame (RFC 6455 section 5.3), or the server fails the connection.
    let mask = [0x12, 0x34, 0x56, 0x78];
    let payload = [0xFF ^ mask[0], 0xFE ^ mask[1]];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend_from_slice(&payload);
    tcp.write_all(&frame).await.expect("send frame");

    assert_eq!(within(raw_close_code(&mut tcp)).await, 1007);
}
// ANCHOR_END: invalid_utf8

/// Opens a WebSocket to `path` by hand: the handshake written and the `101` read over TCP.
async fn raw_handshake(server: &TestEcho, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tcp.write_all(request.as_bytes()).await.expect("send");
    let head = within(read_head(&mut tcp)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// Reads raw frames, skipping text and Ping frames, up to the Close frame; returns its code.
async fn raw_close_code(tcp: &mut TcpStream) -> u16 {
    loop {
        let (opcode, payload) = read_server_frame(tcp).await;
        match opcode {
            0x8 => {
                assert!(payload.len() >= 2, "a Close frame with a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
            0x1 | 0x9 => continue,
            other => panic!("unexpected opcode {other:#x} before the Close"),
        }
    }
}

/// Reads one unfragmented frame sent by the server (servers never mask): opcode and payload.
async fn read_server_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    tcp.read_exact(&mut header).await.expect("frame header");
    let length = match header[1] & 0x7F {
        126 => u64::from(tcp.read_u16().await.expect("16-bit length")),
        127 => tcp.read_u64().await.expect("64-bit length"),
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(length).expect("a small frame")];
    tcp.read_exact(&mut payload).await.expect("frame payload");
    (header[0] & 0x0F, payload)
}

// ANCHOR: origin_test
/// A page from another origin gets `403` before the upgrade (cross-site WebSocket hijacking);
/// the server's own origin, an allowed one, and clients that send no `Origin` get in.
#[tokio::test]
async fn foreign_origin_is_refused_with_403() {
    let server = TestEcho::start(Config {
        origins: OriginPolicy::allow(["http://localhost:5173"]).expect("an origin"),
        ..Config::default()
    })
    .await;
    let refused = server
        .try_connect("/ws", &[("origin", "https://evil.example")])
        .await;
    match refused {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().expect("a body")).expect("JSON");
            assert!(
                body["error"]
                    .as_str()
                    .expect("an error")
                    .contains("evil.example")
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let own = format!("http://{}", server.addr);
    for origin in [own.as_str(), "http://localhost:5173"] {
        let mut socket = server
            .try_connect("/ws", &[("origin", origin)])
            .await
            .unwrap_or_else(|error| panic!("{origin} refused: {error}"));
        assert_eq!(next_json(&mut socket).await["type"], "welcome");
    }
    server.connect("/ws").await; // no Origin: not a browser page
}
// ANCHOR_END: origin_test

/// A plain GET of a WebSocket endpoint, a wrong version and a bad key are refused with a JSON
/// error and the header that says what to send instead; nothing panics.
#[tokio::test]
async fn plain_get_and_bad_handshakes_get_4xx_with_json() {
    let server = TestEcho::default().await;
    let plain = within(client::get(&server.url("/ws"))).await.expect("GET");
    assert_eq!(plain.status, 426);
    assert_eq!(plain.headers["upgrade"], "websocket");
    assert!(
        plain.json().expect("JSON")["error"]
            .as_str()
            .expect("an error")
            .contains("WebSocket")
    );

    let upgrade = [("upgrade", "websocket"), ("connection", "Upgrade")];
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let old_version = [upgrade[0], upgrade[1], key, ("sec-websocket-version", "8")];
    let bad_key = [
        upgrade[0],
        upgrade[1],
        ("sec-websocket-key", "short"),
        ("sec-websocket-version", "13"),
    ];
    let echo = server.url("/echo");
    let old_version = within(client::fetch(
        http::Method::GET,
        &echo,
        &old_version,
        Vec::new(),
    ))
    .await
    .expect("request");
    assert_eq!(old_version.status, 426);
    assert_eq!(old_version.headers["sec-websocket-version"], "13");
    assert!(old_version.json().expect("JSON")["error"].is_string());
    let bad_key = within(client::fetch(
        http::Method::GET,
        &echo,
        &bad_key,
        Vec::new(),
    ))
    .await
    .expect("request");
    assert_eq!(bad_key.status, 400);
    assert!(bad_key.json().expect("JSON")["error"].is_string());
}

/// A Ping from the client is answered with a Pong carrying the same payload.
#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = TestEcho::default().await;
    for path in ["/ws", "/echo"] {
        let mut socket = server.connect(path).await;
        socket
            .send(Message::Ping("are you there".into()))
            .await
            .expect("send");
        let pong = within(async {
            loop {
                match socket.next().await.expect("open").expect("no error") {
                    Message::Pong(payload) => return payload,
                    _ => continue,
                }
            }
        })
        .await;
        assert_eq!(&pong[..], b"are you there", "{path}");
    }
}

/// A client that stops answering pings is closed (1008) after the idle timeout and counted as
/// having left, with the reason `silent`.
#[tokio::test]
async fn silent_client_is_dropped_after_the_timeout() {
    let server = TestEcho::start(Config {
        ping_interval: Duration::from_millis(50),
        idle_timeout: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let (mut watcher, watcher_id) = server.join().await;
    // A raw socket that never answers a Ping: what a vanished client looks like.
    let mut silent = raw_handshake(&server, "/ws").await;
    let joined = next_json_where(&mut watcher, |event| {
        event["type"] == "join" && event["client"] != watcher_id
    })
    .await;
    let silent_id = joined["client"].clone();

    // The watcher reads all the time, so it answers its pings and stays.
    let leave = next_json_where(&mut watcher, |event| event["type"] == "leave").await;
    assert_eq!(
        leave,
        json!({ "type": "leave", "client": silent_id, "clients": 1, "reason": "silent" })
    );
    assert_eq!(server.stats().await["clients"], 1);
    // Before giving up, the server said why: Close 1008 (policy violation), after its pings.
    assert_eq!(within(raw_close_code(&mut silent)).await, 1008);
}

/// On shutdown every open socket (room and echo) receives Close 1001 (going away), and `run`
/// returns well within the grace period.
#[tokio::test]
async fn shutdown_sends_1001_and_run_returns() {
    let server = TestEcho::default().await;
    let (mut room, _) = server.join().await;
    let mut echo = server.connect("/echo").await;
    echo.send(Message::text("up?")).await.expect("send");
    next_message(&mut echo).await;

    let mut server = server;
    let started = std::time::Instant::now();
    server.request_stop();
    for socket in [&mut room, &mut echo] {
        assert_eq!(u16::from(close_frame(socket).await.code), 1001);
        // The client answers the Close (tokio-tungstenite does while reading) and the stream ends.
        assert!(within(socket.next()).await.is_none());
    }
    server.0.stop().await;
    assert!(
        started.elapsed() < realtime_kit::server::GRACE_PERIOD,
        "shutdown took {:?}",
        started.elapsed()
    );
}

// ANCHOR: slow_client_test
/// A client that stops reading does not hold up the room: the others receive every message, in
/// order, while it is cut off (`too_slow`) once its socket is full and a write times out, or it
/// falls a whole backlog behind. If one slow reader could block the fan-out, the sender below,
/// which waits for each of its own messages to come back, would stall and time out.
#[tokio::test]
async fn slow_client_is_cut_off_without_delaying_the_others() {
    // Small server send buffers, so that the slow client's socket is full after a few messages.
    let listener = common::listener_with_send_buffer(4096);
    let config = Config {
        send_timeout: Duration::from_millis(300),
        backlog: 16,
        ..Config::default()
    };
    let server = TestEcho(TestServer::start_on(listener, |listener, signal| {
        echo_ws::run(listener, config, signal)
    }));
    let (mut sender, sender_id) = server.join().await;
    let (mut watcher, _) = server.join().await;
    let (slow, slow_id) = server.join().await; // never reads again

    // The slow client's leave is told only after its closing handshake has had its time
    // (`ws::CLOSE_TIMEOUT`): the messages go on meanwhile, as many as the machine sends in that
    // time. So the watcher keeps reading past "end" until it has seen the leave.
    let slow_is_gone = Arc::new(AtomicBool::new(false));
    let watching = tokio::spawn({
        let slow_is_gone = slow_is_gone.clone();
        async move {
            let (mut numbers, mut ended) = (Vec::new(), false);
            while !(ended && slow_is_gone.load(Ordering::Relaxed)) {
                let event = next_json(&mut watcher).await;
                match event["type"].as_str() {
                    Some("message") if event["text"] == "end" => ended = true,
                    Some("message") => numbers.push(message_number(&event)),
                    Some("leave") => {
                        assert_eq!(event["client"], slow_id);
                        assert_eq!(event["reason"], "too_slow");
                        slow_is_gone.store(true, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            (numbers, watcher)
        }
    });

    // 4,000 messages of 16 KiB (64 MB) are far more than any loopback socket holds, so the
    // slow client is cut off before they are all sent; the sending stops early once it is gone.
    let mut sent = 0;
    while sent < 4000 && !slow_is_gone.load(Ordering::Relaxed) {
        let text = format!("{sent} {}", "x".repeat(PADDING));
        sender.send(Message::text(text)).await.expect("send");
        next_json_where(&mut sender, |event| {
            event["from"] == sender_id && message_number(event) == sent
        })
        .await;
        sent += 1;
    }
    sender.send(Message::text("end")).await.expect("send");
    let (received, _watcher) = within(watching)
        .await
        .expect("the slow client was cut off, and the watcher saw every message");
    assert_eq!(
        received,
        (0..sent).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert_eq!(server.stats().await["clients"], 2);
    drop(slow);
}

/// Bytes of `x` after each numbered message's number.
const PADDING: usize = 16 * 1024;

/// The number of a message `"{n} xxx..."`, checking that its padding came whole.
fn message_number(event: &Value) -> usize {
    let text = event["text"].as_str().unwrap_or("");
    let (number, padding) = text.split_once(' ').unwrap_or((text, ""));
    assert_eq!(padding.len(), PADDING, "a message came whole");
    number.parse().expect("a numbered message")
}
// ANCHOR_END: slow_client_test

/// A full room refuses the next client with `503` and a JSON error, before the upgrade.
#[tokio::test]
async fn full_room_is_503() {
    let server = TestEcho::start(Config {
        max_clients: 1,
        ..Config::default()
    })
    .await;
    let _first = server.join().await;
    match server.try_connect("/ws", &[]).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
}

/// Unknown paths get 404, wrong methods 405 with `Allow`, and `/stats` is JSON.
#[tokio::test]
async fn routes_answer_404_405_and_stats() {
    let server = TestEcho::default().await;
    let missing = within(client::get(&server.url("/nope")))
        .await
        .expect("GET");
    assert_eq!(missing.status, 404);
    assert!(missing.json().expect("JSON")["error"].is_string());
    for path in ["/", "/ws", "/echo", "/stats"] {
        let wrong = within(client::fetch(
            http::Method::POST,
            &server.url(path),
            &[],
            Vec::new(),
        ))
        .await
        .expect("POST");
        assert_eq!(wrong.status, 405, "POST {path}");
        assert_eq!(wrong.headers["allow"], "GET");
    }
    assert_eq!(
        server.stats().await,
        json!({ "clients": 0, "messages_relayed": 0, "echo_sockets": 0 })
    );
}

/// The `ws_client` example sends each line of its input and prints each message it receives;
/// at the end of its input it closes cleanly and exits with success.
#[tokio::test]
async fn ws_client_example_sends_lines_and_prints_messages() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    // The example is built by `cargo test` next to this test's binary: target/<profile>/examples.
    let test_binary = std::env::current_exe().expect("test binary path");
    let example = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples")
        .join("ws_client")
        .with_extension(std::env::consts::EXE_EXTENSION);
    assert!(
        example.exists(),
        "build the examples first: {}",
        example.display()
    );

    let server = TestEcho::default().await;
    let mut child = tokio::process::Command::new(example)
        .arg(format!("ws://{}/echo", server.addr))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in ["hello", "two words"] {
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("type a line");
        let printed = within(stdout.next_line()).await.expect("read");
        assert_eq!(printed.as_deref(), Some(line));
    }
    drop(stdin); // end of input: the client closes with 1000 and exits
    let status = within(child.wait()).await.expect("wait");
    assert!(status.success(), "{status}");
}

/// The page opens a WebSocket to `/ws`, reconnects by itself (a WebSocket does not), and shows
/// messages as text (`textContent`/text nodes), never as HTML.
#[tokio::test]
async fn page_connects_reconnects_and_never_renders_html() {
    let server = TestEcho::default().await;
    let page = within(client::get(&server.url("/"))).await.expect("GET /");
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains("new WebSocket(url)"));
    assert!(html.contains(r#"+ "/ws""#));
    assert!(html.contains("setTimeout(connect, delay)"));
    assert!(html.contains("Math.random()"), "reconnects with jitter");
    assert!(html.contains("createTextNode(text)"));
    assert!(
        !html.contains("innerHTML"),
        "messages must never be parsed as HTML"
    );
}
