//! Exercise `ticker_unsubscribe` (chapter: Stock ticker), reference solution.
//!
//! Goal: the ticker's WebSocket protocol lets a client subscribe to symbols; add the way back.
//! `{"type":"unsubscribe","symbols":["ACME"]}` stops that client's ACME quotes and is confirmed
//! with `{"type":"unsubscribed","symbols":["ACME"]}`: no ACME quote follows the confirmation.
//!
//! Check with `cargo run -p exercises -- check ticker_unsubscribe`.
//!
//! The protocol, one JSON object per text message:
//!
//! ```text
//! client: {"type":"subscribe","symbols":["ACME","GLOBEX"]}
//! server: {"type":"subscribed","symbols":["ACME","GLOBEX"]}
//! server: {"type":"quote","symbol":"ACME","price_cents":10012}
//! server: {"type":"error","message":"..."}     a bad command; the socket stays open
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response};
use realtime_kit::ws::{self, Limits, OriginPolicy, WebSocket};
use realtime_kit::{RequestBody, ResponseBody, Shutdown, respond};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The symbols the simulated market trades.
pub const SYMBOLS: [&str; 3] = ["ACME", "GLOBEX", "INITECH"];
/// Quotes a client may fall behind before it is closed (1008): the feed never waits for it.
const QUOTE_QUEUE: usize = 256;
/// Commands are tiny; anything bigger is closed with 1009 by the kit.
const MAX_COMMAND: usize = 4 * 1024;

/// How the market behaves.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Time between quotes (each quote is one symbol's new price; tests use milliseconds).
    pub quote_interval: Duration,
}

/// Serves `GET /quotes/ws` on `listener` until `shutdown_signal` completes.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let quotes = broadcast::channel(QUOTE_QUEUE).0;
    shutdown.spawn(market(
        config.quote_interval,
        quotes.clone(),
        shutdown.clone(),
    ));
    let app = Arc::new(App {
        quotes,
        shutdown: shutdown.clone(),
    });
    realtime_kit::serve(listener, shutdown_signal, shutdown, move |request| {
        let app = app.clone();
        async move { app.handle(request) }
    })
    .await;
}

/// One price, as sent: the `quote` message.
#[derive(Debug, Clone, Serialize)]
struct Quote {
    symbol: &'static str,
    /// Whole cents: a price in floating point cannot say 0.10 exactly.
    price_cents: i64,
}

/// What the server sends, tagged by `type`.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    Subscribed { symbols: &'a [String] },
    Unsubscribed { symbols: &'a [String] },
    Quote(&'a Quote),
    Error { message: String },
}

/// What a client may send, tagged by `type`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Command {
    Subscribe { symbols: Vec<String> },
    Unsubscribe { symbols: Vec<String> },
}

struct App {
    /// Every quote, to every session; each session filters by its subscriptions.
    quotes: broadcast::Sender<Arc<Quote>>,
    /// Tracks every session, and tells each to close (1001) when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/quotes/ws") => {
                let quotes = self.quotes.subscribe();
                let shutdown = self.shutdown.clone();
                let limits = Limits::with_max_message_size(MAX_COMMAND);
                let origins = OriginPolicy::same_origin_only();
                ws::upgrade(request, &origins, limits, &self.shutdown, move |socket| {
                    session(socket, quotes, shutdown)
                })
            }
            (_, path) => respond::not_found(path),
        }
    }
}

/// The simulated market: one symbol's price moves every `interval`, in a fixed pattern.
async fn market(interval: Duration, quotes: broadcast::Sender<Arc<Quote>>, shutdown: Shutdown) {
    let mut prices = [10_000_i64; SYMBOLS.len()];
    let mut every = tokio::time::interval(interval);
    for step in 0_i64.. {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.requested() => return,
        }
        let index = step as usize % SYMBOLS.len();
        // A deterministic walk of up to ±0.50, never below one cent.
        prices[index] = (prices[index] + (step * 37) % 101 - 50).max(1);
        let quote = Quote {
            symbol: SYMBOLS[index],
            price_cents: prices[index],
        };
        // No receiver is not an error: nobody is connected right now.
        let _ = quotes.send(Arc::new(quote));
    }
}

/// One client: applies its commands and forwards the quotes it subscribed to.
async fn session(
    mut socket: WebSocket,
    mut quotes: broadcast::Receiver<Arc<Quote>>,
    shutdown: Shutdown,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    loop {
        let reply = tokio::select! {
            received = socket.next() => match received {
                Some(Ok(Message::Text(text))) => apply(&text, &mut subscribed),
                Some(Ok(Message::Binary(_))) => {
                    ws::close(&mut socket, CloseCode::Unsupported, "commands are JSON text").await;
                    return;
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    ws::close_after_error(&mut socket, &error).await;
                    return;
                }
                None => return,
            },
            quote = quotes.recv() => match quote {
                Ok(quote) if subscribed.contains(quote.symbol) => {
                    to_text(&ServerMessage::Quote(&quote))
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let reason = "too slow: fell behind the feed";
                    ws::close(&mut socket, CloseCode::Policy, reason).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = shutdown.requested() => {
                ws::close(&mut socket, CloseCode::Away, "the server is shutting down").await;
                return;
            }
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

/// Applies one command to the client's subscriptions and returns the answer to send.
fn apply(text: &str, subscribed: &mut HashSet<String>) -> Message {
    let command: Command = match serde_json::from_str(text) {
        Ok(command) => command,
        Err(error) => {
            let message = format!("invalid command: {error}");
            return to_text(&ServerMessage::Error { message });
        }
    };
    match command {
        Command::Subscribe { symbols } => {
            if let Some(unknown) = symbols.iter().find(|s| !SYMBOLS.contains(&s.as_str())) {
                let message = format!("unknown symbol {unknown:?}; known: {SYMBOLS:?}");
                return to_text(&ServerMessage::Error { message });
            }
            subscribed.extend(symbols.iter().cloned());
            to_text(&ServerMessage::Subscribed { symbols: &symbols })
        }
        // Quotes are only forwarded after checking `subscribed`, and this runs in the same task
        // before the confirmation is sent: no quote of these symbols can follow it.
        Command::Unsubscribe { symbols } => {
            for symbol in &symbols {
                subscribed.remove(symbol);
            }
            to_text(&ServerMessage::Unsubscribed { symbols: &symbols })
        }
    }
}

fn to_text(message: &ServerMessage<'_>) -> Message {
    Message::text(serde_json::to_string(message).expect("server messages always serialise"))
}
