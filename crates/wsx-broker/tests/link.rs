//! The link as a library, against real brokers (Redis and NATS, started by the test on free
//! loopback ports): two hubs in one process deliver to each other once each, in order; a node
//! with 100,000 live topics resubscribes after a broker restart in a few batched requests
//! (measured and printed); a stalled broker costs a bounded queue, counted drops, and an
//! outage that ends by itself.

#[path = "../../wsx-cli/tests/common/brokers.rs"]
mod brokers;

use std::time::{Duration, Instant};

use brokers::{BrokerKind, BrokerProcess};
use tokio::io::DuplexStream;
use wsx::pubsub::{Hub, HubConfig, Subscriber};
use wsx::{Config, Message, Role, WebSocket};
use wsx_broker::{Link, LinkConfig, LinkStats};

const GUARD: Duration = Duration::from_secs(60);

/// A hub on `broker` and its link.
fn node(broker: &BrokerProcess, config: LinkConfig) -> (Hub, Link) {
    let link = Link::new(&broker.url(), config).unwrap();
    (Hub::with_broker(HubConfig::default(), link.clone()), link)
}

/// A client whose server side is subscribed to `topic` on `hub`.
fn subscribe(hub: &Hub, topic: &str) -> WebSocket<DuplexStream> {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut server = WebSocket::from_raw(a, Role::Server, Config::default());
    let mut subscriber: Subscriber = hub.subscriber();
    subscriber.subscribe(topic);
    server.attach(&subscriber).unwrap();
    tokio::spawn(async move {
        while let Some(Ok(_)) = server.recv().await {}
        drop(subscriber);
    });
    WebSocket::from_raw(b, Role::Client, Config::default())
}

async fn recv_text(ws: &mut WebSocket<DuplexStream>) -> String {
    match tokio::time::timeout(GUARD, ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("{other:?}"),
    }
}

async fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < GUARD, "never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delivers_across_hubs_once_and_in_order(kind: BrokerKind) {
    let Some(broker) = BrokerProcess::start(kind) else { return };
    let (a, link_a) = node(&broker, LinkConfig::default());
    let (b, link_b) = node(&broker, LinkConfig::default());
    let mut on_a = subscribe(&a, "t");
    let mut on_b = subscribe(&b, "t");
    wait("connected", || link_a.stats().connected && link_b.stats().connected).await;
    broker.wait_for("two subscribers", |br| br.has_subscription("wsx.t"));
    // Both links subscribed (Redis counts channels, not clients: wait for B's own state).
    wait("B subscribed", || link_b.stats().topics == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..200 {
        a.publish("t", &Message::text(format!("m{i}")));
    }
    for i in 0..200 {
        assert_eq!(recv_text(&mut on_b).await, format!("m{i}"));
        assert_eq!(recv_text(&mut on_a).await, format!("m{i}"));
    }
    // A's own messages came back through Redis (it is subscribed) and were skipped; NATS does
    // not echo them (no_echo).
    wait("A's own messages accounted for", || {
        let s = link_a.stats();
        s.published == 200 && (kind == BrokerKind::Nats || s.own_skipped == 200)
    })
    .await;
    assert!(tokio::time::timeout(Duration::from_millis(300), on_a.recv()).await.is_err());
    let s: LinkStats = link_b.stats();
    assert_eq!((s.received, s.dropped, s.outages), (200, 0, 0), "{s:?}");
    // The hub and every link handle gone: the task stops and B leaves the broker (NATS counts
    // subscriptions per client; Redis only channels, which A still holds).
    drop((b, link_b, on_b));
    if kind == BrokerKind::Nats {
        broker.wait_for("B's subscription gone", |br| br.subscription_count() == 1);
    }
    assert!(broker.has_subscription("wsx.t"), "A's subscription went too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_delivers_across_hubs_once_and_in_order() {
    delivers_across_hubs_once_and_in_order(BrokerKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_delivers_across_hubs_once_and_in_order() {
    delivers_across_hubs_once_and_in_order(BrokerKind::Nats).await;
}

/// 100,000 live topics, the broker restarted: measured from the broker answering again to
/// every topic subscribed at the broker.
async fn resubscribes_many_topics_in_batches(kind: BrokerKind) {
    const TOPICS: usize = 100_000;
    let Some(mut broker) = BrokerProcess::start(kind) else { return };
    let (hub, link) = node(&broker, LinkConfig::default());
    let mut subscriber = hub.subscriber();
    for i in 0..TOPICS {
        subscriber.subscribe(&format!("topic{i}"));
    }
    wait("connected", || link.stats().connected).await;
    let started = Instant::now();
    broker.wait_for("100,000 subscriptions", |br| br.subscription_count() >= TOPICS);
    let first = started.elapsed();
    broker.kill();
    wait("down", || !link.stats().connected).await;
    let before = link.stats().subscribe_requests;
    broker.restart();
    let back = Instant::now();
    broker.wait_for("100,000 subscriptions again", |br| br.subscription_count() >= TOPICS);
    let at_broker = back.elapsed();
    wait("up", || link.stats().connected).await;
    let up = back.elapsed();
    let s = link.stats();
    let requests = s.subscribe_requests - before;
    eprintln!(
        "{kind:?}: {TOPICS} topics: first subscription seen complete {:.0} ms after connect; after \
         a restart all at the broker in {:.0} ms, link up in {:.0} ms (resubscribe {:.0} ms), {} \
         requests",
        first.as_secs_f64() * 1e3,
        at_broker.as_secs_f64() * 1e3,
        up.as_secs_f64() * 1e3,
        s.last_resubscribe.unwrap_or_default().as_secs_f64() * 1e3,
        requests,
    );
    assert_eq!(s.reconnects, 1, "{s:?}");
    assert_eq!(s.topics, TOPICS);
    if kind == BrokerKind::Redis {
        // SUBSCRIBE with 1,000 channels each: 100 requests, not 100,000.
        assert_eq!(requests, (TOPICS / LinkConfig::default().subscribe_batch) as u64);
    } else {
        // async-nats writes the SUBs again itself, together: none from the link.
        assert_eq!(requests, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resubscribes_100000_topics_in_batches() {
    resubscribes_many_topics_in_batches(BrokerKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_resubscribes_100000_topics_in_batches() {
    resubscribes_many_topics_in_batches(BrokerKind::Nats).await;
}

/// A broker that stops answering (SIGSTOP): publishes beyond the queue's bound are dropped and
/// counted, the publisher never waits, the link gives up on the stalled connection after its
/// timeout and comes back once the broker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_costs_a_bounded_queue() {
    let Some(broker) = BrokerProcess::start(BrokerKind::Redis) else { return };
    let config = LinkConfig::default().max_queued(100).timeout(Duration::from_secs(1));
    let (a, link) = node(&broker, config);
    let mut local = subscribe(&a, "t");
    wait("connected", || link.stats().connected).await;
    broker.signal("STOP");
    let started = Instant::now();
    for i in 0..10_000 {
        a.publish("t", &Message::text(format!("m{i}")));
    }
    let publishing = started.elapsed();
    for i in 0..10_000 {
        assert_eq!(recv_text(&mut local).await, format!("m{i}"), "local fan-out");
    }
    let s = link.stats();
    assert!(s.dropped >= 10_000 - 100 - 512, "only {} dropped: {s:?}", s.dropped);
    eprintln!("10,000 publishes to a stalled broker took {publishing:?}; {} dropped", s.dropped);
    wait("the stall noticed", || !link.stats().connected).await;
    broker.signal("CONT");
    wait("back", || link.stats().connected).await;
    let s = link.stats();
    assert_eq!((s.outages, s.reconnects), (1, 1), "{s:?}");
    assert_eq!(s.published + s.dropped, 10_000, "{s:?}");
}
