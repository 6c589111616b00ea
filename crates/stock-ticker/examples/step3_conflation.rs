//! Step 3 of the stock ticker: conflation, the slow-client policy of a market feed. A client
//! that falls behind is sent each symbol's latest price, never a backlog. The `broadcast`
//! channel of step 2 is gone: the market task keeps every quote, encoded once, on the board in
//! the `watch` channel, and each client remembers per symbol the `seq` it was sent last (its
//! [`Cursor`]). When its connection can take more, hyper polls its stream, and the stream sends
//! the oldest quote on the board that is newer than what the client has. A client that keeps up
//! gets every quote; one that was away while a symbol moved five times gets it once.
//!
//! Without it (step 2) a reader that pauses for a few seconds (a tunnel, a busy tab) reads
//! through the quotes it missed, oldest first, its prices seconds old, and when it falls 1024
//! quotes behind its stream is cut off. A new quote makes the old one worthless: queueing them
//! is wrong for a market, however long the queue.
//!
//! Run: `cargo run -p stock-ticker --example step3_conflation`, then try
//! `curl -N 'http://127.0.0.1:3003/quotes/stream?symbols=ACME,HOOL'` and press Ctrl-S to pause
//! curl and Ctrl-Q to go on: after the pause come the latest prices, not the backlog. `PORT=0`
//! picks a free port, `SEED=7` makes another market, `UPDATES_PER_SECOND=100` a faster one.
//! Check it with `cargo run -p ladder -- check stock-ticker step3_conflation`.

use std::{convert::Infallible, time::Duration};

use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use stock_ticker::market::{Market, Quote, SymbolSpec, default_symbols};
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

// ANCHOR: board
/// Each symbol's latest quote, with its SSE event encoded once: every stream's snapshot, and
/// everything a stream sends. Its size is the number of symbols, however slow the clients.
type Board = watch::Sender<Vec<Wire>>;

/// A quote and its `quote` event, encoded by the market task: clients clone the bytes.
struct Wire {
    quote: Quote,
    event: Bytes,
}
// ANCHOR_END: board

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3003), |port| port.parse())?;
    let seed: u64 = std::env::var("SEED").map_or(Ok(2026), |seed| seed.parse())?;
    let rate: f64 = std::env::var("UPDATES_PER_SECOND").map_or(Ok(8.0), |rate| rate.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "step3_conflation listening on http://{}",
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
        // One client's error (it went away mid-response) ends its connection, not the server.
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service));
    }
}

// ANCHOR: market_task
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
// ANCHOR_END: market_task

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

// ANCHOR: stats
/// `GET /stats`: the streams open (each holds a receiver of the board) and the latest `seq`.
fn stats(board: &Board) -> String {
    let (streams, board) = (board.receiver_count(), board.borrow());
    let last_seq = board.iter().map(|wire| wire.quote.seq).max().unwrap_or(0);
    let symbols = board.len();
    format!(r#"{{"sse_streams":{streams},"symbols":{symbols},"last_seq":{last_seq}}}"#)
}
// ANCHOR_END: stats

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

// ANCHOR: cursor
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
// ANCHOR_END: cursor

// ANCHOR: events
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
// ANCHOR_END: events
