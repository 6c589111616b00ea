//! chat-sse end to end on hyper's path (the default): every case in
//! `chat_sse/cases.rs`. `chat_sse_direct.rs` runs the same cases on the kit's direct path.
//!
//! Run with `cargo test --test chat_sse`.

mod common;

/// Whether the server answers `EventSource` requests on the kit's direct path.
const DIRECT_STREAMS: bool = false;

#[path = "chat_sse/cases.rs"]
mod cases;
