//! Topics with fan-out: one publish, encoded once, written to every subscriber.
//!
//! A [`Hub`] maps topic names to the [`Subscriber`]s of each. A server connection gets a
//! subscriber from the hub, attaches it to its [`WebSocket`](crate::WebSocket) with
//! [`WebSocket::attach`](crate::WebSocket::attach) and subscribes it to any number of topics.
//! [`Hub::publish`] encodes the message once, as a [`SharedFrame`] (header and payload in one
//! buffer), and hands every subscriber of the topic a reference to it: no copy, no encoding
//! and no allocation per subscriber. Each connection then writes everything published to it
//! since its last write in one write, while it is being received from.
//!
//! ```no_run
//! # async fn run() -> Result<(), wsx::Error> {
//! use wsx::pubsub::Hub;
//!
//! let hub = Hub::new();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let hub = hub.clone();
//!     tokio::spawn(async move {
//!         let mut ws = wsx::accept(tcp).await?;
//!         let mut subscriber = hub.subscriber();
//!         subscriber.subscribe("chat");
//!         ws.attach(&subscriber)?;
//!         // Receiving is what writes the deliveries out: keep receiving.
//!         while let Some(msg) = ws.recv().await {
//!             let msg = msg?;
//!             if msg.is_data() {
//!                 hub.publish("chat", &msg);
//!             }
//!         }
//!         Ok::<_, wsx::Error>(())
//!     });
//! }
//! # }
//! ```
//!
//! # Semantics
//!
//! - **Order**: the messages of one publisher to one topic reach every subscriber in publish
//!   order. Nothing is promised between publishers, or between topics.
//! - **At most once**: a message is delivered to the subscribers the topic has when it is
//!   published, once each; a connection that subscribes later does not get it, there is no
//!   history, and a message to a topic without subscribers is dropped.
//! - **Slow subscribers**: each subscriber holds at most [`HubConfig::max_queued_bytes`] of
//!   deliveries it has not taken into its send queue yet. Past that, by
//!   [`HubConfig::overflow`], the message is skipped for that subscriber (and counted), or the
//!   subscriber's connection is closed with 1013 (Try Again Later). A publish never waits for a
//!   subscriber, so one that does not read cannot slow the others down.
//! - **Compression**: a message is compressed at most once per publish, and only when a
//!   subscriber can take the result: a connection that negotiated permessage-deflate with
//!   `server_no_context_takeover` (and the full 15-bit window) gets the one compressed frame.
//!   Every other subscriber, those with context takeover included, gets the uncompressed frame,
//!   which permessage-deflate allows at any time (RFC 7692 §6) and which leaves their
//!   compression context untouched: compressing per subscriber would cost the CPU of one
//!   compression per delivery. [`DeflateConfig::default`] negotiates
//!   `server_no_context_takeover`, so every subscriber that compresses takes the shared frame;
//!   a server with context takeover keeps `DeflateConfig::server_no_context_takeover` on for
//!   its pub/sub traffic to be compressed (as `wsx serve --pubsub --deflate-context-takeover`
//!   does).
//! - **Deliveries are written while the connection is driven**: by receiving (the usual loop),
//!   and by sending or flushing. A connection that is not polled keeps its deliveries queued,
//!   up to the bound above.
//!
//! # Many nodes
//!
//! [`Hub::with_broker`] joins the hub to other nodes' hubs through a [`Broker`] (the
//! `wsx-broker` crate has Redis and NATS ones): the hub tells it when a topic gets its first
//! subscriber and loses its last, and hands it every local publish; what the broker brings from
//! other nodes comes back through [`Hub::deliver`], to the local subscribers only. Without a
//! broker nothing changes: a publish reads one more field and takes no further lock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::task::Waker;

use wsx_proto::deflate::DeflateConfig;
use wsx_proto::{Message, SharedCompressor, SharedFrame};

/// What a publish does to a subscriber whose queue is full ([`HubConfig::max_queued_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// The message is not delivered to that subscriber; [`HubStats::skipped`] counts it.
    #[default]
    Skip,
    /// The subscriber's connection is closed with 1013 (Try Again Later) and gets nothing
    /// more; [`HubStats::overflow_closes`] counts it.
    Close,
}

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// The most bytes of deliveries one subscriber may hold before they reach its send queue,
    /// frame headers included, plus [`QUEUE_ENTRY_COST`] per message. Default 256 KiB. The
    /// frames themselves are shared, so this bounds what a subscriber can pin, not what it
    /// copies.
    pub max_queued_bytes: usize,
    /// What happens past [`Self::max_queued_bytes`]. Default [`Overflow::Skip`].
    pub overflow: Overflow,
    /// How publishes are compressed for the subscribers that can take one compressed frame
    /// (see the module's documentation); its level and minimum size apply. `None`: never.
    /// Default: [`DeflateConfig::default`].
    pub compression: Option<DeflateConfig>,
}

/// What each queued delivery counts toward [`HubConfig::max_queued_bytes`] besides its frame:
/// the queue entry itself, so that a flood of tiny messages is bounded too.
pub const QUEUE_ENTRY_COST: usize = 48;

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_queued_bytes: 256 << 10,
            overflow: Overflow::Skip,
            compression: Some(DeflateConfig::default()),
        }
    }
}

impl HubConfig {
    /// Sets [`Self::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Sets [`Self::overflow`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Sets [`Self::compression`].
    pub fn compression(mut self, compression: Option<DeflateConfig>) -> Self {
        self.compression = compression;
        self
    }
}

/// Counters of a [`Hub`] since it was made, and its present size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Topics with at least one subscriber.
    pub topics: usize,
    /// Subscriptions: a subscriber of three topics counts three times.
    pub subscriptions: usize,
    /// Publishes, to topics with subscribers or not.
    pub published: u64,
    /// Messages handed to subscribers.
    pub deliveries: u64,
    /// Deliveries skipped because the subscriber's queue was full ([`Overflow::Skip`]).
    pub skipped: u64,
    /// Deliveries of a compressed frame (one compression per publish shared by them).
    pub compressed_deliveries: u64,
    /// Subscribers closed because their queue was full ([`Overflow::Close`]).
    pub overflow_closes: u64,
}

/// The other side of a hub that spans nodes: a broker client. The hub calls it; it calls the
/// hub back only through the [`WeakHub`] given to [`Broker::start`], with [`Hub::deliver`].
///
/// Every method but `start` is called on the publisher's or subscriber's thread, and
/// [`Broker::subscribed`] and [`Broker::unsubscribed`] with the hub's topic table locked (so
/// that they come in the order the table changed): they must return at once (record, wake a
/// task), never block, and never call into the hub.
pub trait Broker: Send + Sync + 'static {
    /// Called once by [`Hub::with_broker`], before anything else: the hub to deliver to.
    fn start(&self, hub: WeakHub);

    /// `topic` got its first local subscriber.
    fn subscribed(&self, topic: &str);

    /// `topic` lost its last local subscriber.
    fn unsubscribed(&self, topic: &str);

    /// A local publish of a data message (text or binary) to `topic`, already delivered to
    /// the local subscribers; it is for the other nodes.
    fn publish(&self, topic: &str, message: &Message);
}

/// A [`Hub`] that does not keep it alive: what a broker's task holds.
#[derive(Clone, Debug)]
pub struct WeakHub {
    shared: Weak<HubShared>,
}

impl WeakHub {
    /// The hub, if it is still alive.
    pub fn upgrade(&self) -> Option<Hub> {
        self.shared.upgrade().map(|shared| Hub { shared })
    }
}

/// What one publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Subscribers the message was handed to.
    pub delivered: usize,
    /// Subscribers that did not get it because their queue was full.
    pub skipped: usize,
}

/// A set of topics and their subscribers. Cloning shares it; it may be used from any thread.
#[derive(Clone, Default)]
pub struct Hub {
    shared: Arc<HubShared>,
}

#[derive(Default)]
struct HubShared {
    config: HubConfig,
    topics: RwLock<HashMap<Arc<str>, Vec<Arc<Inbox>>>>,
    next_id: AtomicU64,
    published: AtomicU64,
    deliveries: AtomicU64,
    compressed_deliveries: AtomicU64,
    /// The one compressor of publishes, made at the first that needs it.
    compressor: Mutex<Option<SharedCompressor>>,
    skipped: AtomicU64,
    overflow_closes: AtomicU64,
    /// Where local publishes also go, and which hears of topics' first and last subscribers.
    broker: Option<Box<dyn Broker>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the default [`HubConfig`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub with `config`.
    pub fn with_config(config: HubConfig) -> Self {
        Self { shared: Arc::new(HubShared { config, ..HubShared::default() }) }
    }

    /// A hub with `config` that spans nodes through `broker`: a topic's first local subscriber
    /// subscribes the node at the broker, its last one unsubscribes it, local publishes go
    /// to the broker too, and what the broker brings in is delivered by [`Hub::deliver`].
    /// Calls [`Broker::start`] before returning.
    pub fn with_broker(config: HubConfig, broker: impl Broker) -> Self {
        let hub = Self {
            shared: Arc::new(HubShared {
                config,
                broker: Some(Box::new(broker)),
                ..HubShared::default()
            }),
        };
        if let Some(broker) = &hub.shared.broker {
            broker.start(hub.downgrade());
        }
        hub
    }

    /// A handle that does not keep the hub alive.
    pub fn downgrade(&self) -> WeakHub {
        WeakHub { shared: Arc::downgrade(&self.shared) }
    }

    /// Delivers a message that came from another node (through the broker) to this node's
    /// subscribers of `topic`; it is not handed back to the broker. Encoded once, like a
    /// publish; a control message is not delivered.
    pub fn deliver(&self, topic: &str, message: &Message) -> Published {
        match SharedFrame::new(message) {
            Some(frame) => self.fan_out(topic, &frame, Some(message), None),
            None => Published::default(),
        }
    }

    /// A new subscriber, of no topic yet. Attach it to a server connection with
    /// [`WebSocket::attach`](crate::WebSocket::attach).
    pub fn subscriber(&self) -> Subscriber {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        Subscriber {
            hub: self.clone(),
            inbox: Arc::new(Inbox {
                id,
                takes_compressed: AtomicBool::new(false),
                state: Mutex::new(InboxState::default()),
            }),
            topics: Vec::new(),
        }
    }

    /// Publishes a data message to `topic`'s subscribers; a ping, pong or close is not
    /// published (nothing is delivered). The message is encoded once. With a broker
    /// ([`Hub::with_broker`]) it goes to the other nodes too; [`Published`] counts this
    /// node's subscribers only.
    pub fn publish(&self, topic: &str, message: &Message) -> Published {
        let Some(frame) = SharedFrame::new(message) else { return Published::default() };
        let published = self.fan_out(topic, &frame, Some(message), None);
        if let Some(broker) = &self.shared.broker {
            broker.publish(topic, message);
        }
        published
    }

    /// Publishes to every subscriber of `topic` but `except` (typically the sender), and to
    /// the other nodes, as [`Hub::publish`].
    pub fn publish_except(&self, topic: &str, message: &Message, except: &Subscriber) -> Published {
        let Some(frame) = SharedFrame::new(message) else { return Published::default() };
        let published = self.fan_out(topic, &frame, Some(message), Some(except.inbox.id));
        if let Some(broker) = &self.shared.broker {
            broker.publish(topic, message);
        }
        published
    }

    /// Publishes a frame encoded beforehand (to publish one message to several topics, say),
    /// to every subscriber of `topic` but the one with id `except`. It goes out as it is: an
    /// uncompressed frame is not compressed for anyone, and a compressed one
    /// ([`SharedFrame::compressed`]) reaches only the subscribers that can take it. With a
    /// broker, an uncompressed frame goes to the other nodes too (its payload copied out);
    /// a compressed one stays on this node.
    pub fn publish_frame(
        &self,
        topic: &str,
        frame: &SharedFrame,
        except: Option<SubscriberId>,
    ) -> Published {
        let published = self.fan_out(topic, frame, None, except);
        if let Some(broker) = &self.shared.broker {
            if let Some(message) = message_of(frame) {
                broker.publish(topic, &message);
            }
        }
        published
    }

    /// Delivers `plain` to `topic`'s subscribers but `except`, or its compressed form (made once,
    /// from `message`) to those that take compressed frames.
    fn fan_out(
        &self,
        topic: &str,
        plain: &SharedFrame,
        message: Option<&Message>,
        except: Option<SubscriberId>,
    ) -> Published {
        let shared = &*self.shared;
        shared.published.fetch_add(1, Ordering::Relaxed);
        let topics = read(&shared.topics);
        let Some(subscribers) = topics.get(topic) else { return Published::default() };
        let limit = shared.config.max_queued_bytes;
        let mut result = Published::default();
        let mut closes = 0;
        // Made at the first subscriber that takes it: `None` until then, `Some(None)` when the
        // message is not compressed (too short, compression off).
        let mut compressed: Option<Option<SharedFrame>> = None;
        let mut compressed_count = 0u64;
        for inbox in subscribers {
            if Some(inbox.id) == except {
                continue;
            }
            let frame = if inbox.takes_compressed.load(Ordering::Relaxed) {
                let made = compressed.get_or_insert_with(|| self.compress(message));
                made.as_ref().unwrap_or(plain)
            } else if plain.is_compressed() {
                continue;
            } else {
                plain
            };
            let cost = frame.wire_len() + QUEUE_ENTRY_COST;
            let mut state = lock(&inbox.state);
            if state.overflowed {
                continue;
            }
            if state.queued + cost > limit && !state.frames.is_empty() {
                match shared.config.overflow {
                    Overflow::Skip => {
                        result.skipped += 1;
                        continue;
                    }
                    Overflow::Close => {
                        state.overflowed = true;
                        state.frames = VecDeque::new();
                        state.queued = 0;
                        closes += 1;
                    }
                }
            } else {
                state.frames.push_back(frame.clone());
                state.queued += cost;
                result.delivered += 1;
                compressed_count += u64::from(frame.is_compressed());
            }
            let waker = state.waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        drop(topics);
        shared.deliveries.fetch_add(result.delivered as u64, Ordering::Relaxed);
        if compressed_count > 0 {
            shared.compressed_deliveries.fetch_add(compressed_count, Ordering::Relaxed);
        }
        if result.skipped > 0 {
            shared.skipped.fetch_add(result.skipped as u64, Ordering::Relaxed);
        }
        if closes > 0 {
            shared.overflow_closes.fetch_add(closes, Ordering::Relaxed);
        }
        result
    }

    /// The compressed form of `message`, if compression is on and pays for it.
    fn compress(&self, message: Option<&Message>) -> Option<SharedFrame> {
        let message = message?;
        let config = self.shared.config.compression.as_ref()?;
        let mut compressor = lock(&self.shared.compressor);
        let compressor = compressor.get_or_insert_with(|| SharedCompressor::new(config));
        SharedFrame::compressed(message, compressor)
    }

    /// How many subscribers `topic` has.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        read(&self.shared.topics).get(topic).map_or(0, Vec::len)
    }

    /// How many topics have subscribers.
    pub fn topic_count(&self) -> usize {
        read(&self.shared.topics).len()
    }

    /// The counters and the present size.
    pub fn stats(&self) -> HubStats {
        let shared = &*self.shared;
        let (topics, subscriptions) = {
            let topics = read(&shared.topics);
            (topics.len(), topics.values().map(Vec::len).sum())
        };
        HubStats {
            topics,
            subscriptions,
            published: shared.published.load(Ordering::Relaxed),
            deliveries: shared.deliveries.load(Ordering::Relaxed),
            skipped: shared.skipped.load(Ordering::Relaxed),
            compressed_deliveries: shared.compressed_deliveries.load(Ordering::Relaxed),
            overflow_closes: shared.overflow_closes.load(Ordering::Relaxed),
        }
    }

    fn add(&self, topic: &str, inbox: &Arc<Inbox>) -> Option<Arc<str>> {
        let mut topics = write(&self.shared.topics);
        if let Some((name, subscribers)) = topics.get_key_value(topic) {
            if subscribers.iter().any(|s| Arc::ptr_eq(s, inbox)) {
                return None;
            }
            let name = name.clone();
            topics.get_mut(topic).expect("just found").push(inbox.clone());
            return Some(name);
        }
        let name: Arc<str> = Arc::from(topic);
        topics.insert(name.clone(), vec![inbox.clone()]);
        // Under the lock: the broker hears of first and last subscribers in table order.
        if let Some(broker) = &self.shared.broker {
            broker.subscribed(topic);
        }
        Some(name)
    }

    fn remove(&self, topic: &str, inbox: &Arc<Inbox>) {
        let mut topics = write(&self.shared.topics);
        let Some(subscribers) = topics.get_mut(topic) else { return };
        // From the end: the most recent subscribers tend to leave first.
        if let Some(i) = subscribers.iter().rposition(|s| Arc::ptr_eq(s, inbox)) {
            subscribers.swap_remove(i);
        }
        if subscribers.is_empty() {
            topics.remove(topic);
            if let Some(broker) = &self.shared.broker {
                broker.unsubscribed(topic);
            }
        }
    }
}

/// The message an uncompressed shared frame carries, its payload copied out; `None` for a
/// compressed frame.
fn message_of(frame: &SharedFrame) -> Option<Message> {
    if frame.is_compressed() {
        return None;
    }
    let bytes = frame.as_bytes();
    // A server frame has no mask: a 2-byte header, then 2 or 8 bytes of extended length
    // (RFC 6455 §5.2).
    let header = match bytes.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let payload = bytes::Bytes::copy_from_slice(bytes.get(header..)?);
    if frame.is_text() {
        wsx_proto::Utf8Bytes::try_from(payload).ok().map(Message::Text)
    } else {
        Some(Message::Binary(payload))
    }
}

/// Identifies a [`Subscriber`] to [`Hub::publish_frame`]'s `except`.
pub type SubscriberId = u64;

/// One connection's membership in a [`Hub`]'s topics. Dropping it unsubscribes from all.
pub struct Subscriber {
    hub: Hub,
    inbox: Arc<Inbox>,
    topics: Vec<Arc<str>>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.inbox.id)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Subscribes to `topic`; `false` if already subscribed.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        match self.hub.add(topic, &self.inbox) {
            Some(name) => {
                self.topics.push(name);
                true
            }
            None => false,
        }
    }

    /// Unsubscribes from `topic`; `false` if not subscribed. Deliveries already queued for it
    /// are still written.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        let Some(i) = self.topics.iter().position(|t| &**t == topic) else { return false };
        self.topics.swap_remove(i);
        self.hub.remove(topic, &self.inbox);
        true
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|t| &**t)
    }

    /// The id to give [`Hub::publish_frame`] to leave this subscriber out.
    pub fn id(&self) -> SubscriberId {
        self.inbox.id
    }

    /// Bytes of deliveries waiting to reach the connection's send queue (as counted against
    /// [`HubConfig::max_queued_bytes`]).
    pub fn queued_bytes(&self) -> usize {
        lock(&self.inbox.state).queued
    }

    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for topic in std::mem::take(&mut self.topics) {
            self.hub.remove(&topic, &self.inbox);
        }
    }
}

/// Deliveries on their way to one connection: filled by publishers, emptied by the
/// connection's driver ([`Inbox::take`]).
pub(crate) struct Inbox {
    id: SubscriberId,
    /// The connection it is attached to takes compressed shared frames.
    takes_compressed: AtomicBool,
    state: Mutex<InboxState>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct InboxState {
    frames: VecDeque<SharedFrame>,
    /// What `frames` counts toward the bound.
    queued: usize,
    /// The task to wake on the next delivery.
    waker: Option<Waker>,
    /// The bound was passed under [`Overflow::Close`]: the connection is to be closed.
    overflowed: bool,
}

/// What [`Inbox::take`] found.
pub(crate) enum Taken {
    /// Everything queued was taken (or there was nothing).
    Empty,
    /// `take` said stop; more is queued.
    More,
    /// The subscriber overflowed under [`Overflow::Close`].
    Overflowed,
}

impl Inbox {
    /// Records whether the connection attached takes compressed shared frames.
    pub(crate) fn set_takes_compressed(&self, takes: bool) {
        self.takes_compressed.store(takes, Ordering::Relaxed);
    }

    /// Hands queued deliveries to `take` in order while it returns true (it queues them on
    /// the connection). With `waker`, registers it to be woken by the next publish whatever
    /// the outcome: a driver that stops early (its send queue full, a chunked message half
    /// sent) must still hear of what comes next, and of an overflow under
    /// [`Overflow::Close`] while it waits for the transport.
    pub(crate) fn take(
        &self,
        waker: Option<&Waker>,
        mut take: impl FnMut(&SharedFrame) -> bool,
    ) -> Taken {
        let mut state = lock(&self.state);
        if let Some(waker) = waker {
            match &state.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => state.waker = Some(waker.clone()),
            }
        }
        if state.overflowed {
            return Taken::Overflowed;
        }
        while let Some(frame) = state.frames.front() {
            if !take(frame) {
                return Taken::More;
            }
            let cost = frame.wire_len() + QUEUE_ENTRY_COST;
            state.queued -= cost;
            state.frames.pop_front();
        }
        // Drained: a burst's capacity is not kept for the life of the connection (a few
        // entries are, so that steady publishing does not allocate per delivery).
        if state.frames.capacity() > INBOX_KEPT_CAPACITY {
            state.frames.shrink_to(INBOX_KEPT_CAPACITY);
        }
        Taken::Empty
    }
}

/// Queue entries a drained inbox keeps allocated.
const INBOX_KEPT_CAPACITY: usize = 8;

/// Locks, ignoring poisoning: the state stays consistent whatever a panicking holder did
/// (every update is a single push or pop with its counter).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drained inbox lets go of a burst's queue capacity (40 B per entry otherwise kept for
    /// the life of the connection).
    #[test]
    fn a_drained_inbox_keeps_only_a_few_entries() {
        let hub = Hub::new();
        let mut s = hub.subscriber();
        s.subscribe("t");
        for _ in 0..4000 {
            hub.publish("t", &Message::text("x"));
        }
        assert!(lock(&s.inbox().state).frames.capacity() >= 4000);
        assert!(matches!(s.inbox().take(None, |_| true), Taken::Empty));
        let cap = lock(&s.inbox().state).frames.capacity();
        assert!(cap <= INBOX_KEPT_CAPACITY, "a drained inbox holds {cap} entries");
        assert_eq!(s.queued_bytes(), 0);
    }

    /// Records what the hub tells it.
    #[derive(Clone, Default)]
    struct Recorder {
        events: Arc<Mutex<Vec<String>>>,
        hub: Arc<Mutex<Option<WeakHub>>>,
    }

    impl Broker for Recorder {
        fn start(&self, hub: WeakHub) {
            *lock(&self.hub) = Some(hub);
        }
        fn subscribed(&self, topic: &str) {
            lock(&self.events).push(format!("+{topic}"));
        }
        fn unsubscribed(&self, topic: &str) {
            lock(&self.events).push(format!("-{topic}"));
        }
        fn publish(&self, topic: &str, message: &Message) {
            let payload = String::from_utf8_lossy(message.payload()).into_owned();
            lock(&self.events).push(format!("{topic}:{payload}"));
        }
    }

    #[test]
    fn the_broker_hears_of_first_and_last_subscribers_and_local_publishes_only() {
        let recorder = Recorder::default();
        let hub = Hub::with_broker(HubConfig::default(), recorder.clone());
        let weak = lock(&recorder.hub).clone().expect("started");
        assert!(weak.upgrade().is_some());
        let mut a = hub.subscriber();
        let mut b = hub.subscriber();
        a.subscribe("t");
        b.subscribe("t");
        hub.publish("t", &Message::text("local"));
        hub.publish_except("t", &Message::text("except"), &a);
        hub.publish_frame("t", &SharedFrame::text("frame"), None);
        hub.publish_frame("t", &SharedFrame::binary(&[b'x'; 300]), None);
        // From the broker: delivered here, never handed back.
        assert_eq!(hub.deliver("t", &Message::text("remote")).delivered, 2);
        hub.publish("t", &Message::Ping(Default::default()));
        a.unsubscribe("t");
        drop(b);
        let long = "x".repeat(300);
        assert_eq!(
            *lock(&recorder.events),
            ["+t", "t:local", "t:except", "t:frame", &format!("t:{long}"), "-t"]
        );
        assert!(matches!(a.inbox().take(None, |_| true), Taken::Empty));
        drop((a, hub));
        assert!(weak.upgrade().is_none(), "the broker's handle kept the hub alive");
    }
}
