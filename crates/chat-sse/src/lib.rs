//! chat-sse: a chat room over Server-Sent Events that never loses or repeats a message across
//! reconnects.
//!
//! Run with
//!
//! ```text
//! cargo run -p chat-sse
//! ```
//!
//! then open <http://127.0.0.1:3002> in two tabs and chat between them. From a terminal, watch
//! with `curl -N http://127.0.0.1:3002/events` and post with
//!
//! ```text
//! curl -i -H 'Content-Type: application/json' -d '{"user":"ann","text":"hello"}' http://127.0.0.1:3002/messages
//! ```
//!
//! The shape: POST in, stream out. A posted message gets the next id, is stored in a bounded
//! log, encoded once as an SSE event, and broadcast; every open stream writes the same bytes.
//! A browser that reconnects sends `Last-Event-ID` and gets exactly the messages it missed from
//! the log, then the live ones. A stream that falls too far behind is closed, and catches up
//! the same way when the browser reconnects. With `--direct-streams`, browsers' streams are
//! written by one task per core (`realtime_kit::fanout`) instead of a task each.
//!
//! | route | what it serves |
//! | --- | --- |
//! | `GET /` | the page |
//! | `GET /events` | the stream: `message` events (id, JSON), `presence` (streams open), `gap` (messages lost) |
//! | `POST /messages` | `{"user": .., "text": ..}` in, `201` with the stored message out |
//! | `GET /messages?after=<id>` | the log as JSON, for clients without SSE |
//! | `OPTIONS /events`, `/messages` | the CORS preflight (allowed origins come from `--allow-origin`) |
//!
//! One process holds the room by default. With `--redis URL` (or `REDIS_URL`) the log is a
//! Redis Stream that any number of instances share: see `redis_log.rs` and the book's chapter
//! "When one process is not enough".

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askama::Template;
use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response, StatusCode, header};
use realtime_kit::backplane::redis::RedisError;
use realtime_kit::backplane::{self, Backplane};
use realtime_kit::fanout::{Fanout, Outbox};
use realtime_kit::request::{self, Cors};
use realtime_kit::sse::{self, Event, MAX_EVENT_ID, Membership, SseResponse};
use realtime_kit::{
    Gauge, GaugeGuard, RequestBody, ResponseBody, ServerOptions, Shutdown, respond,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Notify, watch};

mod redis_log;
use redis_log::SharedLog;

/// The port `cargo run -p chat-sse` listens on.
pub const DEFAULT_PORT: u16 = 3002;

// ANCHOR: limits
/// The largest `POST /messages` body read. The longest valid message as a browser's
/// `JSON.stringify` writes it is about 8 KB (2,000 characters of up to 4 bytes each); the rest is
/// room for escapes. A longer body is refused with `413` before it is read to the end.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// A user name is 1 to 32 characters after trimming spaces at both ends, on one line.
pub const MAX_USER_CHARS: usize = 32;
/// A text is 1 to 2,000 characters (Unicode scalar values, not bytes), stored exactly as sent;
/// it must contain something besides spaces and line breaks.
pub const MAX_TEXT_CHARS: usize = 2000;
// ANCHOR_END: limits

/// How the chat behaves; [`Config::default`] is what `main` uses without options.
#[derive(Debug, Clone)]
pub struct Config {
    /// Messages kept in memory, for reconnecting clients and `GET /messages` (at least 1). The
    /// oldest is dropped when a new one would exceed it; a client that needed it is told so.
    pub history: usize,
    /// Messages a new client (one without `Last-Event-ID`) receives first (at most `history`).
    pub backlog: usize,
    /// How many events a stream may fall behind the newest before it is closed (at least 1).
    /// The browser then reconnects and catches up from the log, so keep `history` well above it.
    pub max_lag: usize,
    /// Sent as `retry:`: how long a browser waits before reconnecting.
    pub retry: Duration,
    /// How long a stream may be silent before a keep-alive comment is written.
    pub keep_alive: Duration,
    /// Which other origins' pages may post and listen; by default none (same-origin only).
    pub cors: Cors,
    /// The server's limits (the body deadline among them) and the host names it answers
    /// (`--allow-host`).
    pub server: ServerOptions,
    /// Where the log lives: in this process, or in Redis, shared with other instances.
    pub backplane: Backplane,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            history: 1000,
            backlog: 50,
            max_lag: 256,
            retry: Duration::from_secs(3),
            keep_alive: sse::DEFAULT_KEEP_ALIVE,
            cors: Cors::same_origin_only(),
            server: ServerOptions::default(),
            backplane: Backplane::InProcess,
        }
    }
}

// ANCHOR: run
/// Serves the chat on `listener` until `shutdown_signal` completes, then ends every stream and
/// returns.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let options = config.server.clone();
    let app = Arc::new(App {
        room: Arc::new(ChatRoom::new(&config, &shutdown)),
        config,
        shutdown: shutdown.clone(),
    });
    let handler = {
        let app = app.clone();
        move |request| {
            let app = app.clone();
            async move { app.handle(request).await }
        }
    };
    let serve = realtime_kit::serve_with(
        options,
        listener,
        shutdown_signal,
        shutdown.clone(),
        handler,
    );
    match &app.room.shared {
        None => serve.await,
        // With Redis, two more jobs run beside the server, in this same future (not spawned):
        // they stop with it, and a test that aborts it sees them stop as in a crash.
        Some(shared) => {
            tokio::join!(
                serve,
                redis_log::tail(&app.room, shared, &shutdown),
                redis_log::share_presence(&app.room, shared, &shutdown),
            );
        }
    }
}
// ANCHOR_END: run

/// What every request handler shares.
struct App {
    room: Arc<ChatRoom>,
    config: Config,
    /// Given to each stream so that it ends when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    // ANCHOR: routes
    async fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        // Kept before a POST's body is read (which consumes the request): see the end.
        let origin = request.headers().get(header::ORIGIN).cloned();
        let cors = &self.config.cors;
        let mut response = match (&method, path.as_str()) {
            (&Method::GET, "/") => respond::html(&self.page()),
            (&Method::GET, "/events") => self.events(&request),
            (&Method::GET, "/messages") => self.list_messages(&request),
            (&Method::POST, "/messages") => self.post_message(request).await,
            (&Method::OPTIONS, "/events") => return cors.preflight(&request, &[Method::GET]),
            (&Method::OPTIONS, "/messages") => {
                return cors.preflight(&request, &[Method::GET, Method::POST]);
            }
            (method, "/") => respond::method_not_allowed(method, &[Method::GET]),
            (method, "/events") => {
                respond::method_not_allowed(method, &[Method::GET, Method::OPTIONS])
            }
            (method, "/messages") => {
                respond::method_not_allowed(method, &[Method::GET, Method::POST, Method::OPTIONS])
            }
            _ => respond::not_found(&path),
        };
        // The API routes may be used cross-origin (`--allow-origin`). Every answer gets the
        // CORS headers, errors included, so a page of an allowed origin can read why it was
        // refused.
        if matches!(path.as_str(), "/events" | "/messages") {
            cors.add_headers(origin.as_ref(), &mut response);
        }
        response
    }
    // ANCHOR_END: routes

    fn page(&self) -> ChatPage {
        ChatPage {
            max_user_chars: MAX_USER_CHARS,
            max_text_chars: MAX_TEXT_CHARS,
            retry_secs: self.config.retry.as_secs_f64(),
        }
    }

    // ANCHOR: post
    /// `POST /messages`: check the body completely, and only then store and broadcast it, so a
    /// refused request changes nothing.
    async fn post_message(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let posted: NewMessage = match request::read_json(request, MAX_BODY_BYTES).await {
            Ok(posted) => posted,
            Err(rejection) => return rejection.into_response(),
        };
        let valid = match posted.validate() {
            Ok(valid) => valid,
            Err(reason) => return respond::error(StatusCode::UNPROCESSABLE_ENTITY, reason),
        };
        match self.room.post(valid).await {
            Ok(stored) => respond::json(StatusCode::CREATED, &stored),
            // Only with Redis: nothing was stored, and the client is told when to try again.
            Err(error) => backplane::unavailable(&error),
        }
    }
    // ANCHOR_END: post

    // ANCHOR: events
    /// `GET /events`: one client's stream: what it missed (or a backlog), then live events.
    fn events(&self, request: &Request<RequestBody>) -> Response<ResponseBody> {
        // A reconnecting browser sends the id of the last event it received.
        let last_seen = match sse::last_event_id(request) {
            Ok(last_seen) => last_seen,
            Err(error) => return respond::error(StatusCode::BAD_REQUEST, error),
        };
        // A client ahead of this instance (with Redis: it comes from an instance whose tail
        // is further on) must skip what it already has, so it gets a stream of its own. Every
        // other client is at the newest message once it has its catch-up, so on the kit's
        // direct path one writer per core writes them all the same bytes.
        let response = if last_seen.is_some_and(|seen| seen > self.room.newest()) {
            SseResponse::new(self.room.subscribe(last_seen), &self.shutdown)
        } else {
            let (room, joining) = (self.room.clone(), self.room.clone());
            SseResponse::shared(
                move || room.subscribe(last_seen),
                move |outbox| joining.join(last_seen, outbox),
                &self.shutdown,
            )
        };
        response
            .retry(self.config.retry)
            .keep_alive(self.config.keep_alive)
            .into_response()
    }
    // ANCHOR_END: events

    /// `GET /messages?after=<id>`: the log as JSON, for clients that poll instead of streaming.
    fn list_messages(&self, request: &Request<RequestBody>) -> Response<ResponseBody> {
        match parse_after(request.uri().query()) {
            Ok(after) => {
                let (stored, lost) = self.room.history(after);
                let messages = stored.iter().map(|stored| &stored.message).collect();
                let lost = lost.count();
                respond::json(StatusCode::OK, &History { messages, lost })
            }
            Err(reason) => respond::error(StatusCode::BAD_REQUEST, reason),
        }
    }
}

/// Reads the query of `GET /messages`: nothing, or exactly `after=<id>`.
fn parse_after(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(query) = query.filter(|query| !query.is_empty()) else {
        return Ok(None);
    };
    let mut after = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "after" {
            return Err(format!(
                "unknown query parameter {name:?}; the only one is `after`"
            ));
        }
        if after.is_some() {
            return Err("give `after` only once".to_owned());
        }
        match value.parse::<u64>() {
            Ok(id) if id <= MAX_EVENT_ID => after = Some(id),
            _ => {
                return Err(format!(
                    "`after` must be a message id, a whole number up to {MAX_EVENT_ID}, not {value:?}"
                ));
            }
        }
    }
    Ok(after)
}

/// The page at `/`; its markup and script are in `templates/chat.html`.
#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage {
    /// Shown beside the name field.
    max_user_chars: usize,
    /// Shown beside the text field.
    max_text_chars: usize,
    /// Shown on the page, so the reader knows how long a reconnect waits.
    retry_secs: f64,
}

// ANCHOR: validate
/// The body of `POST /messages`. Unknown fields are refused, so a typo (`"txt"`) is a clear
/// `400` instead of a confusing "missing field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    /// The writer's name, as typed.
    user: String,
    /// The message, as typed.
    text: String,
}

/// A message that passed every check, ready to be stored.
#[derive(Debug)]
struct ValidMessage {
    /// Trimmed, 1 to 32 characters, one line.
    user: String,
    /// Exactly as posted, 1 to 2,000 characters, not only whitespace.
    text: String,
}

impl NewMessage {
    /// Checks the limits. The name is trimmed (nobody means the spaces around a name); the text
    /// is kept exactly as sent, line breaks and all.
    fn validate(self) -> Result<ValidMessage, String> {
        let user = self.user.trim();
        let user_chars = user.chars().count();
        if user_chars == 0 {
            return Err(format!(
                "`user` is empty: give a name of 1 to {MAX_USER_CHARS} characters"
            ));
        }
        if user_chars > MAX_USER_CHARS {
            return Err(format!(
                "`user` is {user_chars} characters long; the limit is {MAX_USER_CHARS}"
            ));
        }
        // U+2028 and U+2029 are not control characters, but they are line breaks.
        if user
            .chars()
            .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
        {
            return Err("`user` must be one line of text, without control characters".to_owned());
        }
        if self.text.trim().is_empty() {
            return Err(
                "`text` is empty: spaces and line breaks alone are not a message".to_owned(),
            );
        }
        let text_chars = self.text.chars().count();
        if text_chars > MAX_TEXT_CHARS {
            return Err(format!(
                "`text` is {text_chars} characters long; the limit is {MAX_TEXT_CHARS}"
            ));
        }
        Ok(ValidMessage {
            user: user.to_owned(),
            text: self.text,
        })
    }
}
// ANCHOR_END: validate

// ANCHOR: message
/// A stored message: the `201` answer to a POST, the `data` of its `message` event, and an
/// entry of `GET /messages`, all the same JSON.
#[derive(Debug, Clone, Serialize)]
struct Message {
    /// Also the SSE `id`; one more than the previous message's.
    id: u64,
    /// Who wrote it, trimmed.
    user: String,
    /// Exactly what was posted.
    text: String,
    /// When the server stored it, RFC 3339 in UTC.
    time: String,
}

/// A message in the log together with its SSE event, encoded once when it was posted: every
/// stream, live or replaying, writes these same bytes.
#[derive(Debug)]
struct StoredMessage {
    /// For the `201` answer and `GET /messages`.
    message: Message,
    /// The complete SSE event (`id:` and `data:` lines), for every stream.
    event: Bytes,
}

impl StoredMessage {
    fn new(message: Message) -> Self {
        // The text is inside a JSON string, where a line break is the two characters `\n`: the
        // data is one line, so nothing a user writes can end the event or start another.
        let data = serde_json::to_string(&message).expect("strings and numbers always serialise");
        let event = Event::new()
            .id(message.id.to_string())
            .expect("a number is a single line")
            .data(data)
            .encode();
        Self { message, event }
    }
}
// ANCHOR_END: message

// ANCHOR: log
/// The bounded message log. Ids only grow. In one process they have no holes; with Redis an
/// instance can find holes in what it reads (entries trimmed before it read them, or a Redis
/// restarted empty), and each entry remembers how many messages are missing just before it.
#[derive(Debug)]
struct ChatLog {
    /// The newest messages, oldest first; never more than `capacity`.
    entries: VecDeque<Entry>,
    /// How many messages the log keeps.
    capacity: usize,
    /// The id the next message posted to this process gets (in one process only; with Redis
    /// the id script allocates). The log lives in memory and a restart empties it, so ids start
    /// from the clock (microseconds since 1970): ids of a new run are above those of every
    /// earlier one, and a browser resuming with an old `Last-Event-ID` gets every new message
    /// instead of taking them for ones it has seen. (Ids stay below 2^53, exact in JavaScript,
    /// until the year 2255.)
    next_id: u64,
    /// The newest id stored, or the one before the first: every stream starts at it.
    newest: u64,
}

/// A message in the log and what is missing just before it.
#[derive(Debug)]
struct Entry {
    /// The message and its encoded event.
    stored: Arc<StoredMessage>,
    /// Messages with ids between the previous entry and this one that nobody can be sent any
    /// more: dropped from the front of this log, trimmed from Redis before this instance read
    /// them, or lost with a Redis that restarted empty.
    lost_before: Lost,
}

/// How many messages a client can no longer be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// Exactly this many (the ids are dense, so the count is arithmetic).
    Counted(u64),
    /// An unknown number: Redis restarted empty, taking messages no instance had read.
    Unknown,
}

impl Lost {
    const NONE: Self = Self::Counted(0);

    fn plus(self, other: Self) -> Self {
        match (self, other) {
            (Self::Counted(a), Self::Counted(b)) => Self::Counted(a + b),
            _ => Self::Unknown,
        }
    }

    /// Of the messages lost just before `id`, those a client that has seen up to `last_seen`
    /// missed (`last_seen < id`).
    fn after(self, id: u64, last_seen: u64) -> Self {
        let between = id - last_seen - 1;
        match self {
            Self::Counted(lost) => Self::Counted(lost.min(between)),
            Self::Unknown if between == 0 => Self::NONE,
            Self::Unknown => Self::Unknown,
        }
    }

    /// The number for JSON: `null` when unknown.
    fn count(self) -> Option<u64> {
        match self {
            Self::Counted(lost) => Some(lost),
            Self::Unknown => None,
        }
    }
}

/// What a client must be sent to catch up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CatchUp {
    /// Index in the log of the first message to send.
    start: usize,
    /// Messages the client missed that the log no longer holds.
    lost: Lost,
}

impl ChatLog {
    fn new(capacity: usize, first_id: u64) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity),
            capacity,
            next_id: first_id,
            newest: first_id.saturating_sub(1),
        }
    }

    /// Stores a message posted to this process under the next id.
    fn push(&mut self, valid: ValidMessage, time: String) -> Arc<StoredMessage> {
        let message = Message {
            id: self.next_id,
            user: valid.user,
            text: valid.text,
            time,
        };
        self.next_id += 1;
        let stored = Arc::new(StoredMessage::new(message));
        self.append(stored.clone(), Lost::NONE);
        stored
    }

    /// Appends a message whose id is above every stored one, dropping the oldest if the log is
    /// full. The dropped message counts as lost before the new oldest.
    fn append(&mut self, stored: Arc<StoredMessage>, lost_before: Lost) {
        self.newest = stored.message.id;
        self.entries.push_back(Entry {
            stored,
            lost_before,
        });
        if self.entries.len() > self.capacity
            && let Some(dropped) = self.entries.pop_front()
            && let Some(oldest) = self.entries.front_mut()
        {
            oldest.lost_before = oldest
                .lost_before
                .plus(dropped.lost_before)
                .plus(Lost::Counted(1));
        }
    }

    /// Where a client resumes: after `last_seen` (its `Last-Event-ID`), or, for a new client,
    /// `backlog` messages before the newest.
    fn catch_up(&self, last_seen: Option<u64>, backlog: usize) -> CatchUp {
        let Some(last_seen) = last_seen else {
            let start = self.entries.len().saturating_sub(backlog);
            return CatchUp {
                start,
                lost: Lost::NONE,
            };
        };
        // Ids grow, so the resume point is a binary search. An id from before this log gets the
        // whole log; an id newer than any message (from an instance whose tail is ahead of
        // this one's) gets nothing.
        let start = self
            .entries
            .partition_point(|entry| entry.stored.message.id <= last_seen);
        let mut lost = Lost::NONE;
        for (n, entry) in self.entries.range(start..).enumerate() {
            lost = lost.plus(if n == 0 {
                entry.lost_before.after(entry.stored.message.id, last_seen)
            } else {
                entry.lost_before
            });
        }
        CatchUp { start, lost }
    }
}
// ANCHOR_END: log

/// The body of `GET /messages`.
#[derive(Debug, Serialize)]
struct History<'a> {
    /// The messages after `after` (or the backlog), oldest first.
    messages: Vec<&'a Message>,
    /// Messages after `after` that the log no longer holds (`null`: an unknown number).
    lost: Option<u64>,
}

// ANCHOR: room
/// The chat room: the log, the fan-out to every stream, and who is online.
struct ChatRoom {
    /// The log, behind one lock that both storing and subscribing take. Storing appends a
    /// message and broadcasts it under the lock; subscribing copies the catch-up and joins the
    /// broadcast under it. So each message is either in a new stream's catch-up or in its live
    /// feed, never both, never neither. Nothing under the lock waits: it is held for
    /// microseconds.
    log: Mutex<ChatLog>,
    /// The fan-out hub: every stream holds a receiver. Bounded to `max_lag` events; a stream
    /// that falls further behind is closed (see [`ChatStream::next_event`]).
    live: broadcast::Sender<Live>,
    /// The streams of the kit's direct path, written by one task per core; a stream `max_lag`
    /// events behind is closed there too.
    fanout: Arc<Fanout>,
    /// Messages a new client receives first.
    backlog: usize,
    /// The number of open streams, pushed as `presence` events.
    online: Arc<Online>,
    /// With Redis: the shared log this instance posts to and tails. `None` in one process.
    shared: Option<SharedLog>,
}

/// A message as the live feed carries it.
#[derive(Debug, Clone)]
struct Live {
    /// Its id, so a stream that is already past it (it resumed with a newer `Last-Event-ID`)
    /// skips it.
    id: u64,
    /// Messages lost just before it; a stream that did not see them gets a `gap` event first.
    lost_before: Lost,
    /// The encoded event.
    event: Bytes,
}

impl ChatRoom {
    fn new(config: &Config, shutdown: &Shutdown) -> Self {
        let history = config.history.max(1);
        let fanout = Arc::new(sse::fanout(config.max_lag, config.keep_alive, shutdown));
        let (first_id, shared) = match &config.backplane {
            Backplane::InProcess => {
                let first_id = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |since| since.as_micros() as u64);
                (first_id, None)
            }
            // Ids come from Redis; until the tail has read the log there is nothing, at 0.
            Backplane::Redis(redis) => (1, Some(SharedLog::new(redis.clone(), history))),
        };
        Self {
            log: Mutex::new(ChatLog::new(history, first_id)),
            // `broadcast::channel` panics on 0.
            live: broadcast::channel(config.max_lag.max(1)).0,
            backlog: config.backlog.min(history),
            online: Arc::new(Online::new(shared.is_some(), fanout.clone())),
            fanout,
            shared,
        }
    }

    fn lock_log(&self) -> MutexGuard<'_, ChatLog> {
        // Nothing under this lock panics; if a bug ever made it, the log is still a valid log,
        // so carry on rather than fail every later request.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a valid message and sends it to every open stream. In one process this cannot
    /// fail; with Redis it fails when Redis cannot be reached, and then nothing was stored.
    async fn post(&self, valid: ValidMessage) -> Result<Message, RedisError> {
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let Some(shared) = &self.shared else {
            let mut log = self.lock_log();
            let stored = log.push(valid, time);
            // Sent under the lock, so the broadcast order is the id order. An error only means
            // no stream is open; the message is in the log for whoever comes.
            let _ = self.live.send(Live {
                id: stored.message.id,
                lost_before: Lost::NONE,
                event: stored.event.clone(),
            });
            self.fanout.send(sse::chunked(&stored.event));
            return Ok(stored.message.clone());
        };
        // With Redis the message reaches the streams of this instance as of every other one:
        // through the tail, in the log's order.
        let newest_seen = self.lock_log().newest;
        shared.append(valid, time, newest_seen).await
    }

    /// Appends messages read from the shared log and sends them to every open stream.
    fn deliver(&self, read: impl IntoIterator<Item = (Arc<StoredMessage>, Lost)>) {
        let mut log = self.lock_log();
        for (stored, lost_before) in read {
            let _ = self.live.send(Live {
                id: stored.message.id,
                lost_before,
                event: stored.event.clone(),
            });
            // The fan-out's streams are all at this instance's newest message.
            let lost = lost_before.after(stored.message.id, log.newest);
            if lost != Lost::NONE {
                self.fanout.send(sse::chunked(&gap_event(lost)));
            }
            self.fanout.send(sse::chunked(&stored.event));
            log.append(stored, lost_before);
        }
    }

    /// The newest id this instance holds.
    fn newest(&self) -> u64 {
        self.lock_log().newest
    }

    /// A client's stream: a `gap` event if the log no longer reaches back to `last_seen`, the
    /// messages it missed (or the backlog), then live events until it disconnects or lags.
    fn subscribe(&self, last_seen: Option<u64>) -> impl Stream<Item = Bytes> + Send + use<> {
        let (pending, live, position) = {
            let log = self.lock_log();
            let live = self.live.subscribe();
            let (pending, position) = self.catch_up(&log, last_seen);
            (pending, live, position)
        };
        let (online, presence) = self.online.join();
        let stream = ChatStream {
            pending,
            live,
            position,
            presence,
            _online: online,
            closing: false,
        };
        futures_util::stream::unfold(stream, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((event, stream))
        })
    }

    /// What a client resuming after `last_seen` (or a new one) is sent before anything live: a
    /// `gap` event if the log no longer reaches back to it, the messages it missed (or the
    /// backlog), and its position. With the position: the newest id it has once it has these.
    fn catch_up(&self, log: &ChatLog, last_seen: Option<u64>) -> (VecDeque<Bytes>, u64) {
        let CatchUp { start, lost } = log.catch_up(last_seen, self.backlog);
        let mut pending = VecDeque::with_capacity(log.entries.len() - start + 1);
        if lost != Lost::NONE {
            pending.push_back(gap_event(lost));
        }
        pending.extend(log.entries.range(start..).map(|e| e.stored.event.clone()));
        // Every stream starts with a position, even one with no message to send: an `id:`
        // field alone sets the browser's last event id without dispatching anything. A client
        // closed before its first message (for lagging, say) then still resumes from where it
        // started, instead of reconnecting as a new client and getting the backlog in place of
        // what it missed.
        let newest = log.newest;
        let position = match log.entries.back() {
            Some(last) if start < log.entries.len() => Some(last.stored.message.id),
            _ => last_seen,
        };
        if position.is_none_or(|position| position < newest) {
            pending.push_back(position_event(newest));
        }
        (pending, position.map_or(newest, |p| p.max(newest)))
    }

    // ANCHOR: join
    /// A stream of the kit's direct path, which one writer per core writes: its catch-up and
    /// the current count are pushed to its socket, and it joins the fan-out, all under the
    /// log's lock (which every send takes) and the count's. So it gets each message once,
    /// in the catch-up or from the fan-out, and never misses a change of the count.
    fn join(&self, last_seen: Option<u64>, outbox: &Arc<Outbox>) -> Membership {
        let online = self.online.enter();
        let log = self.lock_log();
        let (pending, _) = self.catch_up(&log, last_seen);
        let shown = self.online.latest.borrow();
        let mut first = Vec::new();
        for event in pending.iter().chain([&shown.event]) {
            first.extend_from_slice(&sse::chunked(event));
        }
        // A socket that failed already is noticed by the stream's task, which then ends.
        let _ = outbox.push(first.into());
        let member = self.fanout.join(outbox.clone());
        drop(shown);
        drop(log);
        Box::new((member, online))
    }
    // ANCHOR_END: join

    /// The messages after `after` (or the backlog), and how many after it were dropped, for
    /// `GET /messages`. Only pointers are copied under the lock; serialising happens after it.
    fn history(&self, after: Option<u64>) -> (Vec<Arc<StoredMessage>>, Lost) {
        let log = self.lock_log();
        let CatchUp { start, lost } = log.catch_up(after, self.backlog);
        let stored = log.entries.range(start..).map(|e| e.stored.clone());
        (stored.collect(), lost)
    }
}

/// An event with only an `id:`: it moves the client's last event id to `id` and shows nothing.
fn position_event(id: u64) -> Bytes {
    Event::new()
        .id(id.to_string())
        .expect("a number is a single line")
        .encode()
}

/// A `gap` event: the log no longer holds `lost` messages this client missed (`null` when
/// nobody can know how many: Redis restarted empty).
fn gap_event(lost: Lost) -> Bytes {
    Event::new()
        .event("gap")
        .expect("a fixed name is a single line")
        .data(serde_json::json!({ "lost": lost.count() }).to_string())
        .encode()
}
// ANCHOR_END: room

// ANCHOR: stream
/// One client's stream of encoded events.
struct ChatStream {
    /// The catch-up: a `gap` event and missed messages, sent before anything live.
    pending: VecDeque<Bytes>,
    /// Live messages, in id order.
    live: broadcast::Receiver<Live>,
    /// The newest id this client has (sent, or claimed by its `Last-Event-ID`): live messages
    /// up to it are skipped, so a client that comes from an instance further ahead gets no
    /// message twice.
    position: u64,
    /// The latest `presence` event.
    presence: watch::Receiver<Presence>,
    /// Counts this stream as online until the stream is dropped.
    _online: OnlineGuard,
    /// Set when the stream fell behind: the last item was the closing comment.
    closing: bool,
}

impl ChatStream {
    /// The next event to write, or `None` to end the response.
    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.closing {
                return None;
            }
            tokio::select! {
                biased;
                changed = self.presence.changed() => {
                    changed.ok()?;
                    return Some(self.presence.borrow_and_update().event.clone());
                }
                received = self.live.recv() => match received {
                    Ok(live) if live.id <= self.position => continue,
                    Ok(live) => {
                        let lost = live.lost_before.after(live.id, self.position);
                        self.position = live.id;
                        if lost != Lost::NONE {
                            self.pending.push_back(gap_event(lost));
                        }
                        self.pending.push_back(live.event);
                    }
                    // The slow-reader policy. The channel has overwritten events this stream had
                    // not sent yet; skipping them would be silent loss, and waiting for the stream
                    // would hold up everyone else. So end the response: the browser reconnects with
                    // the id of the last event it did receive and catches up from the log.
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "closing a stream that fell behind; it resumes from Last-Event-ID");
                        self.closing = true;
                        return Some(
                            Event::new()
                                .comment(format!(
                                    "closing: this stream fell {missed} events behind; reconnect with Last-Event-ID to catch up"
                                ))
                                .encode(),
                        );
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}
// ANCHOR_END: stream

// ANCHOR: presence
/// How many streams are open, as the latest `presence` event.
struct Online {
    /// The count itself: each stream holds one until it is dropped, however it ends.
    streams: Gauge,
    /// With Redis, the count shown is the sum over every instance, which `share_presence`
    /// fetches; a change here only wakes it. In one process the count is shown directly.
    shared: bool,
    /// Wakes `share_presence` when this instance's count changed.
    changed: Notify,
    /// The latest count, encoded once. A watch channel holds only the newest value, the right
    /// shape for a number that changes: a busy stream skips straight to the current count
    /// instead of queueing every step (messages, which must all arrive, go through the log).
    latest: watch::Sender<Presence>,
    /// The direct path's streams get the count through the fan-out, newest only as well.
    fanout: Arc<Fanout>,
}

/// A `presence` event and the count it carries.
#[derive(Debug, Clone)]
struct Presence {
    /// Open streams, to tell whether the count changed.
    online: usize,
    /// The `presence` event carrying it.
    event: Bytes,
}

impl Presence {
    fn new(online: usize) -> Self {
        let event = Event::new()
            .event("presence")
            .expect("a fixed name is a single line")
            .data(serde_json::json!({ "online": online }).to_string())
            .encode();
        Self { online, event }
    }
}

/// Counts one stream as online; dropping it announces the new count.
struct OnlineGuard {
    /// Counts this stream; taken (and dropped) first when the guard drops.
    counted: Option<GaugeGuard>,
    /// Where to announce the new count.
    online: Arc<Online>,
}

impl Online {
    fn new(shared: bool, fanout: Arc<Fanout>) -> Self {
        Self {
            streams: Gauge::new(),
            shared,
            changed: Notify::new(),
            latest: watch::channel(Presence::new(0)).0,
            fanout,
        }
    }

    /// Counts a new stream and returns its guard and its view of the count, which reports the
    /// current count first.
    fn join(self: &Arc<Self>) -> (OnlineGuard, watch::Receiver<Presence>) {
        let guard = self.enter();
        let mut presence = self.latest.subscribe();
        presence.mark_changed();
        (guard, presence)
    }

    /// Counts a new stream and announces the count; the guard counts it until it is dropped.
    fn enter(self: &Arc<Self>) -> OnlineGuard {
        let guard = OnlineGuard {
            counted: Some(self.streams.enter()),
            online: self.clone(),
        };
        self.announce();
        guard
    }

    /// Publishes the count if it changed (with Redis: asks for the sum over all instances). The
    /// gauge is read under the channel's lock, so when streams join and leave at once the last
    /// count published is the true one.
    fn announce(&self) {
        if self.shared {
            self.changed.notify_one();
        } else {
            self.show(|| self.streams.get());
        }
    }

    /// Publishes the count `online()` reads, inside the channel's lock, if it is not the one
    /// shown.
    fn show(&self, online: impl FnOnce() -> usize) {
        self.latest.send_if_modified(|shown| {
            let online = online();
            if shown.online == online {
                return false;
            }
            *shown = Presence::new(online);
            self.fanout.send_latest(sse::chunked(&shown.event));
            true
        });
    }
}

impl Drop for OnlineGuard {
    fn drop(&mut self) {
        drop(self.counted.take());
        self.online.announce();
    }
}
// ANCHOR_END: presence

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> ValidMessage {
        ValidMessage {
            user: "ann".into(),
            text: text.into(),
        }
    }

    /// The catch-up arithmetic: resume points inside, before and after the log, and the count
    /// of messages that fell out of it.
    #[test]
    fn catch_up_positions_and_losses() {
        let mut log = ChatLog::new(3, 100);
        for text in ["a", "b", "c", "d", "e"] {
            log.push(valid(text), String::new());
        }
        // The log holds ids 102, 103, 104; 100 and 101 were dropped.
        let at = |last_seen| log.catch_up(Some(last_seen), 2);
        assert_eq!(
            at(104),
            CatchUp {
                start: 3,
                lost: Lost::Counted(0)
            }
        );
        assert_eq!(
            at(102),
            CatchUp {
                start: 1,
                lost: Lost::Counted(0)
            }
        );
        assert_eq!(
            at(101),
            CatchUp {
                start: 0,
                lost: Lost::Counted(0)
            }
        );
        assert_eq!(
            at(100),
            CatchUp {
                start: 0,
                lost: Lost::Counted(1)
            }
        );
        assert_eq!(
            at(99),
            CatchUp {
                start: 0,
                lost: Lost::Counted(2)
            }
        );
        // From an earlier run: all of this run's messages, and the ones this run dropped.
        assert_eq!(
            at(5),
            CatchUp {
                start: 0,
                lost: Lost::Counted(2)
            }
        );
        // Newer than anything issued: nothing to send.
        assert_eq!(
            at(1000),
            CatchUp {
                start: 3,
                lost: Lost::Counted(0)
            }
        );
        assert_eq!(
            log.catch_up(None, 2),
            CatchUp {
                start: 1,
                lost: Lost::Counted(0)
            }
        );
        assert_eq!(
            log.catch_up(None, 10),
            CatchUp {
                start: 0,
                lost: Lost::Counted(0)
            }
        );
    }

    /// With Redis an instance can read holes: a trimmed run is counted, a Redis restarted empty
    /// is an unknown loss, and only for clients that had not seen past the hole.
    #[test]
    fn holes_in_the_shared_log_are_reported_to_those_who_missed_them() {
        let stored = |id| {
            Arc::new(StoredMessage::new(Message {
                id,
                user: "ann".into(),
                text: "t".into(),
                time: String::new(),
            }))
        };
        let mut log = ChatLog::new(10, 1);
        log.append(stored(10), Lost::NONE);
        log.append(stored(15), Lost::Counted(4)); // 11..=14 trimmed before this instance read them
        log.append(stored(1_000_000), Lost::Unknown); // Redis restarted empty
        let at = |last_seen| log.catch_up(Some(last_seen), 2);
        assert_eq!(
            at(10),
            CatchUp {
                start: 1,
                lost: Lost::Unknown
            }
        );
        assert_eq!(
            at(15),
            CatchUp {
                start: 2,
                lost: Lost::Unknown
            }
        );
        assert_eq!(
            at(999_999),
            CatchUp {
                start: 2,
                lost: Lost::NONE
            }
        );
        assert_eq!(
            at(12),
            CatchUp {
                start: 1,
                lost: Lost::Unknown
            }
        );
        assert_eq!(Lost::Counted(4).after(15, 12), Lost::Counted(2));
        assert_eq!(
            at(1_000_000),
            CatchUp {
                start: 3,
                lost: Lost::NONE
            }
        );
    }

    /// The query of `GET /messages` is nothing or one numeric `after`.
    #[test]
    fn after_query_is_validated() {
        assert_eq!(parse_after(None), Ok(None));
        assert_eq!(parse_after(Some("")), Ok(None));
        assert_eq!(parse_after(Some("after=42")), Ok(Some(42)));
        for bad in [
            "after=",
            "after=x",
            "after=-1",
            "after=9007199254740992",
            "before=1",
            "after=1&after=2",
            "after",
        ] {
            assert!(parse_after(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
