//! Property tests for chat-sse's `POST /messages` validation, over a real socket: generated
//! bodies are posted to the real server on `127.0.0.1:0`, and the test looks at what a client
//! would see, the answer and `GET /messages`.
//!
//! Run with `cargo test -p chat-sse --test validation_properties`. One server serves every case
//! of a property, so the file runs in under a second in a debug build; a failure prints the
//! smallest body proptest could shrink it to.
//!
//! The contract, from the crate's documentation: a message is a JSON object with exactly the
//! string fields `user` (1 to 32 characters once trimmed, one line) and `text` (1 to 2,000
//! characters, not only whitespace), in a body of at most 16 KiB. Anything else is refused
//! with a 4xx and an `{"error": ...}` body, and stores nothing; a message that keeps the rules
//! is stored exactly. [`meets_the_rules`] writes that contract down independently of the
//! server, and keeps every "invalid" generator honest.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chat_sse::{Config, MAX_BODY_BYTES, MAX_TEXT_CHARS, MAX_USER_CHARS};
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use realtime_kit::client::{self, Fetched};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Long enough for a loaded CI machine, short enough that a hang fails fast.
const WAIT: Duration = Duration::from_secs(10);

/// Cases for the property that refuses; each is two requests on loopback.
const INVALID_CASES: u32 = 200;
/// Cases for the property that stores: each adds a message to the log.
const VALID_CASES: u32 = 64;

/// The real chat server, in a runtime of its own, shared by every case of a property.
/// proptest calls its test closure synchronously, so each request is a `block_on`.
struct Chat {
    runtime: Runtime,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// The newest message id the test has seen (0 for none). Each case asks only for messages
    /// after it: once a bad body has been stored, shrinking must still tell which later bodies
    /// are stored, and must not fetch an ever longer log.
    newest_seen: Cell<u64>,
}

impl Chat {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(chat_sse::run(listener, Config::default(), async {
            let _ = stopped.await;
        }));
        Self {
            runtime,
            addr,
            stop,
            task,
            newest_seen: Cell::new(0),
        }
    }

    /// Runs `future` on the server's runtime, failing the case if it takes longer than [`WAIT`].
    fn within<T>(&self, what: &str, future: impl Future<Output = T>) -> Result<T, TestCaseError> {
        // The timer is made inside `block_on`: it needs the runtime it runs in.
        self.runtime
            .block_on(async { tokio::time::timeout(WAIT, future).await })
            .map_err(|_| TestCaseError::fail(format!("{what} timed out")))
    }

    /// `POST /messages` with this body, as JSON.
    fn post(&self, body: &[u8]) -> Result<Fetched, TestCaseError> {
        let url = format!("http://{}/messages", self.addr);
        let headers = [("content-type", "application/json")];
        self.within(
            "POST /messages",
            client::fetch(Method::POST, &url, &headers, body.to_vec()),
        )?
        .map_err(|error| TestCaseError::fail(format!("POST /messages: {error}")))
    }

    /// The stored messages with ids above `after`, from `GET /messages?after=<after>`.
    fn messages_after(&self, after: u64) -> Result<Value, TestCaseError> {
        let url = format!("http://{}/messages?after={after}", self.addr);
        let response = self
            .within("GET /messages", client::get(&url))?
            .map_err(|error| TestCaseError::fail(format!("GET /messages: {error}")))?;
        prop_assert_eq!(response.status, 200, "{}", response.text());
        let history = response
            .json()
            .map_err(|error| TestCaseError::fail(format!("the history is not JSON: {error}")))?;
        Ok(history["messages"].clone())
    }

    /// The messages stored since the last call (or since the start).
    fn stored_since_last_look(&self) -> Result<Value, TestCaseError> {
        let stored = self.messages_after(self.newest_seen.get())?;
        if let Some(id) = stored.as_array().and_then(|new| new.last()?["id"].as_u64()) {
            self.newest_seen.set(id);
        }
        Ok(stored)
    }

    /// Stops the server and waits until `run` has returned.
    fn stop(self) {
        let Chat {
            runtime,
            stop,
            task,
            ..
        } = self;
        let _ = stop.send(());
        runtime
            .block_on(async { tokio::time::timeout(WAIT, task).await })
            .expect("the server stops in time")
            .expect("the server's task did not panic");
    }
}

/// Starts a chat server and runs `test` on `cases` values of `strategy` against it; returns the
/// server, for a last look and `stop`. A failure panics with proptest's report: the reason and
/// the smallest failing input.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(&Chat, S::Value) -> Result<(), TestCaseError>,
) -> Chat {
    let chat = Chat::start();
    let config = ProptestConfig {
        cases,
        // Every shrinking step is a few requests: bound the steps, so that a failing body of
        // 2,000 characters is reported in seconds, not minutes (still shrunk a good way).
        max_shrink_iters: 1024,
        // Where proptest keeps the seeds of failures, as the `proptest!` macro would set it.
        source_file: Some(file!()),
        ..ProptestConfig::default()
    };
    let result = TestRunner::new(config).run(&strategy, |value| test(&chat, value));
    if let Err(error) = result {
        panic!("{error}");
    }
    chat
}

/// A request body, shown as text in a failure report (proptest prints inputs with `Debug`).
#[derive(Clone)]
struct Body(Vec<u8>);

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 200;
        match std::str::from_utf8(&self.0) {
            Ok(text) if text.chars().count() <= SHOWN => write!(f, "{text:?}"),
            Ok(text) => {
                let start: String = text.chars().take(SHOWN).collect();
                write!(f, "{start:?}... ({} bytes)", self.0.len())
            }
            Err(_) if self.0.len() <= SHOWN => write!(f, "b\"{}\"", self.0.escape_ascii()),
            Err(_) => {
                let start = self.0[..SHOWN].escape_ascii();
                write!(f, "b\"{start}\"... ({} bytes)", self.0.len())
            }
        }
    }
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Body(value.to_string().into_bytes())
    }
}

/// The chat's documented rules for a message, written without the server's code: whether the
/// server must accept `body`.
fn meets_the_rules(body: &[u8]) -> bool {
    if body.len() > MAX_BODY_BYTES {
        return false;
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let (Some(Value::String(user)), Some(Value::String(text))) =
        (fields.get("user"), fields.get("text"))
    else {
        return false;
    };
    let user = user.trim();
    fields.len() == 2
        && (1..=MAX_USER_CHARS).contains(&user.chars().count())
        && !user.chars().any(char::is_control)
        && !text.trim().is_empty()
        && text.chars().count() <= MAX_TEXT_CHARS
}

/// Up to `max` characters of whitespace as `str::trim` sees it, ASCII and not, line breaks
/// included.
fn whitespace(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[ \t\n\r\u{a0}\u{2028}\u{3000}]{{0,{max}}}"))
        .expect("a valid regex")
}

/// A valid name as typed: 1 to 32 characters (often exactly 32, the edge), no control
/// characters, neither starting nor ending with whitespace, maybe padded with whitespace that
/// the server trims off.
fn valid_user() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        3 => r"[^\s\p{Cc}]([^\p{Cc}]{0,30}[^\s\p{Cc}])?",
        1 => r"[^\s\p{Cc}]{32}",
    ];
    (whitespace(3), name, whitespace(3))
        .prop_map(|(before, name, after)| (format!("{before}{name}{after}"), name))
}

/// A valid text: anything (line breaks, NUL, markup, emoji) with at least one character that
/// is not whitespace; sometimes exactly at the 2,000-character limit.
fn valid_text() -> impl Strategy<Value = String> {
    let short = (r"(?s).{0,20}", r"\S", r"(?s).{0,20}");
    // Exactly 2,000 characters: the visible one among the first ten, the rest cut to fit.
    let at_the_limit =
        (r"(?s).{0,9}", r"\S", r"(?s).{1999}").prop_map(|(before, visible, after)| {
            let fill = MAX_TEXT_CHARS - 1 - before.chars().count();
            let after: String = after.chars().take(fill).collect();
            (before, visible, after)
        });
    prop_oneof![4 => short.boxed(), 1 => at_the_limit.boxed()]
        .prop_map(|(before, visible, after)| format!("{before}{visible}{after}"))
}

/// A valid message as posted: the raw name (maybe padded), the trimmed name the server must
/// store, and the text.
fn valid_message() -> impl Strategy<Value = (String, String, String)> {
    (valid_user(), valid_text()).prop_map(|((user, trimmed), text)| (user, trimmed, text))
}

/// Any string, weighted towards the characters validation looks at.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        r"(?s).{0,12}",
        whitespace(4),
        Just("ann".to_owned()),
        Just("a\nb".to_owned()),
    ]
}

/// Arbitrary JSON: null, booleans, numbers, strings, and arrays and objects of them nested a
/// few levels deep, whose keys are often the chat's own field names or near misses.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        any_text().prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("user".to_owned()),
        Just("text".to_owned()),
        Just("txt".to_owned()),
        Just("User".to_owned()),
        Just("id".to_owned()),
        r"\PC{0,6}",
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// JSON that is not a string, for a field that must be one.
fn not_a_string() -> impl Strategy<Value = Value> {
    any_json().prop_filter("not a string", |value| !value.is_string())
}

/// A JSON object that breaks exactly one rule, starting from a valid message.
fn near_miss_object() -> impl Strategy<Value = Value> {
    prop_oneof![
        valid_message().prop_map(|(_, _, text)| json!({ "text": text })),
        valid_message().prop_map(|(user, _, _)| json!({ "user": user })),
        Just(json!({})),
        (valid_message(), not_a_string())
            .prop_map(|((_, _, text), user)| json!({ "user": user, "text": text })),
        (valid_message(), not_a_string())
            .prop_map(|((user, _, _), text)| json!({ "user": user, "text": text })),
        (
            valid_message(),
            r"\PC{0,8}".prop_filter("an unknown field", |key| key != "user" && key != "text"),
            any_json(),
        )
            .prop_map(|((user, _, text), key, value)| {
                let mut object = json!({ "user": user, "text": text });
                object[key] = value;
                object
            }),
        // A name of nothing but whitespace, which trims to nothing.
        (valid_message(), whitespace(5))
            .prop_map(|((_, _, text), user)| json!({ "user": user, "text": text })),
        // A name over the limit after trimming, mostly by one.
        (valid_message(), r"[^\s\p{Cc}]{33,34}")
            .prop_map(|((_, _, text), user)| json!({ "user": user, "text": text })),
        // A name with a control character inside, where trimming cannot remove it.
        (valid_message(), r"\p{Cc}").prop_map(|((_, trimmed, text), control)| {
            json!({ "user": format!("a{control}{trimmed}"), "text": text })
        }),
        // A text of nothing but whitespace.
        (valid_message(), whitespace(10))
            .prop_map(|((user, _, _), text)| json!({ "user": user, "text": text })),
        // A text over the limit, mostly by one.
        (valid_message(), r"\S{2001,2002}")
            .prop_map(|((user, _, _), text)| json!({ "user": user, "text": text })),
    ]
}

/// Arrays, above all a valid name and text as a two-element array, the shape serde's derived
/// `Deserialize` accepts for a struct unless the server refuses non-objects itself.
fn arrays() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => valid_message().prop_map(|(user, _, text)| json!([user, text])),
        1 => prop::collection::vec(any_text(), 0..4).prop_map(Value::from),
    ]
}

/// A valid message padded with whitespace (still valid JSON) to just over the body limit.
fn over_the_body_limit() -> impl Strategy<Value = Body> {
    (valid_message(), 1..64usize).prop_map(|((user, _, text), over)| {
        let mut body = json!({ "user": user, "text": text })
            .to_string()
            .into_bytes();
        body.resize(MAX_BODY_BYTES + over, b' ');
        Body(body)
    })
}

/// Bytes: arbitrary ones, and ones made of JSON's own tokens, which are often nearly JSON.
fn any_bytes() -> impl Strategy<Value = Body> {
    let token = prop_oneof![
        Just(&b"{"[..]),
        Just(&b"}"[..]),
        Just(&b"["[..]),
        Just(&b"]"[..]),
        Just(&b":"[..]),
        Just(&b","[..]),
        Just(&b"\""[..]),
        Just(&b"\"user\""[..]),
        Just(&b"\"text\""[..]),
        Just(&b"\"ann\""[..]),
        Just(&b"null"[..]),
        Just(&b"1e999"[..]),
        Just(&b"\\u0000"[..]),
        Just(&b"\\ud800"[..]),
        Just(&b" "[..]),
        Just(&b"\xff"[..]),
    ]
    .prop_map(<[u8]>::to_vec);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(token, 0..16).prop_map(|tokens| tokens.concat()),
    ]
    .prop_map(Body)
}

/// Every kind of body the chat must refuse, and never one it must accept.
fn invalid_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => any_bytes(),
        2 => any_json().prop_map(Body::from),
        2 => near_miss_object().prop_map(Body::from),
        2 => arrays().prop_map(Body::from),
        1 => over_the_body_limit(),
    ]
    .prop_filter("a valid message is not an invalid body", |body| {
        !meets_the_rules(&body.0)
    })
}

/// Any body that breaks the rules (bytes that are not JSON, JSON that is not an object, an
/// object with missing, extra or mistyped fields, a name or text outside its limits, a body
/// over 16 KiB, a two-string array) is answered with a 4xx whose body is `{"error": "..."}`,
/// and stores nothing. The server never panics: it answers every case on the same socket
/// address.
#[test]
fn invalid_bodies_are_refused_and_store_nothing() {
    let chat = check(INVALID_CASES, invalid_body(), |chat, body| {
        let response = chat.post(&body.0)?;
        // Asked first, so that a stored body is counted even when the status check below fails.
        let stored = chat.stored_since_last_look()?;
        prop_assert!(
            response.status.is_client_error(),
            "{} {}",
            response.status,
            response.text()
        );
        let content_type = response.headers.get("content-type");
        prop_assert_eq!(
            content_type.and_then(|value| value.to_str().ok()),
            Some("application/json")
        );
        let answer = response
            .json()
            .map_err(|error| TestCaseError::fail(format!("the error is not JSON: {error}")))?;
        let is_error_object = answer.as_object().is_some_and(|fields| {
            fields.len() == 1
                && fields["error"]
                    .as_str()
                    .is_some_and(|text| !text.is_empty())
        });
        prop_assert!(is_error_object, "{}", answer);
        prop_assert_eq!(stored, json!([]), "a refused body was stored");
        Ok(())
    });
    let log = chat.messages_after(0).expect("GET /messages?after=0");
    assert_eq!(log, json!([]), "no refused body was stored");
    chat.stop();
}

/// A message that keeps the rules is stored: `201` with the stored message (the name trimmed,
/// the text exactly as sent), and `GET /messages` then has exactly that message after the one
/// before it. Without this, a server that refused everything would pass the property above.
#[test]
fn valid_messages_are_stored_exactly() {
    let chat = check(
        VALID_CASES,
        valid_message(),
        |chat, (user, trimmed, text)| {
            let body = Body::from(json!({ "user": user, "text": text }));
            prop_assert!(
                meets_the_rules(&body.0),
                "the generator made an invalid {body:?}"
            );
            let response = chat.post(&body.0)?;
            prop_assert_eq!(response.status, 201, "{}", response.text());
            let stored = response
                .json()
                .map_err(|error| TestCaseError::fail(format!("the answer is not JSON: {error}")))?;
            prop_assert_eq!(&stored["user"], &json!(trimmed));
            prop_assert_eq!(&stored["text"], &json!(text));
            let Some(id) = stored["id"].as_u64() else {
                return Err(TestCaseError::fail(format!("no numeric id in {stored}")));
            };
            prop_assert_eq!(chat.messages_after(id - 1)?, json!([stored]));
            Ok(())
        },
    );
    chat.stop();
}
