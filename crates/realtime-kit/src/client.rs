//! A small HTTP/1.1 client on hyper, for the tests, the examples and the load generator: plain
//! requests with [`fetch`], event streams with [`EventStream`]. `http://` URLs only: the demos
//! run on this machine.
//!
//! Each call opens its own connection, as a browser tab's `EventSource` does, and dropping an
//! [`EventStream`] closes it, which is how tests play a client that goes away.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
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
    let response = send(method, url, headers, body.into()).await?;
    let (parts, body) = response.into_parts();
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

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
    let uri: Uri = url.parse()?;
    let Some(authority) = uri.authority() else {
        return Err(format!("{url}: the URL has no host").into());
    };
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection does its reading and writing in this task; it ends when the response
    // (and, for a stream, its body) is dropped.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "client connection ended with an error");
        }
    });
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |path| path.as_str()))
        .header(header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(sender.send_request(request.body(Full::new(body))?).await?)
}
