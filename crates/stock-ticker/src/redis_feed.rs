//! The ticker as several instances on one Redis: exactly one instance generates the market
//! (`--role market`), every other one serves it (`--role serve`, the default with `--redis`):
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! cargo run -p stock-ticker -- --port 3003 --redis redis://127.0.0.1:6379 --role market &
//! cargo run -p stock-ticker -- --port 3013 --redis redis://127.0.0.1:6379 &
//! ```
//!
//! Quotes go over PUB/SUB, which is at-most-once: a serving instance that is disconnected
//! misses quotes. For a ticker that is the right trade, because a missed quote is an old price
//! that the next quote of that symbol replaces; what an instance needs after a gap is the
//! current board, and the market keeps it in a Redis hash for exactly that. So a serving
//! instance subscribes first and then reads the board: a quote published in between arrives
//! both ways, and the newer one (by market run and sequence number) wins. Every serving
//! instance conflates per client as a single process does: clients read the local board.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use realtime_kit::Shutdown;
use realtime_kit::backplane::redis::{self, RedisError};
use realtime_kit::backplane::{Backoff, RedisBackplane};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::market::Quote;
use crate::{Board, WireQuote};

/// The channel every quote is published on.
const QUOTES_CHANNEL: &str = "ticker:quotes";
/// The latest quote of every symbol, by symbol: the snapshot for an instance that (re)joins.
const BOARD_KEY: &str = "ticker:board";

/// A quote as it travels through Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    /// When the market instance started (milliseconds since 1970): a restarted market counts
    /// its sequence numbers from 1 again, and its quotes must still replace the old run's.
    run: u64,
    /// The quote itself, as clients get it.
    quote: Quote,
}

// ANCHOR: publish
/// The market instance's side: whenever the board changes, every slot not yet published goes
/// to the hash and the channel, in one round trip. It reads the board like a client does, so a
/// slow Redis makes it skip intermediate quotes (conflation), never stall the market.
pub(crate) async fn publish_market(
    redis: RedisBackplane,
    mut board: watch::Receiver<Board>,
    shutdown: Shutdown,
) {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    // `None`: never published, so the opening board goes out with the first change.
    let mut published: Vec<Option<u64>> = vec![None; board.borrow().len()];
    let mut connection = redis.commands();
    loop {
        tokio::select! {
            changed = board.changed() => if changed.is_err() { return },
            () = shutdown.requested() => return,
        }
        let fresh: Vec<(usize, Arc<WireQuote>)> = board
            .borrow_and_update()
            .iter()
            .enumerate()
            .filter(|(index, wire)| published[*index] != Some(wire.quote.seq))
            .map(|(index, wire)| (index, wire.clone()))
            .collect();
        let mut pipe = redis::pipe();
        for (_, wire) in &fresh {
            let message = Published {
                run,
                quote: wire.quote.clone(),
            };
            let json = serde_json::to_string(&message).expect("a quote always serialises");
            pipe.cmd("HSET")
                .arg(BOARD_KEY)
                .arg(&wire.quote.symbol)
                .arg(&json)
                .ignore();
            pipe.cmd("PUBLISH").arg(QUOTES_CHANNEL).arg(&json).ignore();
        }
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => {
                for (index, wire) in fresh {
                    published[index] = Some(wire.quote.seq);
                }
            }
            // Not marked as published: the next change sends these again, newer if they moved.
            Err(error) => tracing::warn!(%error, "cannot publish quotes to Redis"),
        }
    }
}
// ANCHOR_END: publish

// ANCHOR: follow
/// A serving instance's side: subscribe, read the board, then apply every quote, until
/// shutdown; after a lost connection, back off and do it all again.
pub(crate) async fn follow_market(
    redis: RedisBackplane,
    symbols: Vec<String>,
    publish: watch::Sender<Board>,
    shutdown: Shutdown,
) {
    let mut board = FollowedBoard {
        symbols,
        newest: Vec::new(),
        publish,
    };
    board.newest = vec![(0, 0); board.symbols.len()];
    let mut backoff = Backoff::new();
    loop {
        let error = tokio::select! {
            error = follow_once(&redis, &mut board, &mut backoff) => error,
            () = shutdown.requested() => return,
        };
        tracing::warn!(%error, "lost the market feed in Redis; resubscribing");
        tokio::select! {
            () = backoff.wait() => {}
            () = shutdown.requested() => return,
        }
    }
}

async fn follow_once(
    redis: &RedisBackplane,
    board: &mut FollowedBoard,
    backoff: &mut Backoff,
) -> RedisError {
    let mut subscriber = match redis.subscriber().await {
        Ok(subscriber) => subscriber,
        Err(error) => return error,
    };
    if let Err(error) = subscriber.subscribe(QUOTES_CHANNEL).await {
        return error;
    }
    // Subscribed before reading the board: nothing published in between is missed.
    let snapshot: Result<HashMap<String, String>, RedisError> = redis::cmd("HGETALL")
        .arg(BOARD_KEY)
        .query_async(&mut redis.commands())
        .await;
    match snapshot {
        Ok(snapshot) => snapshot.values().for_each(|json| board.apply(json)),
        Err(error) => return error,
    }
    backoff.reset();
    let mut messages = subscriber.into_on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(json) => board.apply(&json),
            Err(error) => tracing::warn!(%error, "skipping a quote that is not text"),
        }
    }
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the subscription ended",
    ))
}

/// The local board of a serving instance, and what it has applied.
struct FollowedBoard {
    /// The listed symbols, in board order.
    symbols: Vec<String>,
    /// Per symbol, the (market run, sequence number) of the quote on the board.
    newest: Vec<(u64, u64)>,
    /// Where the clients read the board.
    publish: watch::Sender<Board>,
}

impl FollowedBoard {
    /// Puts a published quote on the board if it is newer than what is there. A quote of a
    /// symbol this instance does not list is ignored: instances must list the same symbols.
    fn apply(&mut self, json: &str) {
        let Ok(Published { run, quote }) = serde_json::from_str::<Published>(json) else {
            tracing::warn!("skipping a published quote that does not parse");
            return;
        };
        let Some(index) = self.symbols.iter().position(|s| *s == quote.symbol) else {
            return;
        };
        let stamp = (run, quote.seq);
        if stamp <= self.newest[index] {
            return;
        }
        self.newest[index] = stamp;
        let wire = Arc::new(WireQuote::new(quote));
        self.publish.send_modify(|board| board[index] = wire);
    }
}
// ANCHOR_END: follow
