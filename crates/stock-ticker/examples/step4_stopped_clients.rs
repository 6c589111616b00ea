//! Step 4 of the stock ticker: limits on clients that stop. Conflation (step 3) serves a
//! client that reads slowly; one that stops reading altogether (a phone that lost its network,
//! a laptop put to sleep, a stuck proxy) is disconnected once the server has been unable to
//! write to it for the write-stall limit, and a client that never finishes sending its request
//! headers is dropped after the header-read limit.
//!
//! Without them (step 3) a client that stops reading keeps its connection, its buffers and its
//! stream for as long as the kernel keeps the connection, which can be hours: `/stats` counts it
//! all that time, and a few thousand of them (or of clients that send half a request and wait,
//! "slowloris") hold every file descriptor the server has.
//!
//! Run: `cargo run -p stock-ticker --example step4_stopped_clients`, then try `curl -N
//! http://127.0.0.1:3003/quotes/stream`, or `nc 127.0.0.1 3003` and type half a request: the
//! server hangs up after the header-read limit. Settings, in milliseconds: `STALL_TIMEOUT_MS`
//! (the write-stall limit, default 30000), `HEADER_TIMEOUT_MS` (default 30000); and `PORT` (`0`
//! picks a free one), `SEED`, `UPDATES_PER_SECOND`. Check it with
//! `cargo run -p ladder -- check stock-ticker step4_stopped_clients`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use stock_ticker::market::{Market, Quote, SymbolSpec, default_symbols};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>stock-ticker</title>
<p id="state">connecting</p><pre id="board"></pre><script>
  const source = new EventSource("/quotes/stream");
  const show = (id, text) => { document.getElementById(id).textContent = text; }; // never HTML
  source.onopen = () => show("state", "open");
  // Do not close the source on error: while it is CONNECTING the browser is retrying by itself.
  source.onerror = () => show("state", "reconnecting");
  const lines = {}; // a line per symbol; prices are integer cents
  function update({ symbol, price, change_pct }) {
    lines[symbol] = `${symbol.padEnd(5)} ${(price / 100).toFixed(2).padStart(9)} ${change_pct} %`;
    show("board", Object.values(lines).join("\n"));
  }
  // `snapshot` and `quote` are named events: onmessage sees only unnamed ones.
  source.addEventListener("snapshot", (event) => JSON.parse(event.data).quotes.forEach(update));
  source.addEventListener("quote", (event) => update(JSON.parse(event.data)));</script>"#;

/// Each symbol's latest quote, with its SSE event encoded once: every stream's snapshot, and
/// everything a stream sends. Its size is the number of symbols, however slow the clients.
type Board = watch::Sender<Vec<Wire>>;

/// A quote and its `quote` event, encoded by the market task: clients clone the bytes.
struct Wire {
    quote: Quote,
    event: Bytes,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3003), |port| port.parse())?;
    let seed: u64 = std::env::var("SEED").map_or(Ok(2026), |seed| seed.parse())?;
    let rate: f64 = std::env::var("UPDATES_PER_SECOND").map_or(Ok(8.0), |rate| rate.parse())?;
    // ANCHOR: limits
    let stall_limit = millis("STALL_TIMEOUT_MS", 30_000)?;
    let header_limit = millis("HEADER_TIMEOUT_MS", 30_000)?;
    // ANCHOR_END: limits
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "step4_stopped_clients listening on http://{}",
        listener.local_addr()?
    );

    let market = Market::open(default_symbols(), seed);
    let board = Board::new(market.quotes().into_iter().map(wire).collect());
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 1000.0));
    tokio::spawn(run_market(market, period, board.clone()));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // Out of file descriptors, usually: wait for some to be freed rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let board = board.clone();
        let service = service_fn(move |request| {
            std::future::ready(Ok::<_, Infallible>(respond(&request, &board)))
        });
        // ANCHOR: connection
        let socket = StallLimit::new(socket, stall_limit);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_limit)
            .serve_connection(TokioIo::new(socket), service);
        // ANCHOR_END: connection
        // One client's error (it went away mid-response) ends its connection, not the server.
        tokio::spawn(connection);
    }
}

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
    Wire { quote, event }
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(request: &Request<Incoming>, board: &Board) -> Response<Body> {
    let path = request.uri().path();
    let json = |status, value: String| (status, "application/json", Full::from(value).boxed());
    let (status, content_type, body) = match (request.method(), path) {
        (&Method::GET, "/") => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        (&Method::GET, "/quotes/stream") => match subscription(request.uri().query()) {
            Ok(subscription) => (200, "text/event-stream", events(board, subscription)),
            // Refused, not ignored: a typo in a symbol would otherwise be an empty row forever.
            Err(error) => json(400, error),
        },
        (&Method::GET, "/symbols") => json(200, symbols()),
        (&Method::GET, "/stats") => json(200, stats(board)),
        (method, "/" | "/quotes/stream" | "/symbols" | "/stats") => json(
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
    let response = headers.status(status).header("content-type", content_type);
    response.body(body).expect("fixed, valid headers")
}

/// `GET /stats`: the streams open (each holds a receiver of the board) and the latest `seq`.
fn stats(board: &Board) -> String {
    let (streams, board) = (board.receiver_count(), board.borrow());
    let last_seq = board.iter().map(|wire| wire.quote.seq).max().unwrap_or(0);
    let symbols = board.len();
    format!(r#"{{"sse_streams":{streams},"symbols":{symbols},"last_seq":{last_seq}}}"#)
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
fn events(board: &Board, subscription: Vec<usize>) -> Body {
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
    let rest = stream::unfold((board, cursor), |(mut board, mut cursor)| async move {
        loop {
            let next = cursor
                .next(&board.borrow_and_update())
                .map(|wire| wire.event.clone());
            if let Some(event) = next {
                return Some((Ok(Frame::data(event)), (board, cursor)));
            }
            // Up to date: wait for the board to change.
            board.changed().await.ok()?;
        }
    });
    BodyExt::boxed(StreamBody::new(first.chain(rest)))
}

// ANCHOR: stall_limit
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
// ANCHOR_END: stall_limit
