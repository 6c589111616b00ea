//! echo-ws's ladder: its steps, and the why-tests that climb it.
//!
//! Every rung serves the same routes and formats: `GET /` (the page: a `WebSocket` to `/ws`
//! that reconnects by itself), `GET /ws` (the room: a new client is first sent
//! `{"type":"welcome","client":<its number>,"clients":<in the room>}`, then every text message
//! any client sends, as `{"type":"message","from":<the sender's number>,"text":"..."}`) and
//! `GET /stats` (`{"clients": <in the room>, ...}`), so each test runs unchanged from the step
//! that needs it to the finished demo. The finished demo also sends join, leave and presence
//! notices; the tests pass over what they do not look for.
//!
//! The clients are tokio-tungstenite's, or a raw TCP socket where a test needs what no polite
//! client does: a client that stops reading, or one that answers no Ping.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use realtime_kit::client;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::clock_sse::AbortOnDrop;
use crate::probe::{self, WAIT, within};
use crate::{Ladder, Outcome, Rung, Server, Step, WhyTest};

/// echo-ws's ladder.
pub const LADDER: Ladder = Ladder {
    demo: "echo-ws",
    steps: &[
        Step {
            name: "step1_room",
            adds: "the smallest correct room: the upgrade on hyper, one broadcast ring for \
                   everyone, the page that reconnects, /stats",
            why_tests: &[SERVES_THE_ROOM],
        },
        Step {
            name: "step2_origin",
            adds: "the Origin check (403 for a page of another site) and refusals that say what \
                   to send: 426 with Upgrade or Sec-WebSocket-Version, JSON errors",
            why_tests: &[
                REFUSES_A_PAGE_FROM_ANOTHER_SITE,
                TELLS_A_PLAIN_GET_TO_UPGRADE,
            ],
        },
        Step {
            name: "step3_limits",
            adds: "limits on what a client may send (64 KiB of text: 1009, binary: 1003) and on \
                   what its socket costs (a 4 KiB read buffer, a bounded write buffer)",
            why_tests: &[
                CLOSES_A_MESSAGE_TOO_BIG,
                CLOSES_BINARY_DATA,
                KEEPS_AN_IDLE_CLIENT_SMALL,
            ],
        },
        Step {
            name: "step4_slow_clients",
            adds: "the slow-client policy: a write must finish within SEND_TIMEOUT_MS, a client a \
                   ring behind is closed with 1008, the others never wait",
            why_tests: &[DROPS_A_STALLED_READER, CLOSES_A_CLIENT_THAT_FELL_BEHIND],
        },
        Step {
            name: "step5_heartbeat",
            adds: "heartbeats: a Ping every PING_MS, Close 1008 for a client silent for \
                   IDLE_TIMEOUT_MS",
            why_tests: &[CLOSES_A_SILENT_CLIENT],
        },
        Step {
            name: "step6_shutdown",
            adds: "graceful shutdown on Ctrl-C and SIGTERM: every socket gets Close 1001, the \
                   process exits",
            why_tests: &[CLOSES_EVERY_SOCKET_ON_A_SIGNAL],
        },
    ],
};

const SERVES_THE_ROOM: WhyTest = WhyTest {
    name: "serves_the_room",
    checks: "the page opens a WebSocket to /ws, shows messages as text and reconnects with \
             backoff and jitter; a new client is welcomed with its number; every text message \
             goes to every client, the sender too, as JSON with the sender's number, in one \
             order for all; a client's Close is answered; /stats counts the clients and \
             forgets those that left",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(serves_the_room(rung).await) }),
};

const REFUSES_A_PAGE_FROM_ANOTHER_SITE: WhyTest = WhyTest {
    name: "refuses_a_page_from_another_site",
    checks: "a handshake with Origin: http://evil.example (or a look-alike of the server's \
             own) gets 403 with a JSON {\"error\": ...} and never reads the room; the server's \
             own pages, and clients that send no Origin, get in",
    limit: Duration::from_secs(30),
    run: |rung| {
        Box::pin(async move { Outcome::from(refuses_a_page_from_another_site(rung).await) })
    },
};

const TELLS_A_PLAIN_GET_TO_UPGRADE: WhyTest = WhyTest {
    name: "tells_a_plain_get_to_upgrade",
    checks: "a plain GET of /ws gets 426 with Upgrade: websocket, another protocol version \
             426 with Sec-WebSocket-Version: 13, a malformed key 400, each with a JSON \
             {\"error\": ...}",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(tells_a_plain_get_to_upgrade(rung).await) }),
};

const CLOSES_A_MESSAGE_TOO_BIG: WhyTest = WhyTest {
    name: "closes_a_message_too_big_with_1009",
    checks: "a client that sends a 1 MiB message is closed with 1009 (message too big) and \
             nobody receives it; the others go on",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(closes_a_message_too_big(rung).await) }),
};

const CLOSES_BINARY_DATA: WhyTest = WhyTest {
    name: "closes_binary_data_with_1003",
    checks: "a client that sends binary data to the room, which relays text, is closed with \
             1003 (unsupported data) within 2 s",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(closes_binary_data(rung).await) }),
};

const KEEPS_AN_IDLE_CLIENT_SMALL: WhyTest = WhyTest {
    name: "keeps_an_idle_client_small",
    checks: "200 idle clients grow the server's resident memory by less than 32 KiB each \
             (Linux only: it reads /proc)",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(keeps_an_idle_client_small(rung)),
};

const DROPS_A_STALLED_READER: WhyTest = WhyTest {
    name: "drops_a_stalled_reader",
    checks: "a client that stops reading leaves /stats soon after SEND_TIMEOUT_MS (300 ms \
             here), while a client that reads gets every message, in order, and stays",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(drops_a_stalled_reader(rung).await) }),
};

const CLOSES_A_CLIENT_THAT_FELL_BEHIND: WhyTest = WhyTest {
    name: "closes_a_client_that_fell_behind",
    checks: "a client that falls more than the room's ring (128 messages) behind gets what it \
             had, without a gap, then Close 1008 (too slow)",
    limit: Duration::from_secs(30),
    run: |rung| {
        Box::pin(async move { Outcome::from(closes_a_client_that_fell_behind(rung).await) })
    },
};

const CLOSES_A_SILENT_CLIENT: WhyTest = WhyTest {
    name: "closes_a_silent_client",
    checks: "a client that reads but answers no Ping is pinged, then closed with 1008 soon \
             after IDLE_TIMEOUT_MS (500 ms here, Pings every 100 ms), while a client that \
             answers stays",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(closes_a_silent_client(rung).await) }),
};

const CLOSES_EVERY_SOCKET_ON_A_SIGNAL: WhyTest = WhyTest {
    name: "closes_every_socket_on_a_signal",
    checks: "with two sockets open, SIGINT (Ctrl-C) and SIGTERM each make the server send \
             every socket Close 1001 (going away) and exit with success within 4 s",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(closes_every_socket_on_a_signal(rung)),
};

/// A client of the room, on a TCP connection the test opened.
type Socket = WebSocketStream<TcpStream>;

/// What came next on a socket.
enum Next {
    /// A JSON text message.
    Event(Value),
    /// The server's Close frame: its code, if it had one, and its reason.
    Closed(Option<u16>, String),
    /// The connection ended without a Close frame, what a page sees as code 1006.
    Cut(String),
    /// Nothing, within the time allowed.
    Silent,
}

impl Next {
    /// What the server did, for a message: "closed the socket (code 1008, \"too slow\")".
    fn said(&self) -> String {
        match self {
            Next::Event(event) => format!("sent {}", shorten(&event.to_string())),
            Next::Closed(code, reason) => {
                format!("closed the socket ({})", close_said(*code, reason))
            }
            Next::Cut(why) => format!("cut the connection without a Close frame ({why})"),
            Next::Silent => "sent nothing".to_owned(),
        }
    }
}

/// "code 1009, \"message too big\"", as a message shows a Close frame.
fn close_said(code: Option<u16>, reason: &str) -> String {
    match (code, reason) {
        (None, _) => "a Close frame without a code".to_owned(),
        (Some(code), "") => format!("code {code}"),
        (Some(code), reason) => format!("code {code}, {reason:?}"),
    }
}

/// At most 80 characters of `text`, saying how long it was when it is cut.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

/// The next JSON message, Close or end of `socket` within `limit`; Pings and Pongs are passed
/// over (tungstenite answers Pings while it reads).
async fn next_event(socket: &mut Socket, limit: Duration) -> Result<Next, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Ok(Next::Silent),
            Ok(None) => return Ok(Next::Cut("the connection ended".to_owned())),
            Ok(Some(Err(error))) => return Ok(Next::Cut(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                let event = serde_json::from_str(&text).map_err(|_| {
                    format!(
                        "the room sent {:?}, which is not JSON: the page's JSON.parse throws on it",
                        shorten(&text)
                    )
                })?;
                return Ok(Next::Event(event));
            }
            Message::Binary(_) => {
                return Err(
                    "the room sent a binary message, though the page reads JSON text".to_owned(),
                );
            }
            Message::Close(frame) => {
                let code = frame.as_ref().map(|frame| u16::from(frame.code));
                let reason = frame.map_or_else(String::new, |frame| frame.reason.to_string());
                return Ok(Next::Closed(code, reason));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// A room message's sender and text, `None` for an event of another type; the shape is checked:
/// `{"type":"message","from":<number>,"text":"..."}` and nothing else.
fn as_message(event: &Value) -> Result<Option<(u64, String)>, String> {
    if event["type"] != "message" {
        return Ok(None);
    }
    let fields = event.as_object().map_or(0, serde_json::Map::len);
    match (event["from"].as_u64(), event["text"].as_str(), fields) {
        (Some(from), Some(text), 3) => Ok(Some((from, text.to_owned()))),
        _ => Err(format!(
            "the room sent {}: a message must be {{\"type\":\"message\",\"from\":<the sender's \
             number>,\"text\":\"...\"}} and nothing else, the same on every rung",
            shorten(&event.to_string())
        )),
    }
}

/// The next room message (notices of other kinds are passed over) within `limit`, or what came
/// instead.
async fn next_message(socket: &mut Socket, limit: Duration) -> Result<(u64, String), String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(socket, left).await? {
            Next::Event(event) => {
                if let Some(message) = as_message(&event)? {
                    return Ok(message);
                }
            }
            Next::Silent => {
                return Err(format!(
                    "no message came within {:.1} s",
                    limit.as_secs_f64()
                ));
            }
            other => return Err(format!("the server {}", other.said())),
        }
    }
}

/// Reads until the message `text` from `from` arrives, within [`WAIT`].
async fn message_back(socket: &mut Socket, from: u64, text: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (sender, got) = next_message(socket, left).await.map_err(|failure| {
            format!(
                "a message {:?} from #{from} never came back: {failure}",
                shorten(text)
            )
        })?;
        if sender == from && got == text {
            return Ok(());
        }
    }
}

/// The answer to a handshake.
enum Opened {
    /// `101`: a WebSocket (boxed: it is ten times the size of a refusal).
    Socket(Box<Socket>),
    /// Anything else: its status and body.
    Refused { status: u16, body: String },
}

/// Opens a WebSocket to `path` with extra request `headers`, on a connection of its own.
async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Opened, String> {
    let tcp = within(
        WAIT,
        || format!("could not connect within {} s", WAIT.as_secs()),
        TcpStream::connect(addr),
    )
    .await?
    .map_err(|error| format!("could not connect: {error}"))?;
    open_on(tcp, addr, path, headers).await
}

/// Opens a WebSocket to `path` on `tcp`.
async fn open_on(
    tcp: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Opened, String> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|error| format!("not a WebSocket URL: {error}"))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|error| error.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|error| error.to_string())?;
        request.headers_mut().insert(name, value);
    }
    let handshake = within(
        WAIT,
        || {
            format!(
                "the WebSocket handshake on {path} got no answer within {} s",
                WAIT.as_secs()
            )
        },
        tokio_tungstenite::client_async(request, tcp),
    )
    .await?;
    match handshake {
        Ok((socket, _)) => Ok(Opened::Socket(Box::new(socket))),
        Err(tungstenite::Error::Http(response)) => Ok(Opened::Refused {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).into_owned())
                .unwrap_or_default(),
        }),
        Err(error) => Err(format!("the WebSocket handshake on {path} failed: {error}")),
    }
}

/// Joins the room with extra request `headers`: the socket, its welcome's client number and
/// its welcome's count of clients.
async fn join_with(
    server: &Server,
    headers: &[(&str, &str)],
) -> Result<(Socket, u64, u64), String> {
    let mut socket = match open(server.addr, "/ws", headers).await? {
        Opened::Socket(socket) => *socket,
        Opened::Refused { status, body } => {
            return Err(format!(
                "joining the room (a WebSocket to /ws) was refused with {status} {}",
                shorten(&body)
            ));
        }
    };
    let (client, clients) = welcome(&mut socket).await?;
    Ok((socket, client, clients))
}

/// Joins the room: the socket and its client number.
async fn join(server: &Server) -> Result<(Socket, u64), String> {
    let (socket, client, _) = join_with(server, &[]).await?;
    Ok((socket, client))
}

/// Reads the welcome, the first thing a new client is sent: (its number, clients in the room).
async fn welcome(socket: &mut Socket) -> Result<(u64, u64), String> {
    let shape = "{\"type\":\"welcome\",\"client\":<its number>,\"clients\":<in the room>}";
    let event = match next_event(socket, WAIT).await? {
        Next::Event(event) => event,
        other => {
            return Err(format!(
                "a client that joined the room waited {} s for its welcome, {shape}, but the \
                 server {}",
                WAIT.as_secs(),
                other.said()
            ));
        }
    };
    let fields = event.as_object().map_or(0, serde_json::Map::len);
    match (
        event["type"].as_str(),
        event["client"].as_u64(),
        event["clients"].as_u64(),
        fields,
    ) {
        (Some("welcome"), Some(client), Some(clients), 3) => Ok((client, clients)),
        _ => Err(format!(
            "the first message a new client got was {}: it must be its welcome, {shape} and \
             nothing else, so that the page knows which messages are its own",
            shorten(&event.to_string())
        )),
    }
}

/// `GET /stats`: the clients in the room.
async fn clients_in_room(server: &Server) -> Result<u64, String> {
    let response = within(
        WAIT,
        || format!("GET /stats got no answer within {} s", WAIT.as_secs()),
        client::get(&server.url("/stats")),
    )
    .await?
    .map_err(|error| format!("GET /stats failed: {error}"))?;
    let shape = || {
        format!(
            "GET /stats answered {} {:?}: it must be 200 with {{\"clients\": <clients in the \
             room>, ...}}",
            response.status,
            shorten(&response.text())
        )
    };
    if response.status != 200 {
        return Err(shape());
    }
    let json = response.json().map_err(|_| shape())?;
    json["clients"].as_u64().ok_or_else(shape)
}

/// Polls `/stats` until `done(clients)` holds; `Ok(false)` if it did not within `limit`.
async fn clients_until(
    server: &Server,
    limit: Duration,
    done: impl Fn(u64) -> bool,
) -> Result<bool, String> {
    let deadline = Instant::now() + limit;
    loop {
        if done(clients_in_room(server).await?) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens `/ws` by hand on `tcp`: writes the handshake and reads the `101`'s head, so that what
/// follows on `tcp` is the server's frames, the welcome first.
async fn raw_handshake(mut tcp: TcpStream, addr: SocketAddr) -> Result<TcpStream, String> {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|error| format!("could not send a handshake: {error}"))?;
    let head = within(
        WAIT,
        || {
            format!(
                "a handshake on /ws got no answer within {} s",
                WAIT.as_secs()
            )
        },
        async {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                match tcp.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            String::from_utf8_lossy(&head).into_owned()
        },
    )
    .await?;
    if !head.starts_with("HTTP/1.1 101 ") || !head.ends_with("\r\n\r\n") {
        return Err(format!(
            "a WebSocket handshake on /ws was answered {:?}",
            head.lines().next().unwrap_or("with nothing")
        ));
    }
    Ok(tcp)
}

/// One frame the server sent (a server never masks its frames): its opcode and payload.
async fn read_frame(tcp: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 2];
    tcp.read_exact(&mut header).await?;
    let length = match header[1] & 0x7F {
        126 => u64::from(tcp.read_u16().await?),
        127 => tcp.read_u64().await?,
        short => u64::from(short),
    };
    if length > 1 << 20 {
        return Err(std::io::Error::other(format!(
            "the server sent a frame of {length} bytes"
        )));
    }
    let mut payload = vec![0u8; length as usize];
    tcp.read_exact(&mut payload).await?;
    Ok((header[0] & 0x0F, payload))
}

/// The rung is a room at all: what every rung, step 1 on, serves.
async fn serves_the_room(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;

    let html = probe::html_page(&server.url("/")).await?;
    if !html.contains("new WebSocket(") || !html.contains("/ws") {
        return Err(
            "the page never opens `new WebSocket(...\"/ws\")`, so a browser never joins".to_owned(),
        );
    }
    let reconnects = (html.contains("onclose") || html.contains("\"close\""))
        && html.contains("setTimeout(connect");
    if !reconnects {
        return Err(
            "the page does not open a new WebSocket when its socket closes (`setTimeout(connect, \
             ...)` on close): unlike an EventSource, a WebSocket never reconnects by itself, so \
             after a server restart or a network drop the page stays dead"
                .to_owned(),
        );
    }
    if !html.contains("Math.random()") {
        return Err(
            "the page reconnects without jitter (no Math.random()): after a restart every page \
             comes back at the same instant, on every round"
                .to_owned(),
        );
    }
    if ["innerHTML", "insertAdjacentHTML", "document.write"]
        .iter()
        .any(|markup| html.contains(markup))
    {
        return Err(
            "the page writes HTML (innerHTML, insertAdjacentHTML or document.write): a message \
             such as <img src=x onerror=...> would run script in every reader's page"
                .to_owned(),
        );
    }

    let (mut first, first_id, _) = join_with(&server, &[]).await?;
    let (mut second, second_id, counted) = join_with(&server, &[]).await?;
    if first_id == second_id {
        return Err(format!(
            "two clients were both welcomed as #{first_id}: a page could not tell its own \
             messages from the other's"
        ));
    }
    if counted != 2 {
        return Err(format!(
            "the second client's welcome says {counted} clients are in the room, but 2 are"
        ));
    }

    let tricky = "say \"hi\" <b>&amp;</b>\\ é\nsecond line";
    send(&mut first, tricky).await?;
    for (socket, who) in [
        (&mut first, "its sender"),
        (&mut second, "the other client"),
    ] {
        let (from, text) = next_message(socket, WAIT)
            .await
            .map_err(|failure| format!("a message was not relayed to {who}: {failure}"))?;
        if from != first_id || text != tricky {
            return Err(format!(
                "#{first_id} sent {tricky:?}, and {who} got {text:?} from #{from}: the text must \
                 arrive exactly as sent (JSON-escaped), with the sender's number"
            ));
        }
    }

    // One ring for everyone: whatever order two senders' messages meet in on the server, every
    // client sees that one order, and each sender's messages in the order it sent them.
    for n in 0..5 {
        send(&mut first, &format!("a{n}")).await?;
        send(&mut second, &format!("b{n}")).await?;
    }
    let mut orders = Vec::new();
    for socket in [&mut first, &mut second] {
        let mut order = Vec::new();
        while order.len() < 10 {
            order.push(next_message(socket, WAIT).await?.1);
        }
        orders.push(order);
    }
    if orders[0] != orders[1] {
        return Err(format!(
            "two clients saw the same ten messages in different orders ({} and {}): each \
             client's copy must come from one room, in one order",
            orders[0].join(" "),
            orders[1].join(" ")
        ));
    }
    for prefix in ["a", "b"] {
        let theirs: Vec<&String> = orders[0]
            .iter()
            .filter(|text| text.starts_with(prefix))
            .collect();
        let sent: Vec<String> = (0..5).map(|n| format!("{prefix}{n}")).collect();
        if theirs
            .iter()
            .map(|text| text.as_str())
            .ne(sent.iter().map(String::as_str))
        {
            return Err(format!(
                "a client sent {} and the room relayed {}: one sender's messages must keep \
                 their order",
                sent.join(" "),
                theirs
                    .iter()
                    .map(|text| text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    if clients_in_room(&server).await? != 2 {
        return Err(format!(
            "/stats counted {} clients in the room while 2 were",
            clients_in_room(&server).await?
        ));
    }

    // The closing handshake: the client's Close is answered with one, then the connection ends.
    within(
        WAIT,
        || "sending a Close frame took too long".to_owned(),
        first.close(None),
    )
    .await?
    .map_err(|error| format!("could not send a Close frame: {error}"))?;
    let answered = tokio::time::timeout(WAIT, async {
        loop {
            match first.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    if answered != Ok(true) {
        return Err(format!(
            "a client that closed its socket got no Close frame back{}: the browser reports \
             code 1006, as for a broken connection, instead of a clean close",
            if answered.is_err() {
                format!(" within {} s", WAIT.as_secs())
            } else {
                String::new()
            }
        ));
    }
    send(&mut second, "still here").await?;
    message_back(&mut second, second_id, "still here").await?;
    drop((first, second));
    if !clients_until(&server, Duration::from_secs(3), |clients| clients == 0).await? {
        return Err(
            "two clients that left (one closed, one dropped its connection) were still counted \
             in /stats 3 s later: the server keeps something for every client that has gone"
                .to_owned(),
        );
    }
    Ok(())
}

/// Sends a text message, or says why it could not.
async fn send(socket: &mut Socket, text: &str) -> Result<(), String> {
    within(
        WAIT,
        || format!("sending a message took more than {} s", WAIT.as_secs()),
        socket.send(Message::text(text)),
    )
    .await?
    .map_err(|error| format!("could not send a message: {error}"))
}

/// Checks that `body` is `{"error": "<a sentence>"}`.
fn json_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|json| json["error"].is_string())
}

/// Cross-site WebSocket hijacking: a page of another origin is refused before the upgrade.
async fn refuses_a_page_from_another_site(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let (mut member, member_id) = join(&server).await?;
    let port = server.port();
    let foreign = [
        "http://evil.example".to_owned(),
        format!("http://127.0.0.1:{port}.evil.example"),
    ];
    for origin in &foreign {
        match open(server.addr, "/ws", &[("origin", origin)]).await? {
            Opened::Socket(mut spy) => {
                send(&mut member, "my password is hunter2").await?;
                let overheard = next_message(&mut spy, WAIT).await.ok();
                let read = overheard.map_or_else(String::new, |(_, text)| {
                    format!(" and read what #{member_id} said ({text:?})")
                });
                return Err(format!(
                    "a page on {origin} opened a socket to the room{read}: a browser sends the \
                     visitor's cookies with a WebSocket handshake whatever site the page comes \
                     from, and no same-origin policy protects a WebSocket, so any site the \
                     visitor opens can read the room in their name (cross-site WebSocket \
                     hijacking); a handshake whose Origin is not the server's own must get 403"
                ));
            }
            Opened::Refused { status, body } => {
                if status != 403 {
                    return Err(format!(
                        "a page on {origin} was refused with {status}, not 403 Forbidden"
                    ));
                }
                if !json_error(&body) {
                    return Err(format!(
                        "a page on {origin} got 403 with the body {:?}: it must be JSON, \
                         {{\"error\": \"<what is wrong>\"}}",
                        shorten(&body)
                    ));
                }
            }
        }
    }
    let own = format!("http://127.0.0.1:{port}");
    join_with(&server, &[("origin", &own)])
        .await
        .map_err(|failure| {
            format!("a page served by the server itself (Origin: {own}) could not join: {failure}")
        })?;
    send(&mut member, "no Origin: a script, not a page").await?;
    message_back(&mut member, member_id, "no Origin: a script, not a page")
        .await
        .map_err(|failure| {
            format!("a client that sends no Origin (a script, curl) was not kept: {failure}")
        })
}

/// A handshake that cannot succeed is told what to send instead.
async fn tells_a_plain_get_to_upgrade(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let header = |headers: &HeaderMap, name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let request = |headers: &'static [(&'static str, &'static str)]| {
        let addr = server.addr;
        async move {
            let response = probe::get(addr, "/ws", headers).await?;
            let status = response.status().as_u16();
            let head = response.headers().clone();
            let body = probe::body_text(response, 64 * 1024, WAIT).await?;
            Ok::<_, String>((status, head, body))
        }
    };

    let (status, head, body) = request(&[]).await?;
    if status != 426 || !json_error(&body) {
        return Err(format!(
            "a plain GET of /ws (a browser opening the URL, or curl) got {status} {:?} instead \
             of 426 Upgrade Required with a JSON {{\"error\": ...}}: nothing tells the person \
             that this is a WebSocket endpoint and how to connect",
            shorten(&body)
        ));
    }
    if !header(&head, "upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket")) {
        return Err(
            "a plain GET of /ws got 426 without `Upgrade: websocket`, the header that names \
             the protocol to switch to (RFC 9110 requires it with a 426)"
                .to_owned(),
        );
    }

    const OLD_VERSION: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "8"),
    ];
    let (status, head, body) = request(OLD_VERSION).await?;
    let versions = header(&head, "sec-websocket-version");
    if status != 426 || versions.as_deref() != Some("13") || !json_error(&body) {
        return Err(format!(
            "a client speaking an older draft (Sec-WebSocket-Version: 8) got {status} with \
             Sec-WebSocket-Version {versions:?} and {:?}: RFC 6455 section 4.4 asks for 426 \
             with `Sec-WebSocket-Version: 13`, the version to retry with, and the body must be \
             a JSON {{\"error\": ...}}",
            shorten(&body)
        ));
    }

    const BAD_KEY: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "short"),
        ("sec-websocket-version", "13"),
    ];
    let (status, _, body) = request(BAD_KEY).await?;
    if status != 400 || !json_error(&body) {
        return Err(format!(
            "a handshake whose Sec-WebSocket-Key is not 16 bytes in base64 got {status} {:?}, \
             not 400 with a JSON {{\"error\": ...}}",
            shorten(&body)
        ));
    }
    Ok(())
}

/// A message over the limit is refused, and the room goes on.
async fn closes_a_message_too_big(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let (mut watcher, watcher_id) = join(&server).await?;
    let (mut big, big_id) = join(&server).await?;
    let huge = "x".repeat(1 << 20);
    // The server may close before the whole message is out: what it answers is what counts.
    let _ = within(WAIT, String::new, big.send(Message::text(huge.as_str()))).await;
    let relayed = "a client sent a 1 MiB message and the room relayed it to everyone: with \
                   tungstenite's default limit (64 MiB a message) one client makes the server \
                   hold, copy and send whatever it likes to every client; a room of chat lines \
                   needs 64 KiB at most, and must refuse more with Close 1009 (message too big)";
    loop {
        match next_event(&mut big, WAIT).await? {
            Next::Event(event) => match as_message(&event)? {
                Some((from, text)) if from == big_id && text.len() == huge.len() => {
                    return Err(relayed.to_owned());
                }
                _ => continue,
            },
            Next::Closed(Some(1009), _) => break,
            other => {
                return Err(format!(
                    "a client that sent a 1 MiB message, over the room's 64 KiB, expected Close \
                     1009 (message too big), but the server {}",
                    other.said()
                ));
            }
        }
    }
    send(&mut watcher, "still here").await?;
    loop {
        let (from, text) = next_message(&mut watcher, WAIT).await.map_err(|failure| {
            format!("after a client was closed for a message too big, the room stopped: {failure}")
        })?;
        if text.len() > 64 * 1024 {
            return Err(relayed.to_owned());
        }
        if from == watcher_id && text == "still here" {
            return Ok(());
        }
    }
}

/// Binary data, which the room does not relay, is refused with a reason.
async fn closes_binary_data(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let (mut socket, _) = join(&server).await?;
    within(
        WAIT,
        || "sending a binary message took too long".to_owned(),
        socket.send(Message::binary(vec![0xde, 0xad, 0xbe, 0xef])),
    )
    .await?
    .map_err(|error| format!("could not send a binary message: {error}"))?;
    let patience = Duration::from_secs(2);
    loop {
        match next_event(&mut socket, patience).await? {
            Next::Event(_) => continue,
            Next::Closed(Some(1003), _) => return Ok(()),
            Next::Silent => {
                return Err(format!(
                    "a client that sent binary data to the room, which relays text only, heard \
                     nothing for {} s: its message vanished without a word; the server must \
                     close with 1003 (unsupported data), which the page can show",
                    patience.as_secs()
                ));
            }
            other => {
                return Err(format!(
                    "a client that sent binary data expected Close 1003 (unsupported data), \
                     but the server {}",
                    other.said()
                ));
            }
        }
    }
}

/// What an idle client costs: tungstenite's default read buffer is 128 KiB, zero-filled.
#[cfg(target_os = "linux")]
async fn keeps_an_idle_client_small(rung: Rung) -> Outcome {
    Outcome::from(idle_clients_cost(rung).await)
}

/// `/proc` is Linux's: elsewhere the check says it cannot run.
#[cfg(not(target_os = "linux"))]
async fn keeps_an_idle_client_small(_rung: Rung) -> Outcome {
    Outcome::CannotRun(
        "it reads the server's resident memory from /proc, which only Linux has".to_owned(),
    )
}

#[cfg(target_os = "linux")]
async fn idle_clients_cost(rung: Rung) -> Result<(), String> {
    const CLIENTS: u64 = 200;
    const MOST_PER_CLIENT: u64 = 32 * 1024;
    let server = rung.start(&[]).await?;
    let pid = server.pid().ok_or("the server exited at once")?;
    let resident = || resident_bytes(pid);
    // A first client pays what the first of anything costs (the runtime's threads, buffers).
    let mut idle = vec![idle_client(&server).await?];
    let before = resident()?;
    for _ in 0..CLIENTS {
        idle.push(idle_client(&server).await?);
    }
    // Each session reads right after its welcome, which is when tungstenite fills its buffer:
    // watch the memory for a moment after the last welcome, and take the most it reached.
    let mut most = resident()?;
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        most = most.max(resident()?);
    }
    let per_client = most.saturating_sub(before) / CLIENTS;
    if per_client > MOST_PER_CLIENT {
        return Err(format!(
            "{CLIENTS} idle clients grew the server by {:.1} MiB, {:.0} KiB each: with \
             tungstenite's default 128 KiB read buffer, zero-filled for every socket, 10,000 \
             idle visitors would hold {:.1} GiB; a room of chat lines needs a few KiB per \
             socket (WebSocketConfig::read_buffer_size)",
            (most - before) as f64 / f64::from(1 << 20),
            per_client as f64 / 1024.0,
            (per_client * 10_000) as f64 / f64::from(1 << 30)
        ));
    }
    drop(idle);
    Ok(())
}

/// A client that joins, reads its welcome and then does nothing.
#[cfg(target_os = "linux")]
async fn idle_client(server: &Server) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(server.addr)
        .await
        .map_err(|error| format!("could not connect: {error}"))?;
    let mut tcp = raw_handshake(tcp, server.addr).await?;
    let (opcode, _) = within(WAIT, || "no welcome came".to_owned(), read_frame(&mut tcp))
        .await?
        .map_err(|error| format!("no welcome came: {error}"))?;
    if opcode != 0x1 {
        return Err(format!(
            "a new client's first frame had opcode {opcode:#x}, not text (its welcome)"
        ));
    }
    Ok(tcp)
}

/// The process's resident memory, from `/proc/<pid>/statm` (in pages).
#[cfg(target_os = "linux")]
fn resident_bytes(pid: u32) -> Result<u64, String> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .map_err(|error| format!("cannot read the server's memory: {error}"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/statm says {statm:?}"))?;
    Ok(pages * rustix::param::page_size() as u64)
}

/// The padding of the messages that fill a slow client's buffers: 16 KiB each.
fn padding() -> String {
    "x".repeat(16 * 1024)
}

/// Sends message `n` (`"<n> <padding>"`) and waits until it comes back to its sender, so that
/// the room is never more than one message ahead of the sender's own copy.
async fn send_numbered(
    sender: &mut Socket,
    sender_id: u64,
    n: usize,
    padding: &str,
) -> Result<(), String> {
    let text = format!("{n} {padding}");
    send(sender, &text).await?;
    message_back(sender, sender_id, &text).await
}

/// The number of a message sent by [`send_numbered`].
fn number_of(text: &str) -> Option<usize> {
    text.split_once(' ')?.0.parse().ok()
}

/// The write timeout: a client that stops reading is let go, one that reads is kept.
async fn drops_a_stalled_reader(rung: Rung) -> Result<(), String> {
    const LIMIT_MS: u64 = 300;
    let limit = LIMIT_MS.to_string();
    let server = rung.start(&[("SEND_TIMEOUT_MS", &limit)]).await?;
    let (mut sender, sender_id) = join(&server).await?;
    let (mut watcher, _) = join(&server).await?;
    // The watcher reads all the time and notes the number of every message from the sender.
    let heard = Arc::new(Mutex::new(Vec::new()));
    let watching = AbortOnDrop(tokio::spawn({
        let heard = heard.clone();
        async move {
            while let Ok((from, text)) = next_message(&mut watcher, Duration::from_secs(60)).await {
                if from == sender_id {
                    let mut heard = heard
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    heard.push(number_of(&text));
                }
            }
        }
    }));
    let stalled = probe::narrow_connection(server.addr, 4096)
        .await
        .map_err(|error| format!("could not open the stalled client's connection: {error}"))?;
    let _stalled = raw_handshake(stalled, server.addr).await?;
    if !clients_until(&server, Duration::from_secs(3), |clients| clients == 3).await? {
        return Err(format!(
            "a client that joined and then read nothing never showed in /stats (it says {} \
             clients; 3 had joined)",
            clients_in_room(&server).await?
        ));
    }

    // 16 KiB messages fill the stalled client's buffers after a few dozen; 1,024 (16 MiB) are
    // far more than any loopback buffer holds, so it is stuck long before the last.
    let padding = padding();
    let mut sent = 0;
    while sent < 1024 {
        send_numbered(&mut sender, sender_id, sent, &padding).await?;
        sent += 1;
        if sent % 16 == 0 && clients_in_room(&server).await? < 3 {
            break;
        }
    }
    let patience = Duration::from_millis(LIMIT_MS) + Duration::from_secs(3);
    if !clients_until(&server, patience, |clients| clients < 3).await? {
        return Err(format!(
            "a client that stopped reading (a phone that lost its network, a frozen tab) was \
             still in the room {:.1} s after {sent} messages of 16 KiB had gone out, though \
             SEND_TIMEOUT_MS asked for {LIMIT_MS} ms: its task waits in a write that never \
             ends, holding its socket, its buffers and its place for as long as the kernel \
             keeps the connection, which can be hours",
            patience.as_secs_f64()
        ));
    }

    // The others were not held up, lost nothing, and stay.
    send_numbered(&mut sender, sender_id, sent, &padding).await?;
    let got_all = within(WAIT, String::new, async {
        loop {
            let heard = heard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            if heard.len() > sent || watching.0.is_finished() {
                return heard;
            }
            drop(heard);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_default();
    let expected: Vec<Option<usize>> = (0..=sent).map(Some).collect();
    if got_all != expected {
        return Err(format!(
            "the client that kept reading got {} of the {} messages, or not in order: the \
             policy must only let go of the client that stopped reading",
            got_all.len(),
            sent + 1
        ));
    }
    if clients_in_room(&server).await? != 2 {
        return Err(
            "the client that kept reading, or the sender, was cut off too: the write timeout \
             must only let go of a client that stops reading"
                .to_owned(),
        );
    }
    Ok(())
}

/// A client a ring behind is closed and told why, after what it had, without a gap.
async fn closes_a_client_that_fell_behind(rung: Rung) -> Result<(), String> {
    // Long enough that the client's stuck write does not time out: it is behind, not gone.
    let server = rung.start(&[("SEND_TIMEOUT_MS", "20000")]).await?;
    let (mut sender, sender_id) = join(&server).await?;
    let behind = probe::narrow_connection(server.addr, 4096)
        .await
        .map_err(|error| format!("could not open the slow client's connection: {error}"))?;
    let mut behind = raw_handshake(behind, server.addr).await?;
    // Its welcome says its session has joined the ring: from here on, every message is its own.
    within(
        WAIT,
        || "no welcome came".to_owned(),
        read_frame(&mut behind),
    )
    .await?
    .map_err(|error| format!("no welcome came: {error}"))?;
    // While it reads nothing its session is stuck in a write, and the ring moves on: 400
    // messages of 16 KiB fill its buffers, then overtake it by far more than 128.
    let padding = padding();
    for n in 0..400 {
        send_numbered(&mut sender, sender_id, n, &padding).await?;
    }
    // Now it reads again: what it had, then the news that it fell behind.
    let mut behind = WebSocketStream::from_raw_socket(behind, Role::Client, None).await;
    let mut next = 0;
    loop {
        match next_event(&mut behind, WAIT).await? {
            Next::Event(event) => {
                let Some((_, text)) = as_message(&event)? else {
                    continue;
                };
                let number = number_of(&text);
                if number != Some(next) {
                    let had = match next {
                        0 => "nothing".to_owned(),
                        1 => "message 0".to_owned(),
                        _ => format!("messages 0 to {}", next - 1),
                    };
                    return Err(format!(
                        "a client that fell behind got {had} and then {}: the room skipped what \
                         it had missed without a word, so its page shows a conversation with \
                         holes in it",
                        number.map_or_else(|| "another".to_owned(), |n| format!("message {n}"))
                    ));
                }
                next += 1;
            }
            Next::Closed(Some(1008), _) => return Ok(()),
            Next::Silent if next == 400 => {
                return Err(
                    "a client that read nothing while 400 messages of 16 KiB went out got them \
                     all afterwards, so it never fell behind: this test's buffers were too big \
                     to show the policy"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "a client that fell more than the room's ring (128 messages) behind got {next} \
                     messages and then the server {}: it must close with 1008 (policy \
                     violation) and say \"too slow\", or the page cannot tell its user why it \
                     lost the room (1006 is what a network failure looks like)",
                    other.said()
                ));
            }
        }
    }
}

/// The heartbeat: a client that answers no Ping is closed, one that answers stays.
async fn closes_a_silent_client(rung: Rung) -> Result<(), String> {
    const IDLE_MS: u64 = 500;
    const PING_MS: u64 = 100;
    let (idle, ping) = (IDLE_MS.to_string(), PING_MS.to_string());
    let server = rung
        .start(&[("IDLE_TIMEOUT_MS", &idle), ("PING_MS", &ping)])
        .await?;
    // A live client: it reads all the time, so tungstenite answers every Ping with a Pong.
    let (mut live, _) = join(&server).await?;
    let listening = AbortOnDrop(tokio::spawn(async move {
        while let Ok(Next::Event(_)) = next_event(&mut live, Duration::from_secs(60)).await {}
    }));
    // A vanished client, as the server sees one: it takes what comes, and sends nothing back.
    let silent = TcpStream::connect(server.addr)
        .await
        .map_err(|error| format!("could not connect: {error}"))?;
    let mut silent = raw_handshake(silent, server.addr).await?;

    let patience = Duration::from_millis(IDLE_MS + PING_MS) + Duration::from_secs(3);
    let mut pings = 0;
    let ended = tokio::time::timeout(patience, async {
        loop {
            match read_frame(&mut silent).await {
                Ok((0x9, _)) => pings += 1,
                Ok((0x8, payload)) => {
                    let code = payload
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    return Next::Closed(code, reason.into_owned());
                }
                Ok(_) => continue,
                Err(error) => return Next::Cut(error.to_string()),
            }
        }
    })
    .await
    .unwrap_or(Next::Silent);
    match ended {
        Next::Closed(Some(1008), _) => {}
        Next::Silent => {
            let pinged = if pings == 0 {
                "the server never sent it a Ping".to_owned()
            } else {
                format!("{pings} Pings went unanswered")
            };
            return Err(format!(
                "a client that vanished without closing (it answers no Ping and sends nothing) \
                 was still connected {:.1} s later, though IDLE_TIMEOUT_MS asked for {IDLE_MS} \
                 ms ({pinged}): a laptop shut or a phone out of coverage holds its socket, its \
                 task and its place in the room until a write fails, which in a quiet room can \
                 take many minutes",
                patience.as_secs_f64()
            ));
        }
        other => {
            return Err(format!(
                "a client that answered no Ping expected Close 1008 (policy violation) once it \
                 had been silent for IDLE_TIMEOUT_MS, but the server {}",
                other.said()
            ));
        }
    }
    if pings == 0 {
        return Err(
            "a client was closed as silent without ever being sent a Ping: a live client \
             that had nothing to say would be closed too"
                .to_owned(),
        );
    }
    // It never answers the Close either: the server waits for that answer, 2 s at most.
    if !clients_until(&server, Duration::from_secs(4), |clients| clients == 1).await? {
        return Err(format!(
            "the silent client was closed, but 4 s later /stats still counted {} clients, not \
             the 1 that was left",
            clients_in_room(&server).await?
        ));
    }
    // The live client, quiet but answering, outlasts the idle limit twice over.
    let outlast = Instant::now() + Duration::from_millis(2 * IDLE_MS);
    while Instant::now() < outlast {
        if listening.0.is_finished() || clients_in_room(&server).await? != 1 {
            return Err(
                "a client that answered every Ping, but had nothing to say, was closed too: \
                 only silence (no frame at all, not even a Pong) may close a client"
                    .to_owned(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// SIGINT and SIGTERM with sockets open: Close 1001 on each, and a clean exit.
#[cfg(unix)]
async fn closes_every_socket_on_a_signal(rung: Rung) -> Outcome {
    use rustix::process::Signal;
    use std::os::unix::process::ExitStatusExt;

    let signals = [
        (Signal::INT, "Ctrl-C (SIGINT)"),
        (
            Signal::TERM,
            "SIGTERM (what kill, systemd and docker stop send)",
        ),
    ];
    let limit = Duration::from_secs(4);
    for (signal, name) in signals {
        let attempt = async {
            let mut server = rung.start(&[]).await?;
            let (mut first, _) = join(&server).await?;
            let (mut second, _) = join(&server).await?;
            server.send_signal(signal)?;
            let (first, second, exit) = tokio::join!(
                closed_by_server(&mut first, limit),
                closed_by_server(&mut second, limit),
                server.exit_within(limit)
            );
            match exit {
                None => {
                    return Err(format!(
                        "on {name} the server never exited while two clients were connected \
                         ({} s): upgraded sockets are no longer hyper's, so a server that only \
                         asks hyper to shut down neither closes them nor stops waiting",
                        limit.as_secs()
                    ));
                }
                Some(status) if status.signal().is_some() => {
                    return Err(format!(
                        "on {name} the server was killed by the signal instead of shutting \
                         down: every open socket was cut without a Close frame, so each page \
                         sees code 1006, as for a network failure, instead of 1001 (going \
                         away), and nothing after the signal ran"
                    ));
                }
                Some(status) if !status.success() => {
                    return Err(format!(
                        "on {name} the server exited with {status}, not success"
                    ));
                }
                Some(_) => {}
            }
            for ended in [first, second] {
                match ended {
                    Next::Closed(Some(1001), _) => {}
                    other => {
                        return Err(format!(
                            "on {name} the server exited, but before that it {} instead of \
                             Close 1001 (going away): the page cannot tell a restart from a \
                             network failure",
                            other.said()
                        ));
                    }
                }
            }
            Ok::<(), String>(())
        };
        if let Err(failure) = attempt.await {
            return Outcome::Fail(failure);
        }
    }
    Outcome::Pass
}

/// Reads `socket` up to its end (tungstenite answers the server's Close meanwhile), within
/// `limit`: the server's Close if it sent one, otherwise how the socket ended.
#[cfg(unix)]
async fn closed_by_server(socket: &mut Socket, limit: Duration) -> Next {
    let deadline = Instant::now() + limit;
    let mut close = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(socket, left).await {
            Ok(Next::Event(_)) => continue,
            Ok(closed @ Next::Closed(..)) => close = Some(closed),
            Ok(ended) => return close.unwrap_or(ended),
            Err(failure) => return close.unwrap_or(Next::Cut(failure)),
        }
    }
}

/// Signals are Unix's: elsewhere the check says it cannot run.
#[cfg(not(unix))]
async fn closes_every_socket_on_a_signal(_rung: Rung) -> Outcome {
    Outcome::CannotRun(
        "it sends SIGINT and SIGTERM, which only Unix has; run it on Linux or macOS".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_exactly_type_from_and_text() {
        let message: Value = serde_json::json!({"type": "message", "from": 7, "text": "hi"});
        assert_eq!(as_message(&message), Ok(Some((7, "hi".to_owned()))));
        let join: Value = serde_json::json!({"type": "join", "client": 7, "clients": 2});
        assert_eq!(as_message(&join), Ok(None));
        for wrong in [
            serde_json::json!({"type": "message", "from": "7", "text": "hi"}),
            serde_json::json!({"type": "message", "from": 7}),
            serde_json::json!({"type": "message", "from": 7, "text": "hi", "at": 1}),
        ] {
            assert!(as_message(&wrong).unwrap_err().contains("nothing else"));
        }
    }

    #[test]
    fn long_texts_are_shortened_with_their_length() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(100);
        let shown = shorten(&long);
        assert!(shown.starts_with(&"é".repeat(80)), "{shown}");
        assert!(shown.ends_with("... (200 bytes)"), "{shown}");
        assert_eq!(
            close_said(Some(1009), "message too big"),
            "code 1009, \"message too big\""
        );
        assert_eq!(close_said(Some(1001), ""), "code 1001");
    }
}
