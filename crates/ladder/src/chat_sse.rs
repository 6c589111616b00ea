//! The chat's ladder: its steps, and the why-tests that climb it.
//!
//! Every rung serves the same routes and formats, as far as its step goes: `GET /` (a page with
//! an `EventSource` on `/events` and a form that posts JSON), `POST /messages` with
//! `{"user": ..., "text": ...}`, answered `201` with the stored message, `GET /events` (the
//! messages as unnamed events whose data is that same JSON) and, from step 2 on, `GET
//! /messages?after=<id>` (`{"messages": [...], "lost": <n>}`). The finished demo also sends
//! `presence` events, which the tests skip as a page that does not show them would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use realtime_kit::client::{self, EventStream, Fetched};
use realtime_kit::parser::{MessageEvent, SseParser};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clock_sse::{
    AbortOnDrop, drops_a_half_sent_request, exits_on_a_signal, open_stream, stalled_client,
};
use crate::probe::{self, WAIT, within};
use crate::{Ladder, Outcome, Rung, Server, Step, WhyTest};

/// The chat's ladder.
pub const LADDER: Ladder = Ladder {
    demo: "chat-sse",
    steps: &[
        Step {
            name: "step1_broadcast",
            adds: "the smallest correct chat: one broadcast channel for every stream, POST \
                   /messages, GET /events, the page",
            why_tests: &[SERVES_THE_CHAT],
        },
        Step {
            name: "step2_replay",
            adds: "message ids, a bounded log, Last-Event-ID replay of exactly what was missed, \
                   GET /messages?after=<id>",
            why_tests: &[
                RESUMES_WHERE_IT_LEFT_OFF,
                RESUMES_AFTER_A_RESTART,
                REFUSES_A_BAD_LAST_EVENT_ID,
                LISTS_THE_LOG,
            ],
        },
        Step {
            name: "step3_validation",
            adds: "a body limit that holds while reading, the Content-Type check, validation, \
                   JSON errors (413, 415, 400, 422)",
            why_tests: &[REFUSES_A_HUGE_BODY, REFUSES_BAD_POSTS],
        },
        Step {
            name: "step4_slow_readers",
            adds: "the slow-reader policy: a stream that falls MAX_LAG messages behind is \
                   closed, and the browser resumes from the log",
            why_tests: &[CLOSES_A_READER_THAT_FELL_BEHIND],
        },
        Step {
            name: "step5_shutdown",
            adds: "graceful shutdown on Ctrl-C and SIGTERM: every stream ends, the process exits",
            why_tests: &[EXITS_ON_A_SIGNAL],
        },
        Step {
            name: "step6_timeouts",
            adds: "a header-read timeout, a deadline for request bodies (408), a write-stall \
                   limit for clients that stop reading",
            why_tests: &[
                DROPS_A_HALF_SENT_REQUEST,
                ANSWERS_A_STALLED_BODY_WITH_408,
                LETS_GO_OF_A_STALLED_READER,
            ],
        },
        Step {
            name: "step7_keep_alive",
            adds: "keep-alive comments on a quiet stream, X-Accel-Buffering: no",
            why_tests: &[KEEPS_A_QUIET_STREAM_ALIVE, TELLS_PROXIES_NOT_TO_BUFFER],
        },
    ],
};

const SERVES_THE_CHAT: WhyTest = WhyTest {
    name: "serves_the_chat",
    checks: "the page opens an EventSource on /events, never closes it, shows text with \
             textContent and posts JSON; the stream is text/event-stream, no-cache; a post is \
             answered 201 with the message, and every open stream gets that same JSON, line \
             breaks and all, as one event; a body that is not JSON gets a 4xx with a JSON error",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(serves_the_chat(rung).await) }),
};

const RESUMES_WHERE_IT_LEFT_OFF: WhyTest = WhyTest {
    name: "resumes_where_it_left_off",
    checks: "a browser that reconnects with the Last-Event-ID it was given is sent exactly the \
             messages posted while it was away, in order, then the live ones: none lost, none \
             twice; each event's id is its message's id, and the stream sends a retry:",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(resumes_where_it_left_off(rung).await) }),
};

const RESUMES_AFTER_A_RESTART: WhyTest = WhyTest {
    name: "resumes_after_a_restart",
    checks: "after a server restart, a browser that reconnects with its last id is sent the \
             message posted while it was away, with an id above the ones it has seen",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(resumes_after_a_restart(rung).await) }),
};

const REFUSES_A_BAD_LAST_EVENT_ID: WhyTest = WhyTest {
    name: "refuses_a_bad_last_event_id",
    checks: "a Last-Event-ID that is not a whole number up to 2^53-1 gets 400 with a JSON \
             {\"error\": ...}; an empty one is a first connection",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(refuses_a_bad_last_event_id(rung).await) }),
};

const LISTS_THE_LOG: WhyTest = WhyTest {
    name: "lists_the_log",
    checks: "GET /messages?after=<id> answers {\"messages\": [the stored messages after it], \
             \"lost\": 0}; a query that is not one numeric after= gets 400 with a JSON error",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(lists_the_log(rung).await) }),
};

const REFUSES_A_HUGE_BODY: WhyTest = WhyTest {
    name: "refuses_a_huge_body",
    checks: "a post that announces a 1 GiB body gets 413 at once, before it is sent; a 1 MiB \
             body sent in chunks (no Content-Length to check first) gets 413 too, and nothing \
             is stored",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(refuses_a_huge_body(rung).await) }),
};

const REFUSES_BAD_POSTS: WhyTest = WhyTest {
    name: "refuses_bad_posts",
    checks: "each bad post gets its status (415 without Content-Type: application/json, 413 \
             over 16 KiB, 400 for what is not an object with exactly the string fields user and \
             text, 422 for an empty or too long user or text) with a JSON {\"error\": ...}, and \
             changes nothing: the log and the next id are as before",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(refuses_bad_posts(rung).await) }),
};

const CLOSES_A_READER_THAT_FELL_BEHIND: WhyTest = WhyTest {
    name: "closes_a_reader_that_fell_behind",
    checks: "a reader that stops reading while 1,000 messages of 6 KB are posted (MAX_LAG=8) \
             finds, once it reads again, a gap-free run of them and then the end of its stream; \
             reconnecting with its Last-Event-ID gets exactly the rest",
    limit: Duration::from_secs(60),
    run: |rung| {
        Box::pin(async move { Outcome::from(closes_a_reader_that_fell_behind(rung).await) })
    },
};

const EXITS_ON_A_SIGNAL: WhyTest = WhyTest {
    name: "exits_on_a_signal",
    checks: "with a stream open, SIGINT (Ctrl-C) and SIGTERM each make the process end the \
             stream cleanly and exit with success within 4 s",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(exits_on_a_signal(rung, &[])),
};

const DROPS_A_HALF_SENT_REQUEST: WhyTest = WhyTest {
    name: "drops_a_half_sent_request",
    checks: "a connection that sends half a request and waits is closed soon after \
             HEADER_TIMEOUT_MS (300 ms here)",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(drops_a_half_sent_request(rung).await) }),
};

const ANSWERS_A_STALLED_BODY_WITH_408: WhyTest = WhyTest {
    name: "answers_a_stalled_body_with_408",
    checks: "a post that sends 10 of the 100 bytes it announced and then nothing gets 408 with \
             a JSON error soon after BODY_TIMEOUT_MS (300 ms here), and its connection is closed",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(answers_a_stalled_body_with_408(rung).await) }),
};

const LETS_GO_OF_A_STALLED_READER: WhyTest = WhyTest {
    name: "lets_go_of_a_stalled_reader",
    checks: "a reader that stops reading for 2 s while 600 messages of 6 KB are posted has \
             been cut off (STALL_TIMEOUT_MS=500) by the time it reads again, while a reader next \
             to it gets every message",
    limit: Duration::from_secs(60),
    run: |rung| Box::pin(async move { Outcome::from(lets_go_of_a_stalled_reader(rung).await) }),
};

const KEEPS_A_QUIET_STREAM_ALIVE: WhyTest = WhyTest {
    name: "keeps_a_quiet_stream_alive",
    checks: "with nobody posting, the stream carries a comment line every KEEP_ALIVE_MS \
             (200 ms here)",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(keeps_a_quiet_stream_alive(rung).await) }),
};

const TELLS_PROXIES_NOT_TO_BUFFER: WhyTest = WhyTest {
    name: "tells_proxies_not_to_buffer",
    checks: "the stream's response says X-Accel-Buffering: no",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(tells_proxies_not_to_buffer(rung).await) }),
};

/// The header of a JSON post.
const JSON_TYPE: &[(&str, &str)] = &[("content-type", "application/json")];

/// A 6,000-byte text: a number to tell the messages apart, then 1,995 three-byte characters.
/// 2,000 characters is the longest text the finished demo takes.
fn big_text(n: usize) -> String {
    format!("{n:04} {}", "€".repeat(1995))
}

/// One chat message, as the page would use it.
#[derive(Debug, Clone)]
struct Said {
    /// The event's id (its `id:`, or the last one before it), "" if none was ever sent.
    event_id: String,
    /// Its data, the stored message.
    message: Value,
}

impl Said {
    /// The message's `text`, to show it in a failure.
    fn text(&self) -> &str {
        self.message["text"].as_str().unwrap_or_default()
    }
}

/// Why no message came.
enum NoMessage {
    /// Nothing arrived in time.
    Silent,
    /// The server ended the stream.
    Ended,
    /// Anything else, said for a user.
    Other(String),
}

impl From<NoMessage> for String {
    fn from(no_message: NoMessage) -> Self {
        match no_message {
            NoMessage::Silent => format!("the stream sent no message for {} s", WAIT.as_secs()),
            NoMessage::Ended => "the stream ended, though a chat's stream goes on until the \
                                 server stops"
                .to_owned(),
            NoMessage::Other(what) => what,
        }
    }
}

/// Checks an event as the page would use it: an unnamed (`message`) event whose data is a
/// stored message, `{"user": ..., "text": ...}` with more fields from step 2 on.
fn parse_message(event: &MessageEvent) -> Result<Said, String> {
    if event.event != "message" {
        return Err(format!(
            "the stream sent a `{}` event (data {:?}), but the page listens for messages: a \
             message's text broke out of its event, or the stream sends what no page reads",
            event.event, event.data
        ));
    }
    let message: Value = serde_json::from_str(&event.data).map_err(|_| {
        format!(
            "a message event's data is {:?}: it must be the stored message as JSON, \
             {{\"user\": ..., \"text\": ...}}, the same JSON the POST was answered with",
            event.data
        )
    })?;
    if !(message["user"].is_string() && message["text"].is_string()) {
        return Err(format!(
            "a message event's data is {}: it must be the stored message, with the strings \
             \"user\" and \"text\"",
            event.data
        ));
    }
    Ok(Said {
        event_id: event.last_event_id.clone(),
        message,
    })
}

/// The next chat message, within `limit`; `presence` events (the finished demo's count of
/// readers) are skipped.
async fn next_message(stream: &mut EventStream, limit: Duration) -> Result<Said, NoMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next_event())
            .await
            .map_err(|_| NoMessage::Silent)?
            .map_err(|error| NoMessage::Other(format!("the stream broke off: {error}")))?
            .ok_or(NoMessage::Ended)?;
        if event.event == "presence" {
            continue;
        }
        return parse_message(&event).map_err(NoMessage::Other);
    }
}

/// `POST /messages` with `headers` and `body`, read to the end.
async fn post_raw(
    server: &Server,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Fetched, String> {
    within(
        WAIT,
        || format!("POST /messages got no answer within {} s", WAIT.as_secs()),
        client::fetch(Method::POST, &server.url("/messages"), headers, body.into()),
    )
    .await?
    .map_err(|error| format!("POST /messages failed: {error}"))
}

/// Posts a valid message and returns the stored message the `201` carries.
async fn post(server: &Server, user: &str, text: &str) -> Result<Value, String> {
    let body = json!({ "user": user, "text": text }).to_string();
    let response = post_raw(server, JSON_TYPE, body).await?;
    let shown: String = text.chars().take(40).collect();
    let stored = response.json().ok().filter(|_| response.status == 201);
    let Some(stored) = stored.filter(|stored| stored["user"] == user && stored["text"] == text)
    else {
        return Err(format!(
            "posting the message {shown:?} from {user:?} was answered {} {:?}: it must be 201 \
             with the stored message, {{\"user\": {user:?}, \"text\": <exactly what was sent>, \
             ...}}",
            response.status,
            response.text().chars().take(200).collect::<String>()
        ));
    };
    Ok(stored)
}

/// A stored message's id, as the `201` gave it.
fn id_of(message: &Value) -> Result<u64, String> {
    message["id"].as_u64().ok_or_else(|| {
        format!(
            "the stored message {message} has no \"id\": without one, a browser cannot say \
             which message it saw last"
        )
    })
}

/// The headers a reconnecting browser sends: `Last-Event-ID` only if it was given an id.
fn resume_headers(last_id: &str) -> Vec<(&str, &str)> {
    if last_id.is_empty() {
        Vec::new()
    } else {
        vec![("last-event-id", last_id)]
    }
}

/// How a reconnecting browser's claim reads in a failure.
fn claim(last_id: &str) -> String {
    if last_id.is_empty() {
        "no Last-Event-ID (its stream had sent no id to send back)".to_owned()
    } else {
        format!("Last-Event-ID: {last_id}")
    }
}

/// `GET /messages<query>`: its status and body.
async fn history(server: &Server, query: &str) -> Result<Fetched, String> {
    let path = format!("/messages{query}");
    within(
        WAIT,
        || format!("GET {path} got no answer within {} s", WAIT.as_secs()),
        client::get(&server.url(&path)),
    )
    .await?
    .map_err(|error| format!("GET {path} failed: {error}"))
}

/// Whether a response is a JSON `{"error": "<something>"}`.
fn is_json_error(response: &Fetched) -> bool {
    let json_type = response
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let said = response.json().ok();
    json_type && said.is_some_and(|said| said["error"].as_str().is_some_and(|e| !e.is_empty()))
}

/// The rung is a chat at all: what every rung, step 1 on, serves.
async fn serves_the_chat(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;

    let html = probe::html_page(&server.url("/")).await?;
    if !html.contains("new EventSource(\"/events\")")
        && !html.contains("new EventSource('/events')")
    {
        return Err(
            "the page never opens `new EventSource(\"/events\")`, so a browser never connects"
                .to_owned(),
        );
    }
    if !html.contains("addEventListener(\"message\"") && !html.contains(".onmessage") {
        return Err(
            "the page does not listen for `message` events (the type of an event without an \
             `event:` line), so it would show nothing"
                .to_owned(),
        );
    }
    if html.contains(".close(") {
        return Err(
            "the page closes its EventSource: after an error the browser would stop \
             reconnecting by itself"
                .to_owned(),
        );
    }
    if html.contains("innerHTML") {
        return Err(
            "the page uses innerHTML: a message such as <img src=x onerror=...> would run as \
             code in every reader's browser; put text in with textContent"
                .to_owned(),
        );
    }
    if !html.contains("fetch(\"/messages\"") || !html.contains("application/json") {
        return Err(
            "the page's form does not post JSON to /messages with fetch(\"/messages\", ...) and \
             Content-Type: application/json"
                .to_owned(),
        );
    }

    let mut first = open_stream(&server, &[]).await?;
    let header = |stream: &EventStream, name: &str| {
        stream
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(&first, "content-type");
    if !content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("text/event-stream"))
    {
        return Err(format!(
            "GET /events answered with Content-Type {content_type:?}: EventSource refuses a \
             stream that is not text/event-stream"
        ));
    }
    if !header(&first, "cache-control").is_some_and(|value| value.contains("no-cache")) {
        return Err(
            "GET /events has no `Cache-Control: no-cache`, so a cache on the way may keep the \
             stream, or hand a stored copy to the next reader"
                .to_owned(),
        );
    }
    let mut second = open_stream(&server, &[]).await?;

    // A text that would end its event and forge another if it were written into `data:` as is.
    let tricky = "two lines\nand a forged event:\n\nevent: forged\ndata: {}\n\nid: 1";
    let stored = post(&server, "ann", tricky).await?;
    for (stream, who) in [(&mut first, "one"), (&mut second, "another")] {
        let said = next_message(stream, WAIT).await.map_err(|no| {
            format!(
                "a message posted while two browsers were connected never reached {who}: {}",
                String::from(no)
            )
        })?;
        if said.message != stored {
            return Err(format!(
                "{who} browser was sent {} for the message the POST answered with {stored}: \
                 every reader must get the stored message, exactly",
                said.message
            ));
        }
    }
    let plain = post(&server, "bob", "the next one").await?;
    let said = next_message(&mut first, WAIT).await.map_err(String::from)?;
    if said.message != plain {
        return Err(format!(
            "after a message with line breaks, the next message a browser was sent is {}, not \
             the one posted next ({plain}): the text broke out of its event",
            said.message
        ));
    }

    let refused = post_raw(&server, JSON_TYPE, "this is not JSON").await?;
    if !(400..500).contains(&refused.status.as_u16()) || !is_json_error(&refused) {
        return Err(format!(
            "a post whose body is not JSON was answered {} {:?}: it must be refused with a 4xx \
             and a JSON {{\"error\": ...}} that says what to send",
            refused.status,
            refused.text()
        ));
    }

    // A reader that leaves takes nothing down with it.
    drop(second);
    let after = post(&server, "ann", "after one reader left").await?;
    let said = next_message(&mut first, WAIT).await.map_err(|no| {
        format!(
            "after one browser closed its stream, the other was not sent the next message: {}",
            String::from(no)
        )
    })?;
    if said.message != after {
        return Err(format!(
            "after one browser closed its stream, the other was sent {} instead of {after}",
            said.message
        ));
    }
    Ok(())
}

/// A reconnect with `Last-Event-ID` gets exactly what was missed.
async fn resumes_where_it_left_off(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let mut stream = open_stream(&server, &[]).await?;
    let seen = post(&server, "ann", "before the browser lost its connection").await?;
    let said = next_message(&mut stream, WAIT)
        .await
        .map_err(String::from)?;
    if said.message != seen {
        return Err(format!(
            "the stream sent {} for the message {seen}",
            said.message
        ));
    }
    let last_id = stream.last_event_id().to_owned();
    drop(stream);

    let mut missed = Vec::new();
    for n in 1..=3 {
        let text = format!("posted while the browser was reconnecting ({n} of 3)");
        missed.push(post(&server, "bob", &text).await?);
    }
    let mut resumed = open_stream(&server, &resume_headers(&last_id)).await?;
    let live = post(&server, "ann", "posted after the reconnect").await?;
    for expected in missed.iter().chain([&live]) {
        let said = match next_message(&mut resumed, WAIT).await {
            Ok(said) => said,
            Err(NoMessage::Silent) => {
                return Err(format!(
                    "a browser that reconnected with {} was not sent {:?} within {} s",
                    claim(&last_id),
                    expected["text"].as_str().unwrap_or_default(),
                    WAIT.as_secs()
                ));
            }
            Err(other) => return Err(other.into()),
        };
        if said.message == seen {
            return Err(format!(
                "a browser that reconnected with {} was sent {:?} again, a message it had \
                 already shown",
                claim(&last_id),
                said.text()
            ));
        }
        if said.message != *expected {
            let lost = missed
                .iter()
                .take_while(|missed| **missed != said.message)
                .count();
            return Err(format!(
                "a message posted while a browser was reconnecting ({:?}) never reached it: it \
                 reconnected with {}, and its new stream went straight on with {:?}{}",
                expected["text"].as_str().unwrap_or_default(),
                claim(&last_id),
                said.text(),
                if lost > 1 {
                    format!(" ({lost} messages lost)")
                } else {
                    String::new()
                }
            ));
        }
        let id = id_of(expected)?;
        if said.event_id != id.to_string() {
            return Err(format!(
                "the message with id {id} was sent as an event with id {:?}: the event's id is \
                 what the browser sends back, so it must be the message's",
                said.event_id
            ));
        }
    }
    if resumed.retry().is_none() {
        return Err(
            "the stream sends no `retry:`, so after a drop every browser waits its own default \
             before it reconnects, not the delay the server chose"
                .to_owned(),
        );
    }
    Ok(())
}

/// A restart empties the in-memory log, but ids keep growing: a resuming browser gets the new
/// server's messages instead of taking them for ones it has seen.
async fn resumes_after_a_restart(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let mut stream = open_stream(&server, &[]).await?;
    for n in 1..=3 {
        post(&server, "ann", &format!("before the restart ({n} of 3)")).await?;
        next_message(&mut stream, WAIT)
            .await
            .map_err(String::from)?;
    }
    let last_id = stream.last_event_id().to_owned();
    drop(stream);

    let port = server.port();
    server.stop().await;
    let server = rung
        .start_on(port, &[])
        .await
        .map_err(|error| format!("after a restart on the same port: {error}"))?;
    let away = post(&server, "bob", "posted while the browser was reconnecting").await?;
    let mut resumed = open_stream(&server, &resume_headers(&last_id)).await?;
    let said = match next_message(&mut resumed, Duration::from_secs(2)).await {
        Ok(said) => said,
        Err(NoMessage::Silent) => {
            let why = if last_id.is_empty() {
                ""
            } else {
                ": the new server's ids started below the ones the browser had seen, so it took \
                 the new messages for ones already shown (ids must keep growing across a \
                 restart, while the log, in memory, starts empty)"
            };
            return Err(format!(
                "after a server restart, a browser that reconnected with {} was never sent the \
                 message posted while it was away{why}",
                claim(&last_id)
            ));
        }
        Err(other) => return Err(other.into()),
    };
    if said.message != away {
        return Err(format!(
            "after a restart, a browser that reconnected with {} was sent {} instead of the \
             message posted while it was away, {away}",
            claim(&last_id),
            said.message
        ));
    }
    let (id, seen) = (id_of(&away)?, last_id.parse::<u64>().unwrap_or(0));
    if id <= seen {
        return Err(format!(
            "after a restart the first message got id {id}, not above {seen}, the last id the \
             browser had seen: the page, which drops ids it has shown already, would drop it"
        ));
    }
    Ok(())
}

/// A `Last-Event-ID` no server of ours sends is refused, with a reason.
async fn refuses_a_bad_last_event_id(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    for bad in ["abc", "-1", "1.5", "9007199254740992"] {
        let headers = [("accept", "text/event-stream"), ("last-event-id", bad)];
        let response = probe::get(server.addr, "/events", &headers).await?;
        let status = response.status();
        if status != 400 {
            let got = if status == 200 {
                "a stream, as if nothing were wrong,".to_owned()
            } else {
                status.to_string()
            };
            return Err(format!(
                "a browser (or script) that sent Last-Event-ID: {bad}, which is not an id this \
                 server can have sent, got {got} instead of 400 with a JSON {{\"error\": ...}} \
                 saying what is wrong"
            ));
        }
        let body = probe::body_text(response, 64 * 1024, WAIT).await?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        if !json.is_some_and(|json| json["error"].is_string()) {
            return Err(format!(
                "Last-Event-ID: {bad} got 400, but with the body {body:?}: it must be JSON, \
                 {{\"error\": \"<what is wrong>\"}}"
            ));
        }
    }
    open_stream(&server, &[("last-event-id", "")])
        .await
        .map_err(|error| {
            format!(
                "an empty Last-Event-ID (a browser that has seen no id yet) was not a first \
                 connection: {error}"
            )
        })?;
    Ok(())
}

/// `GET /messages?after=<id>` reads the log.
async fn lists_the_log(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let mut posted = Vec::new();
    for n in 1..=3 {
        posted.push(post(&server, "ann", &format!("message {n} of 3")).await?);
    }
    let expect = |query: &str, messages: &[Value]| {
        let query = query.to_owned();
        let want = json!({ "messages": messages, "lost": 0 });
        let server = &server;
        async move {
            let response = history(server, &query).await?;
            let got = response.json().ok().filter(|_| response.status == 200);
            if got.as_ref() == Some(&want) {
                return Ok(());
            }
            if response.status == 404 || response.status == 405 {
                return Err(format!(
                    "GET /messages{query} answered {}: a client without SSE (a script, a bot, a \
                     page that polls) cannot read the messages it missed",
                    response.status
                ));
            }
            Err(format!(
                "GET /messages{query} answered {} {:?}, not 200 with {want}",
                response.status,
                response.text().chars().take(300).collect::<String>()
            ))
        }
    };
    expect("?after=0", &posted).await?;
    let first = id_of(&posted[0])?;
    let last = id_of(&posted[2])?;
    expect(&format!("?after={first}"), &posted[1..]).await?;
    expect(&format!("?after={last}"), &[]).await?;
    for bad in ["?after=", "?after=abc", "?after=-1", "?since=1"] {
        let response = history(&server, bad).await?;
        if response.status != 400 || !is_json_error(&response) {
            return Err(format!(
                "GET /messages{bad} answered {} {:?}: a query that is not one numeric `after` \
                 must get 400 with a JSON {{\"error\": ...}} saying what to send",
                response.status,
                response.text()
            ));
        }
    }
    Ok(())
}

/// A response read from a raw connection.
struct RawAnswer {
    /// Its status code.
    status: u16,
    /// Its body, as far as `Content-Length` says (or to the close, without one).
    body: Vec<u8>,
    /// Whether the server closed the connection after it.
    closed: bool,
}

/// Reads one response with a `Content-Length` body (or one that ends with the connection) from
/// `socket`; `None` if none came within `limit`. With `wait_for_close`, also waits up to
/// `limit` for the server to close the connection.
async fn read_answer(
    socket: &mut TcpStream,
    limit: Duration,
    wait_for_close: bool,
) -> Result<Option<RawAnswer>, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut raw = Vec::new();
    let mut buffer = vec![0u8; 16 * 1024];
    let mut closed = false;
    let mut complete = None;
    loop {
        if complete.is_none()
            && let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            complete = Some((head, end + 4, length));
        }
        if let Some((_, start, Some(length))) = &complete
            && raw.len() >= start + length
            && !wait_for_close
        {
            break;
        }
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) if complete.is_none() => return Ok(None),
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(read)) => raw.extend_from_slice(&buffer[..read]),
        }
    }
    let Some((head, start, length)) = complete else {
        return Err(format!(
            "the server closed the connection without an answer (it sent {:?})",
            String::from_utf8_lossy(&raw)
        ));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("the answer does not start with a status line: {head:?}"))?;
    let end = length.map_or(raw.len(), |length| (start + length).min(raw.len()));
    Ok(Some(RawAnswer {
        status,
        body: raw[start..end].to_vec(),
        closed,
    }))
}

/// Whether a raw body is a JSON `{"error": "<something>"}`.
fn raw_is_json_error(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|json| json["error"].as_str().is_some_and(|e| !e.is_empty()))
}

/// The body limit: a huge body is refused while it arrives, not after.
async fn refuses_a_huge_body(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let connect = || async {
        TcpStream::connect(server.addr)
            .await
            .map_err(|error| format!("could not connect: {error}"))
    };
    let head = |framing: &str| {
        format!(
            "POST /messages HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {framing}\r\n\r\n",
            server.addr
        )
    };

    // 1 GiB announced, and only its first bytes sent: the answer must not wait for the rest.
    let mut socket = connect().await?;
    let start = format!(
        "{}{{\"user\":\"ann\",\"text\":\"",
        head("Content-Length: 1073741824")
    );
    socket
        .write_all(start.as_bytes())
        .await
        .map_err(|error| format!("could not send the request: {error}"))?;
    let patience = Duration::from_secs(2);
    match read_answer(&mut socket, patience, false).await? {
        None => {
            return Err(format!(
                "a post that announced a 1 GiB body (Content-Length: 1073741824) got no answer \
                 within {} s: the server was waiting to read the whole body into memory before \
                 looking at it, so a handful of such posts take all of its memory",
                patience.as_secs()
            ));
        }
        Some(answer) if answer.status != 413 => {
            return Err(format!(
                "a post that announced a 1 GiB body was answered {} {:?}, not 413 (Content Too \
                 Large) with a JSON error",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
        Some(answer) if !raw_is_json_error(&answer.body) => {
            return Err(format!(
                "a post that announced a 1 GiB body got 413, but with the body {:?}: it must be \
                 JSON, {{\"error\": \"<what is wrong>\"}}",
                String::from_utf8_lossy(&answer.body)
            ));
        }
        Some(_) => {}
    }
    drop(socket);

    // 1 MiB of a valid message, in chunks: no length to check up front, so the limit has to
    // hold while the body is read. The sender runs on while the answer is read, as a real
    // client's would; the server may stop reading (and close) at any point.
    let socket = connect().await?;
    let (mut reader, mut writer) = socket.into_split();
    let mut body = b"{\"user\":\"ann\",\"text\":\"".to_vec();
    body.resize(1024 * 1024, b'x');
    body.extend_from_slice(b"\"}");
    let mut request = head("Transfer-Encoding: chunked").into_bytes();
    for chunk in body.chunks(16 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let _sending = AbortOnDrop(tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        // Keep the connection open for reading the answer.
        std::future::pending::<()>().await;
    }));
    let answer = {
        let mut raw = Vec::new();
        let mut buffer = vec![0u8; 16 * 1024];
        let read = tokio::time::timeout(WAIT, async {
            while !raw.windows(4).any(|window| window == b"\r\n\r\n") {
                match reader.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => raw.extend_from_slice(&buffer[..read]),
                }
            }
        })
        .await;
        let head = String::from_utf8_lossy(&raw).into_owned();
        match read {
            Err(_) if head.is_empty() => None,
            _ => Some(head),
        }
    };
    let status = answer
        .as_deref()
        .and_then(|head| head.split_whitespace().nth(1).map(str::to_owned));
    if status.as_deref() != Some("413") {
        return Err(format!(
            "a 1 MiB message sent in chunks (no Content-Length to check first) was answered \
             {}: it must be refused with 413 as soon as the body passes the limit",
            match &answer {
                None => format!("with nothing within {} s", WAIT.as_secs()),
                Some(head) if head.is_empty() => "with a closed connection".to_owned(),
                Some(head) => format!("{:?}", head.lines().next().unwrap_or_default()),
            }
        ));
    }
    let log = history(&server, "?after=0").await?;
    let stored = log.json().ok();
    let messages = stored.as_ref().and_then(|log| log["messages"].as_array());
    if messages.is_none_or(|messages| !messages.is_empty()) {
        return Err(format!(
            "after two refused posts the log holds {}: a refused post must store nothing",
            log.text().chars().take(200).collect::<String>()
        ));
    }
    Ok(())
}

/// Validation: each bad post gets its status and a JSON error, and changes nothing.
async fn refuses_bad_posts(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let kept = post(&server, "ann", "the only message").await?;
    let before = history(&server, "?after=0").await?;

    let form = "an HTML form or a page on another site can send it from a visitor's browser \
                without asking, so any page a reader visits could post in their name";
    let message = |user: &str, text: &str| json!({ "user": user, "text": text }).to_string();
    let over_limit = message("ann", &"x".repeat(17 * 1024));
    /// What the post is, in words; its headers and body; the status it must get; and why.
    type BadPost<'a> = (&'a str, &'a [(&'a str, &'a str)], String, u16, &'a str);
    let cases: Vec<BadPost> = vec![
        (
            "a post sent as Content-Type: text/plain",
            &[("content-type", "text/plain")],
            message("ann", "hi"),
            415,
            form,
        ),
        (
            "a post sent as an HTML form's application/x-www-form-urlencoded",
            &[("content-type", "application/x-www-form-urlencoded")],
            "user=ann&text=hi".to_owned(),
            415,
            form,
        ),
        (
            "a post without a Content-Type",
            &[],
            message("ann", "hi"),
            415,
            "only application/json is this API's",
        ),
        (
            "a post of 17 KiB",
            JSON_TYPE,
            over_limit,
            413,
            "no message is that long (16 KiB is the limit)",
        ),
        (
            "a JSON array, [\"ann\", \"hi\"]",
            JSON_TYPE,
            "[\"ann\",\"hi\"]".to_owned(),
            400,
            "a message is an object with named fields",
        ),
        (
            "a message without `text`",
            JSON_TYPE,
            "{\"user\":\"ann\"}".to_owned(),
            400,
            "the client has a bug to see",
        ),
        (
            "a message whose text is a number",
            JSON_TYPE,
            "{\"user\":\"ann\",\"text\":5}".to_owned(),
            400,
            "the client has a bug to see",
        ),
        (
            "a message with a misspelt extra field, `txt`",
            JSON_TYPE,
            "{\"user\":\"ann\",\"text\":\"hi\",\"txt\":\"hi\"}".to_owned(),
            400,
            "a field the server ignores without a word is a typo nobody finds",
        ),
        (
            "a message with an empty name",
            JSON_TYPE,
            message("", "hi"),
            422,
            "a name is 1 to 32 characters",
        ),
        (
            "a message whose name is only spaces",
            JSON_TYPE,
            message("   ", "hi"),
            422,
            "a name is 1 to 32 characters, once trimmed",
        ),
        (
            "a message with a 33-character name",
            JSON_TYPE,
            message(&"n".repeat(33), "hi"),
            422,
            "a name is 1 to 32 characters",
        ),
        (
            "a message whose name has a line break",
            JSON_TYPE,
            message("ann\nbob", "hi"),
            422,
            "a name is one line",
        ),
        (
            "a message with an empty text",
            JSON_TYPE,
            message("ann", ""),
            422,
            "a text has 1 to 2,000 characters",
        ),
        (
            "a message whose text is only spaces and line breaks",
            JSON_TYPE,
            message("ann", " \n\t "),
            422,
            "a text must say something",
        ),
        (
            "a message of 2,001 characters",
            JSON_TYPE,
            message("ann", &"t".repeat(2001)),
            422,
            "a text has 1 to 2,000 characters",
        ),
    ];
    for (what, headers, body, status, why) in cases {
        let response = post_raw(&server, headers, body).await?;
        if response.status != status {
            let got = if response.status == 201 {
                "was stored (201)".to_owned()
            } else {
                format!("got {}", response.status)
            };
            return Err(format!(
                "{what} {got} instead of {status} with a JSON {{\"error\": ...}}: {why}"
            ));
        }
        if !is_json_error(&response) {
            return Err(format!(
                "{what} got {status}, but with the body {:?}: it must be JSON, {{\"error\": \
                 \"<what is wrong>\"}}, so the page can show why",
                response.text()
            ));
        }
    }
    let after = history(&server, "?after=0").await?;
    if after.json().ok() != before.json().ok() {
        return Err(format!(
            "refused posts changed the log: it was {} and is {}",
            before.text(),
            after.text()
        ));
    }
    let next = post(&server, "ann", "after the refused ones").await?;
    let (kept_id, next_id) = (id_of(&kept)?, id_of(&next)?);
    if next_id != kept_id + 1 {
        return Err(format!(
            "after refused posts the next message got id {next_id}, not {}: refused posts used \
             up ids",
            kept_id + 1
        ));
    }
    Ok(())
}

/// What a stalled reader found when it read again.
struct Found {
    /// The ids of the messages it was sent, in order.
    ids: Vec<u64>,
    /// The last event id it was given (what a browser sends back).
    last_event_id: String,
    /// The response ended with its last chunk: the server ended it, and was there to do so.
    ended_cleanly: bool,
    /// The connection was closed (or reset).
    closed: bool,
}

/// Reads, from `socket` (whose response head is read already), the chunked body of an event
/// stream as fast as it comes, until the response ends, the connection closes, the message
/// `last` arrives or nothing has come for 2 s.
async fn read_stalled_stream(socket: &mut TcpStream, last: u64) -> Result<Found, String> {
    let mut raw = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut parser = SseParser::new();
    let mut found = Found {
        ids: Vec::new(),
        last_event_id: String::new(),
        ended_cleanly: false,
        closed: false,
    };
    let mut decoded = 0;
    let overall = Instant::now() + Duration::from_secs(20);
    loop {
        // Decode the complete chunks so far.
        loop {
            let rest = &raw[decoded..];
            let Some(line_end) = rest.windows(2).position(|window| window == b"\r\n") else {
                break;
            };
            let size = std::str::from_utf8(&rest[..line_end])
                .ok()
                .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
                .ok_or_else(|| "the stream's body is not in chunks".to_owned())?;
            if size == 0 {
                found.ended_cleanly = true;
                break;
            }
            let data_start = line_end + 2;
            if rest.len() < data_start + size + 2 {
                break;
            }
            for event in parser.feed(&rest[data_start..data_start + size]) {
                if event.event == "message" {
                    let id = event.last_event_id.parse::<u64>().map_err(|_| {
                        format!(
                            "a message event has the id {:?}, not a number",
                            event.last_event_id
                        )
                    })?;
                    found.ids.push(id);
                }
            }
            decoded += data_start + size + 2;
        }
        parser.last_event_id().clone_into(&mut found.last_event_id);
        if found.ended_cleanly || found.ids.last() == Some(&last) || Instant::now() > overall {
            return Ok(found);
        }
        match tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buffer)).await {
            Err(_) => return Ok(found),
            Ok(Ok(0) | Err(_)) => {
                found.closed = true;
                return Ok(found);
            }
            Ok(Ok(read)) => raw.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Opens the stalled client's stream and reads its response head, and no more.
async fn open_stalled(server: &Server) -> Result<TcpStream, String> {
    let mut socket = stalled_client(server.addr)
        .await
        .map_err(|error| format!("could not open the stalled client's connection: {error}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            match socket.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return Err("GET /events was closed before its head".to_owned()),
            }
        }
        Ok(())
    };
    within(
        WAIT,
        || format!("GET /events got no answer within {} s", WAIT.as_secs()),
        read_head,
    )
    .await??;
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") || !head.to_ascii_lowercase().contains("chunked") {
        return Err(format!(
            "GET /events answered {:?}, not a stream",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(socket)
}

/// Posts `count` big messages and returns their ids.
async fn post_many(server: &Server, count: usize) -> Result<Vec<u64>, String> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        ids.push(id_of(&post(server, "ann", &big_text(n)).await?)?);
    }
    Ok(ids)
}

/// The slow-reader policy: a stream that falls behind is closed, never silently skipped.
async fn closes_a_reader_that_fell_behind(rung: Rung) -> Result<(), String> {
    const MESSAGES: usize = 1000;
    let server = rung.start(&[("MAX_LAG", "8")]).await?;
    let mut stalled = open_stalled(&server).await?;
    let posted = post_many(&server, MESSAGES).await?;
    let last = posted[MESSAGES - 1];
    let found = read_stalled_stream(&mut stalled, last).await?;

    if let Some(at) = (0..found.ids.len()).find(|&at| found.ids[at] != posted[at]) {
        let skipped = posted.iter().position(|&id| id == found.ids[at]);
        return Err(match skipped {
            Some(to) if to > at => format!(
                "a browser that stopped reading for a moment (a busy tab, a phone on a slow \
                 network) and then read on was sent messages 1 to {} and then message {}: the \
                 {} messages in between were skipped, and nothing told it (the server skips \
                 ahead when a reader falls behind, instead of closing its stream so that it \
                 resumes from the log)",
                at,
                to + 1,
                to - at
            ),
            _ => format!(
                "a browser that stopped reading and then read on was sent the messages out of \
                 order (message id {} where {} was due)",
                found.ids[at], posted[at]
            ),
        });
    }
    if found.ids.len() == MESSAGES {
        // It never fell behind (buffers took everything): nothing to resume.
        return Ok(());
    }
    if !(found.ended_cleanly || found.closed) {
        return Err(format!(
            "a browser that fell behind was sent {} of {MESSAGES} messages and then nothing, \
             though its stream stayed open: it waits for messages that never come",
            found.ids.len()
        ));
    }
    drop(stalled);

    // The browser reconnects with the last id it was given, and catches up from the log.
    let mut resumed = open_stream(&server, &resume_headers(&found.last_event_id)).await?;
    for (n, &expected) in posted.iter().enumerate().skip(found.ids.len()) {
        let said = next_message(&mut resumed, WAIT).await.map_err(|no| {
            format!(
                "a browser whose stream was closed after {} messages reconnected with {} and \
                 did not get message {}: {}",
                found.ids.len(),
                claim(&found.last_event_id),
                n + 1,
                String::from(no)
            )
        })?;
        if said.event_id != expected.to_string() {
            return Err(format!(
                "a browser whose stream was closed after {} messages reconnected with {} and \
                 was sent message id {} where {expected} was due",
                found.ids.len(),
                claim(&found.last_event_id),
                said.event_id
            ));
        }
    }
    Ok(())
}

/// The body deadline: a post whose body stops arriving is answered 408 and let go.
async fn answers_a_stalled_body_with_408(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[("BODY_TIMEOUT_MS", "300")]).await?;
    let mut socket = TcpStream::connect(server.addr)
        .await
        .map_err(|error| format!("could not connect: {error}"))?;
    let request = format!(
        "POST /messages HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"user\":\"a",
        server.addr
    );
    socket
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("could not send the request: {error}"))?;
    let patience = Duration::from_secs(3);
    let stalled = "a post that sent 10 of the 100 bytes it announced and then nothing";
    match read_answer(&mut socket, patience, true).await? {
        None => Err(format!(
            "{stalled} got no answer for {} s (BODY_TIMEOUT_MS asked for 300 ms): the header \
             timeout does not cover the body, so each such client holds a connection and a \
             handler for as long as it likes",
            patience.as_secs()
        )),
        Some(answer) if answer.status != 408 => Err(format!(
            "{stalled} was answered {} {:?}, not 408 (Request Timeout) with a JSON error",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )),
        Some(answer) if !raw_is_json_error(&answer.body) => Err(format!(
            "{stalled} got 408, but with the body {:?}: it must be JSON, {{\"error\": ...}}",
            String::from_utf8_lossy(&answer.body)
        )),
        Some(answer) if !answer.closed => Err(format!(
            "{stalled} got 408, but the connection stayed open: the rest of the body may still \
             be on its way, so the connection cannot carry another request (send Connection: \
             close, and close it)"
        )),
        Some(_) => Ok(()),
    }
}

/// The write-stall limit: a reader that stops reading is let go, one that reads is kept.
async fn lets_go_of_a_stalled_reader(rung: Rung) -> Result<(), String> {
    const MESSAGES: usize = 600;
    let server = rung.start(&[("STALL_TIMEOUT_MS", "500")]).await?;
    let mut stalled = open_stalled(&server).await?;

    // A reader next to it reads everything, reconnecting like a browser if its stream ends.
    let healthy = open_stream(&server, &[]).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let url = server.url("/events");
    let (done, reading) = tokio::sync::oneshot::channel();
    let _reading = AbortOnDrop(tokio::spawn({
        let received = received.clone();
        async move {
            let mut stream = healthy;
            let mut ids = Vec::new();
            let result = loop {
                if ids.len() == MESSAGES {
                    break Ok(ids);
                }
                match next_message(&mut stream, WAIT).await {
                    Ok(said) => {
                        ids.push(said.event_id);
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(NoMessage::Ended) => {
                        let last = stream.last_event_id().to_owned();
                        match EventStream::connect(&url, &resume_headers(&last)).await {
                            Ok(again) => stream = again,
                            Err(error) => break Err(format!("could not reconnect: {error}")),
                        }
                    }
                    Err(other) => break Err(String::from(other)),
                }
            };
            let _ = done.send(result);
        }
    }));

    let posted = post_many(&server, MESSAGES).await?;
    let ids = within(
        WAIT,
        || {
            format!(
                "the client that kept reading got only {} of the {MESSAGES} messages: it was \
                 held up, or cut off, with the one that stopped",
                received.load(Ordering::Relaxed)
            )
        },
        reading,
    )
    .await?
    .map_err(|_| "the reading task stopped without a word".to_owned())?
    .map_err(|error| format!("the client that kept reading lost its stream: {error}"))?;
    if ids != posted.iter().map(u64::to_string).collect::<Vec<_>>() {
        return Err(
            "the client that kept reading did not get every message, in order, while another \
             one stalled"
                .to_owned(),
        );
    }

    // The stalled one stays away for 2 s, four times the limit (this wait is the scenario, not a
    // guess at how long the server takes: nothing the server does is visible to a client that
    // does not read), and then reads: what does it find?
    let away = Duration::from_secs(2);
    tokio::time::sleep(away).await;
    let found = read_stalled_stream(&mut stalled, posted[MESSAGES - 1]).await?;
    if found.closed && !found.ended_cleanly {
        return Ok(());
    }
    Err(format!(
        "a client that stopped reading (a phone that lost its network, a laptop put to sleep) \
         still had its stream {} s later, though STALL_TIMEOUT_MS asked to let it go after \
         500 ms: the server kept its connection and everything queued for it the whole time \
         ({}), and a client that never reads again keeps them until the kernel gives up on the \
         connection, which can take hours",
        away.as_secs(),
        if found.ended_cleanly {
            "the server ended the stream only once it read again"
        } else {
            "the stream was still open when it read again"
        }
    ))
}

/// Keep-alive comments while nobody posts.
async fn keeps_a_quiet_stream_alive(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[("KEEP_ALIVE_MS", "200")]).await?;
    let patience = Duration::from_secs(3);
    match probe::comments_within(server.addr, "/events", 2, patience).await? {
        probe::Comments::Seen => Ok(()),
        probe::Comments::Ended => Err(String::from(NoMessage::Ended)),
        probe::Comments::TooFew(count) => Err(format!(
            "with nobody posting, the stream sent {} in {} s, though KEEP_ALIVE_MS asked for a \
             comment every 200 ms: a proxy in front closes a connection that has been silent for \
             its read timeout (nginx: 60 s), and a reader whose network vanished is never \
             noticed, since nothing is written to it",
            probe::comments_seen(count),
            patience.as_secs()
        )),
    }
}

/// `X-Accel-Buffering: no` on the stream.
async fn tells_proxies_not_to_buffer(rung: Rung) -> Result<(), String> {
    let server = rung.start(&[]).await?;
    let stream = open_stream(&server, &[]).await?;
    let value = stream
        .headers()
        .get("x-accel-buffering")
        .and_then(|v| v.to_str().ok());
    if !value.is_some_and(|value| value.eq_ignore_ascii_case("no")) {
        return Err(
            "the stream's response has no `X-Accel-Buffering: no`: nginx in front buffers what \
             it proxies by default, so messages would reach the page late and in bursts"
                .to_owned(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: &str) -> MessageEvent {
        MessageEvent {
            event: event.to_owned(),
            data: data.to_owned(),
            last_event_id: id.to_owned(),
        }
    }

    #[test]
    fn a_message_is_an_unnamed_event_with_the_stored_message() {
        let data = r#"{"id":7,"user":"ann","text":"hi","time":"2026-11-21T19:30:12.002Z"}"#;
        let said = parse_message(&event("message", data, "7")).expect("a message");
        assert_eq!(said.event_id, "7");
        assert_eq!(said.text(), "hi");
        let step_one = parse_message(&event("message", r#"{"user":"ann","text":"hi"}"#, ""));
        assert_eq!(step_one.expect("a message").event_id, "");
    }

    #[test]
    fn other_events_and_shapes_are_refused() {
        assert!(
            parse_message(&event("forged", "{}", ""))
                .unwrap_err()
                .contains("`forged`")
        );
        for data in [
            "not json",
            r#"{"user":"ann"}"#,
            r#"{"user":"ann","text":5}"#,
            "[]",
        ] {
            assert!(
                parse_message(&event("message", data, "")).is_err(),
                "{data}"
            );
        }
    }

    #[test]
    fn a_browser_sends_last_event_id_only_once_it_has_one() {
        assert!(resume_headers("").is_empty());
        assert_eq!(resume_headers("42"), vec![("last-event-id", "42")]);
        assert!(claim("").contains("no Last-Event-ID"));
    }
}
