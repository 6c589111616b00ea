//! The room as several instances on one Redis, over PUB/SUB (`--redis URL` or `REDIS_URL`):
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! cargo run -p echo-ws -- --port 3001 --redis redis://127.0.0.1:6379 &
//! cargo run -p echo-ws -- --port 3011 --redis redis://127.0.0.1:6379 &
//! ```
//!
//! A message typed into a page on either instance appears on the pages of both.
//!
//! - A client's text message is one `PUBLISH` of its already-encoded JSON ([`publish`]).
//! - Each instance runs one [`relay`]: `SUBSCRIBE` on a connection of its own, and every message
//!   from the channel, its own included, goes to the local fan-out, whose writers send it
//!   exactly as in one process.
//! - PUB/SUB is at-most-once: while an instance's subscription is down, it misses what the others
//!   publish, and nothing gives it back. For a room's live messages that is the right trade (see
//!   the book); the chat's log, which clients resume from, is a Stream instead.
//! - Client numbers stay unique across instances: each instance takes an instance number from
//!   Redis (`INCR`) once, at start-up ([`number_instance`]).
//! - Join and leave notices and the count stay per instance: they are not published.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use realtime_kit::Shutdown;
use realtime_kit::backplane::redis::{self, RedisError};
use realtime_kit::backplane::{Backoff, RedisBackplane};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::{Config, Room};

/// The channel every instance publishes the room's messages on.
pub(crate) const ROOM_CHANNEL: &str = "echo:room";
/// The last instance number handed out.
const INSTANCE_KEY: &str = "echo:instance";

/// Client numbers per instance: the instance number times this, plus the local count. A billion
/// connections per run of an instance; 9 million instance starts before a number passes 2^53,
/// the largest integer JavaScript holds exactly.
pub(crate) const CLIENTS_PER_INSTANCE: u64 = 1_000_000_000;

/// This instance's link to the room in Redis.
pub(crate) struct RedisRoom {
    /// The connections.
    pub(crate) redis: RedisBackplane,
    /// Whether [`relay`] is subscribed right now. While it is not, a local message goes straight
    /// to the local fan-out and is not published: published, it could arrive a second time
    /// through a subscription that comes back meanwhile, and the room promises at most once.
    pub(crate) subscribed: AtomicBool,
}

// ANCHOR: number_instance
/// Takes this instance's number from Redis, waiting with backoff until Redis answers (or
/// `stop` completes: `None`). An `INCR` is atomic, so two instances never get the same
/// number, whatever the clocks say.
///
/// One limit, said plainly: a Redis restarted *empty* counts from 1 again, and an instance
/// started after that can share a number with one started before. Persist Redis
/// (`appendonly yes`), or restart the instances with it.
pub(crate) async fn number_instance(
    redis: &RedisBackplane,
    mut stop: impl Future<Output = ()> + Unpin,
) -> Option<u64> {
    let mut backoff = Backoff::new();
    loop {
        let taken: Result<u64, RedisError> = redis::cmd("INCR")
            .arg(INSTANCE_KEY)
            .query_async(&mut redis.commands())
            .await;
        match taken {
            Ok(number) => return Some(number),
            Err(error) => tracing::warn!(%error, "waiting for Redis to number this instance"),
        }
        tokio::select! {
            () = backoff.wait() => {}
            () = &mut stop => return None,
        }
    }
}
// ANCHOR_END: number_instance

// ANCHOR: publish
/// Sends one client's message to the room: one `PUBLISH` of the encoded JSON, which reaches
/// this instance's sessions too, through [`relay`]. The session awaits it, so one sender's
/// messages are published, and arrive, in the order it sent them.
///
/// A failed `PUBLISH` is logged and the message is lost (at most once): it may have reached
/// Redis before the error, and a local copy could then arrive twice.
pub(crate) async fn publish(room: &RedisRoom, local: &Room, text: Utf8Bytes) {
    if !room.subscribed.load(Ordering::Acquire) {
        // No subscription to bring it back: the local clients get it now, the others never.
        local.deliver(text);
        return;
    }
    let published: Result<u64, RedisError> = redis::cmd("PUBLISH")
        .arg(ROOM_CHANNEL)
        .arg(text.as_str())
        .query_async(&mut room.redis.commands())
        .await;
    if let Err(error) = published {
        tracing::warn!(%error, "cannot publish a room message to Redis; it is lost");
    }
}
// ANCHOR_END: publish

// ANCHOR: relay
/// Subscribes and hands every message of the channel to the local fan-out, until shutdown; after
/// a lost connection, backs off and subscribes again. What was published meanwhile is gone.
pub(crate) async fn relay(room: std::sync::Arc<crate::App>, shutdown: Shutdown) {
    let Some(redis_room) = room.room.redis.as_ref() else {
        return;
    };
    let mut backoff = Backoff::new();
    loop {
        let error = tokio::select! {
            error = relay_once(redis_room, &room.room, &room.config, &mut backoff) => error,
            () = shutdown.requested() => return,
        };
        redis_room.subscribed.store(false, Ordering::Release);
        tracing::warn!(%error, "lost the room's subscription in Redis; resubscribing");
        tokio::select! {
            () = backoff.wait() => {}
            () = shutdown.requested() => return,
        }
    }
}

async fn relay_once(
    redis_room: &RedisRoom,
    local: &Room,
    config: &Config,
    backoff: &mut Backoff,
) -> RedisError {
    let mut subscriber = match redis_room.redis.subscriber().await {
        Ok(subscriber) => subscriber,
        Err(error) => return error,
    };
    if let Err(error) = subscriber.subscribe(ROOM_CHANNEL).await {
        return error;
    }
    // Publishing goes over the shared connection, which reconnects only after a command
    // failed on it: after Redis restarted, the first `PUBLISH` would be lost. A `PING` first
    // (a second one if the first found the old connection broken) makes "subscribed" mean
    // that messages can go both ways.
    let mut commands = redis_room.redis.commands();
    let ping = redis::cmd("PING");
    if ping.query_async::<()>(&mut commands).await.is_err()
        && let Err(error) = ping.query_async::<()>(&mut commands).await
    {
        return error;
    }
    redis_room.subscribed.store(true, Ordering::Release);
    backoff.reset();
    // What an instance publishes is a client message of at most `max_message_size` bytes,
    // encoded as JSON (at most 6 bytes per byte, `\u0000`) with a small envelope. Anything larger
    // was not published by an instance of this room, and is not forwarded.
    let largest = config.room_limits.max_message_size.saturating_mul(6) + 1024;
    let mut messages = subscriber.into_on_message();
    while let Some(message) = messages.next().await {
        match message.get_payload::<String>() {
            Ok(json) if json.len() <= largest => {
                local.deliver(json.into());
                // The subscription is one producer for the whole room: it waits, like a local
                // sender, while a writer has more than half a backlog to start on, so it does not
                // pile messages up faster than they go out. Redis buffers for it meanwhile, up to
                // its `client-output-buffer-limit pubsub`, and then cuts it off: at most once,
                // again.
                local.pace(config).await;
            }
            Ok(_) => tracing::warn!("skipping a published room message over the size limit"),
            Err(error) => {
                tracing::warn!(%error, "skipping a published room message that is not text")
            }
        }
    }
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the subscription ended",
    ))
}
// ANCHOR_END: relay
