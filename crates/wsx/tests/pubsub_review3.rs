//! Review of the receive loop's deferral keyed on the inbox's `arrivals` value (11f6482,
//! 181dfd1): whatever that value does (bumps lost between two topics publishing at once, none
//! for a subscriber's own `publish_except`), every delivery arrives, in order per topic, and
//! the connection never sits parked with deliveries pending, also while the sending half of a
//! split socket takes deliveries on its own flushes and the send queue fills.
use std::time::Duration;

use wsx::pubsub::{Hub, HubConfig, Overflow};
use wsx::Message;

mod common;

const N: u32 = 3000;
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn two_topics_own_sends_and_publish_except(deflate: bool) {
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(1 << 30).overflow(Overflow::Close));
    // A small pipe, so that the send queue fills and takes stop early (`Taken::More`).
    let (mut server, client) = common::duplex_pair(8 << 10, deflate);
    let mut sub = hub.subscriber();
    sub.subscribe("a");
    sub.subscribe("b");
    server.attach(&sub).unwrap();
    let (mut rx, mut tx) = server.split();

    // Two topics published at once from two threads: the relaxed load+store of `arrived` may
    // lose bumps here.
    let publishers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|topic| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    hub.publish(topic, &Message::text(format!("{topic} {i}")));
                    if i % 97 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();

    // The receive loop: what the client sends goes to "a" for everyone but this subscriber.
    let except = hub.clone();
    let reader = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Ok(m) = m {
                if m.is_data() {
                    except.publish_except("a", &m, &sub);
                }
            }
        }
        sub
    });
    // The sending half: its flushes take deliveries too (without registering for more).
    let writer = tokio::spawn(async move {
        for i in 0..N {
            tx.send(Message::text(format!("own {i}"))).await.unwrap();
            if i % 31 == 0 {
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
        tx
    });

    let (mut crx, mut ctx) = client.split();
    let sender = tokio::spawn(async move {
        for i in 0..N / 4 {
            ctx.send(Message::text(format!("mine {i}"))).await.unwrap();
        }
        ctx
    });
    let mut next_a = 0;
    let mut next_b = 0;
    let mut next_own = 0;
    let mut received = 0u32;
    let read_all = async {
        while next_a < N || next_b < N || next_own < N {
            let m = match crx.recv().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                other => panic!("after {received} messages: {other:?}"),
            };
            received += 1;
            let (kind, i) = m.as_str().split_once(' ').unwrap();
            let i: u32 = i.parse().unwrap();
            let next = match kind {
                "a" => &mut next_a,
                "b" => &mut next_b,
                "own" => &mut next_own,
                _ => panic!("its own publish_except came back: {m}"),
            };
            assert_eq!(i, *next, "{kind}: out of order or lost");
            *next += 1;
            // A slow reader now and then: the server's send queue fills.
            if received % 1000 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    if tokio::time::timeout(HANG_GUARD, read_all).await.is_err() {
        panic!(
            "parked with deliveries pending: a {next_a}/{N}, b {next_b}/{N}, own {next_own}/{N} \
             ({:?})",
            hub.stats()
        );
    }
    for p in publishers {
        p.join().unwrap();
    }
    let _ctx = sender.await.unwrap();
    let _tx = writer.await.unwrap();
    let stats = hub.stats();
    assert_eq!((stats.skipped, stats.overflow_closes), (0, 0), "{stats:?}");
    drop(crx);
    drop(_ctx);
    let _sub = tokio::time::timeout(HANG_GUARD, reader).await.expect("reader hung").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_arrives_with_two_topics_a_sending_half_and_publish_except() {
    two_topics_own_sends_and_publish_except(false).await;
}

/// The same with shared-frame deflate: `attach` calls `set_takes_compressed`, and publishes
/// are compressed once for the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_arrives_with_two_topics_a_sending_half_and_publish_except_deflate() {
    two_topics_own_sends_and_publish_except(true).await;
}
