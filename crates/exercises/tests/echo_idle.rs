//! Tests of exercise `echo_idle`: run with `cargo run -p exercises -- check echo_idle`.

use std::net::SocketAddr;
use std::time::Duration;

use exercises::echo_idle::{Config, run};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const CONFIG: Config = Config {
    ping_interval: Duration::from_millis(100),
    idle_timeout: Duration::from_millis(400),
};

/// Starts the exercise's server and returns its address.
async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(run(listener, CONFIG, std::future::pending()));
    address
}

/// Opens a WebSocket by hand and then never answers anything: a client that has vanished.
/// (A tungstenite client would answer the pings by itself while it reads.)
async fn silent_client(address: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(address).await.expect("connect");
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("send the handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.expect("read the 101"));
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "the handshake must succeed"
    );
    tcp
}

/// Reads the server's frames (unmasked, small) until a Close, and returns its close code.
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    loop {
        let first = tcp.read_u8().await.ok()?;
        let length = usize::from(tcp.read_u8().await.ok()? & 0x7f);
        assert!(length < 126, "control frames are short");
        let mut payload = vec![0; length];
        tcp.read_exact(&mut payload).await.ok()?;
        if first & 0x0f == 0x8 {
            return payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]]));
        }
    }
}

/// A client that never answers the pings is closed with 1008 soon after the idle timeout.
#[tokio::test]
async fn a_silent_client_is_closed_with_1008() {
    let mut tcp = silent_client(start().await).await;
    let code = timeout(Duration::from_secs(3), close_code(&mut tcp))
        .await
        .expect(
            "a client that answers nothing must be closed after idle_timeout (400 ms here), but it \
         was still open after 3 s; see the TODO in exercises/echo_idle.rs",
        );
    assert_eq!(
        code,
        Some(1008),
        "a silent client is closed with 1008 (policy violation)"
    );
}

/// A client that answers pings stays connected through many idle timeouts, and still echoes.
#[tokio::test]
async fn a_live_quiet_client_stays_connected() {
    let address = start().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/echo"))
        .await
        .expect("WebSocket handshake");
    // Reading lets tungstenite answer each Ping with a Pong; nothing else should arrive.
    let quiet = timeout(Duration::from_millis(1500), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Ping(_)) => {}
                other => return other,
            }
        }
        panic!("the server ended the connection of a client that answers its pings")
    })
    .await;
    if let Ok(unexpected) = quiet {
        panic!("a client that answers pings must stay open, but got {unexpected:?}");
    }
    socket
        .send(Message::text("still here"))
        .await
        .expect("send");
    let echo = timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("no echo within 5 s");
    assert_eq!(
        echo.expect("open").expect("a message"),
        Message::text("still here")
    );
}
