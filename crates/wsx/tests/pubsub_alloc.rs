//! A publish allocates O(1), not O(subscribers): counted with a counting global allocator, a
//! publish to 1,000 subscribed connections allocates as often as a publish to 10.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::DuplexStream;
use wsx::pubsub::Hub;
use wsx::{Config, Message, Role, WebSocket};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// A global allocator cannot be written without `unsafe`: this one only forwards every call to
// the system allocator and counts allocations.
#[allow(unsafe_code)]
// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Connections subscribed to "t", server sides running; their clients, kept open.
fn subscribers(hub: &Hub, n: usize) -> Vec<WebSocket<DuplexStream>> {
    (0..n)
        .map(|_| {
            let (a, b) = tokio::io::duplex(64 << 10);
            let mut server = WebSocket::from_raw(a, Role::Server, Config::default());
            let mut subscriber = hub.subscriber();
            subscriber.subscribe("t");
            server.attach(&subscriber).unwrap();
            tokio::spawn(async move {
                while let Some(Ok(_)) = server.recv().await {}
                drop(subscriber);
            });
            WebSocket::from_raw(b, Role::Client, Config::default())
        })
        .collect()
}

/// Allocations of one publish to `n` subscribers that have taken a publish before (so their
/// queues have their capacity, as in a running server).
async fn allocations_of_a_publish(n: usize) -> usize {
    let hub = Hub::new();
    let mut clients = subscribers(&hub, n);
    let message = Message::binary(vec![7u8; 20]);
    for round in 0..3 {
        if round > 0 {
            for c in &mut clients {
                assert_eq!(c.recv().await.unwrap().unwrap(), message);
            }
        }
        assert_eq!(hub.publish("t", &message).delivered, n);
        // Let every server side take its delivery and write it.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    for c in &mut clients {
        assert_eq!(c.recv().await.unwrap().unwrap(), message);
    }
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let published = hub.publish("t", &message);
    let count = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(published.delivered, n);
    for c in &mut clients {
        assert_eq!(c.recv().await.unwrap().unwrap(), message);
    }
    count
}

#[tokio::test(flavor = "current_thread")]
async fn a_publish_allocates_the_same_for_1000_subscribers_as_for_10() {
    let few = allocations_of_a_publish(10).await;
    let many = allocations_of_a_publish(1000).await;
    eprintln!("allocations of one publish: {few} to 10 subscribers, {many} to 1,000");
    // The frame (its buffer, and the shared handle the first clone makes): nothing per
    // subscriber.
    assert!(few <= 3, "a publish to 10 allocated {few} times");
    assert_eq!(many, few, "a publish to 1,000 allocated {many} times, to 10 {few} times");
}
