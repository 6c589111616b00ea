//! The scenarios: each connects its clients, measures one thing, and returns a [`Report`].
//! Each client starts reading as soon as its connection opens: in a task of its own, which
//! dropping the clients at the end aborts, closing the connection; or, for the fan-outs with
//! `--reader epoll` (the default), on the epoll reader's thread, which closes every connection
//! when it stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use realtime_kit::client;
use realtime_kit::parser::MessageEvent;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::cli::Common;
use crate::clients::{ClientTask, Opened, open_all, progress_bar};
use crate::epoll_reader::{EpollReader, Handover, Measured, RoundBoard, Watch};
use crate::kernel_stamp::StampedStream;
use crate::measure::{Latencies, Report, Usage, micros_per};
use crate::sse_client::SseClient;

/// A measuring client's WebSocket: its reads keep the kernel's arrival stamp.
type WebSocket = WebSocketStream<StampedStream>;

/// How long one fan-out round may take before the missing clients are counted as missed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// A marker unique to this run, so messages left from earlier runs (a chat backlog) never count.
pub(crate) fn run_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("lg{}x{nanos}", std::process::id())
}

/// Who reads the measuring clients of a fan-out (`--reader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Reader {
    /// One OS thread, one epoll loop, plain reads: the floor's kind of reader, so that a
    /// fan-out divided by the floor compares the servers, not the readers (src/epoll_reader.rs).
    Epoll,
    /// One tokio task per client, reads with the kernel's receive stamps (the `(kernel stamp)`
    /// rows): about three times the floor reader's CPU per delivery.
    Tokio,
}

impl Reader {
    fn name(self) -> &'static str {
        match self {
            Self::Epoll => "epoll",
            Self::Tokio => "tokio",
        }
    }

    /// The report's `reader` row.
    fn row(self, report: &mut Report) {
        report.add(
            "reader",
            "reader",
            json!(self.name()),
            self.name().to_owned(),
        );
    }
}

/// The measuring clients of a fan-out, read one way or the other.
enum Readers {
    /// A task per client; `received` counts what they read.
    Tokio {
        clients: Vec<ClientTask>,
        received: Box<dyn Fn() -> u64>,
    },
    Epoll(EpollReader),
}

impl Readers {
    /// Messages (WebSocket) or events (SSE) read so far.
    fn received(&self) -> u64 {
        match self {
            Self::Tokio { received, .. } => received(),
            Self::Epoll(reader) => reader.events(),
        }
    }

    /// Ends the measurement. The epoll reader stops, closing its sockets, and hands what it
    /// measured to `rounds`, with a row of the connections that ended meanwhile; the tokio
    /// clients are returned, to be dropped after the report as they always were.
    fn stop_reading(
        self,
        report: &mut Report,
        connected: usize,
        rounds: Option<&Rounds>,
    ) -> realtime_kit::Result<Vec<ClientTask>> {
        match self {
            Self::Tokio { clients, .. } => Ok(clients),
            Self::Epoll(reader) => {
                let ended = reader.ended();
                let measured = reader.finish()?;
                if let Some(rounds) = rounds {
                    rounds.absorb(measured);
                }
                report.add(
                    "ended",
                    "ended early",
                    json!(ended),
                    format!("{ended} of {connected} connections ended while measured"),
                );
                Ok(Vec::new())
            }
        }
    }
}

/// Opens `common.clients` event streams on `url` and hands each, once its response head is
/// read, to a new epoll reader looking for `watch`.
async fn open_sse_epoll(
    common: &Common,
    url: &str,
    watch: Watch,
) -> realtime_kit::Result<(Opened<()>, EpollReader)> {
    let reader = EpollReader::start(watch)?;
    let reader_ref = &reader;
    let opened = open_all(common, common.clients, |_, tcp| async move {
        let client = SseClient::open(tcp, url, !common.plain).await?;
        reader_ref.hand_over(Handover::sse(client)?)?;
        Ok(())
    })
    .await?;
    Ok((opened, reader))
}

/// What all SSE clients of a run count together.
#[derive(Default)]
struct SseTally {
    /// Events received by every client so far: loadgen's CPU time per event is measured with it.
    events: AtomicU64,
    /// Streams that ended (the server closed them, or they broke) while the run held them.
    ended: AtomicUsize,
}

/// Opens `common.clients` event streams on `url`. Each reads in its own task from the moment it
/// opens, and passes every event, with the kernel's arrival stamp of its data, to the handler
/// `on_event(index)` made for it.
async fn open_sse<M, H>(
    common: &Common,
    url: &str,
    on_event: M,
) -> realtime_kit::Result<(Opened<ClientTask>, Arc<SseTally>)>
where
    M: Fn(usize) -> H,
    H: FnMut(MessageEvent, Option<SystemTime>) + Send + 'static,
{
    let tally = Arc::new(SseTally::default());
    let on_event = &on_event;
    let tally_ref = &tally;
    let opened = open_all(common, common.clients, |index, tcp| async move {
        crate::kernel_stamp::enable(&tcp)?;
        let client = SseClient::open(tcp, url, !common.plain).await?;
        let mut handle = on_event(index);
        let tally = tally_ref.clone();
        Ok(ClientTask(tokio::spawn(async move {
            let _ended = client
                .run(|event, stamp| {
                    tally.events.fetch_add(1, Ordering::Relaxed);
                    handle(event, stamp);
                })
                .await;
            tally.ended.fetch_add(1, Ordering::Relaxed);
        })))
    })
    .await?;
    Ok((opened, tally))
}

/// Reports loadgen's CPU time per event (an SSE event, a WebSocket message) received between
/// two points of a run, each its [`Usage`] and the events counted by then.
fn cpu_per_event(report: &mut Report, from: (Usage, u64), to: (Usage, u64)) {
    let events = to.1.saturating_sub(from.1);
    let cpu = to.0.cpu.saturating_sub(from.0.cpu);
    let micros = micros_per(cpu, events);
    report.add(
        "loadgen_cpu_us_per_event",
        "loadgen CPU / event",
        json!(micros),
        format!(
            "{micros:.2} µs ({:.3} s for {events} received while measuring)",
            cpu.as_secs_f64()
        ),
    );
}

/// The measured window's rows: the server's CPU per delivery, and the window's CPU per process
/// that `profile.sh` reads.
fn window_rows(
    report: &mut Report,
    deliveries: u64,
    server: Option<(Usage, Usage)>,
    loadgen: (Usage, Usage),
) {
    report.server_cpu_per_delivery(server, deliveries);
    report.window(
        deliveries,
        &[("server", server), ("loadgen", Some(loadgen))],
    );
}

/// Waits until `received` stops growing (two readings 20 ms apart agree), for at most two
/// seconds: what the server sends on its own as clients join (a chat's join notices, a room's
/// presence) must be delivered before a measured window starts, or the window holds the tail
/// of that work and counts its deliveries against the rounds.
async fn settle(received: impl Fn() -> u64) {
    let until = Instant::now() + Duration::from_secs(2);
    let mut seen = received();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received();
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// Client-side limits like the server's: a small read buffer keeps 10,000 clients cheap.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
}

/// Opens `count` WebSockets on `common.url`; each is handed at once to `read`, in a task.
async fn open_ws<R, F>(
    common: &Common,
    count: usize,
    read: R,
) -> realtime_kit::Result<Opened<ClientTask>>
where
    R: Fn(usize, WebSocket) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let url = common.url.as_str();
    let read = &read;
    open_all(common, count, |index, tcp| async move {
        crate::kernel_stamp::enable(&tcp)?;
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            url,
            StampedStream::new(tcp),
            Some(ws_config()),
        )
        .await?;
        Ok(ClientTask(tokio::spawn(read(index, socket))))
    })
    .await
}

fn connections_row<T>(report: &mut Report, requested: usize, opened: &Opened<T>) {
    let mut text = format!(
        "{} of {requested} connected in {:.2} s, {} failed",
        opened.clients.len(),
        opened.elapsed.as_secs_f64(),
        opened.failed
    );
    if let Some(error) = &opened.first_error {
        text.push_str(&format!(" (first error: {error})"));
    }
    report.add(
        "clients",
        "clients",
        json!({ "requested": requested, "connected": opened.clients.len(), "failed": opened.failed,
                "connect_s": opened.elapsed.as_secs_f64() }),
        text,
    );
}

fn server_usage(common: &Common) -> realtime_kit::Result<Option<Usage>> {
    Ok(common
        .server_pid
        .map(|pid| Usage::of(Some(pid)))
        .transpose()?)
}

/// Holds `count` connections open for `hold`, counting those the server closes meanwhile.
async fn hold_idle(
    common: &Common,
    name: &str,
    hold: Duration,
    clients: Vec<ClientTask>,
    closed: &AtomicUsize,
    mut report: Report,
    // The server's and loadgen's usage, and the kernel's slab, before the clients opened.
    before: (Option<Usage>, Usage, Option<u64>),
) -> realtime_kit::Result<Report> {
    let connected = clients.len();
    let hold = hold.min(common.deadline);
    let progress = progress_bar(hold.as_secs(), "holding");
    let until = Instant::now() + hold;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1).min(until - Instant::now())).await;
        progress.inc(1);
    }
    progress.finish_and_clear();
    let server = before.0.zip(server_usage(common)?);
    report.usage(connected, server, (before.1, Usage::of(None)?));
    if let Some((before, after)) = before.2.zip(crate::measure::kernel_slab_kib()) {
        report.kernel_slab(connected, before, after);
    }
    let dropped = closed.load(Ordering::Relaxed);
    report.add(
        "closed_by_server",
        "closed early",
        json!(dropped),
        format!("{dropped} of {connected} {name} ended while held"),
    );
    drop(clients);
    Ok(report)
}

/// `sse-idle`: hold N streams; the server's RSS growth divided by N is its memory per stream.
pub(crate) async fn sse_idle(common: &Common, hold: Duration) -> realtime_kit::Result<Report> {
    let mut report = Report::new("sse-idle");
    let before = (
        server_usage(common)?,
        Usage::of(None)?,
        crate::measure::kernel_slab_kib(),
    );
    let (opened, tally) = open_sse(common, &common.url, |_| {
        |_: MessageEvent, _: Option<SystemTime>| {}
    })
    .await?;
    connections_row(&mut report, common.clients, &opened);
    hold_idle(
        common,
        "streams",
        hold,
        opened.clients,
        &tally.ended,
        report,
        before,
    )
    .await
}

/// `ws-idle`: hold N WebSockets; the server's RSS growth divided by N is its memory per socket.
pub(crate) async fn ws_idle(common: &Common, hold: Duration) -> realtime_kit::Result<Report> {
    let mut report = Report::new("ws-idle");
    let before = (
        server_usage(common)?,
        Usage::of(None)?,
        crate::measure::kernel_slab_kib(),
    );
    let closed = Arc::new(AtomicUsize::new(0));
    let opened = open_ws(common, common.clients, |_, mut socket| {
        let closed = closed.clone();
        // Reading answers the server's pings (tungstenite queues the pong and flushes it).
        async move {
            while let Some(Ok(_)) = socket.next().await {}
            closed.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await?;
    connections_row(&mut report, common.clients, &opened);
    hold_idle(
        common,
        "sockets",
        hold,
        opened.clients,
        &closed,
        report,
        before,
    )
    .await
}

/// First and last arrival of one message (a tick, a post) across all clients: as loadgen read
/// it, and as the kernel stamped it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrivals {
    first: Instant,
    last: Instant,
    /// The earliest and the latest kernel stamp of the arrivals that had one. The kernel stamps
    /// in the order the server wrote, loadgen reads in its own order, so these are a min and a max.
    kernel: Option<(SystemTime, SystemTime)>,
    pub(crate) count: usize,
}

impl Arrivals {
    /// The first arrival: read `now`, stamped `kernel`.
    pub(crate) fn new(now: Instant, kernel: Option<SystemTime>) -> Self {
        Self {
            first: now,
            last: now,
            kernel: kernel.map(|stamp| (stamp, stamp)),
            count: 1,
        }
    }

    /// One more arrival, read `now` (after every earlier one), stamped `kernel`.
    pub(crate) fn add(&mut self, now: Instant, kernel: Option<SystemTime>) {
        self.last = now;
        self.count += 1;
        if let Some(stamp) = kernel {
            self.kernel = Some(match self.kernel {
                Some((earliest, latest)) => (earliest.min(stamp), latest.max(stamp)),
                None => (stamp, stamp),
            });
        }
    }

    /// Records an arrival into `slot`: the first, or one more.
    pub(crate) fn record(slot: &mut Option<Self>, now: Instant, kernel: Option<SystemTime>) {
        match slot {
            Some(arrivals) => arrivals.add(now, kernel),
            None => *slot = Some(Self::new(now, kernel)),
        }
    }

    /// When the last client had it, as loadgen read it.
    pub(crate) fn last(&self) -> Instant {
        self.last
    }

    /// From the earliest to the latest kernel stamp.
    fn kernel_spread(&self) -> Option<Duration> {
        let (earliest, latest) = self.kernel?;
        latest.duration_since(earliest).ok()
    }

    /// From `sent` to the latest kernel stamp; `None` without stamps, or if the realtime clock
    /// was set back in between.
    fn kernel_since(&self, sent: SystemTime) -> Option<Duration> {
        let (_, latest) = self.kernel?;
        latest.duration_since(sent).ok()
    }
}

/// `clock-spread`: for each tick, the time from the first to the last client receiving it.
pub(crate) async fn clock_spread(
    common: &Common,
    ticks: u64,
    reader: Reader,
) -> realtime_kit::Result<Report> {
    let mut report = Report::new("clock-spread");
    reader.row(&mut report);
    let before = (server_usage(common)?, Usage::of(None)?);
    let arrivals: Arc<Mutex<HashMap<u64, Arrivals>>> = Arc::default();
    let (connected, readers) = match reader {
        Reader::Tokio => {
            let (opened, tally) = open_sse(common, &common.url, |_| {
                let arrivals = arrivals.clone();
                move |event: MessageEvent, stamp: Option<SystemTime>| {
                    let now = Instant::now();
                    let Ok(id) = event.last_event_id.parse::<u64>() else {
                        return;
                    };
                    let mut arrivals = arrivals.lock().expect("no panics while locked");
                    match arrivals.get_mut(&id) {
                        Some(tick) => tick.add(now, stamp),
                        None => {
                            arrivals.insert(id, Arrivals::new(now, stamp));
                        }
                    }
                }
            })
            .await?;
            connections_row(&mut report, common.clients, &opened);
            let received = Box::new(move || tally.events.load(Ordering::Relaxed));
            let clients = opened.clients;
            (clients.len(), Readers::Tokio { clients, received })
        }
        Reader::Epoll => {
            let watch = Watch::Ticks(arrivals.clone());
            let (opened, reader) = open_sse_epoll(common, &common.url, watch).await?;
            connections_row(&mut report, common.clients, &opened);
            (opened.clients.len(), Readers::Epoll(reader))
        }
    };
    // Measure only ticks that start after every client is connected and reading: wait until
    // one tick has reached them all (each gets the current tick as soon as it connects).
    let newest = || {
        arrivals
            .lock()
            .expect("no panics while locked")
            .keys()
            .max()
            .copied()
            .unwrap_or(0)
    };
    let all_reading = || {
        let arrivals = arrivals.lock().expect("no panics while locked");
        arrivals.values().any(|tick| tick.count >= connected)
    };
    let deadline = Instant::now() + common.deadline;
    while !all_reading() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ids only increase, but need not be consecutive (clock-sse's are the tick's time in
    // milliseconds): the measured ticks are the first `ticks` ids above the newest one so far.
    let baseline = newest();
    let ids_after = || -> Vec<u64> {
        let arrivals = arrivals.lock().expect("no panics while locked");
        let mut ids: Vec<u64> = arrivals
            .keys()
            .copied()
            .filter(|&id| id > baseline)
            .collect();
        ids.sort_unstable();
        ids
    };
    crate::perf_control::enable(&common.perf_control)?;
    let server_from = server_usage(common)?;
    let measuring_from = (Usage::of(None)?, readers.received());
    let progress = progress_bar(ticks, "ticks");
    // One tick more than measured, so that the last measured tick has gone round.
    while (ids_after().len() as u64) <= ticks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.set_position(ids_after().len() as u64);
    }
    let measured: Vec<u64> = ids_after().into_iter().take(ticks as usize).collect();
    // Give the last tick's stragglers their time.
    tokio::time::sleep(ROUND_TIMEOUT.min(Duration::from_secs(1))).await;
    progress.finish_and_clear();
    let measured_to = (Usage::of(None)?, readers.received());
    let server_to = server_usage(common)?;
    crate::perf_control::disable(&common.perf_control)?;
    let opened = readers.stop_reading(&mut report, connected, None)?;
    let mut spread = Latencies::new();
    let mut spread_kernel = Latencies::new();
    let mut incomplete = 0;
    for (_, tick) in arrivals
        .lock()
        .expect("no panics while locked")
        .iter()
        .filter(|(id, _)| measured.contains(*id))
    {
        spread.record(tick.last - tick.first);
        if let Some(kernel) = tick.kernel_spread() {
            spread_kernel.record(kernel);
        }
        if tick.count < connected {
            incomplete += 1;
        }
    }
    report.latencies("tick_spread", "tick spread", &spread);
    // The epoll reader reads without the kernel's stamps, as the floor does.
    if reader == Reader::Tokio {
        report.latencies(
            "tick_spread_kernel",
            "tick spread (kernel stamp)",
            &spread_kernel,
        );
    }
    report.add(
        "incomplete_ticks",
        "incomplete ticks",
        json!(incomplete),
        format!("{incomplete} of {} ticks missed some client", spread.len()),
    );
    report.usage(
        connected,
        before.0.zip(server_usage(common)?),
        (before.1, Usage::of(None)?),
    );
    cpu_per_event(&mut report, measuring_from, measured_to);
    let deliveries = measured_to.1.saturating_sub(measuring_from.1);
    window_rows(
        &mut report,
        deliveries,
        server_from.zip(server_to),
        (measuring_from.0, measured_to.0),
    );
    drop(opened);
    Ok(report)
}

/// Per-round bookkeeping of a fan-out: when it was sent, and when each client got it.
struct Rounds {
    /// This run's marker and a dash, found once in each message: round `n` is sent as
    /// `{marker}-{n}-end`, so an arrival is recognised without allocating.
    prefix: String,
    /// Everything an arrival read by the tokio reader updates, under one lock taken once per
    /// arrival. The epoll reader keeps its arrivals to itself and hands them over at the end
    /// ([`Rounds::absorb`]).
    state: Mutex<RoundsState>,
    /// When each round was sent and how many clients have it, without a lock: what the epoll
    /// reader checks per arrival and updates.
    board: Arc<RoundBoard>,
    /// Who reads the arrivals: where [`Rounds::count`] looks, and whether there are kernel stamps.
    reader: Reader,
}

/// The times of every round, indexed by round number.
struct RoundsState {
    /// When each round was sent (`None`: not yet), on loadgen's clock and on the realtime
    /// clock the kernel stamps arrivals with.
    sent: Vec<Option<(Instant, SystemTime)>>,
    /// Latency from send to each client's arrival, all rounds together.
    every: Latencies,
    /// First and last arrival of each round, and how many clients had it.
    last: Vec<Option<Arrivals>>,
}

impl Rounds {
    fn new(count: u64, reader: Reader) -> Arc<Self> {
        let prefix = format!("{}-", run_marker());
        Arc::new(Self {
            board: Arc::new(RoundBoard::new(&prefix, count as usize)),
            prefix,
            state: Mutex::new(RoundsState {
                sent: vec![None; count as usize],
                every: Latencies::new(),
                last: vec![None; count as usize],
            }),
            reader,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoundsState> {
        self.state.lock().expect("no panics while locked")
    }

    /// The round number carried by `text`, if it is one of this run's messages.
    fn round_of(&self, text: &str) -> Option<usize> {
        let (_, rest) = text.split_once(self.prefix.as_str())?;
        let (round, _) = rest.split_once("-end")?;
        round.parse().ok()
    }

    /// Records an arrival if `text` carries one of this run's rounds: read `now`, stamped
    /// `kernel` by the kernel.
    fn arrived(&self, text: &str, now: Instant, kernel: Option<SystemTime>) {
        let Some(round) = self.round_of(text) else {
            return;
        };
        let mut state = self.lock();
        let Some(Some((sent, _))) = state.sent.get(round).copied() else {
            return;
        };
        state.every.record(now - sent);
        if let Some(slot) = state.last.get_mut(round) {
            Arrivals::record(slot, now, kernel);
        }
    }

    fn count(&self, round: u64) -> usize {
        match self.reader {
            Reader::Epoll => self.board.reached(round as usize),
            Reader::Tokio => self.lock().last[round as usize].map_or(0, |a| a.count),
        }
    }

    /// Marks `round` as sent now and returns the text to send for it.
    fn start(&self, round: u64) -> String {
        let now = Instant::now();
        self.lock().sent[round as usize] = Some((now, SystemTime::now()));
        self.board.mark_sent(round as usize, now);
        format!("{}{round}-end", self.prefix)
    }

    /// Takes the arrivals the epoll reader measured, so that [`Rounds::report`] reports them.
    fn absorb(&self, measured: Measured) {
        let mut state = self.lock();
        state.last = measured.rounds;
        state.every = measured.every;
    }

    /// Waits until every client has `round`, or [`ROUND_TIMEOUT`].
    async fn wait(&self, round: u64, clients: usize) {
        let until = Instant::now() + ROUND_TIMEOUT;
        while self.count(round) < clients && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn report(&self, report: &mut Report, clients: usize) {
        let state = self.lock();
        let mut last = Latencies::new();
        let mut last_kernel = Latencies::new();
        let mut missed = 0;
        // Each round's first and last arrival, in ms after its send: a round that starts late
        // (the server still busy with something else) shows here, and not in the percentiles.
        let mut each = Vec::new();
        for (sent, arrivals) in state.sent.iter().zip(state.last.iter()) {
            let Some((sent, sent_realtime)) = sent else {
                continue;
            };
            // A round sent and received by no one is every client's miss, not a round to skip.
            let Some(arrivals) = arrivals else {
                missed += clients;
                continue;
            };
            let millis = |at: Instant| (at - *sent).as_secs_f64() * 1000.0;
            each.push(json!([millis(arrivals.first), millis(arrivals.last)]));
            last.record(arrivals.last - *sent);
            if let Some(kernel) = arrivals.kernel_since(*sent_realtime) {
                last_kernel.record(kernel);
            }
            missed += clients.saturating_sub(arrivals.count);
        }
        report.latencies("to_last_client", "to the last client", &last);
        // The epoll reader reads without the kernel's stamps, as the floor does.
        if self.reader == Reader::Tokio {
            report.latencies(
                "to_last_client_kernel",
                "to the last client (kernel stamp)",
                &last_kernel,
            );
        }
        report.latencies("to_every_client", "to every client", &state.every);
        report.add(
            "missed",
            "missed",
            json!(missed),
            format!("{missed} deliveries missing after {ROUND_TIMEOUT:?} per round"),
        );
        let first_rounds: Vec<String> = each
            .iter()
            .take(3)
            .map(|pair| {
                format!(
                    "{:.1}-{:.1} ms",
                    pair[0].as_f64().unwrap_or(0.0),
                    pair[1].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        report.add(
            "rounds_first_last_ms",
            "first rounds, first-last arrival",
            json!(each),
            first_rounds.join(", "),
        );
    }
}

/// `chat-fanout`'s options besides the common ones and the paths.
pub(crate) struct ChatFanout {
    pub(crate) rounds: u64,
    /// Post unmeasured messages while the streams open (`--prime-streams`).
    pub(crate) prime: bool,
    pub(crate) reader: Reader,
    /// A pause after each round, as the floor's 200 ms between its rounds.
    pub(crate) pause: Duration,
}

/// `chat-fanout`: POST a message, time until each of N streams has it. The stream is read from
/// `paths.0` and messages posted to `paths.1`, both under the URL; with `options.prime`, messages that
/// are not rounds are posted while the streams open (see `--prime-streams`).
pub(crate) async fn chat_fanout(
    common: &Common,
    (stream_path, post_path): (&str, &str),
    options: ChatFanout,
) -> realtime_kit::Result<Report> {
    let ChatFanout {
        rounds,
        prime,
        reader,
        pause,
    } = options;
    let mut report = Report::new("chat-fanout");
    reader.row(&mut report);
    let base = common.url.trim_end_matches('/');
    let before = (server_usage(common)?, Usage::of(None)?);
    let fanout = Rounds::new(rounds, reader);
    let post_url = format!("{base}{post_path}");
    let stream_url = format!("{base}{stream_path}");
    let opening = async {
        match reader {
            Reader::Tokio => {
                let (opened, tally) = open_sse(common, &stream_url, |_| {
                    let fanout = fanout.clone();
                    move |event: MessageEvent, stamp| {
                        fanout.arrived(&event.data, Instant::now(), stamp)
                    }
                })
                .await?;
                let connected = (opened.clients.len(), opened.failed, opened.first_error);
                let readers = Readers::Tokio {
                    clients: opened.clients,
                    received: Box::new(move || tally.events.load(Ordering::Relaxed)),
                };
                Ok::<_, realtime_kit::Error>((connected, opened.elapsed, readers))
            }
            Reader::Epoll => {
                let watch = Watch::Rounds(fanout.board.clone());
                let (opened, reader) = open_sse_epoll(common, &stream_url, watch).await?;
                let connected = (opened.clients.len(), opened.failed, opened.first_error);
                Ok((connected, opened.elapsed, Readers::Epoll(reader)))
            }
        }
    };
    // Each post releases the heads of the streams opened so far; its text carries no round,
    // so it never counts, and settle() below waits for its deliveries to end.
    let primer = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let body = json!({ "user": "loadgen", "text": "opening the streams" }).to_string();
            let headers = [("content-type", "application/json")];
            if let Err(error) = client::fetch(http::Method::POST, &post_url, &headers, body).await {
                return error;
            }
        }
    };
    let ((connected, failed, first_error), elapsed, readers) = if prime {
        tokio::select! {
            opened = opening => opened?,
            error = primer => return Err(format!("priming the streams: {error}").into()),
        }
    } else {
        opening.await?
    };
    let opened = Opened {
        clients: vec![(); connected],
        failed,
        first_error,
        elapsed,
    };
    connections_row(&mut report, common.clients, &opened);
    let progress = progress_bar(rounds, "rounds");
    settle(|| readers.received()).await;
    crate::perf_control::enable(&common.perf_control)?;
    let server_from = server_usage(common)?;
    let measuring_from = (Usage::of(None)?, readers.received());
    let deadline = Instant::now() + common.deadline;
    // The rounds are posted on one kept-alive connection, as a browser's fetch posts them, so
    // a round's time holds no TCP handshake and no new connection's setup in the server.
    let mut poster = client::Connection::open(&post_url).await?;
    for round in (0..rounds).take_while(|_| Instant::now() < deadline) {
        let headers = [("content-type", "application/json")];
        let body = json!({ "user": "loadgen", "text": fanout.start(round) }).to_string();
        let response = poster
            .fetch(http::Method::POST, &post_url, &headers, body)
            .await?;
        // chat-sse answers 201 Created, express's sendStatus 200: any success will do.
        if !response.status.is_success() {
            return Err(format!("POST answered {}: {}", response.status, response.text()).into());
        }
        fanout.wait(round, connected).await;
        progress.inc(1);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    progress.finish_and_clear();
    let measured_to = (Usage::of(None)?, readers.received());
    let server_to = server_usage(common)?;
    crate::perf_control::disable(&common.perf_control)?;
    let opened = readers.stop_reading(&mut report, connected, Some(&fanout))?;
    fanout.report(&mut report, connected);
    report.usage(
        connected,
        before.0.zip(server_usage(common)?),
        (before.1, Usage::of(None)?),
    );
    cpu_per_event(&mut report, measuring_from, measured_to);
    let deliveries = measured_to.1.saturating_sub(measuring_from.1);
    window_rows(
        &mut report,
        deliveries,
        server_from.zip(server_to),
        (measuring_from.0, measured_to.0),
    );
    drop(opened);
    Ok(report)
}

/// `ws-fanout`'s options besides the common ones.
pub(crate) struct WsFanout {
    pub(crate) rounds: u64,
    pub(crate) reader: Reader,
    /// A pause after each round, so that a run can last longer than its rounds take.
    pub(crate) pause: Duration,
}

// ANCHOR: open_sender
/// The fan-out's sending client, one more than `--clients`, with Nagle's algorithm off as on
/// every client here. With it on, a round sent soon after this client answered the server's Ping
/// waited for the server to acknowledge the Pong, and a server with nothing to send back delays
/// that ACK (40 ms on Linux): about one sender Ping in five held a round back by 10-37 ms, and
/// echo-ws's p99 counted it as the server's.
async fn open_sender(url: &str) -> realtime_kit::Result<WebSocketStream<TcpStream>> {
    let tcp = crate::clients::connect(crate::clients::target(url).await?, 0, 1).await?;
    let (sender, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .map_err(|error| {
            format!("the sending client, one more than --clients, could not connect: {error}")
        })?;
    Ok(sender)
}
// ANCHOR_END: open_sender

/// `ws-fanout`: one extra client sends, time until each of N clients has the broadcast.
pub(crate) async fn ws_fanout(
    common: &Common,
    WsFanout {
        rounds,
        reader,
        pause,
    }: WsFanout,
) -> realtime_kit::Result<Report> {
    let mut report = Report::new("ws-fanout");
    reader.row(&mut report);
    let before = (server_usage(common)?, Usage::of(None)?);
    let fanout = Rounds::new(rounds, reader);
    // The server's Pings the tokio clients answered (tungstenite answers them as it reads).
    let tokio_pings = Arc::new(AtomicU64::new(0));
    let (connected, readers) = match reader {
        Reader::Tokio => {
            let received = Arc::new(AtomicU64::new(0));
            let opened = open_ws(common, common.clients, |_, mut socket| {
                let fanout = fanout.clone();
                let received = received.clone();
                let pings = tokio_pings.clone();
                async move {
                    while let Some(Ok(message)) = socket.next().await {
                        match message {
                            Message::Text(text) => {
                                received.fetch_add(1, Ordering::Relaxed);
                                let now = Instant::now();
                                fanout.arrived(&text, now, socket.get_ref().last_stamp());
                            }
                            Message::Ping(_) => {
                                pings.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            })
            .await?;
            connections_row(&mut report, common.clients, &opened);
            let received = Box::new(move || received.load(Ordering::Relaxed));
            let clients = opened.clients;
            (clients.len(), Readers::Tokio { clients, received })
        }
        Reader::Epoll => {
            let reader = EpollReader::start(Watch::Rounds(fanout.board.clone()))?;
            let (reader_ref, url) = (&reader, common.url.as_str());
            let opened = open_all(common, common.clients, |_, tcp| async move {
                reader_ref.hand_over(crate::epoll_reader::websocket_handshake(tcp, url).await?)?;
                Ok(())
            })
            .await?;
            connections_row(&mut report, common.clients, &opened);
            (opened.clients.len(), Readers::Epoll(reader))
        }
    };
    let (mut outgoing, mut incoming) = open_sender(&common.url).await?.split();
    // The sender's own copies of the broadcast must be read too, or its socket backs up. They
    // are deliveries the server makes, so the server's CPU per delivery counts them.
    let echoes = Arc::new(AtomicU64::new(0));
    let echoes_read = echoes.clone();
    let _reading = ClientTask(tokio::spawn(async move {
        while let Some(Ok(_)) = incoming.next().await {
            echoes_read.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let progress = progress_bar(rounds, "rounds");
    let deadline = Instant::now() + common.deadline;
    settle(|| readers.received() + echoes.load(Ordering::Relaxed)).await;
    let pings = || match &readers {
        Readers::Epoll(reader) => reader.pings(),
        Readers::Tokio { .. } => tokio_pings.load(Ordering::Relaxed),
    };
    crate::perf_control::enable(&common.perf_control)?;
    let server_from = server_usage(common)?;
    let echoes_from = echoes.load(Ordering::Relaxed);
    let pings_from = pings();
    let measuring_from = (Usage::of(None)?, readers.received());
    for round in (0..rounds).take_while(|_| Instant::now() < deadline) {
        outgoing.send(Message::text(fanout.start(round))).await?;
        fanout.wait(round, connected).await;
        progress.inc(1);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    progress.finish_and_clear();
    let measured_to = (Usage::of(None)?, readers.received());
    let server_to = server_usage(common)?;
    crate::perf_control::disable(&common.perf_control)?;
    let echoes_to = echoes.load(Ordering::Relaxed);
    let pings_in_window = pings().saturating_sub(pings_from);
    let _ = outgoing.close().await;
    let opened = readers.stop_reading(&mut report, connected, Some(&fanout))?;
    fanout.report(&mut report, connected);
    report.usage(
        connected,
        before.0.zip(server_usage(common)?),
        (before.1, Usage::of(None)?),
    );
    cpu_per_event(&mut report, measuring_from, measured_to);
    let deliveries =
        measured_to.1.saturating_sub(measuring_from.1) + echoes_to.saturating_sub(echoes_from);
    window_rows(
        &mut report,
        deliveries,
        server_from.zip(server_to),
        (measuring_from.0, measured_to.0),
    );
    // What a heartbeat costs shows only beside how many Pings the window held.
    report.add(
        "pings",
        "pings answered",
        json!(pings_in_window),
        format!("{pings_in_window} while measuring"),
    );
    drop(opened);
    Ok(report)
}

/// `ws-throughput`: `senders` of the N clients keep `window` messages each in flight; every
/// client counts what it receives. The server's CPU time per delivery is the figure that does
/// not depend on how fast loadgen is.
pub(crate) async fn ws_throughput(
    common: &Common,
    senders: usize,
    window: usize,
    size: usize,
    duration: Duration,
) -> realtime_kit::Result<Report> {
    let mut report = Report::new("ws-throughput");
    let marker = run_marker();
    let deliveries = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let payload = |ours: &str| {
        let mut text = ours.to_owned();
        text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
        Message::text(text)
    };
    let opened = open_ws(common, common.clients, |index, socket| {
        let deliveries = deliveries.clone();
        let sending = sending.clone();
        let ours = format!("{marker}-s{index}-");
        let tag = marker.clone();
        let first = (index < senders).then(|| vec![payload(&ours); window]);
        let next = payload(&ours);
        async move {
            let (mut outgoing, mut incoming) = socket.split();
            for message in first.into_iter().flatten() {
                if outgoing.send(message).await.is_err() {
                    return;
                }
            }
            while let Some(Ok(message)) = incoming.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                if !text.contains(&tag) {
                    continue;
                }
                deliveries.fetch_add(1, Ordering::Relaxed);
                // A sender's own message came back: put another in flight.
                if index < senders
                    && text.contains(&ours)
                    && sending.load(Ordering::Relaxed)
                    && outgoing.send(next.clone()).await.is_err()
                {
                    return;
                }
            }
        }
    })
    .await?;
    connections_row(&mut report, common.clients, &opened);
    let connected = opened.clients.len();
    // Measure from here, with every client connected.
    let before = (server_usage(common)?, Usage::of(None)?);
    let counted_before = deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let window_end = started + duration.min(common.deadline);
    let progress = progress_bar(duration.as_secs(), "sending");
    while Instant::now() < window_end {
        tokio::time::sleep(Duration::from_secs(1).min(window_end - Instant::now())).await;
        progress.inc(1);
    }
    progress.finish_and_clear();
    let delivered = deliveries.load(Ordering::Relaxed) - counted_before;
    let elapsed = started.elapsed().as_secs_f64();
    let server = before.0.zip(server_usage(common)?);
    let loadgen = (before.1, Usage::of(None)?);
    sending.store(false, Ordering::Relaxed);
    report.add(
        "deliveries_per_s",
        "deliveries",
        json!(delivered as f64 / elapsed),
        format!(
            "{delivered} in {elapsed:.2} s: {:.0} per second",
            delivered as f64 / elapsed
        ),
    );
    report.server_cpu_per_delivery(server, delivered);
    let micros = micros_per(loadgen.1.cpu.saturating_sub(loadgen.0.cpu), delivered);
    report.add(
        "loadgen_cpu_us_per_delivery",
        "loadgen CPU / delivery",
        json!(micros),
        format!("{micros:.3} µs"),
    );
    report.usage(connected, server, loadgen);
    drop(opened);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sender writes each round at once: its socket has Nagle's algorithm off.
    #[tokio::test]
    async fn the_sender_writes_each_round_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("ws://{}/ws", listener.local_addr().expect("address"));
        let config = echo_ws::Config::default();
        tokio::spawn(echo_ws::run(listener, config, std::future::pending()));
        let sender = open_sender(&url).await.expect("the sender connects");
        assert!(
            sender.get_ref().nodelay().expect("TCP_NODELAY"),
            "the sender's socket delays small writes (Nagle's algorithm is on)"
        );
    }

    /// Kernel stamps come in any order: the spread is from the earliest to the latest, arrivals
    /// without a stamp count but change neither, and the time to the last client is from the
    /// send to the latest stamp.
    #[test]
    fn arrivals_keep_the_earliest_and_latest_kernel_stamp() {
        let at = |millis| SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
        let read = Instant::now();
        let mut slot = None;
        Arrivals::record(&mut slot, read, Some(at(1_005)));
        Arrivals::record(&mut slot, read, Some(at(1_002)));
        Arrivals::record(&mut slot, read, None);
        Arrivals::record(&mut slot, read + Duration::from_millis(9), Some(at(1_012)));
        let arrivals = slot.expect("recorded");
        assert_eq!(arrivals.count, 4);
        assert_eq!(arrivals.last - arrivals.first, Duration::from_millis(9));
        assert_eq!(arrivals.kernel_spread(), Some(Duration::from_millis(10)));
        assert_eq!(
            arrivals.kernel_since(at(1_000)),
            Some(Duration::from_millis(12))
        );
        // A send stamped after the last arrival (the realtime clock set back): no figure.
        assert_eq!(arrivals.kernel_since(at(2_000)), None);
    }

    /// Without any stamp there is no kernel figure, only loadgen's own.
    #[test]
    fn arrivals_without_stamps_have_no_kernel_figure() {
        let mut slot = None;
        Arrivals::record(&mut slot, Instant::now(), None);
        let arrivals = slot.expect("recorded");
        assert_eq!(arrivals.kernel_spread(), None);
        assert_eq!(arrivals.kernel_since(SystemTime::UNIX_EPOCH), None);
    }

    /// A round's text is recognised by this run's prefix only, and an arrival of a round that
    /// was sent counts for that round, with its kernel stamp.
    #[test]
    fn rounds_count_only_this_runs_messages() {
        let rounds = Rounds::new(2, Reader::Tokio);
        let text = rounds.start(1);
        assert_eq!(rounds.round_of(&text), Some(1));
        assert_eq!(rounds.round_of("lg1x2-1-end"), None);
        rounds.arrived(&text, Instant::now(), Some(SystemTime::now()));
        rounds.arrived(&rounds.prefix.replace('-', "-0-end"), Instant::now(), None);
        assert_eq!(rounds.count(1), 1);
        assert_eq!(rounds.count(0), 0, "round 0 was never sent");
        let mut report = Report::new("test");
        rounds.report(&mut report, 1);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
        assert_eq!(json["to_last_client"]["samples"], 1);
        assert_eq!(json["to_last_client_kernel"]["samples"], 1);
        assert_eq!(
            json["missed"], 0,
            "round 0 was never sent, so no one missed it"
        );
    }

    /// A round that was sent and reached no client at all is a miss for every client: a server
    /// that closed everyone must not report "0 missed".
    #[test]
    fn a_round_no_one_received_is_missed_by_everyone() {
        let rounds = Rounds::new(3, Reader::Tokio);
        let first = rounds.start(0);
        rounds.arrived(&first, Instant::now(), None);
        rounds.arrived(&first, Instant::now(), None);
        rounds.start(1);
        let mut report = Report::new("test");
        rounds.report(&mut report, 2);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
        assert_eq!(json["missed"], 2, "round 1 reached neither client");
        assert_eq!(json["to_last_client"]["samples"], 1);
    }
}
