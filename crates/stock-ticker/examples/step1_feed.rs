//! Step 1 of the stock ticker, on plain hyper: ONE task moves the seeded market, keeps the board
//! (each symbol's latest quote) in a `watch` channel and sends each quote, encoded once, on a
//! `broadcast` channel. Each client's stream is a `snapshot`, then every later quote (id = seq).
//! Run: `cargo run -p stock-ticker --example step1_feed`, open <http://127.0.0.1:3003>, or try
//! `curl -N http://127.0.0.1:3003/quotes/stream`; `PORT=0` picks a free port, `SEED=7` makes
//! another market, `UPDATES_PER_SECOND=100` a faster one. Next: choosing symbols (step 2).

use std::{convert::Infallible, time::Duration};

use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use stock_ticker::market::{Market, Quote, default_symbols};
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
type Quotes = broadcast::Sender<(u64, Bytes)>; // each quote's `seq` and SSE event, encoded once

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3003), |port| port.parse())?;
    let seed: u64 = std::env::var("SEED").map_or(Ok(2026), |seed| seed.parse())?;
    let rate: f64 = std::env::var("UPDATES_PER_SECOND").map_or(Ok(8.0), |rate| rate.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("step1_feed listening on http://{}", listener.local_addr()?);

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
        let _no_client_yet = quotes.send((quote.seq, event));
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn respond(request: &Request<Incoming>, board: &Board, quotes: &Quotes) -> Response<Body> {
    let (status, content_type, body) = match request.uri().path() {
        "/" => (200, "text/html; charset=utf-8", Full::from(PAGE).boxed()),
        "/quotes/stream" => (200, "text/event-stream", events(board, quotes)),
        _ => (404, "text/plain", Full::from("not found\n").boxed()),
    };
    // `no-cache`: every reader needs the live feed, never a stored copy.
    let headers = Response::builder().header("cache-control", "no-cache");
    let response = headers.status(status).header("content-type", content_type);
    response.body(body).expect("fixed, valid headers")
}

/// A client's stream: a snapshot, then each later quote, until a write fails (the client left).
fn events(board: &Board, quotes: &Quotes) -> Body {
    // Subscribe before reading the board, so that no quote can fall between the two.
    let quotes = quotes.subscribe();
    let board = board.borrow().clone(); // a copy: the market task must not wait for this client
    let seen = board.iter().map(|quote| quote.seq).max().unwrap_or(0);
    let data = serde_json::to_string(&board).expect("quotes always serialise");
    let first =
        format!("retry: 3000\nevent: snapshot\nid: {seen}\ndata: {{\"quotes\":{data}}}\n\n");
    let first = stream::once(async { Ok(Frame::data(Bytes::from(first))) });
    // `Err(Lagged)` (this client is 1024 quotes behind) ends the stream: the browser reconnects
    // to a fresh snapshot, where skipping on would leave some prices stale without a word.
    let rest = stream::unfold(quotes, |mut quotes| async move {
        Some((quotes.recv().await.ok()?, quotes))
    });
    let rest = rest.filter(move |(seq, _)| std::future::ready(*seq > seen));
    let rest = rest.map(|(_, event)| Ok(Frame::data(event)));
    BodyExt::boxed(StreamBody::new(first.chain(rest)))
}
