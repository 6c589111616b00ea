//! The examples in `examples/` run and do what their docs say: each is started as a real process.
//!
//! `cargo test` builds the examples before it runs the tests; these tests find them next to the
//! test binary (`target/<profile>/examples/`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use realtime_kit::client::EventStream;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// The path of a built example, or a failure that says how to build it.
fn example(name: &str) -> PathBuf {
    let test_binary = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let profile_dir = test_binary
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir
        .join("examples")
        .join(name)
        .with_extension(std::env::consts::EXE_EXTENSION);
    assert!(
        path.exists(),
        "{} is not built: run the whole `cargo test` (which builds the examples) or `cargo build --examples` first",
        path.display()
    );
    path
}

/// Starts a program whose output is read by the test and which dies with the test.
fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example")
}

/// The next line the example prints, within [`WAIT`].
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read stdout")
        .expect("the example is still running")
}

/// `minimal_sse` prints where it listens, and its stream parses with the kit's parser into
/// numbered events: the smallest server is a correct one.
#[tokio::test]
async fn minimal_sse_example_streams_events() {
    let mut server = spawn(Command::new(example("minimal_sse")).env("PORT", "0"));
    let mut stdout = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let line = next_line(&mut stdout).await;
    let url = line
        .strip_prefix("minimal_sse listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));

    let mut stream = timeout(WAIT, EventStream::connect(&format!("{url}/events"), &[]))
        .await
        .expect("connect in time")
        .expect("connect");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut previous = 0u64;
    for _ in 0..2 {
        let event = timeout(WAIT, stream.next_event())
            .await
            .expect("an event in time")
            .expect("no stream error")
            .expect("the stream goes on");
        assert_eq!(event.event, "message");
        let id: u64 = event.last_event_id.parse().expect("numeric id");
        assert!(id > previous);
        previous = id;
        let _unix_seconds: u64 = event.data.parse().expect("the data is a Unix time");
    }
}

/// `sse_client` prints each tick of the clock as `[tick] id=<n> <json>`.
#[tokio::test]
async fn sse_client_example_prints_ticks() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/events", listener.local_addr().expect("address"));
    let config = clock_sse::Config {
        tick_interval: Duration::from_millis(100),
        ..clock_sse::Config::default()
    };
    tokio::spawn(clock_sse::run(listener, config, std::future::pending()));

    let mut client = spawn(Command::new(example("sse_client")).arg(&url));
    let mut stdout = BufReader::new(client.stdout.take().expect("stdout")).lines();
    for _ in 0..2 {
        let line = next_line(&mut stdout).await;
        let rest = line
            .strip_prefix("[tick] id=")
            .unwrap_or_else(|| panic!("{line}"));
        let (id, json) = rest.split_once(' ').expect("id and data");
        let data: serde_json::Value = serde_json::from_str(json).expect("JSON data");
        assert_eq!(data["unix_ms"].to_string(), id, "the id is the tick's time");
    }
}
