//! Server-Sent Events, server side: encoding one event, and streaming events as a response.
//!
//! An SSE response is an ordinary HTTP response whose body never ends. Its format is defined by
//! the WHATWG HTML standard, section "Server-sent events"
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>): UTF-8 text, one field per
//! line (`event`, `data`, `id`, `retry`, or a `:` comment), and a blank line that ends each event.
//!
//! Two properties matter for a server with many clients:
//! - an [`Event`] is encoded to [`Bytes`] once, and the same `Bytes` (a reference-counted buffer)
//!   is written to every client: fan-out costs a pointer copy per client, not an encoding;
//! - no payload can break out of its event. A line break inside `data` starts another `data:`
//!   line, and an `id` or `event` name containing a line break is refused, so a client-supplied
//!   string can never start a new field or a new event (the SSE version of header injection).

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::fanout::{Fanout, Outbox};
use crate::server::{ResponseBody, Shutdown};

/// How often an idle stream sends a comment when no default is chosen. A write is the only way
/// a server learns that a silently vanished client is gone, and proxies commonly drop a response
/// that has been idle for 30 to 60 seconds.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A comment line: clients ignore it, but writing it detects dead peers and keeps proxies open.
/// A comment without a blank line after it cannot disturb an event being assembled.
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n";

// ANCHOR: event
/// One server-sent event, built field by field and then [encoded](Event::encode) once.
///
/// ```
/// use realtime_kit::sse::Event;
///
/// let bytes = Event::new().event("tick")?.id("7")?.data("{\"seq\":7}").encode();
/// assert_eq!(&bytes[..], b"event: tick\nid: 7\ndata: {\"seq\":7}\n\n");
/// # Ok::<(), realtime_kit::sse::InvalidField>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `: ...` lines, ignored by clients; useful for humans reading a `curl -N` transcript.
    comment: Option<String>,
    /// `event:` the type the client dispatches; `message` when absent.
    event: Option<String>,
    /// `id:` what the browser sends back as `Last-Event-ID` when it reconnects.
    id: Option<String>,
    /// `retry:` how long the browser waits before reconnecting.
    retry: Option<Duration>,
    /// `data:` the payload; a multi-line payload becomes several `data:` lines.
    data: Option<String>,
}

/// An `id` or `event` value that would have broken the event stream's framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    field: &'static str,
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an SSE `{}` field must not contain CR, LF or NUL",
            self.field
        )
    }
}

impl std::error::Error for InvalidField {}

impl Event {
    /// An empty event; add fields with the methods below.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the event type (`event:`). Clients route it to `addEventListener(name, ...)`; only
    /// events without a type (or of type `message`) reach `onmessage`.
    pub fn event(mut self, name: impl Into<String>) -> Result<Self, InvalidField> {
        self.event = Some(single_line("event", name.into())?);
        Ok(self)
    }

    /// Sets the event id (`id:`). A browser keeps the last id it saw and sends it in the
    /// `Last-Event-ID` header when it reconnects.
    pub fn id(mut self, id: impl Into<String>) -> Result<Self, InvalidField> {
        self.id = Some(single_line("id", id.into())?);
        Ok(self)
    }

    /// Sets the payload. Any text is accepted: line breaks (`\n`, `\r\n` or `\r`) are written
    /// as separate `data:` lines, which the client joins again with `\n`.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the client's reconnection delay (`retry:`), in whole milliseconds.
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// Adds a comment (`: ...`), split into several comment lines if it has line breaks.
    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(text.into());
        self
    }

    // ANCHOR: encode
    /// Encodes the event once; clone the returned `Bytes` to send it to many clients.
    pub fn encode(&self) -> Bytes {
        let mut out = String::with_capacity(16 + self.data.as_ref().map_or(0, String::len));
        if let Some(comment) = &self.comment {
            for line in lines(comment) {
                push_field(&mut out, "", line);
            }
        }
        if let Some(event) = &self.event {
            push_field(&mut out, "event", event);
        }
        if let Some(id) = &self.id {
            push_field(&mut out, "id", id);
        }
        if let Some(retry) = self.retry {
            push_field(&mut out, "retry", &retry.as_millis().to_string());
        }
        if let Some(data) = &self.data {
            for line in lines(data) {
                push_field(&mut out, "data", line);
            }
        }
        // The blank line that tells the client the event is complete.
        out.push('\n');
        Bytes::from(out)
    }
}

fn single_line(field: &'static str, value: String) -> Result<String, InvalidField> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(InvalidField { field });
    }
    Ok(value)
}

/// Splits on every line break the SSE parser recognises: CRLF, LF and a lone CR.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Writes `name: value`, or `name:` alone for an empty value (the client strips one space after
/// the colon, so both spellings mean the same; this one has no trailing space).
fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    if !value.is_empty() {
        out.push(' ');
        out.push_str(value);
    }
    out.push('\n');
}
// ANCHOR_END: encode
// ANCHOR_END: event

// ANCHOR: last_event_id
/// The largest id a demo hands out: ids travel to the page inside JSON, and JavaScript numbers
/// are exact only up to 2^53 - 1 (`Number.MAX_SAFE_INTEGER`).
pub const MAX_EVENT_ID: u64 = (1 << 53) - 1;

/// Reads the `Last-Event-ID` header a reconnecting `EventSource` sends: `Ok(None)` for a first
/// connection (no header, or an empty one), `Ok(Some(id))` for a numeric id. Anything else is an
/// error whose message says what was wrong; answer it with `400 Bad Request`.
pub fn last_event_id<B>(request: &Request<B>) -> Result<Option<u64>, InvalidLastEventId> {
    let Some(value) = request.headers().get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("(not text)").trim();
    if text.is_empty() {
        return Ok(None);
    }
    // Written as this server writes ids: digits only, no sign, no leading zero. `u64::from_str`
    // alone also takes `+5` and `007`, ids no server here sent.
    let canonical =
        text.bytes().all(|byte| byte.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    match text.parse::<u64>() {
        Ok(id) if canonical && id <= MAX_EVENT_ID => Ok(Some(id)),
        _ => Err(InvalidLastEventId(text.to_owned())),
    }
}

/// A `Last-Event-ID` that is not an id this workspace's servers send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLastEventId(String);

impl fmt::Display for InvalidLastEventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Last-Event-ID must be an event id this server sent (a whole number up to {MAX_EVENT_ID}), not {:?}",
            self.0
        )
    }
}

impl std::error::Error for InvalidLastEventId {}
// ANCHOR_END: last_event_id

// ANCHOR: response
// ANCHOR: sse_response
/// Builds the streaming response for a stream of already encoded events.
///
/// The response carries the headers an event stream needs, can start with a `retry:` line,
/// writes a keep-alive comment whenever the stream has been idle for the keep-alive interval,
/// and ends by itself when the server shuts down (an endless body would otherwise hold graceful
/// shutdown forever).
pub struct SseResponse {
    events: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    retry: Option<Duration>,
    keep_alive: Duration,
    shutdown: Shutdown,
    /// How the direct path joins the stream to a [`Fanout`] instead: see [`SseResponse::shared`].
    join: Option<JoinFn>,
}

impl SseResponse {
    /// A response that writes each item of `events` as it comes, until `shutdown` is requested
    /// or `events` ends.
    pub fn new(events: impl Stream<Item = Bytes> + Send + 'static, shutdown: &Shutdown) -> Self {
        Self {
            events: Box::pin(events),
            retry: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            shutdown: shutdown.clone(),
            join: None,
        }
    }

    // ANCHOR: shared
    /// A stream written by a [`Fanout`]'s writers on the kit's direct path
    /// ([`ServerOptions::direct_streams`](crate::ServerOptions)), and by hyper from a stream of
    /// its own on hyper's path. The path the request took calls one of the two, once:
    /// - `events` makes the client's stream, as for [`SseResponse::new`];
    /// - `join` gets the client's [`Outbox`], with the head and `retry:` already in it. It
    ///   pushes the client's catch-up (each event [`chunked`]) and joins the fan-out, under the
    ///   lock the sends take, so that each event is in the catch-up or in the fan-out, never
    ///   both, never neither. It returns what keeps the client in: its [`Member`](crate::fanout::Member)
    ///   and whatever else the stream holds. On this path the fan-out writes the keep-alives.
    pub fn shared<S>(
        events: impl FnOnce() -> S + Send + 'static,
        join: impl FnOnce(&Arc<Outbox>) -> Membership + Send + 'static,
        shutdown: &Shutdown,
    ) -> Self
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        // Made when hyper first asks for an event, so the path that does not take it never
        // makes it (a stream may count itself as open, or copy a catch-up).
        let events = futures_util::stream::once(async move { events() }).flatten();
        Self {
            join: Some(Box::new(join)),
            ..Self::new(events, shutdown)
        }
    }
    // ANCHOR_END: shared

    /// Sends `retry:` first, so the browser waits this long before each reconnection.
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = Some(delay);
        self
    }

    /// Sets how long the stream may stay silent before a keep-alive comment is written.
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// The `200 OK` response with the event-stream headers.
    pub fn into_response(self) -> Response<ResponseBody> {
        let first = self.retry.map(|delay| Event::new().retry(delay).encode());
        let join = self.join.map(|join| Join {
            join: Arc::new(Mutex::new(Some(join))),
            first: first.clone(),
        });
        let body = SseBody {
            first,
            events: self.events,
            keep_alive: self.keep_alive,
            idle: Box::pin(tokio::time::sleep(self.keep_alive)),
            last_write: Instant::now(),
            stopping: Box::pin(self.shutdown.requested_owned()),
            done: false,
        };
        let mut response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            // Each reader must get its own live stream, never a cached copy.
            .header(header::CACHE_CONTROL, "no-cache")
            // nginx buffers responses by default, which would hold events back; this asks it not to.
            .header("x-accel-buffering", "no")
            .body(body.boxed_unsync())
            .expect("static headers are valid");
        if let Some(join) = join {
            response.extensions_mut().insert(join);
        }
        response
    }
}
// ANCHOR_END: sse_response

// ANCHOR: stream_fanout
/// What keeps a client in a fan-out; dropping it leaves.
pub type Membership = Box<dyn Send>;

pub(crate) type JoinFn = Box<dyn FnOnce(&Arc<Outbox>) -> Membership + Send>;

/// How the direct path joins a stream to its fan-out, carried in the response's extensions
/// (which must be `Clone`, hence the shared slot: the one `join` is taken once).
#[derive(Clone)]
pub(crate) struct Join {
    join: Arc<Mutex<Option<JoinFn>>>,
    /// The `retry:` line, written before the catch-up.
    pub(crate) first: Option<Bytes>,
}

impl Join {
    pub(crate) fn take(&self) -> Option<JoinFn> {
        self.join
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A [`Fanout`] for event streams on the direct path: a client more than `backlog` events
/// behind is closed (it reconnects, and resumes with `Last-Event-ID`), and each writer writes
/// the keep-alive comment after `keep_alive` of silence.
pub fn fanout(backlog: usize, keep_alive: Duration, shutdown: &Shutdown) -> Fanout {
    let comment = chunked(KEEP_ALIVE_COMMENT);
    Fanout::with_keep_alive(backlog, keep_alive, comment, shutdown)
}

/// An encoded event as the direct path writes it, a chunk of the chunked transfer coding: framed
/// once, for [`Fanout::send`] and for catch-ups pushed to an [`Outbox`].
pub fn chunked(event: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(event.len() + 8);
    crate::direct::chunk(&mut framed, event);
    framed.into()
}
// ANCHOR_END: stream_fanout

// ANCHOR: sse_body
/// The response body: hyper polls it for the next chunk to write.
struct SseBody {
    /// The `retry:` line, written before any event.
    first: Option<Bytes>,
    events: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
    keep_alive: Duration,
    /// Fires when the stream may have been silent for `keep_alive`. It is moved only when it
    /// fires, not on every write: resetting a timer takes a lock in tokio's timer, and a stream
    /// writes far more often than it falls silent.
    idle: Pin<Box<Sleep>>,
    /// When the stream last wrote something; the timer checks it when it fires.
    last_write: Instant,
    /// Resolves when the server shuts down.
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.done || this.stopping.as_mut().poll(cx).is_ready() {
            // Ending the body ends the chunked response cleanly; hyper can then close the
            // connection and graceful shutdown completes.
            this.done = true;
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let chunk = match this.events.as_mut().poll_next(cx) {
            Poll::Ready(Some(event)) => event,
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => loop {
                if this.idle.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let silent_until = this.last_write + this.keep_alive;
                if silent_until <= Instant::now() {
                    this.idle.as_mut().reset(Instant::now() + this.keep_alive);
                    break Bytes::from_static(KEEP_ALIVE_COMMENT);
                }
                // Something was written since the timer was set: wait out the rest.
                this.idle.as_mut().reset(silent_until);
            },
        };
        this.last_write = Instant::now();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
// ANCHOR_END: sse_body
// ANCHOR_END: response

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::SseParser;

    fn encoded(event: &Event) -> String {
        String::from_utf8(event.encode().to_vec()).expect("the encoder writes UTF-8")
    }

    /// A payload with line breaks becomes several `data:` lines and nothing else.
    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        let event = Event::new().data("one\ntwo\r\nthree\rfour");
        assert_eq!(
            encoded(&event),
            "data: one\ndata: two\ndata: three\ndata: four\n\n"
        );
    }

    /// The injection defence: a payload that tries to end its event and start another is
    /// received as one `message` event carrying exactly that text.
    #[test]
    fn payload_cannot_start_a_new_event_or_field() {
        for attack in [
            "hello\n\nevent: admin\ndata: pwned",
            "x\r\n\r\nid: 999\r\nretry: 1\r\n\r\n",
            "\n\n\n",
            "data: nested",
            ": not a comment",
        ] {
            let mut parser = SseParser::new();
            let events = parser.feed(&Event::new().id("1").unwrap().data(attack).encode());
            assert_eq!(events.len(), 1, "{attack:?} must stay one event");
            assert_eq!(events[0].event, "message");
            assert_eq!(events[0].last_event_id, "1");
            // Line breaks are normalised to `\n`; everything else arrives as sent.
            assert_eq!(
                events[0].data,
                attack.replace("\r\n", "\n").replace('\r', "\n")
            );
            assert_eq!(parser.retry(), None, "{attack:?} must not set retry");
        }
    }

    /// An id or event name that could break framing is refused instead of written.
    #[test]
    fn line_breaks_and_nul_in_id_or_event_are_rejected() {
        for bad in ["a\nb", "a\rb", "a\r\nb", "a\0b", "\n"] {
            assert!(Event::new().id(bad).is_err(), "id {bad:?}");
            assert!(Event::new().event(bad).is_err(), "event {bad:?}");
        }
        let err = Event::new().id("1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "an SSE `id` field must not contain CR, LF or NUL"
        );
    }

    /// Every field is written in the documented order, with the terminating blank line.
    #[test]
    fn all_fields_encode_in_order() {
        let event = Event::new()
            .comment("hello\nthere")
            .event("tick")
            .unwrap()
            .id("42")
            .unwrap()
            .retry(Duration::from_millis(3000))
            .data("{}");
        assert_eq!(
            encoded(&event),
            ": hello\n: there\nevent: tick\nid: 42\nretry: 3000\ndata: {}\n\n"
        );
    }

    /// Empty values are written without a trailing space; an empty `data` still dispatches.
    #[test]
    fn empty_values() {
        assert_eq!(encoded(&Event::new().data("")), "data:\n\n");
        assert_eq!(encoded(&Event::new().id("").unwrap()), "id:\n\n");
        let events = SseParser::new().feed(&Event::new().data("").encode());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "");
    }

    /// A trailing line break survives the round trip.
    #[test]
    fn trailing_newline_round_trips() {
        let events = SseParser::new().feed(&Event::new().data("a\n").encode());
        assert_eq!(events[0].data, "a\n");
    }

    /// The keep-alive comment comes only after `keep_alive` of silence, counted from the last
    /// write: events in between push it back, though its timer is not reset on each of them.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_counts_silence_from_the_last_write() {
        use http_body_util::BodyExt;
        let (send, events) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let events = futures_util::stream::unfold(events, |mut events| async move {
            events.recv().await.map(|event| (event, events))
        });
        let body = SseResponse::new(events, &Shutdown::new())
            .keep_alive(Duration::from_secs(10))
            .into_response()
            .into_body();
        tokio::pin!(body);
        let started = Instant::now();
        let mut next = async || {
            let frame = body.frame().await.expect("a frame").expect("infallible");
            (frame.into_data().expect("data"), started.elapsed())
        };
        let event = Event::new().data("x").encode();
        for at in [3, 6, 9, 12] {
            let send = send.clone();
            let event = event.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(started + Duration::from_secs(at)).await;
                let _ = send.send(event);
            });
        }
        for at in [3, 6, 9, 12] {
            assert_eq!(next().await, (event.clone(), Duration::from_secs(at)));
        }
        let comment = Bytes::from_static(KEEP_ALIVE_COMMENT);
        assert_eq!(next().await, (comment.clone(), Duration::from_secs(22)));
        assert_eq!(next().await, (comment, Duration::from_secs(32)));
    }
}
