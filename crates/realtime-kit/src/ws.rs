//! WebSocket (RFC 6455) on hyper: validating the opening handshake, checking `Origin`, the limits
//! every socket gets, and taking the connection over after `101 Switching Protocols`.
//!
//! A demo calls [`upgrade`] from its handler and gets back the response to return (the `101`, or
//! an error with a JSON body); the session it passes runs on the upgraded connection as a task
//! that [`Shutdown`] tracks, because hyper no longer sees that connection once it is upgraded.
//!
//! ```text
//! client                                   server
//! GET /ws HTTP/1.1                 ──▶      check Origin, then the handshake headers
//! Upgrade: websocket                        (tungstenite's create_response)
//! Connection: Upgrade
//! Sec-WebSocket-Version: 13
//! Sec-WebSocket-Key: <16 random bytes, base64>
//!                                  ◀──      HTTP/1.1 101 Switching Protocols
//!                                           Sec-WebSocket-Accept: base64(SHA-1(key + GUID))
//! frames both ways                 ◀─▶      the session (a task of its own)
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::fanout::{Outbox, SharedIo, SharedWebSocket};
use crate::request::{InvalidOrigin, parse_origins};
use crate::respond::Rejection;
use crate::server::{ResponseBody, Shutdown};

/// A WebSocket on a connection that hyper has handed over after the `101`.
pub type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

// ANCHOR: limits
/// What one WebSocket may cost the server. Every field is a bound the server enforces; the
/// comments say what happens at it. [`Limits::default`] suits many clients that send small
/// messages (a chat room, a ticker); raise [`max_message_size`](Self::max_message_size) with
/// [`Limits::with_max_message_size`] for an endpoint that must take big ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes read from the socket at a time. tungstenite allocates (and zero-fills) this buffer
    /// up front for every connection: its default of 128 KiB costs ~134 KB per idle client, so
    /// 10,000 idle clients would hold 1.3 GB. 4 KiB measured ~6.4 KB per idle connection; a
    /// larger message is still read, in more steps.
    pub read_buffer_size: usize,
    /// The largest message a client may send, after reassembling its fragments. A larger one is
    /// refused with Close 1009 (message too big) before it is buffered whole, so one client cannot
    /// make the server allocate more than this.
    pub max_message_size: usize,
    /// The largest single frame. Equal to the message limit: a client may still fragment a
    /// message, but no frame can be bigger than a whole message may be.
    pub max_frame_size: usize,
    /// The most bytes waiting to be written to one socket. Messages are flushed as soon as they
    /// are queued (one, or a batch), so this only fills if the socket does; past it a write fails
    /// instead of buffering more. It leaves room for the largest message this server sends: an echo of the
    /// biggest allowed message, or a JSON envelope around it (escaping can make text up to 6
    /// times longer).
    pub max_write_buffer_size: usize,
    /// Bytes of frames gathered before tungstenite writes them to the socket. `send` (queue and
    /// flush) writes at once whatever this is, so a lone message never waits. A session that
    /// queues several messages (`feed`) and then flushes once writes them in one system call
    /// while they fit in this many bytes; past it they go out in several. The buffer keeps the
    /// size it grew to, so this is also what a busy socket holds between writes.
    pub write_buffer_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::with_max_message_size(64 * 1024)
    }
}

impl Limits {
    /// The default limits, accepting messages of up to `max_message_size` bytes.
    pub const fn with_max_message_size(max_message_size: usize) -> Self {
        Self {
            read_buffer_size: 4 * 1024,
            max_message_size,
            max_frame_size: max_message_size,
            max_write_buffer_size: 8 * max_message_size,
            // Room for dozens of small messages per write; kept below the largest message so
            // that it stays below `max_write_buffer_size`, as tungstenite requires.
            write_buffer_size: if max_message_size < 4 * 1024 {
                max_message_size
            } else {
                4 * 1024
            },
        }
    }

    /// The tungstenite configuration that enforces these limits.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            // tungstenite's default gathers 128 KiB before writing. Here a flush writes at once
            // (push messages must leave now: the reason the server sets TCP_NODELAY), and only
            // messages queued together share a write. tungstenite panics unless the maximum is
            // larger, so a write buffer at or over it is cut below it.
            .write_buffer_size(
                self.write_buffer_size
                    .min(self.max_write_buffer_size.saturating_sub(1)),
            )
            .max_write_buffer_size(self.max_write_buffer_size)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
    }
}
// ANCHOR_END: limits

// ANCHOR: origin
/// Which web pages may open a WebSocket to this server: the server's own origin, plus any listed.
///
/// Why: a browser sends cookies with a WebSocket handshake to any site, and the same-origin
/// policy does not apply to WebSocket. Without this check, any page a logged-in user visits
/// could open a socket to us in their name and read what we send (cross-site WebSocket
/// hijacking, CSWSH). Browsers always send `Origin` on a WebSocket handshake and a page cannot
/// forge it, so checking it before the upgrade closes that hole.
///
/// A request without `Origin` is not from a browser page (a command-line client, a test, another
/// server) and is allowed: those clients could send any `Origin` they like, so refusing them
/// would protect nothing. Authentication, where a demo needs it, is a separate matter.
///
/// It is built like [`crate::request::Cors`], the same list for the same idea: same origin only
/// by default, or [`OriginPolicy::allow`] with origins written as browsers send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Origins allowed besides the server's own, in ASCII lowercase, e.g.
    /// `https://app.example.com` (scheme, host and port if not the default: what browsers send).
    also_allowed: Vec<HeaderValue>,
}

impl OriginPolicy {
    /// Allows pages of this server's own origin only.
    pub fn same_origin_only() -> Self {
        Self::default()
    }

    /// Also allows pages served from these origins, each written as `http://host:port` or
    /// `https://host` (e.g. `http://localhost:5173`). A path, a trailing `/`, a query or `*` is
    /// refused, with a message saying what to write: there is no "allow every origin", which
    /// would turn the protection off.
    pub fn allow<S: AsRef<str>>(
        origins: impl IntoIterator<Item = S>,
    ) -> Result<Self, InvalidOrigin> {
        Ok(Self {
            also_allowed: parse_origins(origins)?,
        })
    }

    /// `Ok` when the request may proceed, otherwise a `403` refusal.
    ///
    /// Same origin means the `Origin`'s host and port equal the `Host` the browser sent: the
    /// page was loaded from the address it is now connecting to. On its own that would let a
    /// DNS-rebinding page in (it controls both); the kit's server answers only a `Host` on its
    /// list ([`crate::host::AllowedHosts`]) before this runs, so the `Origin` here names a host
    /// on that list too. The scheme is not compared, so
    /// the check also holds behind a proxy that terminates TLS (the page is `https`, we see
    /// plain HTTP).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let listed = self.also_allowed.contains(origin);
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let host = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .map(str::to_ascii_lowercase);
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        let same_origin = authority.is_some() && authority == host.as_deref();
        if same_origin || listed {
            Ok(())
        } else {
            Err(Rejection::new(
                StatusCode::FORBIDDEN,
                format!(
                    "pages from origin {origin:?} may not connect here; \
                     start the server with --allow-origin {origin} to allow them"
                ),
            ))
        }
    }
}
// ANCHOR_END: origin

// ANCHOR: handshake
/// Checks the opening handshake of RFC 6455 section 4.2.1 and builds the `101 Switching
/// Protocols` response, with `Sec-WebSocket-Accept` computed from the client's key. Anything else
/// gets the error response a client can act on:
///
/// - no `Upgrade: websocket` / `Connection: Upgrade` (a browser opening the URL, `curl`):
///   `426 Upgrade Required`, with `Upgrade: websocket` naming the protocol to use;
/// - a `Sec-WebSocket-Version` other than 13: `426` with `Sec-WebSocket-Version: 13`, as
///   section 4.4 asks, so the client can retry with a version we speak;
/// - a missing or malformed `Sec-WebSocket-Key` (it must be 16 bytes in base64): `400`.
///
/// tungstenite does these checks in `create_response`; hyper does none of them, and
/// tokio-tungstenite does not when it is given an already upgraded connection.
pub fn handshake<B>(request: &Request<B>) -> Result<Response<ResponseBody>, Rejection> {
    use tungstenite::handshake::server::create_response_with_body;
    match create_response_with_body(request, || Empty::new().boxed_unsync()) {
        Ok(switching_protocols) => Ok(switching_protocols),
        Err(tungstenite::Error::Protocol(problem)) => Err(handshake_refusal(&problem)),
        Err(other) => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("bad WebSocket handshake: {other}"),
        )),
    }
}

fn handshake_refusal(problem: &ProtocolError) -> Rejection {
    match problem {
        ProtocolError::MissingConnectionUpgradeHeader
        | ProtocolError::MissingUpgradeWebSocketHeader => Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: connect with a WebSocket client \
             (the request needs `Upgrade: websocket` and `Connection: Upgrade`)",
        )
        .with_hint(header::UPGRADE, "websocket"),
        ProtocolError::MissingSecWebSocketVersionHeader => Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "this server speaks WebSocket version 13 only (`Sec-WebSocket-Version: 13`)",
        )
        .with_hint(header::SEC_WEBSOCKET_VERSION, "13"),
        other => Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("bad WebSocket handshake: {other}"),
        ),
    }
}
// ANCHOR_END: handshake

// ANCHOR: upgrade
/// Answers a WebSocket request: checks `Origin` and the handshake, and on success returns the
/// `101` and runs `session` on the upgraded connection as a task that [`Shutdown`] waits for.
/// The session must watch [`Shutdown::requested`] and close its socket (1001) when it fires.
///
/// The order matters: hyper hands the connection over only after it has written the `101`, so
/// the task that awaits the upgrade is spawned first and the response returned after.
/// The connection must be served with upgrades (the kit's [`crate::serve`] is).
pub fn upgrade<S, F>(
    request: Request<crate::RequestBody>,
    origins: &OriginPolicy,
    limits: Limits,
    shutdown: &Shutdown,
    session: S,
) -> Response<ResponseBody>
where
    S: FnOnce(WebSocket) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    take_over(request, origins, shutdown, move |upgraded| async move {
        let config = limits.websocket_config();
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        session(socket).await;
    })
}

/// [`upgrade`] for a socket that a [`Fanout`](crate::fanout::Fanout) writes to as well: the
/// session gets its WebSocket and the socket's [`Outbox`], to join the fan-out with. The
/// connection must have been served by the kit's server, which keeps the `TcpStream` within
/// reach.
pub fn upgrade_shared<S, F>(
    request: Request<crate::RequestBody>,
    origins: &OriginPolicy,
    limits: Limits,
    shutdown: &Shutdown,
    session: S,
) -> Response<ResponseBody>
where
    S: FnOnce(SharedWebSocket, Arc<Outbox>) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    take_over(request, origins, shutdown, move |upgraded| async move {
        let Some((stream, read_ahead)) = crate::server::upgraded_socket(upgraded) else {
            tracing::error!("a shared WebSocket needs a connection served by realtime_kit::serve");
            return;
        };
        let outbox = Outbox::new(stream);
        let io = SharedIo::new(outbox.clone(), read_ahead);
        let config = limits.websocket_config();
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        session(socket, outbox).await;
    })
}

/// The checks and the take-over both upgrades share: `Origin`, the handshake, then `session`
/// on the upgraded connection once hyper has written the `101`.
fn take_over<S, F>(
    mut request: Request<crate::RequestBody>,
    origins: &OriginPolicy,
    shutdown: &Shutdown,
    session: S,
) -> Response<ResponseBody>
where
    S: FnOnce(Upgraded) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    if let Err(forbidden) = origins.check(request.headers()) {
        return forbidden.into_response();
    }
    let switching_protocols = match handshake(&request) {
        Ok(response) => response,
        Err(refusal) => return refusal.into_response(),
    };
    let upgraded = hyper::upgrade::on(&mut request);
    shutdown.spawn(async move {
        match upgraded.await {
            Ok(upgraded) => session(upgraded).await,
            // The client went away between the request and the 101.
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    switching_protocols
}
// ANCHOR_END: upgrade

// ANCHOR: close_code
/// The close code that tells a client why its input ended the connection (RFC 6455 section
/// 7.4.1), or `None` when the connection is already gone and there is no one to tell.
pub fn close_code_for(error: &tungstenite::Error) -> Option<CloseCode> {
    match error {
        // A message or frame over `Limits::max_message_size`/`max_frame_size`.
        tungstenite::Error::Capacity(_) => Some(CloseCode::Size), // 1009
        // A text message that is not valid UTF-8.
        tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid), // 1007
        // The TCP connection dropped without a Close frame: nothing to send it on.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        // Unmasked frames, reserved bits or opcodes, bad fragments, oversized control frames.
        tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol), // 1002
        _ => None,
    }
}
// ANCHOR_END: close_code

// ANCHOR: heartbeat
/// Finds clients that have gone silent. A TCP connection whose peer vanished (a laptop closed, a
/// phone out of coverage) shows no sign of it until a write fails, which may take many minutes;
/// meanwhile it holds a socket and a task. So the server sends a Ping every `ping_interval`,
/// which a live client answers with a Pong (browsers do so by themselves), and counts a client
/// silent when no frame at all has arrived for `idle_timeout`. The pings also keep proxies from
/// closing an idle connection. Silence is checked at each beat, so a silent client is closed
/// between `idle_timeout` and `idle_timeout + ping_interval` after its last frame.
///
/// Each heartbeat's first Ping comes at a random point of the second half of its first
/// interval. Clients that join together (a crowd reconnecting after a restart, a benchmark's
/// thousand sockets) would otherwise all be pinged in the same few milliseconds, every
/// interval, for as long as they stay: a thousand writes and a thousand Pongs to read, and a
/// room message sent then waits behind them (the capacity chapter measures it). Not the first
/// half: a Ping in a client's first seconds is one it does not expect yet (Autobahn's case
/// 5.19, two seconds long, counts it as a wrong event), and the gap between Pings stays at
/// most one interval.
#[derive(Debug)]
pub struct Heartbeat {
    /// When the next Ping is due.
    ticker: tokio::time::Interval,
    /// How long a client may send nothing at all.
    idle_timeout: Duration,
    /// When the client last sent any frame (a Pong, a Ping, a message).
    last_heard: tokio::time::Instant,
}

/// What [`Heartbeat::beat`] asks the session to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a Ping.
    Ping,
    /// Nothing has come from the client for longer than the timeout: close the connection.
    Silent,
}

impl Heartbeat {
    // ANCHOR: heartbeat_new
    /// A heartbeat whose first Ping is between half a `ping_interval` and one from now, and the
    /// next ones every `ping_interval` after it.
    pub fn new(ping_interval: Duration, idle_timeout: Duration) -> Self {
        let now = tokio::time::Instant::now();
        let first = now + ping_interval.mul_f64(0.5 + random_fraction() / 2.0);
        let mut ticker = tokio::time::interval_at(first, ping_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            idle_timeout,
            last_heard: now,
        }
    }
    // ANCHOR_END: heartbeat_new

    /// Records that a frame has arrived from the client.
    pub fn heard(&mut self) {
        self.last_heard = tokio::time::Instant::now();
    }

    /// Waits for the next beat. Cancel-safe, so it can be a branch of `select!`.
    pub async fn beat(&mut self) -> Beat {
        self.ticker.tick().await;
        if self.last_heard.elapsed() > self.idle_timeout {
            Beat::Silent
        } else {
            Beat::Ping
        }
    }
}
// ANCHOR_END: heartbeat

// ANCHOR: random_fraction
/// A number in `[0, 1)`, different at each call. `RandomState` starts from random keys in each
/// thread and steps them on for each new one, so hashing the same byte gives a new 64-bit value
/// each time: enough to spread timers, without a crate for random numbers.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let bits = RandomState::new().hash_one(0u8) >> 11; // the 53 bits an f64 holds exactly
    bits as f64 / (1u64 << 53) as f64
}
// ANCHOR_END: random_fraction

/// How long closing may take: sending our Close frame, then waiting for the client's. A client
/// that does not answer in time is dropped anyway (RFC 6455 section 7.1.1 lets the server close
/// the TCP connection when the handshake does not complete).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

// ANCHOR: closing
// Every session in the workspace ends its socket with one of these three, one for each way a
// WebSocket can end: the server decides to, the client asked to, or the client sent something
// invalid. Each is bounded by CLOSE_TIMEOUT.

/// The server ends the connection: starts the closing handshake with `code` and `reason`, then
/// reads until the client answers or [`CLOSE_TIMEOUT`] passes. Messages that arrive meanwhile
/// are discarded: we are leaving.
pub async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    code: CloseCode,
    reason: &'static str,
) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let closing = async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.next().await {}
        }
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::debug!("the client did not finish the closing handshake in time");
    }
}

/// The client sent Close: tungstenite has already queued the answering Close, and flushing
/// sends it. Then the session returns, and dropping the socket closes the TCP connection, which
/// RFC 6455 section 7.1.1 asks the server to do first.
pub async fn answer_close<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut WebSocketStream<S>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
}

/// Reading failed: closes with the code that tells the client what it sent wrong (see
/// [`close_code_for`]) and returns it, or returns `None` when the connection is already gone
/// and there is no one to tell.
pub async fn close_after_error<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut WebSocketStream<S>,
    error: &tungstenite::Error,
) -> Option<CloseCode> {
    let code = close_code_for(error)?;
    let reason = match code {
        CloseCode::Size => "message too big",
        CloseCode::Invalid => "text that is not UTF-8",
        _ => "broken frame or message",
    };
    tracing::debug!(%error, %code, "closing on bad input");
    close(socket, code, reason).await;
    Some(code)
}
// ANCHOR_END: closing

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    /// A page from the server's own host and port may connect, whatever the scheme and case
    /// (a TLS-terminating proxy makes an `https` page reach us over plain HTTP).
    #[test]
    fn same_origin_is_allowed() {
        let policy = OriginPolicy::same_origin_only();
        for origin in ["http://chat.example:3001", "https://Chat.Example:3001"] {
            assert_eq!(
                policy.check(&headers(Some(origin), "chat.example:3001")),
                Ok(())
            );
        }
    }

    /// Another host, another port, a sandboxed page (`null`) and a look-alike that only starts
    /// with our host are all refused with 403.
    #[test]
    fn other_origins_are_refused() {
        let policy = OriginPolicy::same_origin_only();
        for origin in [
            "https://evil.example",
            "http://chat.example:3002",
            "null",
            "http://chat.example:3001.evil.example",
        ] {
            let refusal = policy
                .check(&headers(Some(origin), "chat.example:3001"))
                .unwrap_err();
            assert_eq!(refusal.status(), StatusCode::FORBIDDEN, "{origin}");
        }
    }

    /// Listed origins are allowed (case does not matter); clients that send no `Origin` are not
    /// browser pages and are allowed; `*` is not an origin.
    #[test]
    fn listed_origins_and_non_browsers_are_allowed() {
        let policy = OriginPolicy::allow(["HTTP://localhost:5173"]).expect("an origin");
        assert_eq!(
            policy.check(&headers(Some("http://localhost:5173"), "127.0.0.1:3001")),
            Ok(())
        );
        assert_eq!(policy.check(&headers(None, "127.0.0.1:3001")), Ok(()));
        assert!(OriginPolicy::allow(["*"]).is_err());
    }

    /// Heartbeats made in the same instant ping at points spread over the second half of the
    /// first interval, then one interval apart. With the first Ping one interval from now, as it
    /// was, all 200 of them beat at the same instant.
    #[tokio::test(start_paused = true)]
    async fn heartbeats_made_together_ping_at_different_times() {
        let interval = Duration::from_secs(15);
        let start = tokio::time::Instant::now();
        // Paused time moves on to each timer as it falls due, so `elapsed` is when it was due.
        let beats = (0..200).map(|_| async move {
            let mut heartbeat = Heartbeat::new(interval, Duration::from_secs(35));
            assert_eq!(heartbeat.beat().await, Beat::Ping);
            let first = start.elapsed();
            assert_eq!(heartbeat.beat().await, Beat::Ping);
            (first, start.elapsed() - first)
        });
        let beats = futures_util::future::join_all(beats).await;
        let mut seconds: Vec<_> = beats.iter().map(|(first, _)| first.as_secs()).collect();
        seconds.sort_unstable();
        seconds.dedup();
        for (first, then) in beats {
            assert!(
                interval / 2 <= first && first <= interval,
                "a first Ping outside the first interval's second half: {first:?}"
            );
            assert_eq!(
                then, interval,
                "the second Ping, one interval after the first"
            );
        }
        // 200 uniform draws over 7.5 s miss 4 of its 8 whole seconds with a chance below 10^-50.
        assert!(seconds.len() >= 5, "200 first Pings within {seconds:?}");
    }

    /// The default limits use the small read buffer and refuse messages over 64 KiB.
    #[test]
    fn default_limits_are_sized_for_many_small_messages() {
        let config = Limits::default().websocket_config();
        assert_eq!(config.read_buffer_size, 4 * 1024);
        assert_eq!(config.max_message_size, Some(64 * 1024));
        assert_eq!(config.max_frame_size, Some(64 * 1024));
        assert!(config.max_write_buffer_size >= 6 * 64 * 1024);
        assert_eq!(config.write_buffer_size, 4 * 1024);
    }

    /// tungstenite panics when the write buffer is not below its maximum; a small message limit
    /// (which makes the maximum small) must not get there.
    #[test]
    fn write_buffer_stays_below_its_maximum() {
        for max_message_size in [1, 100, 4 * 1024, 64 * 1024] {
            let config = Limits::with_max_message_size(max_message_size).websocket_config();
            assert!(
                config.write_buffer_size < config.max_write_buffer_size,
                "{max_message_size}"
            );
        }
        let config = Limits {
            write_buffer_size: 1 << 20,
            ..Limits::default()
        }
        .websocket_config();
        assert!(config.write_buffer_size < config.max_write_buffer_size);
    }
}
