//! Exercise `chat_typing` (chapter: SSE chat), reference solution.
//!
//! Goal: `POST /typing` with `{"name":"ann"}` tells everyone in the room that ann is typing: each
//! stream gets a named `typing` event with data `{"name":"ann"}`. It carries no `id`, so it does
//! not move the browser's `lastEventId`: a reconnect resumes after the last real message, and a
//! stale "is typing" is never replayed. An empty or over-long name is answered `400`.
//!
//! Check with `cargo run -p exercises -- check chat_typing`.
//!
//! `POST /send` with `{"name":"ann","text":"hi"}` posts a message; `GET /events` streams them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response, StatusCode};
use realtime_kit::request::read_json;
use realtime_kit::sse::{Event, SseResponse};
use realtime_kit::{RequestBody, ResponseBody, Shutdown, respond};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The largest request body read; a longer one is answered `413`.
const MAX_BODY: usize = 4 * 1024;
/// The longest name accepted, in characters.
const MAX_NAME: usize = 32;
/// Events a client may fall behind before its stream is closed (its browser reconnects).
const LIVE_QUEUE: usize = 64;

/// Serves the room on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let app = Arc::new(App {
        next_id: AtomicU64::new(1),
        live: broadcast::channel(LIVE_QUEUE).0,
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve(listener, shutdown_signal, shutdown, move |request| {
        let app = app.clone();
        async move { app.handle(request).await }
    })
    .await;
}

/// What `POST /send` accepts.
#[derive(Deserialize)]
struct Posted {
    name: String,
    text: String,
}

/// What `POST /typing` accepts.
#[derive(Deserialize)]
struct Typing {
    name: String,
}

struct App {
    /// The id the next message gets.
    next_id: AtomicU64,
    /// Every event, encoded once, to every open stream.
    live: broadcast::Sender<Bytes>,
    /// Ends every stream when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    async fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::POST, "/send") => self.send(request).await,
            (&Method::POST, "/typing") => self.typing(request).await,
            (&Method::GET, "/events") => {
                SseResponse::new(live_events(self.live.subscribe()), &self.shutdown).into_response()
            }
            (_, path) => respond::not_found(path),
        }
    }

    async fn send(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let posted: Posted = match read_json(request, MAX_BODY).await {
            Ok(posted) => posted,
            Err(rejection) => return rejection.into_response(),
        };
        if let Err(problem) = check_name(&posted.name) {
            return respond::error(StatusCode::BAD_REQUEST, problem);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let data = serde_json::json!({"name": posted.name, "text": posted.text}).to_string();
        // No `event:` line: an event without a type is a `message`, the type `onmessage` gets.
        let message = Event::new()
            .id(id.to_string())
            .expect("a number is one line")
            .data(data);
        // No receiver is not an error: nobody is listening right now.
        let _ = self.live.send(message.encode());
        respond::json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id }))
    }

    async fn typing(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let typing: Typing = match read_json(request, MAX_BODY).await {
            Ok(typing) => typing,
            Err(rejection) => return rejection.into_response(),
        };
        if let Err(problem) = check_name(&typing.name) {
            return respond::error(StatusCode::BAD_REQUEST, problem);
        }
        // No `id`: a typing notice is not part of the history a reconnect resumes from.
        let notice = Event::new()
            .event("typing")
            .expect("a fixed name is one line")
            .data(serde_json::json!({ "name": typing.name }).to_string());
        let _ = self.live.send(notice.encode());
        respond::json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "typing": typing.name }),
        )
    }
}

/// Refuses a name nobody could read: empty, or longer than [`MAX_NAME`].
fn check_name(name: &str) -> Result<(), String> {
    let length = name.trim().chars().count();
    if length == 0 || length > MAX_NAME {
        return Err(format!("`name` must be 1 to {MAX_NAME} characters"));
    }
    Ok(())
}

/// The live events; ends when the client falls `LIVE_QUEUE` behind, so its browser reconnects.
fn live_events(live: broadcast::Receiver<Bytes>) -> impl Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(live, |mut live| async move {
        let event = live.recv().await.ok()?;
        Some((event, live))
    })
}
