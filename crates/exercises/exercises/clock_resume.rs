//! Exercise `clock_resume` (chapter: Clock ticker): resume from `Last-Event-ID`.
//!
//! Goal: a browser that reconnects sends `Last-Event-ID: <id of the last tick it saw>`. After a
//! server restart the counter starts again at 1, so the clock must move its counter past that id
//! and send that client only ticks with higher ids: the sequence goes on, never backwards. A
//! malformed `Last-Event-ID` is answered `400` with a JSON error.
//!
//! Check with `cargo run -p exercises -- check clock_resume`; stuck? `-- hint clock_resume`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response};
use realtime_kit::sse::{Event, SseResponse};
use realtime_kit::{Body, Shutdown, respond};
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
    let next_seq = Arc::new(AtomicU64::new(1));
    shutdown.spawn(ticker(
        config.tick_interval,
        next_seq.clone(),
        publish,
        shutdown.clone(),
    ));
    let app = Arc::new(App {
        next_seq,
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
    /// The id the next tick will carry; only ever increases.
    // Unread until the TODO in `events` is done.
    #[allow(dead_code)]
    next_seq: Arc<AtomicU64>,
    /// The latest tick, with its id so a stream can skip ticks its client has seen.
    latest: watch::Receiver<Option<(u64, Bytes)>>,
    /// Ends every stream when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle<B>(&self, request: &Request<B>) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/events") => self.events(request),
            (_, path) => respond::not_found(path),
        }
    }

    fn events<B>(
        &self,
        // Unread until the TODO below is done.
        #[allow(unused_variables)] request: &Request<B>,
    ) -> Response<Body> {
        // TODO: read the client's `Last-Event-ID` (answer 400 with a JSON error when it is not a
        // number), move `self.next_seq` past it, and pass it on as `seen`. Today every client is
        // treated as new.
        let seen = 0;
        SseResponse::new(ticks(self.latest.clone(), seen), &self.shutdown).into_response()
    }
}

/// The one ticker: encodes each tick once and publishes it to every stream.
async fn ticker(
    interval: Duration,
    next_seq: Arc<AtomicU64>,
    publish: watch::Sender<Option<(u64, Bytes)>>,
    shutdown: Shutdown,
) {
    let mut every = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let tick = Event::new()
                    .event("tick")
                    .and_then(|event| event.id(seq.to_string()))
                    .expect("a fixed name and a number are single lines")
                    .data(format!("{{\"seq\":{seq}}}"));
                publish.send_replace(Some((seq, tick.encode())));
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
            if let Some((_, tick)) = tick.filter(|(seq, _)| *seq > seen) {
                return Some((tick, latest));
            }
        }
    })
}
