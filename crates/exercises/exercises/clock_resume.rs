//! Exercise `clock_resume` (chapter: Clock ticker): resume from `Last-Event-ID`.
//!
//! Goal: a browser that reconnects sends `Last-Event-ID: <id of the last tick it saw>`, and must
//! then get only ticks it has not seen. A tick's id is its time in Unix milliseconds, so ids go
//! on increasing across a server restart by themselves. The id is the client's claim, though: it
//! may only choose what THIS client is sent, never change what others get. So:
//! - a malformed `Last-Event-ID` is answered `400` with a JSON error;
//! - an id at or below the latest tick's gets that client only ticks with higher ids;
//! - an id above the latest tick's (a server clock set back, or made up) is ignored: that
//!   client starts at the current tick, like a new one.
//!
//! Check with `cargo run -p exercises -- check clock_resume`; stuck? `-- hint clock_resume`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response};
use realtime_kit::sse::{Event, SseResponse};
use realtime_kit::{ResponseBody, Shutdown, respond};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the clock behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between ticks (tests use a few milliseconds).
    pub tick_interval: Duration,
}

/// Serves `GET /events` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let (publish, latest) = watch::channel(None);
    shutdown.spawn(ticker(config.tick_interval, publish, shutdown.clone()));
    let app = Arc::new(App {
        latest,
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve(listener, shutdown_signal, shutdown, move |request| {
        let app = app.clone();
        async move { app.handle(&request) }
    })
    .await;
}

struct App {
    /// The latest tick, with its id so a stream can skip ticks its client has seen.
    latest: watch::Receiver<Option<(u64, Bytes)>>,
    /// Ends every stream when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/events") => self.events(request),
            (_, path) => respond::not_found(path),
        }
    }

    fn events<B>(
        &self,
        // Unread until the TODO below is done.
        #[allow(unused_variables)] request: &Request<B>,
    ) -> Response<ResponseBody> {
        // TODO: read the client's `Last-Event-ID` (answer 400 with a JSON error when it is not a
        // valid id), and pass it on as `seen` when it is an id this server can have sent (not
        // above the latest tick's). Today every client is treated as new.
        let seen = 0;
        SseResponse::new(ticks(self.latest.clone(), seen), &self.shutdown).into_response()
    }
}

/// The one ticker: encodes each tick once and publishes it to every stream. A tick's id is its
/// time in Unix milliseconds (one more than the last id if the clock has not moved past it), so
/// ids keep increasing across a restart without the server remembering anything.
async fn ticker(
    interval: Duration,
    publish: watch::Sender<Option<(u64, Bytes)>>,
    shutdown: Shutdown,
) {
    let mut every = tokio::time::interval(interval);
    let mut previous = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {
                let unix_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_millis() as u64);
                previous = unix_ms.max(previous + 1);
                let tick = Event::new()
                    .event("tick")
                    .and_then(|event| event.id(previous.to_string()))
                    .expect("a fixed name and a number are single lines")
                    .data(format!("{{\"unix_ms\":{previous}}}"));
                publish.send_replace(Some((previous, tick.encode())));
            }
            () = shutdown.requested() => return,
        }
    }
}

/// One client's stream: the latest tick at once, then each new one, all with ids above `seen`.
/// Ends when the ticker stops.
fn ticks(
    mut latest: watch::Receiver<Option<(u64, Bytes)>>,
    seen: u64,
) -> impl Stream<Item = Bytes> + Send {
    latest.mark_changed();
    futures_util::stream::unfold(latest, move |mut latest| async move {
        loop {
            latest.changed().await.ok()?;
            let tick = latest.borrow_and_update().clone();
            if let Some((_, tick)) = tick.filter(|(id, _)| *id > seen) {
                return Some((tick, latest));
            }
        }
    })
}
