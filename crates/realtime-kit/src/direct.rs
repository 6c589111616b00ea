//! The direct path for event streams: the kit answers a browser's `GET` for an event stream
//! itself and writes the stream straight onto the socket, without hyper.
//!
//! Why: hyper keeps two 8 KiB buffers for as long as a connection lives, one that requests are
//! read into and one that response heads are written into. An event stream reads nothing after
//! its request and writes only small frames, so with 10,000 open streams those two buffers are
//! most of the server's memory: measured, 11.8 KiB per idle stream through hyper against 4-5 KiB
//! here (the chapter "How many clients can one server hold?" has the figures and the method).
//!
//! It takes only what it is sure of. The request must be complete in the first bytes the client
//! sent, HTTP/1.1, `GET`, with `Accept: text/event-stream` (what `EventSource` sends), no body
//! and no upgrade; its `Host` is checked by the server, as on hyper's path. The kit *peeks* at
//! those bytes, so anything else reaches hyper untouched and is served exactly as before. The
//! handler is the same one hyper calls:
//! - if it answers `200` with `Content-Type: text/event-stream`, the stream is written with the
//!   chunked transfer coding, frames that are ready together leave in one write, a write that
//!   makes no progress for the stall limit ends the connection, and when the stream ends (on
//!   shutdown) the last chunk is written and the connection closed;
//! - if that answer was made with [`SseResponse::shared`](crate::sse::SseResponse::shared), the
//!   socket goes to a [`Fanout`](crate::fanout::Fanout) instead, whose writer per core writes
//!   the events, and this connection's task only writes out what a full socket left waiting;
//! - any other answer (a `400` for a malformed `Last-Event-ID`, a `404`) is written whole with
//!   `Content-Length` and `Connection: close`.
//!
//! Run the tests with `cargo test -p realtime-kit --test direct_stream`.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::io::Write as _;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::fanout::Outbox;
use crate::server::{ConnectionLimits, RequestBody, ResponseBody, Shutdown};
use crate::sse::{Join, JoinFn};

/// The most of a request head the kit looks at. A browser's request for an event stream is well
/// under 1 KiB; a longer head (large cookies) is left to hyper.
const PEEK_LIMIT: usize = 4096;

/// The most headers the kit parses; a request with more is left to hyper.
const MAX_HEADERS: usize = 32;

/// How many bytes of ready frames are gathered into one write.
const BATCH_LIMIT: usize = 64 * 1024;

// ANCHOR: sniff
/// What the first bytes of a connection turned out to be.
pub(crate) enum Sniffed {
    /// A request for an event stream, taken off the socket: the kit answers it.
    Stream(Box<Request<RequestBody>>),
    /// Anything else, still unread on the socket: hyper answers it.
    Other,
    /// The client sent nothing in time, or closed: there is nothing to answer.
    Nothing,
}

thread_local! {
    /// Where a worker thread looks at connections' first bytes. One buffer per thread, not per
    /// connection: it is only borrowed inside a single poll, never across an `.await`.
    static HEAD: RefCell<[u8; PEEK_LIMIT]> = const { RefCell::new([0; PEEK_LIMIT]) };
}

/// Waits (at most `header_read_timeout`) for the first bytes of `stream` and looks at them
/// without reading them; takes them off the socket only if they are a request for a stream.
pub(crate) async fn sniff(stream: &mut TcpStream, header_read_timeout: Duration) -> Sniffed {
    let look = std::future::poll_fn(|cx| {
        HEAD.with_borrow_mut(|head| {
            let mut peeked = ReadBuf::new(head);
            match stream.poll_peek(cx, &mut peeked) {
                Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(None),
                Poll::Ready(Ok(_)) => Poll::Ready(Some(stream_request(peeked.filled()))),
                Poll::Pending => Poll::Pending,
            }
        })
    });
    let (request, mut length) = match tokio::time::timeout(header_read_timeout, look).await {
        Ok(Some(Some(taken))) => taken,
        Ok(Some(None)) => return Sniffed::Other,
        Ok(None) | Err(_) => return Sniffed::Nothing,
    };
    // Take the head off the socket. Those bytes are already in its receive queue, so this
    // does not wait for the client.
    let consumed = std::future::poll_fn(|cx| {
        HEAD.with_borrow_mut(|head| {
            while length > 0 {
                let mut read = ReadBuf::new(&mut head[..length]);
                match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                        length -= read.filled().len();
                    }
                    Poll::Ready(_) => return Poll::Ready(false),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(true)
        })
    });
    if consumed.await {
        Sniffed::Stream(Box::new(request))
    } else {
        Sniffed::Nothing
    }
}

/// Parses `bytes` as a complete request for an event stream that the direct path may answer,
/// and returns it with the length of its head; `None` for anything else.
fn stream_request(bytes: &[u8]) -> Option<(Request<RequestBody>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = head.parse(bytes).ok()? else {
        return None;
    };
    if head.method != Some("GET") || head.version != Some(1) {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(head.path?)
        .version(Version::HTTP_11);
    let mut wants_stream = false;
    for field in head.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        // A body, an upgrade or an expectation is hyper's to handle.
        if [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::EXPECT,
        ]
        .contains(&name)
        {
            return None;
        }
        wants_stream |= name == header::ACCEPT && mentions_event_stream(field.value);
        request = request.header(name, HeaderValue::from_bytes(field.value).ok()?);
    }
    // `Host` is not looked at here: the server checks it on every request, on both paths.
    if !wants_stream {
        return None;
    }
    let body = Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    Some((request.body(body).ok()?, length))
}

// ANCHOR_END: sniff

fn mentions_event_stream(accept: &[u8]) -> bool {
    const EVENT_STREAM: &[u8] = b"text/event-stream";
    accept
        .windows(EVENT_STREAM.len())
        .any(|window| window.eq_ignore_ascii_case(EVENT_STREAM))
}

// ANCHOR: answer
/// Answers a request taken by [`sniff`] with `handler`, on the socket itself.
pub(crate) async fn answer<H, F>(
    mut stream: TcpStream,
    request: Request<RequestBody>,
    handler: H,
    limits: ConnectionLimits,
    shutdown: &Shutdown,
) -> io::Result<()>
where
    H: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Response<ResponseBody>>,
{
    let response = handler(request).await;
    let is_stream = response.status() == StatusCode::OK
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| mentions_event_stream(value.as_bytes()));
    if !is_stream {
        return write_whole(stream, response, limits).await;
    }
    let (mut parts, body) = response.into_parts();
    let head = head(parts.status, &parts.headers, "transfer-encoding: chunked");
    if let Some(shared) = parts.extensions.remove::<Join>()
        && let Some(join) = shared.take()
    {
        // Neither is needed again, and both would otherwise live as long as the stream:
        // hyper's body (its own timer, its own shutdown wait) and the headers. Measured, an
        // idle stream held 5.2 KiB with them, 3.5 KiB without.
        drop((parts, body));
        let mut opening = head;
        if let Some(first) = &shared.first {
            chunk(&mut opening, first);
        }
        return write_shared(stream, opening, join, limits, shutdown).await;
    }
    drop(parts);
    if write_stream(&stream, head, body, limits, shutdown).await? {
        stream.shutdown().await?;
    }
    Ok(())
}

/// Why a stream that fell behind is closed, for whoever reads the raw stream.
const TOO_SLOW: &[u8] =
    b": closing: this stream fell too far behind; reconnect with Last-Event-ID to catch up\n";

// ANCHOR: write_shared
/// Writes a stream that a [`Fanout`](crate::fanout::Fanout) writes to: `opening` (the head,
/// `retry:`) and whatever `join` pushes, then the fan-out's events, until the client goes, falls
/// too far behind, or the server shuts down. This task writes only what a full socket left
/// waiting; the fan-out's writer does the rest.
async fn write_shared(
    stream: TcpStream,
    opening: Vec<u8>,
    join: JoinFn,
    limits: ConnectionLimits,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let stall = limits.write_stall_timeout;
    let outbox = Outbox::new(stream);
    outbox.push(opening.into())?;
    let membership = join(&outbox);
    let client_gone = client_gone(outbox.socket());
    let stopping = shutdown.requested_owned();
    tokio::pin!(client_gone, stopping);
    let mut ending = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = outbox.needs_attention() => {
                // Bytes wait for a socket that was full: write them out as the client reads,
                // unless it falls a whole backlog behind meanwhile.
                let fell_behind = tokio::select! {
                    written = flush(&outbox, stall) => written.map(|()| outbox.too_slow())?,
                    () = fell_behind(&outbox) => true,
                };
                if fell_behind {
                    tracing::info!("closing a stream that fell behind; it resumes from Last-Event-ID");
                    chunk(&mut ending, TOO_SLOW);
                    break;
                }
            }
            () = &mut client_gone => return Ok(()),
            () = &mut stopping => break,
        }
    }
    // Out of the fan-out first, so nothing follows the last chunk.
    drop(membership);
    ending.extend_from_slice(LAST_CHUNK);
    outbox.push(ending.into())?;
    flush(&outbox, stall).await
}

/// Completes when the fan-out has marked the client too slow.
async fn fell_behind(outbox: &Outbox) {
    while !outbox.too_slow() {
        outbox.needs_attention().await;
    }
}

/// Writes out what waits in `outbox`, failing with `TimedOut` if the client takes nothing for
/// `limit`.
async fn flush(outbox: &Outbox, limit: Duration) -> io::Result<()> {
    tokio::time::timeout(limit, outbox.flush())
        .await
        .unwrap_or_else(|_| Err(stalled(limit)))
}
// ANCHOR_END: write_shared

/// Writes `head`, then `body` in chunks as it comes; true if the body ended (the last chunk is
/// written), false if the client went away first.
async fn write_stream(
    stream: &TcpStream,
    mut pending: Vec<u8>,
    mut body: ResponseBody,
    limits: ConnectionLimits,
    shutdown: &Shutdown,
) -> io::Result<bool> {
    // Made once, not once per event: each registers a waker (with the socket's readiness, with
    // the shutdown signal), and registering takes a lock.
    let client_gone = client_gone(stream);
    let stopping = shutdown.requested_owned();
    tokio::pin!(client_gone, stopping);
    let mut ended = false;
    loop {
        // Whatever the stream has ready now goes out in this write, the head with it the
        // first time, so a burst of events costs one system call.
        ended = ended || gather(&mut body, &mut pending);
        if !pending.is_empty() {
            write(stream, &pending, limits.write_stall_timeout).await?;
            // Dropped, not kept: an idle stream holds no write buffer.
            pending = Vec::new();
        }
        if ended {
            return Ok(true);
        }
        tokio::select! {
            // The body first: while events flow, nothing else is polled.
            biased;
            frame = body.frame() => ended = append(frame, &mut pending),
            () = &mut client_gone => return Ok(false),
            // The kit's streams end themselves on shutdown; this bounds any other body.
            () = &mut stopping => {
                if !gather(&mut body, &mut pending) {
                    pending.extend_from_slice(LAST_CHUNK);
                }
                ended = true;
            }
        }
    }
}

// ANCHOR_END: answer

/// Ends a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends every frame `body` has ready, up to [`BATCH_LIMIT`]; true if the body has ended
/// (and the last chunk has been appended).
fn gather(body: &mut ResponseBody, pending: &mut Vec<u8>) -> bool {
    while pending.len() < BATCH_LIMIT {
        match body.frame().now_or_never() {
            None => return false,
            Some(frame) => {
                if append(frame, pending) {
                    return true;
                }
            }
        }
    }
    false
}

/// Appends what the body gave: a frame's data as a chunk, or the last chunk when the body has
/// ended (then true).
fn append(frame: Option<Result<Frame<Bytes>, Infallible>>, pending: &mut Vec<u8>) -> bool {
    match frame {
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                chunk(pending, &data);
            }
            false
        }
        Some(Err(never)) => match never {},
        None => {
            pending.extend_from_slice(LAST_CHUNK);
            true
        }
    }
}

/// Appends `data` as one chunk: its length in hex, CRLF, the bytes, CRLF.
pub(crate) fn chunk(pending: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        // An empty chunk would be the last one.
        return;
    }
    let _ = write!(pending, "{:x}\r\n", data.len());
    pending.extend_from_slice(data);
    pending.extend_from_slice(b"\r\n");
}

/// A response's status line and headers, with `framing` (how the body is delimited), `Date`,
/// and the blank line that ends the head.
fn head(status: StatusCode, headers: &http::HeaderMap, framing: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let reason = status.canonical_reason().unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", status.as_str());
    for (name, value) in headers {
        // Framing is this module's to decide.
        if [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(name)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let _ = write!(out, "date: {date}\r\n{framing}\r\n\r\n");
    out
}

/// How long a connection is kept open after a whole answer, for the client to read it.
const LINGER: Duration = Duration::from_secs(2);

/// How many bytes the client may still send after a whole answer before the kit stops
/// waiting for it to read.
const LINGER_BYTES: usize = 64 * 1024;

// ANCHOR: write_whole
/// Writes a response that is not a stream, whole, and closes the connection so that the client
/// gets to read it.
///
/// Closing a socket whose receive queue still holds bytes (a pipelined request the server will
/// never answer) makes the kernel send RST instead of FIN, and a client that receives RST may
/// throw away the answer it had not read yet: the `400` it was meant to see becomes "connection
/// reset". So the write side is shut first (FIN after the answer), and what the client still
/// sends is read and dropped until it closes too, for at most [`LINGER`] or [`LINGER_BYTES`]:
/// the lingering close of RFC 9112 section 9.6.
async fn write_whole(
    mut stream: TcpStream,
    response: Response<ResponseBody>,
    limits: ConnectionLimits,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    // 1xx, 204 and 304 answers have no body and no Content-Length (RFC 9110 sections 8.6, 15.3.5
    // and 15.4.5).
    let bodyless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let mut out = if bodyless {
        head(parts.status, &parts.headers, "connection: close")
    } else {
        let framing = format!("content-length: {}\r\nconnection: close", body.len());
        head(parts.status, &parts.headers, &framing)
    };
    if !bodyless {
        out.extend_from_slice(&body);
    }
    write(&stream, &out, limits.write_stall_timeout).await?;
    stream.shutdown().await?;
    let _ = tokio::time::timeout(LINGER, drain(&stream, LINGER_BYTES)).await;
    Ok(())
}

/// Reads and drops what the client sends until it closes, or `limit` bytes have come. The
/// scratch buffer is small because an open stream's wait for its client holds it.
async fn drain(stream: &TcpStream, limit: usize) {
    let mut scratch = [0; 64];
    let mut drained = 0;
    while drained < limit {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(n) => drained = drained.saturating_add(n),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
// ANCHOR_END: write_whole

/// Writes all of `bytes`, failing with `TimedOut` if the client accepts nothing for `limit`.
/// The timer exists only while the socket is full: most writes go straight through.
async fn write(stream: &TcpStream, bytes: &[u8], limit: Duration) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.try_write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if tokio::time::timeout(limit, stream.writable())
                    .await
                    .is_err()
                {
                    return Err(stalled(limit));
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn stalled(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client accepted no data for {limit:?}"),
    )
}

/// Completes when the client has closed the connection (or it failed). A stream's client has
/// nothing more to send; bytes it sends anyway (a pipelined request, which a never-ending
/// response could never answer) are read and dropped, so they cannot pile up.
async fn client_gone(stream: &TcpStream) {
    drain(stream, usize::MAX).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Option<(Request<RequestBody>, usize)> {
        stream_request(head.as_bytes())
    }

    #[test]
    fn a_browsers_request_for_a_stream_is_taken_with_its_headers() {
        let head = "GET /events?symbols=ACME HTTP/1.1\r\nHost: localhost\r\n\
                    Accept: text/event-stream\r\nLast-Event-ID: 41\r\n\r\n";
        let (request, length) = parse(head).expect("taken");
        assert_eq!(length, head.len());
        assert_eq!(request.uri(), "/events?symbols=ACME");
        assert_eq!(request.headers()["last-event-id"], "41");
    }

    #[test]
    fn only_the_head_is_taken_when_more_follows() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nAccept: TEXT/EVENT-STREAM\r\n\r\n";
        let (_, length) = parse(&format!("{head}GET /next HTTP/1.1\r\n")).expect("taken");
        assert_eq!(length, head.len());
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        for head in [
            // Not asking for a stream.
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n",
            // Incomplete: the rest may come in the next segment.
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n",
            // Another method, another version.
            "POST / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
            // A body, an upgrade, an expectation.
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\nContent-Length: 2\r\n\r\nhi",
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\nExpect: 100-continue\r\n\r\n",
            // Malformed.
            "GET /\x01 HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n",
            "NOT HTTP AT ALL\r\n\r\n",
        ] {
            assert!(parse(head).is_none(), "taken: {head:?}");
        }
    }

    #[test]
    fn a_head_with_too_many_headers_is_left_to_hyper() {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n");
        for i in 0..MAX_HEADERS {
            head.push_str(&format!("X-{i}: y\r\n"));
        }
        head.push_str("\r\n");
        assert!(parse(&head).is_none());
    }

    #[test]
    fn chunks_are_hex_length_data_crlf_and_empty_data_writes_nothing() {
        let mut out = Vec::new();
        chunk(&mut out, &Bytes::from_static(&[b'x'; 26]));
        chunk(&mut out, &Bytes::new());
        assert_eq!(out, [b"1a\r\n".as_slice(), &[b'x'; 26], b"\r\n"].concat());
    }

    #[test]
    fn the_head_sets_its_own_framing_and_a_date() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        let head = String::from_utf8(head(StatusCode::OK, &headers, "transfer-encoding: chunked"))
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"));
        assert!(!head.contains("content-length"));
        assert!(head.contains("\r\ndate: "));
        assert!(head.ends_with("transfer-encoding: chunked\r\n\r\n"));
    }
}
