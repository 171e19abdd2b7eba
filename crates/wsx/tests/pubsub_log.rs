//! The topic log's accounting where subscribers leave, overflow, or are left out of
//! publishes (each found in review of the shared log).
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::DuplexStream;
use wsx::pubsub::{Broker, Hub, HubConfig, Overflow, WeakHub, QUEUE_ENTRY_COST};
use wsx::{Message, WebSocket};

mod common;

/// A hub that closes subscribers with more than `entries` publishes of "x" (a 3-byte frame)
/// behind.
fn close_hub(entries: usize) -> Hub {
    let bound = entries * (3 + QUEUE_ENTRY_COST);
    Hub::with_config(HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close))
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Broker for Recorder {
    fn start(&self, _: WeakHub) {}
    fn subscribed(&self, t: &str) {
        self.0.lock().unwrap().push(format!("+{t}"));
    }
    fn unsubscribed(&self, t: &str) {
        self.0.lock().unwrap().push(format!("-{t}"));
    }
    fn publish(&self, _: &str, _: &Message) {}
}

/// The last subscriber of a topic closed for overflow takes the topic out of the table, and
/// the node out of it at the broker, at once (not when the subscriber is dropped).
#[test]
fn a_topic_emptied_by_overflow_close_leaves_the_table() {
    let bound = 4 * (3 + QUEUE_ENTRY_COST);
    let rec = Recorder::default();
    let hub = Hub::with_broker(
        HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close),
        rec.clone(),
    );
    let mut a = hub.subscriber();
    a.subscribe("t");
    for _ in 0..10 {
        hub.publish("t", &Message::text("x"));
    }
    assert_eq!(hub.stats().overflow_closes, 1);
    assert_eq!(hub.subscriber_count("t"), 0);
    assert_eq!((hub.topic_count(), hub.stats().topics), (0, 0), "empty topic still listed");
    assert_eq!(*rec.0.lock().unwrap(), ["+t", "-t"]);
    // A new subscriber makes the topic anew; the closed one's drop leaves it alone.
    let mut b = hub.subscriber();
    b.subscribe("t");
    drop(a);
    assert_eq!((hub.topic_count(), hub.subscriber_count("t")), (1, 1));
    assert_eq!(hub.publish("t", &Message::text("x")).delivered, 1);
    assert_eq!(*rec.0.lock().unwrap(), ["+t", "-t", "+t"]);
}

/// Closed for overflow in one topic, a subscriber gets nothing more in its others: the
/// publish does not count it, and its entries there are released.
#[test]
fn an_overflowed_subscriber_gets_nothing_more_in_its_other_topics() {
    let hub = close_hub(4);
    let mut x = hub.subscriber();
    let mut y = hub.subscriber();
    x.subscribe("a");
    x.subscribe("b");
    y.subscribe("b");
    hub.publish("b", &Message::text("x")); // queued for x and y in b
    assert_eq!(x.queued_bytes(), 3 + QUEUE_ENTRY_COST);
    for _ in 0..10 {
        hub.publish("a", &Message::text("x"));
    }
    assert_eq!(hub.stats().overflow_closes, 1);
    let before = hub.stats();
    assert_eq!(hub.publish("b", &Message::text("x")).delivered, 1, "only y");
    let after = hub.stats();
    // One new delivery (to y); the earlier one to x in b is no longer counted.
    assert_eq!(after.deliveries, before.deliveries + 1 - 1);
    assert_eq!(x.queued_bytes(), 0);
    assert_eq!(after.subscriptions, 1);
    assert_eq!(hub.subscriber_count("b"), 1);
    assert_eq!(y.queued_bytes(), 2 * (3 + QUEUE_ENTRY_COST));
}

/// A publisher's own messages, left out for it, hold only their entries' cost of the bound
/// it is measured by: a flood of them while one message waits for it does not push that
/// message out.
#[test]
fn entries_not_for_a_subscriber_hold_no_frame_bytes() {
    let big = "y".repeat(1000);
    let bound = 4 * (1004 + QUEUE_ENTRY_COST);
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close));
    let mut s = hub.subscriber();
    s.subscribe("t");
    hub.publish("t", &Message::text("x")); // for s; s does not take it yet
    for _ in 0..20 {
        assert_eq!(hub.publish_except("t", &Message::text(big.clone()), &s).delivered, 0);
    }
    assert_eq!(hub.stats().overflow_closes, 0, "closed with one message behind");
    assert_eq!(s.queued_bytes(), 3 + QUEUE_ENTRY_COST);
    // The entries still count: enough of them is bounded like anything else.
    for _ in 0..bound / QUEUE_ENTRY_COST {
        hub.publish_except("t", &Message::text("z"), &s);
    }
    assert_eq!(hub.stats().overflow_closes, 1);
    assert_eq!(hub.topic_count(), 0);
}

/// Taken by one subscriber while another lags, an entry no longer holds its frame: the
/// laggard is measured by what is queued for it.
#[test]
fn what_others_took_behind_a_laggard_holds_no_frame_bytes() {
    let big = "y".repeat(1000);
    let bound = 4 * (1004 + QUEUE_ENTRY_COST);
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close));
    let mut laggard = hub.subscriber();
    laggard.subscribe("t");
    hub.publish("t", &Message::text("x"));
    // `reader` joins after that and reads everything at once, by a real connection.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut server, mut client) = pair();
        let mut reader = hub.subscriber();
        reader.subscribe("t");
        server.attach(&reader).unwrap();
        let task = tokio::spawn(async move {
            while let Some(Ok(_)) = server.recv().await {}
            drop(reader);
        });
        for i in 0..20 {
            hub.publish_except("t", &Message::text(big.clone()), &laggard);
            let m = tokio::time::timeout(Duration::from_secs(5), client.recv())
                .await
                .expect("delivered")
                .unwrap()
                .unwrap();
            assert!(matches!(&m, Message::Text(t) if t.len() == 1000), "message {i}");
        }
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
    assert_eq!(hub.stats().overflow_closes, 0);
    assert_eq!(laggard.queued_bytes(), 3 + QUEUE_ENTRY_COST);
}

fn pair() -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    common::duplex_pair(64 << 10, false)
}

/// Concurrent publishers, subscriber churn and readers (half compressed): nobody parks with
/// an entry it does not take, no count underflows, and each publisher's order holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publish_churn_and_readers() {
    fn conn(deflate: bool) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
        common::duplex_pair(if deflate { 16 << 10 } else { 64 << 10 }, deflate)
    }
    let hub = Hub::with_config(HubConfig::default().max_queued_bytes(256 << 20));
    let (publishers, per) = (3usize, 3000usize);
    let mut clients = Vec::new();
    for i in 0..8 {
        let (mut server, client) = conn(i % 2 == 0);
        let mut s = hub.subscriber();
        s.subscribe("t");
        s.subscribe(&format!("other{i}"));
        server.attach(&s).unwrap();
        tokio::spawn(async move {
            while let Some(Ok(_)) = server.recv().await {}
            drop(s);
        });
        clients.push(client);
    }
    let churn = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            for _ in 0..3000 {
                let mut s = hub.subscriber();
                s.subscribe("t");
                std::thread::yield_now();
                s.unsubscribe("t");
            }
        })
    };
    let pubs: Vec<_> = (0..publishers)
        .map(|p| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    hub.publish("t", &Message::text(format!("{p}:{i}:{}", "z".repeat(i % 200))));
                    if i % 3 == 0 {
                        hub.publish(&format!("other{}", i % 8), &Message::text("o"));
                    }
                }
            })
        })
        .collect();
    let mut readers = Vec::new();
    for mut c in clients {
        readers.push(tokio::spawn(async move {
            let mut next = vec![0usize; publishers];
            let mut got = 0;
            while got < publishers * per {
                let m = tokio::time::timeout(Duration::from_secs(10), c.recv())
                    .await
                    .expect("parked with deliveries pending")
                    .expect("open")
                    .expect("valid");
                let Message::Text(t) = m else { continue };
                if &*t == "o" {
                    continue;
                }
                let mut it = t.split(':');
                let p: usize = it.next().unwrap().parse().unwrap();
                let i: usize = it.next().unwrap().parse().unwrap();
                assert_eq!(i, next[p], "order of publisher {p}");
                next[p] += 1;
                got += 1;
            }
        }));
    }
    for p in pubs {
        p.join().unwrap();
    }
    churn.join().unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(hub.stats().skipped, 0);
}
