//! Topics with fan-out: one publish, encoded once, written to every subscriber.
//!
//! A [`Hub`] maps topic names to the [`Subscriber`]s of each. A server connection gets a
//! subscriber from the hub, attaches it to its [`WebSocket`](crate::WebSocket) with
//! [`WebSocket::attach`](crate::WebSocket::attach) and subscribes it to any number of topics.
//! [`Hub::publish`] encodes the message once, as a [`SharedFrame`] (header and payload in one
//! buffer), and appends it to the topic's log, which every subscriber reads from its own
//! cursor: no copy, no encoding, no allocation and no queue entry per subscriber (a publish
//! to N subscribers costs one log entry, not N). Each connection then writes everything
//! published to it since its last write in one write, while it is being received from, and
//! an entry goes once every subscriber it was for has taken it.
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
//! - **Slow subscribers**: a topic's log holds at most [`HubConfig::max_queued_bytes`] of
//!   publishes some subscriber has not taken into its send queue yet, so no subscriber can
//!   fall further behind than that. Past it the oldest publishes leave the log, and by
//!   [`HubConfig::overflow`] the subscribers that had not taken them miss them (counted), or
//!   have their connection closed with 1013 (Try Again Later). A publish never waits for a
//!   subscriber, so one that does not read cannot slow the others down, and the memory a
//!   topic pins is the bound, however many of its subscribers stop reading.
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

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// The most bytes a topic's log may hold of publishes not yet taken by all their
    /// subscribers into their send queues, frame headers included, plus [`QUEUE_ENTRY_COST`]
    /// per publish: how far behind a subscriber may fall. Default 256 KiB. The log is shared
    /// by the topic's subscribers, so this bounds what the topic pins, however many of them
    /// lag. A publish that every subscriber it was for has taken, or that was for none (a
    /// publisher's own message, left out for it), holds only [`QUEUE_ENTRY_COST`] until the
    /// entries before it go: a subscriber is pushed past the bound by what is queued for it,
    /// plus that much for each publish after its oldest that is not.
    pub max_queued_bytes: usize,
    /// What happens past [`Self::max_queued_bytes`]. Default [`Overflow::Skip`].
    pub overflow: Overflow,
    /// How publishes are compressed for the subscribers that can take one compressed frame
    /// (see the module's documentation); its level and minimum size apply. `None`: never.
    /// Default: [`DeflateConfig::default`].
    pub compression: Option<DeflateConfig>,
}

/// What each publish waiting in a topic's log counts toward [`HubConfig::max_queued_bytes`]
/// besides its frame: the log entry itself, so that a flood of tiny messages is bounded too.
/// One entry serves every subscriber of the topic.
pub const QUEUE_ENTRY_COST: usize = std::mem::size_of::<Entry>();

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
    /// Messages handed to subscribers: queued for them by a publish, less those they missed
    /// after all (skipped, or dropped when they unsubscribed or were closed before taking
    /// them).
    pub deliveries: u64,
    /// Deliveries skipped because the subscriber had fallen behind by more than the bound
    /// ([`Overflow::Skip`]).
    pub skipped: u64,
    /// Deliveries of a compressed frame (one compression per publish shared by them).
    pub compressed_deliveries: u64,
    /// Subscribers closed because they had fallen behind by more than the bound
    /// ([`Overflow::Close`]).
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
    /// Subscribers the message was queued for.
    pub delivered: usize,
    /// Deliveries of earlier messages this publish pushed out of the topic's log, to
    /// subscribers that had not taken them ([`Overflow::Skip`]): the oldest go first.
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
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Subscriptions in all topics.
    subscriptions: AtomicUsize,
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
                armed: AtomicBool::new(false),
                overflowed: AtomicBool::new(false),
                arrivals: AtomicU64::new(0),
                arrivals_seen: AtomicU64::new(0),
                waker: Mutex::new(None),
                memberships: Mutex::new(Vec::new()),
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

    /// Appends `plain` (and its compressed form, made once from `message` when a subscriber
    /// takes compressed frames) to `topic`'s log for every subscriber but `except`, trims the
    /// log to the bound, and wakes the subscribers waiting for it.
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
        let Some(topic) = topics.get(topic) else { return Published::default() };
        // Before the topic's lock, so that compressing holds up no subscriber's take. A
        // subscriber that starts taking compressed frames meanwhile gets this one
        // uncompressed, which is always allowed.
        let compressed =
            if !plain.is_compressed() && topic.compressed_members.load(Ordering::Relaxed) > 0 {
                self.compress(message)
            } else {
                None
            };
        // Woken after the locks are released; the buffer is this thread's, so a publish
        // allocates nothing for it (a waker that publishes from `wake` gets a buffer of its own).
        let mut wake = WAKE.with(|w| std::mem::take(&mut *w.borrow_mut()));
        let mut result = Published::default();
        let mut counts = Counts::default();
        let emptied = {
            let mut state = lock(&topic.state);
            let seq = state.end();
            // Announced before the subscribers' flags are read: a subscriber that arms after
            // this sees the new end and takes the entry itself; one that armed before is woken
            // here (both sides use sequentially consistent order).
            topic.end.store(seq + 1, Ordering::SeqCst);
            let mut entry = Entry {
                plain: Some(plain.clone()),
                compressed,
                except,
                pending: 0,
                pending_compressed: 0,
            };
            let mut i = state.members.len();
            while i > 0 {
                i -= 1;
                let member = &state.members[i];
                let inbox = &member.inbox;
                // Closed for overflow in another topic: it gets nothing more, and what it
                // holds here is released now rather than when its connection is gone.
                if inbox.overflowed.load(Ordering::Relaxed) {
                    let left = state.remove_at(i);
                    counts.left(topic, &left);
                    continue;
                }
                let Some(compressed) = entry.is_for(inbox.id, member.takes_compressed) else {
                    continue;
                };
                entry.pending += 1;
                entry.pending_compressed += u32::from(compressed);
                inbox.arrived();
                if inbox.armed.load(Ordering::SeqCst) && inbox.armed.swap(false, Ordering::SeqCst) {
                    if let Some(waker) = lock(&inbox.waker).take() {
                        wake.push(waker);
                    }
                }
            }
            result.delivered = entry.pending as usize;
            counts.delivered = u64::from(entry.pending);
            counts.compressed = u64::from(entry.pending_compressed);
            // For nobody (a publisher's own message, left out for it): its place in the
            // sequence only.
            entry.settle();
            state.bytes += entry.cost();
            state.entries.push_back(entry);
            self.trim(topic, &mut state, &mut result, &mut counts, &mut wake);
            state.pop_taken();
            counts.left > 0 && state.members.is_empty()
        };
        let emptied = emptied.then(|| topic.clone());
        drop(topics);
        if let Some(topic) = emptied {
            self.drop_if_empty(&topic);
        }
        for waker in wake.drain(..) {
            waker.wake();
        }
        WAKE.with(|w| {
            let mut w = w.borrow_mut();
            if w.capacity() < wake.capacity() {
                *w = wake;
            }
        });
        counts.apply(shared);
        result
    }

    /// Drops the oldest entries while the log holds more than the bound (keeping the newest):
    /// under [`Overflow::Skip`] the subscribers that had not taken them miss them (counted);
    /// under [`Overflow::Close`] those subscribers are marked to be closed and leave the topic.
    fn trim(
        &self,
        topic: &Topic,
        state: &mut TopicState,
        result: &mut Published,
        counts: &mut Counts,
        wake: &mut Vec<Waker>,
    ) {
        let config = &self.shared.config;
        while state.bytes > config.max_queued_bytes && state.entries.len() > 1 {
            let seq = state.base;
            let Some(entry) = state.entries.pop_front() else { break };
            state.base += 1;
            state.bytes -= entry.cost();
            if entry.pending == 0 {
                continue;
            }
            // Not delivered, whatever the policy.
            counts.dropped += u64::from(entry.pending);
            counts.dropped_compressed += u64::from(entry.pending_compressed);
            match config.overflow {
                Overflow::Skip => {
                    result.skipped += entry.pending as usize;
                    counts.skipped += u64::from(entry.pending);
                }
                Overflow::Close => {
                    // Backwards: a removal moves the last member into the place left.
                    let mut i = state.members.len();
                    while i > 0 {
                        i -= 1;
                        let member = &state.members[i];
                        let inbox = &member.inbox;
                        if member.next > seq
                            || entry.frame_for(inbox.id, member.takes_compressed).is_none()
                        {
                            continue;
                        }
                        if !inbox.overflowed.swap(true, Ordering::SeqCst) {
                            counts.closes += 1;
                            if let Some(waker) = lock(&inbox.waker).take() {
                                wake.push(waker);
                            }
                        }
                        // What it had not taken is dropped; it takes nothing more here.
                        let left = state.remove_at(i);
                        counts.left(topic, &left);
                    }
                }
            }
        }
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
        read(&self.shared.topics).get(topic).map_or(0, |t| lock(&t.state).members.len())
    }

    /// How many topics have subscribers.
    pub fn topic_count(&self) -> usize {
        read(&self.shared.topics).len()
    }

    /// The counters and the present size.
    pub fn stats(&self) -> HubStats {
        let shared = &*self.shared;
        HubStats {
            topics: read(&shared.topics).len(),
            subscriptions: shared.subscriptions.load(Ordering::Relaxed),
            published: shared.published.load(Ordering::Relaxed),
            deliveries: shared.deliveries.load(Ordering::Relaxed),
            skipped: shared.skipped.load(Ordering::Relaxed),
            compressed_deliveries: shared.compressed_deliveries.load(Ordering::Relaxed),
            overflow_closes: shared.overflow_closes.load(Ordering::Relaxed),
        }
    }

    /// Adds `inbox` to `topic` (made if new); its cursor starts at the log's end.
    fn add(
        &self,
        topic: &str,
        inbox: &Arc<Inbox>,
        memberships: &mut Vec<Membership>,
    ) -> Arc<Topic> {
        let mut topics = write(&self.shared.topics);
        let topic = match topics.get(topic) {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(Topic::new(topic));
                topics.insert(t.name.clone(), t.clone());
                // Under the lock: the broker hears of first and last subscribers in table order.
                if let Some(broker) = &self.shared.broker {
                    broker.subscribed(&t.name);
                }
                t
            }
        };
        let takes_compressed = inbox.takes_compressed.load(Ordering::Relaxed);
        let (slot, next) = lock(&topic.state).insert(inbox.clone(), takes_compressed);
        if takes_compressed {
            topic.compressed_members.fetch_add(1, Ordering::Relaxed);
        }
        if memberships.capacity() == 0 {
            // Most connections hold one topic: no room for more until a second comes.
            memberships.reserve_exact(1);
        }
        memberships.push(Membership { topic: topic.clone(), slot, next });
        self.shared.subscriptions.fetch_add(1, Ordering::Relaxed);
        topic
    }

    /// Takes `membership`'s inbox out of its topic (what it had not taken is dropped), and
    /// the topic out of the table once it has no subscriber left.
    fn remove(&self, membership: &Membership, inbox: &Arc<Inbox>) {
        let topic = &membership.topic;
        let mut topics = write(&self.shared.topics);
        let (left, empty) = {
            let mut state = lock(&topic.state);
            let left = state.remove(membership.slot, inbox);
            state.pop_taken();
            (left, state.members.is_empty())
        };
        if let Some(left) = left {
            let mut counts = Counts::default();
            counts.left(topic, &left);
            counts.apply(&self.shared);
        }
        self.unlist(&mut topics, topic, empty);
    }

    /// Takes `topic` out of the table if no subscriber is left in it (one that was closed
    /// for overflow by a publish, say).
    fn drop_if_empty(&self, topic: &Arc<Topic>) {
        let mut topics = write(&self.shared.topics);
        let empty = lock(&topic.state).members.is_empty();
        self.unlist(&mut topics, topic, empty);
    }

    /// Takes `topic`, found `empty`, out of `topics` (if it is still the one listed), and
    /// the node out of it at the broker.
    fn unlist(&self, topics: &mut HashMap<Arc<str>, Arc<Topic>>, topic: &Arc<Topic>, empty: bool) {
        if empty && topics.get(&topic.name).is_some_and(|t| Arc::ptr_eq(t, topic)) {
            topics.remove(&topic.name);
            if let Some(broker) = &self.shared.broker {
                broker.unsubscribed(&topic.name);
            }
        }
    }
}

/// Counter changes of one publish or removal, applied to the hub's counters at the end.
#[derive(Default)]
struct Counts {
    delivered: u64,
    compressed: u64,
    /// Deliveries queued earlier that will not be made after all.
    dropped: u64,
    dropped_compressed: u64,
    skipped: u64,
    closes: u64,
    /// Subscriptions that ended.
    left: usize,
}

impl Counts {
    /// `left` left `topic`.
    fn left(&mut self, topic: &Topic, left: &Left) {
        if left.takes_compressed {
            topic.compressed_members.fetch_sub(1, Ordering::Relaxed);
        }
        self.dropped += left.dropped;
        self.dropped_compressed += left.dropped_compressed;
        self.left += 1;
    }

    fn apply(&self, shared: &HubShared) {
        let add = |counter: &AtomicU64, up: u64, down: u64| {
            if up > down {
                counter.fetch_add(up - down, Ordering::Relaxed);
            } else if down > up {
                counter.fetch_sub(down - up, Ordering::Relaxed);
            }
        };
        add(&shared.deliveries, self.delivered, self.dropped);
        add(&shared.compressed_deliveries, self.compressed, self.dropped_compressed);
        add(&shared.skipped, self.skipped, 0);
        add(&shared.overflow_closes, self.closes, 0);
        if self.left > 0 {
            shared.subscriptions.fetch_sub(self.left, Ordering::Relaxed);
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
    topics: Vec<Arc<Topic>>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("id", &self.inbox.id)
            .field("topics", &self.topics().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Subscribes to `topic`; `false` if already subscribed. Publishes from now on reach it.
    pub fn subscribe(&mut self, topic: &str) -> bool {
        if self.topics.iter().any(|t| &*t.name == topic) {
            return false;
        }
        let mut memberships = lock(&self.inbox.memberships);
        let topic = self.hub.add(topic, &self.inbox, &mut memberships);
        drop(memberships);
        if self.topics.capacity() == 0 {
            self.topics.reserve_exact(1);
        }
        self.topics.push(topic);
        true
    }

    /// Unsubscribes from `topic`; `false` if not subscribed. What was published to it and is
    /// not yet in the connection's send queue is not delivered.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        let Some(i) = self.topics.iter().position(|t| &*t.name == topic) else { return false };
        let topic = self.topics.swap_remove(i);
        let mut memberships = lock(&self.inbox.memberships);
        if let Some(j) = memberships.iter().position(|m| Arc::ptr_eq(&m.topic, &topic)) {
            let membership = memberships.swap_remove(j);
            self.hub.remove(&membership, &self.inbox);
        }
        true
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|t| &*t.name)
    }

    /// The id to give [`Hub::publish_frame`] to leave this subscriber out.
    pub fn id(&self) -> SubscriberId {
        self.inbox.id
    }

    /// Bytes of deliveries waiting to reach the connection's send queue, as counted against
    /// [`HubConfig::max_queued_bytes`] (each frame, plus [`QUEUE_ENTRY_COST`]).
    pub fn queued_bytes(&self) -> usize {
        let memberships = lock(&self.inbox.memberships);
        let mut total = 0;
        for m in memberships.iter() {
            let mut state = lock(&m.topic.state);
            let Some((member, entries, from)) = state.cursor(m.slot, &self.inbox) else { continue };
            for entry in entries.range(from..) {
                if let Some(frame) = entry.frame_for(self.inbox.id, member.takes_compressed) {
                    total += frame.wire_len() + QUEUE_ENTRY_COST;
                }
            }
        }
        total
    }

    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Records whether the connection attached takes compressed shared frames (entries
    /// already in its topics' logs are reckoned again for it, and the hub's counters with
    /// them).
    pub(crate) fn set_takes_compressed(&self, takes: bool) {
        self.inbox.set_takes_compressed(takes).apply(&self.hub.shared);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.topics.clear();
        let memberships = std::mem::take(&mut *lock(&self.inbox.memberships));
        for membership in &memberships {
            self.hub.remove(membership, &self.inbox);
        }
    }
}

/// One topic: its subscribers, and the log of what was published to it that some of them
/// have not taken yet. Each subscriber reads the log from its own cursor; an entry goes when
/// every subscriber it was for has taken it, or when the log passes the bound.
struct Topic {
    name: Arc<str>,
    /// The sequence number of the next publish: a subscriber whose cursor is there has
    /// nothing new, and can tell without the lock.
    end: AtomicU64,
    /// Subscribers that take compressed frames: a publish is compressed only when there are.
    compressed_members: AtomicUsize,
    state: Mutex<TopicState>,
}

impl Topic {
    fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            end: AtomicU64::new(0),
            compressed_members: AtomicUsize::new(0),
            state: Mutex::new(TopicState::default()),
        }
    }
}

#[derive(Default)]
struct TopicState {
    /// The subscribers, dense (a fan-out walks no gaps): one leaving is swapped out.
    members: Vec<Member>,
    /// Where each slot's member is in `members`, [`VACANT`] for a free slot. A membership
    /// keeps its slot for life, while its member may move in `members`.
    slots: Vec<u32>,
    free: Vec<u32>,
    /// The sequence number of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    /// What `entries` counts toward the bound.
    bytes: usize,
}

/// A free slot in [`TopicState::slots`].
const VACANT: u32 = u32::MAX;

struct Member {
    inbox: Arc<Inbox>,
    /// Its slot in [`TopicState::slots`].
    slot: u32,
    /// The sequence number of the next entry to take (below `base`: it missed some).
    next: u64,
    takes_compressed: bool,
}

/// One publish in a topic's log.
struct Entry {
    /// `None` once no subscriber is to take it (its frames dropped, its place in the log kept
    /// until the entries before it go).
    plain: Option<SharedFrame>,
    compressed: Option<SharedFrame>,
    except: Option<SubscriberId>,
    /// Subscribers it is for that have not taken it.
    pending: u32,
    /// Of them, those that take `compressed` (when there is one).
    pending_compressed: u32,
}

impl Entry {
    fn cost(&self) -> usize {
        self.plain.as_ref().map_or(0, SharedFrame::wire_len)
            + self.compressed.as_ref().map_or(0, SharedFrame::wire_len)
            + QUEUE_ENTRY_COST
    }

    /// Whether the entry is for the subscriber `id`, and then whether it gets the compressed
    /// frame.
    fn is_for(&self, id: SubscriberId, takes_compressed: bool) -> Option<bool> {
        self.frame_for(id, takes_compressed).map(SharedFrame::is_compressed)
    }

    /// The frame for the subscriber `id`, if the entry is for it.
    fn frame_for(&self, id: SubscriberId, takes_compressed: bool) -> Option<&SharedFrame> {
        let plain = self.plain.as_ref()?;
        if self.except == Some(id) {
            None
        } else if takes_compressed {
            Some(self.compressed.as_ref().unwrap_or(plain))
        } else if plain.is_compressed() {
            None
        } else {
            Some(plain)
        }
    }

    /// Drops the frames of an entry no subscriber is to take any more, so that what others
    /// did not take (a publisher's own messages, left out for it) holds no bytes of the bound
    /// but the entry's own; returns the bytes released. A compressed-only entry goes the same
    /// way: a subscriber that starts taking compressed frames later does not get it (as it
    /// would not once the entry left the front of the log).
    #[inline]
    fn settle(&mut self) -> usize {
        if self.pending > 0 || self.plain.is_none() {
            return 0;
        }
        let released = self.cost() - QUEUE_ENTRY_COST;
        self.plain = None;
        self.compressed = None;
        released
    }
}

/// What a subscriber that left a topic had not taken.
struct Left {
    dropped: u64,
    dropped_compressed: u64,
    /// It took compressed frames (one fewer in the topic's count).
    takes_compressed: bool,
}

impl TopicState {
    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn insert(&mut self, inbox: Arc<Inbox>, takes_compressed: bool) -> (u32, u64) {
        let position = self.members.len() as u32;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = position;
                slot
            }
            None => {
                // Slots fit in a u32: a topic has fewer subscribers than that.
                self.slots.push(position);
                (self.slots.len() - 1) as u32
            }
        };
        let next = self.end();
        self.members.push(Member { inbox, slot, next, takes_compressed });
        (slot, next)
    }

    /// Where the member in `slot` is, if `inbox` still holds it (a slot is reused once its
    /// member left).
    fn position(&self, slot: u32, inbox: &Inbox) -> Option<usize> {
        let position = *self.slots.get(slot as usize)? as usize;
        let member = self.members.get(position)?;
        std::ptr::eq(&*member.inbox, inbox).then_some(position)
    }

    /// The member in `slot` if `inbox` still holds it, the log, and the index in it of the
    /// first entry the member has not taken (0 when the log was trimmed past its cursor).
    fn cursor(
        &mut self,
        slot: u32,
        inbox: &Inbox,
    ) -> Option<(&mut Member, &mut VecDeque<Entry>, usize)> {
        let position = self.position(slot, inbox)?;
        let member = &mut self.members[position];
        let from = member.next.saturating_sub(self.base) as usize;
        Some((member, &mut self.entries, from))
    }

    /// Takes out the member at `position`, releasing what it had not taken.
    fn remove_at(&mut self, position: usize) -> Left {
        let member = self.members.swap_remove(position);
        if let Some(moved) = self.members.get(position) {
            self.slots[moved.slot as usize] = position as u32;
        }
        let from = member.next.saturating_sub(self.base) as usize;
        let id = member.inbox.id;
        let mut left =
            Left { dropped: 0, dropped_compressed: 0, takes_compressed: member.takes_compressed };
        let mut released = 0;
        for entry in self.entries.range_mut(from..) {
            if let Some(compressed) = entry.is_for(id, member.takes_compressed) {
                let compressed = u32::from(compressed);
                entry.pending -= 1;
                entry.pending_compressed -= compressed;
                left.dropped += 1;
                left.dropped_compressed += u64::from(compressed);
                released += entry.settle();
            }
        }
        self.bytes -= released;
        if self.members.is_empty() {
            self.members = Vec::new();
            self.slots = Vec::new();
            self.free = Vec::new();
        } else {
            self.slots[member.slot as usize] = VACANT;
            self.free.push(member.slot);
        }
        left
    }

    /// Takes out the member in `slot` if `inbox` holds it, releasing what it had not taken.
    fn remove(&mut self, slot: u32, inbox: &Inbox) -> Option<Left> {
        let position = self.position(slot, inbox)?;
        Some(self.remove_at(position))
    }

    /// Drops the entries at the front that every subscriber they were for has taken.
    fn pop_taken(&mut self) {
        while let Some(entry) = self.entries.front() {
            if entry.pending > 0 {
                break;
            }
            self.bytes -= entry.cost();
            self.entries.pop_front();
            self.base += 1;
        }
        // Drained: a burst's capacity is not kept for the life of the topic (a few entries
        // are, so that steady publishing does not allocate per publish).
        if self.entries.is_empty() && self.entries.capacity() > LOG_KEPT_CAPACITY {
            self.entries.shrink_to(LOG_KEPT_CAPACITY);
        }
    }
}

/// Entries a drained topic log keeps allocated.
const LOG_KEPT_CAPACITY: usize = 8;

/// A subscriber's place in one topic.
struct Membership {
    topic: Arc<Topic>,
    slot: u32,
    /// The subscriber's cursor there, as of its last take: equal to the topic's end when
    /// there is nothing new (checked without the topic's lock).
    next: u64,
}

thread_local! {
    /// Wakers collected by a publish, woken once its locks are released.
    static WAKE: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// One connection's side of its subscriptions: filled by publishers (through the topics'
/// logs), emptied by the connection's driver ([`Inbox::take`]).
pub(crate) struct Inbox {
    id: SubscriberId,
    /// The connection it is attached to takes compressed shared frames.
    takes_compressed: AtomicBool,
    /// A waker is registered and no publish has woken it since.
    armed: AtomicBool,
    /// Passed the bound under [`Overflow::Close`]: the connection is to be closed.
    overflowed: AtomicBool,
    /// Bumped by every publish that is for this subscriber: its driver sees whether any came
    /// since it last looked. Not a count: two topics publishing at once may bump it once.
    arrivals: AtomicU64,
    /// `arrivals` when the driver last took or deferred a take: the driver's own note, kept
    /// here rather than in every connection's socket. Only the driver reads or writes it.
    arrivals_seen: AtomicU64,
    /// The task to wake on the next delivery. Locked on its own, never while waiting for
    /// another lock.
    waker: Mutex<Option<Waker>>,
    /// The topics subscribed to, with the cursor in each. Locked before any topic's lock.
    memberships: Mutex<Vec<Membership>>,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("id", &self.id).finish_non_exhaustive()
    }
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
    /// Records whether the connection attached takes compressed shared frames (entries
    /// already in its topics' logs are reckoned again for it).
    /// Returns the change to the hub's delivery counters, for the caller to apply.
    fn set_takes_compressed(&self, takes: bool) -> Counts {
        let mut counts = Counts::default();
        let memberships = lock(&self.memberships);
        if self.takes_compressed.swap(takes, Ordering::Relaxed) == takes {
            return counts;
        }
        for m in memberships.iter() {
            let mut state = lock(&m.topic.state);
            let Some((member, entries, from)) = state.cursor(m.slot, self) else { continue };
            let mut released = 0;
            for entry in entries.range_mut(from..) {
                if let Some(compressed) = entry.is_for(self.id, member.takes_compressed) {
                    entry.pending -= 1;
                    entry.pending_compressed -= u32::from(compressed);
                    counts.dropped += 1;
                    counts.dropped_compressed += u64::from(compressed);
                }
                if let Some(compressed) = entry.is_for(self.id, takes) {
                    entry.pending += 1;
                    entry.pending_compressed += u32::from(compressed);
                    counts.delivered += 1;
                    counts.compressed += u64::from(compressed);
                }
                released += entry.settle();
            }
            member.takes_compressed = takes;
            state.bytes -= released;
            if takes {
                m.topic.compressed_members.fetch_add(1, Ordering::Relaxed);
            } else {
                m.topic.compressed_members.fetch_sub(1, Ordering::Relaxed);
            }
            state.pop_taken();
        }
        counts
    }

    /// Called by a publish for this subscriber, under its topic's lock. A load and a store
    /// rather than a read-modify-write (no locked instruction per delivery): a bump may be
    /// lost to a publish in another topic at the same moment. That costs at most a deferral
    /// not made; what is taken, and when the task is woken, never depends on this value.
    fn arrived(&self) {
        let n = self.arrivals.load(Ordering::Relaxed);
        self.arrivals.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// A value that changes when a publish for this subscriber comes (`u64::MAX` once it
    /// overflowed): a driver that noted it before a take, or when it deferred one, sees
    /// whether anything for it came since. Publishes that leave it out (its own, sent with
    /// [`Hub::publish_except`]) do not move it.
    pub(crate) fn arrivals(&self) -> u64 {
        if self.overflowed.load(Ordering::Relaxed) {
            return u64::MAX;
        }
        self.arrivals.load(Ordering::Relaxed)
    }

    /// What the driver noted of [`Inbox::arrivals`] at its last take or deferral.
    pub(crate) fn arrivals_seen(&self) -> u64 {
        self.arrivals_seen.load(Ordering::Relaxed)
    }

    /// Notes `arrivals` as seen (the driver only).
    pub(crate) fn set_arrivals_seen(&self, arrivals: u64) {
        self.arrivals_seen.store(arrivals, Ordering::Relaxed);
    }

    /// Hands what was published to the subscriber's topics since its last take to `take`, in
    /// order per topic, while it returns true (it queues them on the connection). With
    /// `waker`, registers it to be woken by the next publish whatever the outcome: a driver
    /// that stops early (its send queue full, a chunked message half sent) must still hear of
    /// what comes next, and of an overflow under [`Overflow::Close`] while it waits for the
    /// transport.
    pub(crate) fn take(
        &self,
        waker: Option<&Waker>,
        mut take: impl FnMut(&SharedFrame) -> bool,
    ) -> Taken {
        let mut memberships = lock(&self.memberships);
        if let Some(waker) = waker {
            {
                let mut slot = lock(&self.waker);
                match &*slot {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *slot = Some(waker.clone()),
                }
            }
            // Before the logs' ends are read: see `Hub::fan_out`.
            self.armed.store(true, Ordering::SeqCst);
        }
        if self.overflowed.load(Ordering::SeqCst) {
            return Taken::Overflowed;
        }
        for m in memberships.iter_mut() {
            if m.topic.end.load(Ordering::SeqCst) == m.next {
                continue;
            }
            let mut state = lock(&m.topic.state);
            let base = state.base;
            // From the base when the log was trimmed past its cursor (counted then).
            let Some((member, entries, from)) = state.cursor(m.slot, self) else { continue };
            let takes_compressed = member.takes_compressed;
            let mut taken = from;
            let mut more = false;
            let mut released = 0;
            for entry in entries.range_mut(from..) {
                match entry
                    .frame_for(self.id, takes_compressed)
                    .map(|f| (f.is_compressed(), take(f)))
                {
                    None => {}
                    Some((compressed, true)) => {
                        entry.pending -= 1;
                        entry.pending_compressed -= u32::from(compressed);
                        // Behind an entry someone else has yet to take, a taken one holds
                        // its frames no longer.
                        if entry.pending == 0 && taken > 0 {
                            released += entry.settle();
                        }
                    }
                    Some((_, false)) => {
                        more = true;
                        break;
                    }
                }
                taken += 1;
            }
            let next = base + taken as u64;
            member.next = next;
            m.next = next;
            state.bytes -= released;
            state.pop_taken();
            if more {
                return Taken::More;
            }
        }
        Taken::Empty
    }
}

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

    /// The entries of `topic`'s log and their capacity.
    fn log(hub: &Hub, topic: &str) -> (usize, usize) {
        let topics = read(&hub.shared.topics);
        let state = lock(&topics[topic].state);
        (state.entries.len(), state.entries.capacity())
    }

    /// Subscribers that come and go leave no gaps for a publish to walk: the members stay
    /// dense, and each remaining subscriber keeps its place (its slot) through the moves.
    #[test]
    fn members_stay_dense_through_churn() {
        let hub = Hub::new();
        let mut keep: Vec<_> = (0..3).map(|_| hub.subscriber()).collect();
        let mut churn: Vec<_> = (0..1000).map(|_| hub.subscriber()).collect();
        for (i, s) in churn.iter_mut().enumerate() {
            s.subscribe("t");
            if i % 400 == 0 {
                keep[i / 400].subscribe("t");
            }
        }
        drop(churn);
        let members = |hub: &Hub| {
            let topics = read(&hub.shared.topics);
            let state = lock(&topics["t"].state);
            (state.members.len(), state.slots.len() - state.free.len())
        };
        assert_eq!(members(&hub), (3, 3));
        assert_eq!(hub.publish("t", &Message::text("x")).delivered, 3);
        for s in &keep {
            assert_eq!(s.queued_bytes(), 3 + QUEUE_ENTRY_COST, "{s:?}");
        }
        assert!(keep[1].unsubscribe("t"));
        assert_eq!(members(&hub), (2, 2));
        assert_eq!(keep[0].queued_bytes() + keep[2].queued_bytes(), 2 * (3 + QUEUE_ENTRY_COST));
        drop(keep);
        assert_eq!(hub.topic_count(), 0);
    }

    /// A publish to many subscribers is one log entry; a drained log lets go of a burst's
    /// capacity.
    #[test]
    fn one_log_entry_serves_every_subscriber_and_a_drained_log_keeps_only_a_few() {
        let hub = Hub::new();
        let mut subscribers: Vec<_> = (0..100).map(|_| hub.subscriber()).collect();
        for s in &mut subscribers {
            s.subscribe("t");
        }
        for _ in 0..2000 {
            assert_eq!(hub.publish("t", &Message::text("x")).delivered, 100);
        }
        assert_eq!(log(&hub, "t").0, 2000);
        let per_subscriber = 2000 * (3 + QUEUE_ENTRY_COST);
        assert_eq!(subscribers[0].queued_bytes(), per_subscriber);
        // All but the last have taken everything: the log stays for the one behind.
        for s in &subscribers[..99] {
            let mut n = 0;
            assert!(matches!(
                s.inbox().take(None, |_| {
                    n += 1;
                    true
                }),
                Taken::Empty
            ));
            assert_eq!(n, 2000);
            assert_eq!(s.queued_bytes(), 0);
        }
        assert_eq!(log(&hub, "t").0, 2000);
        assert!(matches!(subscribers[99].inbox().take(None, |_| true), Taken::Empty));
        let (len, cap) = log(&hub, "t");
        assert_eq!(len, 0);
        assert!(cap <= LOG_KEPT_CAPACITY, "a drained log holds {cap} entries");
        assert_eq!(hub.stats().deliveries, 200_000);
    }

    /// A subscriber that falls behind by more than the bound misses the oldest publishes
    /// (counted), keeps the newest, and the log never holds more than the bound.
    #[test]
    fn a_lagging_subscriber_misses_the_oldest_and_the_log_stays_bounded() {
        let bound = 10 * (3 + QUEUE_ENTRY_COST);
        let hub = Hub::with_config(HubConfig::default().max_queued_bytes(bound));
        let mut fast = hub.subscriber();
        let mut slow = hub.subscriber();
        fast.subscribe("t");
        slow.subscribe("t");
        let mut fast_got = Vec::new();
        let mut skipped = 0;
        for i in 0..100u8 {
            skipped += hub.publish("t", &Message::binary(vec![i])).skipped;
            fast.inbox().take(None, |f| {
                fast_got.push(f.as_bytes()[2]);
                true
            });
            assert!(log(&hub, "t").0 <= 10);
        }
        assert_eq!(fast_got, (0..100).collect::<Vec<u8>>());
        let mut slow_got = Vec::new();
        slow.inbox().take(None, |f| {
            slow_got.push(f.as_bytes()[2]);
            true
        });
        assert_eq!(slow_got, (90..100).collect::<Vec<u8>>());
        assert_eq!(skipped, 90);
        let stats = hub.stats();
        assert_eq!((stats.skipped, stats.deliveries), (90, 110));
        assert_eq!(log(&hub, "t").0, 0);
    }

    /// Leaving a topic releases what the subscriber had not taken, and the counts follow.
    #[test]
    fn unsubscribing_releases_the_entries_held_for_the_subscriber() {
        let hub = Hub::new();
        let mut a = hub.subscriber();
        let mut b = hub.subscriber();
        a.subscribe("t");
        b.subscribe("t");
        hub.publish("t", &Message::text("one"));
        hub.publish_except("t", &Message::text("two"), &a);
        assert!(matches!(a.inbox().take(None, |_| true), Taken::Empty));
        assert_eq!(log(&hub, "t").0, 2);
        assert!(b.unsubscribe("t"));
        assert_eq!(log(&hub, "t").0, 0);
        assert_eq!(hub.stats().deliveries, 1);
        assert_eq!(hub.subscriber_count("t"), 1);
        // The freed slot is taken by the next subscriber, which starts at the end.
        let mut c = hub.subscriber();
        c.subscribe("t");
        hub.publish("t", &Message::text("three"));
        let mut got = Vec::new();
        c.inbox().take(None, |f| {
            got.push(f.as_bytes().to_vec());
            true
        });
        assert_eq!(got, [SharedFrame::text("three").as_bytes().to_vec()]);
        drop((a, c));
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(hub.stats().subscriptions, 0);
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

    /// The log's books after every step of a random mix of subscribes, unsubscribes, drops,
    /// publishes (plain, to all but one, compressed-only), partial takes and changes of
    /// `takes_compressed`, under both overflow policies: `bytes` is the sum of the entries'
    /// costs, each entry's `pending` and `pending_compressed` are the members still to take
    /// it, the slots map to the dense members, and the subscription count is the members'.
    #[test]
    fn the_log_books_balance_through_random_churn() {
        fn check(hub: &Hub, subs: &[Option<Subscriber>]) {
            let topics = read(&hub.shared.topics);
            let mut members = 0;
            for topic in topics.values() {
                let state = lock(&topic.state);
                assert!(!state.members.is_empty(), "empty topic {} listed", topic.name);
                members += state.members.len();
                let cost: usize = state.entries.iter().map(Entry::cost).sum();
                assert_eq!(state.bytes, cost, "bytes of {}", topic.name);
                assert_eq!(state.slots.len() - state.free.len(), state.members.len());
                for (i, m) in state.members.iter().enumerate() {
                    assert_eq!(state.slots[m.slot as usize] as usize, i, "slot of member {i}");
                    assert!(m.next <= state.end());
                }
                for &f in &state.free {
                    assert_eq!(state.slots[f as usize], VACANT);
                }
                let compressed = state.members.iter().filter(|m| m.takes_compressed).count();
                assert_eq!(topic.compressed_members.load(Ordering::Relaxed), compressed);
                assert_eq!(topic.end.load(Ordering::Relaxed), state.end());
                for (k, e) in state.entries.iter().enumerate() {
                    let seq = state.base + k as u64;
                    let (mut p, mut pc) = (0, 0);
                    for m in state.members.iter().filter(|m| m.next <= seq) {
                        if let Some(c) = e.is_for(m.inbox.id, m.takes_compressed) {
                            p += 1;
                            pc += u32::from(c);
                        }
                    }
                    assert_eq!((e.pending, e.pending_compressed), (p, pc), "entry {seq}");
                }
            }
            assert_eq!(hub.stats().subscriptions, members);
            // Every membership whose member is still in its topic is found by its slot.
            for s in subs.iter().flatten() {
                for m in lock(&s.inbox.memberships).iter() {
                    let state = lock(&m.topic.state);
                    let found = state.position(m.slot, &s.inbox).is_some();
                    let present = state.members.iter().any(|x| Arc::ptr_eq(&x.inbox, &s.inbox));
                    assert_eq!(found, present);
                    if let Some(p) = state.position(m.slot, &s.inbox) {
                        assert_eq!(state.members[p].next, m.next);
                    }
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let noise: Vec<u8> =
            (0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for overflow in [Overflow::Skip, Overflow::Close] {
            let hub = Hub::with_config(
                HubConfig::default()
                    .max_queued_bytes(12 * (40 + QUEUE_ENTRY_COST))
                    .overflow(overflow),
            );
            let mut compressor = SharedCompressor::new(&DeflateConfig::default());
            let mut subs: Vec<Option<Subscriber>> = (0..8).map(|_| None).collect();
            let names = ["a", "b", "c"];
            for _ in 0..20_000 {
                let i = rand(8) as usize;
                let topic = names[rand(3) as usize];
                match rand(10) {
                    0 => {
                        subs[i].get_or_insert_with(|| hub.subscriber()).subscribe(topic);
                    }
                    1 => {
                        if let Some(s) = &mut subs[i] {
                            s.unsubscribe(topic);
                        }
                    }
                    2 if rand(4) == 0 => subs[i] = None,
                    3 => {
                        if let Some(s) = &subs[i] {
                            s.inbox.set_takes_compressed(rand(2) == 0);
                        }
                    }
                    4 => {
                        let m = Message::binary(noise[..rand(300) as usize].to_vec());
                        if let Some(f) = SharedFrame::compressed(&m, &mut compressor) {
                            hub.publish_frame(topic, &f, None);
                        }
                    }
                    5 => {
                        if let Some(s) = &subs[i] {
                            hub.publish_except(
                                topic,
                                &Message::text("e".repeat(rand(40) as usize)),
                                s,
                            );
                        }
                    }
                    6 | 7 => {
                        if let Some(s) = &subs[i] {
                            let mut budget = rand(6);
                            let taken = s.inbox.take(None, |_| {
                                budget = budget.saturating_sub(1);
                                budget > 0
                            });
                            if matches!(taken, Taken::Overflowed) && rand(2) == 0 {
                                subs[i] = None;
                            }
                        }
                    }
                    _ => {
                        hub.publish(topic, &Message::text("p".repeat(rand(40) as usize)));
                    }
                }
                check(&hub, &subs);
            }
            drop(subs);
            let stats = hub.stats();
            assert_eq!((stats.topics, stats.subscriptions), (0, 0));
            // The mix reached the overflow paths.
            assert!(stats.skipped + stats.overflow_closes > 0, "{stats:?}");
        }
    }
}
