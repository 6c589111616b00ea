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
//! the page reconnects by itself and goes on with the next tick. A tick's id is its own time in
//! Unix milliseconds, so ids keep increasing across restarts without the server trusting the
//! `Last-Event-ID` a client sends.
//!
//! The shape to copy: ONE ticker task makes each tick once, encodes it once, and publishes it;
//! every client's stream only forwards the latest tick. A timer per client (what most tutorials
//! write) does the same work once per client, and leaks if it is not stopped on disconnect.
//! With `--direct-streams`, browsers' streams are not even a task each: one task per core
//! writes the tick to all of them (`realtime_kit::fanout`).
//!
//! | route | what it serves |
//! | --- | --- |
//! | `GET /` | the page |
//! | `GET /events` | the stream: `retry: 3000`, then one `tick` event a second |
//! | `GET /stats` | `{"streams": <open streams>, "last_id": <the latest tick's id>}` |

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use askama::Template;
use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response, StatusCode};
use realtime_kit::fanout::{Fanout, Outbox};
use realtime_kit::sse::{self, Event, Membership, SseResponse};
use realtime_kit::{Gauge, RequestBody, ResponseBody, ServerOptions, Shutdown, respond};
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
    /// The server's limits and the host names it answers (`--allow-host`).
    pub server: ServerOptions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_secs(1),
            retry: Duration::from_secs(3),
            keep_alive: sse::DEFAULT_KEEP_ALIVE,
            server: ServerOptions::default(),
        }
    }
}

// ANCHOR: run
/// Serves the clock on `listener` until `shutdown_signal` completes, then ends every stream and
/// returns.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let clock = Clock::start(config.tick_interval, config.keep_alive, &shutdown);
    let options = config.server.clone();
    let app = Arc::new(App {
        clock,
        config,
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve_with(
        options,
        listener,
        shutdown_signal,
        shutdown,
        move |request| {
            let app = app.clone();
            async move { app.handle(&request) }
        },
    )
    .await;
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
    fn handle(&self, request: &Request<RequestBody>) -> Response<ResponseBody> {
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
    fn events(&self, request: &Request<RequestBody>) -> Response<ResponseBody> {
        // A browser that reconnects sends the id of the last tick it saw. It only chooses what
        // this client is sent (see `Clock::subscribe`); it changes nothing another client gets.
        let seen = match sse::last_event_id(request) {
            Ok(seen) => seen,
            Err(error) => return respond::error(StatusCode::BAD_REQUEST, error),
        };
        let (clock, joining) = (self.clock.clone(), self.clock.clone());
        SseResponse::shared(
            move || clock.subscribe(seen),
            move |outbox| joining.join(seen, outbox),
            &self.shutdown,
        )
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
    /// The tick's time in milliseconds since the Unix epoch, for scripts; also the event `id`.
    unix_ms: u64,
    /// The same instant in RFC 3339, UTC, for people.
    time: String,
}

/// The latest tick, already encoded: each client's stream clones the `Bytes`, not the work.
#[derive(Debug, Clone)]
struct Tick {
    /// The tick's id: its time in Unix milliseconds.
    id: u64,
    encoded: Bytes,
}

impl Tick {
    /// The tick of `unix_ms`, which is also its id.
    fn new(unix_ms: u64) -> Self {
        let time = UNIX_EPOCH + Duration::from_millis(unix_ms);
        let data = TickData {
            unix_ms,
            time: humantime::format_rfc3339_millis(time).to_string(),
        };
        let encoded = Event::new()
            .event("tick")
            .and_then(|event| event.id(unix_ms.to_string()))
            .expect("a fixed name and a number are single lines")
            .data(serde_json::to_string(&data).expect("TickData always serialises"))
            .encode();
        Self {
            id: unix_ms,
            encoded,
        }
    }
}

// ANCHOR: tick_id
/// The id of the tick made at `now`, after the tick `previous`: the time in Unix milliseconds,
/// or one more than `previous` if the clock has not moved past it (two ticks in one
/// millisecond, or a wall clock set back). So ids only ever increase within a run, and a run
/// started later starts above every id an earlier one sent, with nothing to remember and
/// nothing taken from a client.
fn tick_id(now: SystemTime, previous: u64) -> u64 {
    let unix_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    unix_ms.max(previous + 1)
}
// ANCHOR_END: tick_id
// ANCHOR_END: tick

// ANCHOR: clock
// ANCHOR: clock_state
/// The one ticker of the server, and what its clients subscribe to.
#[derive(Clone)]
struct Clock {
    /// Holds only the latest tick. A watch channel is the right shape for a clock: a client
    /// that falls behind skips straight to the newest tick (it would not want old times), and
    /// memory stays one tick however slow the clients are.
    latest: watch::Receiver<Option<Tick>>,
    /// Open streams, for `/stats`: each stream holds one count until it is dropped.
    streams: Gauge,
    /// The streams of the kit's direct path, written by one task per core.
    fanout: Arc<Fanout>,
}

/// How many ticks a stream of the direct path may fall behind before it is closed (the browser
/// reconnects to the current tick). On hyper's path a slow stream skips to the newest tick.
const TICKS_BEHIND: usize = 8;
// ANCHOR_END: clock_state

impl Clock {
    // ANCHOR: start
    /// Starts the ticker task; it stops when the server shuts down.
    fn start(interval: Duration, keep_alive: Duration, shutdown: &Shutdown) -> Self {
        let (publish, latest) = watch::channel(None);
        let fanout = Arc::new(sse::fanout(TICKS_BEHIND, keep_alive, shutdown));
        shutdown.spawn(tick(interval, publish, fanout.clone(), shutdown.clone()));
        Self {
            latest,
            streams: Gauge::new(),
            fanout,
        }
    }
    // ANCHOR_END: start

    // ANCHOR: subscribe
    /// A client's stream of encoded ticks: the current tick at once, then every new one, all
    /// with ids above `seen` (the `Last-Event-ID` of a reconnecting client).
    ///
    /// `seen` is the client's claim, so it only filters what this client is sent. An id above
    /// the latest tick's was never sent by this server (a clock set back, or made up): it is
    /// ignored, and the client starts at the current tick like a new one, rather than wait
    /// for a time that may be years away.
    fn subscribe(&self, seen: Option<u64>) -> impl Stream<Item = Bytes> + Send + use<> {
        let seen = self.believed(seen);
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

    /// The id of a reconnecting client's last tick, if this server could have sent it; 0
    /// otherwise (see [`Clock::subscribe`]).
    fn believed(&self, seen: Option<u64>) -> u64 {
        let latest_id = self.latest.borrow().as_ref().map_or(0, |tick| tick.id);
        seen.filter(|&seen| seen <= latest_id).unwrap_or(0)
    }

    // ANCHOR: join
    /// A stream of the kit's direct path: the current tick (if the client has not seen it) is
    /// pushed to its socket and it joins the fan-out, while the ticker cannot publish (it
    /// publishes under the watch channel's lock, which `borrow` holds). So the client gets the
    /// next tick, never one twice.
    fn join(&self, seen: Option<u64>, outbox: &Arc<Outbox>) -> Membership {
        let counted = self.streams.enter();
        let seen = self.believed(seen);
        let latest = self.latest.borrow();
        if let Some(tick) = latest.as_ref().filter(|tick| tick.id > seen) {
            // A socket that failed already is noticed by the stream's task, which then ends.
            let _ = outbox.push(sse::chunked(&tick.encoded));
        }
        let member = self.fanout.join(outbox.clone());
        drop(latest);
        Box::new((member, counted))
    }
    // ANCHOR_END: join

    fn stats(&self) -> ClockStats {
        ClockStats {
            streams: self.streams.get(),
            last_id: self.latest.borrow().as_ref().map_or(0, |tick| tick.id),
        }
    }
}

// ANCHOR: ticker
/// The ticker: makes one tick per interval and publishes it to every subscriber.
async fn tick(
    interval: Duration,
    publish: watch::Sender<Option<Tick>>,
    fanout: Arc<Fanout>,
    shutdown: Shutdown,
) {
    // Tick on whole seconds of the wall clock, so the page's seconds change when the real
    // ones do. `interval_at` schedules by deadline, so ticks do not drift.
    let period_ms = interval.as_millis().max(1) as u64;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let first = tokio::time::Instant::now() + Duration::from_millis(period_ms - now_ms % period_ms);
    let mut ticker = tokio::time::interval_at(first, interval);
    // After a stall (a suspended laptop), tick once and go on; a burst of stale ticks helps no one.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut previous = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.requested() => return,
        }
        previous = tick_id(SystemTime::now(), previous);
        let tick = Tick::new(previous);
        // `send_modify` stores the tick even when no client is connected. The direct path's
        // streams get it from the fan-out, sent under the same lock, so a stream that joins
        // has it either from the channel or from the fan-out.
        publish.send_modify(|latest| {
            fanout.send(sse::chunked(&tick.encoded));
            *latest = Some(tick);
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are the time in milliseconds, and never repeat or go back, even if the clock does.
    #[test]
    fn tick_ids_follow_the_clock_and_only_increase() {
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(tick_id(at(1_795_288_756_001), 0), 1_795_288_756_001);
        assert_eq!(
            tick_id(at(1_795_288_756_001), 1_795_288_756_001),
            1_795_288_756_002
        );
        assert_eq!(tick_id(at(5), 1_795_288_756_001), 1_795_288_756_002);
    }
}
