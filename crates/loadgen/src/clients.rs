//! Opening many client connections cheaply: from several source addresses, a batch at a time,
//! under a raised open-files limit, with a progress bar.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::{TcpSocket, TcpStream};

use crate::cli::Common;

/// Clients per source address by default. One source address reaches one destination from
/// ~28,000 ephemeral ports (32768-60999), but loadgen closes first, so each run leaves its ports
/// in TIME_WAIT for a minute; binding a port then means a search through the ports in use. Back
/// to back, a second run of 10,000 clients from one address took 16 s and 14 s of CPU to
/// connect; from ten addresses, under 1.5 s.
const CLIENTS_PER_SOURCE: usize = 1_000;

/// Raises this process's open-files limit to its hard limit, and says so if `needed` files
/// (one per connection, plus a few) are still more than that.
pub(crate) fn raise_open_files_limit(needed: usize) -> realtime_kit::Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    let available = limit.current.unwrap_or(u64::MAX);
    eprintln!("open-files limit: {available}");
    if needed as u64 + 32 > available {
        return Err(format!(
            "{needed} connections need more than this process's open-files limit of {available}; \
             use fewer clients (the hard limit is set by the system: ulimit -Hn)"
        )
        .into());
    }
    Ok(())
}

/// Resolves the target of a `http://` or `ws://` URL.
pub(crate) async fn target(url: &str) -> realtime_kit::Result<SocketAddr> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await?
        .next()
        .ok_or("the host has no address")?;
    Ok(addr)
}

/// Connects the `index`-th client, from 127.0.0.<1 + index % sources> when the target is IPv4,
/// with Nagle's algorithm off: a client's small write leaves at once instead of waiting for the
/// server to acknowledge the one before it (see `open_sender` in scenarios.rs).
pub(crate) async fn connect(
    target: SocketAddr,
    index: usize,
    sources: usize,
) -> std::io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => {
            let socket = TcpSocket::new_v4()?;
            let last = 1 + (index % sources) as u8;
            let source = Ipv4Addr::new(127, 0, 0, last);
            socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
            socket
        }
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client's task: it reads from the moment its connection opens (a client that waited for
/// the others before reading would look like a slow client to the server). Dropping it aborts
/// the task, which closes the connection.
pub(crate) struct ClientTask(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for ClientTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`open_all`] opened.
pub(crate) struct Opened<T> {
    pub(crate) clients: Vec<T>,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
}

/// Opens `count` clients, `common.connect_batch` at a time: each gets a TCP connection and
/// `setup` turns it into a client (an HTTP request, a WebSocket handshake).
pub(crate) async fn open_all<T, F, Fut>(
    common: &Common,
    count: usize,
    setup: F,
) -> realtime_kit::Result<Opened<T>>
where
    F: Fn(usize, TcpStream) -> Fut,
    Fut: Future<Output = realtime_kit::Result<T>>,
{
    raise_open_files_limit(count)?;
    let target = target(&common.url).await?;
    let sources = common.sources.map_or(
        count.div_ceil(CLIENTS_PER_SOURCE).clamp(1, 254),
        |sources| usize::from(sources.max(1)),
    );
    let progress = progress_bar(count as u64, "connecting");
    let started = Instant::now();
    let setup = &setup;
    let mut attempts = futures_util::stream::iter(0..count)
        .map(|index| async move {
            let stream = connect(target, index, sources).await?;
            setup(index, stream).await
        })
        .buffer_unordered(common.connect_batch.max(1));
    let mut opened = Opened {
        clients: Vec::with_capacity(count),
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(result) = attempts.next().await {
        match result {
            Ok(client) => opened.clients.push(client),
            Err(error) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| error.to_string());
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    opened.elapsed = started.elapsed();
    Ok(opened)
}

/// A progress bar on standard error (hidden when that is not a terminal).
pub(crate) fn progress_bar(length: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}
