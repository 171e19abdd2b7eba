//! A close under `Overflow::Close` that empties a topic with a free slot after the last
//! lagging subscriber (found in review: the publisher indexed past the emptied member list).
use wsx::pubsub::{Hub, HubConfig, Overflow, QUEUE_ENTRY_COST};
use wsx::Message;

#[test]
fn close_trim_survives_a_free_slot_after_the_last_laggard() {
    let bound = 4 * (3 + QUEUE_ENTRY_COST);
    let hub =
        Hub::with_config(HubConfig::default().max_queued_bytes(bound).overflow(Overflow::Close));
    let mut a = hub.subscriber();
    let mut b = hub.subscriber();
    a.subscribe("t");
    b.subscribe("t");
    assert!(b.unsubscribe("t")); // slot 1 is free; the member list keeps 2 slots
    for _ in 0..10 {
        hub.publish("t", &Message::text("x")); // `a` never takes
    }
    assert_eq!(hub.stats().overflow_closes, 1);
    assert_eq!(hub.stats().subscriptions, 0);
    assert_eq!(hub.subscriber_count("t"), 0);
}
