//! Building responses: an HTML page from an askama template, JSON, and errors.
//!
//! Every error a client can cause gets the right status code and a JSON body
//! `{"error": "<a sentence a person understands>"}`, so scripts can read it and people can too.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::server::ResponseBody;

/// A complete response with the given status, content type and body.
pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Browsers must not guess another type (an uploaded text rendered as HTML, for one).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

// ANCHOR: html
/// `200 OK` with the rendered template. askama escapes every `{{ value }}` in an `.html`
/// template, so text from clients cannot become markup.
pub fn html(page: &impl askama::Template) -> Response<ResponseBody> {
    match page.render() {
        Ok(html) => full(StatusCode::OK, "text/html; charset=utf-8", html),
        Err(error) => {
            tracing::error!(%error, "template failed to render");
            self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
        }
    }
}
// ANCHOR_END: html

/// `status` with `value` as JSON. Live data must not be cached, so the response says so.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = full(status, "application/json", body);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(error) => {
            tracing::error!(%error, "response failed to serialise");
            self::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the response failed to serialise",
            )
        }
    }
}

/// An error response: `status` with the body `{"error": message}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": message.to_string() });
    full(status, "application/json", body.to_string())
}

/// `404 Not Found` for a path the server does not have.
pub fn not_found(path: &str) -> Response<ResponseBody> {
    error(StatusCode::NOT_FOUND, format!("there is nothing at {path}"))
}

/// `405 Method Not Allowed` with the `Allow` header the standard requires, listing what the
/// path does accept.
pub fn method_not_allowed(method: &Method, allowed: &[Method]) -> Response<ResponseBody> {
    let allow = allowed
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; use {allow}"),
    );
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

// ANCHOR: rejection
/// A request the server refuses to act on, with the status and the sentence that say why, and
/// where it helps a header that says what to send instead (`Upgrade: websocket`,
/// `Sec-WebSocket-Version: 13`). Every refusal in the kit is one: a body that is not JSON, a
/// `Host` not on the list, a WebSocket handshake from another origin. Turn it into the response
/// with [`Rejection::into_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    message: String,
    hint: Option<(HeaderName, &'static str)>,
}

impl Rejection {
    /// A rejection with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            hint: None,
        }
    }

    /// The same rejection, with a header telling the client what this server wants.
    pub fn with_hint(mut self, name: HeaderName, value: &'static str) -> Self {
        self.hint = Some((name, value));
        self
    }

    /// The status code the response will carry.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The sentence for the person who sent the request.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `{"error": ...}` response, with the hint header if there is one. A `408` also says
    /// `Connection: close`, as RFC 9110 section 15.5.9 asks: the rest of a late body may still
    /// be on its way, so the connection cannot carry another request.
    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = error(self.status, &self.message);
        let headers = response.headers_mut();
        if let Some((name, value)) = self.hint {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Rejection {}
// ANCHOR_END: rejection

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_text(response: Response<ResponseBody>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Errors are JSON objects with one `error` string, escaped properly.
    #[tokio::test]
    async fn error_body_is_json() {
        let response = error(StatusCode::BAD_REQUEST, "a \"quoted\" word");
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let value: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(value, serde_json::json!({ "error": "a \"quoted\" word" }));
    }

    /// 405 names the allowed methods in the `Allow` header and in the message.
    #[tokio::test]
    async fn method_not_allowed_lists_allowed_methods() {
        let response = method_not_allowed(&Method::DELETE, &[Method::GET, Method::POST]);
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
        assert!(
            body_text(response)
                .await
                .contains("DELETE is not allowed here; use GET, POST")
        );
    }
}
