//! Step 2 of echo-ws: who may connect, and what a refused client is told. A browser sends a
//! visitor's cookies with a WebSocket handshake whatever site the page comes from, and no
//! same-origin policy protects a WebSocket: without a check, a page on any site can open a socket
//! to the room in the visitor's name and read everything (cross-site WebSocket hijacking). So the
//! `Origin` a browser sends (a page cannot forge it) must be this server's own; a request without
//! one is not from a page (curl, a script) and may connect. And a refused handshake gets a status
//! and a JSON `{"error": ...}` that say what to send instead: `426 Upgrade Required` with
//! `Upgrade: websocket` for a plain GET (a browser opening the URL, curl), `426` with
//! `Sec-WebSocket-Version: 13` for another protocol version (RFC 6455 section 4.4), `403` for a
//! page of another origin, `400` for a malformed key.
//!
//! Without it (step 1) a page on `evil.example` reads the room, and `curl` gets a bare `400`.
//!
//! Run: `cargo run -p echo-ws --example step2_origin`, then `curl -i http://127.0.0.1:3001/ws`
//! (426) or `curl -i -H 'Origin: http://evil.example' -H 'Connection: Upgrade' -H 'Upgrade:
//! websocket' http://127.0.0.1:3001/ws` (403). `PORT=0` picks a free port. Check it with `cargo
//! run -p ladder -- check echo-ws step2_origin`.

use std::{convert::Infallible, sync::atomic::AtomicU64, sync::atomic::Ordering};

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response, server::conn::http1, service::service_fn, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::{self, handshake::server::create_response_with_body};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message, tungstenite::protocol::Role};

const PAGE: &str = r##"<!doctype html><meta charset="utf-8"><title>echo-ws</title>
<form><input id="text" autocomplete="off"><button>Send</button></form><pre id="log"></pre><script>
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
    socket.onclose = () => { // a WebSocket never reconnects by itself: back off, with jitter
      show("disconnected; reconnecting");
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
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("step2_origin listening on http://{addr}");
    let room = Room::new(128);
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await; // out of sockets?
            continue;
        };
        let room = room.clone();
        let service = service_fn(move |request| respond(request, room.clone()));
        let connection = http1::Builder::new().serve_connection(TokioIo::new(socket), service);
        tokio::spawn(connection.with_upgrades()); // after a 101, hyper hands the socket over
    }
}

async fn respond(mut request: Request<hyper::body::Incoming>, room: Room) -> Reply {
    let stats = format!(r#"{{"clients":{}}}"#, room.receiver_count()); // a receiver a session
    let (status, content_type, body) = match request.uri().path() {
        "/" => (200, "text/html; charset=utf-8", PAGE.to_owned()),
        "/stats" => (200, "application/json", stats),
        "/ws" => {
            // ANCHOR: check_origin
            if let Some(forbidden) = foreign_origin(&request) {
                return Ok(forbidden);
            }
            // ANCHOR_END: check_origin
            // tungstenite checks the handshake (RFC 6455 4.2.1) and computes the accept key.
            match create_response_with_body(&request, Full::default) {
                Ok(switching_protocols) => {
                    // hyper sends the 101 only once we return it: spawn what awaits the upgrade.
                    tokio::spawn(session(hyper::upgrade::on(&mut request), room));
                    return Ok(switching_protocols);
                }
                // ANCHOR: handshake_refused
                Err(error) => return Ok(handshake_refused(&error)),
                // ANCHOR_END: handshake_refused
            }
        }
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let response = Response::builder().status(status);
    let response = response.header("content-type", content_type);
    Ok(response.body(Full::from(body)).expect("valid headers"))
}

// ANCHOR: refusals
/// A `403`, unless the page that opens the socket was loaded from this server: its
/// `Origin`'s host and port are the `Host` it connects to (the scheme is not compared, so an
/// `https` page behind a proxy that speaks plain HTTP to us still gets in). No `Origin`: not a
/// page, so nothing to protect (curl could send any `Origin` it likes).
fn foreign_origin(request: &Request<hyper::body::Incoming>) -> Option<Response<Body>> {
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
// ANCHOR_END: refusals

/// One client: publishes what it sends, forwards the room to it. Reads answer Ping and Close.
async fn session(upgrade: OnUpgrade, room: Room) {
    let Ok(io) = upgrade.await else { return }; // it left before the 101
    let mut socket = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
    let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    let (mut published, clients) = (room.subscribe(), room.receiver_count()); // before the welcome
    let welcome = format!(r#"{{"type":"welcome","client":{client},"clients":{clients}}}"#);
    let mut sent = socket.send(Message::text(welcome)).await;
    while sent.is_ok() {
        tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let text = serde_json::Value::from(text.as_str()); // quoted and escaped
                    let message = format!(r#"{{"type":"message","from":{client},"text":{text}}}"#);
                    let _ = room.send(message.into()); // fails only if no one is in the room
                }
                Some(Ok(_)) => {} // Ping, Pong; after a Close the next read answers it, ends
                None | Some(Err(_)) => return,
            },
            published = published.recv() => match published {
                Ok(text) => sent = socket.send(Message::Text(text)).await,
                Err(_) => return, // Lagged: a whole ring behind. Let it go; its page reconnects.
            },
        }
    }
}
