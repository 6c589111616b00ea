//! `cargo run -p echo-ws [-- --port 3001 --allow-origin http://localhost:5173]`: serves the room
//! and the echo until Ctrl-C. The demo itself is in `lib.rs`; this file only reads the arguments
//! and binds. Add `--redis redis://127.0.0.1:6379` (or set `REDIS_URL`) to share the room with
//! every other instance given the same Redis.
//!
//! The timings can be changed too, by flag or environment variable (`--send-timeout-ms` or
//! `SEND_TIMEOUT_MS`, `--ping-ms` or `PING_MS`, `--idle-timeout-ms` or `IDLE_TIMEOUT_MS`): the
//! ladder's checker (`cargo run -p ladder -- verify`) runs this binary as the last rung with the
//! same variables as the steps in `examples/`, and short limits make its tests quick.

use std::time::Duration;

use clap::Parser;
use realtime_kit::backplane::BackplaneArgs;
use realtime_kit::config::{self, ListenArgs, RuntimeArgs};
use realtime_kit::ws::OriginPolicy;

/// A WebSocket broadcast room (`/ws`) and an RFC 6455 echo (`/echo`).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,

    #[command(flatten)]
    backplane: BackplaneArgs,

    /// Also let pages from this origin connect (e.g. `http://localhost:5173`); repeat for more.
    /// Pages of the server's own origin, and clients that send no `Origin`, always may.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,

    /// Most clients in the room at once; the next one gets `503`.
    #[arg(long, default_value_t = echo_ws::Config::default().max_clients)]
    max_clients: usize,

    /// How long one message may take to be written to a client before it is dropped as too
    /// slow, in milliseconds. [default: 10000]
    #[arg(long, env = "SEND_TIMEOUT_MS", value_name = "MS")]
    send_timeout_ms: Option<u64>,

    /// Time between Pings, in milliseconds. [default: 15000]
    #[arg(long, env = "PING_MS", value_name = "MS")]
    ping_ms: Option<u64>,

    /// How long a client may send nothing, not even a Pong, before it is closed, in
    /// milliseconds. [default: 35000]
    #[arg(long, env = "IDLE_TIMEOUT_MS", value_name = "MS")]
    idle_timeout_ms: Option<u64>,
}

// tokio's multi-thread runtime, one worker per core (`--pin-workers` keeps each on a core of its
// own): the room's fan-out has one writer per worker, so it writes on every core. It is correct
// on any runtime (see `Room::pace` in lib.rs), so this is only the usual default.
fn main() -> realtime_kit::Result<()> {
    let args = Args::parse();
    config::init_tracing();
    let runtime = args.runtime.runtime()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> realtime_kit::Result<()> {
    let server = args.listen.server_options()?;
    let listener = config::listen("echo-ws", echo_ws::DEFAULT_PORT, &args.listen).await?;
    let origins = OriginPolicy::allow(&args.allow_origins)?;
    let defaults = echo_ws::Config::default();
    let room = echo_ws::Config {
        origins,
        max_clients: args.max_clients,
        send_timeout: config::millis_or(args.send_timeout_ms, defaults.send_timeout),
        // A zero interval would make tokio's interval panic.
        ping_interval: config::millis_or(args.ping_ms, defaults.ping_interval)
            .max(Duration::from_millis(1)),
        idle_timeout: config::millis_or(args.idle_timeout_ms, defaults.idle_timeout),
        server,
        backplane: args.backplane.backplane()?,
        ..defaults
    };
    echo_ws::run(listener, room, config::shutdown_signal()).await;
    Ok(())
}
