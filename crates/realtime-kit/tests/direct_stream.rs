//! The kit's direct path for event streams, over real sockets: a browser's request for a stream
//! is answered on the socket itself (no hyper buffers), everything else still reaches hyper,
//! and both give the client the same protocol.
//!
//! Run with `cargo test -p realtime-kit --test direct_stream`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use realtime_kit::sse::{Event, SseResponse};
use realtime_kit::{Gauge, RequestBody, ServerOptions, Shutdown, respond, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// What a browser's `EventSource` sends.
const BROWSER_REQUEST: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";

/// A server whose `/events` streams what the test publishes, counting open streams.
struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
    streams: Gauge,
    publish: broadcast::Sender<Bytes>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let shutdown = Shutdown::new();
        let streams = Gauge::new();
        let (publish, _) = broadcast::channel::<Bytes>(64);
        let handler = {
            let (shutdown, streams, publish) = (shutdown.clone(), streams.clone(), publish.clone());
            move |request: Request<RequestBody>| {
                let response = match request.uri().path() {
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
            task,
        }
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
        timeout(WAIT, async {
            loop {
                if let Some(at) = self
                    .buffered
                    .windows(marker.len())
                    .position(|window| window == marker)
                {
                    return at + marker.len();
                }
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
