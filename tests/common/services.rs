//! The real servers some tests need beside the demos: a private `redis-server` per test, on a
//! Unix socket in a temporary directory, stopped when the test drops it.
//!
//! On a laptop without the binary, a test skips with one line saying how to install it; under
//! CI (the `CI` variable set) a missing binary fails the test, so a green run means it ran.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use realtime_kit::backplane::redis;
use realtime_kit::backplane::{Backplane, RedisBackplane};
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

/// `examples/deploy/nginx.conf`, the configuration a reader deploys.
pub const NGINX_CONF: &str = include_str!("../../examples/deploy/nginx.conf");

/// A private nginx running `examples/deploy/nginx.conf` with its addresses replaced: its own
/// prefix directory, a certificate made with openssl for 127.0.0.1 and localhost, free ports.
pub struct TestNginx {
    /// Holds the configuration, the certificate, the logs and nginx's temporary files.
    dir: tempfile::TempDir,
    /// The running nginx, killed on drop.
    _child: Child,
    /// Plain HTTP/1.1 to the chat upstream.
    pub chat_http: u16,
    /// HTTPS with HTTP/2 to the chat upstream.
    pub chat_https: u16,
    /// Plain HTTP/1.1 to the echo upstream.
    pub echo_http: u16,
}

/// A port that was free a moment ago (nginx binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl TestNginx {
    /// Starts nginx in front of `chat` (each line `server 127.0.0.1:300N` of the `chat`
    /// upstream becomes one of these, in order; a trailing `" backup"` in an entry is kept) and
    /// `echo`. Returns `None` (the test skips) without nginx or openssl.
    pub async fn start(chat: &[String], echo: &str) -> Option<Self> {
        if !available("nginx", "apt-get install nginx")
            || !available("openssl", "apt-get install openssl")
        {
            return None;
        }
        // A port that was free a moment ago can be taken before nginx binds it (the tests run
        // in parallel, and bind ports of their own): then nginx gives up and exits, and it is
        // started again on other ports.
        for _ in 0..5 {
            match Self::launch(chat, echo).await {
                Ok(nginx) => return Some(nginx),
                Err(log) if log.contains("Address already in use") => {
                    eprintln!("nginx lost a port to another process; trying other ports");
                }
                Err(log) => panic!("nginx did not start: {log}"),
            }
        }
        panic!("nginx lost a port to another process five times in a row");
    }

    /// One try: nginx on ports that are free now. `Err` with nginx's error log if it exited.
    async fn launch(chat: &[String], echo: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-keyout", &path("test.key"), "-out", &path("test.crt")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(made.success(), "openssl made no certificate");

        let (chat_http, chat_https, echo_http, echo_https) =
            (free_port(), free_port(), free_port(), free_port());
        let mut site = NGINX_CONF
            .replace("listen 8443 ", &format!("listen 127.0.0.1:{chat_https} "))
            .replace("listen 8080;", &format!("listen 127.0.0.1:{chat_http};"))
            .replace("listen 8444 ", &format!("listen 127.0.0.1:{echo_https} "))
            .replace("listen 8081;", &format!("listen 127.0.0.1:{echo_http};"))
            .replace("/etc/nginx/ssl/realtime-push.crt", &path("test.crt"))
            .replace("/etc/nginx/ssl/realtime-push.key", &path("test.key"))
            .replace("server 127.0.0.1:3001;", &format!("server {echo};"));
        let instances = ["127.0.0.1:3002", "127.0.0.1:3003", "127.0.0.1:3004"];
        assert!(chat.len() <= instances.len());
        for (n, line) in instances.iter().enumerate() {
            let shipped = format!("    server {line} max_fails=1 fail_timeout=5s;\n");
            assert!(site.contains(&shipped), "the shipped upstream has {line}");
            let replaced = chat
                .get(n)
                .map(|addr| format!("    server {addr} max_fails=1 fail_timeout=5s;\n"))
                .unwrap_or_default();
            site = site.replace(&shipped, &replaced);
        }
        for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir(dir.path().join(temp)).expect("temp dir");
        }
        let pid_file = path("nginx.pid");
        let main = format!(
            "pid {pid_file};\nerror_log {log} info;\nworker_processes 1;\nevents {{ worker_connections 512; }}\n\
             http {{\n log_format protocol '$server_protocol $request_uri';\n access_log {access} protocol;\n client_body_temp_path {cb};\n proxy_temp_path {proxy};\n \
             fastcgi_temp_path {fcgi};\n uwsgi_temp_path {uwsgi};\n scgi_temp_path {scgi};\n{site}\n}}\n",
            log = path("error.log"),
            access = path("access.log"),
            cb = path("client_body"),
            proxy = path("proxy"),
            fcgi = path("fastcgi"),
            uwsgi = path("uwsgi"),
            scgi = path("scgi"),
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write nginx.conf");
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            // One process, no workers: killing it (on drop) leaves nothing behind.
            .args(["-g", "daemon off; master_process off;"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        let deadline = tokio::time::Instant::now() + WAIT;
        let error_log = || std::fs::read_to_string(path("error.log")).unwrap_or_default();
        // nginx writes its pid file once it has bound every port: before that, a port that
        // answers may be another process's (nginx retries a taken port for a few seconds).
        while !std::path::Path::new(&pid_file).exists() {
            if child.try_wait().expect("nginx's status").is_some() {
                return Err(error_log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not start: {}",
                error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for port in [chat_http, chat_https, echo_http] {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nginx did not start: {}",
                    error_log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Self {
            dir,
            _child: child,
            chat_http,
            chat_https,
            echo_http,
        })
    }

    /// One line per request so far: the protocol it came over and its path.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// nginx's error log so far, for a failing assertion's message.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// A chat instance on a runtime of its own. [`crash`](Self::crash) drops that runtime: every
/// task and socket of the instance ends at once, as when its process is killed.
pub struct CrashableChat {
    /// `None` once crashed.
    runtime: Option<tokio::runtime::Runtime>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl CrashableChat {
    /// Starts an instance on the Redis at `redis_url`.
    pub fn start(redis_url: String) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let backplane = RedisBackplane::open(&redis_url).expect("a valid URL");
            let config = chat_sse::Config {
                backplane: Backplane::Redis(backplane),
                // Browsers reconnect after this: short, so failover tests are quick.
                retry: Duration::from_millis(500),
                ..chat_sse::Config::default()
            };
            chat_sse::run(listener, config, std::future::pending()).await;
        });
        Self {
            runtime: Some(runtime),
            addr,
        }
    }

    /// Ends the instance at once, without a shutdown.
    pub fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CrashableChat {
    fn drop(&mut self) {
        self.crash();
    }
}
