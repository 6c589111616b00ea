//! Step 2 of the clock: event ids, so a browser that reconnects is sent only what it has not
//! seen. Over step 1 it adds an `id:` on every tick (the tick's time in Unix milliseconds, made
//! strictly increasing), reads the `Last-Event-ID` a reconnecting `EventSource` sends back, and
//! starts each stream with `retry:`, the delay before the browser reconnects.
//!
//! Without ids (step 1) a browser that reconnects after a network blip or a server restart
//! cannot say which tick it saw last, so the server cannot avoid sending it one again.
//!
//! Run: `cargo run -p clock-sse --example step2_resume`, then try
//! `curl -N http://127.0.0.1:3000/events`, stop and start the server, and resume with
//! `curl -N -H 'Last-Event-ID: <an id you saw>' http://127.0.0.1:3000/events` (only later ticks),
//! or `-H 'Last-Event-ID: abc'` (400 with a JSON error). `PORT=0` picks a free port,
//! `TICK_MS=100` ticks faster. Check it with `cargo run -p ladder -- check clock-sse step2_resume`.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

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
type Clock = tokio::sync::watch::Sender<Tick>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let tick_ms: u64 = std::env::var("TICK_MS").map_or(Ok(1000), |ms| ms.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("step2_resume listening on http://{addr}");

    let clock = Clock::new(tick_at(unix_ms_now()));
    tokio::spawn(tick(clock.clone(), Duration::from_millis(tick_ms.max(1))));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // Out of file descriptors, usually: wait for some to be freed rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let clock = clock.clone();
        let service = service_fn(move |request| {
            std::future::ready(Ok::<_, Infallible>(respond(&request, &clock)))
        });
        // One client's error (it went away mid-response) ends its connection, not the server.
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service));
    }
}

// ANCHOR: tick
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
// ANCHOR_END: tick

type Body = BoxBody<Bytes, Infallible>;

fn respond(request: &Request<Incoming>, clock: &Clock) -> Response<Body> {
    let (status, content_type, body) = match request.uri().path() {
        "/" => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        // ANCHOR: events_route
        "/events" => match last_event_id(request) {
            Ok(seen) => (200, "text/event-stream", events(clock, seen)),
            // Refused, not ignored: a client that sends an id no server sent has a bug to see.
            Err(error) => (400, "application/json", Full::from(error).boxed()),
        },
        "/stats" => {
            let (open, last_id) = (clock.receiver_count(), clock.borrow().id);
            let json = format!(r#"{{"streams":{open},"last_id":{last_id}}}"#);
            (200, "application/json", Full::from(json).boxed())
        }
        // ANCHOR_END: events_route
        _ => (404, "text/plain", Full::from("not found\n").boxed()),
    };
    // `no-cache`: every reader needs the live stream, never a stored copy.
    let headers = Response::builder().header("cache-control", "no-cache");
    let response = headers.status(status).header("content-type", content_type);
    response.body(body).expect("fixed, valid headers")
}

// ANCHOR: last_event_id
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
// ANCHOR_END: last_event_id

// ANCHOR: events
/// How long a browser waits before it reconnects, sent first on every stream.
const RETRY: &[u8] = b"retry: 3000\n\n";

/// One client's stream: `retry:`, then the current tick at once and each new one, all with ids
/// above `seen`. When the client goes away, hyper's next write fails and drops this body with its
/// receiver: nothing is left running.
fn events(clock: &Clock, seen: Option<u64>) -> Body {
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
            ticks.changed().await.ok()?;
            let tick = ticks.borrow_and_update().clone();
            if tick.id > seen {
                return Some((Ok(Frame::data(tick.event)), ticks));
            }
        }
    });
    BodyExt::boxed(StreamBody::new(retry.chain(frames)))
}
// ANCHOR_END: events
