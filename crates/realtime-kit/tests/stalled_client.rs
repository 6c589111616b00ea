//! The write-stall timeout over real sockets: a client that stops reading an event stream is
//! disconnected once the server has been unable to write to it for the limit, and a client that
//! keeps reading the same stream is not.
//!
//! Run with `cargo test -p realtime-kit --test stalled_client`.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use realtime_kit::client::EventStream;
use realtime_kit::sse::{Event, SseResponse};
use realtime_kit::{ConnectionLimits, Gauge, RequestBody, ServerOptions, Shutdown, serve_with};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::time::{Instant, timeout};

/// A stream of 1 KiB events, one per millisecond, counted in `streams` while it is open.
fn fast_events(streams: &Gauge) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let event = Event::new().data("x".repeat(1024)).encode();
    let counted = streams.enter();
    let ticks = tokio::time::interval(Duration::from_millis(1));
    futures_util::stream::unfold(
        (ticks, counted, event),
        |(mut ticks, counted, event)| async move {
            ticks.tick().await;
            Some((event.clone(), (ticks, counted, event)))
        },
    )
}

/// A browser's request for a stream: the kit answers it on the socket itself (its direct path).
const BROWSER_REQUEST: &[u8] =
    b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n";

/// A request without `Accept: text/event-stream`: hyper answers it.
const PLAIN_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// On the kit's direct path, a client that stops reading is closed after the stall limit; one
/// that reads stays connected.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_a_reader_is_not() {
    stalled_client_is_cut_off(BROWSER_REQUEST).await;
}

/// The same through hyper, whose socket the kit wraps in a stall guard.
#[tokio::test]
async fn through_hyper_a_client_that_stops_reading_is_closed_too() {
    stalled_client_is_cut_off(PLAIN_REQUEST).await;
}

async fn stalled_client_is_cut_off(request: &[u8]) {
    // A small send buffer, so the kernel does not absorb megabytes before the server notices.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let listener = socket.listen(64).expect("listen");
    let addr = listener.local_addr().expect("address");

    let shutdown = Shutdown::new();
    let streams = Gauge::new();
    let limits = ConnectionLimits {
        write_stall_timeout: Duration::from_millis(300),
        ..ConnectionLimits::default()
    };
    let handler = {
        let (shutdown, streams) = (shutdown.clone(), streams.clone());
        move |_request: Request<RequestBody>| {
            let response = SseResponse::new(fast_events(&streams), &shutdown).into_response();
            async move { response }
        }
    };
    let options = ServerOptions {
        limits,
        // A browser's request is then taken by the direct path, curl's by hyper: both are tried.
        direct_streams: true,
        ..ServerOptions::default()
    };
    let server = tokio::spawn(serve_with(
        options,
        listener,
        std::future::pending(),
        shutdown.clone(),
        handler,
    ));

    // The reader: takes every event as it comes.
    let mut reader = EventStream::connect(&format!("http://{addr}/"), &[])
        .await
        .expect("connect");
    let reading = tokio::spawn(async move {
        let mut received = 0u64;
        while let Ok(Some(_)) = reader.next_event().await {
            received += 1;
        }
        received
    });

    // The stalled client: sends its request, then never reads a byte.
    let stalled = TcpSocket::new_v4().expect("socket");
    stalled.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stalled = stalled.connect(addr).await.expect("connect");
    stalled.write_all(request).await.expect("send the request");

    let both_open = timeout(Duration::from_secs(5), async {
        while streams.get() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(both_open.is_ok(), "both streams opened");

    // Its buffers fill within milliseconds; 300 ms later the server gives up on it.
    let started = Instant::now();
    let cut_off = timeout(Duration::from_secs(10), async {
        while streams.get() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        cut_off.is_ok(),
        "the stalled client was still connected after 10 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the limit"
    );

    // The reader goes on well past the limit.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(streams.get(), 1, "the client that reads is still connected");
    shutdown.trigger();
    let received = timeout(Duration::from_secs(5), reading)
        .await
        .expect("the reader's stream ended with the server")
        .expect("the reader did not panic");
    assert!(
        received > 300,
        "the reader kept receiving: {received} events"
    );
    timeout(Duration::from_secs(6), server)
        .await
        .expect("serve returned")
        .expect("serve did not panic");
    drop(stalled);
}
