//! Step 7 of the stock ticker: graceful shutdown. On Ctrl-C or SIGTERM (what `kill`, systemd
//! and container runtimes send) the server stops accepting, ends every event stream, closes
//! every WebSocket with 1001 ("going away", so the page knows to come back later), waits for
//! them within a limit, and exits.
//!
//! Without it (step 6) the signal kills the process on the spot: every open stream and socket
//! is cut off mid-response, a page cannot tell a restart from a network failure, and nothing
//! after the signal runs. Two traps when you add it: hyper waits for every response to finish,
//! and an event stream never does, so each stream must end itself on shutdown; and hyper does
//! not see a connection it has handed over to a WebSocket, so shutdown must close those itself
//! and wait for their tasks.
//!
//! Run: `cargo run -p stock-ticker --example step7_going_away`, open <http://127.0.0.1:3003>
//! and <http://127.0.0.1:3003/#ws>, then press Ctrl-C: both pages say "reconnecting", and the
//! server says it has finished and exits. The settings are step 6's (`PORT`, `SEED`,
//! `UPDATES_PER_SECOND`, `STALL_TIMEOUT_MS`, `HEADER_TIMEOUT_MS`, `KEEP_ALIVE_MS`, `PING_MS`,
//! `IDLE_TIMEOUT_MS`). Check it with `cargo run -p ladder -- check stock-ticker step7_going_away`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use stock_ticker::market::{Market, Quote, SymbolSpec, default_symbols};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

const PAGE: &str = r##"<!doctype html><meta charset="utf-8"><title>stock-ticker</title>
<p id="state">connecting</p><pre id="board"></pre><script>
  const show = (id, text) => { document.getElementById(id).textContent = text; }; // never HTML
  const lines = {}; // a line per symbol; prices are integer cents
  function update({ symbol, price, change_pct }) {
    lines[symbol] = `${symbol.padEnd(5)} ${(price / 100).toFixed(2).padStart(9)} ${change_pct} %`;
    show("board", Object.values(lines).join("\n"));
  }
  if (location.hash === "#ws") {
    // The same feed over WebSocket. Reconnecting is the page's job here, and so is subscribing.
    const connect = () => {
      const socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/quotes/ws");
      socket.onopen = () => {
        show("state", "open (WebSocket)");
        socket.send(JSON.stringify({ type: "subscribe" }));
      };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === "snapshot") message.quotes.forEach(update);
        if (message.type === "quote") update(message);
      };
      socket.onclose = () => { show("state", "reconnecting"); setTimeout(connect, 1000); };
    };
    connect();
  } else {
    const source = new EventSource("/quotes/stream");
    source.onopen = () => show("state", "open");
    // Do not close the source on error: while it is CONNECTING the browser is retrying by itself.
    source.onerror = () => show("state", "reconnecting");
    // `snapshot` and `quote` are named events: onmessage sees only unnamed ones.
    source.addEventListener("snapshot", (event) => JSON.parse(event.data).quotes.forEach(update));
    source.addEventListener("quote", (event) => update(JSON.parse(event.data)));
  }
</script>"##;

/// Each symbol's latest quote, encoded once for each transport: every stream's and socket's
/// snapshot, and everything they send. Its size is the number of symbols, however slow the
/// clients.
type Board = watch::Sender<Vec<Wire>>;

/// A quote, its `quote` event and its WebSocket message, encoded by the market task: clients
/// clone the bytes (reference-counted), not the work.
struct Wire {
    quote: Quote,
    event: Bytes,
    text: Utf8Bytes,
}

/// Open WebSockets, for `/stats`.
type Sockets = Arc<AtomicUsize>;

/// A WebSocket on the connection hyper hands over after the `101`.
type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// How the server finds clients that have gone silent, and keeps proxies from closing quiet
/// connections.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// How long an event stream may be silent before a keep-alive comment is written.
    keep_alive: Duration,
    /// Time between two Pings to a WebSocket client.
    ping_every: Duration,
    /// How long a WebSocket client may send nothing at all before it is closed as gone.
    idle_timeout: Duration,
}

// ANCHOR: shutdown
/// What shutdown ends and waits for. Every connection's task and every socket's task holds a
/// clone; event streams and sockets watch `stopping`.
#[derive(Clone)]
struct Shutdown {
    /// Its sender is dropped when shutdown begins: from then on `changed()` fails at once on
    /// every clone, and `has_changed()` too.
    stopping: watch::Receiver<()>,
    /// Held by every task shutdown waits for; once the last clone is dropped, `main` hears that
    /// they have all finished. Nothing is ever sent on it.
    _running: mpsc::Sender<()>,
}
// ANCHOR_END: shutdown

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3003), |port| port.parse())?;
    let seed: u64 = std::env::var("SEED").map_or(Ok(2026), |seed| seed.parse())?;
    let rate: f64 = std::env::var("UPDATES_PER_SECOND").map_or(Ok(8.0), |rate| rate.parse())?;
    let stall_limit = millis("STALL_TIMEOUT_MS", 30_000)?;
    let header_limit = millis("HEADER_TIMEOUT_MS", 30_000)?;
    let liveness = Liveness {
        keep_alive: millis("KEEP_ALIVE_MS", 15_000)?,
        // tokio's interval panics on a zero period.
        ping_every: millis("PING_MS", 15_000)?.max(Duration::from_millis(1)),
        // Two missed Pongs, and some slack for a slow network.
        idle_timeout: millis("IDLE_TIMEOUT_MS", 35_000)?,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // ANCHOR: signals
    // Listen for signals before saying we are ready: one that came first would kill the process.
    let signal = shutdown_signal()?;
    // ANCHOR_END: signals
    println!(
        "step7_going_away listening on http://{}",
        listener.local_addr()?
    );

    let market = Market::open(default_symbols(), seed);
    let board = Board::new(market.quotes().into_iter().map(wire).collect());
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 1000.0));
    tokio::spawn(run_market(market, period, board.clone()));
    let sockets = Sockets::default();
    // ANCHOR: serve
    let (stop, stopping) = watch::channel(());
    let (running, mut finished) = mpsc::channel(1);
    let shutdown = Shutdown {
        stopping,
        _running: running,
    };
    let mut signal = std::pin::pin!(signal);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let Ok((socket, _)) = accepted else {
            // Out of file descriptors, usually: wait for some to be freed rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (board, sockets, shutdown) = (board.clone(), sockets.clone(), shutdown.clone());
        let mut stopping = shutdown.stopping.clone();
        let service = service_fn(move |request| {
            let response = respond(request, &board, &sockets, liveness, &shutdown);
            std::future::ready(Ok::<_, Infallible>(response))
        });
        // The stall limit holds for a WebSocket too: hyper hands over this same socket.
        let socket = StallLimit::new(socket, stall_limit);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_limit)
            .serve_connection(TokioIo::new(socket), service)
            // Lets a response take the connection over after `101 Switching Protocols`.
            .with_upgrades();
        // One client's error (it went away mid-response) ends its connection, not the server.
        // (hyper-util's `GracefulShutdown` would do this, but takes no connection with upgrades.)
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopping.changed() => {
                    // Read no new request, finish the response in flight (event streams end
                    // themselves now), then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }

    // Refuse new connections, end every stream and close every socket, then wait for them:
    // for at most `grace`, since a client that stopped reading could keep its last bytes
    // unsent for as long as the stall limit.
    drop(listener);
    drop(stop);
    drop(shutdown);
    let grace = Duration::from_secs(5);
    match tokio::time::timeout(grace, finished.recv()).await {
        Ok(None) => println!("step7_going_away: every connection finished, exiting"),
        _ => eprintln!("step7_going_away: connections still open after {grace:?}, exiting"),
    }
    Ok(())
}

/// Listens for Ctrl-C and SIGTERM (what `kill`, systemd and container runtimes send) from now
/// on, and completes on the first of them.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        let mut ctrl_c = tokio::signal::windows::ctrl_c()?;
        Ok(async move {
            ctrl_c.recv().await;
        })
    }
}
// ANCHOR_END: serve

async fn run_market(mut market: Market, period: Duration, board: Board) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        let (index, quote) = market.step();
        // Replaces one slot and wakes every stream; one that has not looked since sees only
        // the latest quote of each symbol.
        board.send_modify(|board| board[index] = wire(quote));
    }
}

fn wire(quote: Quote) -> Wire {
    let data = serde_json::to_string(&quote).expect("a Quote always serialises");
    let event = Bytes::from(format!("event: quote\nid: {}\ndata: {data}\n\n", quote.seq));
    // `{"type":"quote",` then the quote's own fields: `data` is a JSON object, `{...}`.
    let text = Utf8Bytes::from(format!("{{\"type\":\"quote\",{}", &data[1..]));
    Wire { quote, event, text }
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(
    request: Request<Incoming>,
    board: &Board,
    sockets: &Sockets,
    liveness: Liveness,
    shutdown: &Shutdown,
) -> Response<Body> {
    if request.method() == Method::GET && request.uri().path() == "/quotes/ws" {
        return quote_socket(request, board, sockets, liveness, shutdown);
    }
    let path = request.uri().path();
    let json = |status, value: String| (status, "application/json", Full::from(value).boxed());
    let (status, content_type, body) = match (request.method(), path) {
        (&Method::GET, "/") => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        (&Method::GET, "/quotes/stream") => match subscription(request.uri().query()) {
            Ok(subscription) => (
                200,
                "text/event-stream",
                events(board, subscription, liveness.keep_alive, shutdown),
            ),
            // Refused, not ignored: a typo in a symbol would otherwise be an empty row forever.
            Err(error) => json(400, error),
        },
        (&Method::GET, "/symbols") => json(200, symbols()),
        (&Method::GET, "/stats") => json(200, stats(board, sockets)),
        (method, "/" | "/quotes/stream" | "/quotes/ws" | "/symbols" | "/stats") => json(
            405,
            json_error(&format!("{method} is not allowed here; use GET")),
        ),
        _ => json(404, json_error(&format!("there is nothing at {path}"))),
    };
    // `no-cache`: every reader needs the live feed, never a stored copy.
    let mut headers = Response::builder().header("cache-control", "no-cache");
    if status == 405 {
        headers = headers.header("allow", "GET"); // RFC 9110: a 405 says what is allowed
    }
    if content_type == "text/event-stream" {
        // nginx buffers what it proxies unless told not to: quotes would arrive late, in bursts.
        headers = headers.header("x-accel-buffering", "no");
    }
    let response = headers.status(status).header("content-type", content_type);
    response.body(body).expect("fixed, valid headers")
}

/// `GET /stats`: the streams and sockets open, and the latest `seq`.
fn stats(board: &Board, sockets: &Sockets) -> String {
    let sockets = sockets.load(Ordering::Relaxed);
    // Every stream and every socket holds one receiver of the board; a socket counts itself
    // before it takes one and after it lets go, so this never counts a socket as a stream.
    let streams = board.receiver_count().saturating_sub(sockets);
    let board = board.borrow();
    let last_seq = board.iter().map(|wire| wire.quote.seq).max().unwrap_or(0);
    let symbols = board.len();
    let counts = format!(r#""sse_streams":{streams},"ws_sockets":{sockets}"#);
    format!(r#"{{{counts},"symbols":{symbols},"last_seq":{last_seq}}}"#)
}

fn json_error(error: &str) -> String {
    serde_json::json!({ "error": error }).to_string()
}

/// The listed symbols, as `GET /symbols` describes them.
fn symbols() -> String {
    let info = |spec: SymbolSpec| serde_json::json!({ "symbol": spec.symbol, "name": spec.name, "open": spec.open_cents });
    serde_json::Value::from_iter(default_symbols().into_iter().map(info)).to_string()
}

/// The board indices of the symbols a client asked for with `?symbols=A,B` (every `symbols`
/// parameter, split on commas and percent-decoded: `URLSearchParams` writes a comma as `%2C`);
/// all of them without the parameter. Otherwise the JSON body of a `400`.
fn subscription(query: Option<&str>) -> Result<Vec<usize>, String> {
    let mut names: Option<Vec<String>> = None;
    for value in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.strip_prefix("symbols="))
    {
        let value = percent_decode(value).ok_or_else(|| {
            json_error("the symbols parameter is not valid percent-encoded UTF-8")
        })?;
        let names = names.get_or_insert_with(Vec::new);
        names.extend(value.split(',').map(str::to_owned));
    }
    match names {
        None => Ok((0..default_symbols().len()).collect()),
        Some(names) => resolve(names.iter().map(String::as_str)).map_err(|error| error.to_string()),
    }
}

/// The board indices of `names`, in the order given, without repeats; or the error to send
/// back, `{"error": ..., "valid_symbols": [...]}`, naming the first unknown symbol.
fn resolve<'n>(names: impl IntoIterator<Item = &'n str>) -> Result<Vec<usize>, serde_json::Value> {
    let valid: Vec<String> = default_symbols()
        .into_iter()
        .map(|spec| spec.symbol)
        .collect();
    let refuse = |error: String| serde_json::json!({ "error": error, "valid_symbols": valid });
    let mut indices = Vec::new();
    for name in names {
        let Some(index) = valid.iter().position(|symbol| symbol == name.trim()) else {
            // Bounded, whatever the client sent: the name is echoed back.
            let name: String = name.chars().take(16).collect();
            let list = valid.join(", ");
            return Err(refuse(format!(
                "unknown symbol {name:?}; the valid symbols are {list}"
            )));
        };
        if !indices.contains(&index) {
            indices.push(index);
        }
    }
    if indices.is_empty() {
        let error = "name at least one symbol, or leave `symbols` out for all of them";
        return Err(refuse(error.to_owned()));
    }
    Ok(indices)
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

/// What one client has been sent, and the whole of what conflation costs per client: per
/// symbol, `None` when the client did not ask for it, otherwise the `seq` of the last quote of
/// it sent. Nothing is queued for a client.
struct Cursor {
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
    fn subscribe<'b>(&mut self, indices: &[usize], board: &'b [Wire]) -> Vec<&'b Wire> {
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

    /// The quote to send next, marked as sent: of the client's symbols whose quote on the board
    /// is newer than the one it has, the oldest. Taking the oldest keeps quotes in market order
    /// for a client that keeps up; `None` means it is up to date.
    fn next<'b>(&mut self, board: &'b [Wire]) -> Option<&'b Wire> {
        let (index, wire) = board
            .iter()
            .enumerate()
            .filter(|(index, wire)| self.sent[*index].is_some_and(|seq| wire.quote.seq > seq))
            .min_by_key(|(_, wire)| wire.quote.seq)?;
        self.sent[index] = Some(wire.quote.seq);
        Some(wire)
    }
}

/// A client's stream: a snapshot of its symbols, then their quotes, as its connection is ready
/// for them. hyper polls a body only when it can write, so a slow reader is polled less often,
/// and each poll gives it the latest prices: backpressure and conflation are one mechanism.
/// Written when a stream has had nothing to send for the keep-alive interval. A line that starts
/// with `:` is a comment: `EventSource` skips it, but it is traffic.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

fn events(
    board: &Board,
    subscription: Vec<usize>,
    keep_alive: Duration,
    shutdown: &Shutdown,
) -> Body {
    let mut board = board.subscribe();
    let (first, cursor) = {
        let current = board.borrow_and_update();
        let mut cursor = Cursor::new(current.len());
        let snapshot = cursor.subscribe(&subscription, &current);
        let asked: Vec<&Quote> = snapshot.iter().map(|wire| &wire.quote).collect();
        let data = serde_json::to_string(&asked).expect("quotes always serialise");
        // Its id is the latest `seq` on the whole board, as every quote up to it is in it.
        let seen = current.iter().map(|wire| wire.quote.seq).max().unwrap_or(0);
        let first =
            format!("retry: 3000\nevent: snapshot\nid: {seen}\ndata: {{\"quotes\":{data}}}\n\n");
        (first, cursor)
    };
    let first = stream::once(async { Ok(Frame::data(Bytes::from(first))) });
    let state = (board, cursor, Instant::now());
    let rest = stream::unfold(
        state,
        move |(mut board, mut cursor, mut sent_at)| async move {
            loop {
                let next = cursor
                    .next(&board.borrow_and_update())
                    .map(|wire| wire.event.clone());
                if let Some(event) = next {
                    return Some((Ok(Frame::data(event)), (board, cursor, Instant::now())));
                }
                // Up to date: wait for the board to change, but not past `keep_alive` of silence,
                // which is what proxies time out on; and a write is how a dead peer is found.
                match tokio::time::timeout_at(sent_at + keep_alive, board.changed()).await {
                    Ok(changed) => changed.ok()?,
                    Err(_silent) => {
                        sent_at = Instant::now();
                        let comment = Frame::data(Bytes::from_static(KEEP_ALIVE));
                        return Some((Ok(comment), (board, cursor, sent_at)));
                    }
                }
            }
        },
    );
    // ANCHOR: stream_end
    let mut stopping = shutdown.stopping.clone();
    let stopped = async move { while stopping.changed().await.is_ok() {} };
    // Ending the body lets hyper write the end of the response: the client sees a clean end.
    BodyExt::boxed(StreamBody::new(first.chain(rest).take_until(stopped)))
    // ANCHOR_END: stream_end
}

/// `GET /quotes/ws`: checks the page's origin and the handshake, then answers `101 Switching
/// Protocols` and runs [`socket_session`] on the connection hyper hands over.
fn quote_socket(
    mut request: Request<Incoming>,
    board: &Board,
    sockets: &Sockets,
    liveness: Liveness,
    shutdown: &Shutdown,
) -> Response<Body> {
    if !same_origin(&request) {
        let error = "pages from other sites may not open this socket";
        return refuse(403, &json_error(error), None);
    }
    let switching = tungstenite::handshake::server::create_response_with_body(&request, || {
        Full::from("").boxed()
    });
    let switching = match switching {
        Ok(switching) => switching,
        Err(error) => return refuse_handshake(&error),
    };
    // Resolves only after hyper has written the 101, so it must be awaited in a task of its
    // own, and the response returned first.
    let upgrade = hyper::upgrade::on(&mut request);
    let (board, sockets) = (board.clone(), sockets.clone());
    // ANCHOR: tracked
    // The task holds a clone of `shutdown`: hyper no longer sees this connection, so shutdown
    // waits for the task itself.
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(limits()));
                socket_session(socket.await, board, sockets, liveness, shutdown).await;
            }
            Err(error) => eprintln!("a WebSocket upgrade failed: {error}"), // the client left
        }
    });
    // ANCHOR_END: tracked
    switching
}

/// Whether the page that opens the socket comes from this server. Browsers send cookies with
/// a WebSocket handshake to any site and apply no same-origin policy to WebSocket, so without
/// this any page a user visits could open a socket here in their name (cross-site WebSocket
/// hijacking). A page cannot forge `Origin`. A request without one is not from a page (curl, a
/// script): those could send any `Origin` they like, so refusing them would protect nothing.
fn same_origin(request: &Request<Incoming>) -> bool {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let Some(origin) = header("origin") else {
        return true;
    };
    let origin = origin.to_ascii_lowercase();
    let authority = (origin.strip_prefix("http://")).or_else(|| origin.strip_prefix("https://"));
    authority.is_some() && authority == header("host").map(str::to_ascii_lowercase).as_deref()
}

/// The answer to a handshake tungstenite's `create_response` refused (RFC 6455 section 4.2.1):
/// `426` and what to speak for a request that is no WebSocket handshake (a browser tab, curl)
/// or of another version, `400` for a missing or malformed key.
fn refuse_handshake(error: &tungstenite::Error) -> Response<Body> {
    use tungstenite::error::ProtocolError as Problem;
    let error_text = json_error(&format!("not a WebSocket handshake: {error}"));
    match error {
        tungstenite::Error::Protocol(
            Problem::MissingConnectionUpgradeHeader | Problem::MissingUpgradeWebSocketHeader,
        ) => refuse(426, &error_text, Some(("upgrade", "websocket"))),
        tungstenite::Error::Protocol(Problem::MissingSecWebSocketVersionHeader) => {
            refuse(426, &error_text, Some(("sec-websocket-version", "13")))
        }
        _ => refuse(400, &error_text, None),
    }
}

fn refuse(status: u16, body: &str, hint: Option<(&str, &str)>) -> Response<Body> {
    let mut response = Response::builder().status(status);
    if let Some((name, value)) = hint {
        response = response.header(name, value);
    }
    let response = response.header("content-type", "application/json");
    response
        .body(Full::from(body.to_owned()).boxed())
        .expect("fixed, valid headers")
}

/// What one socket may cost. tungstenite's defaults read in 128 KiB buffers, zero-filled for
/// every connection (about 134 KB per idle client), and accept 64 MiB messages; commands are a
/// few dozen bytes. A larger message is refused with Close 1009 before it is buffered whole.
fn limits() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(4 * 1024))
        .max_frame_size(Some(4 * 1024))
        // Written at once (a quote must leave now); past the maximum a write fails.
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// Counts one open socket for `/stats`, until it is dropped, whatever way the session ends.
struct Counted(Sockets);

impl Counted {
    fn new(sockets: &Sockets) -> Self {
        sockets.fetch_add(1, Ordering::Relaxed);
        Self(sockets.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a session does next.
enum Next {
    /// A frame (or the end of the stream) from the client.
    Incoming(Option<Result<Message, tungstenite::Error>>),
    /// A quote to send.
    Quote(Utf8Bytes),
    /// A Ping is due, or the client has been silent too long.
    Beat,
}

/// One WebSocket client: it subscribes and unsubscribes with commands, and is sent quotes the
/// way the event stream is, through its own [`Cursor`].
// ANCHOR: session_end
async fn socket_session(
    mut socket: WebSocket,
    board: Board,
    sockets: Sockets,
    liveness: Liveness,
    shutdown: Shutdown,
) {
    let mut stopping = shutdown.stopping.clone();
    let _counted = Counted::new(&sockets);
    let mut board = board.subscribe();
    let mut cursor = Cursor::new(board.borrow().len());
    let first_ping = Instant::now() + liveness.ping_every;
    let mut pings = tokio::time::interval_at(first_ping, liveness.ping_every);
    // After a long send, the next Ping one interval later, not a burst of the ones missed.
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The client's Pong answers a Ping, but any frame from it shows it is there.
    let mut last_heard = Instant::now();
    loop {
        if stopping.has_changed().is_err() {
            break; // shutting down, even if quotes are waiting
        }
        // What has already arrived goes before the next quote, so that a client kept busy with
        // quotes can still unsubscribe, and is still pinged.
        let next = if let Some(incoming) = socket.next().now_or_never() {
            Next::Incoming(incoming)
        } else if pings.tick().now_or_never().is_some() {
            Next::Beat
        } else if let Some(wire) = cursor.next(&board.borrow_and_update()) {
            Next::Quote(wire.text.clone())
        } else {
            tokio::select! {
                incoming = socket.next() => Next::Incoming(incoming),
                _ = pings.tick() => Next::Beat,
                changed = board.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return, // the market task has stopped
                },
                _ = stopping.changed() => break,
            }
        };
        if let Next::Incoming(_) = next {
            last_heard = Instant::now();
        }
        let outgoing = match next {
            Next::Quote(text) => Message::Text(text),
            Next::Beat if last_heard.elapsed() > liveness.idle_timeout => {
                close(&mut socket, CloseCode::Policy, "no answer to pings").await;
                return;
            }
            Next::Beat => Message::Ping(Bytes::new()),
            Next::Incoming(Some(Ok(Message::Text(text)))) => {
                let reply = follow_command(&text, &mut cursor, &board.borrow());
                Message::Text(reply.into())
            }
            Next::Incoming(Some(Ok(Message::Binary(_)))) => {
                let error = "commands are JSON text messages, not binary ones";
                Message::Text(error_message(json!({ "error": error })).into())
            }
            // tungstenite answers a Ping itself; the next send or read flushes the Pong.
            Next::Incoming(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {
                continue;
            }
            Next::Incoming(Some(Ok(Message::Close(_)))) => {
                // tungstenite has queued the answering Close: send it, then hang up.
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.flush()).await;
                return;
            }
            Next::Incoming(Some(Err(error))) => {
                // Say why (RFC 6455 section 7.4.1), if the connection is still there to say it.
                let code = match error {
                    tungstenite::Error::Capacity(_) => CloseCode::Size,
                    tungstenite::Error::Utf8(_) => CloseCode::Invalid,
                    tungstenite::Error::Protocol(_) => CloseCode::Protocol,
                    _ => return,
                };
                close(&mut socket, code, "").await;
                return;
            }
            Next::Incoming(None) => return,
        };
        // `send` waits while the client's socket is full; meanwhile the board moves on, and the
        // next round sends the then-latest quote.
        let sent = tokio::select! {
            sent = socket.send(outgoing) => sent,
            _ = stopping.changed() => break,
        };
        if sent.is_err() {
            return; // the client has gone
        }
    }
    // Shutdown: tell the client we are going away (1001), so it knows to come back later.
    close(&mut socket, CloseCode::Away, "server shutting down").await;
}
// ANCHOR_END: session_end

/// Sends Close with `code` and `reason`, for at most 2 s: a client that reads nothing is not
/// waited for. Dropping the socket then closes the connection.
async fn close(socket: &mut WebSocket, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(Some(frame))).await;
}

/// Applies one command (`{"type": "subscribe" | "unsubscribe", "symbols": [...]}`, every symbol
/// when `symbols` is left out) to the client's cursor, and returns the reply: a snapshot after a
/// subscribe, `unsubscribed` after an unsubscribe, or an error that leaves the socket open.
fn follow_command(text: &str, cursor: &mut Cursor, board: &[Wire]) -> String {
    let usage =
        r#"send {"type":"subscribe","symbols":["ACME"]} or {"type":"unsubscribe","symbols":[...]}"#;
    let command: Value = match serde_json::from_str(text) {
        Ok(command) => command,
        Err(error) => {
            return error_message(
                json!({ "error": format!("invalid command ({error}); {usage}") }),
            );
        }
    };
    let names = match &command["symbols"] {
        Value::Null => Ok(None),
        Value::Array(names) => names
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or(()),
        _ => Err(()),
    };
    let Ok(names) = names else {
        return error_message(
            json!({ "error": format!("`symbols` must be a list of symbols; {usage}") }),
        );
    };
    let indices = match names {
        None => (0..board.len()).collect(),
        Some(names) => match resolve(names) {
            Ok(indices) => indices,
            Err(refusal) => return error_message(refusal),
        },
    };
    match command["type"].as_str() {
        Some("subscribe") => {
            let quotes: Vec<&Quote> = cursor
                .subscribe(&indices, board)
                .iter()
                .map(|wire| &wire.quote)
                .collect();
            json!({ "type": "snapshot", "quotes": quotes }).to_string()
        }
        Some("unsubscribe") => {
            // A promise: commands are followed in order, so no quote of these comes after it.
            cursor.unsubscribe(&indices);
            let symbols: Vec<&str> = indices
                .iter()
                .map(|&index| board[index].quote.symbol.as_str())
                .collect();
            json!({ "type": "unsubscribed", "symbols": symbols }).to_string()
        }
        _ => error_message(json!({ "error": format!("unknown command type; {usage}") })),
    }
}

/// `{"type": "error", ...}` with the fields of `refusal` (`error`, and `valid_symbols` if any).
fn error_message(mut refusal: Value) -> String {
    refusal["type"] = json!("error");
    refusal.to_string()
}

/// A limit read from the environment variable `name`, in milliseconds, or `default_ms`.
fn millis(name: &str, default_ms: u64) -> Result<Duration, std::num::ParseIntError> {
    let ms = std::env::var(name).map_or(Ok(default_ms), |ms| ms.parse())?;
    Ok(Duration::from_millis(ms))
}

/// A client's socket whose writes fail once they have waited for `limit`. A write waits when
/// the client stops reading: its receive buffer fills, then the server's send buffer, then
/// hyper's; from then on nothing that waits for the client ever wakes, unless something like
/// this gives up on it. The failed write ends the connection, and so its stream.
struct StallLimit {
    socket: TcpStream,
    limit: Duration,
    /// Started by the first write that has to wait; cleared by any write that gets through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallLimit {
    fn new(socket: TcpStream, limit: Duration) -> Self {
        Self {
            socket,
            limit,
            stalled: None,
        }
    }

    /// Passes on a finished write; a waiting one waits no longer than the limit.
    fn within_limit<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if write.is_ready() {
            self.stalled = None;
            return write;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read anything for the write-stall limit",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallLimit {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallLimit {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.socket).poll_write(cx, buf);
        self.within_limit(cx, written)
    }

    // Vectored writes, as the socket has them. Without these two, hyper copies the chunks of a
    // response into one buffer of up to about 400 KiB before it stops asking the stream for
    // more: some 2,800 quotes queued for a slow client, out of the cursor's reach.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        self.within_limit(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.socket).poll_flush(cx);
        self.within_limit(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}
