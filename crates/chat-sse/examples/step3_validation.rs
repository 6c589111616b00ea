//! Step 3 of the chat: limits and validation. A post must say `Content-Type: application/json`
//! (415 otherwise), its body is cut off at 16 KiB while it is read (413), it must be a JSON
//! object with exactly the string fields `user` and `text` (400), and the name (1 to 32
//! characters, one line) and the text (1 to 2,000 characters, not only spaces) must keep their
//! limits (422). Every refusal is `{"error": "<a sentence a person can act on>"}`, and the post is
//! checked completely before anything is stored, so a refused one changes nothing.
//!
//! Without them (step 2) the server reads any body to its end before looking at it, so a client
//! that announces a gigabyte, or sends one, takes that much memory; a 1 MiB "message" is stored
//! and sent to every reader; and a page on any other site can post into the room through a
//! visitor's browser (an HTML form posts `text/plain` or form data without asking).
//!
//! Run: `cargo run -p chat-sse --example step3_validation`, then try `curl -i -d '{"user":"",
//! "text":"hi"}' -H 'Content-Type: application/json' http://127.0.0.1:3002/messages` (422), the
//! same without the header (415), or `-d '["ann","hi"]'` (400). `PORT=0` picks a free port.
//! Check it with `cargo run -p ladder -- check chat-sse step3_validation`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

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
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("step3_validation listening on http://{addr}");

    let room = Arc::new(Room::new());
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

async fn respond(
    request: Request<Incoming>,
    room: Arc<Room>,
) -> Result<Response<Body>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => (200, "text/html; charset=utf-8", full(PAGE)),
        (&Method::GET, "/events") => match last_event_id(&request) {
            Ok(last_seen) => (200, "text/event-stream", events(&room, last_seen)),
            // Refused, not ignored: a client that sends an id no server sent has a bug to see.
            Err(error) => (400, "application/json", full(error)),
        },
        (&Method::GET, "/messages") => match after(request.uri().query()) {
            Ok(after) => (200, "application/json", full(room.history(after))),
            Err(error) => (400, "application/json", full(error)),
        },
        (&Method::POST, "/messages") => post(request, &room).await,
        _ => (404, "application/json", full(r#"{"error":"not found"}"#)),
    };
    // `no-cache`: every reader needs the live stream, never a stored copy.
    let headers = Response::builder().header("cache-control", "no-cache");
    let response = headers.status(status).header("content-type", content_type);
    Ok(response.body(body).expect("fixed, valid headers"))
}

// ANCHOR: post
/// `POST /messages`: read and check the body completely, and only then store and send it, so a
/// refused post changes nothing (not even the next id).
async fn post(request: Request<Incoming>, room: &Room) -> (u16, &'static str, Body) {
    match read_message(request).await {
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
// ANCHOR_END: post

// ANCHOR: limits
/// The largest body read. The longest valid message is about 8 KB as a browser's
/// `JSON.stringify` writes it (2,000 characters of up to 4 bytes); the rest is room for escapes.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A name is 1 to 32 characters once trimmed, on one line.
const MAX_USER_CHARS: usize = 32;
/// A text is 1 to 2,000 characters (not bytes), stored exactly as sent; not only whitespace.
const MAX_TEXT_CHARS: usize = 2000;
// ANCHOR_END: limits

// ANCHOR: read_message
/// A refused post: its status, and the sentence for the person who sent it.
type Refusal = (u16, String);

/// The name and text of a post that keeps every rule, or why it is refused.
async fn read_message(request: Request<Incoming>) -> Result<(String, String), Refusal> {
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
    let body = match limited.collect().await {
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
// ANCHOR_END: read_message

/// Messages kept for reconnecting browsers and `GET /messages`; past it the oldest is dropped.
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
    fn new() -> Self {
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
            live: broadcast::Sender::new(256),
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

/// One client's stream: `retry:`, what it missed (or the backlog), then every new message. When
/// the client goes away, hyper's next write fails and drops this body with its receiver.
fn events(room: &Room, last_seen: Option<u64>) -> Body {
    let (missed, live) = room.subscribe(last_seen);
    let first = std::iter::once(Bytes::from_static(RETRY)).chain(missed);
    let live = futures_util::stream::unfold(live, |mut live| async move {
        loop {
            match live.recv().await {
                Ok(event) => return Some((event, live)),
                Err(RecvError::Lagged(_)) => continue, // skipped, silently: see step 4
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let events = futures_util::stream::iter(first).chain(live);
    BodyExt::boxed(StreamBody::new(events.map(|event| Ok(Frame::data(event)))))
}
