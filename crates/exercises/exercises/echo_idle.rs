//! Exercise `echo_idle` (chapter: WebSocket echo and broadcast): find silent clients.
//!
//! Goal: a client that vanished without closing (laptop lid shut, phone out of coverage) holds a
//! socket and a task until a write fails, which can take many minutes. The server pings every
//! client every `ping_interval`; a live client answers with a Pong (browsers do so by
//! themselves). A client from which no frame at all has come for `idle_timeout` is closed with
//! 1008 (policy violation). A client that answers stays connected however long it is quiet.
//!
//! Check with `cargo run -p exercises -- check echo_idle`; stuck? `-- hint echo_idle`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response};
use realtime_kit::ws::{self, Limits, OriginPolicy, WebSocket};
use realtime_kit::{RequestBody, ResponseBody, Shutdown, respond};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How the server watches its clients.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How often each client is pinged (30 s is usual; tests use milliseconds).
    pub ping_interval: Duration,
    /// How long a client may send nothing at all, not even a Pong, before it is closed.
    pub idle_timeout: Duration,
}

/// Serves `GET /echo` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let app = Arc::new(App {
        config,
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve(listener, shutdown_signal, shutdown, move |request| {
        let app = app.clone();
        async move { app.handle(request) }
    })
    .await;
}

struct App {
    /// The heartbeat's timings, for every session.
    config: Config,
    /// Tracks every session, and tells each to close (1001) when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/echo") => {
                let shutdown = self.shutdown.clone();
                let config = self.config;
                // 64 KiB per message at most: a bigger one is closed with 1009 by the kit.
                let limits = Limits::with_max_message_size(64 * 1024);
                let origins = OriginPolicy::same_origin_only();
                ws::upgrade(request, &origins, limits, &self.shutdown, move |socket| {
                    echo(socket, config, shutdown)
                })
            }
            (_, path) => respond::not_found(path),
        }
    }
}

/// One client: each message straight back, until either side closes or it goes silent.
async fn echo(
    mut socket: WebSocket,
    // Unread until the TODO below is done.
    #[allow(unused_variables)] config: Config,
    shutdown: Shutdown,
) {
    // TODO: ping the client every `config.ping_interval`, and close it with 1008 once nothing
    // has come from it for `config.idle_timeout`. realtime_kit::ws has a helper for the timing.
    loop {
        tokio::select! {
            received = socket.next() => {
                match received {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        if socket.send(message).await.is_err() {
                            return;
                        }
                    }
                    // tungstenite answers Pings and Closes by itself; after a Close, `next` ends.
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        ws::close_after_error(&mut socket, &error).await;
                        return;
                    }
                    None => return,
                }
            }
            () = shutdown.requested() => {
                ws::close(&mut socket, CloseCode::Away, "the server is shutting down").await;
                return;
            }
        }
    }
}
