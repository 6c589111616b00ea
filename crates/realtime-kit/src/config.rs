//! What every demo's `main` does before it serves: read `--port`/`--bind`/`--allow-host`, start
//! logging, bind and say where it listens, and turn Ctrl-C or SIGTERM into the shutdown signal.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::host::{AllowedHosts, InvalidHost};
use crate::server::{ConnectionLimits, ServerOptions};

/// Where to listen. Flatten it into a demo's own arguments with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Port to listen on; 0 lets the system pick a free one. [default: the demo's own port]
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// Address to listen on. The default accepts connections from this machine only; use
    /// 0.0.0.0 to accept them from other machines too.
    #[arg(long, env = "BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,

    /// Also answer requests made to this host name (e.g. chat.example.com, or .example.com for
    /// a whole domain); repeat it, or list several, comma-separated, in ALLOW_HOST. IP
    /// addresses and localhost are always answered; any other Host gets 421, which stops
    /// DNS rebinding.
    #[arg(
        long = "allow-host",
        env = "ALLOW_HOST",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allow_hosts: Vec<String>,

    /// How long a client may take to send its request headers, in milliseconds.
    /// [default: 30000]
    #[arg(long, env = "HEADER_TIMEOUT_MS", value_name = "MS")]
    pub header_timeout_ms: Option<u64>,

    /// How long a client may take to send a request body, in milliseconds. [default: 10000]
    #[arg(long, env = "BODY_TIMEOUT_MS", value_name = "MS")]
    pub body_timeout_ms: Option<u64>,

    /// How long a client may accept nothing while the server has bytes for it, in
    /// milliseconds. [default: 30000]
    #[arg(long, env = "STALL_TIMEOUT_MS", value_name = "MS")]
    pub stall_timeout_ms: Option<u64>,
}

/// `--direct-streams`, for the demos that serve event streams. Flatten it beside [`ListenArgs`].
#[derive(Debug, Clone, clap::Args)]
pub struct DirectStreamArgs {
    /// Write event streams on the kit's direct path instead of through hyper: an idle stream
    /// then costs about a third of the memory, which matters for tens of thousands of them.
    /// Without it, hyper serves every request. The answers are the same.
    #[arg(long, env = "DIRECT_STREAMS")]
    pub direct_streams: bool,
}

impl ListenArgs {
    /// The server options these arguments ask for: the host names, and the limits (the
    /// defaults of [`ConnectionLimits`] where none is given).
    pub fn server_options(&self) -> Result<ServerOptions, InvalidHost> {
        let defaults = ConnectionLimits::default();
        Ok(ServerOptions {
            hosts: AllowedHosts::allow(&self.allow_hosts)?,
            limits: ConnectionLimits {
                header_read_timeout: millis_or(
                    self.header_timeout_ms,
                    defaults.header_read_timeout,
                ),
                body_read_timeout: millis_or(self.body_timeout_ms, defaults.body_read_timeout),
                write_stall_timeout: millis_or(self.stall_timeout_ms, defaults.write_stall_timeout),
            },
            ..ServerOptions::default()
        })
    }
}

/// A duration given in milliseconds on the command line (`--stall-timeout-ms` and the like),
/// or `default` when none was given.
pub fn millis_or(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_millis)
}

/// How many connections the kernel holds for the server before it accepts them. Every open page
/// reconnects at once when a server restarts, and `TcpListener::bind` asks for 1,024: of a crowd
/// of 3,000, the kernel drops the SYNs that find the queue full (`nstat`'s
/// `TcpExtListenOverflows`: 7,920 in one run), and each of those clients tries again only after
/// 1 s, then 3 s and 7 s more. The kernel caps the figure at `net.core.somaxconn` (4,096 by
/// default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listener, with a queue of [`LISTEN_BACKLOG`], and prints
/// `<name> listening on http://<address>` on standard output, the one line a person (or a script
/// waiting for the server) looks for.
pub async fn listen(
    name: &str,
    default_port: u16,
    args: &ListenArgs,
) -> crate::Result<TcpListener> {
    let address = SocketAddr::new(args.bind, args.port.unwrap_or(default_port));
    let listener =
        bind(address).map_err(|error| format!("{name} cannot listen on {address}: {error}"))?;
    println!("{name} listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

/// What `TcpListener::bind` does, with a queue of [`LISTEN_BACKLOG`]: the listener [`listen`]
/// binds, for a test or a server of its own that must hold a crowd too.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does on Unix: a restarted server may bind the port at once, while
    // the connections of the one before are still in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`; try `RUST_LOG=debug`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on Ctrl-C, or on SIGTERM (what `kill` and container runtimes send).
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// server's accept loop polls it only after its first connection, and a signal that came before
/// would kill the process instead of shutting it down. So call it before serving.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    #[cfg(not(unix))]
    let handlers = tokio::signal::windows::ctrl_c();
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = handlers;
            tokio::select! {
                () = received(interrupt, "Ctrl-C") => {},
                () = received(terminate, "SIGTERM") => {},
            }
        }
        #[cfg(not(unix))]
        match handlers {
            Ok(mut ctrl_c) => {
                ctrl_c.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutting down");
    }
}

/// Completes when `handler` (if it could be installed) receives its signal; never otherwise.
#[cfg(unix)]
async fn received(handler: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match handler {
        Ok(mut handler) => {
            handler.recv().await;
        }
        Err(error) => {
            tracing::error!(%error, "cannot listen for {name}");
            std::future::pending::<()>().await;
        }
    }
}
