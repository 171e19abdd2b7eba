//! Review of the shared log's tombstones, overflow removals and the receive loop's deferral
//! (586d139, 442f005, 8a39640): the accounting of compressed-only frames and of subscribers
//! that start taking compressed frames, and the bounds of the deferral.
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::DuplexStream;
use wsx::proto::deflate::DeflateConfig;
use wsx::proto::{SharedCompressor, SharedFrame};
use wsx::pubsub::{Hub, HubConfig, Overflow, QUEUE_ENTRY_COST};
use wsx::{Message, WebSocket};

mod common;

/// A server and client over a 64 KiB duplex pipe, with permessage-deflate (no server context
/// takeover) when `deflate`.
fn conn(deflate: bool) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    common::duplex_pair(64 << 10, deflate)
}

fn compressed(message: &Message) -> SharedFrame {
    let mut compressor = SharedCompressor::new(&DeflateConfig::default());
    SharedFrame::compressed(message, &mut compressor).expect("compressed")
}

/// A compressed-only frame that no subscriber takes (none negotiated deflate) is for nobody,
/// like a publisher's own message: behind a laggard it holds only its entry's cost of the
/// bound (`HubConfig::max_queued_bytes`), so it does not close a subscriber with one small
/// message behind.
#[test]
fn compressed_only_publishes_for_no_one_hold_no_frame_bytes_behind_a_laggard() {
    let bound = 4 * (1004 + QUEUE_ENTRY_COST);
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close));
    let mut laggard = hub.subscriber();
    laggard.subscribe("t");
    hub.publish("t", &Message::text("x")); // for the laggard, which does not take it yet
    for i in 0..20 {
        let frame = compressed(&Message::binary(common::noise(1000, i)));
        assert!(frame.wire_len() > 900);
        assert_eq!(hub.publish_frame("t", &frame, None).delivered, 0);
    }
    assert_eq!(hub.stats().overflow_closes, 0, "closed by frames that were for nobody");
    assert_eq!(laggard.queued_bytes(), 3 + QUEUE_ENTRY_COST);
}

/// A subscriber that attaches to a deflate connection after a compressed-only publish it
/// was not counted for, and leaves before taking it, leaves the delivery count as it was:
/// the hub's counter does not drift, nor wrap below zero when the last subscriber leaves.
#[tokio::test]
async fn attaching_after_a_compressed_only_publish_keeps_the_delivery_count() {
    let hub = Hub::new();
    let mut s = hub.subscriber();
    s.subscribe("t");
    // Someone else keeps the log from draining at once, so the entry is still there at attach.
    let mut laggard = hub.subscriber();
    laggard.subscribe("t");
    hub.publish_except("t", &Message::text("x"), &s);
    let frame = compressed(&Message::binary(common::noise(1000, 1)));
    assert_eq!(hub.publish_frame("t", &frame, None).delivered, 0);
    assert_eq!(hub.stats().deliveries, 1);
    let (mut server, _client) = conn(true);
    server.attach(&s).unwrap(); // the entry is now reckoned for `s`
    drop(server);
    drop(s);
    assert_eq!(hub.stats().deliveries, 1, "the laggard's delivery is still to be made");
    drop(laggard);
    assert_eq!(hub.stats().deliveries, 0, "wrapped below zero");
}

/// A subscriber that starts taking compressed frames at attach and takes a publish
/// compressed is counted in `compressed_deliveries`.
#[tokio::test]
async fn a_compressed_delivery_after_attach_is_counted() {
    let hub = Hub::new();
    // One deflate subscriber, so that publishes are compressed.
    let (mut server_a, mut client_a) = conn(true);
    let mut a = hub.subscriber();
    a.subscribe("t");
    server_a.attach(&a).unwrap();
    // `m` subscribes before its connection is attached (as `wsx serve` does before the 101).
    let mut m = hub.subscriber();
    m.subscribe("t");
    let text = "compress me ".repeat(100);
    assert_eq!(hub.publish("t", &Message::text(text.clone())).delivered, 2);
    assert_eq!(hub.stats().compressed_deliveries, 1);
    let (mut server_m, mut client_m) = conn(true);
    server_m.attach(&m).unwrap();
    let ta = tokio::spawn(async move { while let Some(Ok(_)) = server_a.recv().await {} });
    let tm = tokio::spawn(async move { while let Some(Ok(_)) = server_m.recv().await {} });
    for c in [&mut client_a, &mut client_m] {
        let got = tokio::time::timeout(Duration::from_secs(5), c.recv()).await.unwrap();
        assert!(matches!(got, Some(Ok(Message::Text(t))) if *t == *text));
    }
    let stats = hub.stats();
    assert_eq!((stats.deliveries, stats.compressed_deliveries), (2, 2));
    drop((client_a, client_m));
    let _ = tokio::time::timeout(Duration::from_secs(5), ta).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), tm).await;
}

/// Counts its wake-ups.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_recv(ws: &mut WebSocket<DuplexStream>, waker: &Waker) -> bool {
    let mut cx = Context::from_waker(waker);
    matches!(Pin::new(ws).poll_next(&mut cx), Poll::Pending)
}

/// A publisher's own messages (left out for it by `publish_except`) give its receive loop
/// nothing to take: it does not put its task back on the run queue for them.
#[tokio::test]
async fn the_receive_loop_does_not_wake_itself_for_publishes_not_for_it() {
    let hub = Hub::new();
    let (mut server, _client) = conn(false);
    let mut s = hub.subscriber();
    s.subscribe("t");
    server.attach(&s).unwrap();
    let counter = Arc::new(Counter::default());
    let waker = Waker::from(counter.clone());
    assert!(poll_recv(&mut server, &waker));
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    for _ in 0..3 {
        assert_eq!(hub.publish_except("t", &Message::text("own"), &s).delivered, 0);
        assert!(poll_recv(&mut server, &waker));
    }
    assert_eq!(counter.0.load(Ordering::SeqCst), 0, "woke itself for its own messages");
}

/// The deferral is bounded: with a publish before every poll of the receive loop, the
/// deliveries are written by the third poll (`DEFER_PASSES` = 2 passes late at most), and
/// the task is never left parked with deliveries pending (each pass that defers wakes it).
#[tokio::test]
async fn deferred_deliveries_are_written_within_three_polls_while_publishes_keep_coming() {
    let hub = Hub::new();
    let (mut server, mut client) = conn(false);
    let mut s = hub.subscriber();
    s.subscribe("t");
    server.attach(&s).unwrap();
    let counter = Arc::new(Counter::default());
    let waker = Waker::from(counter.clone());
    assert!(poll_recv(&mut server, &waker));
    for round in 0..5 {
        let mut polls = 0;
        loop {
            let before = counter.0.load(Ordering::SeqCst);
            hub.publish("t", &Message::text(format!("{round}:{polls}")));
            assert!(poll_recv(&mut server, &waker));
            polls += 1;
            if s.queued_bytes() == 0 {
                break;
            }
            // Deliveries wait: the pass must have woken the task (or armed for the next
            // publish, which the loop makes).
            assert!(
                counter.0.load(Ordering::SeqCst) > before,
                "parked with deliveries pending (round {round}, poll {polls})"
            );
            assert!(polls < 3, "still deferred after {polls} polls");
        }
        // What was taken reached the client.
        for i in 0..polls {
            let m = tokio::time::timeout(Duration::from_secs(5), client.recv()).await.unwrap();
            assert!(matches!(m, Some(Ok(Message::Text(t))) if *t == *format!("{round}:{i}")));
        }
    }
}

/// Closed for overflow in one topic (trim), taken out of another at its next publish
/// (fan-out), then dropped: every count moves once.
#[test]
fn an_overflowed_subscriber_is_released_once_across_trim_fan_out_and_drop() {
    let bound = 4 * (3 + QUEUE_ENTRY_COST);
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close));
    let mut x = hub.subscriber();
    let mut y = hub.subscriber();
    let mut z = hub.subscriber();
    for t in ["a", "b", "c"] {
        x.subscribe(t);
    }
    y.subscribe("b");
    z.subscribe("a");
    hub.publish("b", &Message::text("x")); // for x and y
    hub.publish("c", &Message::text("x")); // for x only
    for _ in 0..10 {
        hub.publish("a", &Message::text("x")); // x falls behind; z too
    }
    let stats = hub.stats();
    assert_eq!(stats.overflow_closes, 2);
    // x is still in b and c; b's next publish takes it out of b.
    assert_eq!(hub.publish("b", &Message::text("x")).delivered, 1);
    assert_eq!(hub.subscriber_count("b"), 1);
    assert_eq!(hub.subscriber_count("c"), 1);
    drop((x, z));
    let stats = hub.stats();
    assert_eq!(stats.subscriptions, 1);
    assert_eq!((stats.topics, hub.subscriber_count("b")), (1, 1));
    assert_eq!(stats.overflow_closes, 2);
    // y's two messages in b are the only deliveries left standing.
    assert_eq!(stats.deliveries, 2);
    assert_eq!(y.queued_bytes(), 2 * (3 + QUEUE_ENTRY_COST));
    drop(y);
    assert_eq!(hub.stats().subscriptions, 0);
    assert_eq!(hub.topic_count(), 0);
}
