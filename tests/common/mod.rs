//! What the end-to-end tests share (each test file says `mod common;`): a demo server running in
//! the test's own runtime on a free port of 127.0.0.1, and a bounded wait. Cargo compiles files
//! in `tests/` subfolders only as modules, never as tests of their own.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part of this module

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod services;

/// Long enough for a loaded CI machine, short enough that a hang fails fast.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// A listener on a free port of 127.0.0.1 whose accepted sockets get a send buffer of
/// `send_buffer` bytes (the kernel doubles it). Linux otherwise grows a socket's send buffer up to
/// megabytes, so a server would not feel a client that stops reading until much later; tests of
/// slow clients use this to make that moment come soon.
pub fn listener_with_send_buffer(send_buffer: u32) -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(send_buffer).expect("SO_SNDBUF");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    socket.listen(1024).expect("listen")
}

/// The future a demo's `run(listener, config, shutdown_signal)` is given: it completes when the
/// test stops the server.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A demo server running inside the test.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Completes the server's shutdown signal; taken when used.
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts `run` on a free port: `TestServer::start(|listener, signal| demo::run(listener, config, signal))`.
    pub async fn start<R, F>(run: R) -> Self
    where
        R: FnOnce(TcpListener, StopSignal) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, run)
    }

    /// Starts `run` on a listener the test bound (to restart a server on the same address).
    pub fn start_on<R, F>(listener: TcpListener, run: R) -> Self
    where
        R: FnOnce(TcpListener, StopSignal) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let signal: StopSignal = Box::pin(async {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(listener, signal));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Fires the shutdown signal without waiting, so a test can watch what clients see meanwhile.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Ends the server's task at once, without its shutdown: what a crash looks like to
    /// everything the task did itself (connections it had spawned go on until they end).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Fires the shutdown signal (if not yet) and waits until `run` has returned.
    pub async fn stop(mut self) {
        self.request_stop();
        within(self.task)
            .await
            .expect("the server's task did not panic");
    }
}
