//! loadgen's command line: the arguments, the scenario they name, and the loopback-only rule.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::scenarios;

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
    },
    /// Chat fan-out: time from a POST until each of N streams has the message.
    ChatFanout {
        /// How many messages to post, one after the other.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
    },
    /// WebSocket broadcast fan-out: time from a send until each of N clients has it.
    WsFanout {
        /// How many messages to send, one after the other.
        #[arg(long, default_value_t = 20)]
        rounds: u64,
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
    // One worker thread: the server under test needs the other core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let common = &args.common;
        let run = async {
            match args.scenario {
                Scenario::SseIdle { hold } => scenarios::sse_idle(common, hold).await,
                Scenario::WsIdle { hold } => scenarios::ws_idle(common, hold).await,
                Scenario::ClockSpread { ticks } => scenarios::clock_spread(common, ticks).await,
                Scenario::ChatFanout { rounds } => scenarios::chat_fanout(common, rounds).await,
                Scenario::WsFanout { rounds } => scenarios::ws_fanout(common, rounds).await,
                Scenario::WsThroughput {
                    senders,
                    window,
                    size,
                    duration,
                } => scenarios::ws_throughput(common, senders, window, size, duration).await,
            }
        };
        run.await
    })?;
    if let Some(path) = &args.common.json_file {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        writeln!(file, "{}", report.to_json())
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if args.common.json {
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
