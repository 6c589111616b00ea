//! Reading requests safely: a JSON body with a Content-Type check and a size limit enforced
//! while reading, and CORS for a configured list of origins.
//!
//! Both return ready answers: a refused body is a [`Rejection`] that becomes a
//! `{"error": ...}` response with the right status, and [`Cors`] writes the headers (or the
//! preflight response) itself, so a demo's handler stays a short `match`.
//!
//! CORS is the Fetch standard's "CORS protocol"
//! (<https://fetch.spec.whatwg.org/#http-cors-protocol>): a browser lets a page read a
//! response from another origin only if the response names that origin in
//! `Access-Control-Allow-Origin`, and before a request a plain HTML form could not send (a POST
//! of `application/json`, for one) it asks first with an `OPTIONS` "preflight".

use std::fmt;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::respond::{self, Rejection};
use crate::server::{BodyError, BodyTimeout, ResponseBody};

// ANCHOR: read_json
/// Reads the request body as a JSON object into `T`, refusing it with the status a client can
/// act on:
///
/// | problem | status |
/// | --- | --- |
/// | `Content-Type` is not `application/json` | `415 Unsupported Media Type` |
/// | the body is longer than `limit` bytes | `413 Content Too Large` |
/// | the body did not arrive in time ([`crate::ConnectionLimits::body_read_timeout`]) | `408 Request Timeout` |
/// | the body is not JSON, not an object, or not the shape of `T` | `400 Bad Request` |
///
/// The limit holds while reading: at most `limit + 1` bytes are ever buffered, however large
/// the body claims or turns out to be. Checking the length after `collect()` would already have
/// held the whole body in memory.
pub async fn read_json<T, B>(request: Request<B>, limit: usize) -> Result<T, Rejection>
where
    T: DeserializeOwned,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    require_json_content_type(request.headers())?;
    let body = read_limited(request, limit).await?;
    parse_json(&body)
}

/// Refuses any `Content-Type` but `application/json` (parameters such as `charset` are
/// ignored: JSON is always UTF-8, RFC 8259 section 8.1).
///
/// This is also a cross-site defence: an HTML form on another site can only send
/// `application/x-www-form-urlencoded`, `multipart/form-data` or `text/plain`, so a JSON-only
/// endpoint can only be reached cross-origin through a CORS preflight that the server answers.
pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with the header `Content-Type: application/json` (the request had no Content-Type)",
        ));
    };
    let text = value.to_str().unwrap_or("");
    let media_type = text.split(';').next().unwrap_or("").trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "send the body as JSON with the header `Content-Type: application/json`, not {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ),
    ))
}

/// Reads the whole body, but never more than `limit` bytes: a longer body is refused with
/// `413` as soon as its first byte past the limit arrives (or at once, if `Content-Length`
/// already says it is too long). A body that the kit's server stopped waiting for
/// ([`BodyTimeout`]) is refused with `408`.
pub async fn read_limited<B>(request: Request<B>, limit: usize) -> Result<Bytes, Rejection>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) if is_timeout(&*error) => Err(Rejection::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("{error}; send the whole body at once, right after the headers"),
        )),
        Err(error) => {
            tracing::debug!(%error, "request body could not be read");
            Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "the request body could not be read to the end",
            ))
        }
    }
}

/// Whether a body's read error is the server's deadline ([`BodyTimeout`]).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        error.downcast_ref::<BodyError>(),
        Some(BodyError::TimedOut(_))
    ) || error.is::<BodyTimeout>()
}

/// Parses `body` as a JSON object into `T`; every failure is a `400` that says where and what.
///
/// Only an object: serde's derived `Deserialize` also accepts an array for a struct, filling
/// the fields in order, so `["ann","hi"]` would pass as `{"user":"ann","text":"hi"}`. A
/// request body here is always an object with named fields, and anything else is refused
/// before serde sees it.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    // The first byte of a JSON value says what it is; anything else is left to serde, whose
    // message says where the JSON breaks.
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    let found = match first {
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        _ => None,
    };
    if let Some(found) = found {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("the body must be a JSON object, {{\"field\": value, ...}}; it was {found}"),
        ));
    }
    serde_json::from_slice(body).map_err(|error| {
        let message = match error.classify() {
            serde_json::error::Category::Eof if body.iter().all(u8::is_ascii_whitespace) => {
                "the body is empty; send a JSON object".to_owned()
            }
            // Right JSON, wrong fields or types: "missing field `text` at line 1 column 15".
            serde_json::error::Category::Data => {
                format!("the JSON does not have the expected fields: {error}")
            }
            _ => format!("the body is not valid JSON: {error}"),
        };
        Rejection::new(StatusCode::BAD_REQUEST, message)
    })
}
// ANCHOR_END: read_json

// ANCHOR: cors
/// Which other origins may use the server from a browser. The default allows none: no CORS
/// header is ever sent, and browsers keep pages of other origins from reading any response
/// (same-origin only).
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// Origins exactly as browsers send them in the `Origin` header: `scheme://host[:port]`,
    /// lower case, no path.
    allowed: Vec<HeaderValue>,
}

/// How long a browser may cache a preflight answer, in seconds (browsers cap it: Chromium at
/// two hours, Firefox at one day).
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// The request headers a cross-origin page may send: `Content-Type` for a JSON POST, and
/// `Last-Event-ID`, which a reconnecting `EventSource` adds by itself.
const ALLOWED_REQUEST_HEADERS: &str = "content-type, last-event-id";

impl Cors {
    /// Same-origin only: no CORS headers.
    pub fn same_origin_only() -> Self {
        Self::default()
    }

    /// Allows exactly these origins, each written as `http://host:port` or `https://host`.
    /// A path, a trailing `/`, a query or `*` is refused, with a message saying what to write.
    pub fn allow<S: AsRef<str>>(
        origins: impl IntoIterator<Item = S>,
    ) -> Result<Self, InvalidOrigin> {
        Ok(Self {
            allowed: parse_origins(origins)?,
        })
    }

    /// Whether any origin is allowed at all.
    pub fn is_enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    /// The request's `Origin`, if it is one of the allowed origins.
    fn allowed_origin<'a>(&self, origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
        origin.filter(|origin| self.allowed.contains(origin))
    }

    /// Adds `Access-Control-Allow-Origin` to `response` when the request came from an allowed
    /// origin (`origin` is the request's `Origin` header). Call it on every response of a
    /// cross-origin route, errors included, so the page can read the error message too.
    pub fn add_headers<B>(&self, origin: Option<&HeaderValue>, response: &mut Response<B>) {
        if !self.is_enabled() {
            return;
        }
        let headers = response.headers_mut();
        // The answer depends on the Origin header, so a shared cache must not hand one origin's
        // answer to another.
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        if let Some(origin) = self.allowed_origin(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
    }

    /// Answers `OPTIONS` on a route that accepts `methods`.
    ///
    /// A preflight (an `OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
    /// allowed origin gets `204` with the `Access-Control-Allow-*` headers; from any other
    /// origin it gets `403` with no CORS headers, so the browser refuses the real request. A
    /// plain `OPTIONS` gets `204` with `Allow`, as HTTP describes.
    pub fn preflight<B>(&self, request: &Request<B>, methods: &[Method]) -> Response<ResponseBody> {
        let allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let headers = request.headers();
        let origin = headers.get(header::ORIGIN);
        let is_preflight =
            origin.is_some() && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut response = if !is_preflight {
            respond::full(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
        } else if let Some(origin) = self.allowed_origin(origin) {
            let mut response = respond::full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if let Ok(value) = HeaderValue::from_str(&allow) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
            }
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_REQUEST_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
            );
            response
        } else {
            let origin = origin.map_or_else(String::new, |origin| {
                String::from_utf8_lossy(origin.as_bytes()).into_owned()
            });
            respond::error(
                StatusCode::FORBIDDEN,
                format!("cross-origin requests from {origin:?} are not allowed by this server"),
            )
        };
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        if self.is_enabled() {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("origin"));
        }
        response
    }
}

/// An origin that browsers would never send, so allowing it would allow nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin(String);

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an origin: write it as a browser sends it, scheme://host[:port] with no path, e.g. http://localhost:8080",
            self.0
        )
    }
}

impl std::error::Error for InvalidOrigin {}

/// Parses every origin of a list, as [`Cors::allow`] and [`crate::ws::OriginPolicy::allow`]
/// take them; the first that is not an origin is the error.
pub(crate) fn parse_origins<S: AsRef<str>>(
    origins: impl IntoIterator<Item = S>,
) -> Result<Vec<HeaderValue>, InvalidOrigin> {
    origins
        .into_iter()
        .map(|origin| parse_origin(origin.as_ref()))
        .collect()
}

/// Checks that `text` is a serialised origin (`http://host[:port]` or `https://...`) and
/// returns it lower-cased, the way browsers send it.
fn parse_origin(text: &str) -> Result<HeaderValue, InvalidOrigin> {
    let invalid = || InvalidOrigin(text.to_owned());
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(invalid)?;
    let host_and_port_only = !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', '*'])
        && !rest.contains(char::is_whitespace);
    if !host_and_port_only {
        return Err(invalid());
    }
    HeaderValue::from_str(&lower).map_err(|_| invalid())
}
// ANCHOR_END: cors

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Greeting {
        name: String,
    }

    fn post(content_type: Option<&'static str>, body: &'static str) -> Request<Full<Bytes>> {
        let mut request = Request::post("/")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a valid test request");
        if let Some(value) = content_type {
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        }
        request
    }

    async fn read(request: Request<Full<Bytes>>) -> Result<Greeting, Rejection> {
        read_json(request, 32).await
    }

    /// A JSON body with the JSON media type (any case, any parameters) is parsed.
    #[tokio::test]
    async fn json_body_is_parsed() {
        for content_type in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
        ] {
            let greeting = read(post(Some(content_type), r#"{"name":"ann"}"#)).await;
            assert_eq!(greeting, Ok(Greeting { name: "ann".into() }));
        }
    }

    /// A missing or different Content-Type is a 415 that names the header to send.
    #[tokio::test]
    async fn wrong_content_type_is_415() {
        for content_type in [None, Some("text/plain"), Some("application/jsonx")] {
            let rejection = read(post(content_type, r#"{"name":"ann"}"#))
                .await
                .unwrap_err();
            assert_eq!(rejection.status(), 415, "{content_type:?}");
            assert!(
                rejection
                    .message()
                    .contains("Content-Type: application/json")
            );
        }
    }

    /// A body over the limit is a 413, whether or not Content-Length announced it.
    #[tokio::test]
    async fn body_over_the_limit_is_413() {
        let long = r#"{"name":"a name that is far too long for the limit"}"#;
        let rejection = read(post(Some("application/json"), long))
            .await
            .unwrap_err();
        assert_eq!(rejection.status(), 413);
        let mut announced = post(Some("application/json"), long);
        announced
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000000"));
        assert_eq!(read(announced).await.unwrap_err().status(), 413);
    }

    /// Broken JSON, an empty body and the wrong fields are 400s that say which it was.
    #[tokio::test]
    async fn bad_json_is_400_with_a_reason() {
        for (body, expected) in [
            ("", "the body is empty"),
            ("{\"name\":", "not valid JSON"),
            ("{}", "missing field `name`"),
            (r#"["ann"]"#, "must be a JSON object"),
            (r#"["ann"]"#, "it was an array"),
            (" 7", "it was a number"),
            ("null", "it was null"),
            ("\"ann\"", "it was a string"),
            ("<html>", "not valid JSON"),
            (r#"{"name":1}"#, "invalid type"),
            (r#"{"name":"a","x":1}"#, "unknown field `x`"),
        ] {
            let rejection = read(post(Some("application/json"), body))
                .await
                .unwrap_err();
            assert_eq!(rejection.status(), 400, "{body:?}");
            assert!(
                rejection.message().contains(expected),
                "{body:?}: {}",
                rejection.message()
            );
        }
    }

    /// Only origins as browsers send them are accepted, lower-cased.
    #[test]
    fn origins_are_validated() {
        assert!(Cors::allow(["http://localhost:8080", "HTTPS://Example.com"]).is_ok());
        for bad in [
            "localhost:8080",
            "http://localhost:8080/",
            "http://x/path",
            "*",
            "http://",
            "ftp://x",
        ] {
            assert!(Cors::allow([bad]).is_err(), "{bad:?}");
        }
    }

    fn preflight_from(origin: &str) -> Request<()> {
        Request::options("/messages")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(())
            .expect("a valid test request")
    }

    /// A preflight from an allowed origin is answered with the Allow-* headers; from another
    /// origin, or with CORS off, it is refused without any.
    #[test]
    fn preflight_answers_only_allowed_origins() {
        let cors = Cors::allow(["http://localhost:8080"]).unwrap();
        let methods = [Method::GET, Method::POST];
        let allowed = cors.preflight(&preflight_from("http://localhost:8080"), &methods);
        assert_eq!(allowed.status(), 204);
        let headers = allowed.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "http://localhost:8080"
        );
        assert_eq!(headers["access-control-allow-methods"], "GET, POST");
        assert_eq!(
            headers["access-control-allow-headers"],
            ALLOWED_REQUEST_HEADERS
        );

        for (cors, origin) in [
            (cors.clone(), "http://evil.example"),
            (Cors::same_origin_only(), "http://localhost:8080"),
        ] {
            let refused = cors.preflight(&preflight_from(origin), &methods);
            assert_eq!(refused.status(), 403);
            assert!(
                !refused
                    .headers()
                    .contains_key("access-control-allow-origin")
            );
        }
    }
}
