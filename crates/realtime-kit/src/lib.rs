//! The plumbing every demo in this workspace shares, written once so that each demo can read
//! top to bottom as its own logic.
//!
//! | module | what it gives a demo |
//! | --- | --- |
//! | [`sse`] | an [`sse::Event`] encoded to `Bytes` once and written to many clients, and the streaming response |
//! | [`parser`] | the client side of SSE: a streaming parser that follows the WHATWG rules |
//! | [`client`] | a small HTTP client over hyper for tests, examples and the load generator |
//! | [`server`] | the accept loop, per-connection tasks and graceful [`Shutdown`]; on request, event streams written straight to the socket |
//! | [`host`] | the `Host` names the server answers: the defence against DNS rebinding, and HTTP/1.1's `Host` rules |
//! | [`request`] | a JSON body read with a Content-Type check, a size limit and a deadline, and CORS for listed origins |
//! | [`respond`] | HTML pages from askama templates, JSON, and errors as `{"error": ...}` |
//! | [`config`] | `--port`/`--bind`, the "listening on" line, logging and the Ctrl-C signal |
//! | [`backplane`] | the seam between one process and N: in-process by default, Redis with `--redis URL`, and the connections and `503` that go with it |
//! | [`ws`] | WebSocket on hyper: handshake, `Origin` check, per-socket limits, the upgrade |
//! | [`fanout`] | one message to many sockets from one writer task per core, each socket shared with its session |
//!
//! Nothing here is a framework: a demo still matches on method and path itself and builds its own
//! responses, so the protocol stays visible.

pub mod backplane;
pub mod client;
pub mod config;
mod direct;
pub mod fanout;
pub mod host;
pub mod parser;
pub mod request;
pub mod respond;
pub mod server;
pub mod sse;
pub mod ws;

pub use host::AllowedHosts;
pub use respond::Rejection;
pub use server::{
    BodyError, BodyTimeout, ConnectionLimits, Gauge, GaugeGuard, RequestBody, ResponseBody,
    ServerOptions, Shutdown, request_body, serve, serve_with,
};

/// The error type of fallible functions at the edge of a program (`main`, examples, tests): any
/// error, boxed. Inside a server, errors become responses or log lines, never this.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `Result` with the boxed [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
