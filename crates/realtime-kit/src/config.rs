//! What every demo's `main` does before it serves: read `--port`/`--bind`/`--allow-host`, start
//! logging, build the runtime (`--pin-workers`), bind and say where it listens, and turn Ctrl-C
//! or SIGTERM into the shutdown signal.

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

// ANCHOR: runtime
/// How the demo's tokio runtime runs. Flatten it beside [`ListenArgs`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuntimeArgs {
    /// Keep each of tokio's worker threads on a core of its own (the cores this process may use,
    /// in turn), as nginx's `worker_cpu_affinity auto` does. The fan-outs write from one task per
    /// worker; left to itself, Linux now and then runs both workers on one core for a whole
    /// round while the other core idles. Leave it off where other busy programs share the cores.
    #[arg(long, env = "PIN_WORKERS")]
    pub pin_workers: bool,
}

impl RuntimeArgs {
    /// tokio's multi-thread runtime, one worker per core (`TOKIO_WORKER_THREADS` to change
    /// that), the workers pinned if asked.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if self.pin_workers {
            pin_workers(&mut builder)?;
        }
        builder.build()
    }
}

/// Pins the runtime's workers to the allowed cores in turn. tokio starts its workers first,
/// when the runtime is built, each on a thread of its own for good; threads started later are
/// `spawn_blocking`'s, and stay free to run anywhere.
#[cfg(target_os = "linux")]
fn pin_workers(builder: &mut tokio::runtime::Builder) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;

    let cores = allowed_cores()?;
    let workers = worker_threads()?;
    builder.worker_threads(workers);
    let started = AtomicUsize::new(0);
    builder.on_thread_start(move || {
        let index = started.fetch_add(1, Ordering::Relaxed);
        if index >= workers {
            return;
        }
        let core = cores[index % cores.len()];
        let mut only = CpuSet::new();
        let pinned = only
            .set(core)
            .and_then(|()| sched_setaffinity(Pid::from_raw(0), &only));
        match pinned {
            Ok(()) => tracing::debug!(worker = index, core, "worker pinned"),
            Err(error) => tracing::warn!(worker = index, core, %error, "worker not pinned"),
        }
    });
    Ok(())
}

/// The cores the calling thread may run on.
#[cfg(target_os = "linux")]
fn allowed_cores() -> std::io::Result<Vec<usize>> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;

    let allowed = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&core| allowed.is_set(core).unwrap_or(false))
        .collect())
}

#[cfg(not(target_os = "linux"))]
fn pin_workers(_builder: &mut tokio::runtime::Builder) -> std::io::Result<()> {
    tracing::warn!("--pin-workers works on Linux only; the workers run unpinned");
    Ok(())
}

/// As many workers as tokio would start: `TOKIO_WORKER_THREADS`, or one per core this process
/// may use.
#[cfg(target_os = "linux")]
fn worker_threads() -> std::io::Result<usize> {
    match std::env::var("TOKIO_WORKER_THREADS") {
        Ok(value) => value
            .parse::<usize>()
            .ok()
            .filter(|&count| count > 0)
            .ok_or_else(|| std::io::Error::other(format!("TOKIO_WORKER_THREADS={value}"))),
        Err(_) => std::thread::available_parallelism().map(usize::from),
    }
}
// ANCHOR_END: runtime

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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::HashMap;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    use super::{RuntimeArgs, allowed_cores};

    /// The cores the calling thread may run on.
    fn cores_of_this_thread() -> Vec<usize> {
        allowed_cores().expect("the thread's affinity")
    }

    /// Runs short blocking tasks until every worker has run one: each worker's cores.
    fn cores_of_each_worker(runtime: &tokio::runtime::Runtime) -> HashMap<ThreadId, Vec<usize>> {
        let workers = runtime.metrics().num_workers();
        let mut seen = HashMap::new();
        let until = Instant::now() + Duration::from_secs(5);
        while seen.len() < workers && Instant::now() < until {
            let tasks: Vec<_> = (0..workers * 4)
                .map(|_| {
                    runtime.spawn(async {
                        // Held a little, so that the other workers take the next tasks.
                        std::thread::sleep(Duration::from_millis(5));
                        (std::thread::current().id(), cores_of_this_thread())
                    })
                })
                .collect();
            for task in tasks {
                let (thread, cores) = runtime.block_on(task).expect("the task ran");
                seen.insert(thread, cores);
            }
        }
        assert_eq!(seen.len(), workers, "every worker ran a task");
        seen
    }

    /// `--pin-workers`: each worker runs on one core, a different one for each while there are
    /// cores enough, and a `spawn_blocking` thread is left free to run on any.
    #[test]
    fn pinned_workers_have_a_core_each_and_blocking_threads_none() {
        let allowed = cores_of_this_thread();
        let runtime = RuntimeArgs { pin_workers: true }
            .runtime()
            .expect("a runtime");
        let workers = cores_of_each_worker(&runtime);
        let mut used: Vec<usize> = Vec::new();
        for cores in workers.values() {
            assert_eq!(cores.len(), 1, "a pinned worker on {cores:?}");
            assert!(allowed.contains(&cores[0]), "{cores:?} outside {allowed:?}");
            used.push(cores[0]);
        }
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), workers.len().min(allowed.len()), "{workers:?}");
        let blocking = runtime
            .block_on(runtime.spawn_blocking(cores_of_this_thread))
            .expect("the blocking task ran");
        assert_eq!(blocking, allowed, "a spawn_blocking thread stays free");
    }

    /// Without it, tokio's workers may run on any allowed core.
    #[test]
    fn unpinned_workers_run_anywhere() {
        let allowed = cores_of_this_thread();
        let runtime = RuntimeArgs::default().runtime().expect("a runtime");
        for cores in cores_of_each_worker(&runtime).values() {
            assert_eq!(cores, &allowed);
        }
    }
}
