//! `wsx::pubsub`: fan-out through a `Hub` to server connections over in-memory transports, with
//! wsx clients reading: every subscriber gets every message once and in order, topics are kept
//! apart, a publisher can be left out, and a subscriber that does not read neither slows the
//! others nor pins unbounded memory.

mod common;

use std::time::Duration;

use common::guard;
use tokio::io::DuplexStream;
use wsx::pubsub::{Hub, HubConfig, Overflow, Subscriber, QUEUE_ENTRY_COST};
use wsx::{Chunk, CloseCode, Config, Error, Message, Role, SendError, WebSocket};

/// A connected pair over an in-memory pipe with `buffer` bytes each way.
fn pair(buffer: usize) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (a, b) = tokio::io::duplex(buffer);
    (
        WebSocket::from_raw(a, Role::Server, Config::default()),
        WebSocket::from_raw(b, Role::Client, Config::default()),
    )
}

/// Runs a server connection subscribed to `topics` that publishes every data message it
/// receives to `publish_to`, leaving itself out when `except_self`. Returns its client.
fn subscribed(
    hub: &Hub,
    topics: &[&str],
    publish_to: &'static str,
    except_self: bool,
) -> WebSocket<DuplexStream> {
    let (mut server, client) = pair(64 << 10);
    let mut subscriber = hub.subscriber();
    for topic in topics {
        assert!(subscriber.subscribe(topic));
    }
    server.attach(&subscriber).unwrap();
    let hub = hub.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = server.recv().await {
            if msg.is_data() {
                if except_self {
                    hub.publish_except(publish_to, &msg, &subscriber);
                } else {
                    hub.publish(publish_to, &msg);
                }
            }
        }
        drop(subscriber);
    });
    client
}

fn nth(i: usize) -> Message {
    if i % 2 == 0 {
        Message::text(format!("message {i}"))
    } else {
        Message::binary(format!("binary {i}").into_bytes())
    }
}

async fn next_data(ws: &mut WebSocket<DuplexStream>) -> Message {
    loop {
        let msg = guard("a delivery", ws.recv()).await.expect("open").expect("valid");
        if msg.is_data() {
            return msg;
        }
    }
}

#[tokio::test]
async fn every_subscriber_gets_every_publish_once_and_in_order_and_topics_stay_apart() {
    let hub = Hub::new();
    let mut a: Vec<_> = (0..100).map(|_| subscribed(&hub, &["a"], "a", false)).collect();
    let mut b: Vec<_> = (0..10).map(|_| subscribed(&hub, &["b"], "b", false)).collect();
    assert_eq!((hub.subscriber_count("a"), hub.subscriber_count("b")), (100, 10));
    assert_eq!(hub.topic_count(), 2);
    for i in 0..1000 {
        let published = hub.publish("a", &nth(i));
        assert_eq!(published.delivered, 100);
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    hub.publish("b", &Message::text("only b"));
    for client in &mut a {
        for i in 0..1000 {
            assert_eq!(next_data(client).await, nth(i));
        }
    }
    // Topic b saw none of a's messages: its first delivery is its own.
    for client in &mut b {
        assert_eq!(next_data(client).await, Message::text("only b"));
    }
    // Nothing more for anyone: a sentinel is the next message everywhere.
    hub.publish("a", &Message::text("end"));
    for client in &mut a {
        assert_eq!(next_data(client).await, Message::text("end"));
    }
    let stats = hub.stats();
    assert_eq!(stats.deliveries, 100 * 1001 + 10);
    assert_eq!((stats.topics, stats.subscriptions, stats.skipped), (2, 110, 0));
}

#[tokio::test]
async fn the_order_of_each_publisher_is_kept_and_a_sender_can_be_left_out() {
    let hub = Hub::new();
    // Two publishing connections that receive their own messages too, one that does not.
    let mut p1 = subscribed(&hub, &["room"], "room", false);
    let mut p2 = subscribed(&hub, &["room"], "room", false);
    let mut quiet = subscribed(&hub, &["room"], "room", true);
    let mut listeners: Vec<_> =
        (0..20).map(|_| subscribed(&hub, &["room"], "room", false)).collect();
    let n = 300;
    let (send1, send2) = (
        async {
            for i in 0..n {
                p1.feed(Message::text(format!("one {i}"))).await.unwrap();
            }
            p1.flush().await.unwrap();
        },
        async {
            for i in 0..n {
                p2.feed(Message::text(format!("two {i}"))).await.unwrap();
            }
            p2.flush().await.unwrap();
        },
    );
    tokio::join!(send1, send2);
    quiet.send(Message::text("from quiet")).await.unwrap();
    let all: Vec<_> = listeners.iter_mut().chain([&mut p1, &mut p2]).collect();
    for client in all {
        let (mut one, mut two, mut from_quiet) = (0, 0, 0);
        while one < n || two < n || from_quiet < 1 {
            let Message::Text(text) = next_data(client).await else { panic!("binary") };
            if let Some(i) = text.as_str().strip_prefix("one ") {
                assert_eq!(i.parse::<usize>().unwrap(), one, "publisher one out of order");
                one += 1;
            } else if let Some(i) = text.as_str().strip_prefix("two ") {
                assert_eq!(i.parse::<usize>().unwrap(), two, "publisher two out of order");
                two += 1;
            } else {
                assert_eq!(text.as_str(), "from quiet");
                from_quiet += 1;
            }
        }
    }
    // The quiet connection got the others' messages, but not its own.
    let mut got = 0;
    while got < 2 * n {
        let Message::Text(text) = next_data(&mut quiet).await else { panic!("binary") };
        assert_ne!(text.as_str(), "from quiet", "publish_except delivered to the sender");
        got += 1;
    }
    hub.publish("room", &Message::text("end"));
    assert_eq!(next_data(&mut quiet).await, Message::text("end"));
}

#[tokio::test]
async fn subscriptions_end_with_unsubscribe_and_with_the_subscriber() {
    let hub = Hub::new();
    let mut s = hub.subscriber();
    assert!(s.subscribe("x") && s.subscribe("y"));
    assert!(!s.subscribe("x"), "subscribed twice");
    let mut t: Subscriber = hub.subscriber();
    t.subscribe("x");
    assert_eq!((hub.subscriber_count("x"), hub.subscriber_count("y")), (2, 1));
    assert!(s.unsubscribe("y") && !s.unsubscribe("y"));
    assert_eq!((hub.subscriber_count("y"), hub.topic_count()), (0, 1));
    assert_eq!(s.topics().collect::<Vec<_>>(), ["x"]);
    drop(s);
    assert_eq!(hub.subscriber_count("x"), 1);
    drop(t);
    assert_eq!((hub.topic_count(), hub.stats().subscriptions), (0, 0));
    // Nothing is delivered to a topic nobody holds, and controls are never published.
    assert_eq!(hub.publish("x", &Message::text("lost")).delivered, 0);
    let mut u = hub.subscriber();
    u.subscribe("x");
    assert_eq!(hub.publish("x", &Message::Ping(Default::default())).delivered, 0);
    assert_eq!(hub.stats().published, 1, "a ping is not a publish");
}

#[tokio::test]
async fn a_client_connection_cannot_take_shared_frames() {
    let hub = Hub::new();
    let (_server, mut client) = pair(1024);
    let err = client.attach(&hub.subscriber()).unwrap_err();
    assert!(matches!(err, Error::Send(SendError::SharedFrameFromClient)), "{err:?}");
}

/// 1 KiB publishes to 10 readers and one connection that never reads: the readers get every
/// message, the publisher never waits, and the reader that is stuck pins at most the bound
/// (its messages past it are skipped and counted).
#[tokio::test]
async fn a_subscriber_that_never_reads_is_skipped_without_slowing_the_others() {
    let bound = 64 << 10;
    let hub = Hub::with_config(HubConfig::default().max_queued_bytes(bound));
    let readers: Vec<_> = (0..10).map(|_| subscribed(&hub, &["t"], "t", false)).collect();
    // Never read: its transport and send queue fill, then the topic log holds the bound for
    // it, then it misses the oldest.
    let stuck = subscribed(&hub, &["t"], "t", false);
    let payload = vec![b'x'; 1024];
    let n = 5_000;
    // Each reader in a task of its own, reading as fast as it can.
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                for _ in 0..n {
                    assert_eq!(next_data(&mut r).await.len(), 1024);
                }
            })
        })
        .collect();
    let reading = async {
        for r in reading {
            r.await.unwrap();
        }
    };
    let publishing = async {
        for i in 0..n {
            hub.publish("t", &Message::binary(payload.clone()));
            if i % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    guard("fan-out", async { tokio::join!(reading, publishing) }).await;
    let stats = hub.stats();
    let frame = 1024 + 4 + QUEUE_ENTRY_COST;
    // What reached it at most: the pipe (64 KiB), the send queue (up to the 128 KiB mark and
    // one frame past it) and the log (the bound, and one delivery past it).
    let most_for_stuck = (64 << 10) / 1024 + (128 << 10) / 1024 + 1 + bound / frame + 1;
    let stuck_got = n as u64 - stats.skipped;
    assert!(stats.skipped > 0, "{stats:?}");
    assert!(stuck_got <= most_for_stuck as u64, "the stuck reader took {stuck_got}: {stats:?}");
    assert_eq!(stats.deliveries, 10 * n as u64 + stuck_got);
    drop(stuck);
}

/// With `Overflow::Close`, a subscriber past the bound gets what was queued before it, then a
/// close with 1013, and nothing more is queued for it.
#[tokio::test]
async fn an_overflowing_subscriber_is_closed_with_1013_under_the_close_policy() {
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(16 << 10).overflow(Overflow::Close));
    let mut slow = subscribed(&hub, &["t"], "t", false);
    let mut fine = subscribed(&hub, &["t"], "t", false);
    for i in 0..2_000 {
        hub.publish("t", &Message::binary(vec![1u8; 1000]));
        if i % 8 == 0 {
            tokio::task::yield_now().await;
            // `fine` keeps up; `slow` does not read until the end.
            while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(fine.recv()) {}
        }
    }
    let mut got = 0;
    let close = loop {
        match guard("the slow subscriber's stream", slow.recv()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => got += 1,
            other => panic!("unexpected {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::TRY_AGAIN_LATER, "{close:?}");
    assert!(got > 0 && got < 2_000, "{got}");
    assert_eq!(hub.stats().overflow_closes, 1);
    // The connection is over for it; the other still gets publishes.
    tokio::time::sleep(Duration::from_millis(10)).await;
    hub.publish("t", &Message::text("after"));
    loop {
        if next_data(&mut fine).await == Message::text("after") {
            break;
        }
    }
}

/// A pair with permessage-deflate negotiated from `offer` by a server that keeps its context
/// unless the offer asks otherwise.
fn deflate_pair(offer: &str) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    use wsx::proto::deflate::{self, DeflateConfig};
    use wsx::proto::Connection;
    let takeover = DeflateConfig::default().context_takeover(true);
    let params = deflate::negotiate([offer], &takeover).unwrap();
    let (a, b) = tokio::io::duplex(64 << 10);
    let server = Connection::new(Role::Server, Config::default()).with_deflate(params);
    let client = Connection::new(Role::Client, Config::default()).with_deflate(params);
    (WebSocket::from_connection(a, server, None), WebSocket::from_connection(b, client, None))
}

/// Subscribers without server context takeover share one compressed frame per publish; those
/// with it, and those without compression, get the uncompressed frame; all decode the same.
#[tokio::test]
async fn one_compression_per_publish_serves_every_subscriber_without_context_takeover() {
    let hub = Hub::new();
    let mut clients = Vec::new();
    let mut subscribers = Vec::new();
    for offer in [
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits",
        "permessage-deflate",
        "",
    ] {
        let (mut server, client) =
            if offer.is_empty() { pair(64 << 10) } else { deflate_pair(offer) };
        let mut subscriber = hub.subscriber();
        subscriber.subscribe("t");
        server.attach(&subscriber).unwrap();
        tokio::spawn(async move { while let Some(Ok(_)) = server.recv().await {} });
        clients.push(client);
        subscribers.push(subscriber);
    }
    let text = "{\"price\": 101.25, \"symbol\": \"WSX\"} ".repeat(40);
    for _ in 0..10 {
        hub.publish("t", &Message::text(text.clone()));
    }
    hub.publish("t", &Message::binary(vec![0u8; 10_000]));
    for client in &mut clients {
        for _ in 0..10 {
            assert_eq!(next_data(client).await, Message::text(text.clone()));
        }
        assert_eq!(next_data(client).await, Message::binary(vec![0u8; 10_000]));
    }
    let stats = hub.stats();
    // Two of four subscribers took the compressed frame, for each of the 11 publishes.
    assert_eq!((stats.deliveries, stats.compressed_deliveries), (44, 22), "{stats:?}");
}

/// The next data message, or `None` if none comes within 3 s (a delivery that was never
/// written).
async fn next_data_within(ws: &mut WebSocket<DuplexStream>) -> Option<Message> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.recv()).await {
            Err(_) => return None,
            Ok(m) => {
                let m = m.expect("open").expect("valid");
                if m.is_data() {
                    return Some(m);
                }
            }
        }
    }
}

/// A publish that arrives while the write half is in the middle of a chunked message is held
/// back (correct), but the read half then parks without registering for the next delivery;
/// once the write half's flush takes the held one, a later publish is never written.
#[tokio::test]
async fn split_publish_after_a_chunked_send_is_written() {
    let hub = Hub::new();
    let (server, mut client) = pair(1 << 20);
    let mut server = server;
    let mut sub = hub.subscriber();
    sub.subscribe("t");
    server.attach(&sub).unwrap();
    let (mut rx, mut tx) = server.split();
    tokio::spawn(async move { while let Some(Ok(_)) = rx.recv().await {} });
    tokio::time::sleep(Duration::from_millis(50)).await; // read half registered

    tx.send_chunk(Chunk::binary(&b"first"[..], true, false)).await.unwrap();
    hub.publish("t", &Message::text("p1"));
    tokio::time::sleep(Duration::from_millis(50)).await; // read half: deliver -> More
    tx.send_chunk(Chunk::binary(&b"last"[..], false, true)).await.unwrap();

    assert_eq!(next_data_within(&mut client).await, Some(Message::binary(&b"firstlast"[..])));
    assert_eq!(next_data_within(&mut client).await, Some(Message::text("p1")));
    hub.publish("t", &Message::text("p2"));
    assert_eq!(next_data_within(&mut client).await, Some(Message::text("p2")), "p2 never written");
    drop(sub);
}

/// Overflow::Close against a client that never reads: the server connection is parked on
/// transport writability (its last `take` returned More and registered no waker), so the
/// overflow never wakes it: no 1013 is queued, no close timer starts, and the connection (its
/// send queue, its task) stays forever.
#[tokio::test]
async fn overflow_close_ends_a_connection_whose_peer_never_reads() {
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(16 << 10).overflow(Overflow::Close));
    let (a, b) = tokio::io::duplex(16 << 10);
    let config = Config::default().close_timeout(Some(Duration::from_millis(500)));
    let mut server = WebSocket::from_raw(a, Role::Server, config);
    let _client = WebSocket::from_raw(b, Role::Client, Config::default()); // never read
    let mut sub = hub.subscriber();
    sub.subscribe("t");
    server.attach(&sub).unwrap();
    let task = tokio::spawn(async move {
        while let Some(Ok(_)) = server.recv().await {}
        drop(sub);
    });
    for i in 0..2_000 {
        hub.publish("t", &Message::binary(vec![1u8; 1000]));
        if i % 8 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(hub.stats().overflow_closes, 1);
    let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(ended.is_ok(), "the overflowed connection never ended");
}
