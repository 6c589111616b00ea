//! Measures what the Redis backplane adds: the time from a chat `POST` until the LAST of N
//! streams has the message, with the POST sent to one instance and the streams on another.
//! Pointed at one instance for both, it measures a single process.
//!
//! Run with (release, on an otherwise quiet machine):
//!
//! ```text
//! cargo run --release --example chat_fanout_across -- \
//!     --post http://127.0.0.1:3102 --streams http://127.0.0.1:3103 --clients 1000 --rounds 200
//! ```
//!
//! It prints the p50, p99 and max over the rounds, in milliseconds. Everything is bounded:
//! at most 5,000 clients and 10,000 rounds, 10 s per round, and the posts go one at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use realtime_kit::client::{self, EventStream};
use tokio::sync::{Barrier, mpsc};

/// The longest one round may take before the run is called failed.
const ROUND_LIMIT: Duration = Duration::from_secs(10);

struct Args {
    post: String,
    streams: String,
    clients: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        post: "http://127.0.0.1:3002".into(),
        streams: "http://127.0.0.1:3002".into(),
        clients: 1000,
        rounds: 200,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--post" => args.post = value,
            "--streams" => args.streams = value,
            "--clients" => args.clients = value.parse().map_err(|_| "--clients: a number")?,
            "--rounds" => args.rounds = value.parse().map_err(|_| "--rounds: a number")?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(1..=5000).contains(&args.clients) || !(1..=10_000).contains(&args.rounds) {
        return Err("--clients 1..=5000, --rounds 1..=10000".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> realtime_kit::Result<()> {
    let args = parse_args()?;
    // Every stream tells this channel, per round, when it had the round's message. Bounded:
    // one slot per client, and the rounds go one at a time.
    let (arrived, mut arrivals) = mpsc::channel::<(usize, Instant)>(args.clients);
    let ready = Arc::new(Barrier::new(args.clients + 1));
    let marker = format!("fanout-{}", std::process::id());
    for _ in 0..args.clients {
        let url = format!("{}/events", args.streams);
        let (arrived, ready, marker) = (arrived.clone(), ready.clone(), marker.clone());
        tokio::spawn(async move {
            let mut stream = match EventStream::connect(&url, &[]).await {
                Ok(stream) if stream.status() == 200 => stream,
                _ => {
                    eprintln!("a stream could not connect");
                    std::process::exit(1);
                }
            };
            ready.wait().await;
            while let Ok(Some(event)) = stream.next_event().await {
                if event.event != "message" {
                    continue;
                }
                let Ok(message) = serde_json::from_str::<serde_json::Value>(&event.data) else {
                    continue;
                };
                if let Some(round) = message["text"]
                    .as_str()
                    .and_then(|text| text.strip_prefix(&marker))
                    .and_then(|round| round.trim_start_matches(' ').parse().ok())
                    && arrived.send((round, Instant::now())).await.is_err()
                {
                    return;
                }
            }
        });
    }
    ready.wait().await;
    let post_url = format!("{}/messages", args.post);
    let mut latencies = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds {
        let body = serde_json::json!({ "user": "loadgen", "text": format!("{marker} {round}") });
        let sent = Instant::now();
        let response = client::fetch(
            Method::POST,
            &post_url,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await?;
        if response.status != 201 {
            return Err(format!("POST answered {}: {}", response.status, response.text()).into());
        }
        let mut seen = 0;
        let mut last = sent;
        while seen < args.clients {
            let (for_round, at) = tokio::time::timeout(ROUND_LIMIT, arrivals.recv())
                .await
                .map_err(|_| format!("round {round}: not every stream had it in time"))?
                .ok_or("every stream ended")?;
            if for_round == round {
                seen += 1;
                last = last.max(at);
            }
        }
        latencies.push(last - sent);
    }
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    println!(
        "post {} -> last of {} streams on {}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} rounds",
        args.post,
        args.clients,
        args.streams,
        at(0.50),
        at(0.99),
        at(1.0),
        args.rounds
    );
    Ok(())
}
