//! What the why-tests use to talk to a rung besides the kit's `EventStream`: a request whose
//! response is returned as soon as its head arrives (a stream never ends, so it cannot be read
//! to the end first), its body read with a limit, and the comment lines of an event stream,
//! which an SSE parser drops by design.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Drives the connection; it ends when the response and its body are dropped.
        tokio::spawn(connection);
        let mut request = Request::get(path).header(header::HOST, addr.to_string());
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
        || format!("GET {path} got no answer within {} s", WAIT.as_secs()),
        exchange,
    )
    .await?
    .map_err(|error| format!("GET {path} failed: {error}"))
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
