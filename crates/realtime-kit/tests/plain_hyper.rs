//! A handler written for the kit, called from a plain hyper `service_fn` instead of
//! `realtime_kit::serve`: what a reader does who copies a demo's handler into a hyper project of
//! their own. The one change is `request.map(realtime_kit::request_body)`.
//!
//! Run with `cargo test -p realtime-kit --test plain_hyper`.

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use realtime_kit::request::read_json;
use realtime_kit::{RequestBody, ResponseBody, client, respond};
use serde::Deserialize;
use tokio::net::TcpListener;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Greeting {
    name: String,
}

/// A handler as the demos write them: the kit's request and response bodies.
async fn greet(request: Request<RequestBody>) -> Response<ResponseBody> {
    match read_json::<Greeting, _>(request, 1024).await {
        Ok(greeting) => respond::json(
            StatusCode::CREATED,
            &serde_json::json!({ "hello": greeting.name }),
        ),
        Err(rejection) => rejection.into_response(),
    }
}

/// The kit's handler answers, and refuses, from inside a plain hyper server.
#[tokio::test]
async fn a_kit_handler_runs_in_a_plain_hyper_service() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let service = service_fn(|request: Request<Incoming>| async move {
                Ok::<_, Infallible>(greet(request.map(realtime_kit::request_body)).await)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(socket), service));
        }
    });
    let url = format!("http://{addr}/");
    let json = [("content-type", "application/json")];
    let created = client::fetch(
        http::Method::POST,
        &url,
        &json,
        br#"{"name":"ann"}"#.to_vec(),
    )
    .await
    .expect("POST");
    assert_eq!(created.status, 201);
    assert_eq!(created.json().expect("JSON")["hello"], "ann");
    let refused = client::fetch(http::Method::POST, &url, &[], b"{}".to_vec())
        .await
        .expect("POST");
    assert_eq!(refused.status, 415);
    assert!(refused.json().expect("a JSON error")["error"].is_string());
}
