//! A command-line WebSocket client: each line you type is sent as a text message, and each
//! message that arrives is printed on its own line.
//!
//! Run with
//!
//! ```text
//! cargo run -p echo-ws                                      # in one terminal
//! cargo run --example ws_client -- ws://127.0.0.1:3001/ws   # in another (or several)
//! ```
//!
//! In the room every line comes back to every client as JSON, e.g.
//! `{"type":"message","from":2,"text":"hello"}`; against `/echo` it comes back as typed.
//! End input (Ctrl-D) to close the connection cleanly with code 1000. Unlike the SSE client,
//! this one does not reconnect: WebSocket has no reconnection built in, and the room is live
//! chat, with nothing to resume.

use std::io::BufRead;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Lines typed ahead of the network; past this, reading stdin waits for the socket.
const TYPED_AHEAD: usize = 64;

// ANCHOR: main
#[tokio::main]
async fn main() -> realtime_kit::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: ws_client <ws://host:port/path>")?;
    let (mut socket, _response) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
    eprintln!("connected to {url}; type a line to send it, Ctrl-D to quit");

    // Reading stdin blocks, so a plain thread does it and hands lines over a bounded channel.
    let (typed, mut lines) = mpsc::channel::<String>(TYPED_AHEAD);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if typed.blocking_send(line).is_err() {
                break; // the connection is over
            }
        }
    });

    let mut input_ended = false;
    loop {
        tokio::select! {
            line = lines.recv(), if !input_ended => match line {
                Some(line) => socket.send(Message::text(line)).await?,
                None => {
                    input_ended = true;
                    // End of input: start the closing handshake, then read until the server
                    // answers it (the loop ends when the stream does).
                    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                    socket.send(Message::Close(Some(bye))).await?;
                }
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => println!("{text}"),
                Some(Ok(Message::Binary(bytes))) => println!("[binary, {} bytes]", bytes.len()),
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        eprintln!("closed: {} {}", u16::from(frame.code), frame.reason);
                    }
                }
                // tungstenite answers the server's Pings by itself.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => return Ok(()),
            },
        }
    }
}
// ANCHOR_END: main
