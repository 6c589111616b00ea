//! Exercise `echo_stats` (chapter: WebSocket echo and broadcast): count what happens.
//!
//! Goal: `GET /stats` answers `{"open": <sockets open now>, "echoed": <messages echoed so far>}`,
//! so an operator sees the load at a glance. `open` must go down when a client leaves, however it
//! leaves: a Close, a dropped connection, a broken frame, a server shutdown.
//!
//! Check with `cargo run -p exercises -- check echo_stats`; stuck? `-- hint echo_stats`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use realtime_kit::ws::{self, Limits, OriginPolicy, WebSocket};
use realtime_kit::{Gauge, RequestBody, ResponseBody, Shutdown, respond};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Serves `GET /echo` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let app = Arc::new(App {
        counters: Arc::new(Counters::default()),
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve(listener, shutdown_signal, shutdown, move |request| {
        let app = app.clone();
        async move { app.handle(request) }
    })
    .await;
}

/// What `/stats` reports; every session holds a clone of the `Arc`.
#[derive(Default)]
struct Counters {
    /// Sockets open now: each session holds one count, given back when it is dropped.
    open: Gauge,
    /// Messages echoed since the server started.
    echoed: AtomicU64,
}

struct App {
    /// Shared with every session.
    counters: Arc<Counters>,
    /// Tracks every session, and tells each to close (1001) when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/stats") => respond::json(
                StatusCode::OK,
                &serde_json::json!({
                    "open": self.counters.open.get(),
                    "echoed": self.counters.echoed.load(Ordering::Relaxed),
                }),
            ),
            (&Method::GET, "/echo") => {
                let shutdown = self.shutdown.clone();
                let counters = self.counters.clone();
                // 64 KiB per message at most: a bigger one is closed with 1009 by the kit.
                let limits = Limits::with_max_message_size(64 * 1024);
                let origins = OriginPolicy::same_origin_only();
                ws::upgrade(request, &origins, limits, &self.shutdown, move |socket| {
                    echo(socket, counters, shutdown)
                })
            }
            (_, path) => respond::not_found(path),
        }
    }
}

/// One client: each text message straight back, until either side closes.
async fn echo(
    mut socket: WebSocket,
    // Unread until the TODO below is done.
    #[allow(unused_variables)] counters: Arc<Counters>,
    shutdown: Shutdown,
) {
    // TODO: count this socket in `counters.open` for exactly as long as the session lasts,
    // whichever way it ends (look at what `Gauge` gives you), and count every echoed message.
    loop {
        tokio::select! {
            received = socket.next() => match received {
                Some(Ok(Message::Text(text))) => {
                    if socket.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    ws::close(&mut socket, CloseCode::Unsupported, "text only, please").await;
                    return;
                }
                // tungstenite answers Pings and Closes by itself; after a Close, `next` ends.
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    ws::close_after_error(&mut socket, &error).await;
                    return;
                }
                None => return,
            },
            () = shutdown.requested() => {
                ws::close(&mut socket, CloseCode::Away, "the server is shutting down").await;
                return;
            }
        }
    }
}
