//! chat-sse end to end on the kit's direct path for event streams:
//! every case in `chat_sse/cases.rs`. `chat_sse.rs` runs the same cases on hyper's path.
//!
//! Run with `cargo test --test chat_sse_direct`.

mod common;

/// Whether the server answers `EventSource` requests on the kit's direct path.
const DIRECT_STREAMS: bool = true;

#[path = "chat_sse/cases.rs"]
mod cases;
