//! The stock ticker's ladder: its steps, and the why-tests that climb it.
//!
//! Every rung serves the same routes and formats, as far as it goes: `GET /` (a page with an
//! `EventSource`), `GET /quotes/stream?symbols=A,B` (a `snapshot` event whose data is
//! `{"quotes": [...]}`, then `quote` events whose data is one quote and whose id is its `seq`),
//! from step 2 `GET /symbols`, `GET /stats` (`{"sse_streams": ..., "last_seq": ...}`) and JSON
//! errors, from step 5 `GET /quotes/ws` (commands in, `{"type": ...}` messages out). Every quote
//! a rung sends is checked against the seeded simulation (`stock_ticker::market`): the same seed
//! must give the same quote for the same `seq`, on every rung.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use realtime_kit::client::{self, EventStream};
use realtime_kit::parser::MessageEvent;
use serde_json::Value;
use stock_ticker::market::{self, Market};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::clock_sse::{self, AbortOnDrop};
use crate::probe::{self, WAIT, within};
use crate::{Ladder, Outcome, Rung, Server, Step, WhyTest};

/// The stock ticker's ladder.
pub const LADDER: Ladder = Ladder {
    demo: "stock-ticker",
    steps: &[
        Step {
            name: "step1_feed",
            adds: "the smallest correct feed: one market task, a snapshot then every quote, the page",
            why_tests: &[SERVES_THE_MARKET],
        },
        Step {
            name: "step2_symbols",
            adds: "?symbols= to choose symbols, /symbols and /stats, JSON errors (400, 404, 405)",
            why_tests: &[
                SENDS_ONLY_THE_SYMBOLS_ASKED_FOR,
                LISTS_SYMBOLS_AND_COUNTS_STREAMS,
                ANSWERS_MISTAKES_IN_JSON,
            ],
        },
        Step {
            name: "step3_conflation",
            adds: "conflation: a client that falls behind gets each symbol's latest price, no backlog",
            why_tests: &[GIVES_A_SLOW_READER_THE_LATEST_PRICES],
        },
        Step {
            name: "step4_stopped_clients",
            adds: "a write-stall limit for clients that stop reading, a header-read timeout",
            why_tests: &[DROPS_A_STALLED_READER, clock_sse::DROPS_A_HALF_SENT_REQUEST],
        },
    ],
};

const SERVES_THE_MARKET: WhyTest = WhyTest {
    name: "serves_the_market",
    checks: "the page opens an EventSource on /quotes/stream and listens for `snapshot` and \
             `quote`; the stream is text/event-stream, no-cache, and starts with a snapshot of \
             all eight symbols, then quotes with id = seq, each the seeded market's (SEED=7); a \
             second client sees the same market; a reconnecting browser starts from a snapshot",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(serves_the_market(rung).await) }),
};

const SENDS_ONLY_THE_SYMBOLS_ASKED_FOR: WhyTest = WhyTest {
    name: "sends_only_the_symbols_asked_for",
    checks: "?symbols=HOOL,ACME (as a browser writes it, %2C) gets a snapshot of HOOL and ACME, \
             in that order, then quotes of those two only",
    limit: Duration::from_secs(30),
    run: |rung| {
        Box::pin(async move { Outcome::from(sends_only_the_symbols_asked_for(rung).await) })
    },
};

const LISTS_SYMBOLS_AND_COUNTS_STREAMS: WhyTest = WhyTest {
    name: "lists_symbols_and_counts_streams",
    checks: "GET /symbols lists the eight symbols with their names and opening prices; GET \
             /stats counts open streams, forgets closed ones, and knows the latest seq",
    limit: Duration::from_secs(30),
    run: |rung| {
        Box::pin(async move { Outcome::from(lists_symbols_and_counts_streams(rung).await) })
    },
};

const ANSWERS_MISTAKES_IN_JSON: WhyTest = WhyTest {
    name: "answers_mistakes_in_json",
    checks: "an unknown, empty, lower-case or broken symbol is 400 with a JSON {\"error\": ...} \
             (and valid_symbols for an unknown one); an unknown path is 404, a POST is 405 with \
             Allow: GET, both as JSON errors",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(answers_mistakes_in_json(rung).await) }),
};

const GIVES_A_SLOW_READER_THE_LATEST_PRICES: WhyTest = WhyTest {
    name: "gives_a_slow_reader_the_latest_prices",
    checks: "a reader that stops reading while the market makes 3,000 quotes (1,000 a second) \
             and then reads again is sent fewer than half of them: what the kernels held, then \
             each symbol's latest price, never an older price of a symbol after a newer one, \
             and its stream goes on",
    limit: Duration::from_secs(60),
    run: |rung| {
        Box::pin(async move { Outcome::from(gives_a_slow_reader_the_latest_prices(rung).await) })
    },
};

const DROPS_A_STALLED_READER: WhyTest = WhyTest {
    name: "drops_a_stalled_reader",
    checks: "a client that stops reading leaves /stats soon after STALL_TIMEOUT_MS (500 ms \
             here), while a client that reads stays",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(drops_a_stalled_reader(rung).await) }),
};

/// The seed every test starts the market with: not the default (2026), so a rung that ignores
/// `SEED` is caught.
const SEED: u64 = 7;

/// 200 updates a second: the tests that only need quotes do not wait long for them.
const FAST: &[(&str, &str)] = &[("SEED", "7"), ("UPDATES_PER_SECOND", "200")];

/// The eight symbols, in the order every rung lists them.
fn symbol_names() -> Vec<String> {
    market::default_symbols()
        .into_iter()
        .map(|spec| spec.symbol)
        .collect()
}

/// The quotes the market makes with [`SEED`]: what every rung must send for each `seq`.
struct Simulation {
    market: Market,
    /// Each symbol's opening quote (`seq` 0), as a snapshot shows a symbol that has not moved.
    opening: HashMap<String, Value>,
    /// Quote `n` at index `n - 1`, made as far as a test has asked.
    made: Vec<Value>,
}

impl Simulation {
    /// The furthest a test may ask for: far beyond any test's minute of quotes.
    const MAX_SEQ: u64 = 1_000_000;

    fn new() -> Self {
        let market = Market::open(market::default_symbols(), SEED);
        let opening = market
            .quotes()
            .into_iter()
            .map(|quote| (quote.symbol.clone(), to_value(&quote)))
            .collect();
        Self {
            market,
            opening,
            made: Vec::new(),
        }
    }

    /// Checks a quote as the page would use it: the seeded market's quote for its `seq`.
    /// Returns its `seq` and symbol.
    fn check(&mut self, quote: &Value) -> Result<(u64, String), String> {
        let shape = || {
            format!(
                "a quote is {quote}: it must be {{\"seq\", \"symbol\", \"price\", \"open\", \
                 \"high\", \"low\", \"change\", \"change_pct\"}} and nothing else, the same on \
                 every rung"
            )
        };
        let (Some(seq), Some(symbol)) = (quote["seq"].as_u64(), quote["symbol"].as_str()) else {
            return Err(shape());
        };
        let expected = if seq == 0 {
            self.opening.get(symbol).ok_or_else(shape)?
        } else if seq > Self::MAX_SEQ {
            return Err(format!(
                "a quote has seq {seq}, more than the market can have made in a test"
            ));
        } else {
            while self.made.len() < seq as usize {
                let made = self.market.step().1;
                self.made.push(to_value(&made));
            }
            &self.made[seq as usize - 1]
        };
        if quote != expected {
            return Err(if quote.as_object().map(|fields| fields.len()) != Some(8) {
                shape()
            } else {
                format!(
                    "quote {seq} is {quote}, but the market with SEED={SEED} makes {expected} \
                     as quote {seq}: the same seed must give the same prices, on every rung"
                )
            });
        }
        Ok((seq, symbol.to_owned()))
    }
}

fn to_value(quote: &market::Quote) -> Value {
    serde_json::to_value(quote).expect("a Quote always serialises")
}

/// Opens `GET path` as an event stream with `headers`, and checks it is one.
async fn open_stream(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<EventStream, String> {
    let stream = within(
        WAIT,
        || format!("GET {path} got no answer within {} s", WAIT.as_secs()),
        EventStream::connect(&server.url(path), headers),
    )
    .await?
    .map_err(|error| format!("GET {path} failed: {error}"))?;
    if stream.status() != 200 {
        return Err(format!(
            "GET {path} answered {}, not a stream",
            stream.status()
        ));
    }
    Ok(stream)
}

/// The next event, within `limit`.
async fn next_event(stream: &mut EventStream, limit: Duration) -> Result<MessageEvent, String> {
    tokio::time::timeout(limit, stream.next_event())
        .await
        .map_err(|_| format!("the stream sent nothing for {} s", limit.as_secs()))?
        .map_err(|error| format!("the stream broke off: {error}"))?
        .ok_or_else(|| {
            "the stream ended, though a market's stream goes on until the server stops".to_owned()
        })
}

/// A `snapshot` event: its id and its quotes, each checked against the simulation, as
/// `(seq, symbol)` in the order sent.
fn parse_snapshot(
    event: &MessageEvent,
    simulation: &mut Simulation,
) -> Result<(u64, Vec<(u64, String)>), String> {
    if event.event != "snapshot" {
        return Err(format!(
            "the stream began with a `{}` event, not a `snapshot`: a page that has just \
             connected shows no prices until each symbol happens to move",
            event.event
        ));
    }
    let shape = || {
        format!(
            "a snapshot's data is {}: it must be {{\"quotes\": [<the latest quote of each \
             symbol>]}}",
            event.data
        )
    };
    let data: Value = serde_json::from_str(&event.data).map_err(|_| shape())?;
    let quotes = data["quotes"].as_array().ok_or_else(shape)?;
    let quotes = quotes
        .iter()
        .map(|quote| simulation.check(quote))
        .collect::<Result<Vec<_>, _>>()?;
    let id = event.last_event_id.parse::<u64>().map_err(|_| {
        format!(
            "the snapshot's id is {:?}: it must be the latest seq on the board, so that ids \
             only rise",
            event.last_event_id
        )
    })?;
    Ok((id, quotes))
}

/// A `quote` event, checked against the simulation: its `(seq, symbol)`.
fn parse_quote(event: &MessageEvent, simulation: &mut Simulation) -> Result<(u64, String), String> {
    if event.event != "quote" {
        return Err(format!(
            "the stream sent a `{}` event where a `quote` was due",
            event.event
        ));
    }
    let data: Value = serde_json::from_str(&event.data)
        .map_err(|_| format!("a quote's data is not JSON: {}", event.data))?;
    let (seq, symbol) = simulation.check(&data)?;
    if event.last_event_id != seq.to_string() {
        return Err(format!(
            "quote {seq} came with the id {:?}: a quote's id is its seq",
            event.last_event_id
        ));
    }
    Ok((seq, symbol))
}

/// `GET /stats`: (open event streams, latest seq).
async fn stats(server: &Server) -> Result<(u64, u64), String> {
    let response = within(
        WAIT,
        || format!("GET /stats got no answer within {} s", WAIT.as_secs()),
        client::get(&server.url("/stats")),
    )
    .await?
    .map_err(|error| format!("GET /stats failed: {error}"))?;
    let shape = || {
        format!(
            "GET /stats answered {} {:?}: it must be 200 with {{\"sse_streams\": <open \
             streams>, \"last_seq\": <seq of the latest quote>, ...}}",
            response.status,
            response.text()
        )
    };
    if response.status != 200 {
        return Err(shape());
    }
    let json = response.json().map_err(|_| shape())?;
    match (json["sse_streams"].as_u64(), json["last_seq"].as_u64()) {
        (Some(streams), Some(last_seq)) => Ok((streams, last_seq)),
        _ => Err(shape()),
    }
}

/// Polls `/stats` until `done(open streams, latest seq)` holds; the last figures, and whether
/// it held within `limit`.
async fn stats_until(
    server: &Server,
    limit: Duration,
    done: impl Fn(u64, u64) -> bool,
) -> Result<((u64, u64), bool), String> {
    let deadline = Instant::now() + limit;
    loop {
        let (open, last_seq) = stats(server).await?;
        if done(open, last_seq) {
            return Ok(((open, last_seq), true));
        }
        if Instant::now() >= deadline {
            return Ok(((open, last_seq), false));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `method path` with `headers` on a connection of its own; returns once the response
/// head has arrived (a stream never ends, so its body is not waited for).
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response<Incoming>, String> {
    let what = format!("{method} {path}");
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new())?)
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
    };
    within(
        WAIT,
        || format!("{what} got no answer within {} s", WAIT.as_secs()),
        exchange,
    )
    .await?
    .map_err(|error| format!("{what} failed: {error}"))
}

/// A response's header as text.
fn header_of<'r>(response: &'r Response<Incoming>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The rung is a market feed at all: what every rung, step 1 on, serves.
async fn serves_the_market(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;

    let page = within(
        WAIT,
        || "GET / got no answer".to_owned(),
        client::get(&server.url("/")),
    )
    .await?
    .map_err(|error| format!("GET / failed: {error}"))?;
    let content_type = page
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    if page.status != 200 || !content_type.is_some_and(|value| value.starts_with("text/html")) {
        return Err(format!(
            "GET / answered {} with Content-Type {content_type:?}, not the HTML page",
            page.status
        ));
    }
    let html = page.text();
    if !html.contains("new EventSource(") || !html.contains("/quotes/stream") {
        return Err(
            "the page never opens `new EventSource(\"/quotes/stream\")`, so a browser \
                    never connects"
                .to_owned(),
        );
    }
    for name in ["snapshot", "quote"] {
        if !html.contains(&format!("addEventListener(\"{name}\""))
            && !html.contains(&format!("addEventListener('{name}'"))
        {
            return Err(format!(
                "the page does not listen with addEventListener(\"{name}\", ...): `{name}` is a \
                 named event, which onmessage never sees, so the table would stay empty"
            ));
        }
    }

    let mut simulation = Simulation::new();
    let mut first = open_stream(&server, "/quotes/stream", &[]).await?;
    let header = |stream: &EventStream, name: &str| {
        stream
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(&first, "content-type");
    if !content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("text/event-stream"))
    {
        return Err(format!(
            "GET /quotes/stream answered with Content-Type {content_type:?}: EventSource refuses \
             a stream that is not text/event-stream"
        ));
    }
    if !header(&first, "cache-control").is_some_and(|value| value.contains("no-cache")) {
        return Err(
            "GET /quotes/stream has no `Cache-Control: no-cache`, so a cache on the way \
                    may keep the stream, or hand a stored copy to the next reader"
                .to_owned(),
        );
    }
    let (snapshot_id, board) =
        parse_snapshot(&next_event(&mut first, WAIT).await?, &mut simulation)?;
    let listed: Vec<&str> = board.iter().map(|(_, symbol)| symbol.as_str()).collect();
    if listed != symbol_names() {
        return Err(format!(
            "the snapshot lists {listed:?}: it must hold the latest quote of each of the eight \
             symbols, in their order ({})",
            symbol_names().join(", ")
        ));
    }
    let newest = board.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
    if snapshot_id != newest {
        return Err(format!(
            "the snapshot's id is {snapshot_id}, but its newest quote is {newest}: with every \
             symbol in it, its id is the latest seq on the board"
        ));
    }
    let mut last = snapshot_id;
    for _ in 0..20 {
        let (seq, _) = parse_quote(&next_event(&mut first, WAIT).await?, &mut simulation)?;
        if seq <= last {
            return Err(format!(
                "quote {seq} came after {last}: a page that keeps up is sent each quote once, \
                 in the market's order, and none the snapshot already had"
            ));
        }
        last = seq;
    }

    // One market: a second client joins the market as it is now, not a market of its own.
    let mut second = open_stream(&server, "/quotes/stream", &[]).await?;
    let (theirs, _) = parse_snapshot(&next_event(&mut second, WAIT).await?, &mut simulation)?;
    if theirs < last {
        return Err(format!(
            "a second client that connected after quote {last} was sent a snapshot as of quote \
             {theirs}: each client has a market of its own, so the work is done once per \
             client and two clients see different prices"
        ));
    }
    parse_quote(&next_event(&mut second, WAIT).await?, &mut simulation)?;

    // A browser that reconnects sends the id it saw last; it needs the prices as they are now.
    let seen = last.to_string();
    let mut again = open_stream(&server, "/quotes/stream", &[("last-event-id", &seen)]).await?;
    let event = next_event(&mut again, WAIT).await?;
    if event.event != "snapshot" {
        return Err(format!(
            "a browser that reconnected with Last-Event-ID: {seen} was sent a `{}` event first, \
             not a snapshot: the prices that moved while it was away stay wrong on its page \
             until they move again",
            event.event
        ));
    }
    let (resumed, _) = parse_snapshot(&event, &mut simulation)?;
    if resumed < last {
        return Err(format!(
            "a browser that reconnected with Last-Event-ID: {seen} was sent a snapshot as of \
             quote {resumed}, older than what it had seen"
        ));
    }
    Ok(())
}

/// `?symbols=` chooses what a stream carries.
async fn sends_only_the_symbols_asked_for(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let mut simulation = Simulation::new();
    for (query, asked) in [
        ("?symbols=HOOL%2CACME", ["HOOL", "ACME"]),
        ("?symbols=WONK&symbols=INIT", ["WONK", "INIT"]),
    ] {
        let path = format!("/quotes/stream{query}");
        let mut stream = open_stream(&server, &path, &[]).await?;
        let (_, board) = parse_snapshot(&next_event(&mut stream, WAIT).await?, &mut simulation)?;
        let listed: Vec<&str> = board.iter().map(|(_, symbol)| symbol.as_str()).collect();
        if listed != asked {
            return Err(format!(
                "a page that asked for {query} was sent a snapshot of {}: it must hold {} only, \
                 in that order, or a phone watching two symbols pays for all eight",
                listed.join(", "),
                asked.join(" and ")
            ));
        }
        let mut got: HashMap<String, u32> = HashMap::new();
        while got.len() < 2 || got.values().sum::<u32>() < 12 {
            let (seq, symbol) =
                parse_quote(&next_event(&mut stream, WAIT).await?, &mut simulation)?;
            if !asked.contains(&symbol.as_str()) {
                return Err(format!(
                    "a page that asked for {query} was sent quote {seq} of {symbol}, which it \
                     did not ask for"
                ));
            }
            *got.entry(symbol).or_insert(0) += 1;
        }
    }
    Ok(())
}

/// `/symbols` says what exists; `/stats` counts what is open.
async fn lists_symbols_and_counts_streams(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let response = within(
        WAIT,
        || "GET /symbols got no answer".to_owned(),
        client::get(&server.url("/symbols")),
    )
    .await?
    .map_err(|error| format!("GET /symbols failed: {error}"))?;
    let expected: Vec<Value> = market::default_symbols()
        .into_iter()
        .map(|spec| {
            serde_json::json!({ "symbol": spec.symbol, "name": spec.name, "open": spec.open_cents })
        })
        .collect();
    let listed = response.json().ok();
    if response.status != 200 || listed.as_ref().and_then(Value::as_array) != Some(&expected) {
        return Err(format!(
            "GET /symbols answered {} {:?}: it must be 200 with the eight symbols as JSON, \
             [{{\"symbol\": \"ACME\", \"name\": \"Acme Corporation\", \"open\": 14250}}, ...], \
             so a page or a script can learn what it may ask for",
            response.status,
            response.text()
        ));
    }

    let mut simulation = Simulation::new();
    let mut first = open_stream(&server, "/quotes/stream", &[]).await?;
    let second = open_stream(&server, "/quotes/stream?symbols=ACME", &[]).await?;
    next_event(&mut first, WAIT).await?;
    let (seq, _) = parse_quote(&next_event(&mut first, WAIT).await?, &mut simulation)?;
    let ((open, last_seq), counted) =
        stats_until(&server, Duration::from_secs(3), |open, _| open == 2).await?;
    if !counted {
        return Err(format!(
            "/stats counted {open} open streams while 2 were open"
        ));
    }
    if last_seq < seq {
        return Err(format!(
            "/stats says the latest quote is {last_seq}, but the stream has already sent {seq}"
        ));
    }
    drop((first, second));
    let ((open, _), forgotten) =
        stats_until(&server, Duration::from_secs(3), |open, _| open == 0).await?;
    if !forgotten {
        return Err(format!(
            "two clients that closed their streams were still counted in /stats 3 s later \
             ({open} open): the server keeps something for every client that has gone"
        ));
    }
    Ok(())
}

/// A mistake gets a status and a sentence, as JSON.
async fn answers_mistakes_in_json(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let json_error = |what: &str, status: u16, body: &str| {
        let json: Option<Value> = serde_json::from_str(body).ok();
        match json {
            Some(json) if json["error"].is_string() => Ok(json),
            _ => Err(format!(
                "{what} got {status} with the body {body:?}: it must be JSON, {{\"error\": \
                 \"<what is wrong>\"}}, which a script can read and a person too"
            )),
        }
    };
    for (query, why) in [
        ("?symbols=ACME,NOPE", "NOPE is no symbol here"),
        ("?symbols=", "it names no symbol"),
        ("?symbols=acme", "symbols are capitals"),
        ("?symbols=%E2%28", "it is not UTF-8"),
    ] {
        let path = format!("/quotes/stream{query}");
        let headers = [("accept", "text/event-stream")];
        let response = send(server.addr, Method::GET, &path, &headers).await?;
        let status = response.status();
        if status != 400 {
            let got = if status == 200 {
                "a stream, as if nothing were wrong,".to_owned()
            } else {
                status.to_string()
            };
            return Err(format!(
                "a page that asked for {query} ({why}) got {got} instead of 400 with a JSON \
                 {{\"error\": ...}}: a typo in a symbol is a row that never fills, and nothing \
                 says why"
            ));
        }
        let content_type = header_of(&response, "content-type").map(str::to_owned);
        let body = probe::body_text(response, 64 * 1024, WAIT).await?;
        let json = json_error(&format!("GET {path}"), 400, &body)?;
        if !content_type.is_some_and(|value| value.starts_with("application/json")) {
            return Err(format!(
                "GET {path} got its JSON error without Content-Type: application/json"
            ));
        }
        if query.contains("NOPE") {
            let named = json["error"]
                .as_str()
                .is_some_and(|error| error.contains("NOPE"));
            let valid: Vec<String> =
                serde_json::from_value(json["valid_symbols"].clone()).unwrap_or_default();
            if !named || valid != symbol_names() {
                return Err(format!(
                    "GET {path} got 400 with {json}: the error must name NOPE, and \
                     valid_symbols list the eight symbols, so the page can say what to ask for"
                ));
            }
        }
    }
    let response = send(server.addr, Method::GET, "/quotes", &[]).await?;
    let status = response.status();
    let body = probe::body_text(response, 64 * 1024, WAIT).await?;
    if status != 404 {
        return Err(format!("GET /quotes (no such path) got {status}, not 404"));
    }
    json_error("GET /quotes (no such path)", 404, &body)?;

    let response = send(server.addr, Method::POST, "/quotes/stream", &[]).await?;
    let status = response.status();
    let allow = header_of(&response, "allow").map(str::to_owned);
    if status != 405 || allow.as_deref() != Some("GET") {
        let got = if status == 200 {
            "a stream".to_owned()
        } else {
            status.to_string()
        };
        return Err(format!(
            "POST /quotes/stream got {got} (Allow: {allow:?}): it must be 405 with Allow: GET, \
             which tells a script what it did wrong"
        ));
    }
    let body = probe::body_text(response, 64 * 1024, WAIT).await?;
    json_error("POST /quotes/stream", 405, &body)?;
    Ok(())
}

/// A socket with a tiny receive window and small segments, connected to `addr`: a client that
/// can stop reading and make the server's writes wait soon after.
async fn small_window_socket(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A receive buffer of 1 KiB (the kernel makes it a little more) and small segments, where
    // the system lets us ask: the server's send buffer grows with the window the client offers
    // and would otherwise hold thousands of quotes out of the server's sight (measured on
    // loopback: about 220 quotes with these, 1,200 with 4 KiB, 3,000 with neither).
    socket.set_recv_buffer_size(1024)?;
    #[cfg(unix)]
    socket2::SockRef::from(&socket).set_tcp_mss(536)?;
    socket.connect(addr).await
}

/// Conflation: a reader that falls behind skips to the latest prices.
async fn gives_a_slow_reader_the_latest_prices(rung: Rung) -> Result<(), String> {
    const STALL: u64 = 3_000;
    let server = rung
        .start(&[("SEED", "7"), ("UPDATES_PER_SECOND", "1000")])
        .await?;
    let mut simulation = Simulation::new();
    let socket = small_window_socket(server.addr)
        .await
        .map_err(|error| format!("could not open the slow reader's connection: {error}"))?;
    let url = server.url("/quotes/stream");
    let mut reader = within(
        WAIT,
        || "GET /quotes/stream got no answer".to_owned(),
        EventStream::over(socket, &url, &[]),
    )
    .await?
    .map_err(|error| format!("GET /quotes/stream failed: {error}"))?;
    let (_, board) = parse_snapshot(&next_event(&mut reader, WAIT).await?, &mut simulation)?;
    let mut latest: HashMap<String, u64> = board
        .into_iter()
        .map(|(seq, symbol)| (symbol, seq))
        .collect();

    // The reader stops reading while the market makes STALL quotes.
    let (_, stalled_at) = stats(&server).await?;
    let ((_, resumed_at), made) = stats_until(&server, Duration::from_secs(30), |_, last| {
        last >= stalled_at + STALL
    })
    .await?;
    if !made {
        return Err(format!(
            "the market made only {} quotes in 30 s, though UPDATES_PER_SECOND asked for 1000 a \
             second",
            resumed_at - stalled_at
        ));
    }
    let made = resumed_at - stalled_at;

    let mut received = 0u64;
    loop {
        let event = match next_event(&mut reader, WAIT).await {
            Ok(event) => event,
            Err(failure) if received > 0 => {
                return Err(format!(
                    "a reader that stopped reading while the market made {made} quotes was sent \
                     {received} old ones when it read again, and then: {failure}. A phone that \
                     pauses for a few seconds (a tunnel, a busy tab) loses its stream, and its \
                     page shows old prices until the browser reconnects"
                ));
            }
            Err(failure) => return Err(failure),
        };
        if event.event == "snapshot" {
            // A fresh snapshot mid-stream is a way to catch up, too.
            let (_, board) = parse_snapshot(&event, &mut simulation)?;
            latest.extend(board.into_iter().map(|(seq, symbol)| (symbol, seq)));
            continue;
        }
        let (seq, symbol) = parse_quote(&event, &mut simulation)?;
        let had = latest.insert(symbol.clone(), seq).unwrap_or(0);
        if seq <= had {
            return Err(format!(
                "a reader that had {symbol} at quote {had} was then sent quote {seq}, an older \
                 price: its page shows the price going back to what it was"
            ));
        }
        received += 1;
        if seq >= resumed_at {
            break; // caught up with the market as it was when the reader read again
        }
    }
    if received >= made / 2 {
        return Err(format!(
            "a reader that stopped reading while the market made {made} quotes was sent \
             {received} of them when it read again, oldest first: a phone that pauses (a \
             tunnel, a busy tab) is shown prices seconds old while it works through the \
             backlog, and the server keeps the backlog for it, so a slow client falls further \
             behind for ever"
        ));
    }
    // And it is live again: the next quotes come as the market makes them.
    parse_quote(&next_event(&mut reader, WAIT).await?, &mut simulation)?;
    Ok(())
}

/// The write-stall limit: a client that stops reading is let go, one that reads is kept.
async fn drops_a_stalled_reader(rung: Rung) -> Result<(), String> {
    const LIMIT_MS: u64 = 500;
    let limit = LIMIT_MS.to_string();
    // A thousand quotes a second fill the stalled client's buffers in about a second.
    let server = rung
        .start(&[
            ("SEED", "7"),
            ("UPDATES_PER_SECOND", "1000"),
            ("STALL_TIMEOUT_MS", &limit),
        ])
        .await?;

    let mut reader = open_stream(&server, "/quotes/stream", &[]).await?;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reading = AbortOnDrop(tokio::spawn({
        let received = received.clone();
        async move {
            while let Ok(Some(_)) = reader.next_event().await {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }));

    let mut stalled = small_window_socket(server.addr)
        .await
        .map_err(|error| format!("could not open the stalled client's connection: {error}"))?;
    let request = format!(
        "GET /quotes/stream HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stalled
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("could not send the stalled client's request: {error}"))?;
    let ((open, _), both) =
        stats_until(&server, Duration::from_secs(3), |open, _| open == 2).await?;
    if !both {
        return Err(format!(
            "a client that asked for /quotes/stream and then read nothing never showed in \
             /stats (it says {open} open streams; 2 were open)"
        ));
    }

    let patience = Duration::from_millis(LIMIT_MS) + Duration::from_secs(5);
    let (_, let_go) = stats_until(&server, patience, |open, _| open < 2).await?;
    if !let_go {
        return Err(format!(
            "a client that stopped reading (a phone that lost its network, a laptop put to \
             sleep) was still counted as an open stream {} s later, long past the {LIMIT_MS} ms \
             write-stall limit STALL_TIMEOUT_MS asked for: its connection, its buffers and its \
             stream stay until the kernel gives up on the connection, which can take hours",
            patience.as_secs()
        ));
    }

    // The reader must go on, for twice the limit after the stalled client was let go.
    let at_cut = received.load(std::sync::atomic::Ordering::Relaxed);
    let (_, cut_too) = stats_until(&server, Duration::from_millis(2 * LIMIT_MS), |open, _| {
        open != 1
    })
    .await?;
    if cut_too
        || reading.0.is_finished()
        || received.load(std::sync::atomic::Ordering::Relaxed) == at_cut
    {
        return Err(
            "the client that kept reading was cut off too: the write-stall limit must \
                    only let go of a client that stops reading"
                .to_owned(),
        );
    }
    drop(stalled);
    Ok(())
}
