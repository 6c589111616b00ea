//! Exercise `chat_replay` (chapter: SSE chat), reference solution.
//!
//! Goal: a browser that reconnects sends `Last-Event-ID: <id of the last message it saw>`. The
//! room keeps its last `history` messages; a reconnecting client first gets every kept message
//! with a higher id, in order, then the live ones, with no gap and no duplicate between the two.
//!
//! Check with `cargo run -p exercises -- check chat_replay`.
//!
//! `POST /send` with `{"name":"ann","text":"hi"}` posts; `GET /events` streams `message` events
//! whose `id` is the message number and whose data is `{"name":..,"text":..}`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use realtime_kit::request::read_json;
use realtime_kit::sse::{self, Event, SseResponse};
use realtime_kit::{RequestBody, ResponseBody, Shutdown, respond};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The largest `POST /send` body read; a longer one is answered `413`.
const MAX_BODY: usize = 4 * 1024;
/// Messages a client may fall behind before its stream is closed (it reconnects and replays).
const LIVE_QUEUE: usize = 64;

/// How the room behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many of the latest messages are kept for replay.
    pub history: usize,
}

/// Serves the room on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let app = Arc::new(App {
        room: Mutex::new(Room {
            next_id: 1,
            kept: VecDeque::with_capacity(config.history),
            live: broadcast::channel(LIVE_QUEUE).0,
        }),
        history: config.history,
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

struct App {
    /// Everything posted: one lock, so a new stream's replay and its live feed cannot miss or
    /// repeat a message published between the two.
    room: Mutex<Room>,
    /// How many messages `room.kept` holds at most.
    history: usize,
    /// Ends every stream when the server shuts down.
    shutdown: Shutdown,
}

struct Room {
    /// The id the next message gets.
    next_id: u64,
    /// The latest messages, oldest first, already encoded, with their ids.
    kept: VecDeque<(u64, Bytes)>,
    /// Every message as it is posted, to every open stream.
    live: broadcast::Sender<Bytes>,
}

impl Room {
    /// The kept messages numbered above `seen`, oldest first.
    fn since(&self, seen: u64) -> Vec<Bytes> {
        // Ids increase along the queue, so the wanted ones are a suffix of it.
        self.kept
            .iter()
            .filter(|(id, _)| *id > seen)
            .map(|(_, message)| message.clone())
            .collect()
    }
}

impl App {
    async fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::POST, "/send") => self.send(request).await,
            (&Method::GET, "/events") => self.events(&request),
            (_, path) => respond::not_found(path),
        }
    }

    async fn send(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let posted: Posted = match read_json(request, MAX_BODY).await {
            Ok(posted) => posted,
            Err(rejection) => return rejection.into_response(),
        };
        let data = serde_json::json!({"name": posted.name, "text": posted.text}).to_string();
        let mut room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        let id = room.next_id;
        room.next_id += 1;
        // No `event:` line: an event without a type is a `message`, the type `onmessage` gets.
        let message = Event::new()
            .id(id.to_string())
            .expect("a number is one line")
            .data(data) // serde_json never writes a raw newline, so this stays one `data:` line
            .encode();
        if room.kept.len() == self.history {
            room.kept.pop_front();
        }
        if self.history > 0 {
            room.kept.push_back((id, message.clone()));
        }
        // No receiver is not an error: nobody is listening right now.
        let _ = room.live.send(message);
        respond::json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id }))
    }

    fn events<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        let seen = match sse::last_event_id(request) {
            Ok(seen) => seen,
            Err(error) => return respond::error(StatusCode::BAD_REQUEST, error),
        };
        let (replay, live) = {
            let room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
            // Under the same lock as `send`: every message is either in the replay or in the
            // live feed, never both, never neither.
            let replay = seen.map(|seen| room.since(seen)).unwrap_or_default();
            (replay, room.live.subscribe())
        };
        let stream = futures_util::stream::iter(replay).chain(live_messages(live));
        SseResponse::new(stream, &self.shutdown).into_response()
    }
}

/// The live messages; ends when the client falls `LIVE_QUEUE` behind, so it reconnects with its
/// `Last-Event-ID` and gets what it missed from the replay instead of silently losing it.
fn live_messages(live: broadcast::Receiver<Bytes>) -> impl Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(live, |mut live| async move {
        let message = live.recv().await.ok()?;
        Some((message, live))
    })
}
