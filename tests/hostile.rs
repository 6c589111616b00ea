//! Hostile clients, over raw sockets: nothing one client sends changes what another client
//! gets, and every limit holds when many clients push at it at once.
//!
//! Run with `cargo test --test hostile`. Each test pins down one defect that a review of the
//! release binaries found, as an attacker would meet it: the request, byte for byte, and what
//! the server must answer.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use realtime_kit::client::{self, EventStream};
use realtime_kit::sse::MAX_EVENT_ID;
use realtime_kit::{AllowedHosts, ConnectionLimits, ServerOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{TestServer, within};

/// Writes `request` on a new connection and reads one whole `Content-Length` response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let head = read_head(&mut stream).await;
    let length = content_length(&head);
    let mut body = vec![0; length];
    within(stream.read_exact(&mut body))
        .await
        .expect("read the body");
    [head.into_bytes(), body].concat()
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"))
}

/// Writes `request` on a new connection and reads the response head (and no more).
async fn head_of(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_head(&mut stream).await
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(stream.read(&mut byte)).await.expect("read");
        assert!(n > 0, "closed before the end of the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("an ASCII head")
}

/// The status code of a response head.
fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// A whole `Content-Length` response: its status and its body as JSON.
fn whole_json(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {text:?}"));
    let length = content_length(head);
    assert!(
        body.len() >= length,
        "the body was cut short: {} of {length} bytes in {text:?}",
        body.len()
    );
    let json = serde_json::from_str(&body[..length])
        .unwrap_or_else(|error| panic!("not a JSON body ({error}): {text:?}"));
    (status(head), json)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

// --- clock-sse: Last-Event-ID -----------------------------------------------------------------

/// Server options with the kit's direct path for event streams on or off: a test of what
/// every request gets runs with both, since either path may answer a request for a stream.
fn paths(direct_streams: bool) -> ServerOptions {
    ServerOptions {
        direct_streams,
        ..ServerOptions::default()
    }
}

async fn fast_clock(direct_streams: bool) -> TestServer {
    TestServer::start(move |listener, signal| {
        let config = clock_sse::Config {
            tick_interval: Duration::from_millis(50),
            server: paths(direct_streams),
            ..clock_sse::Config::default()
        };
        clock_sse::run(listener, config, signal)
    })
    .await
}

async fn next_id(stream: &mut EventStream) -> u64 {
    let event = within(stream.next_event())
        .await
        .expect("stream error")
        .expect("the stream ended");
    event.last_event_id.parse().expect("a numeric id")
}

// ANCHOR: last_event_id_test
/// One request with a huge `Last-Event-ID` must not move the ids every other client gets: before
/// the fix, the next tick every client received was numbered 2^53 + 1, above the largest id the
/// server accepts, so every browser's automatic reconnect was refused with 400 for good.
#[tokio::test]
async fn a_clients_last_event_id_does_not_change_the_ids_others_get() {
    let clock = fast_clock(false).await;
    let url = clock.url("/events");
    let _attacker = within(EventStream::connect(
        &url,
        &[("last-event-id", "9007199254740990")],
    ))
    .await
    .expect("connect");
    let mut victim = within(EventStream::connect(&url, &[]))
        .await
        .expect("connect");
    for _ in 0..3 {
        let id = next_id(&mut victim).await;
        assert!(
            id <= MAX_EVENT_ID,
            "a client was sent id {id}, above 2^53 - 1"
        );
        let id_text = id.to_string();
        let reconnect = within(EventStream::connect(&url, &[("last-event-id", &id_text)]))
            .await
            .expect("connect");
        assert_eq!(
            reconnect.status(),
            200,
            "a browser reconnecting with the id {id} the server itself sent was refused"
        );
    }
}
// ANCHOR_END: last_event_id_test

/// A `Last-Event-ID` from the future (a clock set back, or made up) gets that client the current
/// tick at once, like a new client: it neither waits for its made-up time nor changes the clock.
#[tokio::test]
async fn a_last_event_id_from_the_future_starts_that_client_at_the_current_tick() {
    let clock = fast_clock(false).await;
    let future = (now_ms() + 86_400_000).to_string();
    let mut stream = within(EventStream::connect(
        &clock.url("/events"),
        &[("last-event-id", &future)],
    ))
    .await
    .expect("connect");
    let id = next_id(&mut stream).await;
    let drift = id.abs_diff(now_ms());
    assert!(
        drift < 60_000,
        "the client was sent id {id}, {drift} ms away from the tick's real time"
    );
}

// --- echo-ws: the room's client limit ---------------------------------------------------------

/// `--max-clients` holds when handshakes arrive at once: with a limit of 20 and 60 handshakes
/// sent before any is answered, exactly 20 get `101` and 40 get `503` with the JSON error; once
/// they leave, the count is back to 0. Before the fix the count was checked before the upgrade
/// and raised inside the session, and up to all 60 got in. (One thread, like echo-ws's `main`.)
#[tokio::test]
async fn the_rooms_client_limit_holds_under_simultaneous_handshakes() {
    const LIMIT: usize = 20;
    // The handshakes are all in the listener's queue before the server accepts any, as in a
    // burst of reconnects after a restart.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let mut sockets = Vec::new();
    for _ in 0..3 * LIMIT {
        let mut socket = within(TcpStream::connect(addr)).await.expect("connect");
        socket.write_all(handshake.as_bytes()).await.expect("write");
        sockets.push(socket);
    }
    let server = TestServer::start_on(listener, |listener, signal| {
        let config = echo_ws::Config {
            max_clients: LIMIT,
            ..echo_ws::Config::default()
        };
        echo_ws::run(listener, config, signal)
    });
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for mut socket in sockets {
        let head = read_head(&mut socket).await;
        match status(&head) {
            101 => admitted.push(socket),
            503 => {
                let mut body = vec![0; content_length(&head)];
                within(socket.read_exact(&mut body)).await.expect("body");
                let json: Value = serde_json::from_slice(&body).expect("a JSON error");
                assert!(json["error"].as_str().expect("error").contains("full"));
                refused += 1;
            }
            _ => panic!("a handshake got {head}"),
        }
    }
    assert_eq!(
        admitted.len(),
        LIMIT,
        "with --max-clients {LIMIT}, {} of {} simultaneous handshakes got in",
        admitted.len(),
        3 * LIMIT
    );
    assert_eq!(refused, 2 * LIMIT);

    drop(admitted);
    let stats = server.url("/stats");
    within(async {
        while client::get(&stats)
            .await
            .expect("stats")
            .json()
            .expect("JSON")["clients"]
            != 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}

// --- every demo: Host (DNS rebinding, RFC 9112 section 3.2) ------------------------------------

/// The four demos, each on a free port, with their default configuration but for the path.
async fn every_demo(direct_streams: bool) -> Vec<(&'static str, TestServer)> {
    let server = paths(direct_streams);
    let (clock, chat, ticker) = (server.clone(), server.clone(), server.clone());
    vec![
        (
            "clock-sse",
            TestServer::start(move |l, s| {
                let config = clock_sse::Config {
                    server: clock,
                    ..clock_sse::Config::default()
                };
                clock_sse::run(l, config, s)
            })
            .await,
        ),
        (
            "echo-ws",
            TestServer::start(move |l, s| {
                let config = echo_ws::Config {
                    server,
                    ..echo_ws::Config::default()
                };
                echo_ws::run(l, config, s)
            })
            .await,
        ),
        (
            "chat-sse",
            TestServer::start(move |l, s| {
                let config = chat_sse::Config {
                    server: chat,
                    ..chat_sse::Config::default()
                };
                chat_sse::run(l, config, s)
            })
            .await,
        ),
        (
            "stock-ticker",
            TestServer::start(move |l, s| {
                let config = stock_ticker::Config {
                    server: ticker,
                    ..stock_ticker::Config::default()
                };
                stock_ticker::run(l, config, s)
            })
            .await,
        ),
    ]
}

/// What a rebinding page can make the browser send to each demo: the page, its event stream
/// as `EventSource` asks for it (the kit's direct path), a POST, and a WebSocket handshake with
/// the matching `Origin`.
fn rebinding_requests(demo: &str, host: &str) -> Vec<String> {
    let origin = format!("http://{host}");
    let mut requests = vec![format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )];
    let stream = match demo {
        "clock-sse" | "chat-sse" => Some("/events"),
        "stock-ticker" => Some("/quotes/stream"),
        _ => None,
    };
    if let Some(path) = stream {
        requests.push(format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nOrigin: {origin}\r\n\r\n"
        ));
    }
    if demo == "chat-sse" {
        let body = r#"{"user":"eve","text":"rebound"}"#;
        requests.push(format!(
            "POST /messages HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    let socket = match demo {
        "echo-ws" => Some("/ws"),
        "stock-ticker" => Some("/quotes/ws"),
        _ => None,
    };
    if let Some(path) = socket {
        requests.push(format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ));
    }
    requests
}

// ANCHOR: rebinding_test
/// Under DNS rebinding a page on `evil.example` reaches a demo on 127.0.0.1 with
/// `Host: evil.example:<port>` and a matching `Origin`. Every route of every demo answers it
/// `421` with a JSON error naming `--allow-host`, on hyper's path and on the direct path, and
/// the same requests with the server's address as `Host` are served.
#[tokio::test]
async fn a_rebinding_pages_requests_get_421_on_every_demo() {
    let mut demos = every_demo(false).await;
    demos.extend(every_demo(true).await);
    for (demo, server) in demos {
        let port = server.addr.port();
        for request in rebinding_requests(demo, &format!("evil.example:{port}")) {
            let answer = exchange(server.addr, request.as_bytes()).await;
            let (status, json) = whole_json(&answer);
            let first_line = request.lines().next().unwrap_or_default();
            assert_eq!(status, 421, "{demo}: {first_line} with Host: evil.example");
            let error = json["error"].as_str().expect("error");
            assert!(error.contains("--allow-host"), "{demo}: {error}");
        }
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            for request in rebinding_requests(demo, &host) {
                let head = head_of(server.addr, request.as_bytes()).await;
                let first_line = request.lines().next().unwrap_or_default();
                assert!(
                    [200, 201, 101].contains(&status(&head)),
                    "{demo}: {first_line} with Host: {host} got {head}"
                );
            }
        }
        server.stop().await;
    }
}
// ANCHOR_END: rebinding_test

/// A name given with `--allow-host` is answered; other names still are not.
#[tokio::test]
async fn a_name_given_with_allow_host_is_answered() {
    let server = TestServer::start(|listener, signal| {
        let config = chat_sse::Config {
            server: ServerOptions {
                hosts: AllowedHosts::allow(["chat.example"]).expect("a host name"),
                ..ServerOptions::default()
            },
            ..chat_sse::Config::default()
        };
        chat_sse::run(listener, config, signal)
    })
    .await;
    let ask =
        |host: &str| format!("GET /messages HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert_eq!(
        status(&head_of(server.addr, ask("chat.example").as_bytes()).await),
        200
    );
    assert_eq!(
        status(&head_of(server.addr, ask("evil.example").as_bytes()).await),
        421
    );
    server.stop().await;
}

/// HTTP/1.1 requires exactly one `Host` (RFC 9112 section 3.2): a request with none, or with
/// two, is a `400` with a JSON error, whether hyper or the direct path would have answered it.
#[tokio::test]
async fn a_request_without_host_or_with_two_is_400_on_both_paths() {
    for clock in [fast_clock(false).await, fast_clock(true).await] {
        for accept in ["", "Accept: text/event-stream\r\n"] {
            for hosts in [
                "",
                "Host: 127.0.0.1\r\nHost: 127.0.0.1\r\n",
                "Host: 127.0.0.1\r\nHost: evil.example\r\n",
            ] {
                let request =
                    format!("GET /events HTTP/1.1\r\n{hosts}{accept}Connection: close\r\n\r\n");
                let answer = exchange(clock.addr, request.as_bytes()).await;
                let (status, json) = whole_json(&answer);
                assert_eq!(status, 400, "{request:?}");
                assert!(json["error"].as_str().expect("error").contains("Host"));
            }
        }
    }
}

/// Fails unless the chat has stored no message at all.
async fn assert_log_is_empty(chat: &TestServer) {
    let log = within(client::get(&chat.url("/messages?after=0")))
        .await
        .expect("GET /messages");
    assert_eq!(
        log.json().expect("JSON")["messages"],
        serde_json::json!([]),
        "a refused request stored a message"
    );
}

// --- chat-sse: what a message is ---------------------------------------------------------------

/// A message is a JSON object. serde's derived `Deserialize` also takes a JSON array for a
/// struct, so `["ann","hi"]` used to be stored as a message from ann; now it is a `400` with
/// the error, and the log is unchanged.
#[tokio::test]
async fn a_json_array_is_not_a_message() {
    let chat = TestServer::start(|l, s| chat_sse::run(l, chat_sse::Config::default(), s)).await;
    for body in [r#"["ann","hi"]"#, "[]", "42", "\"ann: hi\"", "null"] {
        let response = within(client::fetch(
            http::Method::POST,
            &chat.url("/messages"),
            &[("content-type", "application/json")],
            body.as_bytes().to_vec(),
        ))
        .await
        .expect("POST");
        assert_eq!(response.status, 400, "{body}");
        let json = response.json().expect("a JSON error");
        assert!(
            json["error"]
                .as_str()
                .expect("error")
                .contains("JSON object")
        );
    }
    assert_log_is_empty(&chat).await;
    chat.stop().await;
}

// --- every body: a deadline ------------------------------------------------------------------

/// A body that stops arriving (ten bytes of a hundred, then silence; or a byte at a time) gets
/// `408` with the JSON error once the body deadline has passed, and the connection is closed.
/// Before, the connection stayed open and unanswered for as long as the client liked.
#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_connection_closes() {
    let limit = Duration::from_millis(300);
    let chat = TestServer::start(move |listener, signal| {
        let config = chat_sse::Config {
            server: ServerOptions {
                limits: ConnectionLimits {
                    body_read_timeout: limit,
                    ..ConnectionLimits::default()
                },
                ..ServerOptions::default()
            },
            ..chat_sse::Config::default()
        };
        chat_sse::run(listener, config, signal)
    })
    .await;
    let head = "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n";

    // Ten bytes, then silence.
    let mut silent = within(TcpStream::connect(chat.addr))
        .await
        .expect("connect");
    silent
        .write_all(format!("{head}{{\"user\":\"a").as_bytes())
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    within(silent.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection");
    let (status, json) = whole_json(&answer);
    assert_eq!(status, 408);
    assert!(
        json["error"]
            .as_str()
            .expect("error")
            .contains("did not arrive")
    );
    assert!(started.elapsed() >= limit, "answered before the deadline");

    // A byte every 50 ms: each byte is in time, the whole body is not.
    let mut dripping = within(TcpStream::connect(chat.addr))
        .await
        .expect("connect");
    dripping.write_all(head.as_bytes()).await.expect("write");
    let (mut reader, mut writer) = dripping.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    within(reader.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection");
    assert_eq!(whole_json(&answer).0, 408);
    drip.abort();

    assert_log_is_empty(&chat).await;
    chat.stop().await;
}

// --- the kit's direct path: whole answers ----------------------------------------------------

/// A refusal on the direct path reaches a client that sent more bytes after its request (a
/// pipelined request, or just noise), and the connection is closed, not reset. Before, the
/// server closed with those bytes unread, so the kernel sent RST after the answer: a client
/// whose stack discards unread data on a reset (Windows does, and every stack loses what had not
/// arrived yet) got "connection reset" instead of the `400` it was meant to read.
#[tokio::test]
async fn a_refusal_is_read_in_full_despite_pipelined_bytes() {
    let clock = fast_clock(true).await;
    let mut request = b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\
                        Last-Event-ID: not-a-number\r\n\r\n"
        .to_vec();
    request.extend(std::iter::repeat_n(b'x', 32 * 1024));
    let mut stream = within(TcpStream::connect(clock.addr))
        .await
        .expect("connect");
    stream.write_all(&request).await.expect("write");
    // Gives a reset, if the server sends one, time to arrive before the client reads: over a
    // real network the answer and the close come while the client is still sending.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answer = Vec::new();
    let read = within(stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "reading the answer failed ({read:?}) after {} bytes: {:?}",
        answer.len(),
        String::from_utf8_lossy(&answer)
    );
    let (status, json) = whole_json(&answer);
    assert_eq!(status, 400);
    assert!(
        json["error"]
            .as_str()
            .expect("error")
            .contains("Last-Event-ID")
    );
    let reset = stream.take_error().expect("SO_ERROR");
    assert!(
        reset.is_none(),
        "the server reset the connection ({reset:?}) with the client's bytes unread, instead of \
         closing it: a client may lose the answer to that"
    );
}
