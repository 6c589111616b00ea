//! Kernel receive timestamps: when the data of a read reached the socket, whatever loadgen was
//! doing then. Used by every client read by a tokio task (the idle and throughput scenarios, and
//! the fan-outs with `--reader tokio`); see `loadgen --help` to run it. The epoll reader, like
//! the floor's, reads without them.
//!
//! loadgen reads 10,000 sockets on one thread that shares two cores with the server, so the
//! moment it reads a message (`Instant::now()` in the handler) includes its own queueing: up to
//! ~50 ms for the last of 10,000 clients. With `SO_TIMESTAMPNS` set on a socket, the kernel
//! stamps every arriving packet with `CLOCK_REALTIME`, and `recvmsg` hands the stamp back as an
//! `SCM_TIMESTAMPNS` control message. On loopback the packet arrives during the server's own
//! `write`, so the stamp is when the server delivered the message, not when loadgen read it.
//!
//! TCP reports the stamp of the last packet (skb) that `recvmsg` consumed: when one read takes
//! several packets, the stamp is that of the newest, which is when the read's data was complete.
//!
//! rustix 1.x can neither set `SO_TIMESTAMPNS` nor parse `SCM_TIMESTAMPNS`, and the workspace
//! forbids unsafe code, so this uses `nix`'s safe `setsockopt` and `recvmsg`.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use nix::sys::time::TimeSpec;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Asks the kernel to stamp every packet arriving on `tcp`. Turning it on for any socket makes
/// the kernel stamp every incoming packet on the machine (a clock read each, tens of
/// nanoseconds), the server's too.
pub(crate) fn enable(tcp: &TcpStream) -> io::Result<()> {
    setsockopt(tcp, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// Reads what `tcp` has into `buffer` without waiting: the bytes read, and the kernel's arrival
/// time of the newest packet they came in (`None` if the socket has no stamps enabled, or the
/// read returned nothing). `WouldBlock` when there is nothing to read yet.
fn recv_stamped(tcp: &TcpStream, buffer: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
    let mut control = nix::cmsg_space!(TimeSpec);
    let mut slices = [IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        tcp.as_raw_fd(),
        &mut slices,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let stamp = message.cmsgs().map_err(io::Error::from)?.find_map(|cmsg| {
        let ControlMessageOwned::ScmTimestampns(time) = cmsg else {
            return None;
        };
        realtime(time)
    });
    Ok((message.bytes, stamp))
}

/// A `CLOCK_REALTIME` reading as a `SystemTime`; `None` before 1970 (a clock set wrong).
fn realtime(time: TimeSpec) -> Option<SystemTime> {
    let seconds = u64::try_from(time.tv_sec()).ok()?;
    let nanos = u32::try_from(time.tv_nsec()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Polls one stamped read of `tcp` into `buffer`, the way `AsyncRead::poll_read` would: waits
/// (returns `Pending`, with a wake-up registered) until the socket is readable, then reads.
pub(crate) fn poll_recv_stamped(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    buffer: &mut ReadBuf<'_>,
) -> Poll<io::Result<Option<SystemTime>>> {
    loop {
        ready!(tcp.poll_read_ready(cx))?;
        // try_io clears tokio's readiness when the read would block, so the next
        // poll_read_ready waits for the kernel again.
        match tcp.try_io(Interest::READABLE, || {
            recv_stamped(tcp, buffer.initialize_unfilled())
        }) {
            Ok((read, stamp)) => {
                buffer.advance(read);
                return Poll::Ready(Ok(stamp));
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
}

/// A TCP stream whose reads remember the kernel's arrival time of the data they returned, for
/// clients built on `AsyncRead` (tokio-tungstenite): after the client returns a message,
/// [`StampedStream::last_stamp`] is the stamp of the read that completed it.
pub(crate) struct StampedStream {
    tcp: TcpStream,
    /// The stamp of the newest read that returned data (`None` before the first).
    last: Option<SystemTime>,
}

impl StampedStream {
    /// Wraps `tcp`, whose stamps must already be enabled (see [`enable`]).
    pub(crate) fn new(tcp: TcpStream) -> Self {
        Self { tcp, last: None }
    }

    /// The kernel's arrival time of the data of the newest read.
    pub(crate) fn last_stamp(&self) -> Option<SystemTime> {
        self.last
    }
}

impl AsyncRead for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let stamp = ready!(poll_recv_stamped(&this.tcp, cx, buffer))?;
        if stamp.is_some() {
            this.last = stamp;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, bytes)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A read of a stamped socket carries the kernel's arrival time: after the write that sent
    /// the data, and no later than the read. Linux turns packet stamping on lazily (a deferred
    /// static key) when the first socket asks for it, so the first packets may come unstamped:
    /// the test writes until a read carries a stamp.
    #[tokio::test]
    async fn reads_carry_the_arrival_time() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        enable(&client).expect("SO_TIMESTAMPNS");
        let mut client = StampedStream::new(client);
        assert_eq!(client.last_stamp(), None);
        let stamped = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let before_write = SystemTime::now();
                server.write_all(b"hello").await.expect("write");
                let mut buffer = [0; 16];
                let read = client.read(&mut buffer).await.expect("read");
                let after_read = SystemTime::now();
                assert_eq!(&buffer[..read], b"hello");
                if let Some(stamp) = client.last_stamp() {
                    return (before_write, stamp, after_read);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let (before_write, stamp, after_read) = stamped.expect("a read carried a kernel stamp");
        assert!(before_write <= stamp && stamp <= after_read, "{stamp:?}");
    }

    /// A socket without stamps enabled reads as usual and has no stamp.
    #[tokio::test]
    async fn unstamped_socket_reads_without_stamp() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut client = StampedStream::new(client);
        server.write_all(b"hi").await.expect("write");
        let mut buffer = [0; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("read in time")
            .expect("read");
        assert_eq!(&buffer[..read], b"hi");
        assert_eq!(client.last_stamp(), None);
    }
}
