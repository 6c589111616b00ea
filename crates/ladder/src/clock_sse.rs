//! The clock's ladder: its steps, and the why-tests that climb it.
//!
//! Every rung serves the same routes and formats: `GET /` (a page with an `EventSource`),
//! `GET /events` (`tick` events whose JSON data is `{"unix_ms": ..., "time": ...}`) and
//! `GET /stats` (`{"streams": <open streams>, "last_id": <id of the latest tick>}`), so each
//! test runs unchanged from the step that needs it to the finished demo.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use realtime_kit::client::{self, EventStream};
use realtime_kit::parser::MessageEvent;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::probe::{self, WAIT, within};
use crate::{Ladder, Outcome, Rung, Server, Step, WhyTest};

/// The clock's ladder.
pub const LADDER: Ladder = Ladder {
    demo: "clock-sse",
    steps: &[
        Step {
            name: "step1_ticks",
            adds: "the smallest correct server: one ticker for every client, the page, /events, /stats",
            why_tests: &[SERVES_THE_CLOCK],
        },
        Step {
            name: "step2_resume",
            adds: "event ids (each tick's time), resuming from Last-Event-ID, a reconnection delay (retry)",
            why_tests: &[
                RESUMES_AFTER_A_RESTART,
                REFUSES_A_BAD_ID,
                IGNORES_AN_ID_FROM_THE_FUTURE,
            ],
        },
        Step {
            name: "step3_shutdown",
            adds: "graceful shutdown on Ctrl-C and SIGTERM: every stream ends, the process exits",
            why_tests: &[EXITS_ON_A_SIGNAL],
        },
        Step {
            name: "step4_limits",
            adds: "a write-stall limit for clients that stop reading, a header-read timeout",
            why_tests: &[DROPS_A_STALLED_READER, DROPS_A_HALF_SENT_REQUEST],
        },
        Step {
            name: "step5_keep_alive",
            adds: "keep-alive comments on a quiet stream, X-Accel-Buffering: no",
            why_tests: &[KEEPS_A_QUIET_STREAM_ALIVE, TELLS_PROXIES_NOT_TO_BUFFER],
        },
    ],
};

const SERVES_THE_CLOCK: WhyTest = WhyTest {
    name: "serves_the_clock",
    checks: "the page opens an EventSource for `tick` events and never closes it; the stream is \
             text/event-stream, no-cache, with tick events of JSON {unix_ms, time}; two clients \
             get the same ticks (one ticker); /stats counts open streams and forgets closed ones",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(serves_the_clock(rung).await) }),
};

const RESUMES_AFTER_A_RESTART: WhyTest = WhyTest {
    name: "resumes_after_a_restart",
    checks: "ticks carry increasing ids (their time in Unix ms) and a retry:; after a restart, \
             a client that sends its last id as Last-Event-ID gets no tick twice",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(resumes_after_a_restart(rung).await) }),
};

const REFUSES_A_BAD_ID: WhyTest = WhyTest {
    name: "refuses_a_bad_last_event_id",
    checks: "a Last-Event-ID that is not a whole number up to 2^53-1 gets 400 with a JSON \
             {\"error\": ...}; an empty one is a first connection",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(refuses_a_bad_id(rung).await) }),
};

const IGNORES_AN_ID_FROM_THE_FUTURE: WhyTest = WhyTest {
    name: "ignores_an_id_from_the_future",
    checks: "a Last-Event-ID above the latest tick's starts that client at the current tick \
             and moves nothing other clients see",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(ignores_an_id_from_the_future(rung).await) }),
};

const EXITS_ON_A_SIGNAL: WhyTest = WhyTest {
    name: "exits_on_a_signal",
    checks: "with a stream open, SIGINT (Ctrl-C) and SIGTERM each make the process end the \
             stream cleanly and exit with success within 4 s",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(exits_on_a_signal(rung, FAST)),
};

const DROPS_A_STALLED_READER: WhyTest = WhyTest {
    name: "drops_a_stalled_reader",
    checks: "a client that stops reading leaves /stats soon after STALL_TIMEOUT_MS (500 ms \
             here), while a client that reads stays",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(drops_a_stalled_reader(rung).await) }),
};

pub(crate) const DROPS_A_HALF_SENT_REQUEST: WhyTest = WhyTest {
    name: "drops_a_half_sent_request",
    checks: "a connection that sends half a request and waits is closed soon after \
             HEADER_TIMEOUT_MS (300 ms here)",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(drops_a_half_sent_request(rung).await) }),
};

const KEEPS_A_QUIET_STREAM_ALIVE: WhyTest = WhyTest {
    name: "keeps_a_quiet_stream_alive",
    checks: "with no tick due for an hour, the stream carries a comment line every \
             KEEP_ALIVE_MS (200 ms here)",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(keeps_a_quiet_stream_alive(rung).await) }),
};

const TELLS_PROXIES_NOT_TO_BUFFER: WhyTest = WhyTest {
    name: "tells_proxies_not_to_buffer",
    checks: "the stream's response says X-Accel-Buffering: no",
    limit: Duration::from_secs(30),
    run: |rung| Box::pin(async move { Outcome::from(tells_proxies_not_to_buffer(rung).await) }),
};

/// Ten ticks a second: the tests that only need ticks do not wait long for them.
const FAST: &[(&str, &str)] = &[("TICK_MS", "100")];

/// What a tick-less step gets told by every test that needs ids.
const NO_ID: &str = "the stream's events carry no id, so a browser that reconnects cannot say \
                     which tick it saw last (and is sent ticks it has already seen)";

/// One `tick` event, read as a browser's page would.
#[derive(Debug, Clone)]
struct Tick {
    /// The event's `id:`, if it had one.
    id: Option<String>,
    /// `unix_ms` of its data.
    unix_ms: u64,
    /// Its data as sent, to compare two clients' copies.
    data: String,
}

impl Tick {
    /// Its id as a number, or what is wrong with it.
    fn id(&self) -> Result<u64, String> {
        let id = self.id.as_deref().ok_or(NO_ID)?;
        id.parse()
            .map_err(|_| format!("a tick's id is {id:?}, not a whole number"))
    }
}

/// Why no tick came.
enum NoTick {
    /// Nothing arrived in time.
    Silent,
    /// Anything else, said for a user.
    Other(String),
}

impl From<NoTick> for String {
    fn from(no_tick: NoTick) -> Self {
        match no_tick {
            NoTick::Silent => format!("the stream sent no tick for {} s", WAIT.as_secs()),
            NoTick::Other(what) => what,
        }
    }
}

/// Checks an event as the page would use it: a `tick` with data `{"unix_ms", "time"}` that agree.
fn parse_tick(event: &MessageEvent) -> Result<Tick, String> {
    if event.event != "tick" {
        return Err(format!(
            "the stream sent a `{}` event, but the page listens for `tick` events",
            event.event
        ));
    }
    let shape = || {
        format!(
            "a tick's data is {}: it must be {{\"unix_ms\": <Unix milliseconds>, \"time\": \
             \"<RFC 3339, UTC, with milliseconds>\"}} and nothing else, the same on every rung",
            event.data
        )
    };
    let data: Value = serde_json::from_str(&event.data).map_err(|_| shape())?;
    let fields = data.as_object().ok_or_else(shape)?;
    let (Some(unix_ms), Some(time), 2) = (
        fields.get("unix_ms").and_then(Value::as_u64),
        fields.get("time").and_then(Value::as_str),
        fields.len(),
    ) else {
        return Err(shape());
    };
    let parsed = humantime::parse_rfc3339(time)
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map(|since| since.as_millis());
    if !time.ends_with('Z') || parsed != Some(u128::from(unix_ms)) {
        return Err(format!(
            "a tick says \"time\": \"{time}\" but \"unix_ms\": {unix_ms}: the time must be the same \
             instant, in RFC 3339 UTC"
        ));
    }
    Ok(Tick {
        id: (!event.last_event_id.is_empty()).then(|| event.last_event_id.clone()),
        unix_ms,
        data: event.data.clone(),
    })
}

/// Opens `GET /events` with `headers`, and checks it is a stream.
pub(crate) async fn open_stream(
    server: &Server,
    headers: &[(&str, &str)],
) -> Result<EventStream, String> {
    let stream = within(
        WAIT,
        || format!("GET /events got no answer within {} s", WAIT.as_secs()),
        EventStream::connect(&server.url("/events"), headers),
    )
    .await?
    .map_err(|error| format!("GET /events failed: {error}"))?;
    if stream.status() != 200 {
        return Err(format!(
            "GET /events answered {}, not a stream",
            stream.status()
        ));
    }
    Ok(stream)
}

/// The next tick, within `limit`.
async fn next_tick(stream: &mut EventStream, limit: Duration) -> Result<Tick, NoTick> {
    let event = tokio::time::timeout(limit, stream.next_event())
        .await
        .map_err(|_| NoTick::Silent)?
        .map_err(|error| NoTick::Other(format!("the stream broke off: {error}")))?
        .ok_or_else(|| {
            NoTick::Other(
                "the stream ended, though a clock's stream goes on until the server stops"
                    .to_owned(),
            )
        })?;
    parse_tick(&event).map_err(NoTick::Other)
}

/// `GET /stats`: (open streams, id of the latest tick).
async fn stats(server: &Server) -> Result<(u64, u64), String> {
    let response = within(
        WAIT,
        || format!("GET /stats got no answer within {} s", WAIT.as_secs()),
        client::get(&server.url("/stats")),
    )
    .await?
    .map_err(|error| format!("GET /stats failed: {error}"))?;
    let shape = || {
        format!(
            "GET /stats answered {} {:?}: it must be 200 with {{\"streams\": <open streams>, \
             \"last_id\": <id of the latest tick, 0 before the first>}}",
            response.status,
            response.text()
        )
    };
    if response.status != 200 {
        return Err(shape());
    }
    let json = response.json().map_err(|_| shape())?;
    match (json["streams"].as_u64(), json["last_id"].as_u64()) {
        (Some(streams), Some(last_id)) => Ok((streams, last_id)),
        _ => Err(shape()),
    }
}

/// Polls `/stats` until `done(open streams)` holds; `Ok(false)` if it did not within `limit`.
async fn stats_until(
    server: &Server,
    limit: Duration,
    done: impl Fn(u64) -> bool,
) -> Result<bool, String> {
    let deadline = Instant::now() + limit;
    loop {
        if done(stats(server).await?.0) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The rung is a clock at all: what every rung, step 1 on, serves.
async fn serves_the_clock(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;

    let html = probe::html_page(&server.url("/")).await?;
    if !html.contains("new EventSource(") || !html.contains("/events") {
        return Err(
            "the page never opens `new EventSource(\"/events\")`, so a browser never connects"
                .to_owned(),
        );
    }
    if !html.contains("addEventListener(\"tick\"") && !html.contains("addEventListener('tick'") {
        return Err(
            "the page does not listen with addEventListener(\"tick\", ...): ticks are \
                    named events, which onmessage never sees, so the page would stay blank"
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
            "GET /events has no `Cache-Control: no-cache`, so a cache on the way may \
                    keep the stream, or hand a stored copy to the next reader"
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let tick = next_tick(&mut first, WAIT).await?;
        if let Some(previous) = seen.last().map(|tick: &Tick| tick.unix_ms)
            && tick.unix_ms <= previous
        {
            return Err(format!(
                "a tick at {} came after one at {previous}: the clock went backwards",
                tick.unix_ms
            ));
        }
        seen.push(tick);
    }
    let now = unix_ms_now();
    let newest = seen.last().map_or(0, |tick| tick.unix_ms);
    if newest.abs_diff(now) > 60_000 {
        return Err(format!(
            "the newest tick says {newest} ms since 1970, but this machine's clock says {now}"
        ));
    }

    // One ticker: a second client gets the very same ticks, not its own timer's.
    let mut second = open_stream(&server, &[]).await?;
    let mut theirs = Vec::new();
    for _ in 0..3 {
        theirs.push(next_tick(&mut second, WAIT).await?);
    }
    let last_of_theirs = theirs.last().map_or(0, |tick| tick.unix_ms);
    while seen
        .last()
        .is_some_and(|tick| tick.unix_ms < last_of_theirs)
        && seen.len() < 30
    {
        seen.push(next_tick(&mut first, WAIT).await?);
    }
    let shared = theirs
        .iter()
        .filter(|tick| seen.iter().any(|mine| mine.data == tick.data))
        .count();
    if shared < 2 {
        let times = |ticks: &[Tick]| {
            ticks
                .iter()
                .map(|tick| tick.unix_ms.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "two clients connected together were sent ticks of different times (one got {}, \
             the other {}): each client has a timer of its own, so the server does the work \
             once per client and the clients disagree on the time",
            times(&seen),
            times(&theirs)
        ));
    }

    let (open, last_id) = stats(&server).await?;
    if open != 2 {
        return Err(format!(
            "/stats counted {open} open streams while 2 were open"
        ));
    }
    let newest = seen
        .iter()
        .chain(&theirs)
        .map(|tick| tick.unix_ms)
        .max()
        .unwrap_or(0);
    if last_id < newest {
        return Err(format!(
            "/stats says the latest tick is {last_id}, but the stream has already sent {newest}"
        ));
    }

    drop((first, second));
    if !stats_until(&server, Duration::from_secs(3), |open| open == 0).await? {
        return Err(
            "two clients that closed their streams were still counted in /stats 3 s \
                    later: the server keeps something for every client that has gone"
                .to_owned(),
        );
    }
    Ok(())
}

/// Reconnecting with the last id after a restart: no tick twice, ids keep rising.
async fn resumes_after_a_restart(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let mut stream = open_stream(&server, &[]).await?;
    let mut last = 0;
    for _ in 0..3 {
        let tick = next_tick(&mut stream, WAIT).await?;
        let id = tick.id()?;
        if id != tick.unix_ms {
            return Err(format!(
                "a tick's id is {id} but its time is {}: the id must be the tick's time in Unix \
                 milliseconds, so that ids keep rising across a restart without the server \
                 storing anything",
                tick.unix_ms
            ));
        }
        if id <= last {
            return Err(format!(
                "tick ids went from {last} to {id}: they must only increase"
            ));
        }
        last = id;
    }
    if stream.retry().is_none() {
        return Err(
            "the stream sends no `retry:`, so after a drop every browser waits its own \
                    default before it reconnects, not the delay the server chose"
                .to_owned(),
        );
    }
    drop(stream);

    let port = server.port();
    server.stop().await;
    let server = rung
        .start_on(port, FAST)
        .await
        .map_err(|error| format!("after a restart on the same port: {error}"))?;
    let mut resumed = open_stream(&server, &[("last-event-id", &last.to_string())]).await?;
    let mut previous = last;
    for _ in 0..3 {
        let id = next_tick(&mut resumed, WAIT).await?.id()?;
        if id == last {
            return Err(format!(
                "a browser that reconnected after a restart with Last-Event-ID: {last} was sent \
                 tick {last} again"
            ));
        }
        if id < last {
            return Err(format!(
                "a browser that reconnected after a restart with Last-Event-ID: {last} was sent \
                 tick {id}, older than the one it had seen"
            ));
        }
        if id <= previous {
            return Err(format!(
                "after a restart tick ids went from {previous} to {id}: they must only increase"
            ));
        }
        previous = id;
    }
    Ok(())
}

/// A `Last-Event-ID` no server of ours sends is refused, with a reason.
async fn refuses_a_bad_id(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
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
    let mut fresh = open_stream(&server, &[("last-event-id", "")])
        .await
        .map_err(|error| {
            format!(
                "an empty Last-Event-ID (a browser that has seen no id yet) was not a first \
                 connection: {error}"
            )
        })?;
    next_tick(&mut fresh, WAIT).await?;
    Ok(())
}

/// A client's claim from the future chooses only what that client is sent.
async fn ignores_an_id_from_the_future(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let mut stream = open_stream(&server, &[]).await?;
    let latest = next_tick(&mut stream, WAIT).await?.id()?;
    let future = latest + 1_000_000_000;
    let claim = format!(
        "Last-Event-ID: {future} (11 days ahead of the latest tick: what a server clock set \
         back, or a made-up id, gives)"
    );
    let mut dreamer = open_stream(&server, &[("last-event-id", &future.to_string())]).await?;
    let got = match next_tick(&mut dreamer, Duration::from_secs(2)).await {
        Ok(tick) => tick.id()?,
        Err(NoTick::Silent) => {
            return Err(format!(
                "a browser that sent {claim} was sent nothing for 2 s: it must start at the \
                 current tick, like a new client"
            ));
        }
        Err(other) => return Err(other.into()),
    };
    if got >= future {
        return Err(format!(
            "a browser that sent {claim} was sent tick {got}: the server numbered its ticks \
             after the client's claim"
        ));
    }
    let mut newcomer = open_stream(&server, &[]).await?;
    let fresh = next_tick(&mut newcomer, WAIT).await?.id()?;
    if fresh >= future {
        return Err(format!(
            "after one browser sent {claim}, a new browser was sent tick {fresh}: one client's \
             claim moved the ids every client gets"
        ));
    }
    let (_, last_id) = stats(&server).await?;
    if last_id >= future {
        return Err(format!(
            "after one browser sent {claim}, /stats says the latest tick is {last_id}: one \
             client's claim moved what every client sees"
        ));
    }
    Ok(())
}

/// SIGINT and SIGTERM with a stream open: a clean end and a clean exit. Any demo's: the rung is
/// started with `settings`, and the stream is open once its response head has arrived.
#[cfg(unix)]
pub(crate) async fn exits_on_a_signal(rung: Rung, settings: &[(&str, &str)]) -> Outcome {
    use rustix::process::Signal;
    use std::os::unix::process::ExitStatusExt;

    let signals = [
        (Signal::INT, "Ctrl-C (SIGINT)"),
        (
            Signal::TERM,
            "SIGTERM (what kill, systemd and docker stop send)",
        ),
    ];
    let limit = Duration::from_secs(4);
    for (signal, name) in signals {
        let attempt = async {
            let mut server = rung.start(settings).await?;
            let mut stream = open_stream(&server, &[]).await?;
            server.send_signal(signal)?;
            let ended = async {
                loop {
                    match stream.next_event().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return Ok(()),
                        Err(error) => return Err(error.to_string()),
                    }
                }
            };
            let (ended, exit) = tokio::join!(
                tokio::time::timeout(limit, ended),
                server.exit_within(limit)
            );
            match exit {
                None => {
                    return Err(format!(
                        "on {name} the server never exited while a browser was connected ({} s): \
                         hyper waits for every response to finish, and an event stream never \
                         finishes unless it ends itself on shutdown",
                        limit.as_secs()
                    ));
                }
                Some(status) if status.signal().is_some() => {
                    return Err(format!(
                        "on {name} the server was killed by the signal instead of shutting down: \
                         the browser's stream was cut off mid-response, and nothing after the \
                         signal ran (no last log line, nothing saved)"
                    ));
                }
                Some(status) if !status.success() => {
                    return Err(format!(
                        "on {name} the server exited with {status}, not success"
                    ));
                }
                Some(_) => {}
            }
            match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(format!(
                    "on {name} the server exited, but the open stream was cut off ({error}) \
                     instead of ended: the browser sees a network error, not the end of the stream"
                )),
                Err(_) => Err(format!(
                    "on {name} the server exited, but the browser's stream did not end"
                )),
            }
        };
        if let Err(failure) = attempt.await {
            return Outcome::Fail(failure);
        }
    }
    Outcome::Pass
}

/// Signals are Unix's: elsewhere the check says it cannot run.
#[cfg(not(unix))]
pub(crate) async fn exits_on_a_signal(_rung: Rung, _settings: &[(&str, &str)]) -> Outcome {
    Outcome::CannotRun(
        "it sends SIGINT and SIGTERM, which only Unix has; run it on Linux or macOS".to_owned(),
    )
}

/// The write-stall limit: a client that stops reading is let go, one that reads is kept.
async fn drops_a_stalled_reader(rung: Rung) -> Result<(), String> {
    const LIMIT_MS: u64 = 500;
    let limit = LIMIT_MS.to_string();
    // A tick a millisecond fills the stalled client's buffers in about a second.
    let server = rung
        .start(&[("TICK_MS", "1"), ("STALL_TIMEOUT_MS", &limit)])
        .await?;

    let mut reader = open_stream(&server, &[]).await?;
    let received = Arc::new(AtomicU64::new(0));
    let reading = AbortOnDrop(tokio::spawn({
        let received = received.clone();
        async move {
            while let Ok(Some(_)) = reader.next_event().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));

    let _stalled = stalled_client(server.addr)
        .await
        .map_err(|error| format!("could not open the stalled client's connection: {error}"))?;
    if !stats_until(&server, Duration::from_secs(3), |open| open == 2).await? {
        return Err(format!(
            "a client that asked for /events and then read nothing never showed in /stats \
             (it says {} open streams; 2 were open)",
            stats(&server).await?.0
        ));
    }

    let patience = Duration::from_millis(LIMIT_MS) + Duration::from_secs(5);
    if !stats_until(&server, patience, |open| open < 2).await? {
        return Err(format!(
            "a client that stopped reading (a phone that lost its network, a laptop put to \
             sleep) was still counted as an open stream {} s later, long past the {LIMIT_MS} ms \
             write-stall limit STALL_TIMEOUT_MS asked for: its connection, its buffers and its \
             stream stay until the kernel gives up on the connection, which can take hours",
            patience.as_secs()
        ));
    }

    // The reader must go on, for twice the limit after the stalled client was let go.
    let at_cut = received.load(Ordering::Relaxed);
    let cut_too = stats_until(&server, Duration::from_millis(2 * LIMIT_MS), |open| {
        open != 1
    })
    .await?;
    if cut_too || reading.0.is_finished() || received.load(Ordering::Relaxed) == at_cut {
        return Err(
            "the client that kept reading was cut off too: the write-stall limit must \
                    only let go of a client that stops reading"
                .to_owned(),
        );
    }
    Ok(())
}

/// A client that sends `GET /events` with a tiny receive window and never reads a byte.
pub(crate) async fn stalled_client(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = probe::narrow_connection(addr, 4096).await?;
    let request =
        format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Aborts a task when the test lets go of it, whatever path it returns by.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The header-read timeout: half a request does not hold a connection.
pub(crate) async fn drops_a_half_sent_request(rung: Rung) -> Result<(), String> {
    let server = rung
        .start(&[("TICK_MS", "100"), ("HEADER_TIMEOUT_MS", "300")])
        .await?;
    let mut socket = TcpStream::connect(server.addr)
        .await
        .map_err(|error| format!("could not connect: {error}"))?;
    let half = format!("GET /events HTTP/1.1\r\nHost: {}\r\n", server.addr);
    socket
        .write_all(half.as_bytes())
        .await
        .map_err(|error| format!("could not send half a request: {error}"))?;
    let patience = Duration::from_secs(3);
    let closed = tokio::time::timeout(patience, async {
        let mut buffer = [0u8; 1024];
        // A `408` before the close is fine; the close is what counts.
        while let Ok(read @ 1..) = socket.read(&mut buffer).await {
            let _ = read;
        }
    })
    .await;
    if closed.is_err() {
        return Err(format!(
            "a client that sent half a request and then nothing still held its connection {} s \
             later (HEADER_TIMEOUT_MS asked for 300 ms): a few thousand such clients \
             (\"slowloris\") hold every connection the server can take",
            patience.as_secs()
        ));
    }
    Ok(())
}

/// Keep-alive comments while no tick is due.
async fn keeps_a_quiet_stream_alive(rung: Rung) -> Result<(), String> {
    let server = rung
        .start(&[("TICK_MS", "3600000"), ("KEEP_ALIVE_MS", "200")])
        .await?;
    let patience = Duration::from_secs(3);
    match probe::comments_within(server.addr, "/events", 2, patience).await? {
        probe::Comments::Seen => Ok(()),
        probe::Comments::Ended => Err(
            "the stream ended, though a clock's stream goes on until the server \
                          stops"
                .to_owned(),
        ),
        probe::Comments::TooFew(count) => Err(format!(
            "with no tick due for an hour (TICK_MS=3600000), the stream sent {} in {} s, though \
             KEEP_ALIVE_MS asked for a comment every 200 ms: a proxy in front closes a \
             connection that has been silent for its read timeout (nginx: 60 s), and a client \
             that vanished without closing its connection is never noticed",
            probe::comments_seen(count),
            patience.as_secs()
        )),
    }
}

/// `X-Accel-Buffering: no` on the stream.
async fn tells_proxies_not_to_buffer(rung: Rung) -> Result<(), String> {
    let server = rung.start(FAST).await?;
    let stream = open_stream(&server, &[]).await?;
    let value = stream
        .headers()
        .get("x-accel-buffering")
        .and_then(|v| v.to_str().ok());
    if !value.is_some_and(|value| value.eq_ignore_ascii_case("no")) {
        return Err(
            "the stream's response has no `X-Accel-Buffering: no`: nginx in front \
                    buffers what it proxies by default, so the page would get its ticks late \
                    and in bursts"
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
    fn a_tick_is_named_tick_with_unix_ms_and_the_same_time() {
        let data = r#"{"unix_ms":1795289412002,"time":"2026-11-21T19:30:12.002Z"}"#;
        let tick = parse_tick(&event("tick", data, "1795289412002")).expect("a tick");
        assert_eq!(tick.unix_ms, 1_795_289_412_002);
        assert_eq!(tick.id(), Ok(1_795_289_412_002));

        let without_id = parse_tick(&event("tick", data, "")).expect("a tick");
        assert_eq!(without_id.id(), Err(NO_ID.to_owned()));
        assert!(
            parse_tick(&event("message", data, ""))
                .unwrap_err()
                .contains("`message`")
        );
    }

    #[test]
    fn other_shapes_of_data_are_refused() {
        for data in [
            "not json",
            r#"{"unix_ms":1795289412002}"#,
            r#"{"seq":1,"unix_ms":1795289412002,"time":"2026-11-21T19:30:12.002Z"}"#,
            r#"{"unix_ms":"1795289412002","time":"2026-11-21T19:30:12.002Z"}"#,
        ] {
            let error = parse_tick(&event("tick", data, "")).unwrap_err();
            assert!(error.contains("nothing else"), "{data}: {error}");
        }
        let late = r#"{"unix_ms":1795289412002,"time":"2026-11-21T19:30:13.002Z"}"#;
        assert!(
            parse_tick(&event("tick", late, ""))
                .unwrap_err()
                .contains("same instant")
        );
        let local = r#"{"unix_ms":1795289412002,"time":"2026-11-21T20:30:12.002+01:00"}"#;
        assert!(parse_tick(&event("tick", local, "")).is_err());
    }
}
