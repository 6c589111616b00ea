//! loadgen against real clock-sse and chat-sse servers on `127.0.0.1:0`, run as the real binary
//! with small numbers: the scenarios connect, measure and report, and the tool refuses
//! non-loopback targets. loadgen measures on Linux only, so these run there only.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::process::Command;

async fn start_clock() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = clock_sse::Config {
        tick_interval: Duration::from_millis(50),
        ..clock_sse::Config::default()
    };
    tokio::spawn(clock_sse::run(listener, config, std::future::pending()));
    addr
}

async fn start_chat() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(chat_sse::run(
        listener,
        chat_sse::Config::default(),
        std::future::pending(),
    ));
    addr
}

async fn start_echo() -> SocketAddr {
    start_echo_with(echo_ws::Config::default()).await
}

async fn start_echo_with(config: echo_ws::Config) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(echo_ws::run(listener, config, std::future::pending()));
    addr
}

async fn loadgen(args: &[&str]) -> Output {
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("loadgen finished in time")
        .expect("loadgen ran")
}

fn json_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// `sse-idle` opens every stream, holds it, and reports the server's memory per connection
/// (the server here is this test process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_idle_holds_every_stream_and_reports_memory() {
    let addr = start_clock().await;
    let url = format!("http://{addr}/events");
    let pid = std::process::id().to_string();
    let output = loadgen(&[
        "sse-idle",
        "--url",
        &url,
        "--clients",
        "50",
        "--hold",
        "0.3",
        "--server-pid",
        &pid,
        "--json",
    ])
    .await;
    let report = json_report(&output);
    assert_eq!(report["scenario"], "sse-idle");
    assert_eq!(report["clients"]["connected"], 50);
    assert_eq!(report["clients"]["failed"], 0);
    assert_eq!(report["closed_by_server"], 0);
    assert!(report["server_rss_kib"]["after"].as_u64().expect("RSS") > 0);
    assert!(
        report["kernel_slab_kib"]["after"]
            .as_u64()
            .expect("the kernel's slab")
            > 0,
        "{report}"
    );
    assert!(report["loadgen_cpu_s"].is_number());
}

/// `clock-spread` with the tokio reader measures each requested tick across every client,
/// none missed, by loadgen's reads and by the kernel's receive stamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_spread_measures_every_tick() {
    let addr = start_clock().await;
    let url = format!("http://{addr}/events");
    let output = loadgen(&[
        "clock-spread",
        "--url",
        &url,
        "--clients",
        "20",
        "--ticks",
        "3",
        "--reader",
        "tokio",
        "--json",
    ])
    .await;
    let report = json_report(&output);
    assert_eq!(report["reader"], "tokio");
    assert_eq!(report["clients"]["connected"], 20);
    assert_eq!(report["tick_spread"]["samples"], 3);
    assert_eq!(report["tick_spread_kernel"]["samples"], 3);
    assert_eq!(report["incomplete_ticks"], 0);
}

/// `chat-fanout` (the tokio reader) posts each round and sees it reach every stream; messages
/// posted before the run (the backlog every new stream receives first) are not counted as
/// rounds. Each round's time to the last client is also taken from the kernel's receive stamps, and with the
/// server's PID (this test process) it reports the server's CPU per delivery. `--json-file`
/// appends the same JSON line that is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_fanout_reaches_every_stream() {
    let addr = start_chat().await;
    let url = format!("http://{addr}");
    let pid = std::process::id().to_string();
    let json_file = std::env::temp_dir().join(format!("loadgen-test-{pid}.jsonl"));
    let _ = std::fs::remove_file(&json_file);
    let json_path = json_file.to_str().expect("a UTF-8 temporary path");
    let earlier = [
        "chat-fanout",
        "--url",
        &url,
        "--clients",
        "5",
        "--rounds",
        "2",
    ];
    assert!(loadgen(&earlier).await.status.success());
    let output = loadgen(&[
        "chat-fanout",
        "--url",
        &url,
        "--clients",
        "20",
        "--rounds",
        "3",
        "--server-pid",
        &pid,
        "--json-file",
        json_path,
        "--reader",
        "tokio",
        "--json",
    ])
    .await;
    let report = json_report(&output);
    let appended = std::fs::read_to_string(&json_file).expect("the JSON file");
    let _ = std::fs::remove_file(&json_file);
    assert_eq!(appended, String::from_utf8_lossy(&output.stdout));
    assert_eq!(report["clients"]["connected"], 20);
    assert_eq!(report["to_last_client"]["samples"], 3);
    assert_eq!(report["to_last_client_kernel"]["samples"], 3);
    assert!(report["server_cpu_us_per_delivery"].is_number());
    assert_eq!(report["to_every_client"]["samples"], 60);
    assert_eq!(report["missed"], 0);
    assert!(
        report["loadgen_cpu_us_per_event"]
            .as_f64()
            .expect("CPU per event")
            > 0.0
    );
}

/// The table form names what was measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_report_is_readable() {
    let addr = start_clock().await;
    let url = format!("http://{addr}/events");
    let output = loadgen(&["sse-idle", "--url", &url, "--clients", "5", "--hold", "0"]).await;
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("5 of 5 connected"), "{table}");
    assert!(table.contains("loadgen CPU"), "{table}");
}

/// Load is only ever sent to this machine: any other address is refused before connecting.
#[tokio::test]
async fn refuses_targets_off_loopback() {
    for url in [
        "http://10.0.0.1:3000/events",
        "http://example.com/events",
        "ws://192.168.1.2/ws",
    ] {
        let output = loadgen(&["sse-idle", "--url", url, "--clients", "1"]).await;
        assert!(!output.status.success(), "{url} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("only targets loopback"), "{stderr}");
    }
}

/// `--plain` requests the stream as curl does, without `Accept: text/event-stream`: the kit
/// then serves it through hyper, and every stream still opens and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_requests_are_served_too() {
    let addr = start_clock().await;
    let url = format!("http://{addr}/events");
    let output = loadgen(&[
        "clock-spread",
        "--url",
        &url,
        "--clients",
        "10",
        "--ticks",
        "2",
        "--plain",
        "--json",
    ])
    .await;
    let report = json_report(&output);
    assert_eq!(report["clients"]["connected"], 10);
    assert_eq!(report["tick_spread"]["samples"], 2);
    assert_eq!(report["incomplete_ticks"], 0);
}

/// `ws-fanout` with the tokio reader sees every round reach every WebSocket client, timed by
/// loadgen's reads and by the kernel's receive stamps, and reports the server's CPU per
/// delivery given its PID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_fanout_reaches_every_client() {
    let addr = start_echo().await;
    let url = format!("ws://{addr}/ws");
    let pid = std::process::id().to_string();
    let output = loadgen(&[
        "ws-fanout",
        "--url",
        &url,
        "--clients",
        "20",
        "--rounds",
        "3",
        "--server-pid",
        &pid,
        "--reader",
        "tokio",
        "--json",
    ])
    .await;
    let report = json_report(&output);
    assert_eq!(report["clients"]["connected"], 20);
    assert_eq!(report["to_last_client"]["samples"], 3);
    assert_eq!(report["to_last_client_kernel"]["samples"], 3);
    assert_eq!(report["missed"], 0);
    assert!(report["server_cpu_us_per_delivery"].is_number());
}

/// `floor` needs no server: its writer and its reader process see every round reach every one
/// of 200 sockets, in a sane time, and the writer's CPU per delivery is counted. The same for
/// each kind of writer (OS threads, the floor; tokio shards; a tokio task per socket) and for
/// each frame: raw bytes, and chat-sse's events read by the chat's own reader.
#[tokio::test]
async fn floor_reaches_every_socket_in_every_round() {
    let runs = [
        ("threads", "raw"),
        ("tokio-shards", "raw"),
        ("tokio-tasks", "raw"),
        ("threads", "sse"),
    ];
    for (writer, frame) in runs {
        let output = loadgen(&[
            "floor",
            "--clients",
            "200",
            "--rounds",
            "3",
            "--writers",
            "2",
            "--writer",
            writer,
            "--frame",
            frame,
            "--json",
        ])
        .await;
        let report = json_report(&output);
        assert_eq!(report["scenario"], "floor");
        assert_eq!(report["writer"], writer);
        assert_eq!(report["frame"], frame);
        assert_eq!(report["n"], 200);
        assert_eq!(report["writers"], 2);
        let size = report["size"].as_u64().expect("size");
        // An SSE round is a chat message in one chunk: id, JSON data with the marker, framing.
        let expected = if frame == "raw" { 100..=100 } else { 120..=160 };
        assert!(expected.contains(&size), "{frame}: {size} B");
        assert_eq!(report["rounds"], 3);
        assert_eq!(report["rounds_complete"], 3, "{writer}, {frame}: {report}");
        assert_eq!(report["missed"], 0, "{writer}, {frame}");
        let last = &report["to_last_client"];
        assert_eq!(last["samples"], 3, "{writer}");
        let (p50, p99, max) = (
            last["p50_ms"].as_f64().expect("p50"),
            last["p99_ms"].as_f64().expect("p99"),
            last["max_ms"].as_f64().expect("max"),
        );
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max && max < 1000.0,
            "{writer}: {last}"
        );
        let cpu = report["writer_us_per_delivery"].as_f64().expect("CPU");
        assert!(cpu > 0.0 && cpu < 1000.0, "{writer}: {cpu}");
    }
}

/// Checks what every fan-out read by the epoll reader (the default) reports: the reader's name,
/// every client connected, `rounds` samples of the time to the last client, none missed, no
/// kernel-stamp rows (the epoll reader reads without them, as the floor does) and every other
/// key the benchmark script reads.
fn assert_epoll_fanout(report: &Value, clients: u64, rounds: u64) {
    assert_eq!(report["reader"], "epoll", "{report}");
    assert_eq!(report["clients"]["connected"], clients, "{report}");
    assert_eq!(report["ended"], 0, "{report}");
    assert_eq!(report["missed"], 0, "{report}");
    assert_eq!(report["to_last_client"]["samples"], rounds, "{report}");
    assert_eq!(
        report["to_every_client"]["samples"],
        clients * rounds,
        "{report}"
    );
    assert_eq!(
        report["rounds_first_last_ms"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0) as u64,
        rounds,
        "{report}"
    );
    assert!(report.get("to_last_client_kernel").is_none(), "{report}");
    assert!(report["server_cpu_us_per_delivery"].is_number(), "{report}");
    let cpu = report["loadgen_cpu_us_per_event"].as_f64().expect("CPU");
    assert!(cpu > 0.0, "{report}");
}

/// `ws-fanout` read by the epoll reader: every round reaches every one of 50 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_fanout_with_the_epoll_reader() {
    let addr = start_echo().await;
    let url = format!("ws://{addr}/ws");
    let pid = std::process::id().to_string();
    let output = loadgen(&[
        "ws-fanout",
        "--url",
        &url,
        "--clients",
        "50",
        "--rounds",
        "5",
        "--server-pid",
        &pid,
        "--json",
    ])
    .await;
    assert_epoll_fanout(&json_report(&output), 50, 5);
}

/// `chat-fanout` read by the epoll reader: every post reaches every one of 50 streams, with a
/// pause after each round (`--pause`, as benchmarks.sh paces it like the floor), and an earlier
/// run's messages in the backlog do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_fanout_with_the_epoll_reader() {
    let addr = start_chat().await;
    let url = format!("http://{addr}");
    let pid = std::process::id().to_string();
    let earlier = [
        "chat-fanout",
        "--url",
        &url,
        "--clients",
        "5",
        "--rounds",
        "2",
    ];
    assert!(loadgen(&earlier).await.status.success());
    let output = loadgen(&[
        "chat-fanout",
        "--url",
        &url,
        "--clients",
        "50",
        "--rounds",
        "5",
        "--pause",
        "0.05",
        "--server-pid",
        &pid,
        "--json",
    ])
    .await;
    assert_epoll_fanout(&json_report(&output), 50, 5);
}

/// `clock-spread` read by the epoll reader finds each tick's id in the raw stream and sees every
/// tick reach every one of 50 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_spread_with_the_epoll_reader() {
    let addr = start_clock().await;
    let url = format!("http://{addr}/events");
    let pid = std::process::id().to_string();
    let output = loadgen(&[
        "clock-spread",
        "--url",
        &url,
        "--clients",
        "50",
        "--ticks",
        "5",
        "--server-pid",
        &pid,
        "--json",
    ])
    .await;
    let report = json_report(&output);
    assert_eq!(report["reader"], "epoll", "{report}");
    assert_eq!(report["clients"]["connected"], 50);
    assert_eq!(report["tick_spread"]["samples"], 5, "{report}");
    assert_eq!(report["incomplete_ticks"], 0, "{report}");
    assert_eq!(report["ended"], 0, "{report}");
    assert!(report.get("tick_spread_kernel").is_none(), "{report}");
    assert!(report["server_cpu_us_per_delivery"].is_number());
    assert!(report["loadgen_cpu_us_per_event"].as_f64().expect("CPU") > 0.0);
}

/// The clients answer the server's pings: echo-ws pings every 100 ms and closes a client that
/// sent nothing for 300 ms, and a run of 1.5 s still reaches every client in every round.
/// Without the Pongs every client would be closed as silent and miss the later rounds. The
/// report counts the Pings the window held: each client's, every 100 ms, for over a second.
async fn pinged_fanout(reader: &str) -> Value {
    let addr = start_echo_with(echo_ws::Config {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..echo_ws::Config::default()
    })
    .await;
    let url = format!("ws://{addr}/ws");
    let pid = std::process::id().to_string();
    let output = loadgen(&[
        "ws-fanout",
        "--url",
        &url,
        "--clients",
        "20",
        "--rounds",
        "10",
        "--pause",
        "0.15",
        "--reader",
        reader,
        "--server-pid",
        &pid,
        "--json",
    ])
    .await;
    let report = json_report(&output);
    assert_eq!(report["clients"]["connected"], 20, "{report}");
    assert_eq!(report["missed"], 0, "{report}");
    assert_eq!(report["to_every_client"]["samples"], 20 * 10, "{report}");
    let pings = report["pings"].as_u64().expect("a count of Pings");
    assert!((20 * 10..=20 * 25).contains(&pings), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoll_reader_answers_pings() {
    assert_epoll_fanout(&pinged_fanout("epoll").await, 20, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_clients_answer_pings() {
    let report = pinged_fanout("tokio").await;
    assert_eq!(report["reader"], "tokio", "{report}");
}
