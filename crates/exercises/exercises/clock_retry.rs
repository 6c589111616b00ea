//! Exercise `clock_retry` (chapter: Clock ticker): a first small change.
//!
//! Goal: a clock whose stream starts with `retry: <ms>` when it is configured with a retry delay,
//! so browsers wait that long before reconnecting, and sends no `retry:` line otherwise (the
//! browser keeps its own default, about 3 s).
//!
//! Check with `cargo run -p exercises -- check clock_retry`; stuck? `-- hint clock_retry`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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
    /// The `retry:` to send first, or `None` to leave the browser's default alone.
    pub retry: Option<Duration>,
}

/// Serves `GET /events` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let (publish, latest) = watch::channel(None);
    shutdown.spawn(ticker(config.tick_interval, publish, shutdown.clone()));
    let app = Arc::new(App {
        config,
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
    /// What the clock was started with.
    // Unread until the TODO in `events` is done; the allow goes away with the solution.
    #[allow(dead_code)]
    config: Config,
    /// The latest encoded tick; every stream forwards it.
    latest: watch::Receiver<Option<Bytes>>,
    /// Ends every stream when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/events") => self.events(),
            (_, path) => respond::not_found(path),
        }
    }

    fn events(&self) -> Response<ResponseBody> {
        let response = SseResponse::new(ticks(self.latest.clone()), &self.shutdown);
        // TODO: when `self.config.retry` holds a delay, make the stream start with
        // `retry: <milliseconds>`. See what `SseResponse` offers (realtime-kit/src/sse.rs).
        response.into_response()
    }
}

/// The one ticker: encodes each tick once and publishes it to every stream.
async fn ticker(interval: Duration, publish: watch::Sender<Option<Bytes>>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(interval);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {
                seq += 1;
                let tick = Event::new()
                    .event("tick")
                    .and_then(|event| event.id(seq.to_string()))
                    .expect("a fixed name and a number are single lines")
                    .data(format!("{{\"seq\":{seq}}}"));
                publish.send_replace(Some(tick.encode()));
            }
            () = shutdown.requested() => return,
        }
    }
}

/// One client's stream: the latest tick at once, then each new one. Ends when the ticker stops.
fn ticks(mut latest: watch::Receiver<Option<Bytes>>) -> impl Stream<Item = Bytes> + Send {
    latest.mark_changed();
    futures_util::stream::unfold(latest, |mut latest| async move {
        loop {
            latest.changed().await.ok()?;
            let tick = latest.borrow_and_update().clone();
            if let Some(tick) = tick {
                return Some((tick, latest));
            }
        }
    })
}
