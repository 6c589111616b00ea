//! `cargo run -p clock-sse [-- --port 3000 --bind 127.0.0.1]`: serves the clock until Ctrl-C.
//! The demo itself is in `lib.rs`; this file only reads the arguments and binds.
//!
//! The timings can be changed too, by flag or environment variable (`--tick-ms` or `TICK_MS`,
//! `--stall-timeout-ms` or `STALL_TIMEOUT_MS`, ...): the ladder's checker
//! (`cargo run -p ladder -- verify`) runs this binary as the last rung with the same variables
//! as the steps in `examples/`, and short limits make its tests quick.

use std::time::Duration;

use clap::Parser;
use realtime_kit::ServerOptions;
use realtime_kit::config::{self, DirectStreamArgs, ListenArgs, RuntimeArgs};

/// A clock that ticks once a second over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,

    #[command(flatten)]
    streams: DirectStreamArgs,

    /// How long a browser waits before reconnecting (sent as `retry:`), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    retry_ms: u64,

    /// Time between ticks, in milliseconds. [default: 1000]
    #[arg(long, env = "TICK_MS", value_name = "MS")]
    tick_ms: Option<u64>,

    /// How long a stream may be silent before a keep-alive comment, in milliseconds.
    /// [default: 15000]
    #[arg(long, env = "KEEP_ALIVE_MS", value_name = "MS")]
    keep_alive_ms: Option<u64>,
}

fn main() -> realtime_kit::Result<()> {
    let args = Args::parse();
    config::init_tracing();
    let runtime = args.runtime.runtime()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> realtime_kit::Result<()> {
    let server = ServerOptions {
        direct_streams: args.streams.direct_streams,
        ..args.listen.server_options()?
    };
    let listener = config::listen("clock-sse", clock_sse::DEFAULT_PORT, &args.listen).await?;
    let defaults = clock_sse::Config::default();
    let clock = clock_sse::Config {
        tick_interval: config::millis_or(args.tick_ms, defaults.tick_interval)
            .max(Duration::from_millis(1)),
        retry: Duration::from_millis(args.retry_ms),
        keep_alive: config::millis_or(args.keep_alive_ms, defaults.keep_alive),
        server,
    };
    clock_sse::run(listener, clock, config::shutdown_signal()).await;
    Ok(())
}
