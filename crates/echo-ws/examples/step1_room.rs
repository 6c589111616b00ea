//! Step 1 of echo-ws: the smallest correct WebSocket room on plain hyper. Each text message goes
//! to every client as JSON with its sender's number, through ONE `broadcast` ring. Run it with
//! `cargo run -p echo-ws --example step1_room` and open <http://127.0.0.1:3001> in two tabs.

use std::{convert::Infallible, sync::atomic::AtomicU64, sync::atomic::Ordering};

use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response, server::conn::http1, service::service_fn, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::server::create_response_with_body;
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

type Reply = Result<Response<Full<hyper::body::Bytes>>, Infallible>;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1); // numbers the connections: a message's from

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("step1_room listening on http://{}", listener.local_addr()?);
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
        // tungstenite checks the handshake (RFC 6455 4.2.1) and computes Sec-WebSocket-Accept.
        "/ws" => match create_response_with_body(&request, Full::default) {
            Ok(switching_protocols) => {
                // hyper sends the 101 only once we return it: spawn what awaits the upgrade.
                tokio::spawn(session(hyper::upgrade::on(&mut request), room));
                return Ok(switching_protocols);
            }
            Err(error) => (400, "text/plain", format!("{error}\n")),
        },
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    let response = Response::builder().status(status);
    let response = response.header("content-type", content_type);
    Ok(response.body(Full::from(body)).expect("valid headers"))
}

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
