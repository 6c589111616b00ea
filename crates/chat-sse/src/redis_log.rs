//! The chat's log in Redis, shared by every instance started with the same `--redis URL`:
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! cargo run -p chat-sse -- --port 3002 --redis redis://127.0.0.1:6379 &
//! cargo run -p chat-sse -- --port 3003 --redis redis://127.0.0.1:6379 &
//! ```
//!
//! A message posted to either instance appears on the streams of both, with the same id.
//!
//! - The log is one Redis Stream. A `POST` runs [`APPEND`]: the next id and the entry that
//!   carries it, in one step, so the ids stay the dense integers clients already use
//!   (`Last-Event-ID`, `?after=`) and the log's order is the id order.
//! - Each instance runs one [`tail`]: `XREAD BLOCK` from its cursor, on a connection of its own,
//!   feeding the in-memory log that replay already reads. Streams never read Redis themselves.
//! - Presence is each instance's count in Redis with an expiry ([`PRESENCE`]): the counts add
//!   up, and a crashed instance's share disappears after [`PRESENCE_TTL`].

use std::sync::Arc;
use std::time::Duration;

use realtime_kit::Shutdown;
use realtime_kit::backplane::redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use realtime_kit::backplane::redis::{self, RedisError, Script};
use realtime_kit::backplane::{Backoff, RedisBackplane};

use crate::{ChatRoom, Lost, Message, StoredMessage, ValidMessage};

/// The Stream that is the log.
const LOG_KEY: &str = "chat:log";
/// The last id allocated.
const NEXT_ID_KEY: &str = "chat:last-id";
/// The first id after the counter was (re)created: messages before it in this run of Redis
/// were never there, those after it and before the oldest entry were trimmed.
const EPOCH_KEY: &str = "chat:epoch";
/// When each instance's presence share expires (a sorted set, score in milliseconds).
const PRESENCE_EXPIRY_KEY: &str = "chat:presence:expiry";
/// Each instance's count of open streams.
const PRESENCE_COUNT_KEY: &str = "chat:presence:count";

/// How long one `XREAD BLOCK` waits for new entries. Short enough that a tail notices a dead
/// connection soon; the connection's response timeout is this plus the command timeout.
pub(crate) const TAIL_BLOCK: Duration = Duration::from_secs(5);
/// The most entries one read returns, so a tail that is far behind catches up in bounded steps
/// (and the lock on the local log is held for a bounded time).
const TAIL_BATCH: usize = 256;

/// How often an instance refreshes its presence share, and so how soon it sees other
/// instances' counts change.
pub(crate) const PRESENCE_BEAT: Duration = Duration::from_millis(500);
/// How long a share lives without a refresh: after this, a crashed instance no longer counts.
pub(crate) const PRESENCE_TTL: Duration = Duration::from_secs(3);

// ANCHOR: append
/// Allocates the next id and appends the message under it, in one script: Redis runs a script
/// alone, so no other poster can take an id or append between the two. (An `INCR` and an
/// `XADD` in two round trips would let two posters append out of order, and the `XADD` of the
/// lower id would then fail.)
///
/// KEYS: the log, the counter, the epoch. ARGV: the newest id the posting instance has seen,
/// the log's length, user, text, time. Returns the id, as a string.
pub(crate) const APPEND: &str = r"
local last = redis.call('GET', KEYS[2])
local epoch = false
if last then
  last = tonumber(last)
else
  -- No counter: a new Redis, or one that restarted empty. Start above every id that can
  -- exist: the clock in microseconds (as a single process does), what is left in the log,
  -- and (below) what the posting instance has seen.
  epoch = true
  local now = redis.call('TIME')
  last = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
  if newest then
    last = math.max(last, tonumber(string.match(newest[1], '^%d+')))
  end
end
last = math.max(last, tonumber(ARGV[1]))
-- '%d', not tostring: Lua 5.1 numbers are doubles, and tostring writes 1.7e+15.
local id = string.format('%d', last + 1)
local fields = {'user', ARGV[3], 'text', ARGV[4], 'time', ARGV[5]}
if epoch then
  table.insert(fields, 'epoch')
  table.insert(fields, '1')
end
-- The entry first: if it fails, nothing was written. Exact MAXLEN, no '~': the log is as long
-- as each instance's memory of it, no longer.
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], id .. '-0', unpack(fields))
redis.call('SET', KEYS[2], id)
if epoch then
  redis.call('SET', KEYS[3], id)
end
return id
";
// ANCHOR_END: append

// ANCHOR: presence_script
/// Sets this instance's count with a fresh expiry, drops expired shares, and returns the sum.
/// KEYS: the expiry set, the counts. ARGV: instance, count, time to live in milliseconds.
/// The expiry is on Redis's clock, so instances whose clocks differ still agree.
pub(crate) const PRESENCE: &str = r"
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)) do
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local total = 0
for _, count in ipairs(redis.call('HVALS', KEYS[2])) do
  total = total + tonumber(count)
end
return total
";
// ANCHOR_END: presence_script

/// This instance's handle on the shared log.
pub(crate) struct SharedLog {
    /// The connections.
    redis: RedisBackplane,
    /// [`APPEND`], sent by its SHA after the first use.
    append: Script,
    /// [`PRESENCE`].
    presence: Script,
    /// The Stream's `MAXLEN`: the same as the local log's, so what Redis keeps and what a
    /// reconnecting client can be sent agree.
    capacity: usize,
    /// This instance's name in the presence keys: unique per process and start.
    instance: String,
}

impl SharedLog {
    pub(crate) fn new(redis: RedisBackplane, capacity: usize) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        Self {
            redis,
            append: Script::new(APPEND),
            presence: Script::new(PRESENCE),
            capacity,
            instance: format!("{}-{started}", std::process::id()),
        }
    }

    /// Stores a message; the `201` answer. It reaches the streams (this instance's too) through
    /// the tails.
    pub(crate) async fn append(
        &self,
        valid: ValidMessage,
        time: String,
        newest_seen: u64,
    ) -> Result<Message, RedisError> {
        let id: String = self
            .append
            .key(LOG_KEY)
            .key(NEXT_ID_KEY)
            .key(EPOCH_KEY)
            .arg(newest_seen)
            .arg(self.capacity)
            .arg(&valid.user)
            .arg(&valid.text)
            .arg(&time)
            .invoke_async(&mut self.redis.commands())
            .await?;
        let id = id.parse().map_err(|_| {
            RedisError::from((
                redis::ErrorKind::Parse,
                "the id script returned a non-number",
            ))
        })?;
        Ok(Message {
            id,
            user: valid.user,
            text: valid.text,
            time,
        })
    }
}

// ANCHOR: tail
/// Follows the shared log into `room` until shutdown: on start, the newest `capacity` entries;
/// then every entry after the cursor. A failure (Redis down, a timeout) is logged, and after a
/// backoff the tail reconnects and goes on from its cursor, never from `$` (which means "only
/// what comes after this read", and would skip what was appended between two reads).
pub(crate) async fn tail(room: &ChatRoom, shared: &SharedLog, shutdown: &Shutdown) {
    let mut backoff = Backoff::new();
    let mut loaded = false;
    loop {
        let error = tokio::select! {
            error = follow(room, shared, &mut loaded, &mut backoff) => error,
            () = shutdown.requested() => return,
        };
        tracing::warn!(%error, cursor = room.newest(), "the log's tail lost Redis; reconnecting");
        tokio::select! {
            () = backoff.wait() => {}
            () = shutdown.requested() => return,
        }
    }
}

/// One connection's worth of tailing; returns the error that ended it.
async fn follow(
    room: &ChatRoom,
    shared: &SharedLog,
    loaded: &mut bool,
    backoff: &mut Backoff,
) -> RedisError {
    let mut connection = match shared.redis.blocking(TAIL_BLOCK).await {
        Ok(connection) => connection,
        Err(error) => return error,
    };
    if !*loaded {
        match load_recent(&mut connection, shared.capacity).await {
            Ok(recent) => room.deliver(recent),
            Err(error) => return error,
        }
        *loaded = true;
        tracing::info!(newest = room.newest(), "following the shared log in Redis");
    }
    backoff.reset();
    loop {
        let cursor = format!("{}-0", room.newest());
        let read: Result<Option<StreamReadReply>, RedisError> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(TAIL_BATCH)
            .arg("BLOCK")
            .arg(TAIL_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(LOG_KEY)
            .arg(&cursor)
            .query_async(&mut connection)
            .await;
        let entries = match read {
            Ok(Some(reply)) => reply.keys.into_iter().flat_map(|key| key.ids),
            // The block ran out with nothing new: read again.
            Ok(None) => continue,
            Err(error) => return error,
        };
        let mut newest = room.newest();
        let mut read = Vec::with_capacity(TAIL_BATCH);
        for entry in entries {
            let Some((stored, starts_epoch)) = parse_entry(&entry) else {
                continue;
            };
            let id = stored.message.id;
            // (An instance that has seen nothing yet, `newest == 0`, has missed nothing.)
            let lost_before = if id == newest + 1 || newest == 0 {
                Lost::NONE
            } else if starts_epoch {
                // Redis restarted empty: whatever was appended after our cursor is gone, and
                // nobody can say how much that was.
                Lost::Unknown
            } else {
                // Trimmed before this instance read it (it was more than `capacity` behind),
                // or an entry that was not a chat message.
                Lost::Counted(id - newest - 1)
            };
            newest = id;
            read.push((stored, lost_before));
        }
        room.deliver(read);
    }
}

/// The newest `capacity` entries, oldest first, with what is lost before the oldest.
async fn load_recent(
    connection: &mut redis::aio::MultiplexedConnection,
    capacity: usize,
) -> Result<Vec<(Arc<StoredMessage>, Lost)>, RedisError> {
    let (recent, epoch): (StreamRangeReply, Option<u64>) = redis::pipe()
        .cmd("XREVRANGE")
        .arg(LOG_KEY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(capacity)
        .cmd("GET")
        .arg(EPOCH_KEY)
        .query_async(connection)
        .await?;
    let mut loaded = Vec::with_capacity(recent.ids.len());
    let mut previous: Option<u64> = None;
    for entry in recent.ids.iter().rev() {
        let Some((stored, _)) = parse_entry(entry) else {
            continue;
        };
        let id = stored.message.id;
        let lost_before = match previous {
            // Before the oldest: what this run of Redis trimmed (none before its epoch).
            None => Lost::Counted(epoch.map_or(0, |epoch| id.saturating_sub(epoch))),
            Some(previous) => Lost::Counted(id - previous - 1),
        };
        previous = Some(id);
        loaded.push((stored, lost_before));
    }
    Ok(loaded)
}
// ANCHOR_END: tail

/// A chat message from a Stream entry (`<id>-0`, user, text, time), and whether it is the
/// first of a new epoch. Anything else is skipped with a warning: the id it took counts as lost.
fn parse_entry(entry: &StreamId) -> Option<(Arc<StoredMessage>, bool)> {
    let id = entry
        .id
        .strip_suffix("-0")
        .and_then(|id| id.parse::<u64>().ok());
    let fields = (
        entry.get::<String>("user"),
        entry.get::<String>("text"),
        entry.get::<String>("time"),
    );
    let (Some(id), (Some(user), Some(text), Some(time))) = (id, fields) else {
        tracing::warn!(
            id = entry.id,
            "skipping a log entry that is not a chat message"
        );
        return None;
    };
    let message = Message {
        id,
        user,
        text,
        time,
    };
    Some((
        Arc::new(StoredMessage::new(message)),
        entry.contains_key("epoch"),
    ))
}

// ANCHOR: share_presence
/// Keeps this instance's presence share in Redis and shows the sum on every stream: when the
/// local count changes, and every [`PRESENCE_BEAT`] (to see the others' changes, and to keep
/// the share from expiring). While Redis is down the last sum stays shown.
pub(crate) async fn share_presence(room: &ChatRoom, shared: &SharedLog, shutdown: &Shutdown) {
    let mut beat = tokio::time::interval(PRESENCE_BEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            () = room.online.changed.notified() => {}
            () = shutdown.requested() => break,
        }
        let local = room.online.streams.get();
        let total: Result<usize, RedisError> = shared
            .presence
            .key(PRESENCE_EXPIRY_KEY)
            .key(PRESENCE_COUNT_KEY)
            .arg(&shared.instance)
            .arg(local)
            .arg(PRESENCE_TTL.as_millis() as u64)
            .invoke_async(&mut shared.redis.commands())
            .await;
        match total {
            Ok(total) => room.online.show(|| total),
            Err(error) => tracing::debug!(%error, "cannot share presence"),
        }
    }
    // Leaving on purpose: take this share out now rather than after the expiry.
    let _: Result<(), RedisError> = redis::pipe()
        .cmd("ZREM")
        .arg(PRESENCE_EXPIRY_KEY)
        .arg(&shared.instance)
        .cmd("HDEL")
        .arg(PRESENCE_COUNT_KEY)
        .arg(&shared.instance)
        .query_async(&mut shared.redis.commands())
        .await;
}
// ANCHOR_END: share_presence
