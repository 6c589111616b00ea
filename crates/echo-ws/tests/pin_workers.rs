//! `echo-ws --pin-workers`, the release binary's way: each tokio worker thread of the running
//! process is allowed one core, a different one for each, while the server answers over a real
//! socket; without the flag every thread may run on every core. Linux only (`/proc`).
//!
//! `cargo test -p echo-ws --test pin_workers`

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The cores in a `Cpus_allowed_list` line's value, such as `0-1,3`.
fn cores(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.trim().split(',').filter(|part| !part.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
        cores.extend(first..=last);
    }
    cores
}

/// The cores a task (`/proc/<pid>/task/<tid>` or `/proc/self`) may run on.
fn allowed(status_dir: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(format!("{status_dir}/status")).expect("status");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    cores(line)
}

/// A running echo-ws on a free port, killed when dropped.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-ws"))
            .args(["--port", "0"])
            .args(extra)
            // One worker per core, whatever the tests were started with.
            .env_remove("TOKIO_WORKER_THREADS")
            .env_remove("PIN_WORKERS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start echo-ws");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the listening line");
        let address = line
            .trim()
            .rsplit_once("http://")
            .map(|(_, address)| address.to_owned())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, address }
    }

    /// `GET /` over a fresh connection: the status line.
    fn get(&self) -> String {
        let mut socket = TcpStream::connect(&self.address).expect("connect");
        write!(
            socket,
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .expect("request");
        let mut response = String::new();
        socket.read_to_string(&mut response).expect("response");
        response.lines().next().unwrap_or_default().to_owned()
    }

    /// Each thread's name and allowed cores.
    fn threads(&self) -> Vec<(String, Vec<usize>)> {
        let dir = format!("/proc/{}/task", self.child.id());
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(dir).expect("the server's threads") {
            let path = entry.expect("a thread").path();
            let path = path.to_str().expect("a UTF-8 path");
            let name = std::fs::read_to_string(format!("{path}/comm")).unwrap_or_default();
            threads.push((name.trim().to_owned(), allowed(path)));
        }
        threads
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pinned_workers_each_have_a_core_of_their_own() {
    let all = allowed("/proc/self");
    let server = Server::start(&["--pin-workers"]);
    assert_eq!(server.get(), "HTTP/1.1 200 OK");
    let threads = server.threads();
    let workers: Vec<usize> = threads
        .iter()
        // tokio's threads are named `tokio-runtime-worker`, cut to 15 bytes by the kernel.
        .filter(|(name, _)| name.starts_with("tokio-rt"))
        .filter(|(_, cores)| cores.len() == 1)
        .map(|(_, cores)| cores[0])
        .collect();
    // One worker per core: as many pinned threads as cores, each on its own.
    let mut distinct = workers.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, all, "{threads:?}");
    assert_eq!(workers.len(), all.len(), "{threads:?}");
}

#[test]
fn unpinned_threads_may_run_anywhere() {
    let all = allowed("/proc/self");
    let server = Server::start(&[]);
    assert_eq!(server.get(), "HTTP/1.1 200 OK");
    for (name, cores) in server.threads() {
        assert_eq!(cores, all, "{name}");
    }
}
