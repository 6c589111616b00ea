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

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use askama::Template;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use realtime_kit::backplane::Backplane;
use realtime_kit::ws::{self, Beat, Heartbeat, Limits, OriginPolicy, WebSocket};
use realtime_kit::{
    Gauge, GaugeGuard, RequestBody, ResponseBody, ServerOptions, Shutdown, respond,
};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio::time::error::Elapsed;
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
    /// How many room messages a client may fall behind before it is closed as too slow. The
    /// messages live once, in one ring shared by every client, so this bounds memory whatever
    /// the number of clients.
    pub backlog: usize,
    /// How many join and leave notices a client may fall behind before it skips them and gets
    /// one `presence` notice with the count instead. A notice, unlike a message, is not worth
    /// closing a client over; this ring is shared too, so it bounds memory the same way.
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
        ws::upgrade(
            request,
            &self.config.origins,
            self.config.room_limits,
            &self.shutdown,
            move |socket| room_session(socket, place, app),
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
/// The broadcast room: one channel that every client's session subscribes to.
struct Room {
    /// Every message of the room, already encoded: a session clones the `Utf8Bytes` (a reference
    /// count), never the text, so one message to 10,000 clients is encoded once. The channel is
    /// a ring of [`Config::backlog`] messages; a client further behind than that gets `Lagged`
    /// and is closed (see [`room_session`]).
    published: broadcast::Sender<Utf8Bytes>,
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
    /// With `--redis`: the link to the other instances. Messages then enter the ring through
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

/// How often [`Room::pace`] looks at the ring again: a ring that more than half fills takes a
/// round of the whole room to drain, milliseconds at least, so a finer step only burns CPU.
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
    /// It fell [`Config::backlog`] messages behind, or one write took [`Config::send_timeout`].
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
        let (published, _) = broadcast::channel(backlog.max(1));
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
            published,
            presence,
            changes,
            clients,
            next_client: AtomicU64::new(1),
            relayed: AtomicU64::new(0),
            redis: None,
        }
    }

    // ANCHOR: publish
    /// Sends a message to the room: into this process's ring, or with `--redis` to every
    /// instance's ring through Redis (see `redis_room.rs`).
    async fn publish(&self, event: &RoomEvent<'_>) {
        match &self.redis {
            None => self.deliver(event.encode()),
            Some(redis) => redis_room::publish(redis, self, event.encode()).await,
        }
    }

    /// Puts an encoded message into the ring, for every session of this instance.
    fn deliver(&self, text: Utf8Bytes) {
        // An error only means that no one is listening; then there is no one to tell.
        let _ = self.published.send(text);
    }
    // ANCHOR_END: publish

    /// Waits while more than half the ring holds messages that some session has not taken
    /// yet, for at most [`Config::send_timeout`]. Every session takes from the ring even while
    /// its client is slow (see [`Inbox`]), so what this waits for is sessions that have not had
    /// a turn on a CPU: on a multi-thread runtime, those queued on another worker while this
    /// one went on publishing. Without it, one client's burst lapped them and every one was
    /// closed as too slow (1,899 of 2,000 in a test).
    async fn pace(&self, config: &Config) {
        let half = config.backlog.max(2) / 2;
        let until = tokio::time::Instant::now() + config.send_timeout;
        while self.published.len() > half && tokio::time::Instant::now() < until {
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
/// (rust-lang/rust#62958), and a `WebSocket` is over 300 bytes. This future lives as long as the
/// connection, so the copy would cost every idle client that much; an `async move` block that
/// only borrows the socket keeps one.
#[expect(clippy::manual_async_fn, reason = "keeps one copy of the socket")]
fn room_session(
    mut socket: WebSocket,
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
        // The welcome goes out before this session takes a place in the message ring: a client
        // that never reads would otherwise hold the ring (and every publisher, see
        // `Room::pace`) while its first write waits out the send timeout.
        let welcomed = send(&mut socket, Message::Text(welcome.encode()), config).await;
        let (reason, ending) = match welcomed.ends_session() {
            Some(reason) => (reason, Ending::Gone),
            None => {
                // Subscribe before announcing, so that the client's own join is in its stream.
                let mut inbox = Inbox::new(room, config.backlog);
                let mut notices = room.presence.subscribe();
                let join = RoomEvent::Join {
                    client,
                    clients: room.clients.get(),
                };
                match inbox.while_taking(room.announce(&join)).await {
                    Ok(()) => converse(&mut socket, client, inbox, &mut notices, &app).await,
                    Err(reason) => (reason, Ending::TooSlow),
                }
                // The inbox is dropped here: a session that is leaving holds no place in the
                // ring while it says goodbye.
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

/// How a session's socket is ended, once its place in the ring is given up.
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
    async fn close(self, socket: &mut WebSocket) {
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

/// The session's loop: whatever comes first of a client's message, a room message to forward,
/// the heartbeat, or shutdown. Returns why the client left and how to end its socket.
async fn converse(
    socket: &mut WebSocket,
    client: u64,
    mut inbox: Inbox,
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
                        // Awaited (one PUBLISH with Redis), taking from the ring meanwhile: one
                        // sender's messages leave in the order it sent them.
                        if let Err(reason) = inbox.while_taking(room.publish(&message)).await {
                            return (reason, Ending::TooSlow);
                        }
                        // Read the client's next message only once the ring has room: a burst
                        // (hundreds of small messages in one read) must not lap the sessions
                        // that have yet to forward it, whichever thread they run on.
                        if let Err(reason) = inbox.while_taking(room.pace(config)).await {
                            return (reason, Ending::TooSlow);
                        }
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
            taken = inbox.messages.recv() => {
                match taken {
                    Ok(first) => {
                        inbox.held.push_back(first);
                        if let Err(reason) = inbox.forward(socket, config).await {
                            return (reason, Ending::TooSlow);
                        }
                    }
                    // The policy for a client that cannot keep up: it is closed, never skipped
                    // silently and never waited for. The others are not slowed by it (the ring
                    // moves on without it) and memory does not grow (the ring is bounded).
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(client, missed, "closing a client that fell behind");
                        return (Left::TooSlow, Ending::TooSlow);
                    }
                    // The room's sender lives as long as the App this session holds, so this
                    // cannot happen; if it ever did, there would be no room left to be in.
                    Err(RecvError::Closed) => return (Left::Shutdown, Ending::Gone),
                }
            }
            // Messages taken but not yet written: those taken while a write was under way, or
            // more than one batch holds. A branch of its own, so that reading from the client
            // takes turns with writing to it, however busy the room.
            () = std::future::ready(()), if !inbox.held.is_empty() => {
                if let Err(reason) = inbox.forward(socket, config).await {
                    return (reason, Ending::TooSlow);
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
                if let Some(reason) = inbox.send(socket, Message::Text(text), config).await {
                    return (reason, ending_for(reason));
                }
            }
            beat = heartbeat.beat() => match beat {
                Beat::Ping => {
                    let ping = Message::Ping(Default::default());
                    if let Some(reason) = inbox.send(socket, ping, config).await {
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
/// session is waiting.
async fn send(socket: &mut WebSocket, message: Message, config: &Config) -> Delivery {
    let written = tokio::time::timeout(config.send_timeout, socket.send(message)).await;
    Delivery::of(written, config)
}

/// A session's place in the room's message ring, and the messages it has taken from the ring
/// but not yet written.
///
/// A session takes from the ring even while its socket is busy (a write waiting for a slow
/// client, an announcement waiting its turn): the ring's count of messages not yet taken by
/// everyone then measures only sessions that have not had a turn on a CPU, which is what
/// [`Room::pace`] waits for. A client that reads nothing fills `held` instead, and is closed
/// as too slow when it holds [`Config::backlog`] messages: the same limit as before, kept per
/// client, where it cannot hold anyone else up.
struct Inbox {
    messages: broadcast::Receiver<Utf8Bytes>,
    /// Taken from the ring, not yet written; at most [`Config::backlog`]. Each is a reference
    /// count on the one encoded copy of the message.
    held: VecDeque<Utf8Bytes>,
    backlog: usize,
}

impl Inbox {
    fn new(room: &Room, backlog: usize) -> Self {
        Self {
            messages: room.published.subscribe(),
            held: VecDeque::new(),
            backlog: backlog.max(1),
        }
    }

    /// Runs `work` and takes room messages from the ring meanwhile. `Err` if this client fell
    /// behind: it holds a whole backlog, or the ring lapped it. `work` bounds itself: a write
    /// by [`Config::send_timeout`], [`Room::pace`] by its own deadline, so that a publisher
    /// that waited is never taken for a slow client.
    async fn while_taking<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Left> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Ok(done),
                taken = self.messages.recv() => match taken {
                    Ok(text) if self.held.len() < self.backlog => self.held.push_back(text),
                    Ok(_) | Err(RecvError::Lagged(_)) => return Err(Left::TooSlow),
                    // The room is gone: finish the work, there is nothing more to take.
                    Err(RecvError::Closed) => return Ok(work.await),
                },
            }
        }
    }

    /// Writes one message (a notice, a Ping) within [`Config::send_timeout`], taking room
    /// messages meanwhile. The reason the session ends, if it does.
    async fn send(
        &mut self,
        socket: &mut WebSocket,
        message: Message,
        config: &Config,
    ) -> Option<Left> {
        let writing = tokio::time::timeout(config.send_timeout, socket.send(message));
        match self.while_taking(writing).await {
            Ok(written) => Delivery::of(written, config).ends_session(),
            Err(reason) => Some(reason),
        }
    }

    /// Writes the held messages, and any that wait in the ring, in one batch and one flush:
    /// one write to the socket for the batch instead of one per message. Under load a session
    /// wakes to find many messages waiting, and each write is a system call that costs more
    /// than framing all of them does. The batch stops at the write buffer's size (what
    /// tungstenite would write out anyway), so it is bounded in bytes and in messages; it must
    /// be written within [`Config::send_timeout`]. Nothing waits for a batch to fill.
    async fn forward(&mut self, socket: &mut WebSocket, config: &Config) -> Result<(), Left> {
        let budget = config.room_limits.write_buffer_size;
        let mut batch = Vec::new();
        let mut batched = 0;
        while batched < budget {
            let next = match self.held.pop_front() {
                Some(text) => text,
                None => match self.messages.try_recv() {
                    Ok(text) => text,
                    Err(TryRecvError::Lagged(_)) => return Err(Left::TooSlow),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                },
            };
            batched += next.len();
            batch.push(next);
        }
        let writing = async {
            for text in batch {
                socket.feed(Message::Text(text)).await?;
            }
            socket.flush().await
        };
        let writing = tokio::time::timeout(config.send_timeout, writing);
        match self.while_taking(writing).await {
            Ok(written) => match Delivery::of(written, config).ends_session() {
                Some(reason) => Err(reason),
                None => Ok(()),
            },
            Err(reason) => Err(reason),
        }
    }
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
