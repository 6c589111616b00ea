//! Step 5 of the clock: keep-alive comments, and no buffering by proxies. When a stream has had
//! nothing to send for the keep-alive interval it writes a comment line (`: keep-alive`), which
//! `EventSource` ignores; and the stream's response says `X-Accel-Buffering: no`.
//!
//! Without them (step 4) a stream between two ticks is silent, and a stream whose events are
//! rare is silent for long: a proxy in front closes a connection that has been silent for its
//! read timeout (nginx: 60 s), and a client that vanished without closing its connection is
//! only noticed when the server next writes. And nginx buffers proxied responses by default, so
//! the page would get its ticks late and in bursts.
//!
//! Run: `cargo run -p clock-sse --example step5_keep_alive`, then try `TICK_MS=60000
//! KEEP_ALIVE_MS=2000 cargo run -p clock-sse --example step5_keep_alive` and `curl -N
//! http://127.0.0.1:3000/events`: a comment every 2 s between the ticks. `KEEP_ALIVE_MS`
//! defaults to 15000; the others are step 4's (`STALL_TIMEOUT_MS`, `HEADER_TIMEOUT_MS`,
//! `TICK_MS`, `PORT`). Check it with `cargo run -p ladder -- check clock-sse step5_keep_alive`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>clock-sse</title>
<h1 id="time">--:--:--</h1><p id="state">connecting</p><p>last id: <span id="id">none</span></p>
<script>
  const source = new EventSource("/events");
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  source.onopen = () => show("state", "open");
  // Do not close the source on error: while it is CONNECTING the browser is retrying by itself,
  // and it will send the last id it saw as Last-Event-ID.
  source.onerror = () => show("state", "reconnecting");
  // `tick` is a named event: onmessage sees only unnamed ones.
  source.addEventListener("tick", (event) => {
    show("time", new Date(JSON.parse(event.data).unix_ms).toLocaleTimeString());
    show("id", event.lastEventId);
  });
</script>"#;

/// The latest tick: a slow client skips to the newest time instead of queueing old ones, memory
/// is one tick for any number of clients, and `/stats` counts the receivers, one per stream.
type Clock = watch::Sender<Tick>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let tick_ms: u64 = std::env::var("TICK_MS").map_or(Ok(1000), |ms| ms.parse())?;
    let stall_limit = millis("STALL_TIMEOUT_MS", 30_000)?;
    let header_limit = millis("HEADER_TIMEOUT_MS", 30_000)?;
    // ANCHOR: keep_alive_setting
    let keep_alive = millis("KEEP_ALIVE_MS", 15_000)?;
    // ANCHOR_END: keep_alive_setting
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // Listen for signals before saying we are ready: one that came first would kill the process.
    let signal = shutdown_signal()?;
    let addr = listener.local_addr()?;
    println!("step5_keep_alive listening on http://{addr}");

    let clock = Clock::new(tick_at(unix_ms_now()));
    tokio::spawn(tick(clock.clone(), Duration::from_millis(tick_ms.max(1))));
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
        let (clock, stopping) = (clock.clone(), stopping.clone());
        let service = service_fn(move |request| {
            let response = respond(&request, &clock, &stopping, keep_alive);
            std::future::ready(Ok::<_, Infallible>(response))
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
        Ok(()) => println!("step5_keep_alive: every response finished, exiting"),
        Err(_) => eprintln!("step5_keep_alive: connections still open after {grace:?}, exiting"),
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

async fn tick(clock: Clock, period: Duration) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        // The id is the tick's time, made strictly increasing (two ticks in one millisecond, or
        // a clock set back a little, still go up). Ids then keep rising across a restart too,
        // without the server storing anything or believing any client.
        let id = unix_ms_now().max(clock.borrow().id + 1);
        clock.send_replace(tick_at(id)); // stored even when no client is connected
    }
}

/// A tick, encoded once: every client's stream clones these bytes, not the work.
#[derive(Clone)]
struct Tick {
    /// The tick's time in Unix milliseconds: its event id, and its `unix_ms`.
    id: u64,
    event: Bytes,
}

fn tick_at(id: u64) -> Tick {
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(id));
    // `id:` sets the browser's last event id, which it sends back when it reconnects.
    let event =
        format!("event: tick\nid: {id}\ndata: {{\"unix_ms\":{id},\"time\":\"{time}\"}}\n\n");
    let event = Bytes::from(event);
    Tick { id, event }
}

fn unix_ms_now() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.unwrap_or_default().as_millis() as u64
}

type Body = BoxBody<Bytes, Infallible>;

// ANCHOR: respond
fn respond(
    request: &Request<Incoming>,
    clock: &Clock,
    stopping: &Stopping,
    keep_alive: Duration,
) -> Response<Body> {
    let (status, content_type, body) = match request.uri().path() {
        "/" => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        "/events" => match last_event_id(request) {
            Ok(seen) => (
                200,
                "text/event-stream",
                events(clock, seen, stopping, keep_alive),
            ),
            // Refused, not ignored: a client that sends an id no server sent has a bug to see.
            Err(error) => (400, "application/json", Full::from(error).boxed()),
        },
        "/stats" => {
            let (open, last_id) = (clock.receiver_count(), clock.borrow().id);
            let json = format!(r#"{{"streams":{open},"last_id":{last_id}}}"#);
            (200, "application/json", Full::from(json).boxed())
        }
        _ => (404, "text/plain", Full::from("not found\n").boxed()),
    };
    // `no-cache`: every reader needs the live stream, never a stored copy.
    let mut headers = Response::builder().header("cache-control", "no-cache");
    if content_type == "text/event-stream" {
        // nginx buffers what it proxies unless told not to: ticks would arrive late, in bursts.
        headers = headers.header("x-accel-buffering", "no");
    }
    let response = headers.status(status).header("content-type", content_type);
    response.body(body).expect("fixed, valid headers")
}
// ANCHOR_END: respond

/// The id a reconnecting `EventSource` sends back: `Ok(None)` on a first visit (no header, or an
/// empty one). Anything but a whole number up to 2^53 - 1 (ids travel to the page in JSON, whose
/// numbers are exact only that far) is a JSON error for a `400`.
fn last_event_id(request: &Request<Incoming>) -> Result<Option<u64>, &'static str> {
    let Some(value) = request.headers().get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("(not text)").trim();
    match text.parse::<u64>() {
        _ if text.is_empty() => Ok(None),
        Ok(id) if id < 1 << 53 => Ok(Some(id)),
        _ => Err(
            r#"{"error":"Last-Event-ID must be an id this server sent: a whole number up to 9007199254740991"}"#,
        ),
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

/// One client's stream: `retry:`, then the current tick at once and each new one, all with ids
/// above `seen`, and a keep-alive comment whenever it has been silent for `keep_alive`, until
/// the server shuts down. When the client goes away, hyper's next write fails and drops this
/// body with its receivers: nothing is left running.
fn events(clock: &Clock, seen: Option<u64>, stopping: &Stopping, keep_alive: Duration) -> Body {
    let mut ticks = clock.subscribe();
    // An id above the latest tick's was never sent by this clock (its clock was set back, or
    // the id is made up): ignore it and start at the current tick, as for a new client. A
    // client's id only chooses what THIS client is sent; it never moves anything others see.
    let latest = ticks.borrow().id;
    let seen = seen.filter(|&seen| seen <= latest).unwrap_or(0);
    ticks.mark_changed();
    let retry = futures_util::stream::once(async { Ok(Frame::data(Bytes::from_static(RETRY))) });
    let frames = futures_util::stream::unfold(ticks, move |mut ticks| async move {
        loop {
            // Silence is what proxies time out on, and a write is how a dead peer is found.
            match tokio::time::timeout(keep_alive, ticks.changed()).await {
                Err(_silent) => {
                    return Some((Ok(Frame::data(Bytes::from_static(KEEP_ALIVE))), ticks));
                }
                Ok(changed) => changed.ok()?,
            }
            let tick = ticks.borrow_and_update().clone();
            if tick.id > seen {
                return Some((Ok(Frame::data(tick.event)), ticks));
            }
        }
    });
    let mut stopping = stopping.clone();
    let shutdown = async move { while stopping.changed().await.is_ok() {} };
    // Ending the body lets hyper write the end of the response: the client sees a clean end.
    BodyExt::boxed(StreamBody::new(retry.chain(frames).take_until(shutdown)))
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
