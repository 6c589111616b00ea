//! `cargo run -p clock-sse [-- --port 3000 --bind 127.0.0.1]`: serves the clock until Ctrl-C.
//! The demo itself is in `lib.rs`; this file only reads the arguments and binds.

use std::time::Duration;

use clap::Parser;
use realtime_kit::ServerOptions;
use realtime_kit::config::{self, DirectStreamArgs, ListenArgs};

/// A clock that ticks once a second over Server-Sent Events.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,

    #[command(flatten)]
    streams: DirectStreamArgs,

    /// How long a browser waits before reconnecting (sent as `retry:`), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    retry_ms: u64,
}

#[tokio::main]
async fn main() -> realtime_kit::Result<()> {
    let args = Args::parse();
    config::init_tracing();
    let server = ServerOptions {
        direct_streams: args.streams.direct_streams,
        ..args.listen.server_options()?
    };
    let listener = config::listen("clock-sse", clock_sse::DEFAULT_PORT, &args.listen).await?;
    let clock = clock_sse::Config {
        retry: Duration::from_millis(args.retry_ms),
        server,
        ..clock_sse::Config::default()
    };
    clock_sse::run(listener, clock, config::shutdown_signal()).await;
    Ok(())
}
