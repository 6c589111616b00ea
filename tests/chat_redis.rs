//! chat-sse as several instances on one Redis: each test starts its own `redis-server` (on a
//! Unix socket in a temporary directory) and its chat instances on `127.0.0.1:0`, and talks to
//! them with the kit's HTTP client and SSE parser.
//!
//! Run with `cargo test --test chat_redis` (needs `redis-server`: `apt-get install
//! redis-server`; without it the tests skip, except under CI). Every wait is bounded.

use std::collections::HashSet;
use std::time::Duration;

use chat_sse::Config;
use futures_util::StreamExt;
use http::Method;
use realtime_kit::backplane::redis;
use realtime_kit::backplane::{Backplane, RedisBackplane};
use realtime_kit::client::{self, EventStream, Fetched};
use realtime_kit::parser::MessageEvent;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

mod common;
use common::services::TestRedis;
use common::{TestServer, within};

/// One chat instance on the test's Redis.
struct Instance(TestServer);

impl Instance {
    async fn start(redis: &TestRedis) -> Self {
        Self::start_with(redis, Config::default()).await
    }

    async fn start_with(redis: &TestRedis, config: Config) -> Self {
        let backplane = RedisBackplane::open(&redis.url()).expect("a valid URL");
        let config = Config {
            backplane: Backplane::Redis(backplane),
            ..config
        };
        Self(TestServer::start(|listener, signal| chat_sse::run(listener, config, signal)).await)
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    async fn events(&self, headers: &[(&str, &str)]) -> EventStream {
        let stream = within(EventStream::connect(&self.url("/events"), headers))
            .await
            .expect("connect to /events");
        assert_eq!(stream.status(), 200);
        stream
    }

    /// A stream that has had its first `presence` event, which comes after the catch-up.
    async fn live_events(&self) -> EventStream {
        let mut stream = self.events(&[]).await;
        let first = next_event(&mut stream).await;
        assert_eq!(first.event, "presence", "{first:?}");
        stream
    }

    async fn post_raw(&self, user: &str, text: &str) -> Fetched {
        let body = json!({ "user": user, "text": text }).to_string();
        within(client::fetch(
            Method::POST,
            &self.url("/messages"),
            &[("content-type", "application/json")],
            body,
        ))
        .await
        .expect("POST /messages")
    }

    async fn post(&self, user: &str, text: &str) -> Value {
        let response = self.post_raw(user, text).await;
        assert_eq!(response.status, 201, "{}", response.text());
        response.json().expect("the stored message is JSON")
    }
}

async fn next_event(stream: &mut EventStream) -> MessageEvent {
    within(stream.next_event())
        .await
        .expect("stream error")
        .expect("the stream ended")
}

/// The next event that is not a `presence` update.
async fn next_chat_event(stream: &mut EventStream) -> MessageEvent {
    loop {
        let event = next_event(stream).await;
        if event.event != "presence" {
            return event;
        }
    }
}

async fn next_message(stream: &mut EventStream) -> Value {
    let event = next_chat_event(stream).await;
    assert_eq!(event.event, "message", "{event:?}");
    let message: Value = serde_json::from_str(&event.data).expect("data is JSON");
    assert_eq!(event.last_event_id, message["id"].to_string());
    message
}

async fn wait_for_presence(stream: &mut EventStream, online: u64) {
    loop {
        let event = next_event(stream).await;
        if event.event == "presence" {
            let data: Value = serde_json::from_str(&event.data).expect("presence is JSON");
            if data["online"] == online {
                return;
            }
        }
    }
}

fn id(message: &Value) -> u64 {
    message["id"].as_u64().expect("ids are numbers")
}

/// Reads `count` messages like a browser: when the server ends the stream, reconnect with
/// `Last-Event-ID`.
async fn read_like_a_browser(url: String, mut stream: EventStream, count: usize) -> Vec<Value> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match within(stream.next_event()).await.expect("stream error") {
            Some(event) if event.event == "message" => {
                messages.push(serde_json::from_str(&event.data).expect("data is JSON"));
            }
            Some(event) => assert_eq!(event.event, "presence", "{event:?}"),
            None => {
                let last = stream.last_event_id().to_owned();
                stream = within(EventStream::connect(&url, &[("last-event-id", &last)]))
                    .await
                    .expect("reconnect");
            }
        }
    }
    messages
}

/// A message posted to instance A reaches the streams on B and C with the same id and JSON,
/// and messages keep one order and dense ids whichever instance took them.
#[tokio::test]
async fn a_post_on_one_instance_reaches_the_others_in_one_order() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (a, b, c) = (
        Instance::start(&redis).await,
        Instance::start(&redis).await,
        Instance::start(&redis).await,
    );
    let mut on_b = b.live_events().await;
    let mut on_c = c.live_events().await;
    let mut posted = Vec::new();
    for (n, instance) in [&a, &b, &c, &a, &c, &b].into_iter().enumerate() {
        posted.push(instance.post("ann", &format!("message {n}")).await);
    }
    let ids: Vec<u64> = posted.iter().map(id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "dense ids across instances: {ids:?}"
    );
    for expected in &posted {
        assert_eq!(&next_message(&mut on_b).await, expected);
        assert_eq!(&next_message(&mut on_c).await, expected);
    }
}

/// 20 posters sending 50 messages each, spread over three instances: a stream on each
/// instance receives all 1,000, in the same order, ids increasing, no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_posters_over_three_instances_reach_every_stream_complete() {
    const POSTERS: usize = 20;
    const EACH: usize = 50;
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let instances = [
        Instance::start(&redis).await,
        Instance::start(&redis).await,
        Instance::start(&redis).await,
    ];
    let mut readers = Vec::new();
    for instance in &instances {
        let stream = instance.live_events().await;
        readers.push(tokio::spawn(read_like_a_browser(
            instance.url("/events"),
            stream,
            POSTERS * EACH,
        )));
    }
    let posters: Vec<_> = (0..POSTERS)
        .map(|poster| {
            let url = instances[poster % instances.len()].url("/messages");
            tokio::spawn(async move {
                for n in 0..EACH {
                    let body = json!({ "user": format!("poster{poster}"), "text": format!("{poster}/{n}") });
                    let response = client::fetch(
                        Method::POST,
                        &url,
                        &[("content-type", "application/json")],
                        body.to_string(),
                    )
                    .await
                    .expect("POST");
                    assert_eq!(response.status, 201, "{}", response.text());
                }
            })
        })
        .collect();
    for poster in posters {
        timeout(Duration::from_secs(60), poster)
            .await
            .expect("posting in time")
            .expect("poster");
    }
    let expected: HashSet<String> = (0..POSTERS)
        .flat_map(|poster| (0..EACH).map(move |n| format!("{poster}/{n}")))
        .collect();
    let mut orders = Vec::new();
    for reader in readers {
        let messages = timeout(Duration::from_secs(60), reader)
            .await
            .expect("reading in time")
            .expect("reader");
        let ids: Vec<u64> = messages.iter().map(id).collect();
        assert!(ids.windows(2).all(|pair| pair[1] > pair[0]), "in order");
        let texts: HashSet<String> = messages
            .iter()
            .map(|message| message["text"].as_str().expect("text").to_owned())
            .collect();
        assert_eq!(texts.len(), POSTERS * EACH, "no duplicates");
        assert_eq!(texts, expected, "every message");
        orders.push(ids);
    }
    assert!(
        orders.windows(2).all(|pair| pair[0] == pair[1]),
        "one order"
    );
}

/// A client that was reading from A and reconnects to B with `Last-Event-ID` gets exactly what
/// it missed, then live messages: nothing lost, nothing twice.
#[tokio::test]
async fn reconnecting_from_one_instance_to_another_gets_exactly_what_was_missed() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut on_a = a.live_events().await;
    for n in 0..3 {
        a.post("ann", &format!("seen {n}")).await;
        next_message(&mut on_a).await;
    }
    let last_seen = on_a.last_event_id().to_owned();
    drop(on_a);
    let mut missed = Vec::new();
    for n in 0..5 {
        missed.push(a.post("bob", &format!("missed {n}")).await);
    }
    let mut on_b = b.events(&[("last-event-id", &last_seen)]).await;
    for expected in &missed {
        assert_eq!(&next_message(&mut on_b).await, expected);
    }
    let live = a.post("ann", "live").await;
    assert_eq!(next_message(&mut on_b).await, live);
}

/// A client whose `Last-Event-ID` is ahead of what an instance has read (it came from a faster
/// one) gets nothing twice: the instance skips what the client already has, then streams on.
#[tokio::test]
async fn a_client_ahead_of_the_instance_gets_no_duplicate() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let a = Instance::start(&redis).await;
    let mut on_a = a.live_events().await;
    let newest = a.post("ann", "seen everywhere").await;
    assert_eq!(next_message(&mut on_a).await, newest);
    // Ids are dense: the client claims the next two, as if a faster instance had sent them.
    let ahead = (id(&newest) + 2).to_string();
    let mut ahead_of_a = a.events(&[("last-event-id", &ahead)]).await;
    let mut posted = Vec::new();
    for n in 0..3 {
        posted.push(a.post("bob", &format!("m {n}")).await);
    }
    assert_eq!(id(&posted[1]).to_string(), ahead);
    assert_eq!(next_message(&mut ahead_of_a).await, posted[2]);
}

/// Redis stopped for 5 s: every POST meanwhile is a `503` with `Retry-After` and a JSON error,
/// open streams stay open, and after Redis is back every message acknowledged with `201`
/// (before and after) arrives, in order.
#[tokio::test]
async fn redis_stopped_for_five_seconds_loses_nothing_acknowledged() {
    let Some(mut redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut on_b = b.live_events().await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        acknowledged.push(a.post("ann", &format!("before {n}")).await);
    }
    redis.stop(true).await;

    let down_since = Instant::now();
    let mut refused = 0;
    while down_since.elapsed() < Duration::from_secs(5) {
        let response = a.post_raw("ann", "while down").await;
        assert_eq!(response.status, 503, "{}", response.text());
        assert_eq!(response.headers["retry-after"], "1");
        let error = response.json().expect("a JSON error");
        assert!(error["error"].is_string(), "{error}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(200)).await; // a client retrying, not a wait
    }
    assert!(refused > 0);
    redis.start_again().await;

    // The instance's connection comes back within its backoff; until then, 503s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let response = a.post_raw("ann", "after").await;
        if response.status == 201 {
            break response.json().expect("JSON");
        }
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(
            Instant::now() < deadline,
            "Redis came back, the chat did not"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    acknowledged.push(after);
    // The same stream: it stayed open through the outage.
    let mut received = Vec::new();
    while received.len() < acknowledged.len() {
        received.push(
            timeout(Duration::from_secs(20), next_message(&mut on_b))
                .await
                .expect("delivered after the outage"),
        );
    }
    assert_eq!(received, acknowledged);
}

/// Redis restarted empty: streams are told of the gap (an unknown number lost), and new ids
/// are above every id seen before, so resuming clients do not take new messages for old ones.
#[tokio::test]
async fn redis_restarted_empty_reports_the_gap_and_ids_keep_growing() {
    let Some(mut redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut on_b = b.live_events().await;
    let old = a.post("ann", "before the restart").await;
    assert_eq!(next_message(&mut on_b).await, old);
    redis.stop(false).await;
    redis.start_again().await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let response = a.post_raw("ann", "after the restart").await;
        if response.status == 201 {
            break response.json().expect("JSON");
        }
        assert!(Instant::now() < deadline, "the chat did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(id(&new) > id(&old), "{new} after {old}");
    let gap = timeout(Duration::from_secs(20), next_chat_event(&mut on_b))
        .await
        .expect("the gap in time");
    assert_eq!(gap.event, "gap", "{gap:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&gap.data).expect("JSON"),
        json!({ "lost": null })
    );
    assert_eq!(next_message(&mut on_b).await, new);

    // A client that resumes from the old id on the other instance gets the new message.
    let mut resumed = a.events(&[("last-event-id", &id(&old).to_string())]).await;
    let first = next_chat_event(&mut resumed).await;
    let first = if first.event == "gap" {
        next_chat_event(&mut resumed).await
    } else {
        first
    };
    assert_eq!(first.last_event_id, id(&new).to_string());
}

/// Presence adds up across instances, and an instance that crashes stops counting once its
/// share expires.
#[tokio::test]
async fn presence_adds_up_across_instances_and_a_crashed_share_expires() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (Instance::start(&redis).await, Instance::start(&redis).await);
    let mut on_a = a.events(&[]).await;
    wait_for_presence(&mut on_a, 1).await;
    let mut on_b = b.events(&[]).await;
    wait_for_presence(&mut on_b, 2).await;
    wait_for_presence(&mut on_a, 2).await;
    let _also_on_b = b.events(&[]).await;
    wait_for_presence(&mut on_a, 3).await;
    // B dies without a word: its share (2) is gone after the expiry.
    b.0.abort();
    wait_for_presence(&mut on_a, 1).await;
}

/// With Redis too, a shutdown ends every open stream and `run` returns: the tail's blocking
/// read and the presence beat stop with the server instead of holding it up.
#[tokio::test]
async fn shutdown_with_redis_ends_streams_and_returns() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let a = Instance::start(&redis).await;
    let mut stream = a.live_events().await;
    let Instance(server) = a;
    server.stop().await;
    // Whatever comes before the end is a presence update; then the stream ends.
    while let Ok(Some(event)) = within(stream.next_event()).await {
        assert_eq!(event.event, "presence", "{event:?}");
    }
}

// ANCHOR: pubsub_loses
/// Why the chat's log is a Stream and not PUB/SUB: a subscriber that is disconnected during a
/// burst misses what was published meanwhile, and nothing can give it back; a Stream reader
/// that reconnects reads on from its cursor and misses nothing.
#[tokio::test]
async fn pubsub_loses_what_a_disconnected_subscriber_missed_and_a_stream_does_not() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let client = redis.client();
    let mut commands = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");

    // PUB/SUB: 10 received, disconnected for 10, back for the last 10.
    let mut received = Vec::new();
    let mut subscriber = client.get_async_pubsub().await.expect("subscribe");
    subscriber.subscribe("burst").await.expect("SUBSCRIBE");
    let mut burst = 0..30;
    for n in burst.by_ref().take(10) {
        publish(&mut commands, n).await;
    }
    {
        let mut messages = subscriber.on_message();
        while received.len() < 10 {
            let message = within(messages.next()).await.expect("a message");
            received.push(message.get_payload::<u32>().expect("a number"));
        }
    }
    drop(subscriber); // the connection drops: a restart, a network blip
    for n in burst.by_ref().take(10) {
        publish(&mut commands, n).await;
    }
    let mut subscriber = client.get_async_pubsub().await.expect("subscribe again");
    subscriber.subscribe("burst").await.expect("SUBSCRIBE");
    for n in burst {
        publish(&mut commands, n).await;
    }
    let mut messages = subscriber.on_message();
    while received.len() < 20 {
        let message = within(messages.next()).await.expect("a message");
        received.push(message.get_payload::<u32>().expect("a number"));
    }
    assert_eq!(
        received,
        [(0..10).collect::<Vec<_>>(), (20..30).collect()].concat()
    );

    // A Stream: the same burst and the same disconnect, read from a cursor.
    for n in 0..30u32 {
        let _: String = redis::cmd("XADD")
            .arg("log")
            .arg(format!("{}-0", n + 1))
            .arg("n")
            .arg(n)
            .query_async(&mut commands)
            .await
            .expect("XADD");
    }
    let mut cursor = "0-0".to_owned();
    let mut read = Vec::new();
    for count in [10, 100] {
        // A new connection each time: the disconnect.
        let mut reader = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let reply: redis::streams::StreamReadReply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg("log")
            .arg(&cursor)
            .query_async(&mut reader)
            .await
            .expect("XREAD");
        for entry in reply.keys.into_iter().flat_map(|key| key.ids) {
            read.push(entry.get::<u32>("n").expect("n"));
            cursor = entry.id;
        }
    }
    assert_eq!(read, (0..30).collect::<Vec<_>>());
}

async fn publish(commands: &mut redis::aio::MultiplexedConnection, n: u32) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg("burst")
        .arg(n)
        .query_async(commands)
        .await
        .expect("PUBLISH");
}
// ANCHOR_END: pubsub_loses
