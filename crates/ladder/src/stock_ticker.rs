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

use http::{Method, Response, header};
use hyper::body::Incoming;
use realtime_kit::client::{self, EventStream};
use realtime_kit::parser::MessageEvent;
use serde_json::Value;
use stock_ticker::market::{self, Market};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
        Step {
            name: "step5_websocket_feed",
            adds: "the same feed over WebSocket: subscribe/unsubscribe, a checked handshake, Origin",
            why_tests: &[
                STREAMS_OVER_A_WEBSOCKET,
                REFUSES_FOREIGN_PAGES_AND_BAD_HANDSHAKES,
            ],
        },
        Step {
            name: "step6_liveness",
            adds: "Pings and an idle timeout on WebSockets, keep-alive comments, X-Accel-Buffering",
            why_tests: &[
                PINGS_AND_CLOSES_A_SILENT_SOCKET,
                KEEPS_A_QUIET_STREAM_ALIVE,
                TELLS_PROXIES_NOT_TO_BUFFER,
            ],
        },
        Step {
            name: "step7_going_away",
            adds: "graceful shutdown: streams end, sockets get Close 1001, the process exits",
            why_tests: &[EXITS_ON_A_SIGNAL],
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
    checks: "a reader that stops reading while the market makes 2,000 quotes (1,000 a second) \
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

const STREAMS_OVER_A_WEBSOCKET: WhyTest = WhyTest {
    name: "streams_over_a_websocket",
    checks: "on /quotes/ws a subscribe to WONK and INIT gets a snapshot of those two, then their \
             quotes only, each the event stream's with \"type\": \"quote\"; after \
             `unsubscribed` no WONK follows; a bad command or an unknown symbol gets an `error` \
             message and the socket stays open",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(streams_over_a_websocket(rung).await) }),
};

const REFUSES_FOREIGN_PAGES_AND_BAD_HANDSHAKES: WhyTest = WhyTest {
    name: "refuses_foreign_pages_and_bad_handshakes",
    checks: "a page of this server may open /quotes/ws, one from https://evil.example gets 403; \
             a request without Sec-WebSocket-Key gets 400, a plain GET 426 with Upgrade: \
             websocket",
    limit: Duration::from_secs(30),
    run: |rung| {
        Box::pin(async move { Outcome::from(refuses_foreign_pages_and_bad_handshakes(rung).await) })
    },
};

const PINGS_AND_CLOSES_A_SILENT_SOCKET: WhyTest = WhyTest {
    name: "pings_and_closes_a_silent_socket",
    checks: "a WebSocket client is sent a Ping every PING_MS (200 ms here); one that answers \
             nothing is closed with 1008 soon after IDLE_TIMEOUT_MS (1 s here), one that answers \
             stays",
    limit: Duration::from_secs(30),
    run: |rung| {
        Box::pin(async move { Outcome::from(pings_and_closes_a_silent_socket(rung).await) })
    },
};

const KEEPS_A_QUIET_STREAM_ALIVE: WhyTest = WhyTest {
    name: "keeps_a_quiet_stream_alive",
    checks: "with the next quote 10 s away (UPDATES_PER_SECOND=0.1), the event stream carries a \
             comment line every KEEP_ALIVE_MS (200 ms here)",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(keeps_a_quiet_stream_alive(rung).await) }),
};

const TELLS_PROXIES_NOT_TO_BUFFER: WhyTest = WhyTest {
    name: "tells_proxies_not_to_buffer",
    checks: "the event stream's response says X-Accel-Buffering: no",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(tells_proxies_not_to_buffer(rung).await) }),
};

const EXITS_ON_A_SIGNAL: WhyTest = WhyTest {
    name: "exits_on_a_signal",
    checks: "with an event stream and a WebSocket open, SIGINT (Ctrl-C) and SIGTERM each make \
             the process end the stream cleanly, close the socket with 1001 (going away) and \
             exit with success within 4 s",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(exits_on_a_signal(rung)),
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

/// A response's header as text.
fn header_of<'r>(response: &'r Response<Incoming>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The rung is a market feed at all: what every rung, step 1 on, serves.
async fn serves_the_market(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;

    let html = probe::html_page(&server.url("/")).await?;
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
        let response = probe::request(server.addr, Method::GET, &path, &headers).await?;
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
    let response = probe::request(server.addr, Method::GET, "/quotes", &[]).await?;
    let status = response.status();
    let body = probe::body_text(response, 64 * 1024, WAIT).await?;
    if status != 404 {
        return Err(format!("GET /quotes (no such path) got {status}, not 404"));
    }
    json_error("GET /quotes (no such path)", 404, &body)?;

    let response = probe::request(server.addr, Method::POST, "/quotes/stream", &[]).await?;
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

/// The receive buffer of the ticker's stalled readers: 1 KiB (the kernel makes it a little
/// more). The server's send buffer grows with the window the client offers and would otherwise
/// hold thousands of quotes out of the server's sight (measured on loopback: about 220 quotes
/// with this and small segments, 1,200 with 4 KiB, 3,000 with neither).
const STALLED_RECEIVE_BUFFER: u32 = 1024;

/// Conflation: a reader that falls behind skips to the latest prices.
async fn gives_a_slow_reader_the_latest_prices(rung: Rung) -> Result<(), String> {
    const STALL: u64 = 2_000;
    let server = rung
        .start(&[("SEED", "7"), ("UPDATES_PER_SECOND", "1000")])
        .await?;
    let mut simulation = Simulation::new();
    let socket = probe::narrow_connection(server.addr, STALLED_RECEIVE_BUFFER)
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
                let then = if failure.starts_with("the stream ended") {
                    "its stream ended".to_owned()
                } else {
                    failure
                };
                return Err(format!(
                    "a reader that stopped reading while the market made {made} quotes was sent \
                     {received} old ones when it read again, and then {then}: a phone that \
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

    let mut stalled = probe::narrow_connection(server.addr, STALLED_RECEIVE_BUFFER)
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

/// A WebSocket client, as a page's `new WebSocket(...)` is.
type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens `/quotes/ws` with `headers`; the error says what a page would meet.
async fn open_socket(server: &Server, headers: &[(&str, &str)]) -> Result<Client, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/quotes/ws", server.addr);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|error| format!("{url} is no WebSocket address: {error}"))?;
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|error| format!("a bad header name {name}: {error}"))?;
        let value = header::HeaderValue::from_str(value)
            .map_err(|error| format!("a bad header value {value}: {error}"))?;
        request.headers_mut().insert(name, value);
    }
    let connected = within(
        WAIT,
        || format!("opening {url} got no answer within {} s", WAIT.as_secs()),
        tokio_tungstenite::connect_async(request),
    )
    .await?;
    match connected {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(format!(
            "a page's `new WebSocket(\"{url}\")` got {} instead of 101 Switching Protocols{}",
            response.status(),
            if response.status() == 404 {
                ": there is no WebSocket here, so a page that changes its symbols must close \
                 its stream and open another"
            } else {
                ""
            }
        )),
        Err(error) => Err(format!("opening {url} failed: {error}")),
    }
}

/// The next text message as JSON, within `limit`; Pings and Pongs are skipped.
async fn next_message(socket: &mut Client, limit: Duration) -> Result<Value, String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let read = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).map_err(|_| {
                        format!("the socket sent a message that is not JSON: {text}")
                    });
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err("the socket sent a binary message; the feed sends JSON text".into());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!("the server closed the socket ({frame:?})"));
                }
                Some(Err(error)) => return Err(format!("the socket broke off: {error}")),
                None => return Err("the socket ended".to_owned()),
            }
        }
    };
    within(
        limit,
        || format!("the socket sent nothing for {} s", limit.as_secs()),
        read,
    )
    .await?
}

async fn send_text(socket: &mut Client, text: &str) -> Result<(), String> {
    use futures_util::SinkExt;
    within(
        WAIT,
        || "sending a command took more than 5 s".to_owned(),
        socket.send(tokio_tungstenite::tungstenite::Message::text(text)),
    )
    .await?
    .map_err(|error| format!("sending {text} failed: {error}"))
}

/// A `quote` message, checked against the simulation: the event stream's quote with a `type`.
fn socket_quote(message: &Value, simulation: &mut Simulation) -> Result<(u64, String), String> {
    let mut quote = message.clone();
    let Some(fields) = quote.as_object_mut() else {
        return Err(format!("the socket sent {message}, not a JSON object"));
    };
    if fields.remove("type") != Some(Value::from("quote")) {
        return Err(format!(
            "the socket sent {message} where a {{\"type\": \"quote\", ...}} was due"
        ));
    }
    simulation.check(&quote)
}

/// The quotes of a `snapshot` message, checked, as `(seq, symbol)`.
fn socket_snapshot(
    message: &Value,
    simulation: &mut Simulation,
) -> Result<Vec<(u64, String)>, String> {
    let quotes = match (message["type"].as_str(), message["quotes"].as_array()) {
        (Some("snapshot"), Some(quotes)) => quotes,
        _ => {
            return Err(format!(
                "a subscribe was answered with {message}, not {{\"type\": \"snapshot\", \
                 \"quotes\": [...]}}: the page has no prices until each symbol moves"
            ));
        }
    };
    quotes.iter().map(|quote| simulation.check(quote)).collect()
}

/// Reads past `quote` messages of `allowed` symbols to the next other message.
async fn reply_after_quotes(
    socket: &mut Client,
    simulation: &mut Simulation,
    allowed: &[&str],
) -> Result<Value, String> {
    for _ in 0..10_000 {
        let message = next_message(socket, WAIT).await?;
        if message["type"] != "quote" {
            return Ok(message);
        }
        let (seq, symbol) = socket_quote(&message, simulation)?;
        if !allowed.contains(&symbol.as_str()) {
            return Err(format!(
                "a client subscribed to {} only was sent quote {seq} of {symbol}",
                allowed.join(" and ")
            ));
        }
    }
    Err("the socket sent 10,000 quotes and no answer to the command".to_owned())
}

/// The same feed over WebSocket, with commands.
async fn streams_over_a_websocket(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let mut simulation = Simulation::new();
    let mut socket = open_socket(&server, &[]).await?;
    send_text(
        &mut socket,
        r#"{"type":"subscribe","symbols":["WONK","INIT"]}"#,
    )
    .await?;
    let snapshot = socket_snapshot(&next_message(&mut socket, WAIT).await?, &mut simulation)?;
    let listed: Vec<&str> = snapshot.iter().map(|(_, symbol)| symbol.as_str()).collect();
    if listed != ["WONK", "INIT"] {
        return Err(format!(
            "a subscribe to WONK and INIT was answered with a snapshot of {listed:?}"
        ));
    }
    let mut last = snapshot.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
    for _ in 0..12 {
        let (seq, symbol) = socket_quote(&next_message(&mut socket, WAIT).await?, &mut simulation)?;
        if symbol != "WONK" && symbol != "INIT" {
            return Err(format!(
                "a client subscribed to WONK and INIT was sent quote {seq} of {symbol}, which it \
                 did not ask for"
            ));
        }
        if seq <= last {
            return Err(format!(
                "quote {seq} came after {last}: a client that keeps up is sent each quote once, \
                 in the market's order"
            ));
        }
        last = seq;
    }

    send_text(&mut socket, r#"{"type":"unsubscribe","symbols":["WONK"]}"#).await?;
    let confirmed = reply_after_quotes(&mut socket, &mut simulation, &["WONK", "INIT"]).await?;
    if confirmed["type"] != "unsubscribed" || confirmed["symbols"] != serde_json::json!(["WONK"]) {
        return Err(format!(
            "an unsubscribe from WONK was answered with {confirmed}, not {{\"type\": \
             \"unsubscribed\", \"symbols\": [\"WONK\"]}}"
        ));
    }
    for _ in 0..8 {
        let (seq, symbol) = socket_quote(&next_message(&mut socket, WAIT).await?, &mut simulation)?;
        if symbol != "INIT" {
            return Err(format!(
                "after `unsubscribed` from WONK the client was sent quote {seq} of {symbol}: \
                 once confirmed, no quote of it may follow"
            ));
        }
    }

    for (bad, what) in [
        ("not json", "a command that is not JSON"),
        (r#"{"type":"buy","symbols":["ACME"]}"#, "an unknown command"),
        (
            r#"{"type":"subscribe","symbols":"ACME"}"#,
            "`symbols` that is no list",
        ),
        (
            r#"{"type":"subscribe","symbols":["NOPE"]}"#,
            "an unknown symbol",
        ),
    ] {
        send_text(&mut socket, bad).await?;
        let reply = reply_after_quotes(&mut socket, &mut simulation, &["INIT"])
            .await
            .map_err(|failure| format!("after {what} ({bad}): {failure}"))?;
        if reply["type"] != "error" || !reply["error"].is_string() {
            return Err(format!(
                "{what} ({bad}) was answered with {reply}, not {{\"type\": \"error\", \
                 \"error\": \"<what is wrong>\"}}"
            ));
        }
        if bad.contains("NOPE") {
            let valid: Vec<String> =
                serde_json::from_value(reply["valid_symbols"].clone()).unwrap_or_default();
            if valid != symbol_names() {
                return Err(format!(
                    "an unknown symbol was answered with {reply}: its valid_symbols must list the \
                     eight symbols"
                ));
            }
        }
    }
    send_text(&mut socket, r#"{"type":"subscribe","symbols":["ACME"]}"#).await?;
    let reply = reply_after_quotes(&mut socket, &mut simulation, &["INIT"]).await?;
    let snapshot = socket_snapshot(&reply, &mut simulation).map_err(|failure| {
        format!("after the bad commands the socket was not usable: {failure}")
    })?;
    if snapshot.len() != 1 || snapshot[0].1 != "ACME" {
        return Err(format!(
            "a subscribe to ACME was answered with {reply}: a snapshot of ACME alone"
        ));
    }
    Ok(())
}

/// Only this server's pages, and only real handshakes, get a socket.
async fn refuses_foreign_pages_and_bad_handshakes(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let own = format!("http://{}", server.addr);
    open_socket(&server, &[("origin", &own)])
        .await
        .map_err(|failure| format!("a page of this server (Origin: {own}): {failure}"))?;
    match open_socket(&server, &[("origin", "https://evil.example")]).await {
        Ok(_) => {
            return Err(
                "a page on https://evil.example opened the feed's WebSocket: any site a \
                        user visits could open it in their name (cross-site WebSocket \
                        hijacking); it must get 403"
                    .to_owned(),
            );
        }
        Err(failure) if !failure.contains(" got 403 ") => {
            return Err(format!(
                "a page on https://evil.example was refused, but not with 403: {failure}"
            ));
        }
        Err(_) => {}
    }
    let upgrade = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
    ];
    let response = probe::request(server.addr, Method::GET, "/quotes/ws", &upgrade).await?;
    if response.status() != 400 {
        return Err(format!(
            "a WebSocket handshake without Sec-WebSocket-Key got {}, not 400: the server \
             cannot compute Sec-WebSocket-Accept without it, so no client could trust the 101",
            response.status()
        ));
    }
    let response = probe::request(server.addr, Method::GET, "/quotes/ws", &[]).await?;
    let hint = header_of(&response, "upgrade").map(str::to_owned);
    if response.status() != 426 || !hint.is_some_and(|hint| hint.eq_ignore_ascii_case("websocket"))
    {
        return Err(format!(
            "a plain GET /quotes/ws (a browser tab, curl) got {} (Upgrade: {:?}), not 426 \
             Upgrade Required with Upgrade: websocket, which says what to speak instead",
            response.status(),
            header_of(&response, "upgrade")
        ));
    }
    Ok(())
}

/// A WebSocket client that sends nothing after its handshake, not even the Pong a browser
/// answers a Ping with: what a vanished client looks like from the server. It reads frames
/// itself, since a WebSocket library would answer the Pings.
struct SilentSocket {
    tcp: TcpStream,
    raw: Vec<u8>,
}

impl SilentSocket {
    async fn open(addr: SocketAddr) -> Result<Self, String> {
        use tokio::io::AsyncReadExt;
        let mut tcp = within(
            WAIT,
            || "could not connect".to_owned(),
            TcpStream::connect(addr),
        )
        .await?
        .map_err(|error| format!("could not connect: {error}"))?;
        let handshake = format!(
            "GET /quotes/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: \
             Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: \
             13\r\n\r\n"
        );
        tcp.write_all(handshake.as_bytes())
            .await
            .map_err(|error| format!("could not send the handshake: {error}"))?;
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut buffer = [0u8; 4096];
            let read = within(
                WAIT,
                || "the handshake got no answer".to_owned(),
                tcp.read(&mut buffer),
            )
            .await?
            .map_err(|error| format!("the handshake broke off: {error}"))?;
            if read == 0 || raw.len() > 64 * 1024 {
                return Err("the handshake got no answer".to_owned());
            }
            raw.extend_from_slice(&buffer[..read]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            let status = head.lines().next().unwrap_or("").to_owned();
            return Err(format!(
                "a WebSocket handshake to /quotes/ws got {status:?}"
            ));
        }
        raw.drain(..head_end);
        Ok(Self { tcp, raw })
    }

    /// The next frame as (opcode, payload); `None` once the server has closed the connection.
    /// Server frames are not masked; this reads the short and 16-bit lengths the feed uses.
    async fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.raw.len() >= 2 {
                let (length, header) = match self.raw[1] & 0x7f {
                    126 if self.raw.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.raw[2], self.raw[3]])),
                        4,
                    ),
                    127 => return Err("the server sent a frame over 64 KiB".to_owned()),
                    126 => (usize::MAX, 4),
                    short => (usize::from(short), 2),
                };
                if length != usize::MAX && self.raw.len() >= header + length {
                    let opcode = self.raw[0] & 0x0f;
                    let payload = self.raw.drain(..header + length).skip(header).collect();
                    return Ok(Some((opcode, payload)));
                }
            }
            let mut buffer = [0u8; 16 * 1024];
            match self.tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(read) => self.raw.extend_from_slice(&buffer[..read]),
            }
        }
    }
}

/// The heartbeat: Pings go out, and a client that answers none of them is let go.
async fn pings_and_closes_a_silent_socket(rung: Rung) -> Result<(), String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = rung
        .start(&[
            ("SEED", "7"),
            ("UPDATES_PER_SECOND", "200"),
            ("PING_MS", "200"),
            ("IDLE_TIMEOUT_MS", "1000"),
        ])
        .await?;
    let mut silent = SilentSocket::open(server.addr).await?;
    let patience = Duration::from_secs(2);
    let pinged = tokio::time::timeout(patience, async {
        loop {
            match silent.next_frame().await {
                Ok(Some((0x9, _))) => return Ok(()),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("the server closed the socket before any Ping".to_owned()),
                Err(error) => return Err(error),
            }
        }
    })
    .await;
    match pinged {
        Ok(result) => result?,
        Err(_) => {
            return Err(format!(
                "a WebSocket client was sent no Ping in {} s, though PING_MS asked for one every \
                 200 ms: a client that vanished without closing (a laptop shut, a phone out of \
                 coverage) holds its socket and its task until a write fails, which on a quiet \
                 feed takes many minutes, and a proxy closes a socket that has been quiet for its \
                 timeout",
                patience.as_secs()
            ));
        }
    }
    let patience = Duration::from_secs(3);
    let closed = tokio::time::timeout(patience, async {
        loop {
            match silent.next_frame().await? {
                Some((0x8, payload)) => return Ok(Some(payload)),
                Some(_) => continue,
                None => return Ok::<_, String>(None),
            }
        }
    })
    .await;
    match closed {
        Err(_) => {
            return Err(format!(
                "a WebSocket client that answered no Ping was still connected {} s later, \
                 though IDLE_TIMEOUT_MS asked for 1 s: the Pings find nobody, and the socket and its \
                 task stay",
                patience.as_secs()
            ));
        }
        Ok(Ok(None)) => {
            return Err(
                "a WebSocket client that answered no Ping was cut off without a Close \
                        frame: send Close 1008 (policy), so a client that was only slow knows \
                        why"
                .to_owned(),
            );
        }
        Ok(Ok(Some(payload))) => {
            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            if code != Some(1008) {
                return Err(format!(
                    "a WebSocket client that answered no Ping was closed with {code:?}, not 1008 \
                     (policy violation)"
                ));
            }
        }
        Ok(Err(error)) => return Err(error),
    }

    // A client that answers (tungstenite does, as browsers do) stays.
    let mut live = open_socket(&server, &[]).await?;
    let watched = Duration::from_millis(2500);
    let pings = tokio::time::timeout(watched, async {
        let mut pings = 0;
        loop {
            match live.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(_)) => {}
                other => return (pings, format!("{other:?}")),
            }
        }
    })
    .await;
    if let Ok((pings, end)) = pings {
        return Err(format!(
            "a WebSocket client that answered every Ping ({pings} of them) was closed within 2.5 s \
             ({end}): the idle timeout must only let go of a client that sends nothing at all"
        ));
    }
    Ok(())
}

/// Keep-alive comments while no quote is due.
async fn keeps_a_quiet_stream_alive(rung: Rung) -> Result<(), String> {
    let server = rung
        .start(&[
            ("SEED", "7"),
            ("UPDATES_PER_SECOND", "0.1"),
            ("KEEP_ALIVE_MS", "200"),
        ])
        .await?;
    let patience = Duration::from_secs(3);
    match probe::comments_within(server.addr, "/quotes/stream", 2, patience).await? {
        probe::Comments::Seen => Ok(()),
        probe::Comments::Ended => Err(
            "the stream ended, though a market's stream goes on until the server stops".to_owned(),
        ),
        probe::Comments::TooFew(count) => Err(format!(
            "with the next quote 10 s away (UPDATES_PER_SECOND=0.1), the stream sent {} in {} s, \
             though KEEP_ALIVE_MS asked for a comment every 200 ms: a proxy in front closes a \
             connection that has been silent for its read timeout (nginx: 60 s), and a client \
             that vanished without closing its connection is never noticed",
            probe::comments_seen(count),
            patience.as_secs()
        )),
    }
}

/// `X-Accel-Buffering: no` on the stream.
async fn tells_proxies_not_to_buffer(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let stream = open_stream(&server, "/quotes/stream", &[]).await?;
    let value = stream
        .headers()
        .get("x-accel-buffering")
        .and_then(|v| v.to_str().ok());
    if !value.is_some_and(|value| value.eq_ignore_ascii_case("no")) {
        return Err(
            "the stream's response has no `X-Accel-Buffering: no`: nginx in front \
                    buffers what it proxies by default, so the page would get its quotes late \
                    and in bursts"
                .to_owned(),
        );
    }
    Ok(())
}

/// SIGINT and SIGTERM with a stream and a socket open: a clean end of both and a clean exit.
#[cfg(unix)]
async fn exits_on_a_signal(rung: Rung) -> Outcome {
    use futures_util::StreamExt;
    use rustix::process::Signal;
    use std::os::unix::process::ExitStatusExt;
    use tokio_tungstenite::tungstenite::Message;

    let signals = [
        (Signal::INT, "Ctrl-C (SIGINT)"),
        (
            Signal::TERM,
            "SIGTERM (what kill, systemd and docker stop send)",
        ),
    ];
    let limit = Duration::from_secs(4);
    for (signal, name) in signals {
        let attempt = async {
            let mut server = rung.start(FAST).await?;
            let mut simulation = Simulation::new();
            let mut stream = open_stream(&server, "/quotes/stream", &[]).await?;
            parse_snapshot(&next_event(&mut stream, WAIT).await?, &mut simulation)?;
            let mut socket = open_socket(&server, &[]).await?;
            send_text(&mut socket, r#"{"type":"subscribe","symbols":["ACME"]}"#).await?;
            socket_snapshot(&next_message(&mut socket, WAIT).await?, &mut simulation)?;
            server.send_signal(signal)?;
            let stream_ended = async {
                loop {
                    match stream.next_event().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return Ok(()),
                        Err(error) => return Err(error.to_string()),
                    }
                }
            };
            let socket_closed = async {
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Close(frame))) => {
                            // Read on, as a browser does: tungstenite answers the Close, and
                            // the server may wait for that answer before it lets go.
                            while let Some(Ok(_)) = socket.next().await {}
                            return Ok(frame.map(|f| f.code));
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => return Err(error.to_string()),
                        None => return Err("the connection ended".to_owned()),
                    }
                }
            };
            let (ended, closed, exit) = tokio::join!(
                tokio::time::timeout(limit, stream_ended),
                tokio::time::timeout(limit, socket_closed),
                server.exit_within(limit)
            );
            match exit {
                None => {
                    return Err(format!(
                        "on {name} the server never exited while a browser was connected ({} s): \
                         hyper waits for every response to finish, and an event stream never \
                         finishes unless it ends itself on shutdown",
                        limit.as_secs()
                    ));
                }
                Some(status) if status.signal().is_some() => {
                    return Err(format!(
                        "on {name} the server was killed by the signal instead of shutting down: \
                         the open stream and socket were cut off mid-response, the page cannot \
                         tell a restart from a broken network, and nothing after the signal ran"
                    ));
                }
                Some(status) if !status.success() => {
                    return Err(format!(
                        "on {name} the server exited with {status}, not success"
                    ));
                }
                Some(_) => {}
            }
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(format!(
                        "on {name} the server exited, but the open event stream was cut off \
                         ({error}) instead of ended: the browser sees a network error, not the \
                         end of the stream"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "on {name} the server exited, but the browser's event stream did not end"
                    ));
                }
            }
            match closed {
                Ok(Ok(Some(code))) if u16::from(code) == 1001 => Ok(()),
                Ok(Ok(code)) => Err(format!(
                    "on {name} the WebSocket was closed with {code:?}, not 1001 (going away), \
                     which tells the page the server is leaving and it should come back later"
                )),
                Ok(Err(error)) => Err(format!(
                    "on {name} the WebSocket was cut off ({error}) without a Close frame: hyper \
                     no longer sees an upgraded connection, so shutdown must close each socket \
                     itself (1001, going away) and wait for it"
                )),
                Err(_) => Err(format!(
                    "on {name} the server exited, but the WebSocket got no Close frame"
                )),
            }
        };
        if let Err(failure) = attempt.await {
            return Outcome::Fail(failure);
        }
    }
    Outcome::Pass
}

/// Signals are Unix's: elsewhere the check says it cannot run.
#[cfg(not(unix))]
async fn exits_on_a_signal(_rung: Rung) -> Outcome {
    Outcome::CannotRun(
        "it sends SIGINT and SIGTERM, which only Unix has; run it on Linux or macOS".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_must_be_the_seeded_markets_for_its_seq() {
        let mut simulation = Simulation::new();
        let mut market = Market::open(market::default_symbols(), SEED);
        let opening = market.quotes().remove(0);
        let first = market.step().1;
        let second = market.step().1;
        assert_eq!(
            simulation.check(&to_value(&second)),
            Ok((2, second.symbol.clone()))
        );
        assert_eq!(
            simulation.check(&to_value(&first)),
            Ok((1, first.symbol.clone()))
        );
        assert_eq!(
            simulation.check(&to_value(&opening)),
            Ok((0, "ACME".into()))
        );

        let mut moved = to_value(&second);
        moved["price"] = Value::from(second.price + 1);
        assert!(simulation.check(&moved).unwrap_err().contains("SEED=7"));
        let mut tagged = to_value(&first);
        tagged["type"] = Value::from("quote");
        assert!(
            simulation
                .check(&tagged)
                .unwrap_err()
                .contains("nothing else")
        );
        let far = serde_json::json!({ "seq": Simulation::MAX_SEQ + 1, "symbol": "ACME" });
        assert!(simulation.check(&far).unwrap_err().contains("more than"));
    }

    #[test]
    fn a_snapshot_lists_checked_quotes_and_its_id() {
        let mut simulation = Simulation::new();
        let quotes: Vec<Value> = Market::open(market::default_symbols(), SEED)
            .quotes()
            .iter()
            .map(to_value)
            .collect();
        let event = MessageEvent {
            event: "snapshot".to_owned(),
            data: serde_json::json!({ "quotes": quotes }).to_string(),
            last_event_id: "0".to_owned(),
        };
        let (id, board) = parse_snapshot(&event, &mut simulation).expect("a snapshot");
        assert_eq!(id, 0);
        assert_eq!(board.len(), 8);
        let quote = MessageEvent {
            event: "quote".to_owned(),
            ..event
        };
        assert!(
            parse_snapshot(&quote, &mut simulation)
                .unwrap_err()
                .contains("not a `snapshot`")
        );
    }
}
