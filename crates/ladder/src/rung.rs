//! A rung as a running process: started with `PORT=0` (or `--port 0`) and the settings a test
//! asks for, found by the `<name> listening on http://<address>` line it prints, and killed
//! when the test lets go of it, whether the test passed, failed or timed out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The settings the rungs read from the environment. The checker clears them before it sets
/// the ones a test asks for, so that a value in the caller's shell cannot change a result.
pub const SETTINGS: &[&str] = &[
    "PORT",
    "TICK_MS",
    "KEEP_ALIVE_MS",
    "STALL_TIMEOUT_MS",
    "HEADER_TIMEOUT_MS",
    "BODY_TIMEOUT_MS",
    "MAX_LAG",
    "SEND_TIMEOUT_MS",
    "PING_MS",
    "IDLE_TIMEOUT_MS",
    "ALLOW_HOST",
    "BIND",
    "DIRECT_STREAMS",
    "SEED",
    "UPDATES_PER_SECOND",
];

/// How long a rung may take to print its listening line.
const START_LIMIT: Duration = Duration::from_secs(10);

/// How many of a rung's last output lines are kept, to show when it fails to start.
const OUTPUT_LINES: usize = 12;

/// How a rung is told which port to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortBy {
    /// The steps read `PORT`.
    EnvVar,
    /// The finished demos take `--port`.
    Flag,
}

/// A rung that can be started: a step's example or a finished demo's binary.
#[derive(Debug, Clone)]
pub struct Rung {
    /// The step's or the demo's name.
    pub name: String,
    /// The built executable.
    pub program: PathBuf,
    /// How it is given its port.
    pub port_by: PortBy,
}

/// A running rung. Dropping it kills the process.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    /// Its last lines of output, both streams.
    output: Arc<Mutex<VecDeque<String>>>,
}

impl Rung {
    /// Starts the rung on a free port with `settings` in its environment.
    pub async fn start(&self, settings: &[(&str, &str)]) -> Result<Server, String> {
        self.start_on(0, settings).await
    }

    /// Starts the rung on `port` (0 for a free one) with `settings` in its environment.
    pub async fn start_on(&self, port: u16, settings: &[(&str, &str)]) -> Result<Server, String> {
        let mut command = Command::new(&self.program);
        for name in SETTINGS {
            command.env_remove(name);
        }
        match self.port_by {
            PortBy::EnvVar => command.env("PORT", port.to_string()),
            PortBy::Flag => command.args(["--port", &port.to_string()]),
        };
        command
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Also covers the moment before `Server` exists: a failed start kills it too.
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            format!(
                "{} could not be started ({}): {error}",
                self.name,
                self.program.display()
            )
        })?;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_last_lines(stderr, output.clone()));
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(START_LIMIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                remember(&output, &line);
                if let Some(addr) = listening_address(&line) {
                    return Some(addr);
                }
            }
            None
        })
        .await;
        let said = |what: &str| {
            format!(
                "{} {what}; its last output: {}",
                self.name,
                last_lines(&output)
            )
        };
        match listening {
            Ok(Some(addr)) => {
                tokio::spawn(keep_last_lines(lines.into_inner(), output.clone()));
                Ok(Server {
                    addr,
                    child,
                    output,
                })
            }
            Ok(None) => {
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let status = match status {
                    Ok(Ok(status)) => status.to_string(),
                    _ => "an unknown status".to_owned(),
                };
                Err(said(&format!(
                    "exited ({status}) without saying where it listens"
                )))
            }
            Err(_) => Err(said(&format!(
                "did not print its `... listening on http://<address>` line within {} s",
                START_LIMIT.as_secs()
            ))),
        }
    }
}

impl Server {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The port it listens on, to start the next run of the rung on the same one.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The process's id, to read what it costs (`/proc/<pid>` on Linux); `None` once it has
    /// exited.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` to the process.
    #[cfg(unix)]
    pub fn send_signal(&self, signal: rustix::process::Signal) -> Result<(), String> {
        let pid = self
            .child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(i32::try_from(id).ok()?))
            .ok_or("the server had already exited before the signal")?;
        rustix::process::kill_process(pid, signal)
            .map_err(|error| format!("could not send the signal: {error}"))
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Kills the process and waits until it is gone, so that its port is free again.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Its last lines of output, for a message.
    pub fn last_output(&self) -> String {
        last_lines(&self.output)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL on Unix; tokio reaps the process in the background.
        let _ = self.child.start_kill();
    }
}

/// The address in a `<name> listening on http://<address>` line, as every demo and step prints.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(" listening on http://")?;
    rest.trim().trim_end_matches('/').parse().ok()
}

async fn keep_last_lines(stream: impl AsyncRead + Unpin, output: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        remember(&output, &line);
    }
}

fn remember(output: &Mutex<VecDeque<String>>, line: &str) {
    let mut output = output
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if output.len() == OUTPUT_LINES {
        output.pop_front();
    }
    output.push_back(line.to_owned());
}

fn last_lines(output: &Mutex<VecDeque<String>>) -> String {
    let output = output
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if output.is_empty() {
        return "(nothing)".to_owned();
    }
    output.iter().cloned().collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let addr = |line| listening_address(line).map(|addr| addr.to_string());
        assert_eq!(
            addr("clock-sse listening on http://127.0.0.1:3000").as_deref(),
            Some("127.0.0.1:3000")
        );
        assert_eq!(
            addr("step1_ticks listening on http://127.0.0.1:41234/\r").as_deref(),
            Some("127.0.0.1:41234")
        );
        assert_eq!(
            addr("echo-ws listening on http://[::1]:3002").as_deref(),
            Some("[::1]:3002")
        );
        assert_eq!(addr("listening on http://127.0.0.1:3000"), None);
        assert_eq!(addr("clock-sse listening on http://localhost:3000"), None);
        assert_eq!(addr("2026-11-21 INFO shutting down"), None);
    }
}
