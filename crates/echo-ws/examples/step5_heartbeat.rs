//! Step 5 of echo-ws: heartbeats. A client that vanished without closing (a laptop shut, a
//! phone out of coverage) shows no sign of it: TCP notices only when a write fails, which can
//! take many minutes, and a quiet room writes nothing. So the server sends a Ping every
//! `PING_MS` (15 s), which a live client answers with a Pong (browsers do so by themselves),
//! and closes with 1008 (policy violation) a client from which nothing at all has come for
//! `IDLE_TIMEOUT_MS` (35 s: two missed Pongs and some slack). The Pings also keep a proxy in
//! front from closing a quiet connection (nginx: after 60 s).
//!
//! Without them (step 4) a vanished client keeps its socket, its task and its place in the room
//! until the kernel gives up on the connection.
//!
//! Run: `PING_MS=1000 IDLE_TIMEOUT_MS=3000 cargo run -p echo-ws --example step5_heartbeat`,
//! then join with a client that answers no Ping: `curl -N -H 'Connection: Upgrade' -H 'Upgrade:
//! websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
//! http://127.0.0.1:3001/ws` prints the raw frames: the welcome, a Ping a second, and after 3 to
//! 4 s the Close, "silent: no answer to pings". The other settings are step 4's
//! (`SEND_TIMEOUT_MS`, `PORT`). Check it with `cargo run -p ladder -- check echo-ws
//! step5_heartbeat`.

use std::{convert::Infallible, sync::atomic::AtomicU64, sync::atomic::Ordering, time::Duration};

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, server::conn::http1, service::service_fn, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::create_response_with_body;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, error::ProtocolError};

const PAGE: &str = r##"<!doctype html><meta charset="utf-8"><title>echo-ws</title>
<!-- maxlength counts UTF-16 units, at most 3 bytes of UTF-8 each: the server takes 64 KiB. -->
<form><input id="text" autocomplete="off" maxlength="16384"><button>Send</button></form>
<pre id="log"></pre><script>
  const show = (line) => document.getElementById("log").prepend(line + "\n"); // text, not HTML
  let socket, failures = 0;
  function connect() {
    socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
    socket.onopen = () => { failures = 0; };
    socket.onmessage = (event) => {
      const note = JSON.parse(event.data);
      if (note.type === "welcome") show("connected: you are #" + note.client);
      if (note.type === "message") show("#" + note.from + ": " + note.text);
    };
    socket.onclose = (event) => { // a WebSocket never reconnects by itself: back off, with jitter
      show("disconnected (code " + event.code + " " + event.reason + "); reconnecting");
      setTimeout(connect, Math.min(30000, 500 * 2 ** ++failures) * (0.5 + Math.random() / 2));
    };
  }
  document.forms[0].onsubmit = (event) => {
    event.preventDefault();
    if (socket.readyState === WebSocket.OPEN) socket.send(event.target.text.value);
    event.target.text.value = "";
  };
  connect();</script>"##;

/// The room: one ring of the last 128 messages, encoded once, that every session reads.
type Room = tokio::sync::broadcast::Sender<tokio_tungstenite::tungstenite::Utf8Bytes>;

type Body = Full<hyper::body::Bytes>;
type Reply = Result<Response<Body>, Infallible>;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1); // numbers the connections: a message's from

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |port| port.parse())?;
    let settings = Settings::from_env()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("step5_heartbeat listening on http://{addr}");
    let room = Room::new(128);
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await; // out of sockets?
            continue;
        };
        let room = room.clone();
        let service = service_fn(move |request| respond(request, room.clone(), settings));
        let connection = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
        tokio::spawn(connection.with_upgrades()); // after a 101, hyper hands the socket over
    }
}

async fn respond(mut request: Request<Incoming>, room: Room, settings: Settings) -> Reply {
    let stats = format!(r#"{{"clients":{}}}"#, room.receiver_count()); // a receiver a session
    let (status, content_type, body) = match request.uri().path() {
        "/" => (200, "text/html; charset=utf-8", PAGE.to_owned()),
        "/stats" => (200, "application/json", stats),
        "/ws" => {
            if let Some(forbidden) = foreign_origin(&request) {
                return Ok(forbidden);
            }
            // tungstenite checks the handshake (RFC 6455 4.2.1) and computes the accept key.
            match create_response_with_body(&request, Full::default) {
                Ok(switching_protocols) => {
                    // hyper sends the 101 only once we return it: spawn what awaits the upgrade.
                    let upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(session(upgrade, room, settings));
                    return Ok(switching_protocols);
                }
                Err(error) => return Ok(handshake_refused(&error)),
            }
        }
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let response = Response::builder().status(status);
    let response = response.header("content-type", content_type);
    Ok(response.body(Full::from(body)).expect("valid headers"))
}

/// A `403`, unless the page that opens the socket was loaded from this server: its
/// `Origin`'s host and port are the `Host` it connects to (the scheme is not compared, so an
/// `https` page behind a proxy that speaks plain HTTP to us still gets in). No `Origin`: not a
/// page, so nothing to protect (curl could send any `Origin` it likes).
fn foreign_origin(request: &Request<Incoming>) -> Option<Response<Body>> {
    let origin = request.headers().get("origin")?; // none: not a page
    let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
    let authority = origin
        .strip_prefix("http://")
        .or(origin.strip_prefix("https://"));
    let host = request.headers().get("host").map(|host| host.to_str());
    let host = host.and_then(Result::ok).map(str::to_ascii_lowercase);
    if authority.is_some() && authority == host.as_deref() {
        return None;
    }
    let error = format!("pages from origin {origin:?} may not connect here");
    Some(refusal(403, &error, None))
}

/// What a client that failed the handshake is told: 426 and the header that says what to send
/// when it can retry with that, 400 otherwise.
fn handshake_refused(error: &tungstenite::Error) -> Response<Body> {
    use tungstenite::error::ProtocolError::*;
    match error {
        tungstenite::Error::Protocol(
            MissingConnectionUpgradeHeader | MissingUpgradeWebSocketHeader,
        ) => {
            let error = "this is a WebSocket endpoint: connect with a WebSocket client";
            refusal(426, error, Some(("upgrade", "websocket")))
        }
        tungstenite::Error::Protocol(MissingSecWebSocketVersionHeader) => {
            let error = "this server speaks WebSocket version 13 only";
            refusal(426, error, Some(("sec-websocket-version", "13")))
        }
        other => refusal(400, &format!("bad WebSocket handshake: {other}"), None),
    }
}

/// A refusal: `status`, a JSON `{"error": ...}`, and the header that says what to do instead.
fn refusal(status: u16, error: &str, hint: Option<(&str, &str)>) -> Response<Body> {
    let mut response = Response::builder().status(status);
    response = response.header("content-type", "application/json");
    if let Some((name, value)) = hint {
        response = response.header(name, value);
    }
    let body = serde_json::json!({ "error": error }).to_string();
    response.body(Full::from(body)).expect("valid headers")
}

/// The largest text message a client may send. A chat line is far smaller; the room relays each
/// message to everyone, so this also bounds what one client can make the server send.
const MAX_MESSAGE: usize = 64 * 1024;

/// What one socket may cost. tungstenite's defaults suit a few big clients, not many small
/// ones: they read 128 KiB at a time (a buffer zero-filled for every socket), accept messages
/// of up to 64 MiB, and let any amount wait to be written.
fn limits() -> WebSocketConfig {
    WebSocketConfig::default()
        // A chat line takes one read, a bigger message a few more: 4 KiB is about what an idle
        // client costs, where 128 KiB made it ~134 KB.
        .read_buffer_size(4 * 1024)
        // A larger message or frame is refused with 1009 as soon as its header gives its length.
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        // Written at once, each message (tungstenite would gather 128 KiB first) ...
        .write_buffer_size(4 * 1024)
        // ... and at most this much waiting: the JSON of the biggest message (escaping can make
        // text 6 times longer). Past it a write fails instead of buffering more.
        .max_write_buffer_size(8 * MAX_MESSAGE)
}

/// The socket of a client, once hyper has handed the connection over.
type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Ends a session whose client sent what it may not, with the code that says what (RFC 6455
/// section 7.4.1) when there is still someone to tell.
async fn refuse(socket: &mut WebSocket, error: &tungstenite::Error) {
    let (code, reason) = match error {
        tungstenite::Error::Capacity(_) => (CloseCode::Size, "message too big"), // 1009
        tungstenite::Error::Utf8(_) => (CloseCode::Invalid, "text that is not UTF-8"), // 1007
        // The connection broke off: there is no one to tell.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return,
        tungstenite::Error::Protocol(_) => (CloseCode::Protocol, "broken frame"), // 1002
        _ => return,
    };
    close(socket, code, reason).await;
}

/// The server ends the connection: sends Close with `code` and `reason`, then reads until the
/// client answers with its own, for at most 2 s (a client that never answers is dropped).
async fn close(socket: &mut WebSocket, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let closing = async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
}

/// Writes one message within `limit`; `false` if the client is gone or took nothing for that
/// long. A client that stops reading fills its TCP window, and then this write waits: only this
/// client's task waits, and not for longer than `limit`. A socket that took nothing for that
/// long could not take a Close frame either, so the session just returns, and dropping the
/// socket closes the connection.
async fn send(socket: &mut WebSocket, message: Message, limit: Duration) -> bool {
    let written = tokio::time::timeout(limit, socket.send(message)).await;
    matches!(written, Ok(Ok(())))
}

/// The server's timings, read once from the environment, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// How long one message may take to be written to a client: `SEND_TIMEOUT_MS`, 10 s.
    send_timeout: Duration,
    // ANCHOR: heartbeat_settings
    /// Time between Pings: `PING_MS`, 15 s.
    ping_interval: Duration,
    /// How long a client may send nothing at all, not even a Pong: `IDLE_TIMEOUT_MS`, 35 s.
    idle_timeout: Duration,
    // ANCHOR_END: heartbeat_settings
}

impl Settings {
    fn from_env() -> Result<Self, std::num::ParseIntError> {
        Ok(Self {
            send_timeout: millis("SEND_TIMEOUT_MS", 10_000)?,
            // tokio's interval panics on zero.
            ping_interval: millis("PING_MS", 15_000)?.max(Duration::from_millis(1)),
            idle_timeout: millis("IDLE_TIMEOUT_MS", 35_000)?,
        })
    }
}

/// A duration read from the environment variable `name`, in milliseconds, or `default_ms`.
fn millis(name: &str, default_ms: u64) -> Result<Duration, std::num::ParseIntError> {
    let ms = std::env::var(name).map_or(Ok(default_ms), |ms| ms.parse())?;
    Ok(Duration::from_millis(ms))
}

/// One client: publishes what it sends, forwards the room to it. Reads answer Ping and Close.
async fn session(upgrade: OnUpgrade, room: Room, settings: Settings) {
    let Ok(io) = upgrade.await else { return }; // it left before the 101
    let io = TokioIo::new(io);
    let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(limits())).await;
    let Settings {
        send_timeout,
        ping_interval,
        idle_timeout,
    } = settings;
    let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let (mut published, clients) = (room.subscribe(), room.receiver_count()); // before the welcome
    let welcome = format!(r#"{{"type":"welcome","client":{client},"clients":{clients}}}"#);
    let mut sent = send(&mut socket, Message::text(welcome), send_timeout).await;
    // ANCHOR: heartbeat_state
    let mut pings = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    let mut last_heard = Instant::now();
    // ANCHOR_END: heartbeat_state
    while sent {
        tokio::select! {
            incoming = socket.next() => {
                // ANCHOR: heard
                last_heard = Instant::now(); // any frame shows the client is there, a Pong too
                // ANCHOR_END: heard
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let text = serde_json::Value::from(text.as_str()); // quoted and escaped
                        let message =
                            format!(r#"{{"type":"message","from":{client},"text":{text}}}"#);
                        let _ = room.send(message.into()); // fails only if no one is in the room
                    }
                    // Decision: the room relays text only, and says so (RFC 6455 section 7.4.1).
                    Some(Ok(Message::Binary(_))) => {
                        return close(&mut socket, CloseCode::Unsupported, "text only").await;
                    }
                    Some(Ok(_)) => {} // Ping, Pong; after a Close the next read answers it, ends
                    Some(Err(error)) => return refuse(&mut socket, &error).await,
                    None => return,
                }
            }
            published = published.recv() => match published {
                Ok(text) => sent = send(&mut socket, Message::Text(text), send_timeout).await,
                // The ring overwrote messages this client had not taken: it is closed, and told
                // why. Skipping them would show its page a conversation with holes in it.
                Err(RecvError::Lagged(_)) => {
                    return close(&mut socket, CloseCode::Policy, "too slow: fell behind").await;
                }
                Err(RecvError::Closed) => return, // the room is gone: nothing left to be in
            },
            // ANCHOR: heartbeat
            // Silence is checked at each Ping: a silent client is closed between IDLE_TIMEOUT_MS
            // and IDLE_TIMEOUT_MS + PING_MS after the last frame it sent.
            _ = pings.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    let reason = "silent: no answer to pings";
                    return close(&mut socket, CloseCode::Policy, reason).await;
                }
                sent = send(&mut socket, Message::Ping(Default::default()), send_timeout).await;
            }
            // ANCHOR_END: heartbeat
        }
    }
}
