//! clock-sse end to end: the real server on `127.0.0.1:0`, read by the kit's HTTP client and
//! SSE parser (or by a raw TCP socket where the exact bytes matter).
//!
//! Run with `cargo test --test clock_sse` (hyper's path) and `cargo test --test clock_sse_direct`
//! (the kit's direct path for event streams): both run every case here. Ticks come every 100 ms
//! here instead of every second; every wait is bounded by a timeout, none is a bare sleep.

use std::time::Duration;

use clock_sse::Config;
use realtime_kit::client::{self, EventStream};
use realtime_kit::parser::MessageEvent;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::{TestServer, within};

/// A clock server running in the test's runtime, with the clock's own requests.
struct TestClock(TestServer);

impl std::ops::Deref for TestClock {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.0
    }
}

impl TestClock {
    async fn start(mut config: Config) -> Self {
        config.server.direct_streams = crate::DIRECT_STREAMS;
        Self(TestServer::start(|listener, signal| clock_sse::run(listener, config, signal)).await)
    }

    async fn fast() -> Self {
        Self::start(Config {
            tick_interval: Duration::from_millis(100),
            ..Config::default()
        })
        .await
    }

    async fn events(&self, headers: &[(&str, &str)]) -> EventStream {
        let stream = within(EventStream::connect(&self.url("/events"), headers))
            .await
            .expect("connect to /events");
        assert_eq!(stream.status(), 200);
        stream
    }

    async fn stats(&self) -> Value {
        let response = within(client::get(&self.url("/stats")))
            .await
            .expect("GET /stats");
        assert_eq!(response.status, 200);
        response.json().expect("stats are JSON")
    }
}

async fn next_tick(stream: &mut EventStream) -> MessageEvent {
    within(stream.next_event())
        .await
        .expect("stream error")
        .expect("the stream ended")
}

fn id_of(event: &MessageEvent) -> u64 {
    event.last_event_id.parse().expect("ids are numbers")
}

/// The stream has the headers that make it an event stream, uncached and unbuffered by proxies,
/// and asks the browser to wait 3 s before reconnecting.
#[tokio::test]
async fn headers_mark_an_event_stream() {
    let clock = TestClock::fast().await;
    let mut stream = clock.events(&[]).await;
    let headers = stream.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    next_tick(&mut stream).await;
    assert_eq!(stream.retry(), Some(Duration::from_secs(3)));
}

/// Ticks are `tick` events with increasing numeric ids and JSON data whose `unix_ms` is the id.
#[tokio::test]
async fn three_ticks_parse_with_increasing_ids_and_json() {
    let clock = TestClock::fast().await;
    let mut stream = clock.events(&[]).await;
    let mut previous = 0;
    for _ in 0..3 {
        let tick = next_tick(&mut stream).await;
        assert_eq!(tick.event, "tick");
        let id = id_of(&tick);
        assert!(id > previous, "id {id} after {previous}");
        previous = id;

        let data: Value = serde_json::from_str(&tick.data).expect("data is JSON");
        assert_eq!(data["unix_ms"], id, "the id is the tick's time");
        let unix_ms = data["unix_ms"].as_u64().expect("unix_ms is a number");
        let time = data["time"].as_str().expect("time is a string");
        let parsed = humantime::parse_rfc3339(time).expect("time is RFC 3339");
        let parsed_ms = parsed
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        assert_eq!(parsed_ms, u128::from(unix_ms), "time and unix_ms agree");
        assert!(time.ends_with('Z'), "time is UTC: {time}");
    }
}

/// Two clients receive byte-identical ticks under the same id: one ticker made them, not a timer
/// per client (which would stamp each client's copy with its own time).
#[tokio::test]
async fn two_clients_share_one_ticker() {
    let clock = TestClock::fast().await;
    let mut first = clock.events(&[]).await;
    let mut second = clock.events(&[]).await;
    let mut a = next_tick(&mut first).await;
    let mut b = next_tick(&mut second).await;
    // Either may have connected just before a tick; bring both to the same id.
    while id_of(&a) != id_of(&b) {
        if id_of(&a) < id_of(&b) {
            a = next_tick(&mut first).await;
        } else {
            b = next_tick(&mut second).await;
        }
    }
    assert_eq!(a, b);
    assert_eq!(next_tick(&mut first).await, next_tick(&mut second).await);
}

/// A client that goes away is noticed and no longer counted: nothing leaks per disconnect.
#[tokio::test]
async fn dropped_client_leaves_stats_within_two_seconds() {
    let clock = TestClock::fast().await;
    let mut stream = clock.events(&[]).await;
    next_tick(&mut stream).await;
    assert_eq!(clock.stats().await["streams"], 1);

    drop(stream);
    let gone = timeout(Duration::from_secs(2), async {
        while clock.stats().await["streams"] != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the closed stream was still counted after 2 s"
    );
}

/// A reconnect that sends `Last-Event-ID` continues with the next tick: it never gets the tick
/// it already saw, and the ids go on increasing.
#[tokio::test]
async fn last_event_id_continues_with_the_next_tick() {
    let clock = TestClock::fast().await;
    let mut first = clock.events(&[]).await;
    let seen = id_of(&next_tick(&mut first).await);
    drop(first);

    let seen_text = seen.to_string();
    let mut resumed = clock.events(&[("last-event-id", &seen_text)]).await;
    let next = id_of(&next_tick(&mut resumed).await);
    assert!(
        next > seen,
        "after id {seen} the reconnect was sent id {next}"
    );
    assert!(id_of(&next_tick(&mut resumed).await) > next);
}

/// Ids keep increasing across a restart by themselves: a fresh server starts above every id the
/// earlier one sent, and a browser that reconnects with the last of them goes on at once.
#[tokio::test]
async fn ids_keep_increasing_across_a_restart() {
    let clock = TestClock::fast().await;
    let addr = clock.addr;
    let mut stream = clock.events(&[]).await;
    let mut last = 0;
    for _ in 0..3 {
        last = id_of(&next_tick(&mut stream).await);
    }
    drop(stream);
    clock.0.stop().await;

    let listener = within(tokio::net::TcpListener::bind(addr))
        .await
        .expect("rebind");
    let config = Config {
        tick_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let restarted = TestServer::start_on(listener, |listener, signal| {
        clock_sse::run(listener, config, signal)
    });
    let url = restarted.url("/events");
    let mut fresh = within(EventStream::connect(&url, &[]))
        .await
        .expect("connect");
    let first_after = id_of(&next_tick(&mut fresh).await);
    assert!(
        first_after > last,
        "the restarted server sent id {first_after} after {last}"
    );
    let last_text = last.to_string();
    let mut resumed = within(EventStream::connect(&url, &[("last-event-id", &last_text)]))
        .await
        .expect("connect");
    assert!(id_of(&next_tick(&mut resumed).await) > last);
    restarted.stop().await;
}

/// A `Last-Event-ID` that this server cannot have sent is refused with a JSON error.
#[tokio::test]
async fn invalid_last_event_id_is_a_400_with_json_error() {
    let clock = TestClock::fast().await;
    for bad in ["abc", "-1", "1.5", "9007199254740992", "+5", "007"] {
        let response = within(client::fetch(
            http::Method::GET,
            &clock.url("/events"),
            &[("last-event-id", bad)],
            Vec::new(),
        ))
        .await
        .expect("request");
        assert_eq!(response.status, 400, "Last-Event-ID {bad:?}");
        let error = response.json().expect("JSON body")["error"].to_string();
        assert!(error.contains("Last-Event-ID"), "{error}");
    }
    // An empty header is what a browser sends before it has seen any id: a fresh start.
    let mut stream = clock.events(&[("last-event-id", "")]).await;
    next_tick(&mut stream).await;
}

/// On shutdown every open stream ends cleanly (the body finishes, no error) and `run` returns
/// well within the grace period, even though event streams never end by themselves.
#[tokio::test]
async fn shutdown_ends_open_streams_and_run_returns() {
    let clock = TestClock::fast().await;
    let mut first = clock.events(&[]).await;
    let mut second = clock.events(&[]).await;
    next_tick(&mut first).await;
    next_tick(&mut second).await;

    let mut clock = clock.0;
    let started = std::time::Instant::now();
    clock.request_stop();
    for stream in [&mut first, &mut second] {
        // Skip a tick that was already on its way; then the body must end without an error.
        while within(stream.next_event())
            .await
            .expect("clean end")
            .is_some()
        {}
    }
    let addr = clock.addr;
    clock.stop().await;
    assert!(
        started.elapsed() < realtime_kit::server::GRACE_PERIOD,
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

/// An idle stream carries a keep-alive comment, so dead peers and idle proxies are noticed.
/// Read over a raw socket: comments are invisible to an SSE parser, by design.
#[tokio::test]
async fn keep_alive_comment_appears_when_idle() {
    let clock = TestClock::start(Config {
        tick_interval: Duration::from_secs(3600), // never ticks during the test
        keep_alive: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let mut socket = TcpStream::connect(clock.addr).await.expect("connect");
    socket
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("send request");
    let mut received = Vec::new();
    let found = timeout(crate::common::WAIT, async {
        let mut buffer = [0u8; 1024];
        loop {
            let read = socket.read(&mut buffer).await.expect("read");
            assert!(read > 0, "the server closed the stream");
            received.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&received);
            if text.matches(": keep-alive\n").count() >= 2 {
                return text.into_owned();
            }
        }
    })
    .await
    .expect("two keep-alive comments within the timeout");
    assert!(found.starts_with("HTTP/1.1 200 OK\r\n"), "{found}");
    assert!(found.contains("retry: 3000\n\n"), "{found}");
}

/// Unknown paths get 404 and wrong methods 405 with `Allow`, both with a JSON error body.
#[tokio::test]
async fn wrong_path_is_404_and_wrong_method_is_405() {
    let clock = TestClock::fast().await;
    let missing = within(client::get(&clock.url("/nope"))).await.expect("GET");
    assert_eq!(missing.status, 404);
    assert!(missing.json().expect("JSON")["error"].is_string());

    for path in ["/", "/events", "/stats"] {
        let wrong = within(client::fetch(
            http::Method::POST,
            &clock.url(path),
            &[],
            Vec::new(),
        ))
        .await
        .expect("POST");
        assert_eq!(wrong.status, 405, "POST {path}");
        assert_eq!(wrong.headers["allow"], "GET");
        assert!(wrong.json().expect("JSON")["error"].is_string());
    }
}

/// The page is HTML that opens an `EventSource`, listens for the named `tick` event, and never
/// closes the source on error (the browser's reconnection would be lost).
#[tokio::test]
async fn page_listens_for_ticks_and_never_closes_the_source() {
    let clock = TestClock::fast().await;
    let page = within(client::get(&clock.url("/"))).await.expect("GET /");
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains(r#"new EventSource("/events")"#));
    assert!(html.contains(r#"addEventListener("tick""#));
    assert!(
        !html.contains(".close()"),
        "the page must not close the EventSource"
    );
}
