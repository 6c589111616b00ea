//! The echo-ws room as several instances on one Redis, over PUB/SUB: each test starts its own
//! `redis-server` and two instances on `127.0.0.1:0`, and talks to them with tokio-tungstenite.
//!
//! Run with `cargo test --test echo_redis` (needs `redis-server`; without it the tests skip,
//! except under CI). Every wait is for an event, bounded by a timeout.

use std::time::Duration;

use echo_ws::Config;
use futures_util::{SinkExt, StreamExt};
use realtime_kit::backplane::redis;
use realtime_kit::backplane::{Backplane, RedisBackplane};
use realtime_kit::client;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod common;
use common::services::TestRedis;
use common::{TestServer, within};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An instance on the test's Redis, once it is subscribed to the room's channel.
async fn start(redis: &TestRedis) -> TestServer {
    let config = Config {
        backplane: Backplane::Redis(RedisBackplane::open(&redis.url()).expect("a valid URL")),
        ..Config::default()
    };
    let server = TestServer::start(|listener, signal| echo_ws::run(listener, config, signal)).await;
    wait_until_subscribed(&server, true).await;
    server
}

/// Polls `/stats` until the instance's subscription is up (`true`) or down (`false`).
async fn wait_until_subscribed(server: &TestServer, subscribed: bool) {
    within(async {
        loop {
            // Connection refused while the instance is still numbering itself: ask again.
            if let Ok(response) = client::get(&server.url("/stats")).await
                && response.json().expect("stats are JSON")["subscribed"] == subscribed
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Joins the room on `server`: the client and its number.
async fn join(server: &TestServer) -> (Client, u64) {
    let url = format!("ws://{}/ws", server.addr);
    let (mut socket, _) = within(tokio_tungstenite::connect_async(url))
        .await
        .expect("connect");
    let welcome = next_json(&mut socket).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let client = welcome["client"].as_u64().expect("a number");
    (socket, client)
}

async fn next_json(socket: &mut Client) -> Value {
    loop {
        match within(socket.next()).await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("room events are JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a room event, got {other:?}"),
        }
    }
}

/// The next chat message (`type: message`), skipping joins, leaves and presence notices:
/// `(from, text)`.
async fn next_message(socket: &mut Client) -> (u64, String) {
    loop {
        let event = next_json(socket).await;
        if event["type"] == "message" {
            let from = event["from"].as_u64().expect("from is a number");
            let text = event["text"].as_str().expect("text is a string").to_owned();
            return (from, text);
        }
    }
}

async fn say(socket: &mut Client, text: &str) {
    within(socket.send(Message::text(text)))
        .await
        .expect("send");
}

/// Reads `texts.len()` messages and checks they are exactly these, from `from`, in order.
async fn expect_messages(socket: &mut Client, from: u64, texts: &[String]) {
    for text in texts {
        assert_eq!(next_message(socket).await, (from, text.clone()));
    }
}

// ANCHOR: across_instances
/// A message sent on instance A reaches every client on A and on B exactly once, one sender's
/// messages in the order sent, and client numbers are unique across the two instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_on_one_instance_reaches_both_exactly_once_in_order() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (start(&redis).await, start(&redis).await);
    let (mut sender, from) = join(&a).await;
    let (mut beside, beside_number) = join(&a).await;
    let (mut across, across_number) = join(&b).await;
    assert_ne!(
        from, across_number,
        "client numbers are unique across instances"
    );
    assert_ne!(from, beside_number);

    let texts: Vec<String> = (0..50).map(|n| format!("m{n}")).collect();
    for text in &texts {
        say(&mut sender, text).await;
    }
    // A last one, so that a duplicate of any of the 50 would be read before it.
    say(&mut sender, "end").await;
    let all = [texts, vec!["end".to_owned()]].concat();
    for socket in [&mut sender, &mut beside, &mut across] {
        expect_messages(socket, from, &all).await;
    }

    // And the other way: B to A.
    say(&mut across, "from B").await;
    for socket in [&mut sender, &mut beside, &mut across] {
        assert_eq!(
            next_message(socket).await,
            (across_number, "from B".to_owned())
        );
    }
}
// ANCHOR_END: across_instances

// ANCHOR: at_most_once
/// At most once, the documented property: while Redis is down, an instance's room goes on
/// locally, and what its clients say never reaches the other instance, not even later; after
/// Redis is back, both resubscribe and the room is one again, with nothing delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_messages_stay_local_and_are_lost_to_the_others() {
    let Some(mut redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (start(&redis).await, start(&redis).await);
    let (mut sender, from) = join(&a).await;
    let (mut beside, _) = join(&a).await;
    let (mut across, _) = join(&b).await;

    redis.stop(false).await;
    wait_until_subscribed(&a, false).await;
    wait_until_subscribed(&b, false).await;
    let during: Vec<String> = (0..10).map(|n| format!("during {n}")).collect();
    for text in &during {
        say(&mut sender, text).await;
    }
    // Instance A's own clients still have them, straight from its ring.
    expect_messages(&mut sender, from, &during).await;
    expect_messages(&mut beside, from, &during).await;

    redis.start_again().await;
    wait_until_subscribed(&a, true).await;
    wait_until_subscribed(&b, true).await;
    say(&mut sender, "after").await;
    // B's client gets "after" first: the ten sent meanwhile are lost to it for good. A's clients
    // get it once, not the ten again.
    let after = ["after".to_owned()];
    for socket in [&mut sender, &mut beside, &mut across] {
        expect_messages(socket, from, &after).await;
    }
}
// ANCHOR_END: at_most_once

/// A subscription whose connection Redis kills (`CLIENT KILL TYPE pubsub`, as Redis does to a
/// subscriber over its output buffer limit) comes back with the kit's backoff, and the room
/// spans both instances again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_comes_back_and_the_room_carries_on() {
    let Some(redis) = TestRedis::start().await else {
        return;
    };
    let (a, b) = (start(&redis).await, start(&redis).await);
    let (mut sender, from) = join(&a).await;
    let (mut across, _) = join(&b).await;

    let mut commands = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut commands)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 2, "one subscription per instance");
    // Subscribed again, as Redis sees it (two new connections on the channel) and as each
    // instance sees it.
    within(async {
        loop {
            let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("echo:room")
                .query_async(&mut commands)
                .await
                .expect("PUBSUB NUMSUB");
            if subscribers == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    wait_until_subscribed(&a, true).await;
    wait_until_subscribed(&b, true).await;

    say(&mut sender, "still one room").await;
    let text = ["still one room".to_owned()];
    expect_messages(&mut sender, from, &text).await;
    expect_messages(&mut across, from, &text).await;
}
