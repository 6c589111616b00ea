//! `cargo run -p chat-sse [-- --port 3002 --allow-origin http://localhost:8080]`: serves the chat
//! until Ctrl-C. Add `--redis redis://127.0.0.1:6379` (or set `REDIS_URL`) to share the room
//! with every other instance given the same Redis. The demo itself is in `lib.rs`; this file only reads the arguments and binds.
//!
//! The timings can be changed too, by flag or environment variable (`--max-lag` or `MAX_LAG`,
//! `--keep-alive-ms` or `KEEP_ALIVE_MS`, `--stall-timeout-ms` or `STALL_TIMEOUT_MS`, ...): the
//! ladder's checker (`cargo run -p ladder -- verify`) runs this binary as the last rung with the
//! same variables as the steps in `examples/`, and short limits make its tests quick.

use std::time::Duration;

use clap::Parser;
use realtime_kit::ServerOptions;
use realtime_kit::backplane::BackplaneArgs;
use realtime_kit::config::{self, DirectStreamArgs, ListenArgs, RuntimeArgs};
use realtime_kit::request::Cors;

/// A chat room over Server-Sent Events: POST a message, every open stream receives it.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,

    #[command(flatten)]
    streams: DirectStreamArgs,

    #[command(flatten)]
    backplane: BackplaneArgs,

    /// Messages kept in memory for reconnecting clients and `GET /messages`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    history: u32,

    /// Messages a new client receives first (at most --history).
    #[arg(long, default_value_t = 50)]
    backlog: u32,

    /// Events a stream may fall behind before it is closed (the browser then resumes from the log).
    #[arg(long, env = "MAX_LAG", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_lag: u32,

    /// Lets pages from this origin post and listen (CORS), e.g. http://localhost:8080.
    /// Repeat it for several origins; without it, only the server's own page may.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,

    /// How long a browser waits before reconnecting (sent as `retry:`), in milliseconds.
    #[arg(long, default_value_t = 3000)]
    retry_ms: u64,

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
    let cors = Cors::allow(&args.allow_origins)?;
    let server = ServerOptions {
        direct_streams: args.streams.direct_streams,
        ..args.listen.server_options()?
    };
    let listener = config::listen("chat-sse", chat_sse::DEFAULT_PORT, &args.listen).await?;
    let keep_alive = args.keep_alive_ms.map(Duration::from_millis);
    let chat = chat_sse::Config {
        history: args.history as usize,
        backlog: args.backlog as usize,
        max_lag: args.max_lag as usize,
        retry: Duration::from_millis(args.retry_ms),
        keep_alive: keep_alive.unwrap_or(chat_sse::Config::default().keep_alive),
        cors,
        server,
        backplane: args.backplane.backplane()?,
    };
    chat_sse::run(listener, chat, config::shutdown_signal()).await;
    Ok(())
}
