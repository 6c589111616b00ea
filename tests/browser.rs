//! The demo pages in a real browser: headless Chromium, driven over the Chrome DevTools Protocol
//! (a JSON protocol over a WebSocket, spoken here with tokio-tungstenite, so no extra client).
//!
//! Run with `cargo test --test browser`. Needs Debian's `chromium` (`apt-get install chromium`),
//! or the `CHROMIUM` variable naming a Chromium binary. Without one the tests skip with a line
//! saying so; under CI (`CI` set) a missing browser is a failure.
//!
//! Screenshots go to `target/screenshots/`; with `UPDATE_BOOK_SCREENSHOTS=1` they also replace
//! the ones in `book/src/screenshots/` that the chapters show.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::TestServer;
use common::services::{CrashableChat, TestNginx, TestRedis};

/// How long a page may take to reach a state the test waits for.
const WAIT: Duration = Duration::from_secs(15);

/// The flags that let Chromium run headless as root on a machine with no network but loopback.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=900,720",
];

// ANCHOR: harness
/// A headless Chromium and one DevTools connection to it.
struct Browser {
    /// Killed when the test ends, pass or fail.
    _process: Child,
    /// A fresh profile per run, deleted at the end.
    _profile: tempfile::TempDir,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// A tab, in a browser context of its own (separate cookies and storage, like a second user).
struct Page {
    target: String,
    session: String,
}

impl Browser {
    /// Starts Chromium, or returns `None` (after saying why) where there is none and this is not CI.
    async fn launch() -> Option<Self> {
        Self::launch_with(&[]).await
    }

    /// [`launch`](Self::launch) with more flags.
    async fn launch_with(extra_flags: &[&str]) -> Option<Self> {
        let Some(binary) = find_chromium() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the browser tests: install Chromium (apt-get install -y chromium)"
            );
            eprintln!(
                "skipping browser tests: no Chromium found; install it (apt-get install chromium) or set CHROMIUM=/path/to/chromium"
            );
            return None;
        };
        let profile = tempfile::tempdir().expect("profile directory");
        let process = Command::new(binary)
            .args(CHROMIUM_FLAGS)
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start Chromium");
        // With port 0, Chromium picks a port and writes it, and the browser's DevTools path, here.
        let endpoint = wait_until(|| {
            let text = std::fs::read_to_string(profile.path().join("DevToolsActivePort")).ok()?;
            let mut lines = text.lines();
            let (port, path) = (lines.next()?, lines.next()?);
            Some(format!("ws://127.0.0.1:{port}{path}"))
        })
        .await
        .expect("Chromium opened its DevTools port");
        let (devtools, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to DevTools");
        Some(Self {
            _process: process,
            _profile: profile,
            devtools,
            next_id: 0,
        })
    }

    /// Sends one DevTools command and returns its result, skipping the events in between.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.devtools
            .send(Message::text(command.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let message = timeout(WAIT, self.devtools.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools connection open")
                .expect("DevTools message");
            let Message::Text(text) = message else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if reply["id"] == id {
                assert!(
                    reply["error"].is_null(),
                    "{method} failed: {}",
                    reply["error"]
                );
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab of a new browser context.
    async fn open(&mut self, url: &str) -> Page {
        let context = self
            .call(None, "Target.createBrowserContext", json!({}))
            .await;
        let target = self
            .call(
                None,
                "Target.createTarget",
                json!({ "url": url, "browserContextId": context["browserContextId"] }),
            )
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        Page {
            target: target["targetId"].as_str().expect("a target id").to_owned(),
            session: attached["sessionId"]
                .as_str()
                .expect("a session id")
                .to_owned(),
        }
    }

    /// Closes the tab, as a person leaving the page does.
    async fn close(&mut self, page: Page) {
        self.call(
            None,
            "Target.closeTarget",
            json!({ "targetId": page.target }),
        )
        .await;
    }

    /// Evaluates JavaScript in the page and returns its value.
    async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (JavaScript) is true in the page; fails after [`WAIT`] with
    /// `explain` (JavaScript too) evaluated, to show what the page showed instead.
    async fn wait_for(&mut self, page: &Page, condition: &str, explain: &str) {
        let deadline = Instant::now() + WAIT;
        // Until the page has loaded, its elements do not exist yet: that counts as "not yet".
        let guarded = format!(
            "(() => {{ try {{ return Boolean({condition}); }} catch {{ return false; }} }})()"
        );
        while self.eval(page, &guarded).await != json!(true) {
            if Instant::now() > deadline {
                let seen = self.eval(page, explain).await;
                panic!("the page never reached `{condition}`; it shows {seen}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the input matched by `selector`, as keystrokes would.
    async fn type_into(&mut self, page: &Page, selector: &str, text: &str) {
        let focus = format!("document.querySelector({}).focus()", json!(selector));
        self.eval(page, &focus).await;
        self.call(
            Some(&page.session),
            "Input.insertText",
            json!({ "text": text }),
        )
        .await;
    }

    /// Saves a PNG of the page to `target/screenshots/<name>.png`, and to the book's
    /// screenshots when `UPDATE_BOOK_SCREENSHOTS` is set.
    async fn screenshot(&mut self, page: &Page, name: &str) {
        let shot = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64 PNG");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut folders = vec![root.join("target/screenshots")];
        if std::env::var_os("UPDATE_BOOK_SCREENSHOTS").is_some() {
            folders.push(root.join("book/src/screenshots"));
        }
        for folder in folders {
            std::fs::create_dir_all(&folder).expect("screenshot folder");
            std::fs::write(folder.join(format!("{name}.png")), &png).expect("write screenshot");
        }
    }
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

/// Polls `check` every 50 ms until it gives a value, for at most [`WAIT`].
async fn wait_until<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(value) = check() {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
// ANCHOR_END: harness

fn start_clock(listener: TcpListener) -> TestServer {
    let config = clock_sse::Config {
        tick_interval: Duration::from_millis(250),
        retry: Duration::from_millis(500),
        ..clock_sse::Config::default()
    };
    TestServer::start_on(listener, |listener, signal| {
        clock_sse::run(listener, config, signal)
    })
}

async fn bind(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr).await.expect("bind")
}

/// clock-sse in a browser: the time and the event id advance; when the server goes away the
/// page says it is reconnecting, and when the server is back the browser resumes by itself with
/// the next tick, never one it already showed (it sent `Last-Event-ID`; the page never closed the
/// source).
#[tokio::test]
async fn clock_page_ticks_reconnects_and_resumes() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let listener = bind("127.0.0.1:0".parse().expect("address")).await;
    let addr = listener.local_addr().expect("address");
    let server = start_clock(listener);

    let page = browser.open(&format!("http://{addr}/")).await;
    let shown = r#"({ state: document.getElementById("state").textContent,
                      id: document.getElementById("last-id").textContent,
                      time: document.getElementById("time").textContent })"#;
    browser
        .wait_for(
            &page,
            r#"document.getElementById("state").textContent === "open"
               && Number(document.getElementById("last-id").textContent) > 0"#,
            shown,
        )
        .await;
    let first = browser.eval(&page, shown).await;
    let first_id = first["id"].as_str().expect("id").to_owned();
    browser
        .wait_for(
            &page,
            &format!(
                r#"Number(document.getElementById("last-id").textContent) > {first_id} + 1
                   && document.getElementById("time").textContent !== {}"#,
                first["time"]
            ),
            shown,
        )
        .await;
    browser.screenshot(&page, "clock-sse").await;

    server.stop().await;
    browser
        .wait_for(
            &page,
            r#"document.getElementById("state").textContent === "reconnecting""#,
            shown,
        )
        .await;
    let before: u64 = browser.eval(&page, shown).await["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a numeric last id");

    let server = start_clock(bind(addr).await);
    browser
        .wait_for(
            &page,
            &format!(
                r#"document.getElementById("state").textContent === "open"
                   && Number(document.getElementById("last-id").textContent) > {before}"#
            ),
            shown,
        )
        .await;
    // The log holds "id <n>  <data>" lines, newest first: every id once, each above the one before.
    let ids = browser
        .eval(
            &page,
            r##"[...document.querySelectorAll("#log li")].map(li => Number(li.textContent.split(" ")[1]))"##,
        )
        .await;
    let ids: Vec<u64> = serde_json::from_value(ids).expect("numbers");
    assert!(
        ids.windows(2)
            .all(|newer_older| newer_older[0] > newer_older[1]),
        "ids in the page's log, newest first, repeat or go back: {ids:?}"
    );
    assert!(ids.contains(&before), "the log lost {before}: {ids:?}");
    assert_eq!(
        browser
            .eval(
                &page,
                r#"document.getElementById("reconnects").textContent"#
            )
            .await,
        "1"
    );
    server.stop().await;
}

fn start_chat(listener: TcpListener) -> TestServer {
    let config = chat_sse::Config {
        retry: Duration::from_millis(500),
        ..chat_sse::Config::default()
    };
    TestServer::start_on(listener, |listener, signal| {
        chat_sse::run(listener, config, signal)
    })
}

/// chat-sse in a browser: two tabs chat with each other, markup in a message is shown as text,
/// a refused post shows the server's error, and after the server is down and back the page
/// catches up (a message posted meanwhile appears once) without a gap or a duplicate.
#[tokio::test]
async fn chat_pages_talk_refuse_and_resume() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let listener = bind("127.0.0.1:0".parse().expect("address")).await;
    let addr = listener.local_addr().expect("address");
    let server = start_chat(listener);

    let ann = browser.open(&format!("http://{addr}/")).await;
    let bob = browser.open(&format!("http://{addr}/")).await;
    let shown = r##"({ state: document.getElementById("state").textContent,
                       online: document.getElementById("online").textContent,
                       error: document.getElementById("post-error").textContent,
                       ids: [...document.querySelectorAll("#messages li[data-id]")].map(li => li.dataset.id),
                       texts: [...document.querySelectorAll("#messages .text")].map(t => t.textContent) })"##;
    for page in [&ann, &bob] {
        browser
            .wait_for(
                page,
                r#"document.getElementById("state").textContent === "open"
                   && document.getElementById("online").textContent === "2""#,
                shown,
            )
            .await;
    }

    let hostile = "hello <b>there</b>\n</script><img src=x onerror=alert(1)>";
    browser.type_into(&ann, "#user", "ann").await;
    browser.type_into(&ann, "#text", hostile).await;
    browser
        .eval(&ann, r#"document.getElementById("post").requestSubmit()"#)
        .await;
    let arrived = format!(
        r##"[...document.querySelectorAll("#messages .text")].some(t => t.textContent === {})"##,
        json!(hostile)
    );
    browser.wait_for(&bob, &arrived, shown).await;
    browser.wait_for(&ann, &arrived, shown).await;
    assert_eq!(
        browser
            .eval(
                &bob,
                r##"document.querySelectorAll("#messages b, #messages img").length"##
            )
            .await,
        0,
        "markup in a message stays text"
    );

    // An empty text is refused by the server, and the page shows the server's sentence.
    browser.type_into(&bob, "#user", "bob").await;
    browser
        .eval(&bob, r#"document.getElementById("post").requestSubmit()"#)
        .await;
    browser
        .wait_for(
            &bob,
            r#"document.getElementById("post-error").textContent.includes("`text` is empty")"#,
            shown,
        )
        .await;
    browser.screenshot(&bob, "chat-sse").await;

    server.stop().await;
    browser
        .wait_for(
            &ann,
            r#"document.getElementById("state").textContent === "reconnecting""#,
            shown,
        )
        .await;
    let server = start_chat(bind(addr).await);
    // Posted on the new server, perhaps before the pages are back: each must show it once.
    let posted = realtime_kit::client::fetch(
        http::Method::POST,
        &format!("http://{addr}/messages"),
        &[("content-type", "application/json")],
        json!({ "user": "carol", "text": "while you were away" }).to_string(),
    )
    .await
    .expect("POST");
    assert_eq!(posted.status, 201, "{}", posted.text());
    for page in [&ann, &bob] {
        browser
            .wait_for(
                page,
                r##"document.getElementById("state").textContent === "open"
                   && [...document.querySelectorAll("#messages .text")].some(t => t.textContent === "while you were away")"##,
                shown,
            )
            .await;
        let seen = browser.eval(page, shown).await;
        assert_eq!(
            seen["texts"],
            json!([hostile, "while you were away"]),
            "no gap, no duplicate: {seen}"
        );
    }
    server.stop().await;
}

fn start_echo(listener: TcpListener) -> TestServer {
    let config = echo_ws::Config::default();
    TestServer::start_on(listener, |listener, signal| {
        echo_ws::run(listener, config, signal)
    })
}

/// echo-ws in a browser: two people in separate browser contexts see each other's messages,
/// markup in a message is shown as text, and the client count follows people joining and leaving.
#[tokio::test]
async fn echo_room_pages_broadcast_and_count_clients() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let listener = bind("127.0.0.1:0".parse().expect("address")).await;
    let addr = listener.local_addr().expect("address");
    let server = start_echo(listener);

    let ann = browser.open(&format!("http://{addr}/")).await;
    let bob = browser.open(&format!("http://{addr}/")).await;
    let shown = r##"({ state: document.getElementById("state").textContent,
                       clients: document.getElementById("clients").textContent,
                       log: [...document.querySelectorAll("#log li")].map(li => li.textContent) })"##;
    for page in [&ann, &bob] {
        browser
            .wait_for(
                page,
                r#"document.getElementById("state").textContent === "open"
                   && document.getElementById("clients").textContent === "2""#,
                shown,
            )
            .await;
    }

    let hostile = "<b>bold?</b><img src=x onerror=alert(1)> & </script>";
    browser.type_into(&ann, "#text", hostile).await;
    browser
        .eval(&ann, r#"document.getElementById("send").requestSubmit()"#)
        .await;
    let arrived = format!(
        r##"[...document.querySelectorAll("#log li")].some(li => li.textContent.endsWith({}))"##,
        json!(hostile)
    );
    for page in [&ann, &bob] {
        browser.wait_for(page, &arrived, shown).await;
        assert_eq!(
            browser
                .eval(
                    page,
                    r##"document.querySelectorAll("#log b, #log img, #log script").length"##
                )
                .await,
            0,
            "markup in a message stays text"
        );
    }
    browser.type_into(&bob, "#text", "hello from bob").await;
    browser
        .eval(&bob, r#"document.getElementById("send").requestSubmit()"#)
        .await;
    let from_bob = r##"[...document.querySelectorAll("#log li")].some(li => li.textContent.endsWith("hello from bob"))"##;
    browser.wait_for(&ann, from_bob, shown).await;
    browser.screenshot(&ann, "echo-ws").await;

    // Bob closes his tab, and Ann's count follows.
    browser.close(bob).await;
    browser
        .wait_for(
            &ann,
            r#"document.getElementById("clients").textContent === "1""#,
            shown,
        )
        .await;
    server.stop().await;
}

fn start_stock_ticker(listener: TcpListener) -> TestServer {
    start_stock_ticker_every(listener, Duration::from_millis(10))
}

/// stock-ticker whose market makes one update every `update_interval`.
fn start_stock_ticker_every(listener: TcpListener, update_interval: Duration) -> TestServer {
    let config = stock_ticker::Config {
        update_interval,
        ..stock_ticker::Config::default()
    };
    TestServer::start_on(listener, |listener, signal| {
        stock_ticker::run(listener, config, signal)
    })
}

/// stock-ticker in a browser: the table fills and its prices move, each chart draws and moves,
/// switching from SSE to WebSocket keeps the same feed going (the sequence keeps rising), and
/// after a server restart the page follows the new market, whose sequence starts again from 0.
#[tokio::test]
async fn stock_ticker_page_updates_table_chart_and_switches_transport() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let listener = bind("127.0.0.1:0".parse().expect("address")).await;
    let addr = listener.local_addr().expect("address");
    let server = start_stock_ticker(listener);

    let page = browser.open(&format!("http://{addr}/")).await;
    let shown = r#"({ state: document.getElementById("state").textContent,
                      received: document.getElementById("received").textContent,
                      seq: document.getElementById("last-seq").textContent,
                      kind: document.getElementById("raw-kind").textContent,
                      prices: [...document.querySelectorAll("td.price")].map(td => td.textContent),
                      chart: document.querySelector("svg.spark polyline").getAttribute("points") })"#;
    // Every row shows a price, and the first chart has a line of several points.
    browser
        .wait_for(
            &page,
            r#"document.getElementById("state").textContent === "open"
               && [...document.querySelectorAll("td.price")].every(td => td.textContent !== "-")
               && document.querySelector("svg.spark polyline").getAttribute("points").split(" ").length > 3"#,
            shown,
        )
        .await;
    let before = browser.eval(&page, shown).await;
    assert!(
        before["kind"].as_str().unwrap_or("").starts_with("SSE"),
        "{before}"
    );
    browser
        .wait_for(
            &page,
            &format!(
                r#"JSON.stringify([...document.querySelectorAll("td.price")].map(td => td.textContent)) !== {}
                   && document.querySelector("svg.spark polyline").getAttribute("points") !== {}"#,
                json!(before["prices"].to_string()),
                before["chart"]
            ),
            shown,
        )
        .await;

    // The switch: the same feed goes on over WebSocket, with sequence numbers still rising.
    let seq_at_switch: u64 = browser.eval(&page, shown).await["seq"]
        .as_str()
        .and_then(|seq| seq.parse().ok())
        .expect("a numeric sequence");
    browser
        .eval(
            &page,
            r#"document.querySelector('input[name="transport"][value="ws"]').click()"#,
        )
        .await;
    browser
        .wait_for(
            &page,
            &format!(
                r#"document.getElementById("state").textContent === "open"
                   && document.getElementById("raw-kind").textContent.startsWith("WebSocket message: quote")
                   && Number(document.getElementById("last-seq").textContent) > {seq_at_switch} + 20"#
            ),
            shown,
        )
        .await;
    assert_eq!(
        browser.eval(&page, "location.hash").await,
        "#ws",
        "the address remembers the transport"
    );
    // For the book: charts with some history behind them.
    browser
        .wait_for(
            &page,
            r#"[...document.querySelectorAll("svg.spark polyline")]
                 .every(line => line.getAttribute("points").split(" ").length > 40)"#,
            shown,
        )
        .await;
    browser.screenshot(&page, "stock-ticker").await;

    // A restart: the new server's market counts from 0 again. The page follows it at once,
    // instead of ignoring every quote until the new count passes the one it last showed.
    let seq_before_restart: u64 = browser.eval(&page, shown).await["seq"]
        .as_str()
        .and_then(|seq| seq.parse().ok())
        .expect("a numeric sequence");
    server.stop().await;
    // A slower market after the restart, so that its count stays below the old one for as long
    // as the page may take to reconnect (its backoff doubles from 1 s).
    let server = start_stock_ticker_every(bind(addr).await, Duration::from_millis(100));
    browser
        .wait_for(
            &page,
            &format!(
                r#"document.getElementById("state").textContent === "open"
                   && Number(document.getElementById("last-seq").textContent) > 0
                   && Number(document.getElementById("last-seq").textContent) < {seq_before_restart}"#
            ),
            shown,
        )
        .await;
    server.stop().await;
}

// ANCHOR: eight_sources
/// Opens eight `EventSource`s on `/events` in the page and counts, per source, the `message`
/// events it received.
const OPEN_EIGHT_SOURCES: &str = r#"
  window.sources = [];
  window.received = [];
  for (let n = 0; n < 8; n++) {
    const source = new EventSource("/events");
    received[n] = 0;
    source.addEventListener("message", () => received[n]++);
    sources.push(source);
  }
  true
"#;

/// What the eight sources show, for a failing assertion.
const EIGHT_SOURCES_STATE: &str =
    "JSON.stringify({ states: sources.map((s) => s.readyState), received })";

/// Eight EventSources in one page: over HTTP/1.1 straight to an instance, six open and the
/// seventh and eighth never do (the browser's six connections per origin, each held by a
/// stream); through nginx over HTTP/2 all eight stream, on one connection.
#[tokio::test]
async fn eight_event_sources_need_http2() {
    let Some(mut browser) = Browser::launch_with(&["--ignore-certificate-errors"]).await else {
        return;
    };
    let listener = bind("127.0.0.1:0".parse().expect("address")).await;
    let addr = listener.local_addr().expect("address");
    let chat = start_chat(listener);
    let Some(nginx) = TestNginx::start(&[addr.to_string()], "127.0.0.1:9").await else {
        return;
    };

    // HTTP/1.1, straight to the instance. `/messages` is a page with no stream of its own.
    let direct = browser.open(&format!("http://{addr}/messages")).await;
    browser
        .wait_for(
            &direct,
            "location.protocol === 'http:' && document.readyState === 'complete'",
            "location.href",
        )
        .await;
    browser.eval(&direct, OPEN_EIGHT_SOURCES).await;
    browser
        .wait_for(
            &direct,
            "sources.filter((s) => s.readyState === EventSource.OPEN).length === 6",
            EIGHT_SOURCES_STATE,
        )
        .await;
    post_chat(&chat.url("/messages"), "to every open stream").await;
    browser
        .wait_for(
            &direct,
            "received.filter((n) => n > 0).length === 6",
            EIGHT_SOURCES_STATE,
        )
        .await;
    // The message reached the six open streams; the other two are still waiting for a
    // connection (a seventh would get it too, in its backlog, had it opened).
    let waiting = browser
        .eval(
            &direct,
            "sources.filter((s) => s.readyState === EventSource.CONNECTING).length",
        )
        .await;
    assert_eq!(
        waiting,
        2,
        "{}",
        browser.eval(&direct, EIGHT_SOURCES_STATE).await
    );
    browser.close(direct).await;

    // HTTP/2 through nginx: the same page, the same eight sources.
    let front = format!("https://127.0.0.1:{}", nginx.chat_https);
    let proxied = browser.open(&format!("{front}/messages")).await;
    browser
        .wait_for(
            &proxied,
            "location.protocol === 'https:' && document.readyState === 'complete'",
            "location.href",
        )
        .await;
    browser.eval(&proxied, OPEN_EIGHT_SOURCES).await;
    browser
        .wait_for(
            &proxied,
            "sources.every((s) => s.readyState === EventSource.OPEN)",
            EIGHT_SOURCES_STATE,
        )
        .await;
    post_chat(&chat.url("/messages"), "to all eight").await;
    browser
        .wait_for(
            &proxied,
            "received.every((n) => n > 0)",
            EIGHT_SOURCES_STATE,
        )
        .await;
    // And they came over HTTP/2, as nginx logs them when they end.
    browser.close(proxied).await;
    let streams = wait_until(|| {
        let log = nginx.access_log();
        let streams: Vec<String> = log
            .lines()
            .filter(|line| line.ends_with("/events"))
            .map(str::to_owned)
            .collect();
        (streams.len() == 8).then_some(streams)
    })
    .await
    .unwrap_or_else(|| panic!("nginx logged: {}", nginx.access_log()));
    assert!(
        streams.iter().all(|line| line.starts_with("HTTP/2.0 ")),
        "{streams:?}"
    );
}
// ANCHOR_END: eight_sources

async fn post_chat(url: &str, text: &str) -> Value {
    let body = json!({ "user": "ann", "text": text }).to_string();
    let response = timeout(
        WAIT,
        realtime_kit::client::fetch(
            http::Method::POST,
            url,
            &[("content-type", "application/json")],
            body,
        ),
    )
    .await
    .expect("POST in time")
    .expect("POST");
    assert_eq!(response.status, 201, "{}", response.text());
    response.json().expect("JSON")
}

/// In Chromium, through nginx over HTTP/2: the instance serving a page's stream is killed, the
/// browser reconnects by itself with `Last-Event-ID`, nginx sends it to another instance, and
/// the page has every message exactly once, in order.
#[tokio::test]
async fn a_killed_instance_s_page_resumes_on_another_without_loss_or_repeat() {
    let Some(mut browser) = Browser::launch_with(&["--ignore-certificate-errors"]).await else {
        return;
    };
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let mut a = CrashableChat::start(redis.url());
    let b = CrashableChat::start(redis.url());
    // B as the backup: the page's stream starts on A, the one the test kills.
    let upstream = [a.addr.to_string(), format!("{} backup", b.addr)];
    let Some(nginx) = TestNginx::start(&upstream, "127.0.0.1:9").await else {
        return;
    };
    let page = browser
        .open(&format!("https://127.0.0.1:{}/messages", nginx.chat_https))
        .await;
    browser
        .wait_for(
            &page,
            "location.protocol === 'https:' && document.readyState === 'complete'",
            "location.href",
        )
        .await;
    browser
        .eval(
            &page,
            r#"
              window.ids = [];
              window.source = new EventSource("/events");
              source.addEventListener("message", (event) => ids.push(JSON.parse(event.data).id));
              new Promise((open) => source.addEventListener("open", () => open(true), { once: true }))
            "#,
        )
        .await;
    let front = format!("http://127.0.0.1:{}/messages", nginx.chat_http);
    let mut posted = Vec::new();
    for n in 0..3 {
        posted.push(post_chat(&front, &format!("before {n}")).await["id"].clone());
    }
    browser
        .wait_for(&page, "ids.length === 3", "JSON.stringify(ids)")
        .await;
    a.crash();
    // Posted to B itself: a POST that nginx had sent on a kept-alive connection to A when A
    // died is answered 502 and not retried (nginx never resends a non-idempotent request), so
    // a page would show that error and let its user decide.
    let on_b = format!("http://{}/messages", b.addr);
    for n in 0..3 {
        posted.push(post_chat(&on_b, &format!("after {n}")).await["id"].clone());
    }
    browser
        .wait_for(&page, "ids.length >= 6", "JSON.stringify(ids)")
        .await;
    posted.push(post_chat(&on_b, "live").await["id"].clone());
    browser
        .wait_for(&page, "ids.length >= 7", "JSON.stringify(ids)")
        .await;
    assert_eq!(browser.eval(&page, "ids").await, json!(posted));
}
