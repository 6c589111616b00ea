//! A small HTTP/1.1 client on hyper, for the tests, the examples and the load generator: plain
//! requests with [`fetch`], event streams with [`EventStream`]. `http://` URLs only: the demos
//! run on this machine.
//!
//! Each call opens its own connection, as a browser tab's `EventSource` does, and dropping an
//! [`EventStream`] closes it, which is how tests play a client that goes away. A [`Connection`]
//! keeps one open for requests one after another, as a browser's `fetch` does.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::parser::{MessageEvent, SseParser};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Fetched {
    /// The body parsed as JSON.
    pub fn json(&self) -> crate::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole response.
pub async fn fetch(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> crate::Result<Fetched> {
    read_whole(send(method, url, headers, body.into()).await?).await
}

async fn read_whole(response: Response<Incoming>) -> crate::Result<Fetched> {
    let (parts, body) = response.into_parts();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

// ANCHOR: connection
/// One connection kept open for requests one after another, as a browser's `fetch` keeps one:
/// the load generator posts its rounds on it, so that a round's time is the server's work and
/// not a TCP handshake and a new connection's setup in the server.
#[derive(Debug)]
pub struct Connection {
    /// Where to open it again.
    url: String,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Opens a connection to the host and port of an `http://` URL.
    pub async fn open(url: &str) -> crate::Result<Self> {
        Ok(Self {
            url: url.to_owned(),
            sender: handshake(connect_to(url).await?).await?,
        })
    }

    /// Sends one request to `url` (on the host and port this connection was opened to) and
    /// reads the whole response.
    ///
    /// A server may close a connection that waits between requests (hyper closes it after its
    /// header-read timeout). Then a new one is opened, once: before the request if the close
    /// was seen, or after it if the request was refused unwritten, and so never reached the
    /// server. A request that was written is never sent again (a POST is not idempotent).
    pub async fn fetch(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> crate::Result<Fetched> {
        let mut request = build_request(method, url, headers, body.into())?;
        let mut reopened = false;
        loop {
            if self.sender.ready().await.is_err() && !reopened {
                self.reopen().await?;
                reopened = true;
            }
            match self.sender.try_send_request(request).await {
                Ok(response) => return read_whole(response).await,
                Err(mut refused) => match refused.take_message() {
                    Some(unsent) if !reopened => {
                        request = unsent;
                        self.reopen().await?;
                        reopened = true;
                    }
                    _ => return Err(refused.into_error().into()),
                },
            }
        }
    }

    async fn reopen(&mut self) -> crate::Result<()> {
        self.sender = handshake(connect_to(&self.url).await?).await?;
        Ok(())
    }
}
// ANCHOR_END: connection

/// `GET url`, read to the end.
pub async fn get(url: &str) -> crate::Result<Fetched> {
    fetch(Method::GET, url, &[], Bytes::new()).await
}

/// An open event stream, read event by event with the kit's [`SseParser`].
#[derive(Debug)]
pub struct EventStream {
    status: StatusCode,
    headers: HeaderMap,
    body: Incoming,
    parser: SseParser,
    ready: VecDeque<MessageEvent>,
}

impl EventStream {
    /// Sends `GET url` with `Accept: text/event-stream` and any extra headers (such as
    /// `Last-Event-ID`), and returns as soon as the response headers have arrived, whatever the
    /// status: check [`status`](Self::status).
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> crate::Result<Self> {
        Self::over(connect_to(url).await?, url, headers).await
    }

    /// Like [`connect`](Self::connect), over a TCP connection the caller opened already (the
    /// load generator opens them from several source addresses).
    pub async fn over(
        stream: TcpStream,
        url: &str,
        headers: &[(&str, &str)],
    ) -> crate::Result<Self> {
        let mut all = vec![(header::ACCEPT.as_str(), "text/event-stream")];
        all.extend_from_slice(headers);
        let (parts, body) = send_on(stream, Method::GET, url, &all, Bytes::new())
            .await?
            .into_parts();
        Ok(Self {
            status: parts.status,
            headers: parts.headers,
            body,
            parser: SseParser::new(),
            ready: VecDeque::new(),
        })
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The id to send as `Last-Event-ID` on a reconnect.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The reconnection delay the server sent with `retry:`, if any.
    pub fn retry(&self) -> Option<std::time::Duration> {
        self.parser.retry()
    }

    /// The next event, or `None` when the server ended the stream.
    pub async fn next_event(&mut self) -> crate::Result<Option<MessageEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            if let Ok(data) = frame?.into_data() {
                self.ready.extend(self.parser.feed(&data));
            }
        }
    }
}

/// Opens a TCP connection to the host and port of an `http://` URL.
pub async fn connect_to(url: &str) -> crate::Result<TcpStream> {
    let uri: Uri = url.parse()?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// URLs are supported").into());
    }
    let Some(host) = uri.host() else {
        return Err(format!("{url}: the URL has no host").into());
    };
    let port = uri.port_u16().unwrap_or(80);
    Ok(TcpStream::connect((host.trim_matches(['[', ']']), port)).await?)
}

async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> crate::Result<Response<Incoming>> {
    send_on(connect_to(url).await?, method, url, headers, body).await
}

async fn send_on(
    stream: TcpStream,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> crate::Result<Response<Incoming>> {
    let request = build_request(method, url, headers, body)?;
    Ok(handshake(stream).await?.send_request(request).await?)
}

/// An HTTP/1.1 client connection over `stream`, driven by a task of its own.
async fn handshake(stream: TcpStream) -> crate::Result<SendRequest<Full<Bytes>>> {
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection does its reading and writing in this task; it ends when the response
    // (and, for a stream, its body) is dropped, and the sender with it.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "client connection ended with an error");
        }
    });
    Ok(sender)
}

fn build_request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> crate::Result<Request<Full<Bytes>>> {
    let uri: Uri = url.parse()?;
    let Some(authority) = uri.authority() else {
        return Err(format!("{url}: the URL has no host").into());
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header(header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(request.body(Full::new(body))?)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers every request head it reads with `200 ok`, counting the
    /// connections it accepts; with `close_after_one`, it closes each connection after its first
    /// answer, with no `Connection: close`, as a server's idle timeout does.
    async fn counting_server(close_after_one: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.expect("accept");
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    let mut buffer = [0; 1024];
                    loop {
                        let Ok(n @ 1..) = socket.read(&mut buffer).await else {
                            return;
                        };
                        read.extend_from_slice(&buffer[..n]);
                        while let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                            read.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            socket.write_all(answer).await.expect("answer");
                            if close_after_one {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_connection() {
        let (url, accepted) = counting_server(false).await;
        let mut connection = Connection::open(&url).await.expect("open");
        for _ in 0..3 {
            let fetched = connection
                .fetch(Method::GET, &url, &[], Bytes::new())
                .await
                .expect("fetch");
            assert_eq!(
                (fetched.status, fetched.text()),
                (StatusCode::OK, "ok".into())
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_opened_again() {
        let (url, accepted) = counting_server(true).await;
        let mut connection = Connection::open(&url).await.expect("open");
        for _ in 0..2 {
            let fetched = connection
                .fetch(Method::GET, &url, &[], Bytes::new())
                .await
                .expect("fetch");
            assert_eq!(fetched.status, StatusCode::OK);
            // Long enough for the client's connection task to see the close.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
