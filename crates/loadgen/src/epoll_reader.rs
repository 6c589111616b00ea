//! The epoll reader: every measuring client of a fan-out read by one OS thread with one epoll
//! loop, the same kind of reader as the floor's (`floor-reader` in src/floor.rs). It is the
//! default of `ws-fanout`, `chat-fanout` and `clock-spread` (`--reader epoll`):
//!
//! ```text
//! cargo run --release -p loadgen -- ws-fanout --url ws://127.0.0.1:3001/ws --clients 1000
//! ```
//!
//! Why: a fan-out figure is divided by the floor's, and both readers share the machine's two
//! cores with the writer. Profiled at 10,000 clients, the floor's reader costs about 2.6 µs of
//! CPU per delivery, and loadgen's tokio reader (a task per connection, `recvmsg` with kernel
//! stamps, a lock per arrival) 7.4 µs: the ratio "demo / floor" then measured the readers as
//! much as the servers. Reading the demos the way the floor is read leaves the server as the
//! difference.
//!
//! Connections are still opened by tokio ([`crate::clients::open_all`]), the SSE request by
//! [`SseClient::open`] and the WebSocket handshake by [`websocket_handshake`]; each socket is
//! then handed over ([`EpollReader::hand_over`]) with the bytes already read past the head.
//! From there, per read: one plain `read` into one 64 KiB buffer, one `Instant::now()`, and a
//! byte scan that carries its place across reads: WebSocket frames ([`WsFrames`]) or the SSE
//! body's blank lines and `id:` fields ([`SseScan`]), and the run's round marker in either
//! ([`MarkerMatch`]). Nothing is locked per arrival: counts are atomics, and the arrival times
//! stay in the thread until [`EpollReader::finish`] hands them back.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::measure::Latencies;
use crate::scenarios::Arrivals;
use crate::sse_client::{Body, Dechunker, MAX_HEADERS, SseClient, read_head, target_and_authority};

/// The one read buffer, as large as the floor reader's: a burst (a chat backlog) takes a read.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Ready sockets taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// The longest the thread sleeps in `epoll_wait` before it looks at the stop flag again, in
/// case a wake-up was lost.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The epoll token of the eventfd that announces handed-over sockets and the stop.
const WAKE_TOKEN: u64 = u64::MAX;

/// Pongs queued on a socket that does not take them: past this the server is not reading its
/// own socket, and the connection is given up (it would be closed as silent anyway).
const MAX_OUTGOING: usize = 16 * 1024;

/// The WebSocket handshake (RFC 6455 section 4.1) written by hand on a tokio socket, so the
/// bytes after the `101` head (a first message) are kept for the epoll reader rather than
/// buffered in a tungstenite stream that cannot give them back.
pub(crate) async fn websocket_handshake(
    mut tcp: tokio::net::TcpStream,
    url: &str,
) -> realtime_kit::Result<Handover> {
    let (target, authority) = target_and_authority(url)?;
    let key = generate_key();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let expected = derive_accept_key(key.as_bytes());
    let ((), pending) = read_head(&mut tcp, url, |bytes| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(length) = response
            .parse(bytes)
            .map_err(|error| format!("malformed response head: {error}"))?
        else {
            return Ok(None);
        };
        let status = response.code.unwrap_or_default();
        if status != 101 {
            let reason = response.reason.unwrap_or_default();
            return Err(format!("answered {status} {reason}, not 101"));
        }
        let accept = response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|header| header.value.trim_ascii());
        if accept != Some(expected.as_bytes()) {
            return Err("wrong or missing Sec-WebSocket-Accept".to_owned());
        }
        Ok(Some((length, ())))
    })
    .await?;
    Ok(Handover {
        stream: tcp.into_std()?,
        pending,
        protocol: Protocol::WebSocket(WsFrames::default()),
    })
}

/// One connection on its way to the reader thread: its socket (non-blocking, as tokio left
/// it), the bytes already read past its head, and what it speaks.
pub(crate) struct Handover {
    stream: TcpStream,
    pending: Vec<u8>,
    protocol: Protocol,
}

impl Handover {
    /// An open event stream, taken from the tokio client that sent its request.
    pub(crate) fn sse(client: SseClient) -> io::Result<Self> {
        let (tcp, pending, body) = client.into_parts();
        Ok(Self {
            stream: tcp.into_std()?,
            pending,
            protocol: Protocol::Sse {
                body,
                scan: SseScan::default(),
            },
        })
    }

    /// A socket that carries an event stream's chunked body from its first byte, with no
    /// request and no head: the SSE-framed floor's (src/floor.rs), read as a chat stream is.
    pub(crate) fn chunked_sse(stream: TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            pending: Vec::new(),
            protocol: Protocol::Sse {
                body: Body::Chunked(Dechunker::new()),
                scan: SseScan::default(),
            },
        })
    }
}

/// What a connection speaks, with its parser's place in the stream.
enum Protocol {
    WebSocket(WsFrames),
    /// The body is de-chunked without copying (the [`crate::sse_client::Dechunker`] hands out
    /// slices of the read buffer): the framing also says when a chunked stream has ended, and an
    /// event's blank line split by a chunk boundary is still one blank line.
    Sse {
        body: Body,
        scan: SseScan,
    },
}

/// What the reader looks for, besides counting messages.
pub(crate) enum Watch {
    /// `ws-fanout`, `chat-fanout`: the rounds' marker, and when each round was sent.
    Rounds(Arc<RoundBoard>),
    /// `clock-spread`: each SSE event's `id`, recorded in this map under a lock taken once per
    /// `epoll_wait`, which the scenario reads while the ticks come in.
    Ticks(Arc<Mutex<HashMap<u64, Arrivals>>>),
}

/// The rounds of a fan-out as the reader thread needs them, readable without a lock: when each
/// round was sent, and how many clients have it so far (what `Rounds::wait` polls).
pub(crate) struct RoundBoard {
    marker: Marker,
    sent: Vec<OnceLock<Instant>>,
    reached: Vec<AtomicUsize>,
}

impl RoundBoard {
    /// `rounds` rounds, sent as `{prefix}{n}-end`.
    pub(crate) fn new(prefix: &str, rounds: usize) -> Self {
        Self {
            marker: Marker::new(prefix),
            sent: (0..rounds).map(|_| OnceLock::new()).collect(),
            reached: (0..rounds).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Round `round` was sent at `at`.
    pub(crate) fn mark_sent(&self, round: usize, at: Instant) {
        if let Some(sent) = self.sent.get(round) {
            let _ = sent.set(at);
        }
    }

    /// Clients that have `round` so far.
    pub(crate) fn reached(&self, round: usize) -> usize {
        self.reached
            .get(round)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }
}

/// What the reader thread measured of the rounds, handed back when it stops.
pub(crate) struct Measured {
    /// Each round's first and last arrival and how many clients had it (no kernel stamps).
    pub(crate) rounds: Vec<Option<Arrivals>>,
    /// Latency from send to each client's arrival, all rounds together.
    pub(crate) every: Latencies,
}

/// What the scenario and the reader thread share.
struct Shared {
    /// Messages (WebSocket) or events (SSE) read so far, added once per `epoll_wait`.
    events: AtomicU64,
    /// Pings answered so far, added with `events`.
    pings: AtomicU64,
    /// Connections that ended (closed, broken, malformed) while the reader held them.
    ended: AtomicUsize,
    /// Sockets handed over and not yet taken by the thread.
    incoming: Mutex<Vec<Handover>>,
    /// Written when `incoming` gets its first socket, and on stop: wakes the thread.
    wake: EventFd,
    stop: AtomicBool,
}

/// The reader thread and what it shares. Dropping it stops the thread, which closes every
/// socket it holds.
pub(crate) struct EpollReader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<io::Result<Measured>>>,
}

impl EpollReader {
    /// Starts the thread, with no sockets yet.
    pub(crate) fn start(watch: Watch) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            events: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            ended: AtomicUsize::new(0),
            incoming: Mutex::new(Vec::new()),
            wake: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
            stop: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("epoll-reader".into())
            .spawn(move || read_all(&thread_shared, watch))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Gives the thread one more connection; it reads it from its next wake-up on.
    pub(crate) fn hand_over(&self, handover: Handover) -> io::Result<()> {
        let was_empty = {
            let mut incoming = self.shared.incoming.lock().expect("no panics while locked");
            incoming.push(handover);
            incoming.len() == 1
        };
        // The thread drains the whole queue on a wake-up: one write per batch of handovers.
        if was_empty {
            self.shared.wake.write(1)?;
        }
        Ok(())
    }

    /// Messages or events read so far.
    pub(crate) fn events(&self) -> u64 {
        self.shared.events.load(Ordering::Relaxed)
    }

    /// The server's Pings answered so far.
    pub(crate) fn pings(&self) -> u64 {
        self.shared.pings.load(Ordering::Relaxed)
    }

    /// Connections that ended while held.
    pub(crate) fn ended(&self) -> usize {
        self.shared.ended.load(Ordering::Relaxed)
    }

    /// Stops the thread, which closes every socket, and returns what it measured.
    pub(crate) fn finish(mut self) -> io::Result<Measured> {
        self.stop()
            .unwrap_or_else(|| Err(io::Error::other("the reader was already stopped")))
    }

    fn stop(&mut self) -> Option<io::Result<Measured>> {
        let thread = self.thread.take()?;
        self.shared.stop.store(true, Ordering::Relaxed);
        // If the write fails, the thread still sees the flag within STOP_CHECK.
        let _ = self.shared.wake.write(1);
        Some(
            thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the epoll reader panicked"))),
        )
    }
}

impl Drop for EpollReader {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One connection the thread reads.
struct Connection {
    stream: TcpStream,
    protocol: Protocol,
    /// The highest round this client has had: rounds arrive in order, so a round at or below
    /// it (a repeat, an older copy) is not counted again.
    highest: Option<u64>,
    /// Pongs not yet written: the socket's send buffer was full.
    outgoing: Vec<u8>,
    /// Whether the socket is watched for writability too (while `outgoing` has bytes).
    watching_out: bool,
}

impl Connection {
    fn new(stream: TcpStream, protocol: Protocol) -> Self {
        Self {
            stream,
            protocol,
            highest: None,
            outgoing: Vec::new(),
            watching_out: false,
        }
    }
}

/// The reader's own bookkeeping, touched per arrival without any lock.
struct Books<'a> {
    board: Option<&'a RoundBoard>,
    rounds: Vec<Option<Arrivals>>,
    every: Latencies,
    /// Events read in this `epoll_wait` batch, published at its end.
    events: u64,
    /// Pings answered in this batch, published with `events`.
    pings: u64,
    /// The source of Pong masking keys. RFC 6455 wants them unpredictable so that a client's
    /// bytes cannot be chosen by a page to fool a proxy; loadgen talks to loopback only, and a
    /// cheap generator keeps a Pong cheap.
    mask: u32,
}

impl<'a> Books<'a> {
    /// Empty books for the rounds of `board`, if any, with Pong masks from `mask`.
    fn new(board: Option<&'a RoundBoard>, mask: u32) -> Self {
        Self {
            board,
            rounds: vec![None; board.map_or(0, |board| board.sent.len())],
            every: Latencies::new(),
            events: 0,
            pings: 0,
            mask,
        }
    }

    /// One client has `round`, read at `now`.
    fn round(&mut self, round: u64, now: Instant) {
        let Some(board) = self.board else { return };
        let Ok(index) = usize::try_from(round) else {
            return;
        };
        let Some(sent) = board.sent.get(index).and_then(OnceLock::get) else {
            return;
        };
        self.every.record(now.saturating_duration_since(*sent));
        let Some(slot) = self.rounds.get_mut(index) else {
            return;
        };
        Arrivals::record(slot, now, None);
        let count = slot.map_or(0, |arrivals| arrivals.count);
        board.reached[index].store(count, Ordering::Relaxed);
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_ne_bytes()
    }
}

/// The thread: reads every handed-over socket until the stop flag is set.
fn read_all(shared: &Shared, watch: Watch) -> io::Result<Measured> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(
        &shared.wake,
        EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
    )?;
    let (board, ticks) = match &watch {
        Watch::Rounds(board) => (Some(board.as_ref()), None),
        Watch::Ticks(ticks) => (None, Some(ticks.as_ref())),
    };
    let mut books = Books::new(board, 0x9e37_79b9 ^ std::process::id());
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut buffer = vec![0u8; READ_BUFFER_SIZE];
    let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAIT];
    let timeout = EpollTimeout::try_from(STOP_CHECK).unwrap_or(EpollTimeout::MAX);
    while !shared.stop.load(Ordering::Relaxed) {
        let ready = match epoll.wait(&mut events, timeout) {
            Ok(ready) => ready,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        };
        // One lock per batch, and only for the clock's ticks.
        let mut tick_map = ticks.map(|ticks| ticks.lock().expect("no panics while locked"));
        for event in &events[..ready] {
            if event.data() == WAKE_TOKEN {
                let _ = shared.wake.read();
                let handed: Vec<Handover> =
                    std::mem::take(&mut *shared.incoming.lock().expect("no panics while locked"));
                for handover in handed {
                    let token = connections.len() as u64;
                    let mut connection = Connection::new(handover.stream, handover.protocol);
                    let open = epoll
                        .add(
                            &connection.stream,
                            EpollEvent::new(EpollFlags::EPOLLIN, token),
                        )
                        .is_ok()
                        && on_bytes(
                            &mut connection,
                            &handover.pending,
                            Instant::now(),
                            &mut books,
                            tick_map.as_deref_mut(),
                        )
                        && flush(&mut connection, &epoll, token);
                    if open {
                        connections.push(Some(connection));
                    } else {
                        let _ = epoll.delete(&connection.stream);
                        connections.push(None);
                        shared.ended.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            let token = event.data();
            let Some(slot) = usize::try_from(token)
                .ok()
                .and_then(|index| connections.get_mut(index))
            else {
                continue;
            };
            let Some(connection) = slot else { continue };
            let mut open = true;
            if event.events().contains(EpollFlags::EPOLLOUT) {
                open = flush(connection, &epoll, token);
            }
            let readable = EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR;
            if open && event.events().intersects(readable) {
                open = match (&connection.stream).read(&mut buffer) {
                    Ok(0) => false,
                    Ok(read) => {
                        let now = Instant::now();
                        on_bytes(
                            connection,
                            &buffer[..read],
                            now,
                            &mut books,
                            tick_map.as_deref_mut(),
                        ) && flush(connection, &epoll, token)
                    }
                    Err(error) => matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ),
                };
            }
            if !open {
                let _ = epoll.delete(&connection.stream);
                *slot = None;
                shared.ended.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(tick_map);
        shared
            .events
            .fetch_add(std::mem::take(&mut books.events), Ordering::Relaxed);
        shared
            .pings
            .fetch_add(std::mem::take(&mut books.pings), Ordering::Relaxed);
    }
    // Closes every socket before the scenario reports.
    drop(connections);
    Ok(Measured {
        rounds: books.rounds,
        every: books.every,
    })
}

/// Parses one read of `connection`, read at `now`. `false` when the connection has ended: a
/// Close, the end of a chunked body, or bytes that break the protocol.
fn on_bytes(
    connection: &mut Connection,
    bytes: &[u8],
    now: Instant,
    books: &mut Books<'_>,
    mut ticks: Option<&mut HashMap<u64, Arrivals>>,
) -> bool {
    let marker = books.board.map(|board| &board.marker);
    let Connection {
        protocol,
        highest,
        outgoing,
        ..
    } = connection;
    let mut closed = false;
    let mut handle = |found: Found<'_>| match found {
        Found::Message { id } => {
            books.events += 1;
            if let (Some(id), Some(ticks)) = (id, ticks.as_deref_mut()) {
                ticks
                    .entry(id)
                    .and_modify(|tick| tick.add(now, None))
                    .or_insert_with(|| Arrivals::new(now, None));
            }
        }
        Found::Round(round) => {
            if highest.is_none_or(|highest| round > highest) {
                *highest = Some(round);
                books.round(round, now);
            }
        }
        Found::Ping(payload) => {
            books.pings += 1;
            let mask = books.next_mask();
            pong_frame(payload, mask, outgoing);
        }
        Found::Close => closed = true,
    };
    let parsed = match protocol {
        Protocol::WebSocket(frames) => frames.feed(marker, bytes, &mut handle).is_ok(),
        Protocol::Sse { body, scan } => match body {
            Body::Chunked(dechunker) => {
                let decoded = dechunker.decode(bytes, |data| scan.feed(marker, data, &mut handle));
                // Ok(true): the last chunk, the stream is over.
                matches!(decoded, Ok(false))
            }
            Body::UntilClose => {
                scan.feed(marker, bytes, &mut handle);
                true
            }
        },
    };
    parsed && !closed && outgoing.len() <= MAX_OUTGOING
}

/// Writes what `connection` has queued, as far as the socket takes it, and watches the socket
/// for writability only while something is left: a full socket is retried when the kernel says
/// it has room, never in a loop. `false` when the write failed.
fn flush(connection: &mut Connection, epoll: &Epoll, token: u64) -> bool {
    while !connection.outgoing.is_empty() {
        match (&connection.stream).write(&connection.outgoing) {
            Ok(0) => return false,
            Ok(written) => {
                connection.outgoing.drain(..written);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let want_out = !connection.outgoing.is_empty();
    if want_out != connection.watching_out {
        let mut flags = EpollFlags::EPOLLIN;
        if want_out {
            flags |= EpollFlags::EPOLLOUT;
        }
        let mut event = EpollEvent::new(flags, token);
        if epoll.modify(&connection.stream, &mut event).is_err() {
            return false;
        }
        connection.watching_out = want_out;
    }
    true
}

/// Appends a client's Pong (RFC 6455 section 5.5.3) answering a Ping of `payload`: a client's
/// frames are masked (section 5.3).
fn pong_frame(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    // The parser refuses control frames over 125 bytes, so the length fits in 7 bits.
    out.push(0x8a);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(
        payload
            .iter()
            .zip(mask.iter().cycle())
            .map(|(byte, key)| byte ^ key),
    );
}

/// What a parser found in the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
enum Found<'a> {
    /// A whole WebSocket text or binary message, or an SSE event (with its `id`, if it had one
    /// of decimal digits).
    Message { id: Option<u64> },
    /// This run's marker of round `n`.
    Round(u64),
    /// A whole Ping, with its payload.
    Ping(&'a [u8]),
    /// A Close frame.
    Close,
}

/// The run's round marker: round `n` is sent as `{prefix}{n}-end`.
struct Marker {
    prefix: Box<[u8]>,
}

impl Marker {
    /// The prefix must not repeat its first byte, and that byte must not be a digit or part of
    /// `-end` (the run's marker starts with `lg`): then a prefix that fails to match, or a round
    /// number that fails to end in `-end`, never hides the start of the next occurrence, and the
    /// matcher needs no back-tracking (no table, no buffered tail).
    fn new(prefix: &str) -> Self {
        let prefix = prefix.as_bytes();
        let first = prefix.first().copied().unwrap_or(b'l');
        assert!(
            !prefix.is_empty()
                && !prefix[1..].contains(&first)
                && !first.is_ascii_digit()
                && !b"-end".contains(&first),
            "a round prefix that can overlap itself: {prefix:?}"
        );
        Self {
            prefix: prefix.into(),
        }
    }
}

/// Where a byte stream is in matching `{prefix}{digits}-end`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum MarkerMatch {
    /// Nothing matched.
    #[default]
    Start,
    /// This many bytes of the prefix matched.
    Prefix(usize),
    /// The prefix, then `digits` digits worth `value`.
    Digits { value: u64, digits: u8 },
    /// The prefix, digits, and `matched` bytes of `-end`.
    Suffix { value: u64, matched: u8 },
}

/// At most this many digits in a round number: no overflow.
const MAX_ROUND_DIGITS: u8 = 18;

impl MarkerMatch {
    /// Takes one byte; the round number when it completes a marker.
    fn step(&mut self, marker: &Marker, byte: u8) -> Option<u64> {
        const SUFFIX: &[u8] = b"-end";
        let prefix = &marker.prefix;
        *self = match *self {
            Self::Start | Self::Prefix(_) => {
                let matched = match *self {
                    Self::Prefix(matched) if prefix[matched] == byte => matched + 1,
                    _ if prefix[0] == byte => 1,
                    _ => 0,
                };
                match matched {
                    0 => Self::Start,
                    matched if matched == prefix.len() => Self::Digits {
                        value: 0,
                        digits: 0,
                    },
                    matched => Self::Prefix(matched),
                }
            }
            Self::Digits { value, digits }
                if byte.is_ascii_digit() && digits < MAX_ROUND_DIGITS =>
            {
                Self::Digits {
                    value: value * 10 + u64::from(byte - b'0'),
                    digits: digits + 1,
                }
            }
            Self::Digits { value, digits } if digits > 0 && byte == SUFFIX[0] => {
                Self::Suffix { value, matched: 1 }
            }
            Self::Suffix { value, matched } if SUFFIX[usize::from(matched)] == byte => {
                if usize::from(matched) + 1 == SUFFIX.len() {
                    *self = Self::Start;
                    return Some(value);
                }
                Self::Suffix {
                    value,
                    matched: matched + 1,
                }
            }
            // No marker here; this byte may still start one (see Marker::new).
            Self::Digits { .. } | Self::Suffix { .. } => {
                *self = Self::Start;
                return self.step(marker, byte);
            }
        };
        None
    }

    /// Feeds `bytes`, passing each round found to `found`.
    fn feed(&mut self, marker: &Marker, bytes: &[u8], found: &mut impl FnMut(Found<'_>)) {
        for &byte in bytes {
            if let Some(round) = self.step(marker, byte) {
                found(Found::Round(round));
            }
        }
    }
}

/// Where an SSE line is in an `id:` field (WHATWG HTML, "Server-sent events", 9.2.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum IdField {
    /// At the start of a line.
    #[default]
    LineStart,
    I,
    D,
    /// After `id:`; one space may follow.
    Colon,
    Space,
    Digits(u64),
    /// A line that is not an `id:` of digits: skipped to its end.
    Other,
}

/// The SSE scan of one stream: events (blank lines), their ids, and round markers.
#[derive(Debug, Default)]
struct SseScan {
    /// The byte before: a `\n` after a `\n` is the blank line that ends an event.
    previous: u8,
    id_field: IdField,
    /// The id of the event being received, if it had a decimal one.
    event_id: Option<u64>,
    marker: MarkerMatch,
}

impl SseScan {
    /// Feeds body bytes (de-chunked), passing events and rounds to `found`.
    fn feed(&mut self, marker: Option<&Marker>, bytes: &[u8], found: &mut impl FnMut(Found<'_>)) {
        for &byte in bytes {
            if let Some(round) = marker.and_then(|marker| self.marker.step(marker, byte)) {
                found(Found::Round(round));
            }
            self.id_field = match (self.id_field, byte) {
                (IdField::Digits(value), b'\n') => {
                    self.event_id = Some(value);
                    IdField::LineStart
                }
                (_, b'\n') => IdField::LineStart,
                (IdField::LineStart, b'i') => IdField::I,
                (IdField::I, b'd') => IdField::D,
                (IdField::D, b':') => IdField::Colon,
                (IdField::Colon, b' ') => IdField::Space,
                (IdField::Colon | IdField::Space, digit) if digit.is_ascii_digit() => {
                    IdField::Digits(u64::from(digit - b'0'))
                }
                (IdField::Digits(value), digit) if digit.is_ascii_digit() => value
                    .checked_mul(10)
                    .and_then(|value| value.checked_add(u64::from(digit - b'0')))
                    .map_or(IdField::Other, IdField::Digits),
                _ => IdField::Other,
            };
            if byte == b'\n' && self.previous == b'\n' {
                found(Found::Message {
                    id: self.event_id.take(),
                });
            }
            self.previous = byte;
        }
    }
}

/// A protocol error in the server's frames: the connection cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameError(&'static str);

/// The parse of a server's WebSocket frames (RFC 6455 section 5.2) as they stream in: headers
/// and payloads may be split across reads at any byte, so the parser keeps its place and only
/// a control frame's payload (at most 125 bytes) is gathered.
#[derive(Debug, Default)]
struct WsFrames {
    /// The frame header read so far: 2 bytes, then 2 or 8 of extended length.
    head: [u8; 10],
    have: usize,
    /// Payload bytes of the current frame still to come; `None` while in a header.
    remaining: Option<u64>,
    opcode: u8,
    fin: bool,
    /// Inside a fragmented text or binary message (continuation frames follow).
    in_message: bool,
    /// The message being received is text: its payload is scanned for the marker.
    text: bool,
    /// The payload of the control frame being received.
    control: Vec<u8>,
    marker: MarkerMatch,
    /// A Close was read: nothing after it is parsed.
    closed: bool,
}

impl WsFrames {
    /// Feeds bytes from the server, passing messages, rounds, Pings and a Close to `found`.
    fn feed(
        &mut self,
        marker: Option<&Marker>,
        mut input: &[u8],
        found: &mut impl FnMut(Found<'_>),
    ) -> Result<(), FrameError> {
        while !input.is_empty() && !self.closed {
            let Some(remaining) = self.remaining else {
                input = self.read_head(input)?;
                if self.remaining == Some(0) {
                    self.end_frame(found);
                }
                continue;
            };
            let take = input
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX));
            let (payload, rest) = input.split_at(take);
            input = rest;
            if self.opcode >= 0x8 {
                self.control.extend_from_slice(payload);
            } else if let (true, Some(marker)) = (self.text, marker) {
                self.marker.feed(marker, payload, found);
            }
            let remaining = remaining - take as u64;
            self.remaining = Some(remaining);
            if remaining == 0 {
                self.end_frame(found);
            }
        }
        Ok(())
    }

    /// Takes header bytes from `input`; once the header is whole, starts its frame. Returns the
    /// bytes after those taken.
    fn read_head<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], FrameError> {
        let needed = |head: &[u8; 10], have: usize| match (have, head[1] & 0x7f) {
            (0 | 1, _) => 2,
            (_, 126) => 4,
            (_, 127) => 10,
            _ => 2,
        };
        while self.have < needed(&self.head, self.have) {
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(input);
            };
            self.head[self.have] = byte;
            self.have += 1;
            input = rest;
        }
        let [first, second, ..] = self.head;
        if second & 0x80 != 0 {
            return Err(FrameError("a server's frame is masked"));
        }
        if first & 0x70 != 0 {
            return Err(FrameError("reserved bits set without an extension"));
        }
        let length = match second & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or_default()),
            length => u64::from(length),
        };
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
        match opcode {
            0x0 if !self.in_message => return Err(FrameError("continuation outside a message")),
            0x1 | 0x2 if self.in_message => {
                return Err(FrameError("a new message inside a fragmented one"));
            }
            0x1 | 0x2 => {
                self.text = opcode == 0x1;
                self.marker = MarkerMatch::default();
            }
            0x0 => {}
            0x8..=0xa if !fin || length > 125 => {
                return Err(FrameError("a control frame fragmented or over 125 bytes"));
            }
            0x8..=0xa => self.control.clear(),
            _ => return Err(FrameError("reserved opcode")),
        }
        self.fin = fin;
        self.opcode = opcode;
        self.have = 0;
        self.remaining = Some(length);
        Ok(input)
    }

    /// The current frame's payload is complete.
    fn end_frame(&mut self, found: &mut impl FnMut(Found<'_>)) {
        self.remaining = None;
        match self.opcode {
            0x0..=0x2 => {
                self.in_message = !self.fin;
                if self.fin {
                    found(Found::Message { id: None });
                }
            }
            0x8 => {
                self.closed = true;
                found(Found::Close);
            }
            0x9 => found(Found::Ping(&self.control)),
            _ => {} // A Pong: nothing to do.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "lg42x1234-";

    /// What a parser reports, owned, to compare runs over differently split input.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Message(Option<u64>),
        Round(u64),
        Ping(Vec<u8>),
        Close,
    }

    fn own(found: Found<'_>) -> Seen {
        match found {
            Found::Message { id } => Seen::Message(id),
            Found::Round(round) => Seen::Round(round),
            Found::Ping(payload) => Seen::Ping(payload.to_vec()),
            Found::Close => Seen::Close,
        }
    }

    /// A server frame: FIN and opcode, then the payload with the shortest length encoding,
    /// or the one asked for (`wide`: 126 forces 16 bits, 127 forces 64).
    fn frame(fin: bool, opcode: u8, payload: &[u8], wide: Option<u8>) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        match wide {
            Some(127) => {
                out.push(127);
                out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
            }
            Some(126) => {
                out.push(126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
            _ if payload.len() < 126 => out.push(payload.len() as u8),
            _ => {
                out.push(126);
                out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Every kind of server frame: text rounds, binary, a fragmented text round with a Ping
    /// between its fragments, empty and 16/64-bit lengths, a Pong, a repeated round, a text
    /// without a marker, a marker of another run, then a Close.
    fn ws_stream() -> Vec<u8> {
        let long = format!("{PREFIX}2-end{}", "x".repeat(300));
        [
            frame(true, 0x1, format!("{PREFIX}0-end").as_bytes(), None),
            frame(true, 0x2, b"\x00\x01binary", None),
            frame(
                false,
                0x1,
                format!("say {PRE}", PRE = &PREFIX[..5]).as_bytes(),
                None,
            ),
            frame(true, 0x9, b"ping!", None),
            frame(false, 0x0, format!("{}1-e", &PREFIX[5..]).as_bytes(), None),
            frame(true, 0x0, b"nd, done", None),
            frame(true, 0x1, b"", None),
            frame(true, 0x1, long.as_bytes(), None),
            frame(true, 0x1, format!("{PREFIX}3-end").as_bytes(), Some(127)),
            frame(true, 0xa, b"pong", None),
            frame(true, 0x1, format!("{PREFIX}3-end").as_bytes(), Some(126)),
            frame(true, 0x1, b"no marker here lg42x", None),
            frame(true, 0x1, b"lg1x2-9-end", None),
            frame(
                true,
                0x1,
                format!("{PREFIX}-end {PREFIX}x-end").as_bytes(),
                None,
            ),
            frame(true, 0x8, b"\x03\xe8", None),
            frame(true, 0x1, format!("{PREFIX}8-end").as_bytes(), None),
        ]
        .concat()
    }

    fn ws_expected() -> Vec<Seen> {
        use Seen::*;
        vec![
            Round(0),
            Message(None),
            Message(None),
            Ping(b"ping!".to_vec()),
            Round(1),
            Message(None),
            Message(None),
            Round(2),
            Message(None),
            Round(3),
            Message(None),
            Round(3),
            Message(None),
            Message(None),
            Message(None),
            Message(None),
            Close,
        ]
    }

    fn feed_ws(pieces: &[&[u8]]) -> Vec<Seen> {
        let marker = Marker::new(PREFIX);
        let mut frames = WsFrames::default();
        let mut seen = Vec::new();
        for piece in pieces {
            frames
                .feed(Some(&marker), piece, &mut |found| seen.push(own(found)))
                .expect("valid frames");
        }
        seen
    }

    /// The WebSocket parser finds the same messages, rounds, Ping and Close however the stream
    /// is split in two, headers, extended lengths and markers included, and stops at the Close.
    #[test]
    fn ws_frames_split_at_every_offset() {
        let stream = ws_stream();
        for at in 0..=stream.len() {
            let (first, second) = stream.split_at(at);
            assert_eq!(feed_ws(&[first, second]), ws_expected(), "split at {at}");
        }
    }

    /// Fed one byte at a time, the WebSocket parser finds the same.
    #[test]
    fn ws_frames_byte_by_byte() {
        let stream = ws_stream();
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_ws(&bytes), ws_expected());
    }

    /// Frames a client must refuse from a server are errors, never a wrong parse.
    #[test]
    fn ws_frames_protocol_errors() {
        for bad in [
            vec![0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9], // masked
            vec![0x80, 0x00],                            // continuation outside a message
            vec![0x01, 0x01, b'a', 0x81, 0x00],          // text inside a fragmented message
            vec![0x09, 0x00],                            // fragmented ping
            frame(true, 0x9, &[0; 126], None),           // control frame too long
            vec![0x83, 0x00],                            // reserved opcode
            vec![0xc1, 0x00],                            // RSV1 without an extension
        ] {
            let mut frames = WsFrames::default();
            assert!(frames.feed(None, &bad, &mut |_| {}).is_err(), "{bad:x?}");
        }
    }

    /// A Ping split across reads at any byte is answered by exactly one masked Pong carrying
    /// its payload.
    #[test]
    fn ping_split_across_reads_gets_one_pong() {
        let ping = frame(true, 0x9, b"are you there?", None);
        for at in 0..=ping.len() {
            let mut frames = WsFrames::default();
            let mut outgoing = Vec::new();
            for piece in [&ping[..at], &ping[at..]] {
                frames
                    .feed(None, piece, &mut |found| {
                        if let Found::Ping(payload) = found {
                            pong_frame(payload, [1, 2, 3, 4], &mut outgoing);
                        }
                    })
                    .expect("valid");
            }
            assert_eq!(outgoing.len(), 2 + 4 + 14, "split at {at}");
            assert_eq!(outgoing[..2], [0x8a, 0x80 | 14]);
            let unmasked: Vec<u8> = outgoing[6..]
                .iter()
                .zip([1u8, 2, 3, 4].iter().cycle())
                .map(|(byte, key)| byte ^ key)
                .collect();
            assert_eq!(unmasked, b"are you there?");
        }
    }

    /// A connected socket for a [`Connection`] that is fed bytes by hand.
    fn socket_to_own() -> TcpStream {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| TcpStream::connect(listener.local_addr()?))
            .expect("a socket to own")
    }

    /// Every Ping in a read is answered and counted; a Pong and a text frame are neither.
    #[test]
    fn each_ping_is_answered_and_counted() {
        let mut books = Books::new(None, 1);
        let mut connection =
            Connection::new(socket_to_own(), Protocol::WebSocket(WsFrames::default()));
        let mut bytes = frame(true, 0x9, b"one", None);
        bytes.extend(frame(true, 0xa, b"a pong", None));
        bytes.extend(frame(true, 0x1, b"hello", None));
        bytes.extend(frame(true, 0x9, b"", None));
        assert!(on_bytes(
            &mut connection,
            &bytes,
            Instant::now(),
            &mut books,
            None
        ));
        assert_eq!(books.pings, 2);
        assert_eq!(books.events, 1);
        assert_eq!(connection.outgoing.len(), (2 + 4 + 3) + (2 + 4));
    }

    /// An SSE stream: events with and without ids, ids that are not decimal, a comment, an
    /// event split over lines, chat rounds, an old round after a newer one.
    const SSE_STREAM: &str = "retry: 1000\n\nid: 17\ndata: tick\n\nid:18\nevent: tick\ndata: x\n\n\
        : keep-alive\n\nid: 19a\ndata: bad id\n\nidx: 5\ndata: {\"text\":\"lg42x1234-4-end\"}\n\n\
        data: lg42x1234-5-\ndata: end\n\ndata: lg42x1234-6-end and lg42x1234-7-end\n\n\
        id: 20\ndata: lg42x1234-3-end\n\n";

    fn sse_expected() -> Vec<Seen> {
        use Seen::*;
        vec![
            Message(None),
            Message(Some(17)),
            Message(Some(18)),
            Message(None),
            Message(None),
            Round(4),
            Message(None),
            Message(None),
            Round(6),
            Round(7),
            Message(None),
            Round(3),
            Message(Some(20)),
        ]
    }

    fn feed_sse(pieces: &[&[u8]]) -> Vec<Seen> {
        let marker = Marker::new(PREFIX);
        let mut scan = SseScan::default();
        let mut seen = Vec::new();
        for piece in pieces {
            scan.feed(Some(&marker), piece, &mut |found| seen.push(own(found)));
        }
        seen
    }

    /// The SSE scan finds the same events, ids and rounds however the stream is split in two.
    #[test]
    fn sse_scan_split_at_every_offset() {
        let stream = SSE_STREAM.as_bytes();
        for at in 0..=stream.len() {
            let (first, second) = stream.split_at(at);
            assert_eq!(feed_sse(&[first, second]), sse_expected(), "split at {at}");
        }
    }

    /// Fed one byte at a time, the SSE scan finds the same.
    #[test]
    fn sse_scan_byte_by_byte() {
        let bytes: Vec<&[u8]> = SSE_STREAM.as_bytes().chunks(1).collect();
        assert_eq!(feed_sse(&bytes), sse_expected());
    }

    /// A connection counts each round once: a repeat, or an older copy after a newer round, is
    /// not counted again, and only rounds that were sent count at all.
    #[test]
    fn a_round_counts_once_per_connection() {
        let board = RoundBoard::new(PREFIX, 8);
        let start = Instant::now();
        for round in [3, 4] {
            board.mark_sent(round, start);
        }
        let mut books = Books::new(Some(&board), 1);
        let mut connection = Connection::new(
            socket_to_own(),
            Protocol::Sse {
                body: Body::UntilClose,
                scan: SseScan::default(),
            },
        );
        let later = start + Duration::from_millis(5);
        let text = "data: lg42x1234-3-end\n\ndata: lg42x1234-3-end\n\ndata: lg42x1234-4-end\n\n\
                    data: lg42x1234-3-end\n\ndata: lg42x1234-2-end\n\ndata: lg42x1234-5-end\n\n";
        assert!(on_bytes(
            &mut connection,
            text.as_bytes(),
            later,
            &mut books,
            None
        ));
        assert_eq!(books.events, 6);
        assert_eq!((board.reached(3), board.reached(4)), (1, 1));
        assert_eq!(board.reached(2), 0, "older than the highest seen");
        assert_eq!(board.reached(5), 0, "never sent");
        assert_eq!(books.every.len(), 2);
        assert_eq!(connection.highest, Some(5));
    }

    /// The marker is recognised after a false start on its own first byte, and a prefix that
    /// could overlap itself is refused rather than matched wrongly.
    #[test]
    fn marker_restarts_on_its_first_byte() {
        let marker = Marker::new(PREFIX);
        let mut state = MarkerMatch::default();
        let mut rounds = Vec::new();
        state.feed(
            &marker,
            b"lglg42xlg42x1234-lg42x1234-12-enlg42x1234-7-end",
            &mut |f| rounds.push(own(f)),
        );
        assert_eq!(rounds, [Seen::Round(7)]);
        assert!(std::panic::catch_unwind(|| Marker::new("abca-")).is_err());
        assert!(std::panic::catch_unwind(|| Marker::new("1x-")).is_err());
    }
}
