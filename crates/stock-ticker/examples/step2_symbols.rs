//! Step 2 of the stock ticker: what a client may ask for, and what it is told when it asks
//! wrong. Over step 1 it adds `?symbols=A,B` (the snapshot and the quotes of those symbols only),
//! `GET /symbols` (what exists) and `GET /stats` (open streams, the latest `seq`), and answers
//! every mistake with a status and a JSON `{"error": ...}`: `400` for an unknown symbol (with
//! the valid ones), `404` for an unknown path, `405` with `Allow: GET` for another method.
//!
//! Without it (step 1) a page that watches two symbols is sent all eight, and a typo in a
//! symbol is a stream that never mentions it: the row stays empty and nothing says why.
//!
//! Run: `cargo run -p stock-ticker --example step2_symbols`, then try
//! `curl -N 'http://127.0.0.1:3003/quotes/stream?symbols=ACME,HOOL'`,
//! `curl -i 'http://127.0.0.1:3003/quotes/stream?symbols=NOPE'` (400) and
//! `curl http://127.0.0.1:3003/symbols`. `PORT=0` picks a free port, `SEED=7` makes another
//! market, `UPDATES_PER_SECOND=100` a faster one. Check it with
//! `cargo run -p ladder -- check stock-ticker step2_symbols`.

use std::{convert::Infallible, time::Duration};

use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use stock_ticker::market::{Market, Quote, SymbolSpec, default_symbols};
use tokio::sync::{broadcast, watch};

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

type Board = watch::Sender<Vec<Quote>>; // each symbol's latest quote: every stream's snapshot
// ANCHOR: quotes
/// Each quote's `seq`, the index of its symbol (to filter on) and its SSE event, encoded once.
type Quotes = broadcast::Sender<(u64, usize, Bytes)>;
// ANCHOR_END: quotes

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3003), |port| port.parse())?;
    let seed: u64 = std::env::var("SEED").map_or(Ok(2026), |seed| seed.parse())?;
    let rate: f64 = std::env::var("UPDATES_PER_SECOND").map_or(Ok(8.0), |rate| rate.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "step2_symbols listening on http://{}",
        listener.local_addr()?
    );

    let market = Market::open(default_symbols(), seed);
    let board = Board::new(market.quotes());
    let quotes = Quotes::new(1024); // a client 1024 quotes behind is cut off (see `events`)
    let period = Duration::from_secs_f64(1.0 / rate.clamp(0.1, 1000.0));
    tokio::spawn(run_market(market, period, board.clone(), quotes.clone()));
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // Out of file descriptors, usually: wait for some to be freed rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (board, quotes) = (board.clone(), quotes.clone());
        let service = service_fn(move |request| {
            std::future::ready(Ok::<_, Infallible>(respond(&request, &board, &quotes)))
        });
        // One client's error (it went away mid-response) ends its connection, not the server.
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service));
    }
}

async fn run_market(mut market: Market, period: Duration, board: Board, quotes: Quotes) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        interval.tick().await;
        let (index, quote) = market.step();
        let data = serde_json::to_string(&quote).expect("a Quote always serialises");
        let event = Bytes::from(format!("event: quote\nid: {}\ndata: {data}\n\n", quote.seq));
        // The board first: a stream whose snapshot has this quote already skips it (`events`).
        board.send_modify(|board| board[index] = quote.clone());
        let _no_client_yet = quotes.send((quote.seq, index, event));
    }
}

type Body = BoxBody<Bytes, Infallible>;

// ANCHOR: respond
fn respond(request: &Request<Incoming>, board: &Board, quotes: &Quotes) -> Response<Body> {
    let path = request.uri().path();
    let json = |status, value: String| (status, "application/json", Full::from(value).boxed());
    let (status, content_type, body) = match (request.method(), path) {
        (&Method::GET, "/") => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        (&Method::GET, "/quotes/stream") => match subscription(request.uri().query()) {
            Ok(subscription) => (
                200,
                "text/event-stream",
                events(board, quotes, subscription),
            ),
            // Refused, not ignored: a typo in a symbol would otherwise be an empty row forever.
            Err(error) => json(400, error),
        },
        (&Method::GET, "/symbols") => json(200, symbols()),
        (&Method::GET, "/stats") => json(200, stats(board, quotes)),
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

/// `GET /stats`: the streams open (each holds a receiver of the quotes) and the latest `seq`.
fn stats(board: &Board, quotes: &Quotes) -> String {
    let (streams, board) = (quotes.receiver_count(), board.borrow());
    let last_seq = board.iter().map(|quote| quote.seq).max().unwrap_or(0);
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
// ANCHOR_END: respond

// ANCHOR: events
/// A client's stream: a snapshot of its symbols, then each later quote of them, until a write
/// fails (the client left).
fn events(board: &Board, quotes: &Quotes, subscription: Vec<usize>) -> Body {
    // Subscribe before reading the board, so that no quote can fall between the two.
    let quotes = quotes.subscribe();
    let board = board.borrow().clone(); // a copy: the market task must not wait for this client
    // The snapshot's id is the latest `seq` on the whole board, as every quote up to it is in.
    let seen = board.iter().map(|quote| quote.seq).max().unwrap_or(0);
    let asked: Vec<&Quote> = subscription.iter().map(|&index| &board[index]).collect();
    let data = serde_json::to_string(&asked).expect("quotes always serialise");
    let first =
        format!("retry: 3000\nevent: snapshot\nid: {seen}\ndata: {{\"quotes\":{data}}}\n\n");
    let first = stream::once(async { Ok(Frame::data(Bytes::from(first))) });
    // `Err(Lagged)` (this client is 1024 quotes behind) ends the stream: the browser reconnects
    // to a fresh snapshot, where skipping on would leave some prices stale without a word.
    let rest = stream::unfold(quotes, |mut quotes| async move {
        Some((quotes.recv().await.ok()?, quotes))
    });
    let rest = rest.filter(move |(seq, index, _)| {
        std::future::ready(*seq > seen && subscription.contains(index))
    });
    let rest = rest.map(|(_, _, event)| Ok(Frame::data(event)));
    BodyExt::boxed(StreamBody::new(first.chain(rest)))
}
// ANCHOR_END: events
