//! The server loop every demo runs: accept TCP connections, serve HTTP/1.1 on each (with
//! upgrades, for WebSocket), and shut down gracefully.
//!
//! Graceful shutdown has one trap in a push server: hyper finishes in-flight responses before a
//! connection closes, and an event stream never finishes. So shutdown is a signal that every
//! long-lived part of the server watches, the [`Shutdown`] handle: SSE bodies end themselves
//! when it fires (see [`crate::sse::SseResponse`]), background tasks spawned with
//! [`Shutdown::spawn`] stop, and [`serve`] waits for all of them, for at most [`GRACE_PERIOD`].
//!
//! Every connection also has limits ([`ConnectionLimits`]): a client must send its request
//! headers in time, and its body too, and must keep accepting bytes; one that stops reading is
//! disconnected. And every request must name a host the server answers ([`AllowedHosts`]),
//! which stops DNS rebinding before any handler runs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::direct::{self, Sniffed};
use crate::host::AllowedHosts;

/// The body type of every response in the workspace: a full body or an endless event stream,
/// behind one boxed type so a handler can return either.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// The body type of every request a handler gets: hyper's incoming body, boxed, so that a
/// request the kit parsed itself (its direct path for event streams) has the same type. Reading
/// it fails with [`BodyTimeout`] once [`ConnectionLimits::body_read_timeout`] has passed.
pub type RequestBody = UnsyncBoxBody<Bytes, BodyError>;

/// hyper's incoming body as a [`RequestBody`], for a handler of the kit called from a plain
/// hyper `service_fn` (without [`serve`], so without its limits or its body deadline):
///
/// ```no_run
/// # use hyper::{Request, body::Incoming};
/// # fn handler(request: Request<realtime_kit::RequestBody>) {}
/// # fn call(request: Request<Incoming>) {
/// handler(request.map(realtime_kit::request_body));
/// # }
/// ```
pub fn request_body(body: Incoming) -> RequestBody {
    RequestBody::new(http_body_util::BodyExt::map_err(body, BodyError::Read))
}

/// How long [`serve`] waits, after the shutdown signal, for connections and tasks to finish.
/// Everything of ours ends at once on the signal; this bounds a client that is slow to read
/// the last bytes of a response.
pub const GRACE_PERIOD: Duration = Duration::from_secs(5);

/// Per-connection limits of [`serve`]. [`ConnectionLimits::default`] is what the demos use.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers. Without a limit, a client that
    /// opens connections and never finishes a request (slowloris) holds them forever.
    pub header_read_timeout: Duration,
    /// How long a client may accept no bytes at all while the server has bytes for it. hyper
    /// asks a response body for more only when the socket can take it, so a client that stops
    /// reading (its TCP window stays shut) would otherwise keep its stream, and the kernel's
    /// buffers behind it, for as long as it likes. Past this, the connection is closed.
    pub write_stall_timeout: Duration,
    /// How long a client may take to send a request's whole body, counted from the end of its
    /// headers. The header limit alone lets a client announce `Content-Length: 100`, send ten
    /// bytes and then nothing (or a byte a second), and hold the connection and the handler
    /// forever. Past this, reading the body fails with [`BodyTimeout`], which
    /// [`crate::request::read_limited`] answers with `408` and `Connection: close`. The demos'
    /// bodies are at most a few KiB, so 10 s is generous even on a bad mobile link.
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything [`serve_with`] can be told; [`ServerOptions::default`] is what [`serve`] uses.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Per-connection limits.
    pub limits: ConnectionLimits,
    /// The `Host` names answered besides IP literals and `localhost` (see [`crate::host`]).
    pub hosts: AllowedHosts,
    /// Whether a browser's request for an event stream is answered on the kit's direct path
    /// (`src/direct.rs` says how and why) instead of by hyper. Off by
    /// default: hyper then serves every request, which is the path to read, copy and debug
    /// with curl. On, an idle stream costs about a third of the memory (the book's chapter
    /// "How many clients can one server hold?" has the figures): worth it for tens of
    /// thousands of open streams, not for a few hundred. The answers are the same. A stream made
    /// with [`SseResponse::shared`](crate::sse::SseResponse::shared) is then written by a
    /// [`Fanout`](crate::fanout::Fanout)'s writer per core.
    pub direct_streams: bool,
}

// ANCHOR: shutdown
/// The server's shutdown signal, shared by everything that must stop with it.
///
/// Cloning is cheap; every clone sees the same signal and registers tasks in the same set.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Cancelled once, when shutdown begins.
    token: CancellationToken,
    /// Every connection and background task, so shutdown can wait until they have finished.
    tasks: TaskTracker,
}

impl Shutdown {
    /// A signal that has not fired yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Completes when shutdown has begun. Put it in a `select!` beside the work a task does.
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// The same as [`requested`](Self::requested), as a future that owns its handle: for a
    /// wait that lives as long as a connection (an event stream polls it for every event).
    ///
    /// It waits on a child of the signal, so that 10,000 streams polling it do not all take
    /// the same lock: a clone of one token shares one mutex, a child has its own.
    pub fn requested_owned(&self) -> WaitForCancellationFutureOwned {
        self.token.child_token().cancelled_owned()
    }

    /// Whether shutdown has begun.
    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown. [`serve`] does this when its signal fires; tests may call it directly.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Spawns a task that shutdown waits for (a ticker, a WebSocket session). The task must
    /// watch [`requested`](Self::requested) and end promptly when it fires.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }
}
// ANCHOR_END: shutdown

// ANCHOR: serve
/// Accepts connections on `listener` and answers every request with `handler` until `signal`
/// completes; then stops accepting, triggers `shutdown`, and returns once every connection and
/// task has finished, or after [`GRACE_PERIOD`].
///
/// The handler never fails: errors are responses (see [`crate::respond`]). A failing connection
/// is logged and never affects another. Each connection has the default [`ConnectionLimits`],
/// and only requests for IP literals and `localhost` are answered ([`AllowedHosts`]).
pub async fn serve<H, F>(
    listener: TcpListener,
    signal: impl Future<Output = ()>,
    shutdown: Shutdown,
    handler: H,
) where
    H: Fn(Request<RequestBody>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    serve_with(
        ServerOptions::default(),
        listener,
        signal,
        shutdown,
        handler,
    )
    .await;
}

/// [`serve`] with other limits, or more host names.
pub async fn serve_with<H, F>(
    options: ServerOptions,
    listener: TcpListener,
    signal: impl Future<Output = ()>,
    shutdown: Shutdown,
    handler: H,
) where
    H: Fn(Request<RequestBody>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let ServerOptions {
        limits,
        hosts,
        direct_streams,
    } = options;
    // Checked here, before the handler, so that it holds on both paths and for every route.
    let hosts = Arc::new(hosts);
    let handler = move |request: Request<RequestBody>| match hosts.check(&request) {
        Ok(()) => Either::Left(handler(request)),
        Err(refusal) => Either::Right(std::future::ready(refusal.into_response())),
    };
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let connection =
                        serve_connection(stream, limits, direct_streams, handler.clone(), shutdown.clone());
                    shutdown.spawn(connection);
                }
                Err(error) => {
                    // Usually EMFILE: out of file descriptors. Retrying at once would spin the
                    // CPU, so pause; closing connections will free descriptors meanwhile.
                    tracing::warn!(%error, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut signal => break,
            () = shutdown.requested() => break,
        }
    }
    // Closing the listener first makes new connections fail at once instead of queueing.
    drop(listener);
    shutdown.trigger();
    shutdown.tasks.close();
    if tokio::time::timeout(GRACE_PERIOD, shutdown.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            still_running = shutdown.tasks.len(),
            "grace period over; abandoning connections"
        );
    }
}

async fn serve_connection<H, F>(
    mut stream: TcpStream,
    limits: ConnectionLimits,
    direct_streams: bool,
    handler: H,
    shutdown: Shutdown,
) where
    H: Fn(Request<RequestBody>) -> F + Send + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    // Push servers write small messages that must leave now, not wait for Nagle's algorithm
    // to batch them with data that may never come.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    if !direct_streams {
        return serve_with_hyper(stream, limits, handler, shutdown).await;
    }
    let started = tokio::time::Instant::now();
    match direct::sniff(&mut stream, limits.header_read_timeout).await {
        Sniffed::Stream(request) => {
            if let Err(error) = direct::answer(stream, *request, handler, limits, &shutdown).await {
                tracing::debug!(%error, "event stream ended with an error");
            }
        }
        Sniffed::Nothing => {}
        Sniffed::Other => {
            // The header-read limit counts from the accept, not from the peek.
            let limits = ConnectionLimits {
                header_read_timeout: limits
                    .header_read_timeout
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1)),
                ..limits
            };
            serve_with_hyper(stream, limits, handler, shutdown).await;
        }
    }
}

/// Serves one connection with hyper: everything except the requests [`crate::direct`] takes.
async fn serve_with_hyper<H, F>(
    stream: TcpStream,
    limits: ConnectionLimits,
    handler: H,
    shutdown: Shutdown,
) where
    H: Fn(Request<RequestBody>) -> F + Send + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let body_limit = limits.body_read_timeout;
    let service = service_fn(move |request: Request<Incoming>| {
        let response =
            handler(request.map(|body| RequestBody::new(TimedBody::new(body, body_limit))));
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(
            TokioIo::new(StallGuard::new(stream, limits.write_stall_timeout)),
            service,
        )
        // Lets a handler take the connection over after a `101 Switching Protocols` (WebSocket).
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.requested() => {
            // Finish the response in flight (SSE bodies end themselves now), then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        // Clients vanish mid-request all the time; that is not the server's problem.
        tracing::debug!(%error, "connection ended with an error");
    }
}
// ANCHOR_END: serve

// ANCHOR: timed_body
/// A request body that fails with [`BodyTimeout`] if it has not ended `limit` after the request
/// arrived. The timer is made only when a read finds the body not ready, so a request without
/// a body (every `GET`) costs nothing.
struct TimedBody {
    body: Incoming,
    limit: Duration,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(body: Incoming, limit: Duration) -> Self {
        Self {
            body,
            limit,
            deadline: tokio::time::Instant::now() + limit,
            timer: None,
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::Read)));
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_ready() {
            let limit = self.limit;
            return Poll::Ready(Some(Err(BodyError::TimedOut(BodyTimeout { limit }))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that did not arrive within [`ConnectionLimits::body_read_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout {
    /// The limit that passed.
    pub limit: Duration,
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.limit)
    }
}

impl std::error::Error for BodyTimeout {}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed, or the body broke HTTP's framing.
    Read(hyper::Error),
    /// The body did not arrive in time.
    TimedOut(BodyTimeout),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(error) => write!(f, "the request body could not be read: {error}"),
            Self::TimedOut(timeout) => timeout.fmt(f),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(error) => Some(error),
            Self::TimedOut(timeout) => Some(timeout),
        }
    }
}
// ANCHOR_END: timed_body

// ANCHOR: stall_guard
/// A connection's socket, with one addition: a write that makes no progress for `limit` fails
/// with `TimedOut`, which ends the connection (and with it a stream the client stopped reading).
/// The timer exists only while a write is blocked, so a healthy connection pays nothing.
pub(crate) struct StallGuard<IO> {
    io: IO,
    limit: Duration,
    /// Started when a write first found the socket full; cleared by any write that goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> StallGuard<IO> {
    fn new(io: IO, limit: Duration) -> Self {
        Self {
            io,
            limit,
            stalled: None,
        }
    }

    /// The socket, without the guard: for a connection taken over after a `101`, whose session
    /// bounds its own writes.
    pub(crate) fn into_inner(self) -> IO {
        self.io
    }

    /// Turns a `Pending` write into an error once the socket has been full for `limit`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client accepted no data for {limit:?}"),
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
// ANCHOR_END: stall_guard

/// The TCP socket under a connection that hyper handed over after a `101`, and the bytes hyper
/// read past the request; `None` if the connection was not served by this module.
pub(crate) fn upgraded_socket(upgraded: hyper::upgrade::Upgraded) -> Option<(TcpStream, Bytes)> {
    let parts = upgraded.downcast::<TokioIo<StallGuard<TcpStream>>>().ok()?;
    Some((parts.io.into_inner().into_inner(), parts.read_buf))
}

/// A count of live things (open streams, connected sockets): [`enter`](Gauge::enter) counts one
/// until the returned guard is dropped, so a disconnect is counted however it happens.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicUsize>);

/// Counts one in its [`Gauge`] until dropped.
#[derive(Debug)]
pub struct GaugeGuard(Arc<AtomicUsize>);

impl Gauge {
    /// A gauge at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more until the guard is dropped.
    pub fn enter(&self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self.0.clone())
    }

    /// Counts one more if that keeps the count at or below `limit`; `None` when it is full.
    ///
    /// Check and count are one atomic step. Checking [`get`](Self::get) and calling
    /// [`enter`](Self::enter) later lets every request that arrives in between pass the check:
    /// 60 simultaneous WebSocket handshakes against a limit of 20 got 23 to 60 `101`s that way.
    /// Reserve the place before answering, and move the guard into whatever holds it.
    pub fn try_enter(&self, limit: usize) -> Option<GaugeGuard> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < limit).then_some(count + 1)
            })
            .ok()?;
        Some(GaugeGuard(self.0.clone()))
    }

    /// The current count.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
