//! stock-ticker: one simulated market feed, pushed over Server-Sent Events and over WebSocket
//! side by side, with conflation for clients that fall behind.
//!
//! Run with
//!
//! ```text
//! cargo run -p stock-ticker
//! ```
//!
//! then open <http://127.0.0.1:3003> to watch the prices move and switch the page between the two
//! transports, or read the raw stream with
//! `curl -N 'http://127.0.0.1:3003/quotes/stream?symbols=ACME,HOOL'`.
//! `cargo run -p stock-ticker -- --seed 7` gives another market; the same seed, the same one.
//!
//! The shape to copy: ONE market task makes each quote once, encodes it once per transport, and
//! puts it on a board that holds the latest quote of every symbol. Each client remembers, per
//! symbol, the sequence number of the last quote it was sent, and is sent whatever on the board
//! is newer. A client that reads slowly therefore skips straight to the latest prices
//! (conflation) and costs the server one number per symbol, however far behind it is.
//!
//! | route | what it serves |
//! | --- | --- |
//! | `GET /` | the page: live table, a chart per symbol, SSE/WebSocket switch |
//! | `GET /quotes/stream?symbols=A,B` | SSE: `snapshot`, then one `quote` event per update (all symbols when `symbols` is left out) |
//! | `GET /quotes/ws` | WebSocket: send `{"type":"subscribe","symbols":["A"]}`, get a snapshot, then quotes |
//! | `GET /symbols` | the listed symbols, as JSON |
//! | `GET /stats` | open streams and sockets, the latest sequence number, as JSON |
//!
//! With `--redis URL`, several instances serve one market: one runs it (`--role market`), the
//! others serve what it publishes; see `redis_feed.rs`.

pub mod market;
mod redis_feed;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use http::{Method, Request, Response, StatusCode};
use realtime_kit::backplane::Backplane;
use realtime_kit::sse::{self, Event, SseResponse};
use realtime_kit::ws::{self, Beat, Heartbeat, Limits, OriginPolicy, WebSocket};
use realtime_kit::{Gauge, RequestBody, ResponseBody, ServerOptions, Shutdown, respond};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::market::{Market, Quote, SymbolSpec};

/// The port `cargo run -p stock-ticker` listens on.
pub const DEFAULT_PORT: u16 = 3003;

/// How the market and the server behave; [`Config::default`] is what `main` uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// The listed symbols, in the order the page shows them. Must not be empty.
    pub symbols: Vec<SymbolSpec>,
    /// Decides every price the market will ever show: the same seed, the same quotes.
    pub seed: u64,
    /// Time between two updates; each update moves one symbol. 125 ms is 8 updates a second
    /// across the market, about one a second per symbol with the default eight. Must not be zero.
    pub update_interval: Duration,
    /// Sent as `retry:`: how long a browser waits before reconnecting an event stream.
    pub retry: Duration,
    /// How long an event stream may be silent before a keep-alive comment is written.
    pub keep_alive: Duration,
    /// Which pages may open the WebSocket: this server's own, plus any `--allow-origin`.
    pub origins: OriginPolicy,
    /// Time between Pings to a WebSocket client; they also keep proxies from closing the socket.
    pub ping_interval: Duration,
    /// How long a WebSocket client may send nothing at all (not even a Pong) before it is
    /// closed as gone: a vanished peer shows no other sign until a write fails, minutes later.
    pub idle_timeout: Duration,
    /// How long one message may wait for a client's socket to take it. A slow client is
    /// conflated, not dropped; one that takes nothing at all for this long is dropped.
    pub send_timeout: Duration,
    /// The server's limits and the host names it answers (`--allow-host`).
    pub server: ServerOptions,
    /// Where the quotes come from and go: this process only, or Redis.
    pub backplane: Backplane,
    /// With Redis: whether this instance runs the market or serves it. Ignored without Redis,
    /// where the one process does both.
    pub role: Role,
}

/// The part an instance plays when several share one market through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Runs the market (and serves it). Exactly one instance may: two would publish two
    /// different markets under the same symbols.
    #[default]
    Market,
    /// Serves the market another instance publishes.
    Serve,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            symbols: market::default_symbols(),
            seed: 2026,
            update_interval: Duration::from_millis(125),
            retry: Duration::from_secs(3),
            keep_alive: sse::DEFAULT_KEEP_ALIVE,
            origins: OriginPolicy::same_origin_only(),
            ping_interval: Duration::from_secs(15),
            // Two missed Pongs and some slack for a slow network.
            idle_timeout: Duration::from_secs(35),
            send_timeout: Duration::from_secs(30),
            server: ServerOptions::default(),
            backplane: Backplane::InProcess,
            role: Role::Market,
        }
    }
}

// ANCHOR: run
/// Opens the market and serves it on `listener` until `shutdown_signal` completes; then ends
/// every event stream, closes every WebSocket with 1001 (going away) and returns.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let shutdown = Shutdown::new();
    let feed = Feed::start(&config, &shutdown);
    let options = config.server.clone();
    let app = Arc::new(App {
        feed,
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
            async move { app.handle(request) }
        },
    )
    .await;
}
// ANCHOR_END: run

/// What every request handler shares.
struct App {
    feed: Feed,
    config: Config,
    /// Given to each stream and socket so that it ends when the server shuts down.
    shutdown: Shutdown,
}

impl App {
    // ANCHOR: routes
    fn handle(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let path = request.uri().path();
        match (request.method(), path) {
            (&Method::GET, "/") => respond::html(&TickerPage {
                symbols: self.feed.symbols.iter().map(SymbolInfo::from).collect(),
            }),
            (&Method::GET, "/quotes/stream") => self.quote_stream(&request),
            (&Method::GET, "/quotes/ws") => self.quote_socket(request),
            (&Method::GET, "/symbols") => respond::json(
                StatusCode::OK,
                &self
                    .feed
                    .symbols
                    .iter()
                    .map(SymbolInfo::from)
                    .collect::<Vec<_>>(),
            ),
            (&Method::GET, "/stats") => respond::json(StatusCode::OK, &self.feed.stats()),
            (method, "/" | "/quotes/stream" | "/quotes/ws" | "/symbols" | "/stats") => {
                respond::method_not_allowed(method, &[Method::GET])
            }
            _ => respond::not_found(path),
        }
    }
    // ANCHOR_END: routes

    // ANCHOR: quote_stream
    /// `GET /quotes/stream?symbols=A,B`: one client's event stream. Every connection starts
    /// with a snapshot, so a browser that reconnects is up to date at once; it has no use for
    /// the quotes it missed (they are old prices), so `Last-Event-ID` is not needed here.
    fn quote_stream(&self, request: &Request<RequestBody>) -> Response<ResponseBody> {
        let names = match symbols_in_query(request.uri().query()) {
            Ok(names) => names,
            Err(error) => return respond::error(StatusCode::BAD_REQUEST, error),
        };
        let subscription = match names {
            None => (0..self.feed.symbols.len()).collect(),
            Some(names) => match self.feed.resolve(names.iter().map(String::as_str)) {
                Ok(subscription) => subscription,
                Err(unknown) => return respond::json(StatusCode::BAD_REQUEST, &unknown),
            },
        };
        SseResponse::new(self.feed.sse_stream(&subscription), &self.shutdown)
            .retry(self.config.retry)
            .keep_alive(self.config.keep_alive)
            .into_response()
    }
    // ANCHOR_END: quote_stream

    /// `GET /quotes/ws`: checks `Origin` and the handshake (the kit's [`ws::upgrade`]), then
    /// runs [`socket_session`] on the upgraded connection.
    fn quote_socket(&self, request: Request<RequestBody>) -> Response<ResponseBody> {
        let feed = self.feed.clone();
        let shutdown = self.shutdown.clone();
        let timeouts = Timeouts {
            ping_interval: self.config.ping_interval,
            idle_timeout: self.config.idle_timeout,
            send_timeout: self.config.send_timeout,
        };
        ws::upgrade(
            request,
            &self.config.origins,
            Limits::default(),
            &self.shutdown,
            move |socket| socket_session(socket, feed, timeouts, shutdown),
        )
    }
}

/// The page at `/`; its markup and script are in `templates/ticker.html`.
#[derive(Template)]
#[template(path = "ticker.html")]
struct TickerPage {
    /// The table's rows, in order, before the first quote arrives.
    symbols: Vec<SymbolInfo>,
}

/// One listed symbol, as `GET /symbols` and the page describe it.
#[derive(Debug, Serialize)]
struct SymbolInfo {
    /// The ticker symbol.
    symbol: String,
    /// The company name.
    name: String,
    /// The opening price, in cents.
    open: u64,
}

impl From<&SymbolSpec> for SymbolInfo {
    fn from(spec: &SymbolSpec) -> Self {
        Self {
            symbol: spec.symbol.clone(),
            name: spec.name.clone(),
            open: spec.open_cents,
        }
    }
}

// ANCHOR: wire
/// Every message the WebSocket sends, as JSON with a `type` field. The SSE stream carries the
/// same objects without `type`: there the event name says what an event is.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    /// The current quotes of the symbols just subscribed to: sent before any `quote` of them.
    Snapshot {
        /// One quote per symbol, in the order the symbols are listed.
        quotes: Vec<&'a Quote>,
    },
    /// One update.
    Quote(&'a Quote),
    /// Confirms an `unsubscribe`: no quote of these symbols follows this message.
    Unsubscribed {
        /// The symbols no longer sent.
        symbols: Vec<&'a str>,
    },
    /// A command the server could not follow. The socket stays open.
    Error {
        /// What was wrong, in a sentence.
        error: String,
        /// The symbols that exist, when the error is about symbols.
        #[serde(skip_serializing_if = "Option::is_none")]
        valid_symbols: Option<Vec<&'a str>>,
    },
}

/// A quote as it goes on the wire, encoded for each transport once, when the market makes it.
/// A thousand clients get a thousand clones of these `Bytes` (reference-counted), not a
/// thousand encodings.
#[derive(Debug)]
struct WireQuote {
    quote: Quote,
    /// `event: quote`, `id: <seq>`, `data: <quote as JSON>`.
    sse: Bytes,
    /// `{"type":"quote", ...}` as one WebSocket text message.
    ws: Utf8Bytes,
}

impl WireQuote {
    fn new(quote: Quote) -> Self {
        let sse = Event::new()
            .event("quote")
            .and_then(|event| event.id(quote.seq.to_string()))
            .expect("a fixed name and a number are single lines")
            .data(serde_json::to_string(&quote).expect("a Quote always serialises"))
            .encode();
        let ws = json_text(&ServerMessage::Quote(&quote));
        Self { quote, sse, ws }
    }
}

fn json_text(message: &ServerMessage<'_>) -> Utf8Bytes {
    serde_json::to_string(message)
        .expect("server messages always serialise")
        .into()
}

/// The `snapshot` event that starts every event stream: the subscribed symbols' current quotes.
/// Its id is the latest sequence number on the whole board.
fn snapshot_event(quotes: &[&Arc<WireQuote>], board: &Board) -> Bytes {
    let latest = board.iter().map(|wire| wire.quote.seq).max().unwrap_or(0);
    #[derive(Serialize)]
    struct SnapshotData<'a> {
        quotes: Vec<&'a Quote>,
    }
    let data = SnapshotData {
        quotes: quotes.iter().map(|wire| &wire.quote).collect(),
    };
    Event::new()
        .event("snapshot")
        .and_then(|event| event.id(latest.to_string()))
        .expect("a fixed name and a number are single lines")
        .data(serde_json::to_string(&data).expect("quotes always serialise"))
        .encode()
}
// ANCHOR_END: wire

// ANCHOR: feed
/// The latest quote of every symbol, indexed like [`Config::symbols`]. This is the whole state
/// the clients read: its size is the number of symbols, never the number of updates.
type Board = Vec<Arc<WireQuote>>;

/// The market feed: the board, and what clients need to subscribe to it.
#[derive(Clone)]
struct Feed {
    /// The board, published by the one market task. A watch channel keeps only the newest
    /// version and wakes every receiver when it changes, which is exactly conflation's input:
    /// a client that has not looked for a while sees only the current prices.
    board: watch::Receiver<Board>,
    /// The listed symbols, to resolve the names clients send into board indices.
    symbols: Arc<[SymbolSpec]>,
    /// Open event streams, for `/stats`.
    sse_streams: Gauge,
    /// Open WebSockets, for `/stats`.
    ws_sockets: Gauge,
}

impl Feed {
    /// Opens the market and starts its task; the task stops when the server shuts down.
    fn start(config: &Config, shutdown: &Shutdown) -> Self {
        let market = Market::open(config.symbols.clone(), config.seed);
        let opening = market
            .quotes()
            .into_iter()
            .map(|quote| Arc::new(WireQuote::new(quote)))
            .collect();
        let (publish, board) = watch::channel(opening);
        match (&config.backplane, config.role) {
            // The board is filled from Redis; this instance's own market is only the opening
            // prices (the same seed gives the same ones), shown until the first quotes arrive.
            (Backplane::Redis(redis), Role::Serve) => {
                let symbols = config.symbols.iter().map(|s| s.symbol.clone()).collect();
                shutdown.spawn(redis_feed::follow_market(
                    redis.clone(),
                    symbols,
                    publish,
                    shutdown.clone(),
                ));
            }
            (backplane, _) => {
                if let Backplane::Redis(redis) = backplane {
                    shutdown.spawn(redis_feed::publish_market(
                        redis.clone(),
                        board.clone(),
                        shutdown.clone(),
                    ));
                }
                shutdown.spawn(run_market(
                    market,
                    config.update_interval,
                    publish,
                    shutdown.clone(),
                ));
            }
        }
        Self {
            board,
            symbols: config.symbols.clone().into(),
            sse_streams: Gauge::new(),
            ws_sockets: Gauge::new(),
        }
    }
}
// ANCHOR_END: feed

// ANCHOR: market_task
/// The market task: one update per interval, encoded once, published to every client.
async fn run_market(
    mut market: Market,
    interval: Duration,
    publish: watch::Sender<Board>,
    shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // After a stall, go on at the normal pace; a burst of catch-up updates would only be
    // conflated away again.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.requested() => return,
        }
        let (index, quote) = market.step();
        let wire = Arc::new(WireQuote::new(quote));
        // Replaces one slot; receivers that have not looked yet will see only this quote.
        publish.send_modify(|board| board[index] = wire);
    }
}
// ANCHOR_END: market_task

impl Feed {
    /// The board indices of `names`, without repeats, in the order given; or the error to send
    /// back, naming the first unknown symbol and listing the valid ones.
    fn resolve<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Vec<usize>, UnknownSymbol> {
        let mut indices = Vec::new();
        for name in names {
            let found = self
                .symbols
                .iter()
                .position(|spec| spec.symbol == name.trim());
            match found {
                Some(index) if !indices.contains(&index) => indices.push(index),
                Some(_) => {}
                None => {
                    return Err(UnknownSymbol {
                        // Bounded, whatever the client sent: the name is echoed back.
                        error: format!(
                            "unknown symbol {:?}; the valid symbols are {}",
                            name.chars().take(16).collect::<String>(),
                            self.valid_symbols().join(", ")
                        ),
                        valid_symbols: self.valid_symbols(),
                    });
                }
            }
        }
        if indices.is_empty() {
            return Err(UnknownSymbol {
                error: "name at least one symbol, or leave `symbols` out for all of them"
                    .to_owned(),
                valid_symbols: self.valid_symbols(),
            });
        }
        Ok(indices)
    }

    fn valid_symbols(&self) -> Vec<String> {
        self.symbols
            .iter()
            .map(|spec| spec.symbol.clone())
            .collect()
    }

    fn stats(&self) -> FeedStats {
        FeedStats {
            sse_streams: self.sse_streams.get(),
            ws_sockets: self.ws_sockets.get(),
            symbols: self.symbols.len(),
            last_seq: self
                .board
                .borrow()
                .iter()
                .map(|wire| wire.quote.seq)
                .max()
                .unwrap_or(0),
        }
    }
}

// ANCHOR: cursor
/// What one client has been sent, and the whole of what conflation costs per client: one slot
/// per symbol. Nothing is queued for a client. When it is ready for more, it is given the
/// oldest quote on the board that is newer than what it has; a symbol that moved five times
/// while the client was busy is sent once, at its latest price.
#[derive(Debug)]
struct Cursor {
    /// Per symbol, like the board: `None` when the client is not subscribed, otherwise the
    /// sequence number of the last quote of that symbol sent to it.
    sent: Vec<Option<u64>>,
}

impl Cursor {
    /// A client subscribed to nothing yet.
    fn new(symbols: usize) -> Self {
        Self {
            sent: vec![None; symbols],
        }
    }

    /// Subscribes to the symbols at `indices` and returns their current quotes: the snapshot to
    /// send now. Later quotes of them come from [`next`](Self::next).
    fn subscribe<'b>(&mut self, indices: &[usize], board: &'b Board) -> Vec<&'b Arc<WireQuote>> {
        indices
            .iter()
            .map(|&index| {
                self.sent[index] = Some(board[index].quote.seq);
                &board[index]
            })
            .collect()
    }

    /// Stops sending the symbols at `indices`.
    fn unsubscribe(&mut self, indices: &[usize]) {
        for &index in indices {
            self.sent[index] = None;
        }
    }

    /// The quote to send next, marked as sent: of the subscribed symbols whose quote on the
    /// board is newer than the one the client has, the oldest. Taking the oldest keeps quotes
    /// in market order for a client that keeps up; `None` means the client is up to date.
    fn next<'b>(&mut self, board: &'b Board) -> Option<&'b WireQuote> {
        let (index, wire) = self
            .sent
            .iter()
            .zip(board)
            .enumerate()
            .filter(|(_, (sent, wire))| sent.is_some_and(|seq| wire.quote.seq > seq))
            .map(|(index, (_, wire))| (index, wire))
            .min_by_key(|(_, wire)| wire.quote.seq)?;
        self.sent[index] = Some(wire.quote.seq);
        Some(wire)
    }
}
// ANCHOR_END: cursor

impl Feed {
    // ANCHOR: sse_stream
    /// One client's event stream: the snapshot, then each quote as the client's connection is
    /// ready for it. hyper polls the stream only when it can write, so a slow reader is simply
    /// polled less often, and each poll gives it the latest prices.
    fn sse_stream(&self, subscription: &[usize]) -> impl Stream<Item = Bytes> + Send + 'static {
        let mut board = self.board.clone();
        let mut cursor = Cursor::new(self.symbols.len());
        let snapshot = {
            let current = board.borrow_and_update();
            snapshot_event(&cursor.subscribe(subscription, &current), &current)
        };
        let counted = self.sse_streams.enter();
        let quotes = futures_util::stream::unfold(
            (board, cursor, counted),
            |(mut board, mut cursor, counted)| async move {
                loop {
                    let next = cursor
                        .next(&board.borrow_and_update())
                        .map(|wire| wire.sse.clone());
                    if let Some(event) = next {
                        return Some((event, (board, cursor, counted)));
                    }
                    // Up to date: wait for the board to change. An error means the market task
                    // has stopped, so the server is shutting down.
                    board.changed().await.ok()?;
                }
            },
        );
        futures_util::stream::once(std::future::ready(snapshot)).chain(quotes)
    }
    // ANCHOR_END: sse_stream
}

// ANCHOR: socket_session
/// A WebSocket session's timeouts, from [`Config`].
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    ping_interval: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
}

/// What a WebSocket session does next.
enum Step {
    /// A frame (or the end of the stream) from the client.
    Incoming(Option<Result<Message, tungstenite::Error>>),
    /// The heartbeat is due.
    Beat(Beat),
    /// A quote to send.
    Quote(Utf8Bytes),
    /// The board changed: look for quotes again.
    BoardChanged,
}

/// One WebSocket client: it subscribes and unsubscribes with commands, and is sent quotes the
/// same way the event stream is, through its own [`Cursor`].
async fn socket_session(mut socket: WebSocket, feed: Feed, timeouts: Timeouts, shutdown: Shutdown) {
    let _counted = feed.ws_sockets.enter();
    let mut board = feed.board.clone();
    let mut cursor = Cursor::new(feed.symbols.len());
    let mut heartbeat = Heartbeat::new(timeouts.ping_interval, timeouts.idle_timeout);
    loop {
        // What has already arrived goes before the next quote, so a client kept busy with
        // quotes can still unsubscribe, and the heartbeat still beats.
        let step = if let Some(incoming) = socket.next().now_or_never() {
            Step::Incoming(incoming)
        } else if let Some(beat) = heartbeat.beat().now_or_never() {
            Step::Beat(beat)
        } else if let Some(wire) = cursor.next(&board.borrow_and_update()) {
            Step::Quote(wire.ws.clone())
        } else {
            tokio::select! {
                incoming = socket.next() => Step::Incoming(incoming),
                beat = heartbeat.beat() => Step::Beat(beat),
                changed = board.changed() => match changed {
                    Ok(()) => Step::BoardChanged,
                    Err(_) => break, // the market task stopped: shutting down
                },
                () = shutdown.requested() => break,
            }
        };
        let outgoing = match step {
            Step::Quote(text) => Message::Text(text),
            Step::BoardChanged => continue,
            Step::Beat(Beat::Ping) => Message::Ping(Default::default()),
            Step::Beat(Beat::Silent) => {
                ws::close(&mut socket, CloseCode::Policy, "no answer to pings").await;
                return;
            }
            Step::Incoming(incoming) => {
                heartbeat.heard();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let current = board.borrow();
                        Message::Text(follow_command(&text, &feed, &mut cursor, &current))
                    }
                    Some(Ok(Message::Binary(_))) => Message::Text(error_message(
                        "commands are JSON text messages, not binary ones".to_owned(),
                        None,
                    )),
                    // tungstenite answers Pings itself; a Pong only needed to be heard.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) => {
                        ws::answer_close(&mut socket).await;
                        return;
                    }
                    Some(Err(error)) => {
                        ws::close_after_error(&mut socket, &error).await;
                        tracing::debug!(%error, "WebSocket ended with an error");
                        return;
                    }
                    None => return,
                }
            }
        };
        // `send` waits while the client's socket is full; meanwhile the board moves on, and the
        // next round sends the then-latest quote.
        let sent = tokio::select! {
            sent = tokio::time::timeout(timeouts.send_timeout, socket.send(outgoing)) => sent,
            () = shutdown.requested() => break,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "WebSocket write failed; the client has gone");
                return;
            }
            Err(_) => {
                tracing::info!(
                    "dropping a WebSocket client that took nothing for {:?}",
                    timeouts.send_timeout
                );
                return;
            }
        }
    }
    // Shutdown: tell the client we are going away (1001), so it knows to reconnect later.
    ws::close(&mut socket, CloseCode::Away, "server shutting down").await;
}
// ANCHOR_END: socket_session

// ANCHOR: commands
/// What a WebSocket client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Command {
    /// Start receiving these symbols (all of them when `symbols` is left out).
    Subscribe {
        /// The symbols to add to the subscription.
        symbols: Option<Vec<String>>,
    },
    /// Stop receiving these symbols (all of them when `symbols` is left out).
    Unsubscribe {
        /// The symbols to remove from the subscription.
        symbols: Option<Vec<String>>,
    },
}

/// Applies one command to the client's cursor and returns the reply: a snapshot after a
/// subscribe, a confirmation after an unsubscribe, or an error that leaves the socket open.
fn follow_command(text: &str, feed: &Feed, cursor: &mut Cursor, board: &Board) -> Utf8Bytes {
    let command: Command = match serde_json::from_str(text) {
        Ok(command) => command,
        Err(error) => {
            return error_message(
                format!(
                    "invalid command ({error}); send {{\"type\":\"subscribe\",\"symbols\":[\"{}\"]}} \
                     or {{\"type\":\"unsubscribe\",\"symbols\":[...]}}",
                    feed.symbols[0].symbol
                ),
                None,
            );
        }
    };
    let (Command::Subscribe { symbols } | Command::Unsubscribe { symbols }) = &command;
    let indices = match symbols {
        None => (0..feed.symbols.len()).collect(),
        Some(names) => match feed.resolve(names.iter().map(String::as_str)) {
            Ok(indices) => indices,
            Err(unknown) => {
                let valid = feed.symbols.iter().map(|spec| spec.symbol.as_str());
                return error_message(unknown.error, Some(valid.collect()));
            }
        },
    };
    let reply = match command {
        Command::Subscribe { .. } => ServerMessage::Snapshot {
            quotes: cursor
                .subscribe(&indices, board)
                .into_iter()
                .map(|wire| &wire.quote)
                .collect(),
        },
        Command::Unsubscribe { .. } => {
            cursor.unsubscribe(&indices);
            ServerMessage::Unsubscribed {
                symbols: indices
                    .iter()
                    .map(|&index| feed.symbols[index].symbol.as_str())
                    .collect(),
            }
        }
    };
    json_text(&reply)
}

fn error_message(error: String, valid_symbols: Option<Vec<&str>>) -> Utf8Bytes {
    json_text(&ServerMessage::Error {
        error,
        valid_symbols,
    })
}
// ANCHOR_END: commands

/// The `400` body for an unknown symbol: the error, and the symbols that do exist.
#[derive(Debug, Serialize)]
struct UnknownSymbol {
    /// What was wrong, in a sentence.
    error: String,
    /// The symbols that exist.
    valid_symbols: Vec<String>,
}

/// The values of every `symbols` parameter of a query string, split on commas and
/// percent-decoded (`URLSearchParams` writes a comma as `%2C`); `None` when there is none.
fn symbols_in_query(query: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let mut names: Option<Vec<String>> = None;
    for pair in query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("symbols=") else {
            continue;
        };
        let value = percent_decode(value)
            .ok_or_else(|| "the symbols parameter is not valid percent-encoded UTF-8".to_owned())?;
        names
            .get_or_insert_with(Vec::new)
            .extend(value.split(',').map(str::to_owned));
    }
    Ok(names)
}

/// Decodes `%XX` escapes and `+` (a space, in a query string); `None` for a broken escape or
/// bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(byte) = rest.next() {
        bytes.push(match byte {
            b'%' => {
                let high = char::from(rest.next()?).to_digit(16)?;
                let low = char::from(rest.next()?).to_digit(16)?;
                (high * 16 + low) as u8
            }
            b'+' => b' ',
            other => other,
        });
    }
    String::from_utf8(bytes).ok()
}

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
struct FeedStats {
    /// Event streams open right now.
    sse_streams: usize,
    /// WebSockets open right now.
    ws_sockets: usize,
    /// How many symbols are listed.
    symbols: usize,
    /// The sequence number of the latest quote (0 before the first update).
    last_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board_of(market: &Market) -> Board {
        market
            .quotes()
            .into_iter()
            .map(|quote| Arc::new(WireQuote::new(quote)))
            .collect()
    }

    /// A client that does not read while 10,000 updates happen is then sent at most one quote
    /// per subscribed symbol, each the latest, and its cursor never grows.
    #[test]
    fn a_client_that_falls_behind_gets_the_latest_quote_of_each_symbol() {
        let mut market = Market::open(market::default_symbols(), 1);
        let mut board = board_of(&market);
        let mut cursor = Cursor::new(board.len());
        let subscribed = [0, 2, 5];
        assert_eq!(cursor.subscribe(&subscribed, &board).len(), 3);
        for _ in 0..10_000 {
            let (index, quote) = market.step();
            board[index] = Arc::new(WireQuote::new(quote));
        }
        let mut received = Vec::new();
        while let Some(wire) = cursor.next(&board) {
            received.push(wire.quote.clone());
        }
        assert_eq!(
            cursor.sent.len(),
            board.len(),
            "one slot per symbol, always"
        );
        assert_eq!(received.len(), subscribed.len());
        for quote in &received {
            let index = board
                .iter()
                .position(|wire| wire.quote.symbol == quote.symbol)
                .unwrap();
            assert!(subscribed.contains(&index));
            assert_eq!(quote, &board[index].quote, "the latest quote of the symbol");
        }
        assert!(received.windows(2).all(|pair| pair[0].seq < pair[1].seq));
    }

    /// A client that keeps up is sent every quote of its symbols, in market order.
    #[test]
    fn a_client_that_keeps_up_gets_every_quote_in_order() {
        let mut market = Market::open(market::default_symbols(), 1);
        let mut board = board_of(&market);
        let mut cursor = Cursor::new(board.len());
        cursor.subscribe(&[1, 3], &board);
        let mut expected = Vec::new();
        let mut received = Vec::new();
        for _ in 0..1_000 {
            let (index, quote) = market.step();
            if [1, 3].contains(&index) {
                expected.push(quote.seq);
            }
            board[index] = Arc::new(WireQuote::new(quote));
            while let Some(wire) = cursor.next(&board) {
                received.push(wire.quote.seq);
            }
        }
        assert_eq!(received, expected);
    }

    /// After an unsubscribe nothing of that symbol is sent, however much it moves.
    #[test]
    fn unsubscribed_symbols_are_not_sent() {
        let mut market = Market::open(market::default_symbols(), 3);
        let mut board = board_of(&market);
        let mut cursor = Cursor::new(board.len());
        cursor.subscribe(&[0, 1], &board);
        cursor.unsubscribe(&[0]);
        for _ in 0..1_000 {
            let (index, quote) = market.step();
            board[index] = Arc::new(WireQuote::new(quote));
            while let Some(wire) = cursor.next(&board) {
                assert_eq!(wire.quote.symbol, board[1].quote.symbol);
            }
        }
    }

    /// `symbols=` is read as the page and curl write it: commas, `%2C`, repeated parameters.
    #[test]
    fn symbols_in_the_query_string() {
        let parse = |query| symbols_in_query(Some(query)).unwrap();
        assert_eq!(parse("x=1"), None);
        assert_eq!(parse("symbols=ACME,HOOL").unwrap(), ["ACME", "HOOL"]);
        assert_eq!(parse("symbols=ACME%2CHOOL").unwrap(), ["ACME", "HOOL"]);
        assert_eq!(
            parse("symbols=ACME&symbols=HOOL").unwrap(),
            ["ACME", "HOOL"]
        );
        assert!(symbols_in_query(Some("symbols=%ZZ")).is_err());
        assert!(symbols_in_query(Some("symbols=%FF")).is_err());
    }
}
