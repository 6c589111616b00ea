//! The real servers some tests need beside the demos: a private `redis-server` per test, on a
//! Unix socket in a temporary directory, stopped when the test drops it.
//!
//! On a laptop without the binary, a test skips with one line saying how to install it; under
//! CI (the `CI` variable set) a missing binary fails the test, so a green run means it ran.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use realtime_kit::backplane::redis;
use tokio::process::{Child, Command};

use super::WAIT;

/// Whether `binary` can be run. If not: under CI, panics; elsewhere prints how to install it
/// and returns `false`, and the test returns.
pub fn available(binary: &str, install: &str) -> bool {
    let found = std::process::Command::new(binary)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{binary} is not installed, and CI needs it: {install}"
        );
        eprintln!("skipping: {binary} is not installed (install it with `{install}`)");
    }
    found
}

/// A private Redis: its own directory, socket and data file.
pub struct TestRedis {
    /// Holds the socket, the log and `dump.rdb`; removed on drop.
    dir: tempfile::TempDir,
    /// The running server, killed on drop; `None` while stopped.
    child: Option<Child>,
}

impl TestRedis {
    /// Starts one, or returns `None` (the test skips) when `redis-server` is not installed.
    pub async fn start() -> Option<Self> {
        if !available("redis-server", "apt-get install redis-server") {
            return None;
        }
        let mut redis = Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        redis.launch().await;
        Some(redis)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL the demos are given.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// A client for the test's own commands.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a valid URL")
    }

    async fn launch(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        // Ready when it answers PING; give up after WAIT.
        let client = self.client();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start; see {}",
                dir.join("redis.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server with `SHUTDOWN SAVE` (`keep: true`: the data is back after
    /// [`start_again`](Self::start_again)) or `SHUTDOWN NOSAVE` (it restarts empty).
    pub async fn stop(&mut self, keep: bool) {
        let mut connection = self
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to stop");
        let how = if keep { "SAVE" } else { "NOSAVE" };
        // The server closes the connection instead of answering.
        let _ = redis::cmd("SHUTDOWN")
            .arg(how)
            .query_async::<()>(&mut connection)
            .await;
        if let Some(mut child) = self.child.take() {
            tokio::time::timeout(WAIT, child.wait())
                .await
                .expect("redis-server exits")
                .expect("wait for redis-server");
        }
        if !keep {
            let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        }
    }

    /// Starts the stopped server again on the same socket and directory.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.launch().await;
    }
}
