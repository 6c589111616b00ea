//! `cargo run -p stock-ticker [-- --seed 7 --updates-per-second 20 --symbols ACME,HOOL]`:
//! serves the simulated market until Ctrl-C. With `--redis URL`, one instance runs the market
//! (`--role market`) and any number of others serve it (`--role serve`, the default with Redis). The demo itself is in `lib.rs`; this file only
//! reads the arguments and binds.
//!
//! The market and the timings can be set by environment variable too (`SEED`,
//! `UPDATES_PER_SECOND`, `KEEP_ALIVE_MS`, `PING_MS`, `IDLE_TIMEOUT_MS`, `STALL_TIMEOUT_MS`, ...): the
//! ladder's checker (`cargo run -p ladder -- verify`) runs this binary as the last rung with the
//! same variables as the steps in `examples/`, and short limits make its tests quick.

use std::time::Duration;

use clap::Parser;
use realtime_kit::ServerOptions;
use realtime_kit::backplane::BackplaneArgs;
use realtime_kit::config::{self, DirectStreamArgs, ListenArgs, RuntimeArgs};
use realtime_kit::ws::OriginPolicy;
use stock_ticker::market::{self, SymbolSpec};

/// A simulated stock market pushed over Server-Sent Events and WebSocket.
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

    /// With --redis: `market` runs the market and publishes it (start exactly one), `serve`
    /// serves what the market instance publishes. [default with --redis: serve]
    #[arg(long, value_parser = ["market", "serve"])]
    role: Option<String>,

    /// Decides every price: the same seed gives the same market.
    #[arg(long, env = "SEED", default_value_t = 2026)]
    seed: u64,

    /// Updates across the whole market per second (each moves one symbol), from 0.1 to 1000.
    #[arg(long, env = "UPDATES_PER_SECOND", default_value_t = 8.0, value_parser = parse_rate)]
    updates_per_second: f64,

    /// How long an event stream may be silent before a keep-alive comment, in milliseconds.
    /// [default: 15000]
    #[arg(long, env = "KEEP_ALIVE_MS", value_name = "MS")]
    keep_alive_ms: Option<u64>,

    /// Time between Pings to a WebSocket client, in milliseconds. [default: 15000]
    #[arg(long, env = "PING_MS", value_name = "MS")]
    ping_ms: Option<u64>,

    /// How long a WebSocket client may send nothing at all (not even a Pong) before it is
    /// closed, in milliseconds. [default: 35000]
    #[arg(long, env = "IDLE_TIMEOUT_MS", value_name = "MS")]
    idle_timeout_ms: Option<u64>,

    /// The symbols to list, comma-separated (1 to 8 capitals or digits each), instead of the
    /// eight built-in companies. Each opens at 100.00.
    #[arg(long, value_delimiter = ',', value_parser = parse_symbol)]
    symbols: Vec<String>,

    /// Also let pages from this origin open the WebSocket (e.g. http://localhost:8080).
    /// Repeat for several.
    #[arg(long)]
    allow_origin: Vec<String>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.1..=1000.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{text:?} is not a number from 0.1 to 1000")),
    }
}

fn parse_symbol(text: &str) -> Result<String, String> {
    if market::is_valid_symbol(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not 1 to 8 capital letters or digits"))
    }
}

fn main() -> realtime_kit::Result<()> {
    let args = Args::parse();
    config::init_tracing();
    let runtime = args.runtime.runtime()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> realtime_kit::Result<()> {
    let mut symbols: Vec<SymbolSpec> = Vec::new();
    for name in &args.symbols {
        if symbols.iter().any(|spec| &spec.symbol == name) {
            return Err(format!("--symbols lists {name} twice").into());
        }
        symbols.push(SymbolSpec::plain(name));
    }
    if symbols.is_empty() {
        symbols = market::default_symbols();
    }
    let backplane = args.backplane.backplane()?;
    let role = match (args.role.as_deref(), args.backplane.redis.is_some()) {
        (Some("market"), true) => stock_ticker::Role::Market,
        (Some(_) | None, true) => stock_ticker::Role::Serve,
        (None, false) => stock_ticker::Role::Market,
        (Some(_), false) => {
            return Err(
                "--role needs --redis: alone, one process runs the market and serves it".into(),
            );
        }
    };
    let origins = OriginPolicy::allow(&args.allow_origin)?;
    let server = ServerOptions {
        direct_streams: args.streams.direct_streams,
        ..args.listen.server_options()?
    };
    let listener = config::listen("stock-ticker", stock_ticker::DEFAULT_PORT, &args.listen).await?;
    let defaults = stock_ticker::Config::default();
    let ticker = stock_ticker::Config {
        symbols,
        seed: args.seed,
        update_interval: Duration::from_secs_f64(1.0 / args.updates_per_second),
        keep_alive: config::millis_or(args.keep_alive_ms, defaults.keep_alive),
        // tokio's interval panics on a zero period.
        ping_interval: config::millis_or(args.ping_ms, defaults.ping_interval)
            .max(Duration::from_millis(1)),
        idle_timeout: config::millis_or(args.idle_timeout_ms, defaults.idle_timeout),
        origins,
        server,
        backplane,
        role,
        ..defaults
    };
    stock_ticker::run(listener, ticker, config::shutdown_signal()).await;
    Ok(())
}
