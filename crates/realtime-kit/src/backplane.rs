//! Where a demo's events travel between its clients: inside this one process (the default), or
//! through Redis, so that N instances behind a load balancer serve one room (`--redis URL` or
//! `REDIS_URL`, e.g. `redis://127.0.0.1:6379` or `redis+unix:///run/redis.sock`).
//!
//! ```text
//! redis-server --port 6379 &
//! cargo run -p chat-sse -- --port 3002 --redis redis://127.0.0.1:6379
//! cargo run -p chat-sse -- --port 3003 --redis redis://127.0.0.1:6379
//! ```
//!
//! This module is only the seam and the connections; what goes through them (the chat's log and
//! its id script, the ticker's quotes) stays in each demo, where a reader looks for it. The
//! rules it encodes, each one a way a backplane loses or stalls messages:
//!
//! - commands share one multiplexed connection with a short response timeout, so a Redis that
//!   is down turns into a quick `503` ([`unavailable`]), not a request that hangs;
//! - a blocking read (`XREAD BLOCK`) gets a connection of its own ([`RedisBackplane::blocking`]):
//!   on the shared one it would stall every command queued behind it, and its response timeout
//!   must be longer than the block, or every quiet period would look like a failure;
//! - a reader that lost its connection waits a growing [`Backoff`] before trying again, so a
//!   hundred instances do not hammer a Redis that is starting up.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError};

use crate::ResponseBody;
use crate::respond;

/// The redis crate, re-exported so a demo's commands and scripts use the same version as the
/// kit's connections.
pub use redis;

/// How long a command may take before it counts as failed. Redis answers in well under a
/// millisecond; seconds mean it is gone or overloaded, and a client should hear so.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long connecting to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What `Retry-After` says when Redis is unavailable: about the time a restart takes.
pub const RETRY_AFTER_SECS: u64 = 1;

/// `--redis`, for the demos that can run as several instances. Flatten it beside
/// [`ListenArgs`](crate::config::ListenArgs).
#[derive(Debug, Clone, clap::Args)]
pub struct BackplaneArgs {
    /// Share the room with other instances through this Redis (redis://host:port or
    /// redis+unix:///path). Without it, the room lives in this process only.
    #[arg(long = "redis", env = "REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,
}

impl BackplaneArgs {
    /// The backplane these arguments ask for. Only the URL is checked here: Redis need not be
    /// up yet, the demo connects (and reconnects) when it needs to.
    pub fn backplane(&self) -> Result<Backplane, RedisError> {
        match &self.redis {
            None => Ok(Backplane::InProcess),
            Some(url) => Ok(Backplane::Redis(RedisBackplane::open(url)?)),
        }
    }
}

// ANCHOR: seam
/// Where a demo's hub sends what it fans out.
#[derive(Clone, Default)]
pub enum Backplane {
    /// Everything stays in this process: one instance, nothing else to run.
    #[default]
    InProcess,
    /// Through Redis, shared by every instance given the same URL.
    Redis(RedisBackplane),
}
// ANCHOR_END: seam

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess => f.write_str("InProcess"),
            Self::Redis(redis) => write!(f, "Redis({:?})", redis.client.get_connection_info()),
        }
    }
}

/// A Redis server that several instances share, and this instance's connections to it.
#[derive(Clone)]
pub struct RedisBackplane {
    /// Opens the connections of their own (blocking reads, subscriptions).
    client: Client,
    /// The shared, multiplexed connection for short commands; it reconnects by itself.
    commands: ConnectionManager,
}

impl RedisBackplane {
    /// Prepares the connections to `url` without connecting: an instance may start before its
    /// Redis does, and answers `503` to what needs Redis until it is reachable.
    pub fn open(url: &str) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // One quick retry, then fail: the caller answers 503 and the client retries, which
            // is better than holding its request while Redis is down.
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self { client, commands })
    }

    /// The shared connection for short commands and scripts. Cloning it is cheap; every clone
    /// uses the same socket.
    pub fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// A connection of its own for a blocking read of up to `block`: its response timeout is
    /// `block` plus [`COMMAND_TIMEOUT`], so a quiet `XREAD BLOCK` is not taken for a dead server.
    pub async fn blocking(&self, block: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + COMMAND_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A connection for `SUBSCRIBE`, which turns a connection into a one-way feed.
    pub async fn subscriber(&self) -> Result<redis::aio::PubSub, RedisError> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
    }
}

/// `503 Service Unavailable` with `Retry-After` and a JSON error: what a request that needs Redis
/// gets while Redis cannot be reached. Nothing was stored, so retrying is safe.
pub fn unavailable(error: &RedisError) -> Response<ResponseBody> {
    tracing::warn!(%error, "Redis is unavailable");
    let mut response = respond::error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the message store is unavailable ({error}); nothing was stored, try again in {RETRY_AFTER_SECS} s"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

/// The wait between two attempts to reconnect: 100 ms, doubling up to 5 s, back to 100 ms after
/// a success.
#[derive(Debug)]
pub struct Backoff {
    /// The next wait.
    next: Duration,
}

impl Backoff {
    /// The first wait.
    const FIRST: Duration = Duration::from_millis(100);
    /// The longest wait: what an outage adds, at most, before an instance notices Redis is back.
    const LONGEST: Duration = Duration::from_secs(5);

    /// A backoff at its first step.
    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// Waits the current step and doubles the next one.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::LONGEST);
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
