//! What the why-tests use to talk to a rung besides the kit's `EventStream`: a request whose
//! response is returned as soon as its head arrives (a stream never ends, so it cannot be read
//! to the end first), its body read with a limit, and the comment lines of an event stream,
//! which an SSE parser drops by design.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// How long one request, one event or one answer may take before a test says it never came.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `future` for at most `limit`; past it, fails with `late()`.
pub async fn within<T>(
    limit: Duration,
    late: impl FnOnce() -> String,
    future: impl Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| late())
}

/// `GET path` on a connection of its own, with `headers`; returns once the response head has
/// arrived. Dropping the response closes the connection.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response<Incoming>, String> {
    request(addr, Method::GET, path, headers).await
}

/// `method path` on a connection of its own, with `headers` and no body; returns once the
/// response head has arrived (a stream never ends, so its body is not waited for).
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response<Incoming>, String> {
    let what = format!("{method} {path}");
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Drives the connection; it ends when the response and its body are dropped.
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new())?)
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
    };
    within(
        WAIT,
        || format!("{what} got no answer within {} s", WAIT.as_secs()),
        exchange,
    )
    .await?
    .map_err(|error| format!("{what} failed: {error}"))
}

/// The HTML of the page at `url`, or what was wrong with the answer: every rung's `GET /`.
pub async fn html_page(url: &str) -> Result<String, String> {
    let page = within(
        WAIT,
        || "GET / got no answer".to_owned(),
        realtime_kit::client::get(url),
    )
    .await?
    .map_err(|error| format!("GET / failed: {error}"))?;
    let content_type = page
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok());
    if page.status != 200 || !content_type.is_some_and(|value| value.starts_with("text/html")) {
        return Err(format!(
            "GET / answered {} with Content-Type {content_type:?}, not the HTML page",
            page.status
        ));
    }
    Ok(page.text())
}

/// A connection with a small receive buffer (`receive_buffer` bytes; the kernel makes it a
/// little more) and small segments where the system lets us ask, for a client that will stop
/// reading: its buffers, and the server's behind them, fill after a few kilobytes. On loopback
/// the server's send buffer otherwise grows to megabytes, which take minutes to fill.
pub async fn narrow_connection(
    addr: SocketAddr,
    receive_buffer: u32,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(receive_buffer)?;
    #[cfg(unix)]
    socket2::SockRef::from(&socket).set_tcp_mss(536)?;
    socket.connect(addr).await
}

/// What a quiet event stream carried while [`comments_within`] watched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comments {
    /// As many comment lines as were asked for.
    Seen,
    /// The stream ended first (or sent over a MiB without them).
    Ended,
    /// Time ran out with this many comment lines.
    TooFew(usize),
}

/// Opens the event stream at `path` and reads it for at most `patience`, until it has carried
/// `wanted` comment lines: how the keep-alive why-tests watch a stream that has nothing to say.
pub async fn comments_within(
    addr: SocketAddr,
    path: &str,
    wanted: usize,
    patience: Duration,
) -> Result<Comments, String> {
    let response = get(addr, path, &[("accept", "text/event-stream")]).await?;
    if response.status() != 200 {
        return Err(format!(
            "GET {path} answered {}, not a stream",
            response.status()
        ));
    }
    let mut body = response.into_body();
    let mut text = String::new();
    let read = tokio::time::timeout(patience, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
                if comment_lines(&text) >= wanted {
                    return Comments::Seen;
                }
                if text.len() > 1024 * 1024 {
                    return Comments::Ended;
                }
            }
        }
        Comments::Ended
    })
    .await;
    Ok(read.unwrap_or_else(|_| Comments::TooFew(comment_lines(&text))))
}

/// "no comment" or "one comment only": how a keep-alive failure says what it saw.
pub fn comments_seen(count: usize) -> &'static str {
    if count == 0 {
        "no comment"
    } else {
        "one comment only"
    }
}

/// The whole body as text, if it ends within `limit` and is at most `max` bytes.
pub async fn body_text(
    response: Response<Incoming>,
    max: usize,
    limit: Duration,
) -> Result<String, String> {
    let mut body = response.into_body();
    let mut text = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| format!("the body broke off: {error}"))?;
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data);
                if text.len() > max {
                    return Err(format!("the body is longer than {max} bytes"));
                }
            }
        }
        Ok(())
    };
    within(
        limit,
        || format!("the body did not end within {} s", limit.as_secs()),
        read,
    )
    .await??;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

/// How many comment lines (lines that start with `:`) an event stream's text holds. Lines end
/// with CR LF, LF or CR (WHATWG HTML, "Parsing an event stream"); an unfinished last line is
/// not counted, since more of it may follow.
pub fn comment_lines(text: &str) -> usize {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let finished = match text.rfind(['\n', '\r']) {
        Some(end) => &text[..end],
        None => return 0,
    };
    finished
        .split(['\n', '\r'])
        .filter(|line| line.starts_with(':'))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_lines_are_counted_once_finished() {
        assert_eq!(comment_lines(""), 0);
        assert_eq!(comment_lines(": keep-alive"), 0, "not finished yet");
        assert_eq!(comment_lines(": keep-alive\n"), 1);
        assert_eq!(comment_lines("retry: 3000\n\n: ping\r\n\r\n:\r"), 2);
        assert_eq!(
            comment_lines("event: tick\ndata: {\"time\":\"12:00\"}\n\n: keep-alive\n\n: x"),
            1,
            "a colon inside a field is no comment"
        );
        assert_eq!(comment_lines("\u{feff}: first\n"), 1);
    }
}
