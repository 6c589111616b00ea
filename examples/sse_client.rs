//! Prints the events of any SSE URL, and reconnects the way a browser's `EventSource` does.
//!
//! Run with
//!
//! ```text
//! cargo run --example sse_client -- http://127.0.0.1:3000/events
//! ```
//!
//! Each event is printed as `[type] id=<last event id> <data>`. When the stream ends or the
//! connection drops, it waits the `retry:` delay the server asked for (3 s if none) and
//! reconnects with `Last-Event-ID`, which is how the clock resumes its sequence. A response that
//! is not `200 text/event-stream` is final, as it is for a browser. Stop it with Ctrl-C.

use std::time::Duration;

use realtime_kit::client::EventStream;

/// What a browser waits before reconnecting when the server sent no `retry:`.
const DEFAULT_RETRY: Duration = Duration::from_secs(3);

// ANCHOR: main
#[tokio::main]
async fn main() -> realtime_kit::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: sse_client <http://host:port/path>")?;
    let mut last_event_id = String::new();
    let mut retry = DEFAULT_RETRY;
    loop {
        let headers: Vec<(&str, &str)> = if last_event_id.is_empty() {
            vec![]
        } else {
            vec![("last-event-id", last_event_id.as_str())]
        };
        match EventStream::connect(&url, &headers).await {
            Ok(stream) if !is_event_stream(&stream) => {
                return Err(
                    format!("{url} answered {}, not an event stream", stream.status()).into(),
                );
            }
            Ok(mut stream) => {
                eprintln!("connected to {url}");
                // Read until the stream ends; remember the id and the delay for the reconnect.
                let result = loop {
                    match stream.next_event().await {
                        Ok(Some(event)) => {
                            println!(
                                "[{}] id={} {}",
                                event.event, event.last_event_id, event.data
                            );
                        }
                        Ok(None) => break Ok(()),
                        Err(error) => break Err(error),
                    }
                };
                last_event_id = stream.last_event_id().to_owned();
                retry = stream.retry().unwrap_or(retry);
                if let Err(error) = result {
                    eprintln!("connection lost: {error}");
                } else {
                    eprintln!("the server ended the stream");
                }
            }
            Err(error) => eprintln!("cannot connect: {error}"),
        }
        eprintln!("reconnecting in {retry:?} with Last-Event-ID {last_event_id:?}");
        tokio::time::sleep(retry).await;
    }
}
// ANCHOR_END: main

fn is_event_stream(stream: &EventStream) -> bool {
    let content_type = stream.headers().get("content-type");
    stream.status() == 200
        && content_type.is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}
