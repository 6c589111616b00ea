//! chat-sse end to end: the real server on `127.0.0.1:0`, posted to and read with the kit's HTTP
//! client and SSE parser, or with a raw TCP socket where the client must misbehave (a chunked
//! body over the limit, a reader that stops reading).
//!
//! Run with `cargo test --test chat_sse` (hyper's path) and `cargo test --test chat_sse_direct`
//! (the kit's direct path for event streams): both run every case here. Every wait is bounded by
//! a timeout, none is a bare sleep.

use std::collections::HashSet;
use std::time::Duration;

use chat_sse::Config;
use http::Method;
use realtime_kit::client::{self, EventStream, Fetched};
use realtime_kit::parser::{MessageEvent, SseParser};
use realtime_kit::request::Cors;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::common::{TestServer, within};

/// A chat server running in the test's runtime, with the chat's own requests.
struct TestChat(TestServer);

impl std::ops::Deref for TestChat {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.0
    }
}

impl std::ops::DerefMut for TestChat {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.0
    }
}

impl TestChat {
    async fn start(mut config: Config) -> Self {
        config.server.direct_streams = crate::DIRECT_STREAMS;
        Self(TestServer::start(|listener, signal| chat_sse::run(listener, config, signal)).await)
    }

    async fn default() -> Self {
        Self::start(Config::default()).await
    }

    /// Stops the server and waits until it has returned.
    async fn stop(self) {
        self.0.stop().await;
    }

    async fn events(&self, headers: &[(&str, &str)]) -> EventStream {
        let stream = within(EventStream::connect(&self.url("/events"), headers))
            .await
            .expect("connect to /events");
        assert_eq!(stream.status(), 200);
        stream
    }

    /// Connects and waits for the stream's first `presence` event, which comes after any
    /// catch-up: from then on the stream is subscribed to everything posted.
    async fn live_events(&self) -> EventStream {
        let mut stream = self.events(&[]).await;
        let first = next_event(&mut stream).await;
        assert_eq!(first.event, "presence", "{first:?}");
        stream
    }

    async fn post_raw(&self, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Fetched {
        within(client::fetch(
            Method::POST,
            &self.url("/messages"),
            headers,
            body.into(),
        ))
        .await
        .expect("POST /messages")
    }

    /// Posts a valid message and returns the stored message from the `201`.
    async fn post(&self, user: &str, text: &str) -> Value {
        let body = json!({ "user": user, "text": text }).to_string();
        let response = self
            .post_raw(&[("content-type", "application/json")], body)
            .await;
        assert_eq!(response.status, 201, "{}", response.text());
        response.json().expect("the stored message is JSON")
    }

    /// `GET /messages` with this query, which must succeed.
    async fn history(&self, query: &str) -> Value {
        let response = within(client::get(&self.url(&format!("/messages{query}"))))
            .await
            .expect("GET /messages");
        assert_eq!(response.status, 200, "{}", response.text());
        response.json().expect("the history is JSON")
    }
}

async fn next_event(stream: &mut EventStream) -> MessageEvent {
    within(stream.next_event())
        .await
        .expect("stream error")
        .expect("the stream ended")
}

/// The next event that is not a `presence` update.
async fn next_chat_event(stream: &mut EventStream) -> MessageEvent {
    loop {
        let event = next_event(stream).await;
        if event.event != "presence" {
            return event;
        }
    }
}

/// The next chat message, checked to be a `message` event whose id is the message's id.
async fn next_message(stream: &mut EventStream) -> Value {
    let event = next_chat_event(stream).await;
    assert_eq!(event.event, "message", "{event:?}");
    let message: Value = serde_json::from_str(&event.data).expect("data is JSON");
    assert_eq!(event.last_event_id, message["id"].to_string());
    message
}

/// Waits until the stream reports `online` open streams.
async fn wait_for_presence(stream: &mut EventStream, online: u64) {
    loop {
        let event = next_event(stream).await;
        if event.event == "presence" {
            let data: Value = serde_json::from_str(&event.data).expect("presence is JSON");
            if data["online"] == online {
                return;
            }
        }
    }
}

fn id(message: &Value) -> u64 {
    message["id"].as_u64().expect("ids are numbers")
}

/// Reads `count` messages the way a browser would: when the server ends the stream, connect
/// again with `Last-Event-ID`. Returns the messages, how many reconnects it took, and the
/// stream, still open.
async fn read_like_a_browser(
    url: String,
    mut stream: EventStream,
    count: usize,
) -> (Vec<Value>, usize, EventStream) {
    let mut messages = Vec::with_capacity(count);
    let mut reconnects = 0;
    while messages.len() < count {
        match within(stream.next_event()).await.expect("stream error") {
            Some(event) if event.event == "message" => {
                messages.push(serde_json::from_str(&event.data).expect("data is JSON"));
            }
            Some(event) => assert_eq!(event.event, "presence", "{event:?}"),
            None => {
                let last = stream.last_event_id().to_owned();
                stream = within(EventStream::connect(&url, &[("last-event-id", &last)]))
                    .await
                    .expect("reconnect");
                reconnects += 1;
            }
        }
    }
    (messages, reconnects, stream)
}

/// A posted message is answered with `201` and the stored message, and arrives on every open
/// stream as a `message` event with the same JSON and its id as the event id.
#[tokio::test]
async fn post_reaches_every_open_stream() {
    let chat = TestChat::default().await;
    let mut first = chat.live_events().await;
    let mut second = chat.live_events().await;

    let stored = chat.post("  ann ", "hello").await;
    assert_eq!(stored["user"], "ann", "the name is trimmed");
    assert_eq!(stored["text"], "hello");
    let time = stored["time"].as_str().expect("time is a string");
    humantime::parse_rfc3339(time).expect("time is RFC 3339");
    assert!(time.ends_with('Z'), "time is UTC: {time}");

    assert_eq!(next_message(&mut first).await, stored);
    assert_eq!(next_message(&mut second).await, stored);
}

/// The stream is an event stream with the reconnection delay, and ids of consecutive messages
/// grow by one, in the order they were posted.
#[tokio::test]
async fn ids_increase_strictly_in_post_order() {
    let chat = TestChat::default().await;
    let mut stream = chat.live_events().await;
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_eq!(stream.retry(), Some(Duration::from_secs(3)));

    let mut posted = Vec::new();
    for n in 0..20 {
        posted.push(id(&chat.post("ann", &format!("message {n}")).await));
    }
    assert!(posted.windows(2).all(|pair| pair[1] == pair[0] + 1));
    for expected in posted {
        assert_eq!(id(&next_message(&mut stream).await), expected);
    }
}

/// A reconnect with `Last-Event-ID` gets exactly the messages posted while it was away, in
/// order, and then the live ones: none lost, none twice.
#[tokio::test]
async fn last_event_id_replays_exactly_what_was_missed() {
    let chat = TestChat::default().await;
    let mut stream = chat.live_events().await;
    chat.post("ann", "before").await;
    next_message(&mut stream).await;
    let last_seen = stream.last_event_id().to_owned();
    drop(stream);

    let mut missed = Vec::new();
    for n in 0..10 {
        missed.push(chat.post("bob", &format!("missed {n}")).await);
    }
    let mut resumed = chat.events(&[("last-event-id", &last_seen)]).await;
    for expected in &missed {
        assert_eq!(&next_message(&mut resumed).await, expected);
    }
    let live = chat.post("ann", "live").await;
    assert_eq!(next_message(&mut resumed).await, live);
}

/// A client whose last id has fallen out of the bounded log gets a `gap` event saying how many
/// messages are lost, then everything the log still holds.
#[tokio::test]
async fn fallen_out_of_the_log_is_told_by_a_gap_event() {
    let chat = TestChat::start(Config {
        history: 5,
        ..Config::default()
    })
    .await;
    let seen = chat.post("ann", "seen").await;
    let mut later = Vec::new();
    for n in 0..8 {
        later.push(chat.post("bob", &format!("later {n}")).await);
    }
    // 9 messages, the log keeps 5: the first 3 of `later` are gone.
    let mut resumed = chat
        .events(&[("last-event-id", &id(&seen).to_string())])
        .await;
    let gap = next_chat_event(&mut resumed).await;
    assert_eq!(gap.event, "gap");
    assert_eq!(
        serde_json::from_str::<Value>(&gap.data).unwrap(),
        json!({ "lost": 3 })
    );
    for expected in &later[3..] {
        assert_eq!(&next_message(&mut resumed).await, expected);
    }

    // The polling route says the same.
    let history = chat.history(&format!("?after={}", id(&seen))).await;
    assert_eq!(history["lost"], 3);
    assert_eq!(history["messages"], json!(later[3..]));
}

/// A new client (no `Last-Event-ID`) first gets the newest `backlog` messages, then live ones;
/// `GET /messages` without `after` returns the same backlog.
#[tokio::test]
async fn new_client_gets_the_recent_backlog_first() {
    let chat = TestChat::start(Config {
        backlog: 3,
        ..Config::default()
    })
    .await;
    let mut posted = Vec::new();
    for n in 0..5 {
        posted.push(chat.post("ann", &format!("old {n}")).await);
    }
    let mut stream = chat.events(&[]).await;
    for expected in &posted[2..] {
        assert_eq!(&next_message(&mut stream).await, expected);
    }
    let live = chat.post("bob", "live").await;
    assert_eq!(next_message(&mut stream).await, live);

    let history = chat.history("").await;
    assert_eq!(history["lost"], 0);
    assert_eq!(
        history["messages"],
        json!([posted[3], posted[4], live]),
        "the backlog is the newest 3"
    );
}

/// Every kind of bad POST gets its status and a JSON error a person can act on, and changes
/// nothing: the log is the same and no stream receives anything.
#[tokio::test]
async fn bad_posts_are_refused_and_change_nothing() {
    let chat = TestChat::default().await;
    let mut stream = chat.live_events().await;
    let kept = chat.post("ann", "the only message").await;
    assert_eq!(next_message(&mut stream).await, kept);
    let before = chat.history("?after=0").await;

    let json_type = [("content-type", "application/json")];
    let too_long_user = "u".repeat(chat_sse::MAX_USER_CHARS + 1);
    let too_long_text = "t".repeat(chat_sse::MAX_TEXT_CHARS + 1);
    let over_limit = json!({ "user": "ann", "text": "x".repeat(chat_sse::MAX_BODY_BYTES) });
    /// Headers, body, the status expected, and words the error message must contain.
    type BadPost<'a> = (&'a [(&'a str, &'a str)], Vec<u8>, u16, &'a str);
    let cases: Vec<BadPost> = vec![
        (
            &[],
            br#"{"user":"a","text":"b"}"#.to_vec(),
            415,
            "Content-Type: application/json",
        ),
        (
            &[("content-type", "text/plain")],
            br#"{"user":"a","text":"b"}"#.to_vec(),
            415,
            "text/plain",
        ),
        (
            &[("content-type", "application/x-www-form-urlencoded")],
            b"user=a&text=b".to_vec(),
            415,
            "Content-Type",
        ),
        (
            &json_type,
            over_limit.to_string().into_bytes(),
            413,
            "16384 bytes",
        ),
        (&json_type, b"".to_vec(), 400, "the body is empty"),
        (&json_type, b"{\"user\":".to_vec(), 400, "not valid JSON"),
        (&json_type, b"\xff\xfe".to_vec(), 400, "not valid JSON"),
        (&json_type, b"[]".to_vec(), 400, "must be a JSON object"),
        (
            &json_type,
            br#"{"user":"a"}"#.to_vec(),
            400,
            "missing field `text`",
        ),
        (
            &json_type,
            br#"{"user":"a","text":5}"#.to_vec(),
            400,
            "invalid type",
        ),
        (
            &json_type,
            br#"{"user":"a","txt":"b"}"#.to_vec(),
            400,
            "unknown field `txt`",
        ),
        (
            &json_type,
            br#"{"user":"","text":"b"}"#.to_vec(),
            422,
            "`user` is empty",
        ),
        (
            &json_type,
            br#"{"user":"   ","text":"b"}"#.to_vec(),
            422,
            "`user` is empty",
        ),
        (
            &json_type,
            json!({"user": too_long_user, "text": "b"})
                .to_string()
                .into_bytes(),
            422,
            "the limit is 32",
        ),
        (
            &json_type,
            br#"{"user":"a\nb","text":"b"}"#.to_vec(),
            422,
            "one line",
        ),
        (
            &json_type,
            br#"{"user":"a","text":""}"#.to_vec(),
            422,
            "`text` is empty",
        ),
        (
            &json_type,
            br#"{"user":"a","text":" \n\t "}"#.to_vec(),
            422,
            "`text` is empty",
        ),
        (
            &json_type,
            json!({"user": "a", "text": too_long_text})
                .to_string()
                .into_bytes(),
            422,
            "the limit is 2000",
        ),
    ];
    for (headers, body, status, words) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let response = chat.post_raw(headers, body).await;
        assert_eq!(response.status, status, "{shown}: {}", response.text());
        assert_eq!(response.headers["content-type"], "application/json");
        let error = response.json().expect("a JSON error body")["error"]
            .as_str()
            .expect("an error string")
            .to_owned();
        assert!(error.contains(words), "{shown}: {error:?} lacks {words:?}");
    }

    assert_eq!(
        chat.history("?after=0").await,
        before,
        "the log is unchanged"
    );
    // The stream got nothing from the refused posts: the next message is the next good one,
    // with the next id.
    let next = chat.post("ann", "after the bad ones").await;
    assert_eq!(id(&next), id(&kept) + 1);
    assert_eq!(next_message(&mut stream).await, next);
}

/// A chunked body (no Content-Length to check up front) is cut off at the limit while it is
/// read, and refused with 413.
#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let chat = TestChat::default().await;
    let mut socket = TcpStream::connect(chat.addr).await.expect("connect");
    let mut request =
        b"POST /messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..5 {
        request.extend_from_slice(b"1000\r\n");
        request.extend_from_slice(&[b' '; 0x1000]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    socket.write_all(&request).await.expect("send");
    let mut response = Vec::new();
    within(socket.read_to_end(&mut response))
        .await
        .expect("read the response");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(response.contains("larger than the limit of 16384 bytes"));
    assert_eq!(chat.history("").await["messages"], json!([]));
}

/// Limits count characters, not bytes, and the edges are allowed: a 32-character name and a
/// 2,000-character text of 4-byte emoji are stored exactly.
#[tokio::test]
async fn limits_count_characters_and_allow_the_edges() {
    let chat = TestChat::default().await;
    let user = "é".repeat(chat_sse::MAX_USER_CHARS);
    let text = "😀".repeat(chat_sse::MAX_TEXT_CHARS);
    let stored = chat.post(&user, &text).await;
    assert_eq!(stored["user"], user.as_str());
    assert_eq!(stored["text"], text.as_str());
}

/// Text that tries to break out of its event (line breaks of every kind, a forged `event:`
/// and `id:`) or to become markup arrives intact as exactly one message, on the stream and in
/// the log.
#[tokio::test]
async fn injection_payloads_round_trip_as_one_message_each() {
    let chat = TestChat::default().await;
    let mut stream = chat.live_events().await;
    let payloads = [
        "one\ntwo",
        "one\rtwo",
        "one\r\ntwo",
        "\n\nevent: x\ndata: y",
        "\r\n\r\nid: 999\r\nretry: 1\r\n\r\n",
        "data: forged\n\n",
        ": a comment?",
        "</script><script>alert(1)</script>",
        "<img src=x onerror=alert(1)> &amp; <b>bold</b>",
        "nul \u{0} and line separator \u{2028} and \"quotes\" \\ backslash",
    ];
    for payload in payloads {
        chat.post("mallory", payload).await;
    }
    for payload in payloads {
        let message = next_message(&mut stream).await;
        assert_eq!(message["text"], payload);
        assert_eq!(message["user"], "mallory");
    }
    // Nothing else was made of them: the next event is the next message.
    let sentinel = chat.post("ann", "sentinel").await;
    assert_eq!(next_message(&mut stream).await, sentinel);
    let history = chat.history("?after=0").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts[..payloads.len()], payloads);
}

/// 20 posters sending 50 messages each at once: each of 3 streams receives all 1,000, in
/// strictly increasing id order, with no duplicates (reconnecting like a browser if the server
/// closes it for falling behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posters_reach_every_stream_in_order() {
    const POSTERS: usize = 20;
    const EACH: usize = 50;
    let chat = TestChat::default().await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let stream = chat.live_events().await;
        readers.push(tokio::spawn(read_like_a_browser(
            chat.url("/events"),
            stream,
            POSTERS * EACH,
        )));
    }
    let url = chat.url("/messages");
    let posters: Vec<_> = (0..POSTERS)
        .map(|poster| {
            let url = url.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let body = json!({ "user": format!("poster{poster}"), "text": format!("{poster}/{n}") });
                    let response = client::fetch(
                        Method::POST,
                        &url,
                        &[("content-type", "application/json")],
                        body.to_string(),
                    )
                    .await
                    .expect("POST");
                    assert_eq!(response.status, 201);
                }
            })
        })
        .collect();
    for poster in posters {
        timeout(Duration::from_secs(60), poster)
            .await
            .expect("posting in time")
            .expect("poster");
    }
    let expected: HashSet<String> = (0..POSTERS)
        .flat_map(|poster| (0..EACH).map(move |n| format!("{poster}/{n}")))
        .collect();
    for reader in readers {
        let (messages, _reconnects, _stream) = timeout(Duration::from_secs(60), reader)
            .await
            .expect("reading in time")
            .expect("reader");
        let ids: Vec<u64> = messages.iter().map(id).collect();
        assert!(
            ids.windows(2).all(|pair| pair[1] > pair[0]),
            "ids in strictly increasing order"
        );
        let texts: HashSet<String> = messages
            .iter()
            .map(|message| message["text"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(texts.len(), POSTERS * EACH, "no duplicates");
        assert_eq!(texts, expected, "every message");
    }
}

/// Clients that connect while messages are being posted each get every message exactly once:
/// what was posted before they joined in their backlog, the rest live, with nothing missed or
/// repeated where the two meet (the catch-up and the join are one step under the log's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_during_posts_get_each_message_exactly_once() {
    const MESSAGES: usize = 400;
    const JOINERS: usize = 40;
    let chat = TestChat::start(Config {
        history: MESSAGES,
        backlog: MESSAGES,
        ..Config::default()
    })
    .await;
    let url = chat.url("/messages");
    let posting = tokio::spawn(async move {
        let mut posted = Vec::with_capacity(MESSAGES);
        for n in 0..MESSAGES {
            let body = json!({ "user": "ann", "text": format!("{n}") }).to_string();
            let headers = [("content-type", "application/json")];
            let response = client::fetch(Method::POST, &url, &headers, body)
                .await
                .expect("POST");
            assert_eq!(response.status, 201);
            let message: Value = serde_json::from_slice(&response.body).expect("JSON");
            posted.push(id(&message));
        }
        posted
    });
    let mut readers = Vec::new();
    for _ in 0..JOINERS {
        // Joins spread over the posting, each landing between two posts or during one.
        tokio::time::sleep(Duration::from_millis(6)).await;
        let stream = chat.events(&[]).await;
        let url = chat.url("/events");
        readers.push(tokio::spawn(read_like_a_browser(url, stream, MESSAGES)));
    }
    let posted = timeout(Duration::from_secs(60), posting)
        .await
        .expect("posting in time")
        .expect("poster");
    for reader in readers {
        let (messages, _reconnects, _stream) = timeout(Duration::from_secs(60), reader)
            .await
            .expect("reading in time")
            .expect("reader");
        assert_eq!(messages.iter().map(id).collect::<Vec<_>>(), posted);
    }
}

/// Reads an HTTP/1.1 response with a chunked body from `socket` until the server closes it, and
/// returns the decoded body.
async fn read_chunked_to_end(socket: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    within(socket.read_to_end(&mut raw))
        .await
        .expect("read until the server closes");
    let text = String::from_utf8(raw).expect("UTF-8");
    let (head, mut rest) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// A reader that stops reading does not hold back the others, and the policy handles it: once it
/// reads again it finds its stream closed after a gap-free prefix (with a comment saying why),
/// and a reconnect with its last id gets exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_is_closed_and_resumes_without_loss() {
    const MESSAGES: usize = 1500;
    let chat = TestChat::start(Config {
        history: MESSAGES,
        max_lag: 8,
        ..Config::default()
    })
    .await;
    // A small receive buffer, so the kernel stops taking the stream's bytes early.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(chat.addr).await.expect("connect");
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut healthy = chat.events(&[]).await;
    wait_for_presence(&mut healthy, 2).await;
    let healthy = tokio::spawn(read_like_a_browser(chat.url("/events"), healthy, MESSAGES));

    // 6,000 bytes a message (2,000 three-byte characters): 9 MB in all, far more than the
    // stalled socket's buffers take.
    let mut posted = Vec::new();
    for n in 0..MESSAGES {
        let text = format!("{n:04}{}", "€".repeat(chat_sse::MAX_TEXT_CHARS - 4));
        posted.push(id(&chat.post("ann", &text).await));
    }
    // The healthy reader has everything while the stalled one still has not read a byte.
    let (messages, _reconnects, healthy) = within(healthy).await.expect("healthy reader");
    assert_eq!(messages.iter().map(id).collect::<Vec<_>>(), posted);

    let body = read_chunked_to_end(&mut stalled).await;
    assert!(
        body.contains(": closing: this stream fell"),
        "the server says why it closed the stream"
    );
    let received: Vec<MessageEvent> = SseParser::new()
        .feed(body.as_bytes())
        .into_iter()
        .filter(|event| event.event == "message")
        .collect();
    let got: Vec<u64> = received
        .iter()
        .map(|event| event.last_event_id.parse().unwrap())
        .collect();
    assert!(got.len() < MESSAGES, "the stalled stream was closed early");
    assert_eq!(got, posted[..got.len()], "a gap-free prefix");

    // The stalled stream is no longer counted: a new one makes two, with the healthy one. (On
    // the direct path the fan-out closes it while the posts go on, so the healthy reader may
    // have seen the count fall already.)
    let mut fresh = chat.events(&[]).await;
    wait_for_presence(&mut fresh, 2).await;
    drop(healthy);

    let last = got.last().map_or_else(|| "0".to_owned(), u64::to_string);
    let mut resumed = chat.events(&[("last-event-id", &last)]).await;
    for expected in &posted[got.len()..] {
        assert_eq!(id(&next_message(&mut resumed).await), *expected);
    }
}

/// A stream that has not received a message yet still knows where it started (an `id:`-only
/// event), so if it is closed before its first message, resuming from its last event id misses
/// nothing, and repeats nothing.
#[tokio::test]
async fn a_stream_without_messages_still_has_a_resume_position() {
    let chat = TestChat::start(Config {
        backlog: 0,
        ..Config::default()
    })
    .await;
    let empty_room = chat.live_events().await;
    let start = empty_room.last_event_id().to_owned();
    assert!(!start.is_empty(), "a position even before any message");
    drop(empty_room);

    let before = chat.post("ann", "before").await;
    assert_eq!(id(&before), start.parse::<u64>().unwrap() + 1);
    let no_backlog = chat.live_events().await;
    assert_eq!(no_backlog.last_event_id(), id(&before).to_string());
    drop(no_backlog);

    let missed = chat.post("bob", "missed").await;
    let mut resumed = chat.events(&[("last-event-id", &start)]).await;
    assert_eq!(next_message(&mut resumed).await, before);
    assert_eq!(next_message(&mut resumed).await, missed);
}

/// `presence` events carry the number of open streams whenever it changes.
#[tokio::test]
async fn presence_counts_open_streams() {
    let chat = TestChat::default().await;
    let mut first = chat.events(&[]).await;
    wait_for_presence(&mut first, 1).await;
    let mut second = chat.events(&[]).await;
    wait_for_presence(&mut second, 2).await;
    wait_for_presence(&mut first, 2).await;
    drop(second);
    wait_for_presence(&mut first, 1).await;
}

/// Ids keep growing across a restart, although the log lives in memory: a browser resuming with
/// an id from the old server gets the new server's messages instead of skipping them as seen.
#[tokio::test]
async fn ids_keep_growing_across_a_restart() {
    let old = TestChat::default().await;
    let mut stream = old.live_events().await;
    for n in 0..3 {
        old.post("ann", &format!("old {n}")).await;
        next_message(&mut stream).await;
    }
    let last_seen = stream.last_event_id().to_owned();
    drop(stream);
    old.stop().await;

    let new = TestChat::default().await;
    let first_new = new.post("bob", "while you were away").await;
    assert!(id(&first_new) > last_seen.parse::<u64>().unwrap());
    let mut resumed = new.events(&[("last-event-id", &last_seen)]).await;
    assert_eq!(next_message(&mut resumed).await, first_new);
}

/// `GET /messages?after=` returns what follows an id; a bad query is a 400 that says why.
#[tokio::test]
async fn messages_query_is_validated() {
    let chat = TestChat::default().await;
    let first = chat.post("ann", "one").await;
    let second = chat.post("ann", "two").await;
    let history = chat.history(&format!("?after={}", id(&first))).await;
    assert_eq!(history, json!({ "messages": [second], "lost": 0 }));
    let after_all = chat.history(&format!("?after={}", id(&second))).await;
    assert_eq!(after_all["messages"], json!([]));

    for bad in [
        "?after=",
        "?after=abc",
        "?after=-1",
        "?after=1&after=2",
        "?since=1",
    ] {
        let response = within(client::get(&chat.url(&format!("/messages{bad}"))))
            .await
            .expect("GET");
        assert_eq!(response.status, 400, "{bad}");
        assert!(response.json().unwrap()["error"].is_string());
    }
}

/// A `Last-Event-ID` this server cannot have sent is refused with a JSON error.
#[tokio::test]
async fn invalid_last_event_id_is_a_400() {
    let chat = TestChat::default().await;
    let response = within(client::fetch(
        Method::GET,
        &chat.url("/events"),
        &[("last-event-id", "abc")],
        Vec::new(),
    ))
    .await
    .expect("GET");
    assert_eq!(response.status, 400);
    assert!(
        response.json().unwrap()["error"]
            .to_string()
            .contains("Last-Event-ID")
    );
}

async fn preflight(chat: &TestChat, path: &str, origin: &str) -> Fetched {
    within(client::fetch(
        Method::OPTIONS,
        &chat.url(path),
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        Vec::new(),
    ))
    .await
    .expect("OPTIONS")
}

/// Without `--allow-origin` no response carries a CORS header and a preflight is refused.
#[tokio::test]
async fn cors_is_off_by_default() {
    let chat = TestChat::default().await;
    let origin = "http://localhost:8080";
    let refused = preflight(&chat, "/messages", origin).await;
    assert_eq!(refused.status, 403);
    assert!(!refused.headers.contains_key("access-control-allow-origin"));

    let body = json!({ "user": "ann", "text": "hi" }).to_string();
    let posted = chat
        .post_raw(
            &[("content-type", "application/json"), ("origin", origin)],
            body,
        )
        .await;
    assert_eq!(posted.status, 201);
    assert!(!posted.headers.contains_key("access-control-allow-origin"));
    let stream = chat.events(&[("origin", origin)]).await;
    assert!(!stream.headers().contains_key("access-control-allow-origin"));
}

/// With `--allow-origin`, the allowed origin gets its preflight answered and its responses
/// (errors and the stream included) marked readable; any other origin gets neither.
#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let allowed = "http://localhost:8080";
    let chat = TestChat::start(Config {
        cors: Cors::allow([allowed, "https://chat.example"]).unwrap(),
        ..Config::default()
    })
    .await;

    for path in ["/messages", "/events"] {
        let answered = preflight(&chat, path, allowed).await;
        assert_eq!(answered.status, 204, "{path}");
        assert_eq!(answered.headers["access-control-allow-origin"], allowed);
        assert!(
            answered.headers["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("content-type")
        );
        assert_eq!(answered.headers["vary"], "origin");
    }
    let answered = preflight(&chat, "/messages", allowed).await;
    assert_eq!(
        answered.headers["access-control-allow-methods"],
        "GET, POST"
    );
    let refused = preflight(&chat, "/messages", "http://evil.example").await;
    assert_eq!(refused.status, 403);
    assert!(!refused.headers.contains_key("access-control-allow-origin"));

    let body = json!({ "user": "ann", "text": "hi" }).to_string();
    let json_from = |origin| [("content-type", "application/json"), ("origin", origin)];
    let posted = chat.post_raw(&json_from(allowed), body.clone()).await;
    assert_eq!(posted.status, 201);
    assert_eq!(posted.headers["access-control-allow-origin"], allowed);
    assert_eq!(posted.headers["vary"], "origin");
    let refused = chat
        .post_raw(
            &[("content-type", "text/plain"), ("origin", allowed)],
            body.clone(),
        )
        .await;
    assert_eq!(refused.status, 415);
    assert_eq!(
        refused.headers["access-control-allow-origin"], allowed,
        "the page can read why it was refused"
    );
    let other = chat.post_raw(&json_from("http://evil.example"), body).await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));

    let stream = chat.events(&[("origin", allowed)]).await;
    assert_eq!(stream.headers()["access-control-allow-origin"], allowed);
}

/// Unknown paths get 404 and wrong methods 405 with `Allow`, both with a JSON error body.
#[tokio::test]
async fn wrong_path_is_404_and_wrong_method_is_405() {
    let chat = TestChat::default().await;
    let missing = within(client::get(&chat.url("/nope"))).await.expect("GET");
    assert_eq!(missing.status, 404);
    assert!(missing.json().unwrap()["error"].is_string());

    for (method, path, allow) in [
        (Method::POST, "/", "GET"),
        (Method::POST, "/events", "GET, OPTIONS"),
        (Method::DELETE, "/messages", "GET, POST, OPTIONS"),
        (Method::PUT, "/messages", "GET, POST, OPTIONS"),
    ] {
        let wrong = within(client::fetch(
            method.clone(),
            &chat.url(path),
            &[],
            Vec::new(),
        ))
        .await
        .expect("request");
        assert_eq!(wrong.status, 405, "{method} {path}");
        assert_eq!(wrong.headers["allow"], allow);
        assert!(wrong.json().unwrap()["error"].is_string());
    }
}

/// The page opens an `EventSource`, listens for messages, presence and gaps, shows text with
/// `textContent` (never as HTML), and never closes the source on error.
#[tokio::test]
async fn page_uses_event_source_and_text_only() {
    let chat = TestChat::default().await;
    let page = within(client::get(&chat.url("/"))).await.expect("GET /");
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains(r#"new EventSource("/events")"#));
    for listener in ["message", "presence", "gap", "open", "error"] {
        assert!(
            html.contains(&format!(r#"addEventListener("{listener}""#)),
            "{listener}"
        );
    }
    assert!(html.contains("text.textContent = message.text"));
    assert!(
        !html.contains("innerHTML"),
        "messages are never parsed as HTML"
    );
    assert!(
        !html.contains(".close()"),
        "the page must not close the EventSource"
    );
}

/// On shutdown every open stream ends cleanly and `run` returns.
#[tokio::test]
async fn shutdown_ends_open_streams() {
    let mut chat = TestChat::default().await;
    let mut stream = chat.live_events().await;
    chat.request_stop();
    while within(stream.next_event())
        .await
        .expect("clean end")
        .is_some()
    {}
    chat.stop().await;
}
