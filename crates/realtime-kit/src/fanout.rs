//! Fan-out on every core: one message written to many sockets by one writer task per worker
//! thread, each from one shared, already framed `Bytes`.
//!
//! A session per client that wakes for every message (a `broadcast` receiver, a select, a
//! frame encoded and written) costs a task wake-up and a pass through the session for each
//! delivery. The writer per core here costs what the machine's floor costs (see the capacity
//! chapter): a loop over its share of the sockets, one `try_write` each.
//!
//! ```text
//! Fanout::send(frame) ──▶ shards 0-7's queues  ──▶ writer 0: for each client of a shard, Outbox::offer
//!                    └──▶ shards 8-15's queues ──▶ writer 1: ...
//! ```
//!
//! Each writer has eight shards of its own, and writes any other shard that waits and that no
//! writer holds once its own are done. A writer's worker may be parked when a message comes,
//! and waking it can take a millisecond (its thread and the readers' wake-ups queue for the
//! same cores); the writer already running takes over its shards meanwhile, an eighth at a
//! time, so the last client waits for about half that delay instead of all of it.
//!
//! Each client's socket is shared by two writers: the shard's, and the client's own session
//! (welcome, notices, Pings, Close, through tungstenite). Its [`Outbox`] keeps them apart. All
//! writes to one socket go through the outbox's lock, and whole frames only, so frames from the
//! two writers never interleave. What a full socket does not take waits in the outbox, in order,
//! and the session writes it out when the socket has room. A client that falls
//! [`Fanout`]'s `backlog` messages behind is marked too slow, and its session closes it.
//!
//! Event streams use it too, on the kit's direct path (`src/direct.rs`): there the session is
//! the stream's own small task, and the frames are chunks of the chunked transfer coding.
//!
//! Run it in echo-ws (`cargo run -p echo-ws`), or in chat-sse and clock-sse with
//! `--direct-streams`; the tests are `tests/echo_ws.rs`, `tests/echo_ws_multicore.rs`,
//! `crates/realtime-kit/tests/direct_stream.rs`, and `tests/{chat,clock}_sse_direct.rs`.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::server::Shutdown;

// ANCHOR: outbox
/// One client's socket, written by its session and by a shard writer, one whole frame at a time.
#[derive(Debug)]
pub struct Outbox {
    socket: TcpStream,
    state: Mutex<OutboxState>,
    /// Wakes the session: bytes wait for a socket that was full, or the client fell too far
    /// behind, or a write failed.
    attention: Notify,
    /// Where this client is in its shard's list; only the writer holding the shard reads or
    /// changes it.
    slot: AtomicUsize,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// What a full socket did not take yet, in order. The first may have been partly written;
    /// none is ever split by another writer's bytes.
    waiting: VecDeque<Waiting>,
    /// Room messages among `waiting`: the count [`Fanout`]'s backlog limits.
    waiting_messages: usize,
    /// No more room messages: the client left, fell too far behind, or its socket failed.
    closed_to_room: bool,
    /// The client fell a whole backlog behind.
    too_slow: bool,
    /// A write failed (the client reset the connection); every later write fails the same way.
    failed: Option<io::ErrorKind>,
}

#[derive(Debug)]
struct Waiting {
    bytes: Bytes,
    /// Room messages in `bytes` (a batch may hold several); 0 for the session's own frames.
    messages: usize,
}

/// What became of a batch offered to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The socket took all of it.
    Written,
    /// It waits in the outbox for the socket to take it; the session was told.
    Queued,
    /// The client was already [`Offered::Queued`] a whole backlog: it is closed as too slow.
    TooSlow,
    /// The client takes no more room messages.
    Refused,
}

impl Outbox {
    /// An outbox for `socket`. A WebSocket session reads and writes through [`SharedIo`]; an
    /// event stream (the kit's direct path) only writes, with [`Outbox::push`].
    pub fn new(socket: TcpStream) -> Arc<Self> {
        Arc::new(Self {
            socket,
            state: Mutex::new(OutboxState::default()),
            attention: Notify::new(),
            slot: AtomicUsize::new(0),
        })
    }

    /// The socket, for its session to read from.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    fn state(&self) -> MutexGuard<'_, OutboxState> {
        lock(&self.state)
    }

    /// Writes `messages` room messages, already framed in `batch`, or queues what the socket
    /// does not take; at most `backlog` may wait.
    pub fn offer(&self, batch: &Bytes, messages: usize, backlog: usize) -> Offered {
        let mut state = self.state();
        if state.closed_to_room {
            return Offered::Refused;
        }
        let mut rest = batch.clone();
        if state.waiting.is_empty() {
            match write_some(&self.socket, &mut rest) {
                Ok(true) => return Offered::Written,
                Ok(false) => {}
                Err(error) => {
                    state.fail(error.kind());
                    drop(state);
                    self.attention.notify_one();
                    return Offered::Refused;
                }
            }
        } else if state.waiting_messages + messages > backlog {
            state.closed_to_room = true;
            state.too_slow = true;
            drop(state);
            self.attention.notify_one();
            return Offered::TooSlow;
        }
        state.waiting.push_back(Waiting {
            bytes: rest,
            messages,
        });
        state.waiting_messages += messages;
        drop(state);
        self.attention.notify_one();
        Offered::Queued
    }

    /// Waits until the session has something to do: write out what waits, or close a client
    /// that fell behind. Cancel-safe, for a branch of `select!`.
    pub async fn needs_attention(&self) {
        self.attention.notified().await;
    }

    /// Whether the client fell a whole backlog behind.
    pub fn too_slow(&self) -> bool {
        self.state().too_slow
    }

    /// The session's own bytes: written after whatever waits, as far as the socket takes them
    /// now; the rest waits, and [`Outbox::flush`] writes it out. Bytes left waiting ask for the
    /// session's attention, as a queued room message does: otherwise a catch-up larger than the
    /// socket's buffer would wait for the room's next message, which a quiet room never sends.
    pub fn push(&self, bytes: Bytes) -> io::Result<()> {
        let mut state = self.state();
        if let Some(kind) = state.failed {
            return Err(kind.into());
        }
        state.waiting.push_back(Waiting { bytes, messages: 0 });
        let all_written = self.write_waiting(&mut state)?;
        drop(state);
        if !all_written {
            self.attention.notify_one();
        }
        Ok(())
    }

    /// Waits until the socket has taken everything that waits, the room's messages too.
    /// Bound it with a timeout: a client that reads nothing never lets it finish.
    pub async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.write_waiting(&mut self.state())? {
                return Poll::Ready(Ok(()));
            }
            ready!(self.socket.poll_write_ready(cx))?;
        }
    }

    /// Takes no more room messages; what already waits is still written.
    fn close_to_room(&self) {
        self.state().closed_to_room = true;
    }

    fn is_closed_to_room(&self) -> bool {
        self.state().closed_to_room
    }

    /// Writes what waits. `Ok(true)` once nothing does.
    fn write_waiting(&self, state: &mut OutboxState) -> io::Result<bool> {
        if let Some(kind) = state.failed {
            return Err(kind.into());
        }
        while let Some(front) = state.waiting.front_mut() {
            match write_some(&self.socket, &mut front.bytes) {
                Ok(true) => {
                    let done = state.waiting.pop_front().expect("the front exists");
                    state.waiting_messages -= done.messages;
                }
                Ok(false) => return Ok(false),
                Err(error) => {
                    state.fail(error.kind());
                    return Err(error);
                }
            }
        }
        Ok(true)
    }
}

impl OutboxState {
    fn fail(&mut self, kind: io::ErrorKind) {
        self.failed = Some(kind);
        self.closed_to_room = true;
        self.waiting.clear();
        self.waiting_messages = 0;
    }
}

/// Writes as much of `bytes` as the socket takes now, without waiting; `Ok(true)` if it took
/// all, `Ok(false)` if it is full, with `bytes` advanced past what it took.
fn write_some(socket: &TcpStream, bytes: &mut Bytes) -> io::Result<bool> {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(written) => bytes.advance(written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}
// ANCHOR_END: outbox

// ANCHOR: shared_io
/// The session's side of a shared socket, for tungstenite: reads come straight from the socket
/// (only the session reads), writes go through the [`Outbox`] behind whatever waits there.
///
/// A write is always accepted whole (tungstenite then never splits a frame between two writes),
/// and a flush waits until the socket has taken everything queued before it, the shard's room
/// messages too. So the session's `send(...)` with a timeout bounds how long the client may take
/// to read, as it does on a socket of its own.
#[derive(Debug)]
pub struct SharedIo {
    outbox: Arc<Outbox>,
    read_ahead: Bytes,
}

impl SharedIo {
    /// The session's IO over `outbox`. `read_ahead` is what the HTTP server read past the
    /// handshake: the client's first frames, if it sent them at once.
    ///
    /// It takes the read-ahead by value, and copies it: the `Bytes` is a slice of the HTTP
    /// server's read buffer, kilobytes that stay allocated for as long as any slice of them
    /// lives. Measured, an idle room client held 8.1 KiB with the slice alive, 3.8 without.
    pub fn new(outbox: Arc<Outbox>, read_ahead: Bytes) -> Self {
        Self {
            outbox,
            read_ahead: Bytes::copy_from_slice(&read_ahead),
        }
    }
}

/// A WebSocket whose socket a [`Fanout`] writes to as well.
pub type SharedWebSocket = WebSocketStream<SharedIo>;

impl AsyncRead for SharedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead[..n]);
            self.read_ahead.advance(n);
            if self.read_ahead.is_empty() {
                self.read_ahead = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let socket = &self.outbox.socket;
        loop {
            ready!(socket.poll_read_ready(cx))?;
            match socket.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outbox.push(Bytes::copy_from_slice(buf))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.outbox.poll_flush(cx)
    }

    /// The connection closes when its last handle goes: the session's, and the shard's, which
    /// lets go as soon as the session leaves the [`Fanout`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
// ANCHOR_END: shared_io

// ANCHOR: fanout
/// Clients spread over shards, written by one writer task per worker thread.
/// [`Fanout::send`] hands a framed message to every shard and wakes every writer; each writes
/// the shards it finds waiting.
#[derive(Debug)]
pub struct Fanout {
    /// Every writer's shards, the first writer's first; the writers share them.
    shards: Arc<[Arc<Shard>]>,
    writers: Vec<Arc<Notify>>,
    next: AtomicUsize,
}

/// Shards per writer: a writer that starts late (its worker was parked, and its thread waits
/// for a core behind the readers' wake-ups) leaves its shards to one that is done, an eighth at
/// a time, instead of adding its whole delay to the last client's wait.
const SHARDS_PER_WRITER: usize = 8;

#[derive(Debug)]
struct Shard {
    queue: Mutex<ShardQueue>,
    /// Its clients, held by whichever writer is writing this shard.
    clients: Mutex<ShardClients>,
    /// The writer whose shard this is at first: it is woken for its joins and leaves, and keeps
    /// its keep-alive.
    home: Arc<Notify>,
}

#[derive(Debug)]
struct ShardClients {
    list: Vec<Arc<Outbox>>,
    last_write: Instant,
}

#[derive(Debug, Default)]
struct ShardQueue {
    /// Framed messages not yet written to this shard's clients.
    messages: VecDeque<Bytes>,
    /// The newest [`Fanout::send_latest`] frame not yet written.
    latest: Option<Bytes>,
    /// Clients that joined since the writer last looked.
    joining: Vec<Joining>,
    /// Clients that left since the writer last looked: it lets go of them (and so of their
    /// sockets).
    leaving: Vec<Arc<Outbox>>,
    /// The writer has stopped (the server shuts down): nothing is kept here any more, or a
    /// socket would stay open for as long as the fan-out lives.
    stopped: bool,
}

impl ShardQueue {
    fn is_waiting(&self) -> bool {
        !self.messages.is_empty()
            || self.latest.is_some()
            || !self.joining.is_empty()
            || !self.leaving.is_empty()
    }
}

/// A client on its way in.
#[derive(Debug)]
struct Joining {
    outbox: Arc<Outbox>,
    /// How many of the queued messages were sent before it joined: those are not its own.
    sent_before: usize,
}

/// What a writer writes to its clients after a silence, and how long the silence is.
#[derive(Debug, Clone)]
struct KeepAlive {
    interval: Duration,
    frame: Bytes,
}

impl Shard {
    fn queue(&self) -> MutexGuard<'_, ShardQueue> {
        lock(&self.queue)
    }
}

/// Takes a lock of this module. A panic while one is held leaves its state as consistent as
/// between two writes (every change under it is a push, a pop or a flag), so a poisoned lock is
/// used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A client's place in a [`Fanout`]. Dropping it leaves: the client gets no more messages, and
/// its writer lets go of the socket.
#[derive(Debug)]
pub struct Member {
    shard: Arc<Shard>,
    outbox: Arc<Outbox>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.outbox.close_to_room();
        let mut queue = self.shard.queue();
        if !queue.stopped {
            queue.leaving.push(self.outbox.clone());
            drop(queue);
            self.shard.home.notify_one();
        }
    }
}

impl Fanout {
    /// One writer per worker thread of the current runtime, until shutdown. A client more than
    /// `backlog` messages behind is [`Offered::TooSlow`].
    pub fn new(backlog: usize, shutdown: &Shutdown) -> Self {
        Self::start(backlog, None, shutdown)
    }

    /// [`Fanout::new`], whose writers also write `frame` to their clients whenever they have
    /// written nothing for `interval`: one timer per writer, not one per client.
    pub fn with_keep_alive(
        backlog: usize,
        interval: Duration,
        frame: Bytes,
        shutdown: &Shutdown,
    ) -> Self {
        Self::start(backlog, Some(KeepAlive { interval, frame }), shutdown)
    }

    fn start(backlog: usize, keep_alive: Option<KeepAlive>, shutdown: &Shutdown) -> Self {
        let count = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        Self::with_writers(count, count, backlog, keep_alive, shutdown)
    }

    /// The shards of `count` writers, of which the first `running` are started: the others'
    /// shards are written only by those (a test's writer that never gets a turn).
    fn with_writers(
        count: usize,
        running: usize,
        backlog: usize,
        keep_alive: Option<KeepAlive>,
        shutdown: &Shutdown,
    ) -> Self {
        let writers: Vec<_> = (0..count).map(|_| Arc::new(Notify::new())).collect();
        let shards: Arc<[Arc<Shard>]> = (0..count * SHARDS_PER_WRITER)
            .map(|index| {
                Arc::new(Shard {
                    queue: Mutex::new(ShardQueue::default()),
                    clients: Mutex::new(ShardClients {
                        list: Vec::new(),
                        last_write: Instant::now(),
                    }),
                    home: writers[index / SHARDS_PER_WRITER].clone(),
                })
            })
            .collect();
        for (index, wake) in writers.iter().enumerate().take(running) {
            shutdown.spawn(write_shards(
                shards.clone(),
                index * SHARDS_PER_WRITER,
                wake.clone(),
                backlog.max(1),
                keep_alive.clone(),
                shutdown.clone(),
            ));
        }
        Self {
            shards,
            writers,
            next: AtomicUsize::new(0),
        }
    }

    /// Adds a client, to the shards in turn. It gets every message sent after this call, and
    /// none sent before, even one its writer has not written yet: a client that was sent what
    /// came before (a catch-up from a log, under the same lock as the sends) gets nothing twice.
    pub fn join(&self, outbox: Arc<Outbox>) -> Member {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let shard = self.shards[turn % self.shards.len()].clone();
        {
            let mut queue = shard.queue();
            let sent_before = queue.messages.len();
            if !queue.stopped {
                queue.joining.push(Joining {
                    outbox: outbox.clone(),
                    sent_before,
                });
            }
        }
        shard.home.notify_one();
        Member { shard, outbox }
    }

    /// Sends one framed message to every client.
    pub fn send(&self, frame: Bytes) {
        for shard in self.shards.iter() {
            shard.queue().messages.push_back(frame.clone());
        }
        self.wake_writers();
    }

    /// Sends a framed state (a count, a price), in place of the last one sent this way that a
    /// writer has not written yet: a client gets the newest, not every step. A client that
    /// joins before a writer gets to it gets it too.
    pub fn send_latest(&self, frame: Bytes) {
        for shard in self.shards.iter() {
            shard.queue().latest = Some(frame.clone());
        }
        self.wake_writers();
    }

    fn wake_writers(&self) {
        for writer in &self.writers {
            writer.notify_one();
        }
    }

    /// The most messages a writer has yet to start on: those waiting for a turn on a CPU.
    pub fn unwritten(&self) -> usize {
        let queued = self.shards.iter().map(|shard| shard.queue().messages.len());
        queued.max().unwrap_or(0)
    }
}

/// One writer: at each wake-up, writes every shard that has something waiting and that no
/// other writer holds, its own first. A shard is written as before: lets go of the clients that
/// left, writes every waiting message to every client as one batch, and takes in the clients
/// that joined, each with the messages sent after it joined.
async fn write_shards(
    shards: Arc<[Arc<Shard>]>,
    first: usize,
    wake: Arc<Notify>,
    backlog: usize,
    keep_alive: Option<KeepAlive>,
    shutdown: Shutdown,
) {
    let own = first..first + SHARDS_PER_WRITER;
    loop {
        let silence = async {
            match &keep_alive {
                Some(keep_alive) => {
                    // A shard another writer holds is being written: not silent.
                    let oldest = shards[own.clone()]
                        .iter()
                        .filter_map(|shard| shard.clients.try_lock().ok())
                        .map(|clients| clients.last_write)
                        .min()
                        .unwrap_or_else(Instant::now);
                    tokio::time::sleep_until(oldest + keep_alive.interval).await
                }
                None => std::future::pending().await,
            }
        };
        let mut silent = false;
        tokio::select! {
            () = wake.notified() => {}
            () = silence => silent = true,
            () = shutdown.requested() => {
                for shard in &shards[own] {
                    *shard.queue() = ShardQueue { stopped: true, ..ShardQueue::default() };
                    lock(&shard.clients).list.clear();
                }
                return;
            }
        }
        let count = shards.len();
        let mut again = false;
        for turn in 0..count {
            let index = (first + turn) % count;
            let keep_alive = keep_alive
                .as_ref()
                .filter(|_| silent && own.contains(&index));
            again |= write_shard(&shards[index], backlog, keep_alive);
        }
        if again {
            // Another pass, after every other shard had its turn in this one.
            wake.notify_one();
        }
    }
}

/// Writes what waits for one shard, if no other writer is on it; and a keep-alive, if given
/// one and the shard has been silent that long. Returns whether more waits for it now: sent
/// while this writer held it, by a sender whose writers found it held and passed it by.
///
/// A client that leaves is removed in O(1), by the slot it holds in the list: a crowd of n
/// leaving at once (every tab closed after a broadcast, a server draining) must not cost n
/// passes over n clients.
fn write_shard(shard: &Shard, backlog: usize, keep_alive: Option<&KeepAlive>) -> bool {
    let mut clients = match shard.clients.try_lock() {
        Ok(clients) => clients,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        // Another writer is on it, and looks again once it lets go.
        Err(TryLockError::WouldBlock) => return false,
    };
    let (joining, leaving, mut frames) = {
        let mut queue = shard.queue();
        let mut frames = Vec::from(std::mem::take(&mut queue.messages));
        frames.extend(queue.latest.take());
        (
            std::mem::take(&mut queue.joining),
            std::mem::take(&mut queue.leaving),
            frames,
        )
    };
    let ShardClients { list, last_write } = &mut *clients;
    for client in leaving {
        let slot = client.slot.load(Ordering::Relaxed);
        // One that joined and left before this writer took it in was never in the list.
        if !list.get(slot).is_some_and(|at| Arc::ptr_eq(at, &client)) {
            continue;
        }
        list.swap_remove(slot);
        if let Some(moved) = list.get(slot) {
            moved.slot.store(slot, Ordering::Relaxed);
        }
    }
    if let Some(keep_alive) = keep_alive
        && frames.is_empty()
        && last_write.elapsed() >= keep_alive.interval
    {
        frames.push(keep_alive.frame.clone());
    }
    let batch = join_frames(&frames);
    if !frames.is_empty() {
        for client in list.iter() {
            client.offer(&batch, frames.len(), backlog);
        }
        *last_write = Instant::now();
    }
    for Joining {
        outbox,
        sent_before,
    } in joining
    {
        if outbox.is_closed_to_room() {
            continue;
        }
        let own = &frames[sent_before..];
        if !own.is_empty() {
            let own_batch = if sent_before == 0 {
                batch.clone()
            } else {
                join_frames(own)
            };
            outbox.offer(&own_batch, own.len(), backlog);
        }
        outbox.slot.store(list.len(), Ordering::Relaxed);
        list.push(outbox);
    }
    drop(clients);
    shard.queue().is_waiting()
}

/// One `Bytes` for several frames, so that each client gets them in one write.
fn join_frames(frames: &[Bytes]) -> Bytes {
    if let [one] = frames {
        return one.clone();
    }
    let mut batch = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for frame in frames {
        batch.extend_from_slice(frame);
    }
    batch.freeze()
}
// ANCHOR_END: fanout

// ANCHOR: text_frame
/// A text message framed as a server sends it (one final, unmasked frame), for
/// [`Fanout::send`]: framed once, written to every client as it is.
pub fn text_frame(text: Utf8Bytes) -> Bytes {
    let frame = Frame::message(Bytes::from(text), OpCode::Data(Data::Text), true);
    let mut framed = Vec::with_capacity(frame.len());
    frame
        .format(&mut framed)
        .expect("writing to a Vec cannot fail");
    framed.into()
}
// ANCHOR_END: text_frame

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    use super::*;

    const WITHIN: Duration = Duration::from_secs(10);

    /// A connected pair over loopback: the server's end, and the client's. Their buffers are
    /// small, so that the server's socket fills after kilobytes, not megabytes.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpSocket::new_v4().expect("socket");
        // An accepted socket takes its send buffer from the listening one.
        listener.set_send_buffer_size(8192).expect("SO_SNDBUF");
        listener
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener: TcpListener = listener.listen(8).expect("listen");
        let client = tokio::net::TcpSocket::new_v4().expect("socket");
        client.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let client = client.connect(listener.local_addr().expect("addr"));
        let (client, accepted) = tokio::join!(client, listener.accept());
        (accepted.expect("accept").0, client.expect("connect"))
    }

    async fn server_socket(socket: TcpStream, read_ahead: &[u8]) -> (Arc<Outbox>, SharedWebSocket) {
        let outbox = Outbox::new(socket);
        let io = SharedIo::new(outbox.clone(), Bytes::copy_from_slice(read_ahead));
        (
            outbox,
            WebSocketStream::from_raw_socket(io, Role::Server, None).await,
        )
    }

    async fn client_socket(socket: TcpStream) -> WebSocketStream<TcpStream> {
        WebSocketStream::from_raw_socket(socket, Role::Client, None).await
    }

    /// The shard's batches and the session's own frames share one socket that fills up: the
    /// client still reads whole, valid frames, the shard's in the order they were offered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_never_split_a_frame() {
        let (server, client) = pair().await;
        // Every frame the session writes goes to the socket at once, not only at a flush, so
        // that its writes meet the shard's in the middle of the run.
        let outbox = Outbox::new(server);
        let io = SharedIo::new(outbox.clone(), Bytes::new());
        let config = WebSocketConfig::default().write_buffer_size(0);
        let mut session = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let mut client = client_socket(client).await;
        let text = "x".repeat(1000);
        let shard = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut queued = 0;
                for n in 0..3000 {
                    let frame = text_frame(format!("{n} {text}").into());
                    if outbox.offer(&frame, 1, usize::MAX) == Offered::Queued {
                        queued += 1;
                    }
                    // Still offering while the client reads and the session writes out.
                    if n % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                queued
            })
        };
        // The session writes while the shard does, then does what a session does: writes out
        // what waits whenever it is told to.
        let pings = tokio::spawn(async move {
            for n in 0..300 {
                let ping = Message::Ping(format!("{n}").into_bytes().into());
                session.feed(ping).await.expect("ping");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            session.flush().await.expect("flush");
            while tokio::time::timeout(Duration::from_secs(1), outbox.needs_attention())
                .await
                .is_ok()
            {
                session.flush().await.expect("flush");
            }
            session
        });
        // Read only once the socket has filled, so that both writers had to queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut next = 0;
        while next < 3000 {
            let message = tokio::time::timeout(WITHIN, client.next()).await;
            match message
                .expect("in time")
                .expect("open")
                .expect("a valid frame")
            {
                Message::Text(got) => {
                    let start = got.get(..10).unwrap_or(&got);
                    assert!(got.starts_with(&format!("{next} ")), "{next}: {start}");
                    next += 1;
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(shard.await.expect("shard") > 0, "the socket never filled");
        tokio::time::timeout(WITHIN, pings)
            .await
            .expect("the session's writes finish")
            .expect("session");
    }

    /// A client that reads nothing gets a backlog queued, and is then too slow: its session is
    /// told, and it takes no more room messages.
    #[tokio::test]
    async fn a_client_a_backlog_behind_is_too_slow() {
        let (server, _client) = pair().await;
        let (outbox, _session) = server_socket(server, b"").await;
        let frame = text_frame("y".repeat(60_000).into());
        let mut offers = Vec::new();
        loop {
            let offered = outbox.offer(&frame, 1, 8);
            offers.push(offered);
            if offered != Offered::Written && offered != Offered::Queued {
                break;
            }
            assert!(offers.len() < 10_000, "never too slow");
        }
        let queued = offers.iter().filter(|&&o| o == Offered::Queued).count();
        assert_eq!(queued, 8, "{offers:?}");
        assert_eq!(offers.last(), Some(&Offered::TooSlow));
        tokio::time::timeout(WITHIN, outbox.needs_attention())
            .await
            .expect("the session is told");
        assert!(outbox.too_slow());
        assert_eq!(outbox.offer(&frame, 1, 8), Offered::Refused);
    }

    /// Bytes a session pushes that the socket does not take at once ask for its attention
    /// without any room message: an event stream's catch-up, larger than the socket's buffer,
    /// is then written out in a quiet room too, all of it.
    #[tokio::test]
    async fn pushed_bytes_left_waiting_ask_for_attention() {
        let (server, mut client) = pair().await;
        let outbox = Outbox::new(server);
        let catch_up = Bytes::from(vec![b'c'; 8 * 1024 * 1024]);
        outbox.push(catch_up.clone()).expect("push");
        tokio::time::timeout(WITHIN, outbox.needs_attention())
            .await
            .expect("the session is told that bytes wait");
        let flushing = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.flush().await })
        };
        let mut received = vec![0u8; catch_up.len()];
        tokio::time::timeout(WITHIN, client.read_exact(&mut received))
            .await
            .expect("in time")
            .expect("every byte");
        assert_eq!(received, catch_up);
        tokio::time::timeout(WITHIN, flushing)
            .await
            .expect("the flush finishes")
            .expect("flush task")
            .expect("flushed");
    }

    /// Bytes the HTTP server read past the handshake are the session's first frames.
    #[tokio::test]
    async fn the_read_ahead_comes_first() {
        let (server, client) = pair().await;
        let mut first = Vec::new();
        Frame::message(Bytes::from_static(b"early"), OpCode::Data(Data::Text), true)
            .format(&mut first)
            .expect("format");
        // A client's frame is masked; tungstenite's client role masks, so frame one by hand.
        let mask = [1u8, 2, 3, 4];
        let payload: Vec<u8> = b"early"
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4])
            .collect();
        let mut masked = vec![0x81, 0x80 | 5];
        masked.extend_from_slice(&mask);
        masked.extend_from_slice(&payload);
        let (_outbox, mut session) = server_socket(server, &masked).await;
        let mut client = client_socket(client).await;
        client.send(Message::text("later")).await.expect("send");
        for expected in ["early", "later"] {
            let got = tokio::time::timeout(WITHIN, session.next()).await;
            let got = got.expect("in time").expect("open").expect("valid");
            assert_eq!(got, Message::text(expected));
        }
    }

    /// A member that leaves is let go by its writer at once, not at the next message: its
    /// socket closes when the session drops its own handle, in a room that has gone quiet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leaver_is_let_go_without_another_message() {
        let shutdown = Shutdown::new();
        let fanout = Fanout::new(8, &shutdown);
        let (server, mut client) = pair().await;
        let (outbox, session) = server_socket(server, b"").await;
        let member = fanout.join(outbox.clone());
        fanout.send(text_frame("hello".into()));
        let mut hello = [0u8; 7];
        let read = tokio::time::timeout(WITHIN, client.read_exact(&mut hello)).await;
        read.expect("in time").expect("the message");
        assert_eq!(&hello, b"\x81\x05hello");
        drop(member);
        drop(session);
        drop(outbox);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WITHIN, client.read_to_end(&mut rest)).await;
        closed.expect("the socket closes").expect("read");
        assert!(rest.is_empty(), "{rest:?}");
        shutdown.trigger();
    }
    /// Clients leaving in any order are each let go, and everyone else still gets every
    /// message: the writer's bookkeeping of who is where survives a crowd leaving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crowd_leaving_in_any_order_leaves_the_rest_served() {
        let shutdown = Shutdown::new();
        let fanout = Fanout::new(8, &shutdown);
        let mut clients = Vec::new();
        for _ in 0..40 {
            let (server, client) = pair().await;
            let (outbox, session) = server_socket(server, b"").await;
            let member = fanout.join(outbox);
            clients.push((Some((member, session)), client));
        }
        // Every third and every odd client, first to last: each removal moves the last client
        // into the gap, and that one is often a leaver still to go.
        let leavers: Vec<usize> = (0..40).filter(|n| n % 3 == 0 || n % 2 == 1).collect();
        for &n in &leavers {
            clients[n].0 = None;
        }
        fanout.send(text_frame("after".into()));
        for (n, (stayed, client)) in clients.iter_mut().enumerate() {
            let mut got = Vec::new();
            if stayed.is_some() {
                let mut frame = [0u8; 7];
                let read = tokio::time::timeout(WITHIN, client.read_exact(&mut frame)).await;
                read.expect("in time").expect("the message");
                got.extend_from_slice(&frame);
                assert_eq!(&got, b"\x81\x05after", "client {n}");
            } else {
                let closed = tokio::time::timeout(WITHIN, client.read_to_end(&mut got)).await;
                closed.expect("the socket closes").expect("read");
                assert!(got.is_empty(), "client {n} left but got {got:?}");
            }
        }
        shutdown.trigger();
    }

    /// A writer that does not get a turn leaves its shards to the other: every client has the
    /// message, those its shards hold too. (With one shard per writer, which only that writer
    /// wrote, they waited for it: the last client's wait held the late writer's whole delay.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_without_a_turn_leaves_its_shards_to_the_other() {
        let shutdown = Shutdown::new();
        let fanout = Fanout::with_writers(2, 1, 8, None, &shutdown);
        let mut clients = Vec::new();
        for _ in 0..2 * SHARDS_PER_WRITER {
            let (server, client) = pair().await;
            clients.push((fanout.join(Outbox::new(server)), client));
        }
        fanout.send(Bytes::from_static(b"to all;"));
        for (n, (_member, client)) in clients.iter_mut().enumerate() {
            let mut got = [0; 7];
            let read = tokio::time::timeout(WITHIN, client.read_exact(&mut got)).await;
            read.unwrap_or_else(|_| panic!("client {n} waited"))
                .expect("read");
            assert_eq!(&got, b"to all;", "client {n}");
        }
        shutdown.trigger();
    }

    /// A client gets what is sent after it joined and nothing sent before, even what its writer
    /// had not written yet; a state sent with `send_latest` arrives once, at its newest.
    #[tokio::test]
    async fn a_joiner_gets_only_what_is_sent_after_it_joined() {
        // One worker: the writer runs only when the test waits, so all of this is one turn.
        let shutdown = Shutdown::new();
        let fanout = Fanout::new(8, &shutdown);
        let ((early_server, mut early), (late_server, mut late)) = (pair().await, pair().await);
        let _early = fanout.join(Outbox::new(early_server));
        fanout.send(Bytes::from_static(b"before;"));
        let _late = fanout.join(Outbox::new(late_server));
        fanout.send_latest(Bytes::from_static(b"count 1;"));
        fanout.send_latest(Bytes::from_static(b"count 2;"));
        fanout.send(Bytes::from_static(b"after;"));
        for (client, expected) in [
            (&mut early, b"before;after;count 2;".as_slice()),
            (&mut late, b"after;count 2;"),
        ] {
            let mut got = vec![0; expected.len()];
            let read = tokio::time::timeout(WITHIN, client.read_exact(&mut got)).await;
            read.expect("in time").expect("read");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected)
            );
        }
        shutdown.trigger();
    }
}
