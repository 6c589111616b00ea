//! Step 1 of the clock: the smallest correct Server-Sent Events server, on plain hyper. ONE
//! ticker task makes each tick once and publishes it on a `watch` channel; every client's stream
//! forwards the latest tick. A timer per client (what most tutorials write) does the work once
//! per client, stamps each copy with its own time, and runs on after the client has gone.
//! Run: `cargo run -p clock-sse --example step1_ticks`, open <http://127.0.0.1:3000>, or try
//! `curl -N http://127.0.0.1:3000/events`; `PORT=0` picks a free port, `TICK_MS=100` ticks faster.
//! Not here yet: ids and resuming (step 2), shutdown (3), slow clients (4), keep-alive (5).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>clock-sse</title>
<h1 id="time">--:--:--</h1><p id="state">connecting</p><script>
  const source = new EventSource("/events");
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  source.onopen = () => show("state", "open");
  // Do not close the source on error: while it is CONNECTING the browser is retrying by itself.
  source.onerror = () => show("state", "reconnecting");
  // `tick` is a named event: onmessage sees only unnamed ones.
  source.addEventListener("tick", (event) =>
    show("time", new Date(JSON.parse(event.data).unix_ms).toLocaleTimeString()));</script>"#;

/// The latest tick: a slow client skips to the newest time instead of queueing old ones, memory
/// is one tick for any number of clients, and `/stats` counts the receivers, one per stream.
type Clock = tokio::sync::watch::Sender<Tick>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let tick_ms: u64 = std::env::var("TICK_MS").map_or(Ok(1000), |ms| ms.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("step1_ticks listening on http://{}", listener.local_addr()?);

    let clock = Clock::new(tick_now());
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

async fn tick(clock: Clock, period: Duration) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        clock.send_replace(tick_now()); // stored even when no client is connected
    }
}

/// A tick, encoded once: every client's stream clones these bytes, not the work.
struct Tick {
    unix_ms: u64,
    event: Bytes,
}

fn tick_now() -> Tick {
    let now = SystemTime::now();
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let unix_ms = since_epoch.as_millis() as u64;
    let time = humantime::format_rfc3339_millis(now);
    // The whole format: `field: value` lines, then a blank line that ends the event.
    let event = format!("event: tick\ndata: {{\"unix_ms\":{unix_ms},\"time\":\"{time}\"}}\n\n");
    let event = Bytes::from(event);
    Tick { unix_ms, event }
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(request: &Request<Incoming>, clock: &Clock) -> Response<Body> {
    let (status, content_type, body) = match request.uri().path() {
        "/" => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        "/events" => (200, "text/event-stream", events(clock)),
        "/stats" => {
            let (open, last_id) = (clock.receiver_count(), clock.borrow().unix_ms);
            let json = format!(r#"{{"streams":{open},"last_id":{last_id}}}"#);
            (200, "application/json", Full::from(json).boxed())
        }
        _ => (404, "text/plain", Full::from("not found\n").boxed()),
    };
    // `no-cache`: every reader needs the live stream, never a stored copy.
    let headers = Response::builder().header("cache-control", "no-cache");
    let response = headers.status(status).header("content-type", content_type);
    response.body(body).expect("fixed, valid headers")
}

/// One client's stream: the current tick at once, then each new one. When the client goes away,
/// hyper's next write fails and drops this body with its receiver: nothing is left running.
fn events(clock: &Clock) -> Body {
    let mut ticks = clock.subscribe();
    ticks.mark_changed();
    let frames = futures_util::stream::unfold(ticks, |mut ticks| async move {
        ticks.changed().await.ok()?;
        let event = ticks.borrow_and_update().event.clone();
        Some((Ok(Frame::data(event)), ticks))
    });
    BodyExt::boxed(StreamBody::new(frames))
}
