//! echo-ws's room on tokio's multi-thread runtime, the one every multi-core application (and
//! every axum app) runs on: a crowd and a burst must not get healthy clients closed, whichever
//! worker thread their sessions run on.
//!
//! Run with `cargo test --test echo_ws_multicore`. Each test holds a few thousand sockets (both
//! ends in this process), so it raises its open-files limit to the hard limit first.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::{TestServer, WAIT, within};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Each client is two file descriptors here, the test's and the server's.
fn enough_open_files(clients: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = (2 * clients + 200) as u64;
    if limit.current.is_some_and(|current| current < wanted) {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("raise the open-files limit");
    }
}

/// The room with a backlog of `backlog` messages.
async fn start(backlog: usize) -> TestServer {
    let config = echo_ws::Config {
        backlog,
        ..echo_ws::Config::default()
    };
    TestServer::start(|listener, signal| echo_ws::run(listener, config, signal)).await
}

/// Joins the room and reads the welcome.
async fn join(server: &TestServer) -> Client {
    let url = format!("ws://{}/ws", server.addr);
    let (mut socket, _) = within(tokio_tungstenite::connect_async(url))
        .await
        .expect("join the room");
    let welcome = within(socket.next()).await;
    assert!(
        matches!(&welcome, Some(Ok(Message::Text(text))) if text.contains("welcome")),
        "{welcome:?}"
    );
    socket
}

/// Reads `socket` until it has `count` room messages or one that says `last`, and returns their
/// texts; or how it ended first (a close frame says why: "too slow" is the failure these tests
/// look for).
async fn read_messages(mut socket: Client, count: usize) -> Result<Vec<String>, String> {
    let mut texts: Vec<String> = Vec::new();
    while texts.len() < count && texts.last().is_none_or(|text| text != "last") {
        match tokio::time::timeout(WAIT, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let event: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if event["type"] == "message" {
                    texts.push(event["text"].as_str().unwrap_or_default().to_owned());
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!("closed after {} messages: {frame:?}", texts.len()));
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("ended after {} messages: {other:?}", texts.len())),
        }
    }
    let _ = socket.close(None).await;
    Ok(texts)
}

// ANCHOR: burst_test
/// A burst of 500 messages from one client, arriving in one TCP segment, reaches each of 2,000
/// others complete and in order, and none is closed, with the room's sessions and writers spread
/// over two worker threads and a backlog of 32. The first room, whose sessions forwarded from a
/// shared ring and whose publisher did not wait for them, lapped the sessions queued on the other
/// worker: 1,966 of 2,000 were closed as too slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_closes_none_of_2000_on_two_workers() {
    const WATCHERS: usize = 2000;
    const BURST: usize = 500;
    enough_open_files(WATCHERS + 1);
    // A backlog of 32 rather than the default 128, so that a room that lets the burst get ahead
    // of its clients is caught in a debug build too, where everything runs slower.
    let server = start(32).await;
    let mut readers = JoinSet::new();
    for _ in 0..WATCHERS {
        let socket = join(&server).await;
        readers.spawn(read_messages(socket, BURST));
    }

    let mut burster = TcpStream::connect(server.addr).await.expect("connect");
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    // The 101 and the welcome are left unread: the burst follows the handshake at once.
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut bytes = handshake.into_bytes();
    for n in 0..BURST {
        let text = format!("m{n}");
        bytes.extend_from_slice(&[0x81, 0x80 | u8::try_from(text.len()).expect("short")]);
        bytes.extend_from_slice(&mask);
        bytes.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, k)| b ^ k));
    }
    burster.write_all(&bytes).await.expect("send the burst");

    let sent: Vec<String> = (0..BURST).map(|n| format!("m{n}")).collect();
    let mut failures = Vec::new();
    while let Some(read) = readers.join_next().await {
        match read.expect("a reader task") {
            Ok(texts) => assert_eq!(texts, sent, "every message of the burst, in order"),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {WATCHERS} watchers did not get the burst; the first: {:?}",
        failures.len(),
        failures.first()
    );
}
// ANCHOR_END: burst_test

/// 3,000 clients joining at once while a member keeps talking: every one of them, and the
/// members already in the room, stays and gets the message sent once the whole crowd is in, with
/// the room's sessions spread over two worker threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_of_3000_closes_nobody_on_two_workers() {
    const CROWD: usize = 3000;
    const MESSAGES: usize = 100;
    enough_open_files(CROWD + 2);
    // The demos' own listener, whose queue holds the whole crowd (see the next test): the storm
    // reaches the room, not the kernel's retries.
    let listener = loopback_listener();
    let server = TestServer::start_on(listener, |listener, signal| {
        echo_ws::run(listener, echo_ws::Config::default(), signal)
    });
    let mut talker = join(&server).await;
    let watcher = join(&server).await;
    let watching = tokio::spawn(read_messages(watcher, usize::MAX));

    let mut crowd = JoinSet::new();
    for _ in 0..CROWD {
        let addr = server.addr;
        crowd.spawn(async move {
            let url = format!("ws://{addr}/ws");
            let (socket, _) = within(tokio_tungstenite::connect_async(url))
                .await
                .map_err(|error| format!("could not join: {error}"))?;
            read_messages(socket, usize::MAX).await
        });
    }
    for n in 0..MESSAGES {
        let text = format!("t{n}");
        talker.send(Message::text(text)).await.expect("send");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    within(async {
        loop {
            let stats = realtime_kit::client::get(&server.url("/stats"))
                .await
                .expect("GET /stats");
            let stats: Value = stats.json().expect("stats are JSON");
            if stats["clients"] == CROWD + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    talker.send(Message::text("last")).await.expect("send");

    let texts = watching
        .await
        .expect("the watcher")
        .expect("the watcher stays");
    let sent: Vec<String> = (0..MESSAGES)
        .map(|n| format!("t{n}"))
        .chain(["last".into()])
        .collect();
    assert_eq!(
        texts, sent,
        "the member in the room got every message, in order"
    );
    let mut failures = Vec::new();
    while let Some(read) = crowd.join_next().await {
        if let Err(failure) = read.expect("a crowd task") {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CROWD} newcomers did not stay; the first: {:?}",
        failures.len(),
        failures.first()
    );
}

/// The listener every demo binds (`config::listen`), on a free loopback port.
fn loopback_listener() -> tokio::net::TcpListener {
    realtime_kit::config::bind("127.0.0.1:0".parse().expect("address")).expect("bind")
}

/// Every open page reconnects at once when a server restarts, before the server has accepted
/// any of them. The demos' listener queues a crowd of 2,000 for it. `TcpListener::bind` asks for
/// a queue of 1,024, and with it about 1,025 of these connects completed and the rest never did:
/// the kernel drops a SYN that finds the queue full, and with nobody accepting, every retry
/// finds it full again.
#[tokio::test]
async fn the_demos_listener_queues_a_crowd_before_it_accepts() {
    const CROWD: usize = 2000;
    enough_open_files(CROWD);
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4096);
    if somaxconn < CROWD {
        eprintln!(
            "skipped: net.core.somaxconn is {somaxconn}, under {CROWD}; raise it with \
             `sysctl -w net.core.somaxconn=4096`"
        );
        return;
    }
    let listener = loopback_listener();
    let addr = listener.local_addr().expect("address");
    // Nobody accepts: each connect completes into the listen queue, or waits for a retry that
    // cannot succeed, until the deadline.
    let connects = (0..CROWD).map(|_| tokio::time::timeout(WAIT / 2, TcpStream::connect(addr)));
    let results = futures_util::future::join_all(connects).await;
    let connected = results
        .iter()
        .filter(|result| matches!(result, Ok(Ok(_))))
        .count();
    assert_eq!(
        connected, CROWD,
        "connects that found the listen queue full"
    );
    drop(listener);
}

/// A client that stops reading for a moment and then reads slowly, on a server socket with a
/// small send buffer, so that its room messages wait in its outbox while its session writes
/// Pings (every 20 ms) and a join notice behind them, and the socket fills and empties again
/// and again: the client gets every message whole and in order, among valid Pings and notices,
/// and stays. A frame cut by another writer's bytes would be a protocol error here, and a lost
/// or reordered one a wrong list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pauses_gets_every_frame_whole_and_in_order() {
    const MESSAGES: usize = 100;
    let config = echo_ws::Config {
        ping_interval: Duration::from_millis(20),
        idle_timeout: Duration::from_secs(10),
        ..echo_ws::Config::default()
    };
    let listener = common::listener_with_send_buffer(8192);
    let server = TestServer::start_on(listener, |listener, signal| {
        echo_ws::run(listener, config, signal)
    });
    let mut pauser = join(&server).await;
    let mut talker = join(&server).await;
    let text = "p".repeat(8 * 1024);
    let reading = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut texts = Vec::new();
        while texts.last().is_none_or(|text| text != "last") {
            match tokio::time::timeout(WAIT, pauser.next()).await {
                Ok(Some(Ok(Message::Text(json)))) => {
                    let event: Value = serde_json::from_str(&json).expect("whole JSON");
                    if event["type"] == "message" {
                        texts.push(event["text"].as_str().unwrap_or_default().to_owned());
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("after {} messages: {other:?}", texts.len()),
            }
            // Slower than the talker: the socket fills and empties while Pings are written.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        texts
    });
    for n in 0..MESSAGES {
        talker
            .send(Message::text(format!("{n} {text}")))
            .await
            .expect("send");
        // The talker reads its own copy back: the room is not held up by the pauser.
        loop {
            match within(talker.next()).await {
                Some(Ok(Message::Text(got))) if got.contains("\"message\"") => break,
                Some(Ok(_)) => {}
                other => panic!("the talker's copy: {other:?}"),
            }
        }
        if n == MESSAGES / 2 {
            // A join in the middle, whose notice the pauser's session queues behind the
            // messages already waiting.
            drop(join(&server).await);
        }
    }
    talker.send(Message::text("last")).await.expect("send");
    let texts = reading.await.expect("the pauser stays in the room");
    let sent: Vec<String> = (0..MESSAGES)
        .map(|n| format!("{n} {text}"))
        .chain(["last".into()])
        .collect();
    assert_eq!(texts.len(), sent.len());
    for (got, wanted) in texts.iter().zip(&sent) {
        assert!(got == wanted, "got {got:.12}..., wanted {wanted:.12}...");
    }
}
