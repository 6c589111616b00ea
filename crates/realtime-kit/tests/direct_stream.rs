//! The kit's direct path for event streams, over real sockets: a browser's request for a stream
//! is answered on the socket itself (no hyper buffers), everything else still reaches hyper,
//! and both give the client the same protocol.
//!
//! Run with `cargo test -p realtime-kit --test direct_stream`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use realtime_kit::fanout::Fanout;
use realtime_kit::sse::{self, Event, SseResponse};
use realtime_kit::{Gauge, RequestBody, ServerOptions, Shutdown, respond, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// What a browser's `EventSource` sends.
const BROWSER_REQUEST: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

/// A server whose `/events` streams what the test publishes, counting open streams, and whose
/// `/shared` is written by a fan-out on the direct path: a catch-up event, then what the test
/// sends to the fan-out.
struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    streams: Gauge,
    publish: broadcast::Sender<Bytes>,
    fanout: Arc<Fanout>,
    task: JoinHandle<()>,
}

/// The first event of every `/shared` stream.
const CAUGHT_UP: &[u8] = b"data: caught up\n\n";

impl Server {
    async fn start() -> Self {
        Self::start_with(64, sse::DEFAULT_KEEP_ALIVE).await
    }

    /// `/shared` closes a client `backlog` events behind, and its writers write a keep-alive
    /// after `keep_alive` of silence.
    async fn start_with(backlog: usize, keep_alive: Duration) -> Self {
        // Accepted sockets get a send buffer of 64 KiB (the listener's), so that a client that
        // reads nothing fills it after kilobytes, not megabytes.
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let listener: TcpListener = socket.listen(1024).expect("listen");
        let addr = listener.local_addr().expect("address");
        let shutdown = Shutdown::new();
        let streams = Gauge::new();
        let (publish, _) = broadcast::channel::<Bytes>(64);
        let fanout = Arc::new(sse::fanout(backlog, keep_alive, &shutdown));
        let handler = {
            let (shutdown, streams, publish) = (shutdown.clone(), streams.clone(), publish.clone());
            let fanout = fanout.clone();
            move |request: Request<RequestBody>| {
                let response = match request.uri().path() {
                    "/shared" => {
                        let (streams, fanout) = (streams.clone(), fanout.clone());
                        let publish = publish.clone();
                        SseResponse::shared(
                            move || {
                                let live = futures_util::stream::unfold(
                                    publish.subscribe(),
                                    |mut events| async move {
                                        let event = events.recv().await.ok()?;
                                        Some((event, events))
                                    },
                                );
                                futures_util::stream::iter([Bytes::from_static(CAUGHT_UP)])
                                    .chain(live)
                            },
                            move |outbox| {
                                let counted = streams.enter();
                                outbox
                                    .push(sse::chunked(CAUGHT_UP))
                                    .expect("an open socket");
                                Box::new((fanout.join(outbox.clone()), counted))
                            },
                            &shutdown,
                        )
                        .retry(Duration::from_millis(1500))
                        .into_response()
                    }
                    "/events" => {
                        let counted = streams.enter();
                        let events = futures_util::stream::unfold(
                            (publish.subscribe(), counted),
                            |(mut events, counted)| async move {
                                let event = events.recv().await.ok()?;
                                Some((event, (events, counted)))
                            },
                        );
                        SseResponse::new(events, &shutdown)
                            .retry(Duration::from_millis(1500))
                            .into_response()
                    }
                    "/nothing" => respond::full(StatusCode::NO_CONTENT, "text/plain", "ignored"),
                    _ => respond::error(StatusCode::BAD_REQUEST, "no such stream"),
                };
                async move { response }
            }
        };
        let options = ServerOptions {
            direct_streams: true,
            ..ServerOptions::default()
        };
        let task = tokio::spawn(serve_with(
            options,
            listener,
            std::future::pending(),
            shutdown.clone(),
            handler,
        ));
        Self {
            addr,
            shutdown,
            streams,
            publish,
            fanout,
            task,
        }
    }

    /// Sends `event` to every `/shared` stream on the direct path.
    fn share(&self, event: &[u8]) {
        self.fanout.send(sse::chunked(event));
    }

    async fn send(&self, request: &[u8]) -> TcpStream {
        let mut client = TcpStream::connect(self.addr).await.expect("connect");
        client.write_all(request).await.expect("send the request");
        client
    }

    async fn wait_for_streams(&self, count: usize) {
        let reached = timeout(WAIT, async {
            while self.streams.get() != count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "expected {count} open streams, have {}",
            self.streams.get()
        );
    }
}

/// A client's view of a response: the head, then the body's bytes as they are read.
struct Reader {
    client: TcpStream,
    buffered: Vec<u8>,
}

impl Reader {
    async fn head(client: TcpStream) -> (String, Self) {
        let mut reader = Self {
            client,
            buffered: Vec::new(),
        };
        let end = reader.until(b"\r\n\r\n").await;
        let head = String::from_utf8(reader.buffered.drain(..end).collect()).expect("UTF-8");
        (head, reader)
    }

    /// Reads until `marker` is buffered; returns the index just past it.
    async fn until(&mut self, marker: &[u8]) -> usize {
        // Only the bytes that could end a new match are searched again: a stream of megabytes
        // is then read in linear time.
        let mut searched = 0;
        timeout(WAIT, async {
            loop {
                if let Some(at) = self.buffered[searched..]
                    .windows(marker.len())
                    .position(|window| window == marker)
                {
                    return searched + at + marker.len();
                }
                searched = self.buffered.len().saturating_sub(marker.len() - 1);
                let mut chunk = [0; 4096];
                let read = self.client.read(&mut chunk).await.expect("read");
                assert!(
                    read > 0,
                    "closed before {:?}",
                    String::from_utf8_lossy(marker)
                );
                self.buffered.extend_from_slice(&chunk[..read]);
            }
        })
        .await
        .expect("in time")
    }

    /// Everything up to the end of the connection.
    async fn read_to_close(mut self) -> Vec<u8> {
        timeout(WAIT, self.client.read_to_end(&mut self.buffered))
            .await
            .expect("the connection closed in time")
            .expect("read");
        self.buffered
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Decodes a complete chunked body (it must end with the last chunk).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a size line");
        let size = std::str::from_utf8(&body[..line_end]).expect("ASCII");
        let size = usize::from_str_radix(size, 16).expect("a hex size");
        body = &body[line_end + 2..];
        if size == 0 {
            assert_eq!(body, b"\r\n", "nothing after the last chunk");
            return out;
        }
        out.extend_from_slice(&body[..size]);
        assert_eq!(&body[size..size + 2], b"\r\n", "each chunk ends with CRLF");
        body = &body[size + 2..];
    }
}

/// The stream a browser gets: 200, the handler's headers, chunked framing and a Date; then
/// `retry:` and every event, each whole in its chunk.
#[tokio::test]
async fn a_browser_gets_a_chunked_event_stream_with_the_handlers_headers() {
    let server = Server::start().await;
    let client = server.send(BROWSER_REQUEST).await;
    let (head, mut reader) = Reader::head(client).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert!(header(&head, "date").is_some_and(|date| date.ends_with(" GMT")));
    assert_eq!(header(&head, "content-length"), None);

    server.wait_for_streams(1).await;
    let event = Event::new().id("7").unwrap().data("one\ntwo").encode();
    server.publish.send(event.clone()).expect("a subscriber");
    reader.until(b"data: two\n\n\r\n").await;
    server.shutdown.trigger();
    let body = dechunk(&reader.read_to_close().await);
    assert_eq!(body, [b"retry: 1500\n\n".as_slice(), &event].concat());
    timeout(WAIT, server.task)
        .await
        .expect("serve returned")
        .expect("no panic");
}

/// Events published together leave together, and none is lost or reordered.
#[tokio::test]
async fn a_burst_of_events_arrives_whole_and_in_order() {
    let server = Server::start().await;
    let client = server.send(BROWSER_REQUEST).await;
    let (_, mut reader) = Reader::head(client).await;
    server.wait_for_streams(1).await;
    let events: Vec<Bytes> = (0..50)
        .map(|n| Event::new().data(format!("event {n}")).encode())
        .collect();
    for event in &events {
        server.publish.send(event.clone()).expect("a subscriber");
    }
    reader.until(b"data: event 49\n\n\r\n").await;
    server.shutdown.trigger();
    let body = dechunk(&reader.read_to_close().await);
    assert_eq!(
        body,
        [b"retry: 1500\n\n".to_vec(), events.concat()].concat()
    );
}

/// A client that closes its connection frees its stream at once, without a write to notice it.
#[tokio::test]
async fn a_client_that_leaves_frees_its_stream() {
    let server = Server::start().await;
    let client = server.send(BROWSER_REQUEST).await;
    let (_, reader) = Reader::head(client).await;
    server.wait_for_streams(1).await;
    drop(reader);
    server.wait_for_streams(0).await;
}

/// An answer that is not a stream (an error) is written whole, framed by its length, and the
/// connection closes after it.
#[tokio::test]
async fn an_answer_that_is_not_a_stream_is_written_whole_and_closed() {
    let server = Server::start().await;
    let request = b"GET /nope HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";
    let client = server.send(request).await;
    let (head, reader) = Reader::head(client).await;
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"));
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let body = reader.read_to_close().await;
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(error["error"], "no such stream");
}

/// A `204` on the direct path has no body and no `Content-Length` (RFC 9110 section 8.6), even
/// if the handler gave it one; the connection still closes after it.
#[tokio::test]
async fn a_no_content_answer_has_no_length_and_no_body() {
    let server = Server::start().await;
    let request = b"GET /nothing HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";
    let client = server.send(request).await;
    let (head, reader) = Reader::head(client).await;
    assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
    assert_eq!(header(&head, "content-length"), None, "{head}");
    assert_eq!(header(&head, "connection"), Some("close"));
    assert!(reader.read_to_close().await.is_empty());
}

/// Requests the direct path does not take (no `Accept`, a body, HTTP/1.0, a head split over
/// two writes) are still answered, by hyper.
#[tokio::test]
async fn every_other_request_is_still_answered() {
    let server = Server::start().await;
    for request in [
        b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n".as_slice(),
        b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nContent-Length: 0\r\n\r\n",
        b"GET /events HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    ] {
        let client = server.send(request).await;
        let (head, mut reader) = Reader::head(client).await;
        assert!(head.contains(" 200 OK\r\n"), "{head}");
        assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
        reader.until(b"retry: 1500\n\n").await;
    }

    let (first, rest) = BROWSER_REQUEST.split_at(20);
    let mut client = server.send(first).await;
    client.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(rest).await.expect("the rest");
    let (head, mut reader) = Reader::head(client).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    reader.until(b"retry: 1500\n\n").await;
}

/// Bytes a client sends after its request (a pipelined request) are dropped; the stream goes on.
#[tokio::test]
async fn bytes_after_the_request_do_not_disturb_the_stream() {
    let server = Server::start().await;
    let mut client = server.send(BROWSER_REQUEST).await;
    client
        .write_all(b"GET /other HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send more");
    let (_, mut reader) = Reader::head(client).await;
    server.wait_for_streams(1).await;
    server
        .publish
        .send(Event::new().data("still here").encode())
        .expect("a subscriber");
    reader.until(b"data: still here\n\n").await;
    assert_eq!(server.streams.get(), 1);
}

// --- streams a fan-out writes ----------------------------------------------------------------

const SHARED_REQUEST: &[u8] =
    b"GET /shared HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";

/// A stream joined to a fan-out gets the head, `retry:`, its catch-up, then every event sent
/// after it joined, each in its own chunk; on shutdown it ends with the last chunk. A request
/// that hyper answers (no `Accept: text/event-stream`) gets the same events from its own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_stream_gets_its_catch_up_then_what_is_sent_on_either_path() {
    let server = Server::start().await;
    let (head, mut direct) = Reader::head(server.send(SHARED_REQUEST).await).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&head, "content-type"), Some("text/event-stream"));
    let by_hyper = b"GET /shared HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (hyper_head, mut hyper) = Reader::head(server.send(by_hyper).await).await;
    assert!(
        hyper_head.starts_with("HTTP/1.1 200 OK\r\n"),
        "{hyper_head}"
    );
    direct.until(CAUGHT_UP).await;
    hyper.until(CAUGHT_UP).await;
    server.wait_for_streams(1).await;

    let events: Vec<Bytes> = (0..50)
        .map(|n| {
            Event::new()
                .id(n.to_string())
                .unwrap()
                .data(format!("event {n}"))
                .encode()
        })
        .collect();
    for event in &events {
        server.share(event);
        server.publish.send(event.clone()).expect("hyper's stream");
    }
    direct.until(b"data: event 49\n\n\r\n").await;
    hyper.until(b"data: event 49\n\n").await;
    server.shutdown.trigger();
    let expected = [b"retry: 1500\n\n".as_slice(), CAUGHT_UP, &events.concat()].concat();
    assert_eq!(dechunk(&direct.read_to_close().await), expected);
    assert_eq!(dechunk(&hyper.read_to_close().await), expected);
}

/// A client that reads nothing is closed once it is a backlog behind, with a comment saying why
/// after a gap-free prefix; a client reading beside it gets every event, and the fan-out lets go
/// of the slow one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_stream_that_reads_nothing_is_closed_and_the_others_are_not() {
    let server = Server::start_with(8, sse::DEFAULT_KEEP_ALIVE).await;
    // A small receive buffer, so the kernel stops taking the stream's bytes early.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = socket.connect(server.addr).await.expect("connect");
    stalled.write_all(SHARED_REQUEST).await.expect("request");
    let (_, mut healthy) = Reader::head(server.send(SHARED_REQUEST).await).await;
    healthy.until(CAUGHT_UP).await;
    server.wait_for_streams(2).await;

    let event = |n: usize| {
        Event::new()
            .id(n.to_string())
            .unwrap()
            .data("x".repeat(20_000))
            .encode()
    };
    let reading = tokio::spawn(async move {
        healthy.until(b"id: 299\n").await;
        healthy
    });
    for n in 0..300 {
        server.share(&event(n));
        // A pace the healthy reader keeps up with; the stalled one reads nothing at all.
        if n % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let healthy = timeout(WAIT, reading)
        .await
        .expect("in time")
        .expect("reader");
    server.wait_for_streams(1).await;

    let stalled = Reader {
        client: stalled,
        buffered: Vec::new(),
    };
    let raw = stalled.read_to_close().await;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let body = String::from_utf8(dechunk(&raw[end..])).expect("UTF-8");
    assert!(
        body.ends_with(
            ": closing: this stream fell too far behind; reconnect with Last-Event-ID to catch up\n"
        ),
        "the server says why"
    );
    let ids: Vec<usize> = body
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .map(|id| id.parse().expect("a number"))
        .collect();
    assert!(ids.len() < 300, "closed early");
    assert_eq!(ids, (0..ids.len()).collect::<Vec<_>>(), "a gap-free prefix");
    drop(healthy);
    server.wait_for_streams(0).await;
}

/// A quiet fan-out writes the keep-alive comment to its streams, once per interval, from its
/// writer: no stream has a timer of its own.
#[tokio::test]
async fn a_quiet_shared_stream_gets_the_writers_keep_alive() {
    let server = Server::start_with(8, Duration::from_millis(100)).await;
    let (_, mut reader) = Reader::head(server.send(SHARED_REQUEST).await).await;
    reader.until(CAUGHT_UP).await;
    let started = tokio::time::Instant::now();
    reader.until(b"\r\n: keep-alive\n\r\n").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    server.share(b"data: after\n\n");
    reader.until(b"data: after\n\n").await;
}
