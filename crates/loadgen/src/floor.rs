//! `floor`: the machine's floor for fan-out, a port of `../shared/baselines/fanout_floor.c` (beside the checkout).
//! One process writes the same small message to N loopback TCP sockets from W threads; a second
//! process (this binary again, as the hidden `floor-reader`) reads them with one epoll loop. No
//! runtime, no framework, no parsing: what a demo's fan-out costs above this is its own.
//!
//! ```text
//! cargo build --release -p loadgen
//! target/release/loadgen floor --clients 10000 --rounds 20 --size 100 --writers 2
//! ```
//!
//! `--writer` chooses who writes, with the same reader every time, so the steps between the
//! floor and a demo can be measured one at a time:
//!
//! | `--writer` | what writes each round |
//! | --- | --- |
//! | `threads` (the floor) | W OS threads, blocking `write` on plain sockets, as the C code does |
//! | `tokio-shards` | W tasks on a tokio runtime of W workers, each writing its slice of the sockets with `try_write` (a wait for writability only if a socket is full): what a room written by one task per core would cost |
//! | `tokio-tasks` | one task per socket, woken through a `tokio::sync::broadcast` channel, each writing its own socket: how a room of one task per client (echo-ws's, chat-sse's) is woken, without anything else a session does |
//!
//! `--frame` chooses what each round carries, with the same writers:
//!
//! | `--frame` | what each round writes, and who reads it |
//! | --- | --- |
//! | `raw` (the floor) | `--size` bytes, counted by size, as the C code does |
//! | `sse` | one chat message exactly as chat-sse writes it to a direct stream (an `id:` and a JSON `data:` line, in one HTTP chunk, about 140 bytes), read by `chat-fanout`'s own reader ([`EpollReader`]: de-chunked, scanned for the fields and the round's marker) |
//!
//! A chat fan-out divided by the raw floor holds the server's work and the reader's extra
//! parsing together; divided by the SSE-framed floor, it holds the server's alone.
//!
//! ```text
//! target/release/loadgen floor --clients 10000 --rounds 50 --writers 2 --frame sse
//! ```
//!
//! The report's `to_last_client` is each round's time from the send to the last of the N
//! arrivals, under the same key as the other fan-out scenarios, so a script can divide one by
//! the other; `writer_us_per_delivery` is the writer's CPU time (all its threads) per message
//! per socket while writing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{setsockopt, sockopt};
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};

use crate::cli::Common;
use crate::epoll_reader::{EpollReader, Handover, RoundBoard, Watch};
use crate::measure::{Latencies, Report, Usage, micros_per};

/// The C code's pause after the reader has connected everything, so that the first round does
/// not meet the tail of the handshakes.
const SETTLE: Duration = Duration::from_millis(300);
/// The C code's pause between rounds: each round starts on idle sockets and an idle machine.
const PAUSE: Duration = Duration::from_millis(200);
/// How long the reader waits for any data, and the writer for any connection, before giving up:
/// the C reader's epoll timeout. It bounds a run whose other side has died.
const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// Clients per source address by default, as in the C code (see clients.rs for why several).
const CLIENTS_PER_SOURCE: usize = 1_000;
/// A message starts with its round (4 bytes) and its send time (8 bytes); the rest is filler.
const HEADER: usize = 12;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for the whole machine, so the writer's stamp and
/// the reader's arrival, in two processes, can be subtracted.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or_default() * 1_000_000_000
        + u64::try_from(now.tv_nsec).unwrap_or_default()
}

/// The reader process. Dropping it kills it, so an error on the writer's side never leaves a
/// reader holding N sockets.
struct ReaderProcess(Child);

impl Drop for ReaderProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `floor`: the writer's side. Starts the reader, accepts its N connections, writes the rounds,
/// and reports what the reader measured next to the writer's CPU time.
pub(crate) fn floor(
    common: &Common,
    rounds: u32,
    size: usize,
    writers: usize,
    writer: Writer,
    frame: Frame,
) -> realtime_kit::Result<Report> {
    let clients = common.clients;
    let size = size.max(HEADER);
    let marker = format!("{}-", crate::scenarios::run_marker());
    let writers = writers.clamp(1, clients.max(1));
    crate::clients::raise_open_files_limit(clients)?;
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    // std's listen backlog is 128: the reader connects as fast as it can, as the C code does
    // with 4096.
    listener.listen(4096)?;
    // On Linux SO_RCVTIMEO bounds accept() too: a reader that died never leaves us waiting.
    listener.set_read_timeout(Some(IDLE_LIMIT))?;
    let port = listener
        .local_addr()?
        .as_socket()
        .ok_or("the listener has no IP address")?
        .port();

    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["floor-reader", "--port", &port.to_string()])
        .args(["--clients", &clients.to_string()])
        .args(["--rounds", &rounds.to_string(), "--size", &size.to_string()])
        .args(["--frame", frame.name(), "--marker", &marker])
        .stdout(Stdio::piped());
    if let Some(sources) = common.sources {
        command.args(["--sources", &sources.to_string()]);
    }
    let mut reader = ReaderProcess(command.spawn()?);
    let mut from_reader = BufReader::new(
        reader
            .0
            .stdout
            .take()
            .ok_or("the reader's standard output")?,
    );

    let started = Instant::now();
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (socket, _) = listener
            .accept()
            .map_err(|error| format!("accepting the reader's connections: {error}"))?;
        socket.set_tcp_nodelay(true)?;
        sockets.push(TcpStream::from(socket));
    }
    let mut line = String::new();
    from_reader.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("the reader did not connect (it said {line:?})").into());
    }
    let connect_s = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);

    let deadline = Instant::now() + common.deadline;
    let mut message = vec![b'x'; size];
    let mut wire_size = 0;
    let mut writer_cpu = Duration::ZERO;
    let mut sent_ns = Vec::new();
    let connected = sockets.len();
    let mut round_writer = RoundWriter::new(writer, sockets, writers)?;
    let reader_pid = reader.0.id();
    crate::perf_control::enable(&common.perf_control)?;
    let window_from = (Usage::of(None)?, Usage::of(Some(reader_pid))?);
    for round in (0..rounds).take_while(|_| Instant::now() < deadline) {
        let before = Usage::of(None)?;
        let now = monotonic_ns();
        if frame == Frame::Sse {
            message = sse_event(&marker, round);
        } else {
            message[..4].copy_from_slice(&round.to_le_bytes());
            message[4..HEADER].copy_from_slice(&now.to_le_bytes());
        }
        wire_size = wire_size.max(message.len());
        round_writer.write(&message)?;
        writer_cpu += Usage::of(None)?.cpu.saturating_sub(before.cpu);
        sent_ns.push(now);
        std::thread::sleep(PAUSE);
    }
    // The last round was read during its pause: the window holds every round's reading too.
    let window_to = (Usage::of(None)?, Usage::of(Some(reader_pid))?);
    crate::perf_control::disable(&common.perf_control)?;
    drop(round_writer);
    let sent = u32::try_from(sent_ns.len()).unwrap_or(u32::MAX);

    line.clear();
    from_reader.read_line(&mut line)?;
    let measured: Value = serde_json::from_str(line.trim())
        .map_err(|error| format!("the reader's report {line:?}: {error}"))?;
    let _ = reader.0.wait();

    // The reader reports when each round reached its last client, on the same clock as
    // `sent_ns`; a round some client never had is null.
    let mut last = Latencies::new();
    let arrived = measured["last_at_ns"].as_array().into_iter().flatten();
    for (sent_at, last_at) in sent_ns.iter().zip(arrived) {
        if let Some(last_at) = last_at.as_u64() {
            last.record(Duration::from_nanos(last_at.saturating_sub(*sent_at)));
        }
    }
    let complete = last.len();
    let missed = measured["missed"].as_u64().unwrap_or(0);
    let deliveries = u64::try_from(clients).unwrap_or(u64::MAX) * u64::from(sent);
    let writer_us = micros_per(writer_cpu, deliveries);

    let mut report = Report::new("floor");
    report.add(
        "clients",
        "clients",
        json!({ "requested": clients, "connected": connected, "failed": 0, "connect_s": connect_s }),
        format!("{connected} of {clients} connected in {connect_s:.2} s"),
    );
    report.add("n", "n", json!(clients), clients.to_string());
    report.add(
        "size",
        "size",
        json!(wire_size),
        format!("{wire_size} B on the wire"),
    );
    report.add(
        "frame",
        "frame",
        json!(frame.name()),
        frame.name().to_owned(),
    );
    report.add(
        "writers",
        "writer threads",
        json!(writers),
        writers.to_string(),
    );
    report.add(
        "writer",
        "writer",
        json!(writer.name()),
        writer.name().to_owned(),
    );
    report.add(
        "rounds",
        "rounds",
        json!(sent),
        format!("{sent} of {rounds} sent"),
    );
    report.add(
        "rounds_complete",
        "rounds complete",
        json!(complete),
        format!("{complete} of {sent} reached every client"),
    );
    report.latencies("to_last_client", "to the last client", &last);
    report.add(
        "missed",
        "missed",
        json!(missed),
        format!("{missed} deliveries missing when the reader stopped"),
    );
    report.add(
        "writer_us_per_delivery",
        "writer CPU / delivery",
        json!(writer_us),
        format!(
            "{writer_us:.3} µs ({:.3} s for {deliveries} deliveries)",
            writer_cpu.as_secs_f64()
        ),
    );
    report.window(
        deliveries,
        &[
            ("writer", Some((window_from.0, window_to.0))),
            ("reader", Some((window_from.1, window_to.1))),
        ],
    );
    Ok(report)
}

/// Who writes each round (see the table at the top of this file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Writer {
    /// W OS threads with blocking writes: the floor itself.
    Threads,
    /// W tokio tasks on W workers, each writing its slice of the sockets.
    TokioShards,
    /// One tokio task per socket, woken by a broadcast channel.
    TokioTasks,
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::Threads => "threads",
            Writer::TokioShards => "tokio-shards",
            Writer::TokioTasks => "tokio-tasks",
        }
    }
}

/// What each round writes (`--frame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Frame {
    /// `--size` bytes, the round and the send time first: the C code's message, counted by
    /// bytes.
    Raw,
    /// One chat message as chat-sse writes it on the wire (an SSE event in one HTTP chunk),
    /// read by the chat's own reader (src/epoll_reader.rs): the floor of `chat-fanout`.
    Sse,
}

impl Frame {
    fn name(self) -> &'static str {
        match self {
            Frame::Raw => "raw",
            Frame::Sse => "sse",
        }
    }
}

/// The first event id of an SSE-framed run: chat-sse's ids have 16 digits (see its `Log`).
const FIRST_SSE_ID: u64 = 1_764_723_921_637_000;

// ANCHOR: sse_event
/// Round `round` as chat-sse sends a chat message to its direct streams: the event with its
/// id and JSON data, carrying the run's marker where `chat-fanout` has it, in one HTTP chunk.
fn sse_event(marker: &str, round: u32) -> Vec<u8> {
    let id = FIRST_SSE_ID + u64::from(round);
    let event = format!(
        "id: {id}\ndata: {{\"id\":{id},\"user\":\"loadgen\",\"text\":\"{marker}{round}-end\",\
         \"time\":\"2026-12-03T01:05:21.637Z\"}}\n\n"
    );
    format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
}
// ANCHOR_END: sse_event

/// The writing side, set up once before the rounds so that a round measures only its writes.
enum RoundWriter {
    Threads {
        sockets: Vec<TcpStream>,
        writers: usize,
    },
    Shards {
        runtime: tokio::runtime::Runtime,
        slices: Vec<Arc<Vec<tokio::net::TcpStream>>>,
    },
    Tasks {
        runtime: tokio::runtime::Runtime,
        /// Each round's message, to every socket's task.
        rounds: tokio::sync::broadcast::Sender<Arc<[u8]>>,
        /// What the tasks tell the round: every socket written, or a write that failed. Only
        /// the last writer of a round (or a failing one) sends, so that telling the round does
        /// not add a wake-up per socket that a room does not have.
        written: tokio::sync::mpsc::Receiver<std::io::Result<()>>,
        /// Sockets still to write in the current round.
        remaining: Arc<std::sync::atomic::AtomicUsize>,
        sockets: usize,
    },
}

impl RoundWriter {
    fn new(writer: Writer, sockets: Vec<TcpStream>, writers: usize) -> std::io::Result<Self> {
        Ok(match writer {
            Writer::Threads => Self::Threads { sockets, writers },
            Writer::TokioShards => {
                let (runtime, sockets) = on_runtime(sockets, writers)?;
                let slice = sockets.len().div_ceil(writers).max(1);
                let mut slices = Vec::new();
                let mut sockets = sockets.into_iter().peekable();
                while sockets.peek().is_some() {
                    slices.push(Arc::new(sockets.by_ref().take(slice).collect()));
                }
                Self::Shards { runtime, slices }
            }
            Writer::TokioTasks => {
                let (runtime, sockets) = on_runtime(sockets, writers)?;
                let count = sockets.len();
                let (rounds, _) = tokio::sync::broadcast::channel::<Arc<[u8]>>(4);
                let (done, written) = tokio::sync::mpsc::channel(count.max(1));
                let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                for socket in sockets {
                    let mut next = rounds.subscribe();
                    let done = done.clone();
                    let remaining = remaining.clone();
                    runtime.spawn(async move {
                        while let Ok(message) = next.recv().await {
                            let result = write_all(&socket, &message).await;
                            let last = remaining.fetch_sub(1, Ordering::AcqRel) == 1;
                            if (result.is_err() || last) && done.send(result).await.is_err() {
                                return;
                            }
                        }
                    });
                }
                Self::Tasks {
                    runtime,
                    rounds,
                    written,
                    remaining,
                    sockets: count,
                }
            }
        })
    }

    /// Writes `message` to every socket and returns once every write is done.
    fn write(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Threads { sockets, writers } => write_round(sockets, message, *writers),
            Self::Shards { runtime, slices } => {
                let message: Arc<[u8]> = message.into();
                runtime.block_on(async {
                    let shards: Vec<_> = slices
                        .iter()
                        .map(|slice| {
                            let slice = slice.clone();
                            let message = message.clone();
                            tokio::spawn(async move {
                                for socket in slice.iter() {
                                    write_all(socket, &message).await?;
                                }
                                Ok::<_, std::io::Error>(())
                            })
                        })
                        .collect();
                    for shard in shards {
                        shard.await.map_err(std::io::Error::other)??;
                    }
                    Ok(())
                })
            }
            Self::Tasks {
                runtime,
                rounds,
                written,
                remaining,
                sockets,
            } => {
                remaining.store(*sockets, Ordering::Release);
                let _ = rounds.send(message.into());
                runtime.block_on(async {
                    match written.recv().await {
                        Some(result) => result,
                        None => Err(std::io::Error::other("a writer task ended")),
                    }
                })
            }
        }
    }
}

/// A tokio runtime of `writers` workers, as the floor has W threads (the runtime a demo's
/// `#[tokio::main]` gets on a machine of W cores), and the sockets moved onto it, non-blocking.
fn on_runtime(
    sockets: Vec<TcpStream>,
    writers: usize,
) -> std::io::Result<(tokio::runtime::Runtime, Vec<tokio::net::TcpStream>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(writers)
        .enable_io()
        .build()?;
    let sockets = {
        let _entered = runtime.enter();
        sockets
            .into_iter()
            .map(|socket| {
                socket.set_nonblocking(true)?;
                tokio::net::TcpStream::from_std(socket)
            })
            .collect::<std::io::Result<Vec<_>>>()?
    };
    Ok((runtime, sockets))
}

/// Writes all of `message` to a non-blocking socket: straight away when it has room (always,
/// for a small message on an idle loopback socket), waiting for writability only if not.
async fn write_all(socket: &tokio::net::TcpStream, mut message: &[u8]) -> std::io::Result<()> {
    while !message.is_empty() {
        match socket.try_write(message) {
            Ok(written) => message = &message[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                socket.writable().await?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Writes `message` to every socket, from `writers` threads, each its own slice of the sockets.
/// Blocking writes: a 100-byte message always fits in a loopback socket's send buffer.
fn write_round(sockets: &[TcpStream], message: &[u8], writers: usize) -> std::io::Result<()> {
    let slice = sockets.len().div_ceil(writers).max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = sockets
            .chunks(slice)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .try_for_each(|mut socket| socket.write_all(message))
                })
            })
            .collect();
        threads.into_iter().try_for_each(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a writer thread panicked")))
        })
    })
}

/// `floor-reader`: the reader's side, run by `floor` in a process of its own. Connects N clients
/// to `port`, says `ready` on standard output, reads until every round reached every client (or
/// nothing arrives for [`IDLE_LIMIT`]), and prints one JSON line: when each round reached its
/// last client, in [`monotonic_ns`] (`null` if some client never had it), and the deliveries
/// missed.
pub(crate) fn floor_reader(
    common: &Common,
    port: u16,
    rounds: u32,
    size: usize,
    frame: Frame,
    marker: &str,
) -> realtime_kit::Result<()> {
    let clients = common.clients;
    crate::clients::raise_open_files_limit(clients)?;
    let per_source = common.sources.map_or(CLIENTS_PER_SOURCE, |sources| {
        clients.div_ceil(usize::from(sources.max(1))).max(1)
    });
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut streams = Vec::with_capacity(clients);
    for index in 0..clients {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        let last = u8::try_from(1 + index / per_source)
            .unwrap_or(u8::MAX)
            .min(254);
        // Take the port at connect(), per (source, destination) pair, not at bind(), where a
        // port is reserved for every destination at once.
        setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
        socket
            .bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), 0)).into())?;
        socket
            .connect(&target.into())
            .map_err(|error| format!("connect from 127.0.0.{last}: {error}"))?;
        streams.push(TcpStream::from(socket));
    }
    let rounds = rounds as usize;
    let (last_at, got) = match frame {
        Frame::Raw => read_raw(streams, rounds, size)?,
        Frame::Sse => read_sse(streams, rounds, marker)?,
    };
    let last_at_ns: Vec<Value> = last_at
        .iter()
        .zip(&got)
        .map(|(at, got)| {
            if *got == clients {
                json!(at)
            } else {
                Value::Null
            }
        })
        .collect();
    let missed: usize = got.iter().map(|got| clients.saturating_sub(*got)).sum();
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{}",
        json!({ "last_at_ns": last_at_ns, "missed": missed })
    )?;
    stdout.flush()?;
    Ok(())
}

/// Tells `floor` that every client is connected: it starts the rounds when it reads this.
fn say_ready() -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()
}

/// One reader connection: its socket and how far it is into the message being received, so
/// that a message split over two reads is still counted once, whole.
struct Incoming {
    stream: TcpStream,
    /// The first bytes of the message being received: its round (and send time, unread here).
    header: [u8; HEADER],
    /// Bytes of that message received so far.
    filled: usize,
}

/// The raw floor's reader, as the C code's: one epoll loop that counts each socket's bytes
/// into messages of `size` and reads their round. Returns, per round, its last arrival and how
/// many clients had it.
fn read_raw(
    streams: Vec<TcpStream>,
    rounds: usize,
    size: usize,
) -> realtime_kit::Result<(Vec<u64>, Vec<usize>)> {
    let clients = streams.len();
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let mut incoming = Vec::with_capacity(clients);
    for (index, stream) in streams.into_iter().enumerate() {
        epoll.add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, index as u64))?;
        incoming.push(Incoming {
            stream,
            header: [0; HEADER],
            filled: 0,
        });
    }
    say_ready()?;

    let mut last = vec![0u64; rounds];
    let mut got = vec![0usize; rounds];
    let mut done = 0;
    let mut open = clients;
    let mut buffer = vec![0u8; 65_536];
    let mut events = vec![EpollEvent::empty(); 1024];
    let idle = EpollTimeout::try_from(IDLE_LIMIT).unwrap_or(EpollTimeout::MAX);
    while done < rounds && open > 0 {
        let ready = match epoll.wait(&mut events, idle) {
            Ok(0) => {
                eprintln!("floor-reader: nothing arrived for {IDLE_LIMIT:?}; stopping");
                break;
            }
            Ok(ready) => ready,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => return Err(error.into()),
        };
        for event in &events[..ready] {
            let Some(connection) = usize::try_from(event.data())
                .ok()
                .and_then(|index| incoming.get_mut(index))
            else {
                continue;
            };
            let read = match (&connection.stream).read(&mut buffer) {
                Ok(0) | Err(_) => {
                    // The writer closed (or broke) this one: stop watching it.
                    let _ = epoll.delete(&connection.stream);
                    open -= 1;
                    continue;
                }
                Ok(read) => read,
            };
            let now = monotonic_ns();
            let mut rest = &buffer[..read];
            while !rest.is_empty() {
                let take = (size - connection.filled).min(rest.len());
                if connection.filled < HEADER {
                    let head = (HEADER - connection.filled).min(take);
                    connection.header[connection.filled..connection.filled + head]
                        .copy_from_slice(&rest[..head]);
                }
                connection.filled += take;
                rest = &rest[take..];
                if connection.filled < size {
                    break;
                }
                connection.filled = 0;
                let round =
                    u32::from_le_bytes(connection.header[..4].try_into().unwrap_or_default());
                let round = round as usize;
                if round < rounds {
                    last[round] = last[round].max(now);
                    got[round] += 1;
                    if got[round] == clients {
                        done += 1;
                    }
                }
            }
        }
    }
    Ok((last, got))
}

/// How often the SSE-framed reader's main thread looks at the rounds' counts, as
/// `chat-fanout` waits for a round.
const POLL: Duration = Duration::from_millis(2);

/// The SSE-framed floor's reader: the chat's own ([`EpollReader`], as `chat-fanout --reader
/// epoll` reads chat-sse's streams), so that the chat divided by this floor compares the
/// servers alone. Returns, per round, its last arrival and how many clients had it.
fn read_sse(
    streams: Vec<TcpStream>,
    rounds: usize,
    marker: &str,
) -> realtime_kit::Result<(Vec<u64>, Vec<usize>)> {
    let clients = streams.len();
    let board = Arc::new(RoundBoard::new(marker, rounds));
    // Every round counts from one origin, on the clock `floor` stamps its sends with: the reader
    // reports absolute arrival times, and the writer subtracts its own send times.
    let origin_ns = monotonic_ns();
    let origin = Instant::now();
    for round in 0..rounds {
        board.mark_sent(round, origin);
    }
    let reader = EpollReader::start(Watch::Rounds(board.clone()))?;
    for stream in streams {
        reader.hand_over(Handover::chunked_sse(stream)?)?;
    }
    say_ready()?;

    let mut events = 0;
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(POLL);
        let complete = (0..rounds).all(|round| board.reached(round) >= clients);
        if complete || reader.ended() >= clients {
            break;
        }
        if reader.events() != events {
            events = reader.events();
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > IDLE_LIMIT {
            eprintln!("floor-reader: nothing arrived for {IDLE_LIMIT:?}; stopping");
            break;
        }
    }
    let measured = reader.finish()?;
    let since_origin = |at: Instant| {
        let nanos = at.saturating_duration_since(origin).as_nanos();
        origin_ns.saturating_add(u64::try_from(nanos).unwrap_or(u64::MAX))
    };
    Ok(measured
        .rounds
        .iter()
        .map(|arrivals| arrivals.map_or((0, 0), |a| (since_origin(a.last()), a.count)))
        .unzip())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::sse_event;

    /// Reads from `stream` into `seen` until it holds `until`, within a second.
    async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, until: &[u8]) {
        let mut buffer = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(1), async {
            while !seen.windows(until.len()).any(|window| window == until) {
                let read = stream.read(&mut buffer).await.expect("the stream reads");
                assert!(
                    read > 0,
                    "the stream ended: {:?}",
                    String::from_utf8_lossy(seen)
                );
                seen.extend_from_slice(&buffer[..read]);
            }
        })
        .await
        .expect("the bytes came in time");
    }

    /// Every digit as `0`: an event's id and time differ between two runs, its shape not.
    fn shape(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).replace(|c: char| c.is_ascii_digit(), "0")
    }

    /// The SSE-framed floor writes what chat-sse writes to a direct stream for the same post,
    /// byte for byte but for the digits of the id and the time: one chunk, one event, the same
    /// length. If the chat's event changes, the floor must change with it.
    #[tokio::test]
    async fn an_sse_round_is_what_chat_sse_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut config = chat_sse::Config {
            backlog: 0,
            ..chat_sse::Config::default()
        };
        config.server.direct_streams = true;
        tokio::spawn(chat_sse::run(listener, config, std::future::pending()));

        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .expect("request");
        let mut opening = Vec::new();
        read_until(&mut stream, &mut opening, b"{\"online\":1}\n\n\r\n").await;

        let marker = "lg4242x123456789-";
        let body = format!(r#"{{"user":"loadgen","text":"{marker}7-end"}}"#);
        let mut post = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        post.write_all(request.as_bytes()).await.expect("post");
        let mut answer = Vec::new();
        post.read_to_end(&mut answer).await.expect("answer");
        assert!(answer.starts_with(b"HTTP/1.1 201"), "{answer:?}");

        let mut event = Vec::new();
        read_until(&mut stream, &mut event, b"\n\n\r\n").await;
        assert_eq!(shape(&event), shape(&sse_event(marker, 7)));
    }
}
