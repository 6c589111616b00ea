//! `cargo run -p stock-ticker [-- --seed 7 --updates-per-second 20 --symbols ACME,HOOL]`:
//! serves the simulated market until Ctrl-C. The demo itself is in `lib.rs`; this file only
//! reads the arguments and binds.

use std::time::Duration;

use clap::Parser;
use realtime_kit::ServerOptions;
use realtime_kit::config::{self, DirectStreamArgs, ListenArgs};
use realtime_kit::ws::OriginPolicy;
use stock_ticker::market::{self, SymbolSpec};

/// A simulated stock market pushed over Server-Sent Events and WebSocket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    listen: ListenArgs,

    #[command(flatten)]
    streams: DirectStreamArgs,

    /// Decides every price: the same seed gives the same market.
    #[arg(long, default_value_t = 2026)]
    seed: u64,

    /// Updates across the whole market per second (each moves one symbol), from 0.1 to 1000.
    #[arg(long, default_value_t = 8.0, value_parser = parse_rate)]
    updates_per_second: f64,

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

#[tokio::main]
async fn main() -> realtime_kit::Result<()> {
    let args = Args::parse();
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
    let origins = OriginPolicy::allow(&args.allow_origin)?;
    let server = ServerOptions {
        direct_streams: args.streams.direct_streams,
        ..args.listen.server_options()?
    };
    config::init_tracing();
    let listener = config::listen("stock-ticker", stock_ticker::DEFAULT_PORT, &args.listen).await?;
    let ticker = stock_ticker::Config {
        symbols,
        seed: args.seed,
        update_interval: Duration::from_secs_f64(1.0 / args.updates_per_second),
        origins,
        server,
        ..stock_ticker::Config::default()
    };
    stock_ticker::run(listener, ticker, config::shutdown_signal()).await;
    Ok(())
}
