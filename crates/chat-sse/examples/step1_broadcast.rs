//! Step 1 of the chat: the smallest correct chat over Server-Sent Events, on plain hyper. A POST
//! to `/messages` is encoded once and sent on ONE `broadcast` channel; every open `/events` stream
//! writes those same bytes (no task, timer or copy of the work per client). Run it with
//! `cargo run -p chat-sse --example step1_broadcast` (`PORT=0` picks a free port) and open two
//! tabs of <http://127.0.0.1:3002>, or `curl -N http://127.0.0.1:3002/events` and `curl -d
//! '{"user":"ann","text":"hi"}' http://127.0.0.1:3002/messages`. Step 2 adds ids and resuming.

use std::{convert::Infallible, time::Duration};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>chat-sse</title>
<ul id="messages"></ul><p id="state">connecting</p><form id="post"><input id="user"
placeholder="name"> <input id="text" placeholder="message"> <button>Send</button></form><script>
  const source = new EventSource("/events"), state = document.getElementById("state");
  source.onopen = () => { state.textContent = "open"; };
  // Do not close the source on error: while it is CONNECTING the browser is retrying by itself.
  source.onerror = () => { state.textContent = "reconnecting"; };
  source.addEventListener("message", (event) => {
    const message = JSON.parse(event.data), item = document.createElement("li");
    item.textContent = message.user + ": " + message.text; // text, never parsed as HTML
    document.getElementById("messages").append(item);
  });
  document.getElementById("post").addEventListener("submit", async (event) => {
    event.preventDefault(); // the message comes back through the stream, like everyone's
    const [user, text] = ["user", "text"].map((id) => document.getElementById(id).value);
    const response = await fetch("/messages", { method: "POST",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, text }) });
    const answer = await response.json().catch(() => ({}));
    state.textContent = response.ok ? "sent" : answer.error || "refused: " + response.status;
  });</script>"#;

/// The room: ONE channel for everyone. A post sends once; every stream's receiver gets the bytes.
type Room = broadcast::Sender<Bytes>;

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3002), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("step1_broadcast listening on http://{addr}");

    let room = Room::new(256);
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // Out of file descriptors, usually: wait for some to be freed rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let room = room.clone();
        let service = service_fn(move |request| respond(request, room.clone()));
        // One client's error (it went away mid-response) ends its connection, not the server.
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service));
    }
}

async fn respond(request: Request<Incoming>, room: Room) -> Result<Response<Body>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (200, "text/html; charset=utf-8", full(PAGE)),
        (&Method::GET, "/events") => (200, "text/event-stream", events(&room)),
        (&Method::POST, "/messages") => post(request, &room).await,
        _ => (404, "application/json", full(r#"{"error":"not found"}"#)),
    };
    // `no-cache`: every reader needs the live stream, never a stored copy.
    let headers = Response::builder().header("cache-control", "no-cache");
    let response = headers.status(status).header("content-type", content_type);
    Ok(response.body(body).expect("fixed, valid headers"))
}

/// `POST /messages` with `{"user": ..., "text": ...}`: `201` with the message, sent to everyone.
async fn post(request: Request<Incoming>, room: &Room) -> (u16, &'static str, Body) {
    let body = request.into_body().collect().await;
    let body = body.map(|body| body.to_bytes()).unwrap_or_default();
    let posted: Value = serde_json::from_slice(&body).unwrap_or_default(); // not JSON: Null
    let field = |name| Some(Value::from(posted.get(name)?.as_str()?));
    let (Some(user), Some(text)) = (field("user"), field("text")) else {
        let error = r#"{"error":"send a JSON object {\"user\": \"...\", \"text\": \"...\"}"}"#;
        return (400, "application/json", full(error));
    };
    // Values print as JSON, where a line break is the two characters `\n`: `data:` is one line,
    // so nothing a user writes can end the event or start another.
    let message = format!(r#"{{"user":{user},"text":{text}}}"#);
    let _ = room.send(Bytes::from(format!("data: {message}\n\n"))); // Err: no stream is open
    (201, "application/json", full(message))
}

/// One client's stream: every message posted from now on. When the client goes away, hyper's
/// next write fails and drops this body with its receiver: nothing is left running.
fn events(room: &Room) -> Body {
    let frames = futures_util::stream::unfold(room.subscribe(), |mut messages| async move {
        loop {
            match messages.recv().await {
                Ok(event) => return Some((Ok(Frame::data(event)), messages)),
                Err(RecvError::Lagged(_)) => continue, // skipped, silently: see step 4
                Err(RecvError::Closed) => return None,
            }
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}
