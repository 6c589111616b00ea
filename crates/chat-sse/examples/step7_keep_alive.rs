//! Step 7 of the chat: keep-alive comments, and no buffering by proxies. When a stream has had
//! nothing to send for the keep-alive interval it writes a comment line (`: keep-alive`), which
//! `EventSource` ignores; and the stream's response says `X-Accel-Buffering: no`.
//!
//! Without them (step 6) a stream is silent for as long as nobody posts: a proxy in front closes
//! a connection that has been silent for its read timeout (nginx: 60 s), and a reader whose
//! network vanished without closing its connection is only noticed when someone next posts
//! (the write-stall limit needs a write to time). And nginx buffers proxied responses by
//! default, so messages would reach the page late and in bursts.
//!
//! This is the last step: the finished demo (`cargo run -p chat-sse`) adds the count of readers
//! online (`presence` events), a `gap` event for messages that fell out of the log, CORS, the
//! Host allow-list, and takes its plumbing from `realtime-kit`.
//!
//! Run: `KEEP_ALIVE_MS=2000 cargo run -p chat-sse --example step7_keep_alive` and `curl -N
//! http://127.0.0.1:3002/events`: a comment every 2 s while nobody posts. `KEEP_ALIVE_MS`
//! defaults to 15000; the others are step 6's (`HEADER_TIMEOUT_MS`, `BODY_TIMEOUT_MS`,
//! `STALL_TIMEOUT_MS`, `MAX_LAG`, `PORT`). Check it with `cargo run -p ladder -- check chat-sse
//! step7_keep_alive`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>chat-sse</title>
<ul id="messages"></ul><p id="state">connecting</p><form id="post"><input id="user"
placeholder="name"> <input id="text" placeholder="message"> <button>Send</button></form><script>
  const source = new EventSource("/events"), state = document.getElementById("state");
  source.onopen = () => { state.textContent = "open"; };
  // Do not close the source on error: while it is CONNECTING the browser is retrying by itself,
  // and it will send the id of the last message it received as Last-Event-ID.
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

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3002), |port| port.parse())?;
    let max_lag: usize = std::env::var("MAX_LAG").map_or(Ok(256), |lag| lag.parse())?;
    let header_limit = millis("HEADER_TIMEOUT_MS", 30_000)?;
    let body_limit = millis("BODY_TIMEOUT_MS", 10_000)?;
    let stall_limit = millis("STALL_TIMEOUT_MS", 30_000)?;
    // ANCHOR: keep_alive_setting
    let keep_alive = millis("KEEP_ALIVE_MS", 15_000)?;
    // ANCHOR_END: keep_alive_setting
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // Listen for signals before saying we are ready: one that came first would kill the process.
    let signal = shutdown_signal()?;
    let addr = listener.local_addr()?;
    println!("step7_keep_alive listening on http://{addr}");

    let room = Arc::new(Room::new(max_lag));
    // Every stream holds a receiver; dropping `end_streams` ends them all (see `events`).
    let (end_streams, stopping) = watch::channel(());
    let connections = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let Ok((socket, _)) = accepted else {
            // Out of file descriptors, usually: wait for some to be freed rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (room, stopping) = (room.clone(), stopping.clone());
        let service = service_fn(move |request| {
            let (room, stopping) = (room.clone(), stopping.clone());
            respond(request, room, stopping, body_limit, keep_alive)
        });
        let socket = StallLimit::new(socket, stall_limit);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_limit)
            .serve_connection(TokioIo::new(socket), service);
        // One client's error (it went away mid-response) ends its connection, not the server.
        // `watch` lets `connections.shutdown()` below close it once its response is complete.
        tokio::spawn(connections.watch(connection));
    }

    // Refuse new connections, end every stream (hyper would wait for an endless body forever),
    // then let hyper finish what is in flight and close each connection.
    drop(listener);
    drop(end_streams);
    // A client that stopped reading could keep its response unfinished for ever: give up on it.
    let grace = Duration::from_secs(5);
    match tokio::time::timeout(grace, connections.shutdown()).await {
        Ok(()) => println!("step7_keep_alive: every response finished, exiting"),
        Err(_) => eprintln!("step7_keep_alive: connections still open after {grace:?}, exiting"),
    }
    Ok(())
}

/// Listens for Ctrl-C and SIGTERM (what `kill`, systemd and container runtimes send) from now
/// on, and completes on the first of them.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
        Ok(async move {
            ctrl_c.recv().await;
        })
    }
}

// ANCHOR: respond
async fn respond(
    request: Request<Incoming>,
    room: Arc<Room>,
    stopping: Stopping,
    body_limit: Duration,
    keep_alive: Duration,
) -> Result<Response<Body>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (200, "text/html; charset=utf-8", full(PAGE)),
        (&Method::GET, "/events") => match last_event_id(&request) {
            Ok(last_seen) => (
                200,
                "text/event-stream",
                events(&room, last_seen, &stopping, keep_alive),
            ),
            // Refused, not ignored: a client that sends an id no server sent has a bug to see.
            Err(error) => (400, "application/json", full(error)),
        },
        (&Method::GET, "/messages") => match after(request.uri().query()) {
            Ok(after) => (200, "application/json", full(room.history(after))),
            Err(error) => (400, "application/json", full(error)),
        },
        (&Method::POST, "/messages") => post(request, &room, body_limit).await,
        _ => (404, "application/json", full(r#"{"error":"not found"}"#)),
    };
    // `no-cache`: every reader needs the live stream, never a stored copy.
    let mut headers = Response::builder().header("cache-control", "no-cache");
    if status == 408 {
        // The rest of a late body may still be on its way: this connection is done.
        headers = headers.header("connection", "close");
    }
    if content_type == "text/event-stream" {
        // nginx buffers what it proxies unless told not to: messages would arrive late, in bursts.
        headers = headers.header("x-accel-buffering", "no");
    }
    let response = headers.status(status).header("content-type", content_type);
    Ok(response.body(body).expect("fixed, valid headers"))
}
// ANCHOR_END: respond

/// `POST /messages`: read and check the body completely, and only then store and send it, so a
/// refused post changes nothing (not even the next id).
async fn post(
    request: Request<Incoming>,
    room: &Room,
    body_limit: Duration,
) -> (u16, &'static str, Body) {
    match read_message(request, body_limit).await {
        Ok((user, text)) => {
            let message = room.post(user, text);
            let json =
                serde_json::to_string(&message).expect("strings and numbers always serialise");
            (201, "application/json", full(json))
        }
        Err((status, why)) => {
            let json = serde_json::json!({ "error": why }).to_string();
            (status, "application/json", full(json))
        }
    }
}

/// The largest body read. The longest valid message is about 8 KB as a browser's
/// `JSON.stringify` writes it (2,000 characters of up to 4 bytes); the rest is room for escapes.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A name is 1 to 32 characters once trimmed, on one line.
const MAX_USER_CHARS: usize = 32;
/// A text is 1 to 2,000 characters (not bytes), stored exactly as sent; not only whitespace.
const MAX_TEXT_CHARS: usize = 2000;

/// A refused post: its status, and the sentence for the person who sent it.
type Refusal = (u16, String);

/// The name and text of a post that keeps every rule, or why it is refused. The whole body must
/// arrive within `body_limit`.
async fn read_message(
    request: Request<Incoming>,
    body_limit: Duration,
) -> Result<(String, String), Refusal> {
    // An HTML form on another site can post form data or text/plain without asking first; a
    // JSON-only endpoint can be reached from another origin only through a CORS preflight.
    let content_type = request.headers().get("content-type");
    let content_type = content_type.map_or("", |value| value.to_str().unwrap_or("?"));
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let why = format!(
            "send the body as JSON with `Content-Type: application/json`, not {content_type:?}"
        );
        return Err((415, why));
    }
    let too_large = format!("the body is larger than the limit of {MAX_BODY_BYTES} bytes");
    let declared = request.headers().get("content-length");
    let declared = declared.and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err((413, too_large)); // at once: no need to wait for a body too long anyway
    }
    // `Limited` fails at the first byte past the limit, so at most that much is ever held,
    // whatever the body turns out to be. (`collect()` and then a length check would already
    // hold all of it.)
    let limited = Limited::new(request.into_body(), MAX_BODY_BYTES);
    // The header-read limit ends when the headers are in: a client could send `Content-Length:
    // 100`, ten bytes and then nothing, and hold this handler for as long as it liked.
    let Ok(collected) = tokio::time::timeout(body_limit, limited.collect()).await else {
        let why = format!(
            "the request body did not arrive within {body_limit:?}; send the whole body at once, \
             right after the headers"
        );
        return Err((408, why));
    };
    let body = match collected {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return Err((413, too_large)),
        Err(_) => return Err((400, "the body could not be read to the end".to_owned())),
    };
    let json: Value = serde_json::from_slice(&body)
        .map_err(|error| (400, format!("the body is not valid JSON: {error}")))?;
    let Some(fields) = json.as_object() else {
        return Err((
            400,
            "the body must be a JSON object, {\"user\": ..., \"text\": ...}".to_owned(),
        ));
    };
    // A typo (`"txt"`) is a clear 400, not a field ignored without a word.
    if let Some(unknown) = fields
        .keys()
        .find(|name| !matches!(name.as_str(), "user" | "text"))
    {
        return Err((
            400,
            format!("unknown field `{unknown}`; a message has `user` and `text`"),
        ));
    }
    let field = |name: &str| match fields.get(name) {
        Some(Value::String(value)) => Ok(value.as_str()),
        Some(other) => Err((400, format!("`{name}` must be a string, not {other}"))),
        None => Err((400, format!("missing field `{name}`"))),
    };
    let (user, text) = (field("user")?, field("text")?);
    // 400 says "I cannot read this", 422 "I read it and cannot accept it": a client can tell a
    // bug in its code from a problem its user can fix.
    check_limits(user.trim(), text).map_err(|why| (422, why))?;
    Ok((user.trim().to_owned(), text.to_owned()))
}

/// The limits, in characters (Unicode scalar values), so a name is 32 characters in any script.
/// The name is trimmed (nobody means the spaces around it); the text is kept as sent.
fn check_limits(user: &str, text: &str) -> Result<(), String> {
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
    if text.trim().is_empty() {
        return Err("`text` is empty: spaces and line breaks alone are not a message".to_owned());
    }
    let text_chars = text.chars().count();
    if text_chars > MAX_TEXT_CHARS {
        return Err(format!(
            "`text` is {text_chars} characters long; the limit is {MAX_TEXT_CHARS}"
        ));
    }
    Ok(())
}

/// Messages kept for reconnecting browsers and `GET /messages`; past it the oldest is dropped.
/// Keep it well above `MAX_LAG`: a stream closed for lagging catches up from here.
const HISTORY: usize = 1000;
/// Messages a new browser (one without `Last-Event-ID`) is sent first.
const BACKLOG: usize = 50;

/// A message as every client sees it: the `201` answer, the data of its event, and an entry of
/// `GET /messages`, all the same JSON.
#[derive(Clone, Serialize)]
struct Message {
    /// Also the event's `id:`; one more than the previous message's.
    id: u64,
    user: String,
    text: String,
    /// When the server stored it, RFC 3339 in UTC.
    time: String,
}

/// A message in the log with its event, encoded once: every stream writes these same bytes.
struct Stored {
    message: Message,
    event: Bytes,
}

/// The bounded log. Ids have no holes: it holds `next_id - messages.len()` to `next_id - 1`.
struct Log {
    messages: VecDeque<Stored>,
    /// This run's first id. The log lives in memory, so a restart empties it; ids start from
    /// the clock (microseconds since 1970), above every id an earlier run sent, so a browser
    /// resuming with an old id gets every new message instead of taking them for seen ones.
    first_id: u64,
    next_id: u64,
}

impl Log {
    /// Where a client resumes: the index of the first message after `after` (for a new client,
    /// `BACKLOG` before the newest), and how many it missed that the log no longer holds.
    fn catch_up(&self, after: Option<u64>) -> (usize, u64) {
        let Some(after) = after else {
            return (self.messages.len().saturating_sub(BACKLOG), 0);
        };
        let oldest = self.next_id - self.messages.len() as u64;
        let wanted = after + 1; // after <= MAX_ID: no overflow
        let start = wanted
            .saturating_sub(oldest)
            .min(self.messages.len() as u64) as usize;
        (start, oldest.saturating_sub(wanted.max(self.first_id)))
    }
}

/// The room: the log and the channel every stream listens on, behind ONE lock. `post` stores
/// and sends under it, `subscribe` copies what a client missed and joins the channel under it,
/// so each message is in a new stream's catch-up or in its live feed: never both, never neither.
struct Room {
    log: Mutex<Log>,
    live: broadcast::Sender<Bytes>,
}

impl Room {
    /// A room whose channel holds `max_lag` messages: a stream further behind is closed.
    fn new(max_lag: usize) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH);
        let first_id = now.map_or(1, |since| since.as_micros() as u64);
        let messages = VecDeque::with_capacity(HISTORY);
        let log = Mutex::new(Log {
            messages,
            first_id,
            next_id: first_id,
        });
        Self {
            log,
            // `broadcast` panics on a capacity of 0.
            live: broadcast::Sender::new(max_lag.max(1)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // Nothing under the lock panics; if it ever did, the log is still a valid log.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn post(&self, user: String, text: String) -> Message {
        let mut log = self.lock();
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let message = Message {
            id: log.next_id,
            user,
            text,
            time,
        };
        log.next_id += 1;
        let data = serde_json::to_string(&message).expect("strings and numbers always serialise");
        // `id:` sets the browser's last event id, which it sends back when it reconnects.
        let event = Bytes::from(format!("id: {}\ndata: {data}\n\n", message.id));
        if log.messages.len() == HISTORY {
            log.messages.pop_front();
        }
        let stored = Stored {
            message: message.clone(),
            event: event.clone(),
        };
        log.messages.push_back(stored);
        // Sent under the lock, so the channel's order is the ids' order. An error only means
        // that no stream is open; the message is in the log for whoever comes.
        let _ = self.live.send(event);
        message
    }

    /// What a client that last saw `last_seen` is sent first, and its live feed.
    fn subscribe(&self, last_seen: Option<u64>) -> (Vec<Bytes>, broadcast::Receiver<Bytes>) {
        let log = self.lock();
        let (start, _lost) = log.catch_up(last_seen);
        let mut missed: Vec<Bytes> = log
            .messages
            .range(start..)
            .map(|m| m.event.clone())
            .collect();
        if missed.is_empty() && last_seen.is_none() {
            // A new client in an empty room still gets a position: an event of only `id:` sets
            // the browser's last event id and shows nothing. If it is disconnected before its
            // first message, it resumes from here instead of as a new client.
            missed.push(Bytes::from(format!("id: {}\n\n", log.next_id - 1)));
        }
        (missed, self.live.subscribe())
    }

    /// `GET /messages`: `{"messages": [...], "lost": <missed, no longer in the log>}`.
    fn history(&self, after: Option<u64>) -> String {
        let log = self.lock();
        let (start, lost) = log.catch_up(after);
        let messages: Vec<&Message> = log.messages.range(start..).map(|m| &m.message).collect();
        let messages = serde_json::to_string(&messages).expect("messages always serialise");
        format!(r#"{{"messages":{messages},"lost":{lost}}}"#)
    }
}

/// The largest id: ids travel to the page in JSON, whose numbers are exact up to 2^53 - 1.
const MAX_ID: u64 = (1 << 53) - 1;

/// The id a reconnecting `EventSource` sends back: `Ok(None)` on a first visit (no header, or an
/// empty one). Anything but a whole number up to `MAX_ID` is a JSON error for a `400`.
fn last_event_id(request: &Request<Incoming>) -> Result<Option<u64>, &'static str> {
    let Some(value) = request.headers().get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("(not text)").trim();
    match text.parse::<u64>() {
        _ if text.is_empty() => Ok(None),
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(
            r#"{"error":"Last-Event-ID must be an id this server sent: a whole number up to 9007199254740991"}"#,
        ),
    }
}

/// The query of `GET /messages`: nothing, or exactly `after=<id>`.
fn after(query: Option<&str>) -> Result<Option<u64>, &'static str> {
    let Some(query) = query.filter(|query| !query.is_empty()) else {
        return Ok(None);
    };
    let id = query.strip_prefix("after=").and_then(|id| id.parse().ok());
    match id.filter(|&id| id <= MAX_ID) {
        Some(id) => Ok(Some(id)),
        None => {
            Err(r#"{"error":"the only query is after=<a message id, up to 9007199254740991>"}"#)
        }
    }
}

/// How long a browser waits before it reconnects, sent first on every stream.
const RETRY: &[u8] = b"retry: 3000\n\n";

/// Its sender is dropped when the server shuts down; then `changed()` fails on every receiver.
type Stopping = watch::Receiver<()>;

// ANCHOR: events
/// Written when a stream has had nothing to send for the keep-alive interval. A line that starts
/// with `:` is a comment: `EventSource` skips it, but it is traffic.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// One client's stream: `retry:`, what it missed (or the backlog), then every new message, and a
/// keep-alive comment whenever it has been silent for `keep_alive`, until it falls `MAX_LAG`
/// behind or the server shuts down. When the client goes away, hyper's next write fails and
/// drops this body with its receivers.
fn events(room: &Room, last_seen: Option<u64>, stopping: &Stopping, keep_alive: Duration) -> Body {
    let (missed, live) = room.subscribe(last_seen);
    let first = std::iter::once(Bytes::from_static(RETRY)).chain(missed);
    // `None` once the stream has sent its closing comment: then it ends.
    let live = futures_util::stream::unfold(Some(live), move |live| async move {
        let mut live = live?;
        // Silence is what proxies time out on, and a write is how a dead peer is found.
        let Ok(received) = tokio::time::timeout(keep_alive, live.recv()).await else {
            return Some((Bytes::from_static(KEEP_ALIVE), Some(live)));
        };
        match received {
            Ok(event) => Some((event, Some(live))),
            // The slow-reader policy: end the response; the browser resumes from the log.
            Err(RecvError::Lagged(missed)) => {
                let closing = format!(
                    ": closing: this stream fell {missed} messages behind; reconnect with \
                     Last-Event-ID to catch up\n\n"
                );
                Some((Bytes::from(closing), None))
            }
            Err(RecvError::Closed) => None,
        }
    });
    let mut stopping = stopping.clone();
    let shutdown = async move { while stopping.changed().await.is_ok() {} };
    // Ending the body lets hyper write the end of the response: the client sees a clean end.
    let events = futures_util::stream::iter(first)
        .chain(live)
        .take_until(shutdown);
    BodyExt::boxed(StreamBody::new(events.map(|event| Ok(Frame::data(event)))))
}
// ANCHOR_END: events

/// A limit read from the environment variable `name`, in milliseconds, or `default_ms`.
fn millis(name: &str, default_ms: u64) -> Result<Duration, std::num::ParseIntError> {
    let ms = std::env::var(name).map_or(Ok(default_ms), |ms| ms.parse())?;
    Ok(Duration::from_millis(ms))
}

/// A client's socket whose writes fail once they have waited for `limit`. A write waits when
/// the client stops reading: its receive buffer fills, then the server's send buffer, then
/// hyper's; from then on nothing that waits for the client ever wakes, unless something like
/// this gives up on it. The failed write ends the connection, and so its stream.
struct StallLimit {
    socket: TcpStream,
    limit: Duration,
    /// Started by the first write that has to wait; cleared by any write that gets through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallLimit {
    fn new(socket: TcpStream, limit: Duration) -> Self {
        Self {
            socket,
            limit,
            stalled: None,
        }
    }

    /// Passes on a finished write; a waiting one waits no longer than the limit.
    fn within_limit<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if write.is_ready() {
            self.stalled = None;
            return write;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read anything for the write-stall limit",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallLimit {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallLimit {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.socket).poll_write(cx, buf);
        self.within_limit(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.socket).poll_flush(cx);
        self.within_limit(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}
