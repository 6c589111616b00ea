//! loadgen: how many clients a demo holds, and how fast it fans a message out to all of them.
//!
//! Start a demo (a release build: `cargo run --release -p clock-sse`), then for example:
//!
//! ```text
//! cargo run --release -p loadgen -- sse-idle --url http://127.0.0.1:3000/events \
//!     --clients 19000 --server-pid $(pgrep -x clock-sse)
//! cargo run --release -p loadgen -- clock-spread --url http://127.0.0.1:3000/events --clients 10000
//! cargo run --release -p loadgen -- chat-fanout --url http://127.0.0.1:3002 --clients 10000
//! cargo run --release -p loadgen -- ws-fanout --url ws://127.0.0.1:3001/ws --clients 10000
//! cargo run --release -p loadgen -- ws-throughput --url ws://127.0.0.1:3001/ws --clients 100 --senders 10
//! cargo run --release -p loadgen -- floor --clients 10000 --rounds 20 --writers 2
//! ```
//!
//! `floor` needs no demo: it is the machine's floor for fan-out (raw TCP writes from OS threads
//! to a second process reading with epoll, see src/floor.rs), the figure a fan-out is divided by.
//!
//! Every run is bounded: a number of clients, a number of rounds or seconds, and a deadline
//! (`--deadline`, default 120 s) after which it reports what it has and exits. It targets
//! loopback addresses only, closes every connection before it exits, and prints a summary table
//! (or one JSON line with `--json`; `--json-file PATH` appends that line to a file as well).
//! With `--server-pid` it also reports the server's memory (RSS) per connection and CPU time,
//! next to its own CPU time: both share this machine's cores, so the report says which side was
//! busier. For the fan-out scenarios it adds the server's CPU per delivery. Their clients are
//! read by one epoll thread (`--reader epoll`, the default; src/epoll_reader.rs), the same kind
//! of reader as the floor's, so that a fan-out divided by the floor compares the servers and not
//! the readers. `--reader tokio` reads them with a tokio task each, as loadgen used to, and times
//! each arrival twice: when loadgen read it, and when the kernel received it (`(kernel stamp)`
//! rows, which do not wait for loadgen's one thread to get to that client).
//!
//! loadgen runs on Linux only: it reads the server's memory and CPU from `/proc`, its clients
//! with epoll, and the kernel's receive stamps through `SO_TIMESTAMPNS`; elsewhere it says so
//! and exits. The demos, their tests and the book need none of it.

#[cfg(target_os = "linux")]
mod cli;
#[cfg(target_os = "linux")]
mod clients;
#[cfg(target_os = "linux")]
mod epoll_reader;
#[cfg(target_os = "linux")]
mod floor;
#[cfg(target_os = "linux")]
mod kernel_stamp;
#[cfg(target_os = "linux")]
mod measure;
#[cfg(target_os = "linux")]
mod perf_control;
#[cfg(target_os = "linux")]
mod scenarios;
#[cfg(target_os = "linux")]
mod sse_client;

#[cfg(target_os = "linux")]
fn main() -> realtime_kit::Result<()> {
    cli::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "loadgen measures with what only Linux has (/proc for the server's memory and CPU, \
         SO_TIMESTAMPNS for the kernel's receive stamps): run it on Linux. The demos and their \
         tests run here as they are."
    );
    std::process::ExitCode::FAILURE
}
