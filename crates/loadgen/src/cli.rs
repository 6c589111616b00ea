//! loadgen's command line: the arguments, the scenario they name, and the loopback-only rule.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::measure::Report;
use crate::scenarios::{self, Reader};

/// Load scenarios against a running demo, over loopback.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,

    #[command(flatten)]
    common: Common,
}

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The URL to load: an SSE stream (`http://.../events`), the chat's base URL, or a WebSocket
    /// (`ws://.../ws`). Must be a loopback address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3000/events")]
    pub(crate) url: String,

    /// How many clients to connect.
    #[arg(long, global = true, default_value_t = 1000)]
    pub(crate) clients: usize,

    /// The demo's process id: report its memory per connection and its CPU time.
    #[arg(long, global = true)]
    pub(crate) server_pid: Option<u32>,

    /// `CTL,ACK`: the control and answer FIFOs of a `perf stat -D -1 --control fifo:CTL,ACK`,
    /// told `enable` where the measured window starts and `disable` where it ends, so that it
    /// counts the rounds alone (src/perf_control.rs). May be given more than once.
    #[arg(long, global = true, value_parser = crate::perf_control::parse_fifos)]
    pub(crate) perf_control: Vec<crate::perf_control::Fifos>,

    /// Source addresses to connect from (127.0.0.1, .2, ...): one pair of addresses has only
    /// ~28,000 ephemeral ports, and each run leaves its ports in TIME_WAIT for a minute.
    /// Default: one per 1,000 clients.
    #[arg(long, global = true)]
    pub(crate) sources: Option<u8>,

    /// Connections opened at the same time while connecting (more overflows the listen backlog).
    #[arg(long, global = true, default_value_t = 256)]
    pub(crate) connect_batch: usize,

    /// The whole run ends by then, whatever it has measured.
    #[arg(long, global = true, value_parser = parse_seconds, default_value = "120")]
    pub(crate) deadline: Duration,

    /// Print one JSON line instead of the table.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Also append the one JSON line to this file (created if missing), whatever is printed.
    #[arg(long, global = true)]
    pub(crate) json_file: Option<PathBuf>,

    /// SSE scenarios: request the stream without `Accept: text/event-stream`, as curl does.
    /// A demo started with `--direct-streams` serves requests that carry it on the kit's own
    /// direct path and the others through hyper (see realtime-kit's direct.rs), so this
    /// measures hyper's path in the same process.
    #[arg(long, global = true)]
    pub(crate) plain: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Hold N SSE streams open and measure the server's memory per stream.
    SseIdle {
        /// How long to hold them once all are open, in seconds.
        #[arg(long, value_parser = parse_seconds, default_value = "5")]
        hold: Duration,
    },
    /// Hold N WebSocket clients open and measure the server's memory per client.
    WsIdle {
        /// How long to hold them once all are open, in seconds.
        #[arg(long, value_parser = parse_seconds, default_value = "5")]
        hold: Duration,
    },
    /// The clock's tick spread: time from the first to the last of N clients receiving a tick.
    ClockSpread {
        /// How many ticks to measure.
        #[arg(long, default_value_t = 10)]
        ticks: u64,
        /// Who reads the clients: one epoll thread like the floor's reader, or a tokio task
        /// each with the kernel's receive stamps.
        #[arg(long, value_enum, default_value_t = Reader::Epoll)]
        reader: Reader,
    },
    /// Chat fan-out: time from a POST until each of N streams has the message.
    ChatFanout {
        /// How many messages to post, one after the other.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        /// The event stream's path under the URL (the Node replica's is `/message-stream`).
        #[arg(long, default_value = "/events")]
        stream_path: String,
        /// The path messages are posted to as `{"user","text"}` (the Node replica's `/message`).
        #[arg(long, default_value = "/messages")]
        post_path: String,
        /// While the streams open, post a message every 100 ms (not a measured round): for a
        /// server that sends a stream's response head only with its first event, as Node's
        /// `res.writeHead` does until the first `write`.
        #[arg(long)]
        prime_streams: bool,
        /// Who reads the clients: one epoll thread like the floor's reader, or a tokio task
        /// each with the kernel's receive stamps.
        #[arg(long, value_enum, default_value_t = Reader::Epoll)]
        reader: Reader,
        /// Seconds to wait after each round before the next POST. Without it the rounds go
        /// back to back; the floor's are 0.2 s apart, and a ratio to it needs the same.
        #[arg(long, value_parser = parse_seconds, default_value = "0")]
        pause: Duration,
    },
    /// WebSocket broadcast fan-out: time from a send until each of N clients has it.
    WsFanout {
        /// How many messages to send, one after the other.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
        /// Who reads the clients: one epoll thread like the floor's reader, or a tokio task
        /// each with the kernel's receive stamps.
        #[arg(long, value_enum, default_value_t = Reader::Epoll)]
        reader: Reader,
        /// Seconds to wait after each round: a run that lasts past the server's ping interval
        /// shows whether the clients answer pings.
        #[arg(long, value_parser = parse_seconds, default_value = "0")]
        pause: Duration,
    },
    /// WebSocket broadcast throughput: M of the N clients send, every client counts deliveries.
    WsThroughput {
        /// How many of the clients send.
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Messages each sender keeps in flight (it sends again when its own message comes back).
        #[arg(long, default_value_t = 4)]
        window: usize,
        /// Bytes per message.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// How long to send, in seconds.
        #[arg(long, value_parser = parse_seconds, default_value = "10")]
        duration: Duration,
    },
    /// The machine's floor for fan-out: raw loopback TCP writes to N sockets from W threads,
    /// read by a second process (a port of the C baseline, fanout_floor.c). Needs no server.
    /// With `--frame sse`, the same writes carry chat-sse's events, read as chat-fanout reads.
    Floor {
        /// How many messages to write to every socket, 200 ms apart.
        #[arg(long, default_value_t = 20)]
        rounds: u32,
        /// Bytes per message (at least 12: the round and the send time).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Writer threads, each writing to its own slice of the sockets.
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// Who writes: OS threads (the floor), or tokio tasks, to measure what a runtime adds.
        #[arg(long, value_enum, default_value = "threads")]
        writer: crate::floor::Writer,
        /// What is written: raw bytes counted by size (the C code's floor), or a chat message
        /// as chat-sse writes it, read by chat-fanout's own reader (`--size` is then unused).
        #[arg(long, value_enum, default_value = "raw")]
        frame: crate::floor::Frame,
    },
    /// The reading side of `floor`, which runs it in a process of its own.
    #[command(hide = true)]
    FloorReader {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        rounds: u32,
        #[arg(long)]
        size: usize,
        #[arg(long, value_enum)]
        frame: crate::floor::Frame,
        #[arg(long)]
        marker: String,
    },
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a number of seconds"))
}

/// Runs the scenario the arguments name and prints its report.
pub(crate) fn main() -> realtime_kit::Result<()> {
    let args = Args::parse();
    check_loopback(&args.common.url)?;
    // The floor runs on OS threads and blocking sockets only: no runtime to measure.
    let report = match args.scenario {
        Scenario::Floor {
            rounds,
            size,
            writers,
            writer,
            frame,
        } => crate::floor::floor(&args.common, rounds, size, writers, writer, frame)?,
        Scenario::FloorReader {
            port,
            rounds,
            size,
            frame,
            marker,
        } => {
            return crate::floor::floor_reader(&args.common, port, rounds, size, frame, &marker);
        }
        scenario => run_async(&args.common, scenario)?,
    };
    print_report(&args.common, &report)
}

/// Runs one of the scenarios that talk to a demo, on a one-thread runtime.
fn run_async(common: &Common, scenario: Scenario) -> realtime_kit::Result<Report> {
    // One worker thread: the server under test needs the other core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let run = async {
            match scenario {
                Scenario::SseIdle { hold } => scenarios::sse_idle(common, hold).await,
                Scenario::WsIdle { hold } => scenarios::ws_idle(common, hold).await,
                Scenario::ClockSpread { ticks, reader } => {
                    scenarios::clock_spread(common, ticks, reader).await
                }
                Scenario::ChatFanout {
                    rounds,
                    stream_path,
                    post_path,
                    prime_streams,
                    reader,
                    pause,
                } => {
                    let paths = (stream_path.as_str(), post_path.as_str());
                    let options = scenarios::ChatFanout {
                        rounds,
                        prime: prime_streams,
                        reader,
                        pause,
                    };
                    scenarios::chat_fanout(common, paths, options).await
                }
                Scenario::WsFanout {
                    rounds,
                    reader,
                    pause,
                } => {
                    let options = scenarios::WsFanout {
                        rounds,
                        reader,
                        pause,
                    };
                    scenarios::ws_fanout(common, options).await
                }
                Scenario::WsThroughput {
                    senders,
                    window,
                    size,
                    duration,
                } => scenarios::ws_throughput(common, senders, window, size, duration).await,
                Scenario::Floor { .. } | Scenario::FloorReader { .. } => {
                    unreachable!("the floor runs without a runtime")
                }
            }
        };
        run.await
    })
}

/// Prints the report as a table or one JSON line, and appends the line to `--json-file`.
fn print_report(common: &Common, report: &Report) -> realtime_kit::Result<()> {
    if let Some(path) = &common.json_file {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        writeln!(file, "{}", report.to_json())
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if common.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Refuses any target that is not on this machine: load tests run against loopback only.
fn check_loopback(url: &str) -> realtime_kit::Result<()> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!("{url}: loadgen only targets loopback addresses (127.0.0.0/8, ::1)").into())
    }
}
