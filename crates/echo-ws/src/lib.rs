//! echo-ws: a WebSocket broadcast room, and a pure RFC 6455 echo, on hyper.
//!
//! Run with
//!
//! ```text
//! cargo run -p echo-ws
//! ```
//!
//! then open <http://127.0.0.1:3001> in two browser tabs and type in one: the message appears in
//! both, with the number of the connection that sent it. From a terminal,
//! `cargo run --example ws_client -- ws://127.0.0.1:3001/ws` joins the same room.
//!
//! | route | what it serves |
//! | --- | --- |
//! | `GET /` | the page |
//! | `GET /ws` | the room: every text message from any client goes to every client, as JSON |
//! | `GET /echo` | each text or binary message straight back to its sender (for Autobahn) |
//! | `GET /stats` | `{"clients": <in the room>, "messages_relayed": <n>, "echo_sockets": <n>}`, and `"subscribed": <bool>` with `--redis` |
//!
//! What the room sends, one JSON object per WebSocket text message:
//!
//! ```text
//! {"type":"welcome","client":7,"clients":3}        to a new client only: its own number
//! {"type":"join","client":7,"clients":3}           someone came in (the newcomer sees it too)
//! {"type":"message","from":7,"text":"hello"}      a message, to everyone, the sender too
//! {"type":"leave","client":7,"clients":2,"reason":"closed"}
//! ```
//!
//! `reason` is `closed` (the client closed or disconnected), `silent` (no answer to our pings),
//! `too_slow` (could not keep up), `refused` (broke a rule: binary data, too big, bad UTF-8) or
//! `shutdown`.
//!
//! With `--redis URL` (or `REDIS_URL`), every instance given the same Redis serves one room:
//! see `redis_room.rs`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use askama::Template;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use realtime_kit::backplane::Backplane;
use realtime_kit::fanout::{self, Fanout, Outbox, SharedWebSocket};
use realtime_kit::ws::{self, Beat, Heartbeat, Limits, OriginPolicy, WebSocket};
use realtime_kit::{
    Gauge, GaugeGuard, RequestBody, ResponseBody, ServerOptions, Shutdown, respond,
};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::time::error::Elapsed;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

mod redis_room;
use redis_room::RedisRoom;

/// The port `cargo run -p echo-ws` listens on.
pub const DEFAULT_PORT: u16 = 3001;

// ANCHOR: config
/// How the server behaves; [`Config::default`] is what `main` uses, tests shorten the times.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which pages may connect (`Origin`); same origin only, plus `--allow-origin`.
    pub origins: OriginPolicy,
    /// Limits of a room socket: small messages (64 KiB), small buffers, many clients.
    pub room_limits: Limits,
    /// Limits of an echo socket. Autobahn's largest case sends one 16 MiB message, so the
    /// conformance endpoint accepts that much; the room does not need to.
    pub echo_limits: Limits,
    /// Time between Pings.
    pub ping_interval: Duration,
    /// How long a client may send nothing (not even a Pong) before it is closed.
    pub idle_timeout: Duration,
    /// How long one message may take to be written to a client. A client that does not read
    /// (its TCP window stays shut) blocks our write; past this it is dropped as too slow.
    pub send_timeout: Duration,
    /// How many room messages may wait for a client's socket before the client is closed as
    /// too slow. Each message lives once, framed, and a waiting one is a reference to it, so
    /// this bounds memory whatever the number of clients.
    pub backlog: usize,
    /// How many join and leave notices a client may fall behind before it skips them and gets
    /// one `presence` notice with the count instead. A notice, unlike a message, is not worth
    /// closing a client over; the notices live once, in one ring shared by every client, so
    /// this bounds memory the same way.
    pub presence_backlog: usize,
    /// Most clients in the room at once; the next one gets `503`. Each costs a file descriptor
    /// and a few KB (see the book), so the limit keeps the server inside its budget. A place
    /// is reserved before the `101` is sent, so the limit holds however many handshakes
    /// arrive at once.
    pub max_clients: usize,
    /// The server's limits and the host names it answers (`--allow-host`).
    pub server: ServerOptions,
    /// Where the room's messages travel: this process only, or every instance on one Redis
    /// (`--redis`), over PUB/SUB, at most once.
    pub backplane: Backplane,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            origins: OriginPolicy::same_origin_only(),
            // A room socket mostly waits, so its read buffer is most of what an idle client
            // costs: 1 KiB instead of the kit's 4 saves 3 KiB per client. Messages up to 1 KiB
            // (most chat lines) still take one read; a 64 KiB message takes 64 reads instead of
            // 16, measured ~20 µs more, small next to sending it to the room.
            room_limits: Limits {
                read_buffer_size: 1024,
                ..Limits::default()
            },
            echo_limits: Limits::with_max_message_size(16 * 1024 * 1024),
            ping_interval: Duration::from_secs(15),
            // Two missed Pongs and some slack for a slow network.
            idle_timeout: Duration::from_secs(35),
            send_timeout: Duration::from_secs(10),
            backlog: 128,
            presence_backlog: 64,
            max_clients: 10_000,
            server: ServerOptions::default(),
            backplane: Backplane::InProcess,
        }
    }
}
// ANCHOR_END: config

/// Serves the room and the echo on `listener` until `shutdown_signal` completes; then every open
/// socket receives Close 1001 (going away) and `run` returns.
pub async fn run(listener: TcpListener, config: Config, shutdown_signal: impl Future<Output = ()>) {
    let mut shutdown_signal = std::pin::pin!(shutdown_signal);
    let shutdown = Shutdown::new();
    let options = config.server.clone();
    let mut room = Room::new(config.backlog, config.presence_backlog, &shutdown);
    if let Backplane::Redis(redis) = &config.backplane {
        // Client numbers must be unique across instances before the first client joins.
        let Some(instance) = redis_room::number_instance(redis, shutdown_signal.as_mut()).await
        else {
            shutdown.trigger();
            return;
        };
        tracing::info!(instance, "sharing the room through Redis");
        room.next_client = AtomicU64::new(instance * redis_room::CLIENTS_PER_INSTANCE + 1);
        room.redis = Some(RedisRoom {
            redis: redis.clone(),
            subscribed: AtomicBool::new(false),
        });
    }
    let app = Arc::new(App {
        room,
        echo_sockets: Gauge::new(),
        config,
        shutdown: shutdown.clone(),
    });
    if app.room.redis.is_some() {
        shutdown.spawn(redis_room::relay(app.clone(), shutdown.clone()));
    }
    realtime_kit::serve_with(
        options,
        listener,
        shutdown_signal,
        shutdown,
        move |request| {
            let app = app.clone();
            async move { app.handle(request) }
        },
    )
    .await;
}

/// What every request handler shares.
struct App {
    room: Room,
    /// Open `/echo` sockets, for `/stats`.
    echo_sockets: Gauge,
    config: Config,
    /// Every socket's session watches it, so that shutdown closes each with 1001.
    shutdown: Shutdown,
}

impl App {
    // ANCHOR: routes
    fn handle(self: &Arc<Self>, request: Request<RequestBody>) -> Response<ResponseBody> {
        let path = request.uri().path().to_owned();
        match (request.method(), path.as_str()) {
            (&Method::GET, "/") => respond::html(&RoomPage {
                max_message_kib: self.config.room_limits.max_message_size / 1024,
            }),
            (&Method::GET, "/ws") => self.join_room(request),
            (&Method::GET, "/echo") => {
                let app = self.clone();
                ws::upgrade(
                    request,
                    &self.config.origins,
                    self.config.echo_limits,
                    &self.shutdown,
                    move |socket| echo_session(socket, app),
                )
            }
            (&Method::GET, "/stats") => respond::json(StatusCode::OK, &self.stats()),
            (method, "/" | "/ws" | "/echo" | "/stats") => {
                respond::method_not_allowed(method, &[Method::GET])
            }
            _ => respond::not_found(&path),
        }
    }
    // ANCHOR_END: routes

    // ANCHOR: join_room
    /// `GET /ws`: reserves a place in the room, then upgrades and runs a room session.
    ///
    /// The place is taken before the `101` is sent, in one atomic step, and the guard moves
    /// into the session: checking the count here and counting the client later, in the
    /// session, let every handshake that arrived in between through (60 at once against a limit
    /// of 20 got up to 60 `101`s). If the handshake is refused or the client leaves before the
    /// upgrade, the closure and the guard in it are dropped, and the place is free again.
    fn join_room(self: &Arc<Self>, request: Request<RequestBody>) -> Response<ResponseBody> {
        let Some(place) = self.room.clients.try_enter(self.config.max_clients) else {
            return respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the room is full ({} clients); try again later",
                    self.config.max_clients
                ),
            );
        };
        let app = self.clone();
        ws::upgrade_shared(
            request,
            &self.config.origins,
            self.config.room_limits,
            &self.shutdown,
            move |socket, outbox| room_session(socket, outbox, place, app),
        )
    }
    // ANCHOR_END: join_room

    fn stats(&self) -> Stats {
        Stats {
            clients: self.room.clients.get(),
            messages_relayed: self.room.relayed.load(Ordering::Relaxed),
            echo_sockets: self.echo_sockets.get(),
            subscribed: self
                .room
                .redis
                .as_ref()
                .map(|redis| redis.subscribed.load(Ordering::Acquire)),
        }
    }
}

/// The page at `/`; its markup and script are in `templates/room.html`.
#[derive(Template)]
#[template(path = "room.html")]
struct RoomPage {
    /// Shown on the page, and the length limit of its text box.
    max_message_kib: usize,
}

/// The body of `GET /stats`.
#[derive(Debug, Serialize)]
struct Stats {
    /// Clients in the room now.
    clients: usize,
    /// Text messages relayed to the room since the server started (each counted once, however
    /// many clients received it).
    messages_relayed: u64,
    /// Open `/echo` sockets.
    echo_sockets: usize,
    /// With `--redis` only: whether this instance is subscribed to the room's channel now, and so
    /// hears the other instances. While it is not, its room is local (and misses theirs).
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribed: Option<bool>,
}

// ANCHOR: room
/// The broadcast room: every client's socket in a [`Fanout`], written by one task per core.
struct Room {
    /// Every message of the room goes out through here, already encoded and framed: one message
    /// to 10,000 clients is encoded once, and written from that one copy by the writer of each
    /// client's shard. A client with [`Config::backlog`] messages waiting for its socket is
    /// closed as too slow (see [`converse`]).
    fanout: Fanout,
    /// Join and leave notices, in a ring of their own ([`Config::presence_backlog`]). A message
    /// matters; a notice does not: a client that falls behind on them (a crowd reconnecting at
    /// once after a restart, where every join goes to everyone) skips to one `presence` notice
    /// with the current count instead of being closed. In one shared ring, such a storm closed
    /// most of a thousand clients as too slow.
    presence: broadcast::Sender<Utf8Bytes>,
    /// Joins and leaves on their way to [`announce`], which tells them to the room without
    /// flooding it. Bounded: in a storm, a session waits a moment to be announced.
    changes: mpsc::Sender<Change>,
    /// Clients in the room, for the join and leave notices and `/stats`.
    clients: Gauge,
    /// Gives each connection its number: the sender id in every message.
    next_client: AtomicU64,
    /// Messages relayed so far, for `/stats`.
    relayed: AtomicU64,
    /// With `--redis`: the link to the other instances. Messages then enter the fan-out through
    /// the subscription, not from [`Room::publish`] directly.
    redis: Option<RedisRoom>,
}

/// One thing that happens in the room, as the JSON text every client receives.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RoomEvent<'a> {
    Welcome {
        client: u64,
        clients: usize,
    },
    Join {
        client: u64,
        clients: usize,
    },
    Message {
        from: u64,
        text: &'a str,
    },
    Leave {
        client: u64,
        clients: usize,
        reason: Left,
    },
    /// Several joins and leaves told at once (`joined`, `left`), or the notices a client fell
    /// behind on (`missed`); either way with the number of clients now.
    Presence {
        clients: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        joined: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        left: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<u64>,
    },
}

/// A join or a leave, already encoded as its own notice.
#[derive(Debug)]
struct Change {
    notice: Utf8Bytes,
    joined: bool,
}

/// How long [`announce`] gathers joins and leaves after telling one, before telling the rest.
const COALESCE_WINDOW: Duration = Duration::from_millis(100);

/// How often [`Room::pace`] looks at the writers again: a queue that more than half fills takes
/// a round of a whole shard to drain, milliseconds at least, so a finer step only burns CPU.
const PACE_STEP: Duration = Duration::from_millis(1);

/// Joins and leaves that may wait to be announced; more make their sessions wait.
const PENDING_CHANGES: usize = 4096;

/// Why a client left the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Left {
    /// The client closed the socket, or the connection dropped.
    Closed,
    /// Nothing arrived from it for [`Config::idle_timeout`].
    Silent,
    /// It had [`Config::backlog`] messages waiting, or one write took [`Config::send_timeout`].
    TooSlow,
    /// It broke a rule and was closed with the matching code (1003, 1007, 1009, 1002).
    Refused,
    /// The server is shutting down.
    Shutdown,
}

impl RoomEvent<'_> {
    fn encode(&self) -> Utf8Bytes {
        serde_json::to_string(self)
            .expect("room events always serialise")
            .into()
    }
}

impl Room {
    /// A room, and the task that announces its joins and leaves until shutdown.
    fn new(backlog: usize, presence_backlog: usize, shutdown: &Shutdown) -> Self {
        let (presence, _) = broadcast::channel(presence_backlog.max(1));
        let (changes, pending) = mpsc::channel(PENDING_CHANGES);
        let clients = Gauge::new();
        shutdown.spawn(announce(
            pending,
            presence.clone(),
            clients.clone(),
            shutdown.clone(),
        ));
        Self {
            fanout: Fanout::new(backlog, shutdown),
            presence,
            changes,
            clients,
            next_client: AtomicU64::new(1),
            relayed: AtomicU64::new(0),
            redis: None,
        }
    }

    // ANCHOR: publish
    /// Sends a message to the room: to this process's clients, or with `--redis` to every
    /// instance's through Redis (see `redis_room.rs`).
    async fn publish(&self, event: &RoomEvent<'_>) {
        match &self.redis {
            None => self.deliver(event.encode()),
            Some(redis) => redis_room::publish(redis, self, event.encode()).await,
        }
    }

    /// Frames an encoded message and hands it to the writers, for every client of this
    /// instance.
    fn deliver(&self, text: Utf8Bytes) {
        self.fanout.send(fanout::text_frame(text));
    }
    // ANCHOR_END: publish

    /// Waits while a writer has more than half a backlog of messages it has not started on,
    /// for at most [`Config::send_timeout`]. A writer takes all that waits at each turn, so
    /// this waits only for a writer that has not had a turn on a CPU: on a multi-thread
    /// runtime, one queued on another worker while this one went on publishing. It is what
    /// bounds the writers' queues: a client that sends faster than the room can be written
    /// waits here, its socket's unread bytes push back on it through TCP, and no queue grows.
    async fn pace(&self, config: &Config) {
        let half = config.backlog.max(2) / 2;
        let until = tokio::time::Instant::now() + config.send_timeout;
        while self.fanout.unwritten() > half && tokio::time::Instant::now() < until {
            tokio::time::sleep(PACE_STEP).await;
        }
    }

    /// Hands a join or leave notice to [`announce`].
    async fn announce(&self, event: &RoomEvent<'_>) {
        let change = Change {
            notice: event.encode(),
            joined: matches!(event, RoomEvent::Join { .. }),
        };
        // An error means the announcer has stopped: the server is shutting down.
        let _ = self.changes.send(change).await;
    }
}

/// Tells the room about joins and leaves without flooding it. Each one sent to everyone is
/// O(n) work, so a crowd of n arriving at once (every page reconnecting after a restart) would
/// cost O(n²). Instead, the first change after a quiet spell is told at once, and whatever
/// arrives in the next [`COALESCE_WINDOW`] is told together: one `presence` notice with how many
/// joined and left, or the single notice if there was only one.
async fn announce(
    mut pending: mpsc::Receiver<Change>,
    presence: broadcast::Sender<Utf8Bytes>,
    clients: Gauge,
    shutdown: Shutdown,
) {
    loop {
        let first = tokio::select! {
            change = pending.recv() => match change {
                Some(change) => change,
                None => return,
            },
            () = shutdown.requested() => return,
        };
        let _ = presence.send(first.notice);
        tokio::select! {
            () = tokio::time::sleep(COALESCE_WINDOW) => {}
            () = shutdown.requested() => return,
        }
        let mut batch = Vec::new();
        while batch.len() < PENDING_CHANGES {
            match pending.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        let notice = match batch.as_slice() {
            [] => continue,
            [one] => one.notice.clone(),
            many => {
                let joined = many.iter().filter(|change| change.joined).count();
                RoomEvent::Presence {
                    clients: clients.get(),
                    joined: Some(joined),
                    left: Some(many.len() - joined),
                    missed: None,
                }
                .encode()
            }
        };
        let _ = presence.send(notice);
    }
}
// ANCHOR_END: room

// ANCHOR: room_session
/// One client in the room, from the upgrade to the leave notice.
///
/// Not an `async fn`: the future of an `async fn` holds a second copy of its arguments
/// (rust-lang/rust#62958), and a WebSocket is over 300 bytes. This future lives as long as the
/// connection, so the copy would cost every idle client that much; an `async move` block that
/// only borrows the socket keeps one.
#[expect(clippy::manual_async_fn, reason = "keeps one copy of the socket")]
fn room_session(
    mut socket: SharedWebSocket,
    outbox: Arc<Outbox>,
    place: GaugeGuard,
    app: Arc<App>,
) -> impl Future<Output = ()> + Send {
    async move {
        let room = &app.room;
        let config = &app.config;
        let client = room.next_client.fetch_add(1, Ordering::Relaxed);
        let welcome = RoomEvent::Welcome {
            client,
            clients: room.clients.get(),
        };
        // The welcome goes out before the client joins the fan-out, so that it comes first.
        let welcomed = send(&mut socket, Message::Text(welcome.encode()), config).await;
        let (reason, ending) = match welcomed.ends_session() {
            Some(reason) => (reason, Ending::Gone),
            None => {
                // Subscribe before announcing, so that the client's own join is in its stream.
                let member = room.fanout.join(outbox.clone());
                let mut notices = room.presence.subscribe();
                let join = RoomEvent::Join {
                    client,
                    clients: room.clients.get(),
                };
                room.announce(&join).await;
                let ended = converse(&mut socket, &outbox, client, &mut notices, &app).await;
                // Leaving the fan-out before the Close frame: no room message may follow it.
                drop(member);
                ended
            }
        };
        ending.close(&mut socket).await;
        drop(place);
        room.announce(&RoomEvent::Leave {
            client,
            clients: room.clients.get(),
            reason,
        })
        .await;
        tracing::debug!(client, ?reason, "left the room");
    }
}

/// How a session's socket is ended, once it has left the fan-out.
#[derive(Debug)]
enum Ending {
    /// Nothing to send: the connection is gone, or the closing handshake is done.
    Gone,
    /// The client sent Close: flush the answer tungstenite has queued.
    Answer,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
    /// Close with the code for what the client sent wrong.
    Refuse(WsError),
    /// Close with 1008 "too slow".
    TooSlow,
}

impl Ending {
    async fn close(self, socket: &mut SharedWebSocket) {
        match self {
            Ending::Gone => {}
            Ending::Answer => ws::answer_close(socket).await,
            Ending::Close(code, reason) => ws::close(socket, code, reason).await,
            Ending::Refuse(error) => {
                ws::close_after_error(socket, &error).await;
            }
            Ending::TooSlow => {
                ws::close(socket, CloseCode::Policy, "too slow: fell behind the room").await;
            }
        }
    }
}

/// The session's loop: whatever comes first of a client's message, bytes waiting for its
/// socket, a notice, the heartbeat, or shutdown. The room's messages do not pass through here:
/// the client's shard writer sends them. Returns why the client left and how to end its socket.
async fn converse(
    socket: &mut SharedWebSocket,
    outbox: &Outbox,
    client: u64,
    notices: &mut broadcast::Receiver<Utf8Bytes>,
    app: &App,
) -> (Left, Ending) {
    let config = &app.config;
    let room = &app.room;
    let mut heartbeat = Heartbeat::new(config.ping_interval, config.idle_timeout);
    loop {
        tokio::select! {
            incoming = socket.next() => {
                heartbeat.heard();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        room.relayed.fetch_add(1, Ordering::Relaxed);
                        let message = RoomEvent::Message { from: client, text: &text };
                        // Awaited (one PUBLISH with Redis): one sender's messages leave in the
                        // order it sent them.
                        room.publish(&message).await;
                        // Read the client's next message only once the writers have caught up:
                        // a burst (hundreds of small messages in one read) must not pile up
                        // faster than they write it out, whichever thread they run on.
                        room.pace(config).await;
                    }
                    // Decision: the room relays text only. RFC 6455's code for "a type of data
                    // this endpoint cannot accept" is 1003; the page never sends binary.
                    Some(Ok(Message::Binary(_))) => {
                        let reason = "this room relays text messages only";
                        return (Left::Refused, Ending::Close(CloseCode::Unsupported, reason));
                    }
                    Some(Ok(Message::Close(_))) => return (Left::Closed, Ending::Answer),
                    // tungstenite answers Pings by itself; a Pong only needed to be heard.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(error)) => {
                        let left = match ws::close_code_for(&error) {
                            Some(_) => Left::Refused,
                            None => Left::Closed,
                        };
                        return (left, Ending::Refuse(error));
                    }
                    None => return (Left::Closed, Ending::Gone),
                }
            }
            // The policy for a client that cannot keep up: it is closed, never skipped
            // silently and never waited for. The others are not slowed by it (its writer
            // queues what its socket does not take and goes on) and memory does not grow (the
            // queue holds at most a backlog, each message a reference to the one copy).
            () = outbox.needs_attention() => {
                if outbox.too_slow() {
                    tracing::info!(client, "closing a client that fell behind");
                    return (Left::TooSlow, Ending::TooSlow);
                }
                if let Some(reason) = flush(socket, config).await.ends_session() {
                    return (reason, ending_for(reason));
                }
            }
            notice = notices.recv() => {
                let text = match notice {
                    Ok(text) => text,
                    // Behind on joins and leaves: skip them, say how many are in the room now.
                    Err(RecvError::Lagged(missed)) => {
                        RoomEvent::Presence {
                            clients: room.clients.get(),
                            joined: None,
                            left: None,
                            missed: Some(missed),
                        }
                        .encode()
                    }
                    Err(RecvError::Closed) => return (Left::Shutdown, Ending::Gone),
                };
                let sent = send(socket, Message::Text(text), config).await;
                if let Some(reason) = sent.ends_session() {
                    return (reason, ending_for(reason));
                }
            }
            beat = heartbeat.beat() => match beat {
                Beat::Ping => {
                    let ping = Message::Ping(Default::default());
                    if let Some(reason) = send(socket, ping, config).await.ends_session() {
                        return (reason, ending_for(reason));
                    }
                }
                Beat::Silent => {
                    let reason = "silent: no answer to pings";
                    return (Left::Silent, Ending::Close(CloseCode::Policy, reason));
                }
            },
            () = app.shutdown.requested() => {
                let reason = "the server is shutting down";
                return (Left::Shutdown, Ending::Close(CloseCode::Away, reason));
            }
        }
    }
}

/// How to end a socket whose write failed for `reason`.
fn ending_for(reason: Left) -> Ending {
    match reason {
        Left::TooSlow => Ending::TooSlow,
        _ => Ending::Gone,
    }
}
// ANCHOR_END: room_session

// ANCHOR: send
/// What became of a message written to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Written and flushed.
    Sent,
    /// The connection is gone (reset, closed): the client left.
    Gone,
    /// The client did not take it within [`Config::send_timeout`].
    TooSlow,
}

/// Writes one message within [`Config::send_timeout`]. A client that stops reading fills its
/// TCP window and then our write waits; the timeout bounds that wait, and only this client's
/// session is waiting. On a room socket, the wait includes the room messages queued before it.
async fn send<S>(socket: &mut WebSocketStream<S>, message: Message, config: &Config) -> Delivery
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let written = tokio::time::timeout(config.send_timeout, socket.send(message)).await;
    Delivery::of(written, config)
}

/// Writes out what waits for a room socket (room messages its full socket did not take), within
/// the same [`Config::send_timeout`] as [`send`].
async fn flush(socket: &mut SharedWebSocket, config: &Config) -> Delivery {
    let written = tokio::time::timeout(config.send_timeout, socket.flush()).await;
    Delivery::of(written, config)
}

impl Delivery {
    /// The outcome of a write (and flush) bounded by [`Config::send_timeout`].
    fn of(written: Result<Result<(), WsError>, Elapsed>, config: &Config) -> Self {
        match written {
            Ok(Ok(())) => Delivery::Sent,
            Ok(Err(error)) => {
                tracing::debug!(%error, "write failed");
                Delivery::Gone
            }
            Err(_) => {
                tracing::info!(
                    "dropping a client that took nothing for {:?}",
                    config.send_timeout
                );
                Delivery::TooSlow
            }
        }
    }

    /// Why the session ends, if this delivery ends it.
    fn ends_session(self) -> Option<Left> {
        match self {
            Delivery::Sent => None,
            Delivery::Gone => Some(Left::Closed),
            Delivery::TooSlow => Some(Left::TooSlow),
        }
    }
}
// ANCHOR_END: send

/// Ends a session whose client sent something invalid: with the close code that says what
/// (1009 too big, 1007 bad UTF-8, 1002 protocol error) when there is still someone to tell.
async fn refuse(socket: &mut WebSocket, error: &tokio_tungstenite::tungstenite::Error) -> Left {
    match ws::close_after_error(socket, error).await {
        Some(_) => Left::Refused,
        None => Left::Closed,
    }
}

// ANCHOR: echo_session
/// `GET /echo`: every text and binary message goes back to its sender, unchanged. The endpoint
/// the Autobahn TestSuite checks: all of RFC 6455's framing, fragmentation, UTF-8 and closing
/// rules are exercised through it.
///
/// Not an `async fn`, for the reason given at [`room_session`].
#[expect(clippy::manual_async_fn, reason = "keeps one copy of the socket")]
fn echo_session(mut socket: WebSocket, app: Arc<App>) -> impl Future<Output = ()> + Send {
    async move {
        let _counted = app.echo_sockets.enter();
        let config = &app.config;
        let mut heartbeat = Heartbeat::new(config.ping_interval, config.idle_timeout);
        loop {
            tokio::select! {
                incoming = socket.next() => {
                    heartbeat.heard();
                    match incoming {
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            if send(&mut socket, message, config).await != Delivery::Sent {
                                return;
                            }
                        }
                        Some(Ok(Message::Close(_))) => {
                            ws::answer_close(&mut socket).await;
                            return;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => {
                            refuse(&mut socket, &error).await;
                            return;
                        }
                        None => return,
                    }
                }
                beat = heartbeat.beat() => match beat {
                    Beat::Ping => {
                        let ping = Message::Ping(Default::default());
                        if send(&mut socket, ping, config).await != Delivery::Sent {
                            return;
                        }
                    }
                    Beat::Silent => {
                        let reason = "silent: no answer to pings";
                        ws::close(&mut socket, CloseCode::Policy, reason).await;
                        return;
                    }
                },
                () = app.shutdown.requested() => {
                    ws::close(&mut socket, CloseCode::Away, "the server is shutting down").await;
                    return;
                }
            }
        }
    }
}
// ANCHOR_END: echo_session
