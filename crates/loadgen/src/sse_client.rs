//! A cheap Server-Sent Events client, built for holding thousands of streams on one thread.
//!
//! It writes one `GET` on a TCP connection loadgen has already opened, parses the response head
//! with `httparse`, de-chunks the body itself and feeds the bytes to the kit's [`SseParser`].
//! A client owns its socket, its framing state and a parser, nothing else: no channel, no task
//! besides the one reading it, not even a read buffer (see [`READ_BUFFER`]). An event costs one
//! `recvmsg` on the socket and a call to the reader's handler, which stamps its arrival; the
//! read also carries the kernel's own arrival stamp of the data (see [`crate::kernel_stamp`]).
//!
//! The kit's `realtime_kit::client::EventStream` (a hyper client) does the same job for the
//! tests and examples. loadgen shares the machine's cores with the server it measures, so every
//! microsecond it spends per event is taken from the server, and 10,000 arrivals of one message
//! add up: see [`SseClient::run`] for what an event costs.

use std::cell::RefCell;
use std::fmt;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use realtime_kit::parser::{MessageEvent, SseParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::kernel_stamp;

/// Bytes read at a time. One tick or chat message is 100-300 bytes, so one read is one event;
/// a burst (a chat backlog) takes several reads.
const READ_BUFFER_SIZE: usize = 4096;

thread_local! {
    /// The read buffer every client on this thread shares. A client decodes and parses each read
    /// before its task yields, so no bytes stay in the buffer between reads, and one buffer, warm
    /// in the CPU's cache, serves 10,000 clients (instead of 40 MiB of cold ones).
    static READ_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; READ_BUFFER_SIZE].into_boxed_slice());
}

/// The response head (status line and headers) may grow the head's buffer up to this; a larger
/// head is an error rather than an ever-growing buffer.
const MAX_HEAD: usize = 16 * 1024;

/// Headers the response may carry; more is an error (hyper's SSE responses have about six).
pub(crate) const MAX_HEADERS: usize = 32;

/// One open event stream: the response head was `200` with `text/event-stream`.
pub(crate) struct SseClient {
    tcp: TcpStream,
    /// Body bytes that came in with the response head: decoded before the first read.
    pending: Vec<u8>,
    /// How the body is framed: chunked, or until the server closes the connection.
    body: Body,
    parser: SseParser,
}

/// The framing of a response body, from its head (RFC 9112 section 6.3).
#[derive(Debug)]
pub(crate) enum Body {
    /// `Transfer-Encoding: chunked`: the stream ends with the last chunk.
    Chunked(Dechunker),
    /// No `Transfer-Encoding` and no `Content-Length`: the stream ends when the server closes.
    UntilClose,
}

impl SseClient {
    /// Sends `GET url` on `tcp` and reads the response head. Anything but `200` with
    /// `Content-Type: text/event-stream` and a body framing an endless stream can have is an error.
    /// `accept` sends `Accept: text/event-stream`, as a browser's `EventSource` does; without it
    /// the request is what `curl` sends.
    pub(crate) async fn open(
        mut tcp: TcpStream,
        url: &str,
        accept: bool,
    ) -> realtime_kit::Result<Self> {
        let (target, authority) = target_and_authority(url)?;
        // Servers may route on Accept: the kit serves requests that carry it without hyper
        // (realtime-kit's direct.rs), so `--plain` leaves it out to measure hyper's path.
        let accept = if accept {
            "Accept: text/event-stream\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {authority}\r\n{accept}Cache-Control: no-cache\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await?;
        let (body, pending) = read_head(&mut tcp, url, parse_head).await?;
        Ok(Self {
            tcp,
            pending,
            body,
            parser: SseParser::new(),
        })
    }

    /// Gives up the connection to another reader (the epoll reader): its socket, the body
    /// bytes that came in with the response head, and how the body is framed.
    pub(crate) fn into_parts(self) -> (TcpStream, Vec<u8>, Body) {
        (self.tcp, self.pending, self.body)
    }

    /// Reads the stream until it ends, calling `on_event` with each event as soon as the read
    /// that completed it returns, and the kernel's arrival time of that read's data (`None` for
    /// events that came with the response head, or when the socket has no stamps enabled). Ends with `Ok` when the server ends the stream (the last chunk,
    /// or closing a close-delimited body), with an error when the connection fails or the body
    /// is malformed.
    ///
    /// Per event, what remains is the kernel's wake-up and `read` (about half of the cost,
    /// mostly cache misses on 10,000 sockets' state), tokio's scheduling of this task, and
    /// [`SseParser::feed`] (about 1 µs: a line at a time, and a few small allocations, as it
    /// returns owned events). Measured on this 2-core machine with 10,000 clock clients, while
    /// other programs were busy too: 3.7-5.0 µs of loadgen CPU per event, against 8.2-10 µs
    /// with the kit's hyper client; without the parser, 3.2-3.8 µs.
    pub(crate) async fn run(
        mut self,
        mut on_event: impl FnMut(MessageEvent, Option<SystemTime>),
    ) -> realtime_kit::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        if self.decode(&pending, &mut |event| on_event(event, None))? {
            return Ok(());
        }
        drop(pending);
        std::future::poll_fn(|cx| self.poll_read_events(cx, &mut on_event)).await
    }

    /// Reads and decodes what the socket has, into the shared buffer, until the socket has no
    /// more (`Pending`: tokio wakes the task when it does) or the stream ends.
    fn poll_read_events(
        &mut self,
        cx: &mut Context<'_>,
        on_event: &mut impl FnMut(MessageEvent, Option<SystemTime>),
    ) -> Poll<realtime_kit::Result<()>> {
        READ_BUFFER.with_borrow_mut(|buffer| {
            loop {
                let mut read = ReadBuf::new(buffer);
                let stamp = ready!(kernel_stamp::poll_recv_stamped(&self.tcp, cx, &mut read))?;
                if read.filled().is_empty() {
                    return Poll::Ready(match self.body {
                        Body::Chunked(_) => {
                            Err("the server closed the stream before its last chunk".into())
                        }
                        Body::UntilClose => Ok(()),
                    });
                }
                if self.decode(read.filled(), &mut |event| on_event(event, stamp))? {
                    return Poll::Ready(Ok(()));
                }
            }
        })
    }

    /// Decodes body bytes and hands every event they complete to `on_event`; `true` once the
    /// body has ended.
    fn decode(
        &mut self,
        bytes: &[u8],
        on_event: &mut impl FnMut(MessageEvent),
    ) -> Result<bool, ChunkError> {
        let parser = &mut self.parser;
        let mut deliver = |data: &[u8]| parser.feed(data).into_iter().for_each(&mut *on_event);
        match &mut self.body {
            Body::Chunked(dechunker) => dechunker.decode(bytes, deliver),
            Body::UntilClose => {
                deliver(bytes);
                Ok(false)
            }
        }
    }
}

/// The request target (`/path?query`) and the authority (`host:port`, for `Host`) of `url`,
/// for a request written by hand.
pub(crate) fn target_and_authority(url: &str) -> realtime_kit::Result<(String, String)> {
    let uri: http::Uri = url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url} has no host"))?;
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    Ok((target.to_owned(), authority.to_string()))
}

/// Reads a response head from `tcp` until `parse` accepts it (`parse` returns `None` while the
/// head is incomplete, the head's length and what it found once it is complete, an error if it
/// is unacceptable), at most [`MAX_HEAD`] bytes. Returns what `parse` found and the bytes that
/// came after the head. The head is read into a buffer of its own, freed here: a client's shared
/// read buffer cannot be held across an await.
pub(crate) async fn read_head<T>(
    tcp: &mut TcpStream,
    url: &str,
    mut parse: impl FnMut(&[u8]) -> Result<Option<(usize, T)>, String>,
) -> realtime_kit::Result<(T, Vec<u8>)> {
    let mut buffer = vec![0; 1024];
    let mut filled = 0;
    loop {
        if filled == buffer.len() {
            if buffer.len() >= MAX_HEAD {
                return Err(format!("{url}: response head longer than {MAX_HEAD} bytes").into());
            }
            buffer.resize((buffer.len() * 2).min(MAX_HEAD), 0);
        }
        let read = tcp.read(&mut buffer[filled..]).await?;
        if read == 0 {
            return Err(format!("{url}: connection closed before the response head").into());
        }
        filled += read;
        if let Some((length, found)) =
            parse(&buffer[..filled]).map_err(|error| format!("{url}: {error}"))?
        {
            return Ok((found, buffer[length..filled].to_vec()));
        }
    }
}

/// Parses a response head: `None` while it is incomplete, the head's length and the body's
/// framing once it is complete and acceptable, an error otherwise.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, Body)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(length) = response
        .parse(bytes)
        .map_err(|error| format!("malformed response head: {error}"))?
    else {
        return Ok(None);
    };
    let status = response.code.unwrap_or_default();
    if status != 200 {
        let reason = response.reason.unwrap_or_default();
        return Err(format!("answered {status} {reason}, not 200"));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .map(|header| header.value.trim_ascii())
    };
    // The media type, before any parameters such as `; charset=utf-8`.
    let media_type = header("content-type")
        .and_then(|value| value.split(|&byte| byte == b';').next())
        .map(<[u8]>::trim_ascii);
    if !media_type.is_some_and(|media_type| media_type.eq_ignore_ascii_case(b"text/event-stream")) {
        let found = media_type.map(String::from_utf8_lossy).unwrap_or_default();
        return Err(format!(
            "answered Content-Type {found:?}, not text/event-stream"
        ));
    }
    let body = match (header("transfer-encoding"), header("content-length")) {
        (Some(coding), _) if coding.eq_ignore_ascii_case(b"chunked") => {
            Body::Chunked(Dechunker::new())
        }
        (Some(coding), _) => {
            let coding = String::from_utf8_lossy(coding);
            return Err(format!(
                "answered Transfer-Encoding {coding:?}; only chunked is read"
            ));
        }
        (None, Some(_)) => {
            return Err(
                "answered with a Content-Length: a body of fixed length is not an endless stream"
                    .into(),
            );
        }
        (None, None) => Body::UntilClose,
    };
    Ok(Some((length, body)))
}

/// Hex digits a chunk size may have: 15 never overflow a u64 (a chunk of up to 1 EiB).
const MAX_SIZE_DIGITS: u8 = 15;

/// Bytes of chunk extensions skipped on one size line before it counts as malformed.
const MAX_EXTENSIONS: usize = 1024;

/// Decodes a `Transfer-Encoding: chunked` body as it streams in (RFC 9112 section 7.1): each
/// chunk is its size in hex, optional `;name=value` extensions (ignored), CRLF, the data, CRLF;
/// a chunk of size 0 is the last. Bytes may arrive split anywhere, even inside a size line, so
/// the decoder keeps its place between calls and buffers nothing.
#[derive(Debug)]
pub(crate) struct Dechunker {
    state: ChunkState,
}

/// Where in the chunked framing the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// In the hex digits of a chunk size: `digits` of them so far, worth `size`.
    Size { size: u64, digits: u8 },
    /// After the size: extensions (or whitespace before them), `skipped` bytes so far, up to CR.
    Extensions { size: u64, skipped: usize },
    /// The size line's CR was read; its LF must follow.
    SizeLf { size: u64 },
    /// In a chunk's data, `remaining` bytes of it still to come.
    Data { remaining: u64 },
    /// The data ended; CR must follow.
    DataCr,
    /// The data's CR was read; LF must follow.
    DataLf,
    /// The last chunk was read: the body is complete. Trailer fields after it are never read,
    /// because the stream is over and the connection is closed.
    Done,
}

/// A body that breaks the chunked framing: the stream cannot be read any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError(&'static str);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

impl Dechunker {
    /// A decoder at the start of a body.
    pub(crate) fn new() -> Self {
        Self {
            state: ChunkState::Size { size: 0, digits: 0 },
        }
    }

    /// Decodes the next bytes of the body, passing each run of chunk data to `data` as it is
    /// found. Returns `true` once the last chunk has been read; any bytes after it are ignored.
    pub(crate) fn decode(
        &mut self,
        mut input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<bool, ChunkError> {
        while let Some(&byte) = input.first() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data { remaining } => {
                    let length = input
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let (chunk, rest) = input.split_at(length);
                    data(chunk);
                    input = rest;
                    self.state = match remaining - length as u64 {
                        0 => ChunkState::DataCr,
                        remaining => ChunkState::Data { remaining },
                    };
                }
                framing => {
                    self.state = next_state(framing, byte)?;
                    input = &input[1..];
                }
            }
        }
        Ok(self.state == ChunkState::Done)
    }
}

/// The state after one byte of framing (everything but chunk data).
fn next_state(state: ChunkState, byte: u8) -> Result<ChunkState, ChunkError> {
    use ChunkState::*;
    Ok(match (state, byte) {
        (Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
            if digits == MAX_SIZE_DIGITS {
                return Err(ChunkError("chunk size too large"));
            }
            let value = char::from(byte).to_digit(16).map_or(0, u64::from);
            Size {
                size: size * 16 + value,
                digits: digits + 1,
            }
        }
        (Size { digits: 0, .. }, _) => {
            return Err(ChunkError("chunk size line without a hex size"));
        }
        (Size { size, .. }, b'\r') => SizeLf { size },
        (Size { size, .. }, b';' | b' ' | b'\t') => Extensions { size, skipped: 1 },
        (Size { .. }, _) => return Err(ChunkError("invalid byte after the chunk size")),
        (Extensions { size, .. }, b'\r') => SizeLf { size },
        (Extensions { .. }, b'\n') => return Err(ChunkError("chunk size line not ended by CRLF")),
        (Extensions { skipped, .. }, _) if skipped >= MAX_EXTENSIONS => {
            return Err(ChunkError("chunk extensions too long"));
        }
        (Extensions { size, skipped }, _) => Extensions {
            size,
            skipped: skipped + 1,
        },
        (SizeLf { size: 0 }, b'\n') => Done,
        (SizeLf { size }, b'\n') => Data { remaining: size },
        (SizeLf { .. }, _) => return Err(ChunkError("chunk size line not ended by CRLF")),
        (DataCr, b'\r') => DataLf,
        (DataLf, b'\n') => Size { size: 0, digits: 0 },
        (DataCr | DataLf, _) => return Err(ChunkError("chunk data not followed by CRLF")),
        (Data { .. } | Done, _) => unreachable!("Dechunker::decode handles data and the end"),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    /// Two chunks with extensions, a third without, then the last chunk and a trailer field.
    const BODY: &[u8] =
        b"7;name=value\r\ndata: a\r\nA ; quoted=\"x;y\"\r\n\ndata: bc\n\r\n2\r\n\n\n\r\n0\r\nTrailer: t\r\n\r\n";
    const DECODED: &[u8] = b"data: a\ndata: bc\n\n\n";

    /// Decodes `pieces` one after the other: the data and, after each piece, whether it ended.
    fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, Vec<bool>), ChunkError> {
        let mut dechunker = Dechunker::new();
        let mut data = Vec::new();
        let mut ended = Vec::new();
        for piece in pieces {
            ended.push(dechunker.decode(piece, |bytes| data.extend_from_slice(bytes))?);
        }
        Ok((data, ended))
    }

    /// Splitting the body in two at any byte, size lines and CRLFs included, changes nothing.
    #[test]
    fn body_split_at_every_byte_position() {
        for at in 0..=BODY.len() {
            let (first, second) = BODY.split_at(at);
            let (data, ended) = decode_all(&[first, second]).expect("valid body");
            assert_eq!(data, DECODED, "split at {at}");
            assert!(ended[1], "split at {at}");
        }
    }

    /// Fed one byte at a time, the body decodes the same, and it ends exactly at the last chunk.
    #[test]
    fn body_fed_byte_by_byte() {
        let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
        let (data, ended) = decode_all(&bytes).expect("valid body");
        assert_eq!(data, DECODED);
        let last_chunk_end = BODY
            .windows(3)
            .position(|w| w == b"0\r\n")
            .expect("last chunk")
            + 3;
        let first_true = ended.iter().position(|&ended| ended).expect("ended");
        assert_eq!(first_true + 1, last_chunk_end);
    }

    /// Extensions after the size, with or without whitespace before them, are skipped.
    #[test]
    fn chunk_extensions_are_ignored() {
        let (data, ended) =
            decode_all(&[b"3;a\r\nabc\r\n2 ;b=c;d\r\nde\r\n1\t;x\r\nf\r\n0;end=1\r\n"])
                .expect("valid");
        assert_eq!(data, b"abcdef");
        assert_eq!(ended, [true]);
    }

    /// A size line arriving in pieces over several reads is read as one.
    #[test]
    fn size_line_split_across_reads() {
        let pieces: [&[u8]; 5] = [b"1", b"0", b"\r", b"\n0123456789abcdef\r", b"\n"];
        let (data, ended) = decode_all(&pieces).expect("valid");
        assert_eq!(data, b"0123456789abcdef");
        assert_eq!(ended, [false; 5]);
    }

    /// The last chunk ends the body; nothing after it is decoded, and later input is ignored.
    #[test]
    fn last_chunk_ends_the_body() {
        let (data, ended) =
            decode_all(&[b"2\r\nok\r\n0\r\n", b"\r\n5\r\nlater\r\n"]).expect("valid");
        assert_eq!(data, b"ok");
        assert_eq!(ended, [true, true]);
    }

    /// Malformed framing is an error, never a panic or a wrong decoding.
    #[test]
    fn malformed_sizes_and_framing_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"-1\r\n",
            b"0x10\r\n",
            b"1\n",
            b"1\rx",
            b"1;ext\n",
            b"1000000000000000\r\n",
            b"3\r\nabcX",
            b"3\r\nabc\rX",
        ] {
            assert!(
                decode_all(&[bad]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless_extension = [b"1;".as_slice(), &[b'x'; MAX_EXTENSIONS]].concat();
        assert!(decode_all(&[&endless_extension]).is_err());
        // The largest size allowed is accepted (and would take a long time to arrive).
        assert!(decode_all(&[b"fffffffffffffff\r\n"]).is_ok());
    }

    /// Serves one connection on 127.0.0.1: reads the request head, writes `pieces` one by one
    /// (each its own write, so the client sees them in separate reads), then closes. Returns
    /// the address and the request the server saw.
    async fn serve_once(pieces: Vec<Vec<u8>>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            tcp.set_nodelay(true).expect("nodelay");
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                if tcp.read(&mut byte).await.expect("read request") == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            for piece in pieces {
                // A client that refused the response may have closed already.
                if tcp.write_all(&piece).await.is_err() {
                    break;
                }
            }
            String::from_utf8_lossy(&request).into_owned()
        });
        (format!("http://{addr}/events?x=1"), server)
    }

    /// Opens a client on `url` and reads its stream to the end, within five seconds.
    async fn read_stream(
        url: &str,
    ) -> realtime_kit::Result<(Vec<MessageEvent>, realtime_kit::Result<()>)> {
        read_stream_asking(url, true).await
    }

    /// [`read_stream`], with or without `Accept: text/event-stream`.
    async fn read_stream_asking(
        url: &str,
        accept: bool,
    ) -> realtime_kit::Result<(Vec<MessageEvent>, realtime_kit::Result<()>)> {
        let read = async {
            let addr = url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            let client = SseClient::open(TcpStream::connect(addr).await?, url, accept).await?;
            let mut events = Vec::new();
            let end = client.run(|event, _| events.push(event)).await;
            Ok((events, end))
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .map_err(|_| "the stream did not end in time")?
    }

    fn data(events: &[MessageEvent]) -> Vec<&str> {
        events.iter().map(|event| event.data.as_str()).collect()
    }

    /// The request asks for an event stream, as a browser does, on the URL's path and query;
    /// the plain request (`--plain`) is the same without `Accept`, as curl sends it.
    #[tokio::test]
    async fn request_asks_for_an_event_stream() {
        for (accept, header) in [(true, "Accept: text/event-stream\r\n"), (false, "")] {
            let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n".to_vec();
            let (url, server) = serve_once(vec![head]).await;
            read_stream_asking(&url, accept)
                .await
                .expect("opened")
                .1
                .expect("clean end");
            let request = server.await.expect("server");
            let authority = url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            assert_eq!(
                request,
                format!(
                    "GET /events?x=1 HTTP/1.1\r\nHost: {authority}\r\n{header}\
                     Cache-Control: no-cache\r\n\r\n"
                )
            );
        }
    }

    /// Without Transfer-Encoding or Content-Length the body runs until the server closes, which
    /// ends the stream cleanly; events split across writes arrive whole.
    #[tokio::test]
    async fn close_delimited_body_ends_at_close() {
        let (url, _server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\nid: 1\ndata: one\n".to_vec(),
            b"\ndata: t".to_vec(),
            b"wo\n\n".to_vec(),
        ])
        .await;
        let (events, end) = read_stream(&url).await.expect("opened");
        end.expect("a close ends a close-delimited stream cleanly");
        assert_eq!(data(&events), ["one", "two"]);
        assert_eq!(events[1].last_event_id, "1");
    }

    /// A chunked body that arrived partly with the head, partly in pieces split inside size
    /// lines and events, is decoded in order and ends at its last chunk.
    #[tokio::test]
    async fn chunked_body_in_pieces() {
        let (url, _server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n\
              b\r\ndata: one\n\n\r\n1"
                .to_vec(),
            b"7\r\nevent: tick\ndata:".to_vec(),
            b" two\n\n\r\n0\r\n\r\n".to_vec(),
        ])
        .await;
        let (events, end) = read_stream(&url).await.expect("opened");
        end.expect("the last chunk ends the stream cleanly");
        assert_eq!(data(&events), ["one", "two"]);
        assert_eq!(events[1].event, "tick");
    }

    /// A chunked stream cut before its last chunk ends with an error, after the events it had.
    #[tokio::test]
    async fn chunked_body_cut_short_is_an_error() {
        let (url, _server) = serve_once(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n\
              b\r\ndata: one\n\n\r\n"
                .to_vec(),
        ])
        .await;
        let (events, end) = read_stream(&url).await.expect("opened");
        assert_eq!(data(&events), ["one"]);
        let error = end.expect_err("cut short").to_string();
        assert!(error.contains("before its last chunk"), "{error}");
    }

    /// Anything but a 200 event stream with a framing an endless body can have is refused
    /// when opening, with the reason.
    #[tokio::test]
    async fn responses_that_are_not_event_streams_are_refused() {
        let oversized = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-padding: {}\r\n\r\n",
            "x".repeat(MAX_HEAD)
        );
        for (head, expected) in [
            (
                "HTTP/1.1 404 Not Found\r\ncontent-type: text/event-stream\r\n\r\n",
                "answered 404 Not Found",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n\r\n",
                "\"text/html\", not text/event-stream",
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", "\"\", not text/event-stream"),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 5\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                "only chunked",
            ),
            ("HTTP/1.1 2x0 OK\r\n\r\n", "malformed response head"),
            (
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n",
                "closed before the response head",
            ),
            (oversized.as_str(), "response head longer than"),
        ] {
            let (url, _server) = serve_once(vec![head.as_bytes().to_vec()]).await;
            let error = read_stream(&url)
                .await
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
            assert!(error.contains(expected), "{head:.60}: {error}");
        }
    }
}
