//! What every demo's `main` does before it serves: read `--port`/`--bind`, start logging, bind
//! and say where it listens, and turn Ctrl-C or SIGTERM into the shutdown signal.

use std::net::{IpAddr, Ipv4Addr};

use tokio::net::TcpListener;

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
}

/// Binds the listener and prints `<name> listening on http://<address>` on standard output, the
/// one line a person (or a script waiting for the server) looks for.
pub async fn listen(
    name: &str,
    default_port: u16,
    args: &ListenArgs,
) -> crate::Result<TcpListener> {
    let port = args.port.unwrap_or(default_port);
    let listener = TcpListener::bind((args.bind, port))
        .await
        .map_err(|error| format!("{name} cannot listen on {}:{port}: {error}", args.bind))?;
    println!("{name} listening on http://{}", listener.local_addr()?);
    Ok(listener)
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
