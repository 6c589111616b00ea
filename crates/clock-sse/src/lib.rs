//! clock-sse: a clock that ticks once a second over Server-Sent Events.
//!
//! Run with
//!
//! ```text
//! cargo run -p clock-sse
//! ```
//!
//! then open <http://127.0.0.1:3000> to watch it tick, or read the raw stream with
//! `curl -N http://127.0.0.1:3000/events`. Stop the server for a few seconds and start it again:
//! the page reconnects by itself and the ids go on rising where they were.
//!
//! The shape to copy: ONE ticker task makes each tick once, encodes it once, and publishes it;
//! every client's stream only forwards the latest tick. A timer per client (what most tutorials
//! write) does the same work once per client, and leaks if it is not stopped on disconnect.
//!
//! | route | what it serves |
//! | --- | --- |
//! | `GET /` | the page |
//! | `GET /events` | the stream: `retry: 3000`, then one `tick` event a second |
//! | `GET /stats` | `{"streams": <open streams>, "last_id": <id of the latest tick, 0 before the first>}` |

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askama::Template;
use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response, StatusCode};
use realtime_kit::sse::{self, Event, SseResponse};
use realtime_kit::{Body, ConnectionLimits, Gauge, RequestBody, Shutdown, respond};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// The port `cargo run -p clock-sse` listens on.
pub const DEFAULT_PORT: u16 = 3000;

/// How the clock behaves; [`Config::default`] is what `main` uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between ticks (one second; tests use less).
    pub tick_interval: Duration,
    /// Sent as `retry:`: how long a browser waits before reconnecting.
    pub retry: Duration,
    /// How long a stream may be silent before a keep-alive comment is written.
    pub keep_alive: Duration,
    /// How long a client may read nothing, and take to send its request headers, before its
    /// connection is closed.
    pub limits: ConnectionLimits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_secs(1),
            retry: Duration::from_secs(3),
            keep_alive: sse::DEFAULT_KEEP_ALIVE,
            limits: ConnectionLimits::default(),
        }
    }
}

// ANCHOR: run
/// Serves the clock on `listener` until `shutdown_signal` completes, then ends every stream and
/// returns.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let clock = Clock::start(config.tick_interval, &shutdown);
    let limits = config.limits;
    let app = Arc::new(App {
        clock,
        config,
        shutdown: shutdown.clone(),
    });
    let handler = move |request| {
        let app = app.clone();
        async move { app.handle(&request) }
    };
    realtime_kit::serve_with_limits(limits, listener, shutdown_signal, shutdown, handler).await;
}
// ANCHOR_END: run

/// What every request handler shares.
struct App {
    clock: Clock,
    config: Config,
    /// Given to each stream so that it ends when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    // ANCHOR: routes
    fn handle(&self, request: &Request<RequestBody>) -> Response<Body> {
        let path = request.uri().path();
        match (request.method(), path) {
            (&Method::GET, "/") => respond::html(&ClockPage {
                retry_secs: self.config.retry.as_secs_f64(),
            }),
            (&Method::GET, "/events") => self.events(request),
            (&Method::GET, "/stats") => respond::json(StatusCode::OK, &self.clock.stats()),
            (method, "/" | "/events" | "/stats") => {
                respond::method_not_allowed(method, &[Method::GET])
            }
            _ => respond::not_found(path),
        }
    }
    // ANCHOR_END: routes

    // ANCHOR: events
    /// `GET /events`: one client's stream of ticks.
    fn events(&self, request: &Request<RequestBody>) -> Response<Body> {
        // A browser that reconnects sends the id of the last tick it saw.
        let seen = match sse::last_event_id(request) {
            Ok(seen) => seen,
            Err(error) => return respond::error(StatusCode::BAD_REQUEST, error),
        };
        SseResponse::new(self.clock.subscribe(seen), &self.shutdown)
            .retry(self.config.retry)
            .keep_alive(self.config.keep_alive)
            .into_response()
    }
    // ANCHOR_END: events
}

/// The page at `/`; its markup and script are in `templates/clock.html`.
#[derive(Template)]
#[template(path = "clock.html")]
struct ClockPage {
    /// Shown on the page, so the reader knows how long a reconnect waits.
    retry_secs: f64,
}

// ANCHOR: tick
/// The JSON `data` of every `tick` event.
#[derive(Debug, Serialize)]
struct TickData {
    /// Milliseconds since the Unix epoch: the same number as the event `id`.
    unix_ms: u64,
    /// The same instant in RFC 3339, UTC, for people.
    time: String,
}

/// The latest tick, already encoded: each client's stream clones the `Bytes`, not the work.
#[derive(Debug, Clone)]
struct Tick {
    /// The tick's time in Unix milliseconds, which is also its event id.
    id: u64,
    encoded: Bytes,
}

impl Tick {
    /// Encodes the tick whose id (and time) is `id` Unix milliseconds.
    fn new(id: u64) -> Self {
        let data = TickData {
            unix_ms: id,
            time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(id))
                .to_string(),
        };
        let encoded = Event::new()
            .event("tick")
            .and_then(|event| event.id(id.to_string()))
            .expect("a fixed name and a number are single lines")
            .data(serde_json::to_string(&data).expect("TickData always serialises"))
            .encode();
        Self { id, encoded }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock (0 if it is set before 1970).
fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
// ANCHOR_END: tick

// ANCHOR: clock
// ANCHOR: clock_state
/// The one ticker of the server, and what its clients subscribe to.
#[derive(Clone)]
struct Clock {
    /// Holds only the latest tick. A watch channel is the right shape for a clock: a client
    /// that falls behind skips straight to the newest tick (it would not want old times), and
    /// memory stays one tick however slow the clients are. Only the ticker writes it: nothing a
    /// client sends changes what other clients are sent.
    latest: watch::Receiver<Option<Tick>>,
    /// Open streams, for `/stats`: each stream holds one count until it is dropped.
    streams: Gauge,
}
// ANCHOR_END: clock_state

impl Clock {
    // ANCHOR: start
    /// Starts the ticker task; it stops when the server shuts down.
    fn start(interval: Duration, shutdown: &Shutdown) -> Self {
        let (publish, latest) = watch::channel(None);
        shutdown.spawn(tick(interval, publish, shutdown.clone()));
        Self {
            latest,
            streams: Gauge::new(),
        }
    }
    // ANCHOR_END: start

    // ANCHOR: subscribe
    /// A client's stream of encoded ticks: the current tick at once, then every new one, all
    /// with ids above `seen` (the `Last-Event-ID` of a reconnecting client).
    fn subscribe(&self, seen: Option<u64>) -> impl Stream<Item = Bytes> + Send + 'static {
        // Ids are times, so they keep rising across a restart without trusting anyone. An id
        // above the latest tick's was never sent by this clock (a server clock set back, or a
        // made-up id): it is ignored, and the client starts at the current tick like a new one.
        // It only chooses what this client is sent; nothing any client sends moves shared state.
        let latest_id = self.latest.borrow().as_ref().map_or(0, |tick| tick.id);
        let seen = seen.filter(|&seen| seen <= latest_id).unwrap_or(0);
        let mut ticks = self.latest.clone();
        ticks.mark_changed(); // so the first `changed()` returns the current tick at once
        let counted = self.streams.enter();
        futures_util::stream::unfold((ticks, counted), move |(mut ticks, counted)| async move {
            loop {
                // An error means the ticker has stopped: the server is shutting down.
                ticks.changed().await.ok()?;
                let latest = ticks.borrow_and_update().clone();
                if let Some(tick) = latest.filter(|tick| tick.id > seen) {
                    return Some((tick.encoded, (ticks, counted)));
                }
            }
        })
    }
    // ANCHOR_END: subscribe

    fn stats(&self) -> ClockStats {
        ClockStats {
            streams: self.streams.get(),
            last_id: self.latest.borrow().as_ref().map_or(0, |tick| tick.id),
        }
    }
}

// ANCHOR: ticker
/// The ticker: makes one tick per interval and publishes it to every subscriber.
async fn tick(interval: Duration, publish: watch::Sender<Option<Tick>>, shutdown: Shutdown) {
    // Tick on whole seconds of the wall clock, so the page's seconds change when the real
    // ones do. `interval_at` schedules by deadline, so ticks do not drift.
    let period_ms = interval.as_millis().max(1) as u64;
    let now_ms = unix_ms_now();
    let first = tokio::time::Instant::now() + Duration::from_millis(period_ms - now_ms % period_ms);
    let mut ticker = tokio::time::interval_at(first, interval);
    // After a stall (a suspended laptop), tick once and go on; a burst of stale ticks helps no one.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut previous_id = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.requested() => return,
        }
        // The id is the tick's time, made strictly increasing: two ticks in one millisecond, or
        // a wall clock set back while running, still get ids above every id sent before.
        let id = unix_ms_now().max(previous_id + 1);
        previous_id = id;
        // `send_replace` stores the tick even when no client is connected.
        publish.send_replace(Some(Tick::new(id)));
    }
}
// ANCHOR_END: ticker
// ANCHOR_END: clock

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
struct ClockStats {
    /// Event streams open right now.
    streams: usize,
    /// The id of the latest tick (0 before the first).
    last_id: u64,
}
