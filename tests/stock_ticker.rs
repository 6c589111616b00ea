//! stock-ticker end to end: the real server on `127.0.0.1:0`, read over SSE by the kit's HTTP
//! client and parser, over WebSocket by tokio-tungstenite, and by a raw TCP socket where the
//! test must control how fast bytes are read (conflation).
//!
//! Run with `cargo test --test stock_ticker`. The market updates every few milliseconds here
//! instead of every 125; every wait is bounded by a timeout, none is a bare sleep.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_kit::client::{self, EventStream};
use realtime_kit::parser::{MessageEvent, SseParser};
use serde_json::{Value, json};
use stock_ticker::Config;
use stock_ticker::market::{self, Market};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::{TestServer, WAIT, within};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A stock-ticker server running in the test's runtime, with the market's own requests.
struct TestMarket(TestServer);

impl std::ops::Deref for TestMarket {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.0
    }
}

impl std::ops::DerefMut for TestMarket {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.0
    }
}

impl TestMarket {
    async fn start(config: Config) -> Self {
        Self(
            TestServer::start(|listener, signal| stock_ticker::run(listener, config, signal)).await,
        )
    }

    fn start_on(listener: TcpListener, config: Config) -> Self {
        Self(TestServer::start_on(listener, |listener, signal| {
            stock_ticker::run(listener, config, signal)
        }))
    }

    /// The default market (seed, eight symbols) updating every `interval`.
    async fn updating_every(interval: Duration) -> Self {
        Self::start(Config {
            update_interval: interval,
            ..Config::default()
        })
        .await
    }

    async fn fast() -> Self {
        Self::updating_every(Duration::from_millis(5)).await
    }

    async fn stream(&self, path: &str) -> EventStream {
        let stream = within(EventStream::connect(&self.url(path), &[]))
            .await
            .expect("connect to the stream");
        assert_eq!(stream.status(), 200);
        stream
    }

    async fn socket(&self) -> Client {
        let request = format!("ws://{}/quotes/ws", self.addr)
            .into_client_request()
            .expect("a valid URL");
        let (socket, _response) = within(tokio_tungstenite::connect_async(request))
            .await
            .expect("WebSocket handshake");
        socket
    }

    async fn stats(&self) -> Value {
        let response = within(client::get(&self.url("/stats")))
            .await
            .expect("GET /stats");
        assert_eq!(response.status, 200);
        response.json().expect("stats are JSON")
    }

    /// Waits until the market has made quote number `seq`, checking `/stats` every 20 ms, for
    /// at most `limit`.
    async fn wait_for_seq(&self, seq: u64, limit: Duration) -> u64 {
        let waiting = async {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                every.tick().await;
                let last = self.stats().await["last_seq"].as_u64().expect("last_seq");
                if last >= seq {
                    return last;
                }
            }
        };
        timeout(limit, waiting)
            .await
            .unwrap_or_else(|_| panic!("the market did not reach quote {seq} in {limit:?}"))
    }
}

async fn next_event(stream: &mut EventStream) -> MessageEvent {
    within(stream.next_event())
        .await
        .expect("stream error")
        .expect("the stream ended")
}

fn data(event: &MessageEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// The next text message, as JSON (Pings and Pongs skipped).
async fn next_json(socket: &mut Client) -> Value {
    loop {
        let message = within(socket.next())
            .await
            .expect("the socket is still open")
            .expect("no protocol error");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON messages"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn send_json(socket: &mut Client, value: Value) {
    within(socket.send(Message::text(value.to_string())))
        .await
        .expect("send");
}

fn symbols_of(quotes: &Value) -> Vec<&str> {
    quotes
        .as_array()
        .expect("a list of quotes")
        .iter()
        .map(|quote| quote["symbol"].as_str().expect("a symbol"))
        .collect()
}

/// The quotes the market makes with `seed`, by sequence number: what every server with that
/// seed must send.
fn simulated(seed: u64, count: usize) -> Vec<Value> {
    let mut market = Market::open(market::default_symbols(), seed);
    let mut quotes = vec![Value::Null]; // seq 0 is the open
    quotes.extend((0..count).map(|_| serde_json::to_value(market.step().1).expect("JSON")));
    quotes
}

/// Same seed, same prices: every quote two servers with the same seed send is the quote the
/// simulation makes with that seed for that sequence number, and the stream starts with a
/// snapshot.
#[tokio::test]
async fn the_same_seed_streams_the_same_quotes() {
    let expected = simulated(Config::default().seed, 5_000);
    for _ in 0..2 {
        let server = TestMarket::fast().await;
        let mut stream = server.stream("/quotes/stream").await;
        let snapshot = next_event(&mut stream).await;
        assert_eq!(snapshot.event, "snapshot");
        assert_eq!(symbols_of(&data(&snapshot)["quotes"]).len(), 8);
        let mut checked = 0;
        while checked < 50 {
            let event = next_event(&mut stream).await;
            assert_eq!(event.event, "quote");
            let quote = data(&event);
            let seq = quote["seq"].as_u64().expect("seq") as usize;
            assert_eq!(event.last_event_id, seq.to_string(), "the id is the seq");
            assert_eq!(
                quote, expected[seq],
                "quote {seq} differs from the simulation"
            );
            checked += 1;
        }
    }
}

/// `?symbols=` limits the snapshot and the quotes to those symbols.
#[tokio::test]
async fn the_event_stream_sends_only_the_symbols_asked_for() {
    let server = TestMarket::fast().await;
    let mut stream = server.stream("/quotes/stream?symbols=HOOL%2CACME").await;
    let snapshot = next_event(&mut stream).await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(symbols_of(&data(&snapshot)["quotes"]), ["HOOL", "ACME"]);
    let mut seen = HashMap::new();
    while seen.len() < 2 || seen.values().sum::<u32>() < 20 {
        let quote = data(&next_event(&mut stream).await);
        let symbol = quote["symbol"].as_str().expect("symbol").to_owned();
        assert!(symbol == "ACME" || symbol == "HOOL", "{quote}");
        *seen.entry(symbol).or_insert(0) += 1;
    }
}

/// An unknown or empty symbol list is refused with 400 and the list of valid symbols.
#[tokio::test]
async fn an_unknown_symbol_is_a_400_that_lists_the_valid_ones() {
    let server = TestMarket::fast().await;
    for query in [
        "?symbols=ACME,NOPE",
        "?symbols=",
        "?symbols=acme",
        "?symbols=%E2%28",
    ] {
        let response = within(client::get(&server.url(&format!("/quotes/stream{query}"))))
            .await
            .expect("GET");
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(response.headers["content-type"], "application/json");
        let body = response.json().expect("a JSON error");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
    let response = within(client::get(&server.url("/quotes/stream?symbols=NOPE")))
        .await
        .expect("GET");
    let body = response.json().expect("a JSON error");
    assert!(
        body["error"].as_str().unwrap().contains("\"NOPE\""),
        "{body}"
    );
    assert_eq!(
        body["valid_symbols"],
        json!([
            "ACME", "GLBX", "INIT", "UMBR", "HOOL", "WONK", "STRK", "CYBD"
        ])
    );
}

/// A WebSocket client is sent a snapshot of what it subscribed to, then quotes of those only.
#[tokio::test]
async fn the_websocket_sends_a_snapshot_then_only_subscribed_quotes() {
    let server = TestMarket::fast().await;
    let mut socket = server.socket().await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["WONK", "INIT"]}),
    )
    .await;
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(symbols_of(&snapshot["quotes"]), ["WONK", "INIT"]);
    let expected = simulated(Config::default().seed, 5_000);
    for _ in 0..20 {
        let mut quote = next_json(&mut socket).await;
        assert_eq!(quote["type"], "quote", "{quote}");
        let symbol = quote["symbol"].as_str().expect("symbol");
        assert!(symbol == "WONK" || symbol == "INIT", "{quote}");
        // The same quote as the event stream's, with a `type` added.
        quote.as_object_mut().expect("an object").remove("type");
        assert_eq!(
            quote,
            expected[quote["seq"].as_u64().expect("seq") as usize]
        );
    }
}

/// Bad commands are answered with an error message and the socket stays usable.
#[tokio::test]
async fn an_invalid_command_gets_an_error_and_the_socket_stays_open() {
    let server = TestMarket::fast().await;
    let mut socket = server.socket().await;
    for bad in [
        "not json",
        r#"{"type":"buy","symbols":["ACME"]}"#,
        r#"{"type":"subscribe","symbols":"ACME"}"#,
        r#"{"type":"subscribe","symbols":[]}"#,
    ] {
        within(socket.send(Message::text(bad))).await.expect("send");
        let reply = next_json(&mut socket).await;
        assert_eq!(reply["type"], "error", "{bad}: {reply}");
        assert!(reply["error"].is_string(), "{bad}: {reply}");
    }
    send_json(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["NOPE"]}),
    )
    .await;
    let reply = next_json(&mut socket).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["valid_symbols"].as_array().map(Vec::len), Some(8));
    within(socket.send(Message::binary(vec![1, 2, 3])))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["type"], "error");

    send_json(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["ACME"]}),
    )
    .await;
    let snapshot = next_json(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(next_json(&mut socket).await["symbol"], "ACME");
}

/// After `unsubscribed` no quote of that symbol arrives; unsubscribing from everything stops
/// the flow: the next message is the answer to the next command.
#[tokio::test]
async fn unsubscribe_stops_the_flow() {
    let server = TestMarket::fast().await;
    let mut socket = server.socket().await;
    send_json(&mut socket, json!({"type": "subscribe"})).await;
    let snapshot = next_json(&mut socket).await;
    assert_eq!(symbols_of(&snapshot["quotes"]).len(), 8, "all symbols");

    send_json(
        &mut socket,
        json!({"type": "unsubscribe", "symbols": ["ACME"]}),
    )
    .await;
    let confirmed = loop {
        let message = next_json(&mut socket).await;
        if message["type"] == "unsubscribed" {
            break message;
        }
    };
    assert_eq!(confirmed["symbols"], json!(["ACME"]));
    for _ in 0..30 {
        let quote = next_json(&mut socket).await;
        assert_ne!(quote["symbol"], "ACME", "{quote}");
    }

    send_json(&mut socket, json!({"type": "unsubscribe"})).await;
    while next_json(&mut socket).await["type"] != "unsubscribed" {}
    // Let the market move on, then ask for something: nothing may have come in between.
    let now = server.stats().await["last_seq"].as_u64().expect("last_seq");
    server.wait_for_seq(now + 20, WAIT).await;
    send_json(
        &mut socket,
        json!({"type": "subscribe", "symbols": ["GLBX"]}),
    )
    .await;
    let next = next_json(&mut socket).await;
    assert_eq!(
        next["type"], "snapshot",
        "no quote after unsubscribing all: {next}"
    );
}

/// Pages from another origin may not open the WebSocket (the kit's Origin check).
#[tokio::test]
async fn a_foreign_origin_is_refused() {
    let server = TestMarket::fast().await;
    let mut request = format!("ws://{}/quotes/ws", server.addr)
        .into_client_request()
        .expect("a valid URL");
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("a header"));
    match within(tokio_tungstenite::connect_async(request)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

/// Unknown paths are 404 and other methods 405 with `Allow: GET`, as JSON errors.
#[tokio::test]
async fn wrong_paths_and_methods_are_json_errors() {
    let server = TestMarket::fast().await;
    let missing = within(client::get(&server.url("/quotes")))
        .await
        .expect("GET");
    assert_eq!(missing.status, 404);
    assert!(missing.json().expect("JSON")["error"].is_string());
    for path in ["/", "/quotes/stream", "/quotes/ws", "/symbols", "/stats"] {
        let response = within(client::fetch(
            http::Method::POST,
            &server.url(path),
            &[],
            "x",
        ))
        .await
        .expect("POST");
        assert_eq!(response.status, 405, "{path}");
        assert_eq!(response.headers["allow"], "GET", "{path}");
    }
    let symbols = within(client::get(&server.url("/symbols")))
        .await
        .expect("GET");
    assert_eq!(symbols.status, 200);
    assert_eq!(symbols.json().expect("JSON")[0]["symbol"], "ACME");
    let page = within(client::get(&server.url("/"))).await.expect("GET");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("data-symbol=\"CYBD\""));
}

// ANCHOR: slow_reader
/// An event stream read over a raw socket whose receive buffer is small, so the test decides
/// when the server can write: it reads the HTTP head, then dechunks the body into the kit's
/// SSE parser only when asked for the next event.
struct SlowReader {
    tcp: TcpStream,
    raw: Vec<u8>,
    parser: SseParser,
    ready: std::collections::VecDeque<MessageEvent>,
}

impl SlowReader {
    async fn connect(addr: SocketAddr, path: &str) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        // 4 KiB (the kernel doubles it): the server's writes block once a few dozen events wait.
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut tcp = within(socket.connect(addr)).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut reader = Self {
            tcp,
            raw: Vec::new(),
            parser: SseParser::new(),
            ready: Default::default(),
        };
        while !reader.raw.windows(4).any(|w| w == b"\r\n\r\n") {
            reader.read_more().await;
        }
        let end = reader
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        let head = String::from_utf8_lossy(&reader.raw[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        reader.raw.drain(..end);
        reader
    }

    async fn read_more(&mut self) {
        let mut buffer = [0u8; 16 * 1024];
        let read = within(self.tcp.read(&mut buffer)).await.expect("read");
        assert!(read > 0, "the server closed the stream");
        self.raw.extend_from_slice(&buffer[..read]);
    }

    /// Moves every complete chunk from `raw` into the parser.
    fn dechunk(&mut self) {
        while let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..line_end]).expect("a chunk size");
            let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            let events = self.parser.feed(&self.raw[start..start + size]);
            self.ready.extend(events);
            self.raw.drain(..start + size + 2);
        }
    }

    async fn next_event(&mut self) -> MessageEvent {
        loop {
            self.dechunk();
            if let Some(event) = self.ready.pop_front() {
                return event;
            }
            self.read_more().await;
        }
    }
}
// ANCHOR_END: slow_reader

/// A WebSocket read over a raw socket with a small receive buffer, like [`SlowReader`]: the test
/// does the handshake and the framing itself, so it decides when bytes are read.
struct SlowSocket {
    tcp: TcpStream,
    raw: Vec<u8>,
}

impl SlowSocket {
    /// Connects, subscribes to every symbol and reads up to the snapshot.
    async fn subscribe(addr: SocketAddr) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let mut tcp = within(socket.connect(addr)).await.expect("connect");
        let request = format!(
            "GET /quotes/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("send");
        let mut reader = Self {
            tcp,
            raw: Vec::new(),
        };
        while !reader.raw.windows(4).any(|w| w == b"\r\n\r\n") {
            reader.read_more().await;
        }
        let end = reader
            .raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
            + 4;
        let head = String::from_utf8_lossy(&reader.raw[..end]).to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        reader.raw.drain(..end);
        // A client's frames are masked (RFC 6455 section 5.3): FIN + text, MASK + length, the
        // key, then the payload XORed with it.
        let command = br#"{"type":"subscribe"}"#;
        let key = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | command.len() as u8];
        frame.extend_from_slice(&key);
        frame.extend(
            command
                .iter()
                .enumerate()
                .map(|(i, byte)| byte ^ key[i % 4]),
        );
        reader.tcp.write_all(&frame).await.expect("send");
        assert_eq!(reader.next_message().await["type"], "snapshot");
        reader
    }

    async fn read_more(&mut self) {
        let mut buffer = [0u8; 16 * 1024];
        let read = within(self.tcp.read(&mut buffer)).await.expect("read");
        assert!(read > 0, "the server closed the socket");
        self.raw.extend_from_slice(&buffer[..read]);
    }

    /// The next text message, as JSON. Server frames are unmasked; ours are under 64 KiB.
    async fn next_message(&mut self) -> Value {
        loop {
            if self.raw.len() >= 2 {
                let (length, header) = match self.raw[1] & 0x7f {
                    126 if self.raw.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.raw[2], self.raw[3]])),
                        4,
                    ),
                    126 => (usize::MAX, 4),
                    short => (usize::from(short), 2),
                };
                if length != usize::MAX && self.raw.len() >= header + length {
                    let opcode = self.raw[0] & 0x0f;
                    let payload: Vec<u8> = self.raw.drain(..header + length).skip(header).collect();
                    if opcode == 0x1 {
                        return serde_json::from_slice(&payload).expect("JSON messages");
                    }
                    continue; // a Ping: the test does not answer, it is only slow
                }
            }
            self.read_more().await;
        }
    }
}

/// Where the conflation check reads quotes from: an event stream or a WebSocket.
trait QuoteSource {
    async fn next_quote(&mut self) -> Value;
}

impl QuoteSource for SlowReader {
    async fn next_quote(&mut self) -> Value {
        let event = self.next_event().await;
        assert_eq!(event.event, "quote");
        data(&event)
    }
}

impl QuoteSource for SlowSocket {
    async fn next_quote(&mut self) -> Value {
        let mut message = self.next_message().await;
        assert_eq!(message["type"], "quote", "{message}");
        message.as_object_mut().expect("an object").remove("type");
        message
    }
}

/// A market updating every millisecond, on a listener whose accepted sockets get a fixed 16 KiB
/// send buffer (the kernel doubles it). Without the cap, send-buffer autotuning would let the
/// kernel hold megabytes of a slow client's quotes before the server saw any backpressure (see
/// the book chapter).
fn market_with_small_send_buffers() -> TestMarket {
    let listener = common::listener_with_send_buffer(16 * 1024);
    TestMarket::start_on(
        listener,
        Config {
            update_interval: Duration::from_millis(1),
            ..Config::default()
        },
    )
}

// ANCHOR: conflation_test
/// Stalls `client` while the market makes 2,000 quotes, then reads until it has caught up.
/// Without conflation it would read all 2,000. With it, it gets far fewer: what the kernels were
/// holding, then the latest price of each symbol; every one a real quote of the market, and
/// never an older price of a symbol after a newer one.
async fn assert_conflated(server: &TestMarket, client: &mut impl QuoteSource) {
    let stalled_at = server.stats().await["last_seq"].as_u64().expect("last_seq");
    // At one quote a millisecond this takes 2 s; a loaded machine may tick slower.
    let resumed_at = server
        .wait_for_seq(stalled_at + 2_000, Duration::from_secs(60))
        .await;

    let expected = simulated(Config::default().seed, 100_000);
    let mut received = 0;
    let mut last_of_symbol: HashMap<String, u64> = HashMap::new();
    loop {
        let quote = client.next_quote().await;
        let seq = quote["seq"].as_u64().expect("seq");
        assert_eq!(quote, expected[seq as usize], "a real quote of the market");
        let symbol = quote["symbol"].as_str().expect("symbol").to_owned();
        let previous = last_of_symbol.insert(symbol, seq).unwrap_or(0);
        assert!(previous < seq, "an older price after a newer one");
        received += 1;
        if seq >= resumed_at {
            break; // caught up with the market as it was when we resumed
        }
    }
    let made = resumed_at - stalled_at;
    assert!(
        received < made / 2,
        "received {received} of {made} quotes: a backlog, not the latest prices"
    );
}

/// Conflation on the event stream: a reader that stops reading gets the latest prices when it
/// reads again, not a backlog.
#[tokio::test]
async fn a_slow_event_stream_reader_gets_the_latest_prices_not_a_backlog() {
    let server = market_with_small_send_buffers();
    let mut reader = SlowReader::connect(server.addr, "/quotes/stream").await;
    assert_eq!(reader.next_event().await.event, "snapshot");
    assert_conflated(&server, &mut reader).await;
}

/// Conflation on the WebSocket: the same, through the same per-client cursor.
#[tokio::test]
async fn a_slow_websocket_reader_gets_the_latest_prices_not_a_backlog() {
    let server = market_with_small_send_buffers();
    let mut socket = SlowSocket::subscribe(server.addr).await;
    assert_conflated(&server, &mut socket).await;
}
// ANCHOR_END: conflation_test

/// Shutdown ends an event stream (its body ends) and closes a WebSocket with 1001, and `run`
/// returns.
#[tokio::test]
async fn shutdown_ends_streams_and_sockets() {
    let mut server = TestMarket::fast().await;
    let mut stream = server.stream("/quotes/stream").await;
    assert_eq!(next_event(&mut stream).await.event, "snapshot");
    let mut socket = server.socket().await;
    send_json(&mut socket, json!({"type": "subscribe"})).await;
    assert_eq!(next_json(&mut socket).await["type"], "snapshot");
    let stats = server.stats().await;
    assert_eq!(
        (stats["sse_streams"].as_u64(), stats["ws_sockets"].as_u64()),
        (Some(1), Some(1))
    );

    server.request_stop();

    within(async {
        while let Some(event) = stream.next_event().await.expect("a clean end") {
            assert_eq!(event.event, "quote");
        }
    })
    .await;
    let close = within(async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close.expect("a close code").code, CloseCode::Away);
    server.0.stop().await;
}
