//! Exercise `clock_minute` (chapter: Clock ticker), reference solution.
//!
//! Goal: besides a `tick` event on every tick, the clock sends a named `minute` event with data
//! `{"minute":<n>}` right after every `ticks_per_minute`-th tick (60 in real life; tests use 3).
//! A page listens to it with `source.addEventListener("minute", ...)`; `onmessage` never sees it.
//!
//! Check with `cargo run -p exercises -- check clock_minute`.

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
    /// How many ticks make a minute: 60 with one-second ticks.
    pub ticks_per_minute: u64,
}

/// Serves `GET /events` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let (publish, latest) = watch::channel(None);
    shutdown.spawn(ticker(config, publish, shutdown.clone()));
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
        SseResponse::new(ticks(self.latest.clone()), &self.shutdown).into_response()
    }
}

/// The one ticker: encodes each tick once and publishes it to every stream.
async fn ticker(config: Config, publish: watch::Sender<Option<Bytes>>, shutdown: Shutdown) {
    let mut every = tokio::time::interval(config.tick_interval);
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
                let mut chunk = tick.encode().to_vec();
                // The watch channel keeps only the latest value: a `minute` published on its own
                // could be overwritten by the next tick before a slow stream reads it. Published
                // in the same chunk as its tick, every stream gets both or neither.
                // `is_multiple_of(0)` is false for every tick (seq starts at 1): no minutes then.
                if seq.is_multiple_of(config.ticks_per_minute) {
                    let minute = Event::new()
                        .event("minute")
                        .expect("a fixed name is one line")
                        .data(format!("{{\"minute\":{}}}", seq / config.ticks_per_minute));
                    chunk.extend_from_slice(&minute.encode());
                }
                publish.send_replace(Some(Bytes::from(chunk)));
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
