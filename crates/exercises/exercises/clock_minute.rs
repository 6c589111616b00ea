//! Exercise `clock_minute` (chapter: Clock ticker): a new named event.
//!
//! Goal: besides a `tick` event on every tick, the clock sends a named `minute` event with data
//! `{"minute":<n>}` right after every `ticks_per_minute`-th tick (60 in real life; tests use 3).
//! A page listens to it with `source.addEventListener("minute", ...)`; `onmessage` never sees it.
//!
//! Check with `cargo run -p exercises -- check clock_minute`; stuck? `-- hint clock_minute`.

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
async fn ticker(
    // `ticks_per_minute` is unread until the TODO below is done.
    #[allow(unused_variables)] config: Config,
    publish: watch::Sender<Option<Bytes>>,
    shutdown: Shutdown,
) {
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
                // TODO: after every `config.ticks_per_minute`-th tick, also send a `minute` event
                // whose data is `{"minute":<n>}` (n = 1, 2, ...). Careful: the watch channel keeps
                // only its latest value, so think about what a slow stream would miss.
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
