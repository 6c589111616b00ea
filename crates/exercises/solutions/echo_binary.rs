//! Exercise `echo_binary` (chapter: WebSocket echo and broadcast), reference solution.
//!
//! Goal: this echo server speaks text only. A client that sends a binary message is told so with
//! the close code RFC 6455 section 7.4.1 reserves for it, 1003 "unsupported data", instead of
//! getting its bytes back. Text is still echoed.
//!
//! Check with `cargo run -p exercises -- check echo_binary`.

use std::future::Future;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response};
use realtime_kit::ws::{self, Limits, OriginPolicy, WebSocket};
use realtime_kit::{RequestBody, ResponseBody, Shutdown, respond};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Serves `GET /echo` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let app = Arc::new(App {
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve(listener, shutdown_signal, shutdown, move |request| {
        let app = app.clone();
        async move { app.handle(request) }
    })
    .await;
}

struct App {
    /// Tracks every session, and tells each to close (1001) when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/echo") => {
                let shutdown = self.shutdown.clone();
                // 64 KiB per message at most: a bigger one is closed with 1009 by the kit.
                let limits = Limits::with_max_message_size(64 * 1024);
                let origins = OriginPolicy::same_origin_only();
                ws::upgrade(request, &origins, limits, &self.shutdown, move |socket| {
                    echo(socket, shutdown)
                })
            }
            (_, path) => respond::not_found(path),
        }
    }
}

/// One client: each text message straight back, until either side closes.
async fn echo(mut socket: WebSocket, shutdown: Shutdown) {
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
