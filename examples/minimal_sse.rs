//! The smallest complete Server-Sent Events server on hyper alone: one file, no helper crate,
//! every header and every byte of the event format in plain sight.
//!
//! Run with
//!
//! ```text
//! cargo run --example minimal_sse
//! ```
//!
//! then `curl -N http://127.0.0.1:3010/events`, or open <http://127.0.0.1:3010>.
//!
//! It already has the right shape: one ticker for all clients, not a timer per client. What it
//! leaves out, and the clock-sse demo adds: keep-alive comments, `retry:`, resuming from
//! `Last-Event-ID`, graceful shutdown (this server simply dies on Ctrl-C), and error bodies.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

/// The page: `EventSource` does the connecting, parsing and reconnecting.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>minimal SSE</title>
<pre id="out"></pre>
<script>
  const source = new EventSource("/events");
  source.onmessage = (event) => {
    // textContent, not innerHTML: data from the network is text.
    document.getElementById("out").textContent += event.lastEventId + ": " + event.data + "\n";
  };
</script>
"#;

// ANCHOR: main
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // PORT=0 picks a free port (the tests do that); the line below says which.
    let port: u16 = std::env::var("PORT").map_or(Ok(3010), |port| port.parse())?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("minimal_sse listening on http://{}", listener.local_addr()?);

    // ONE ticker for every client. The broadcast channel gives each subscriber every event; it
    // keeps the last 16, so a client more than 16 behind skips ahead (see `Lagged` below).
    let (ticks, _) = broadcast::channel::<Bytes>(16);
    tokio::spawn(tick(ticks.clone()));

    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors, usually: pause rather than spin.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticks = ticks.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &ticks);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                eprintln!("connection error: {error}");
            }
        });
    }
}

/// Makes one event a second and hands it to every connected client.
async fn tick(ticks: broadcast::Sender<Bytes>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    for id in 1u64.. {
        interval.tick().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The whole format: `field: value` lines, then a blank line that ends the event.
        let event = format!("id: {id}\ndata: {}\n\n", now.as_secs());
        // Encoded once; every client gets a clone of the same bytes. `send` fails only when
        // no client is connected, which is fine.
        let _ = ticks.send(Bytes::from(event));
    }
}
// ANCHOR_END: main

// ANCHOR: respond
type Body = BoxBody<Bytes, Infallible>;

fn respond(request: &Request<Incoming>, ticks: &broadcast::Sender<Bytes>) -> Response<Body> {
    match request.uri().path() {
        "/" => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(Full::new(Bytes::from_static(PAGE.as_bytes())).boxed()),
        "/events" => {
            // This client's own receiver. When the client goes away, hyper's next write fails,
            // the body is dropped, and the receiver with it: nothing is left running.
            let events = futures_util::stream::unfold(ticks.subscribe(), |mut receiver| async {
                loop {
                    match receiver.recv().await {
                        Ok(event) => return Some((Ok(Frame::data(event)), receiver)),
                        // Fell behind: the missed ticks are stale anyway, take the next one.
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            Response::builder()
                // The one header that makes this an event stream.
                .header("content-type", "text/event-stream")
                // Every reader needs the live stream, never a cached copy.
                .header("cache-control", "no-cache")
                // Asks nginx (if it sits in front) not to buffer the stream.
                .header("x-accel-buffering", "no")
                // No `Connection: keep-alive`: HTTP/1.1 keeps connections open by default, and
                // the header is forbidden in HTTP/2. hyper sends the body chunked by itself.
                .body(BodyExt::boxed(StreamBody::new(events)))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")).boxed()),
    }
    .expect("fixed, valid headers")
}
// ANCHOR_END: respond
