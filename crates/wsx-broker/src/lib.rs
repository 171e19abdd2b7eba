//! Pub/sub across nodes: a [`wsx::pubsub::Hub`] joined to the hubs of other nodes through a
//! Redis or NATS broker.
//!
//! A [`Link`] is the hub's [`Broker`]: made from a URL, handed to [`Hub::with_broker`], it runs
//! one task that keeps a connection to the broker. The node subscribes at the broker only to
//! the topics it has local subscribers for (at the first, and unsubscribes after the last),
//! sends every local publish to the broker, and delivers what the broker brings from other
//! nodes to its local subscribers with [`Hub::deliver`], encoded once as any publish.
//!
//! ```no_run
//! # async fn run() -> Result<(), wsx_broker::Error> {
//! use wsx::pubsub::{Hub, HubConfig};
//! use wsx_broker::{Link, LinkConfig};
//!
//! let link = Link::new("redis://127.0.0.1:6379", LinkConfig::default())?;
//! let hub = Hub::with_broker(HubConfig::default(), link.clone());
//! // ... serve WebSockets with `hub` as with an in-process one; `link.stats()` for /stats.
//! # Ok(()) }
//! ```
//!
//! URLs: `redis://[user:pass@]host[:port][/db]`, `rediss://` for TLS (feature `redis`);
//! `nats://[user:pass@]host[:port]` or `nats://token@host[:port]`, `tls://` for TLS (feature
//! `nats`); user, password and token percent-decoded. Credentials come from the URL. TLS checks
//! the broker's certificate against the built-in roots (Redis: the webpki roots; NATS: the
//! system's), or only against the CA certificates of [`LinkConfig::tls_ca`] when that is set
//! (a broker with a private CA); [`LinkConfig::tls_client_cert`] answers a broker that asks
//! for a client certificate (mutual TLS). Both need a TLS URL (`rediss://`, `tls://`) and are
//! read and checked by [`Link::new`], so a missing or unreadable file is an error at once.
//! A broker that refuses the credentials (Redis `WRONGPASS`, `NOAUTH`, `NOPERM`; NATS
//! `Authorization Violation`) is an outage like a broker that is away: logged once (at error
//! level, naming the credentials), shown by [`Link::stats`] ([`LinkStats::last_error`],
//! [`LinkStats::failed_connects`] growing with every retry), retried with backoff, so fixing
//! the broker's users needs no restart of the node.
//!
//! # Semantics
//!
//! - **At most once.** A message reaches each subscriber on another node once or not at all;
//!   nothing is stored, acknowledged or retried, as with Redis PUB/SUB and NATS core (and
//!   Centrifugo's PUB/SUB brokers).
//! - **Each message once.** Every published message carries this node's id
//!   ([`Link::node_id`]); a node skips its own messages when the broker brings them back, so
//!   a local subscriber gets a local publish once, from the local fan-out.
//! - **Order.** The messages of one publisher on one node to one topic reach every subscriber,
//!   on every node, in publish order: the node's link sends them in order on one connection
//!   and the broker forwards them in order. Nothing is promised between publishers, nodes or
//!   topics.
//! - **No subscribers anywhere**: the broker drops the message (the node sends it anyway: it
//!   does not know of the other nodes' subscribers). A topic without local subscribers gets
//!   nothing from the broker: the node is not subscribed to it.
//! - **What an outage loses.** While the link is down (from the moment the connection fails
//!   until it is back and has resubscribed): local publishes still reach local subscribers but
//!   not the other nodes (they are dropped, not queued; [`LinkStats::dropped`] counts them,
//!   with what was queued when the connection failed); and messages other nodes publish do
//!   not reach this node. A subscriber that joins during an outage gets local publishes at
//!   once and remote ones after the reconnect. After the reconnect the node resubscribes every
//!   live topic in batches, and delivery resumes; nothing from the outage is replayed.
//! - **A slow broker** costs a bounded queue: at most [`LinkConfig::max_queued`] messages and
//!   [`LinkConfig::max_queued_bytes`] bytes wait to be sent; past that a publish is dropped for
//!   the other nodes and counted, and the publisher never waits. Bytes stay counted until the
//!   driver has handed them on: Redis until the broker answered the pipeline (so nothing more
//!   waits); NATS until async-nats took the message into its channel, which holds at most 128
//!   more (with its 64 KiB write buffer: the only bytes beyond the bound). Measured with a
//!   stalled broker and 1,000 publishes of 512 KiB, 16 MiB bound: the process grew 19 MiB
//!   (Redis), 81 MiB (NATS).
//! - **What comes in** is checked: a payload over [`LinkConfig::max_message_size`] is dropped
//!   and counted ([`LinkStats::too_large`]); Redis still reads it whole first (up to its
//!   `proto-max-bulk-len`, 512 MB by default), NATS refuses it at the server past its
//!   `max_payload` (1 MiB by default). Anything that begins with the envelope's prefix (`wsx`
//!   and a byte below 0x20, the version) but is not a valid version-1 envelope is dropped and
//!   counted ([`LinkStats::malformed`]). Everything else is a *foreign* message (published by
//!   something else than a node, `redis-cli PUBLISH wsx.room hi` say): delivered as it is,
//!   text when it is UTF-8, binary otherwise. NATS holds at most 8,192 messages per topic
//!   waiting for the link's task; past that async-nats drops them (a slow consumer), counted in
//!   [`LinkStats::slow_consumer`].
//! - **Credentials never show**: logs, [`LinkStats::url`], `Debug` and [`public_url`] give the
//!   URL with its password as `***`, and a user without a password (a NATS token) as well.
//! - **One hub per link**: a clone of a link given to a second hub is refused there (logged at
//!   error level; that hub stays local), so it cannot disturb the first hub's topics.

#![deny(unsafe_code)]
// Without a broker feature there is no driver: the link refuses every URL, and the machinery
// below is unused.
#![cfg_attr(
    not(any(feature = "redis", feature = "nats")),
    allow(dead_code, unused_variables, unreachable_code, unused_imports)
)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{error, info, warn};
use wsx::pubsub::{Broker, Hub, WeakHub};
use wsx::{Message, Utf8Bytes};

#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "redis")]
mod redis;

/// Why a [`Link`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL does not parse.
    #[error("invalid broker URL: {0}")]
    Url(#[from] url::ParseError),
    /// The URL's scheme is not one this build knows (`redis`, `rediss`, `nats`, `tls`, by
    /// the features enabled).
    #[error("unsupported broker scheme {0:?} (this build knows: {known})", known = known_schemes())]
    Scheme(String),
    /// The broker's client refuses the URL (a Redis database that is not a number, say).
    #[error("invalid broker URL: {0}")]
    Invalid(String),
    /// [`Link::new`] was called outside a tokio runtime.
    #[error("a broker link needs a tokio runtime")]
    NoRuntime,
    /// A TLS file of [`LinkConfig`] is missing or holds no certificate (key), or TLS files
    /// were given with a URL that is not a TLS one.
    #[error("broker TLS: {0}")]
    Tls(String),
}

/// Settings of a [`Link`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkConfig {
    /// Publishes waiting to go to the broker, at most. Default 65,536.
    pub max_queued: usize,
    /// Payload bytes waiting to go to the broker, at most. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// Topics per SUBSCRIBE/UNSUBSCRIBE command (Redis); all the commands of a resubscription
    /// are sent without waiting for each other's replies. Default 1,000.
    pub subscribe_batch: usize,
    /// Connecting, and any one request to the broker, give up after this. Default 5 s.
    pub timeout: Duration,
    /// The connection is checked with a ping this often (answered within [`Self::timeout`],
    /// or the connection counts as lost; NATS: async-nats's own pings). Default 5 s.
    pub ping_interval: Duration,
    /// The first reconnect waits about this long; each further one twice as long as the
    /// last, up to [`Self::max_backoff`], each with random jitter (50-100 % of the delay).
    /// Default 100 ms.
    pub min_backoff: Duration,
    /// The longest wait between reconnects. Default 5 s.
    pub max_backoff: Duration,
    /// Put before a topic's name to make the broker channel (Redis) or subject (NATS, where
    /// the topic is escaped into one subject token). Default `wsx.`.
    pub prefix: String,
    /// A message from the broker whose payload is longer than this is dropped (and counted
    /// in [`LinkStats::too_large`]), as the node's own limit on what its clients publish
    /// would refuse it. Default 64 MiB.
    pub max_message_size: usize,
    /// A PEM file of CA certificates: the broker's certificate is checked against these only,
    /// not the built-in roots. Needs a TLS URL (`rediss://`, `tls://`). Default none.
    pub tls_ca: Option<PathBuf>,
    /// A PEM certificate chain and its PEM private key, sent when the broker asks for a
    /// client certificate (mutual TLS). Needs a TLS URL. Default none.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_queued: 65_536,
            max_queued_bytes: 64 << 20,
            subscribe_batch: 1000,
            timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            prefix: "wsx.".into(),
            max_message_size: 64 << 20,
            tls_ca: None,
            tls_client_cert: None,
        }
    }
}

impl LinkConfig {
    /// Sets [`Self::max_queued`] (at least 1).
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n.max(1);
        self
    }

    /// Sets [`Self::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.max_queued_bytes = n;
        self
    }

    /// Sets [`Self::subscribe_batch`] (at least 1).
    pub fn subscribe_batch(mut self, n: usize) -> Self {
        self.subscribe_batch = n.max(1);
        self
    }

    /// Sets [`Self::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`Self::ping_interval`].
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`Self::min_backoff`] and [`Self::max_backoff`].
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// Sets [`Self::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`Self::max_message_size`].
    pub fn max_message_size(mut self, n: usize) -> Self {
        self.max_message_size = n;
        self
    }

    /// Sets [`Self::tls_ca`].
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Sets [`Self::tls_client_cert`]: the certificate chain and the key, PEM files.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The settings with every value in its working range, whichever way they were set:
    /// at least one queued message and one topic per batch, a timeout and a ping interval of
    /// at least 10 ms, a backoff of at least [`MIN_BACKOFF`], `max_backoff >= min_backoff`.
    fn clamped(mut self) -> Self {
        const FLOOR: Duration = Duration::from_millis(10);
        self.max_queued = self.max_queued.max(1);
        self.subscribe_batch = self.subscribe_batch.max(1);
        self.timeout = self.timeout.max(FLOOR);
        self.ping_interval = self.ping_interval.max(FLOOR);
        self.min_backoff = self.min_backoff.max(MIN_BACKOFF);
        self.max_backoff = self.max_backoff.max(self.min_backoff);
        self
    }
}

/// The contents of [`LinkConfig::tls_ca`] and [`LinkConfig::tls_client_cert`], PEM.
#[derive(Clone)]
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<Vec<u8>>,
    /// The certificate chain and the key.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Reads the config's TLS files (`None` when it names none) and checks that they hold
    /// what they should: at least one certificate, a key. `tls_url`: the URL asks for TLS.
    fn load(config: &LinkConfig, tls_url: bool) -> Result<Option<Self>, Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        if config.tls_ca.is_none() && config.tls_client_cert.is_none() {
            return Ok(None);
        }
        if !tls_url {
            return Err(Error::Tls(
                "a CA or client certificate needs a TLS URL (rediss:// or tls://)".into(),
            ));
        }
        let certs = |path: &Path| -> Result<Vec<u8>, Error> {
            let pem = read(path)?;
            let n = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
                .len();
            if n == 0 {
                return Err(Error::Tls(format!("{}: no PEM certificate in it", path.display())));
            }
            Ok(pem)
        };
        let ca = config.tls_ca.as_deref().map(certs).transpose()?;
        let client = match &config.tls_client_cert {
            None => None,
            Some((cert, key)) => {
                let chain = certs(cert)?;
                let pem = read(key)?;
                PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    Error::Tls(format!("{}: no PEM private key ({e})", key.display()))
                })?;
                Some((chain, pem))
            }
        };
        Ok(Some(Self { ca, client }))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))
}

/// The shortest wait between reconnects, whatever [`LinkConfig::min_backoff`] says.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// `url` as it may be shown (logs, `/stats`, error messages): a password replaced by `***`,
/// and a user name without a password as well (a NATS token: `nats://TOKEN@host`); a URL that
/// does not parse is not shown at all.
pub fn public_url(url: &str) -> String {
    let Ok(mut public) = url::Url::parse(url) else {
        return "(an invalid URL)".to_owned();
    };
    if public.password().is_some() {
        let _ = public.set_password(Some("***"));
    } else if !public.username().is_empty() {
        let _ = public.set_username("***");
    }
    public.to_string()
}

/// Which broker a [`Link`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Redis pub/sub.
    Redis,
    /// NATS core.
    Nats,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
        })
    }
}

/// The state and counters of a [`Link`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// The broker.
    pub kind: Kind,
    /// The broker's URL without its credentials.
    pub url: String,
    /// Connected, and subscribed to every live topic.
    pub connected: bool,
    /// Times the link was lost (or the first connection failed).
    pub outages: u64,
    /// Times the link came back after an outage.
    pub reconnects: u64,
    /// Connection attempts that failed, every retry counted (the first connection included):
    /// it grows while the broker stays away or refuses the credentials.
    pub failed_connects: u64,
    /// How long the present outage has lasted, if the link is down.
    pub down_for: Option<Duration>,
    /// The last error, if the link is down.
    pub last_error: Option<String>,
    /// Local publishes sent to the broker.
    pub published: u64,
    /// Local publishes the other nodes did not get: queue full, or the link down.
    pub dropped: u64,
    /// Messages from other nodes delivered here.
    pub received: u64,
    /// This node's own messages, brought back by the broker and skipped.
    pub own_skipped: u64,
    /// Messages from the broker dropped for a payload over [`LinkConfig::max_message_size`].
    pub too_large: u64,
    /// Messages from the broker dropped as broken envelopes: they begin with the envelope's
    /// magic (`wsx` and a version byte below 0x20) but are of an unknown version, an unknown
    /// kind, too short, or text that is not UTF-8.
    pub malformed: u64,
    /// NATS: messages async-nats received from the broker that never reached this link:
    /// dropped because a topic's buffer (8,192 messages) was full when the node did not take
    /// them fast enough (a slow consumer), or left in the buffer of a topic unsubscribed
    /// meanwhile, or, for a moment, still in it. Redis: 0 (its connection waits for the
    /// reader instead of dropping).
    pub slow_consumer: u64,
    /// Topics this node is subscribed to at the broker (or will be, once connected).
    pub topics: usize,
    /// SUBSCRIBE and UNSUBSCRIBE commands sent (Redis: one per batch of topics), or SUB and
    /// UNSUB operations queued (NATS: written out together).
    pub subscribe_requests: u64,
    /// How long the last resubscription of every live topic took, from connect to the
    /// broker's last reply (Redis) or to the link counting as up (NATS).
    pub last_resubscribe: Option<Duration>,
}

/// A node's connection to a broker, and the [`Broker`] of its hub. Cloning shares it; the
/// link's task stops when the hub and every clone are gone.
///
/// A link serves one hub: given to a second one (a clone of it), it refuses it at
/// [`Hub::with_broker`] (logged at error level), and that hub's subscriptions and publishes
/// never reach the link (they stay local to that hub); the clone given to the first hub, and
/// every other clone, go on as before.
pub struct Link {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
    /// This clone was given to a hub after another one had the link: it does nothing.
    refused: AtomicBool,
}

impl Clone for Link {
    fn clone(&self) -> Self {
        // A clone is its own handle: refusing one given to a second hub leaves the others.
        Self {
            shared: self.shared.clone(),
            _stop: self._stop.clone(),
            refused: AtomicBool::new(self.refused.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("kind", &self.shared.kind)
            .field("url", &self.shared.public_url)
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link to the broker at `url`; nothing is connected until it is given to
    /// [`Hub::with_broker`], which starts its task. Must be called in a tokio runtime.
    pub fn new(url: &str, config: LinkConfig) -> Result<Self, Error> {
        let parsed = url::Url::parse(url)?;
        let kind = match parsed.scheme() {
            #[cfg(feature = "redis")]
            "redis" | "rediss" => {
                redis::check(url)?;
                Kind::Redis
            }
            #[cfg(feature = "nats")]
            "nats" | "tls" => {
                nats::check_url(url)?;
                Kind::Nats
            }
            other => return Err(Error::Scheme(other.to_owned())),
        };
        let tls = TlsFiles::load(&config, matches!(parsed.scheme(), "rediss" | "tls"))?;
        #[cfg(feature = "redis")]
        if kind == Kind::Redis {
            redis::check_tls(url, tls.as_ref())?;
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let config = config.clamped();
        let (tx, rx) = mpsc::channel(config.max_queued);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            kind,
            url: url.to_owned(),
            public_url: public_url(url),
            node_id: random_u64(),
            config,
            tls,
            runtime,
            stop: stop.clone(),
            queue: tx,
            queue_rx: Mutex::new(Some(rx)),
            queued_bytes: AtomicUsize::new(0),
            topics: Mutex::new(Topics::default()),
            changed: Notify::new(),
            connected: AtomicBool::new(false),
            status: Mutex::new(Status::default()),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            own_skipped: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            #[cfg(feature = "nats")]
            nats_statistics: std::sync::OnceLock::new(),
            taken: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            subscribe_requests: AtomicU64::new(0),
        });
        Ok(Self { shared, _stop: Arc::new(stop.drop_guard()), refused: AtomicBool::new(false) })
    }

    /// The broker's kind.
    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// This node's id, carried by every message it publishes.
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    /// The state and counters.
    pub fn stats(&self) -> LinkStats {
        let s = &*self.shared;
        let status = lock(&s.status);
        let connected = s.connected.load(Ordering::Relaxed);
        LinkStats {
            kind: s.kind,
            url: s.public_url.clone(),
            connected,
            outages: status.outages,
            reconnects: status.reconnects,
            failed_connects: status.failed_connects,
            down_for: if connected { None } else { status.down_since.map(|t| t.elapsed()) },
            last_error: if connected { None } else { status.last_error.clone() },
            published: s.published.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            own_skipped: s.own_skipped.load(Ordering::Relaxed),
            too_large: s.too_large.load(Ordering::Relaxed),
            slow_consumer: s.slow_consumer(),
            malformed: s.malformed.load(Ordering::Relaxed),
            topics: lock(&s.topics).live.len(),
            subscribe_requests: s.subscribe_requests.load(Ordering::Relaxed),
            last_resubscribe: status.last_resubscribe,
        }
    }
}

impl Broker for Link {
    fn start(&self, hub: WeakHub) {
        let Some(rx) = lock(&self.shared.queue_rx).take() else {
            self.refused.store(true, Ordering::Relaxed);
            error!(
                "the link to broker {} was given to a second hub: refused, that hub stays local \
                 (a link serves one hub)",
                self.shared.public_url
            );
            return;
        };
        let shared = self.shared.clone();
        let stop = shared.stop.clone();
        self.shared.runtime.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = run(shared, hub, rx) => {}
            }
        });
    }

    fn subscribed(&self, topic: &str) {
        if self.refused.load(Ordering::Relaxed) {
            return;
        }
        let mut topics = lock(&self.shared.topics);
        let topic: Arc<str> = Arc::from(topic);
        topics.live.insert(topic.clone());
        topics.dirty.insert(topic);
        drop(topics);
        self.shared.changed.notify_one();
    }

    fn unsubscribed(&self, topic: &str) {
        if self.refused.load(Ordering::Relaxed) {
            return;
        }
        let mut topics = lock(&self.shared.topics);
        topics.live.remove(topic);
        topics.dirty.insert(Arc::from(topic));
        drop(topics);
        self.shared.changed.notify_one();
    }

    fn publish(&self, topic: &str, message: &Message) {
        if self.refused.load(Ordering::Relaxed) {
            return;
        }
        let s = &*self.shared;
        let payload = message.payload();
        let len = payload.len();
        if !s.connected.load(Ordering::Relaxed) {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if s.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > s.config.max_queued_bytes {
            s.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let outgoing = Outgoing {
            topic: topic.to_owned(),
            envelope: envelope(s.node_id, message),
            payload_len: len,
        };
        if s.queue.try_send(outgoing).is_err() {
            s.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            s.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the hub and the link's task share.
struct Shared {
    kind: Kind,
    url: String,
    public_url: String,
    node_id: u64,
    config: LinkConfig,
    /// The PEM contents of the config's TLS files, read and checked by [`Link::new`].
    tls: Option<TlsFiles>,
    runtime: tokio::runtime::Handle,
    stop: CancellationToken,
    queue: mpsc::Sender<Outgoing>,
    /// Taken by the task when the hub starts it.
    queue_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    queued_bytes: AtomicUsize,
    topics: Mutex<Topics>,
    /// Wakes the task when `topics` changed.
    changed: Notify,
    /// Connected and resubscribed: publishes are queued only then.
    connected: AtomicBool,
    status: Mutex<Status>,
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    own_skipped: AtomicU64,
    too_large: AtomicU64,
    /// NATS: the client's counters (its `in_messages`), once it is made.
    #[cfg(feature = "nats")]
    nats_statistics: std::sync::OnceLock<Arc<async_nats::Statistics>>,
    /// NATS: messages taken from the client's subscriptions.
    taken: AtomicU64,
    malformed: AtomicU64,
    subscribe_requests: AtomicU64,
}

/// The topics the node wants at the broker, and those changed since the task last looked.
#[derive(Default)]
struct Topics {
    live: HashSet<Arc<str>>,
    dirty: HashSet<Arc<str>>,
}

#[derive(Default)]
struct Status {
    outages: u64,
    reconnects: u64,
    /// Whether the link was ever up (the first connection is not a reconnect).
    was_up: bool,
    failed_connects: u64,
    down_since: Option<Instant>,
    /// What the present outage was last logged as.
    fault: Option<Fault>,
    last_error: Option<String>,
    last_resubscribe: Option<Duration>,
}

/// Why a link is down, as far as the log is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Not reached, lost, or not answering in time.
    Unreachable,
    /// The broker refused the URL's credentials, or wants credentials the URL does not give.
    Refused,
}

/// One publish on its way to the broker.
pub(crate) struct Outgoing {
    topic: String,
    envelope: Bytes,
    payload_len: usize,
}

/// The changes a driver makes at the broker to match the live topics.
#[derive(Default)]
pub(crate) struct Changes {
    subscribe: Vec<Arc<str>>,
    unsubscribe: Vec<Arc<str>>,
}

impl Shared {
    /// Everything to subscribe to on a new connection: every live topic; what changed
    /// before is included.
    fn all_topics(&self, at_broker: &mut HashSet<Arc<str>>) -> Changes {
        let mut topics = lock(&self.topics);
        topics.dirty.clear();
        at_broker.clear();
        at_broker.extend(topics.live.iter().cloned());
        Changes { subscribe: topics.live.iter().cloned().collect(), unsubscribe: Vec::new() }
    }

    /// What changed since the last call, against what the broker has (`at_broker`, updated).
    fn changes(&self, at_broker: &mut HashSet<Arc<str>>) -> Changes {
        let mut topics = lock(&self.topics);
        let mut changes = Changes::default();
        for topic in std::mem::take(&mut topics.dirty) {
            let live = topics.live.contains(&topic);
            if live && at_broker.insert(topic.clone()) {
                changes.subscribe.push(topic);
            } else if !live && at_broker.remove(&topic) {
                changes.unsubscribe.push(topic);
            }
        }
        changes
    }

    /// The link is up and every live topic subscribed. Nothing if it already was (NATS: the
    /// state tick and the `Connected` event may both see one connection come up).
    fn up(&self, resubscribe: Duration) {
        let mut status = lock(&self.status);
        if self.connected.load(Ordering::Relaxed) {
            return;
        }
        status.last_resubscribe = Some(resubscribe);
        if status.was_up {
            status.reconnects += 1;
            let down = status.down_since.map(|t| t.elapsed()).unwrap_or_default();
            info!(
                "broker {} is back after {:.1?} down; resubscribed {} topics in {resubscribe:.1?}",
                self.public_url,
                down,
                lock(&self.topics).live.len()
            );
        } else {
            info!("broker {} connected (node {:016x})", self.public_url, self.node_id);
        }
        status.was_up = true;
        status.down_since = None;
        status.fault = None;
        status.last_error = None;
        self.connected.store(true, Ordering::Relaxed);
    }

    /// The link is down, or a connection attempt failed: the broker is unreachable.
    fn down(&self, error: &str) {
        self.fail(Fault::Unreachable, error);
    }

    /// The link is down, or a connection attempt failed, for `fault`. Logged once per outage,
    /// and again only if the fault changes (a broker that was away comes back refusing the
    /// credentials); every failed attempt is counted in [`LinkStats::failed_connects`] and the
    /// last error kept for [`LinkStats::last_error`].
    fn fail(&self, fault: Fault, error: &str) {
        let was_connected = self.connected.swap(false, Ordering::Relaxed);
        let mut status = lock(&self.status);
        if !was_connected {
            status.failed_connects += 1;
        }
        if was_connected || status.down_since.is_none() {
            status.outages += 1;
            status.down_since = Some(Instant::now());
            status.fault = None;
        }
        if status.fault != Some(fault) {
            status.fault = Some(fault);
            match fault {
                Fault::Unreachable => warn!(
                    "broker {} unreachable: {error}; local fan-out goes on, publishes to other \
                     nodes are dropped until it is back",
                    self.public_url
                ),
                Fault::Refused => error!(
                    "broker {} refused the credentials: {error}; check the user and password in \
                     the broker URL. Retrying with backoff; local fan-out goes on, publishes to \
                     other nodes are dropped until it accepts them",
                    self.public_url
                ),
            }
        }
        status.last_error = Some(error.to_owned());
    }

    /// Empties the queue, counting what it held as dropped.
    fn drop_queued(&self, rx: &mut mpsc::Receiver<Outgoing>) {
        while let Ok(out) = rx.try_recv() {
            self.sent(&out);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes `out` off the queue's byte count.
    fn sent(&self, out: &Outgoing) {
        self.sent_bytes(out.payload_len);
    }

    /// Takes `n` payload bytes off the queue's byte count (publishes sent, or dropped).
    fn sent_bytes(&self, n: usize) {
        self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    /// [`LinkStats::slow_consumer`]: what the NATS client received and this link never took.
    fn slow_consumer(&self) -> u64 {
        #[cfg(feature = "nats")]
        if let Some(stats) = self.nats_statistics.get() {
            let received = stats.in_messages.load(Ordering::Relaxed);
            return received.saturating_sub(self.taken.load(Ordering::Relaxed));
        }
        0
    }

    /// A message from the broker for `topic`: delivered here unless this node sent it.
    fn incoming(&self, hub: &Hub, topic: &str, data: &[u8]) {
        // The envelope's header is not payload; a foreign message is payload throughout.
        let header = if is_envelope(data) { HEADER } else { 0 };
        if data.len().saturating_sub(header) > self.config.max_message_size {
            self.too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match open_envelope(data) {
            Opened::Envelope(node, _) if node == self.node_id => {
                self.own_skipped.fetch_add(1, Ordering::Relaxed);
            }
            Opened::Envelope(_, message) => {
                self.received.fetch_add(1, Ordering::Relaxed);
                hub.deliver(topic, &message);
            }
            Opened::Malformed => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
            // Published by something else than a wsx node (a backend with redis-cli, say):
            // text when it is UTF-8, binary otherwise.
            Opened::Foreign => {
                self.received.fetch_add(1, Ordering::Relaxed);
                let data = Bytes::copy_from_slice(data);
                let message = match Utf8Bytes::try_from(data.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => Message::Binary(data),
                };
                hub.deliver(topic, &message);
            }
        }
    }
}

/// The link's task: connects, serves, reconnects, until the hub is gone.
async fn run(shared: Arc<Shared>, hub: WeakHub, mut rx: mpsc::Receiver<Outgoing>) {
    match shared.kind {
        #[cfg(feature = "redis")]
        Kind::Redis => redis::run(&shared, &hub, &mut rx).await,
        #[cfg(feature = "nats")]
        Kind::Nats => nats::run(&shared, &hub, &mut rx).await,
        #[allow(unreachable_patterns)]
        _ => {
            let _ = (&hub, &mut rx);
        }
    }
}

/// `wsx` 1: the magic and version of an envelope.
const MAGIC: &[u8; 4] = b"wsx\x01";

/// The bytes of an envelope before its payload: magic, kind, node id.
const HEADER: usize = 13;

/// What every envelope begins with, of any version: `wsx` and a version byte below 0x20 (a
/// control character: a text that begins with `wsx` is not taken for one).
fn is_envelope(data: &[u8]) -> bool {
    data.len() >= 4 && data[..3] == MAGIC[..3] && data[3] < 0x20
}

/// A message from the broker, looked at.
#[derive(Debug, PartialEq)]
enum Opened {
    /// From a wsx node: its id, the message.
    Envelope(u64, Message),
    /// Begins as an envelope but is not a valid one of version 1: dropped.
    Malformed,
    /// Not from a wsx node: delivered as it is.
    Foreign,
}

/// A message as it goes through the broker: magic, kind (`t` or `b`), the node id (8 bytes,
/// big-endian), the payload.
fn envelope(node_id: u64, message: &Message) -> Bytes {
    let payload = message.payload();
    let mut out = BytesMut::with_capacity(HEADER + payload.len());
    out.put_slice(MAGIC);
    out.put_u8(if matches!(message, Message::Text(_)) { b't' } else { b'b' });
    out.put_u64(node_id);
    out.put_slice(payload);
    out.freeze()
}

/// What `data` is: an envelope (its sender and message), a broken one, or a foreign message.
fn open_envelope(data: &[u8]) -> Opened {
    if !is_envelope(data) {
        return Opened::Foreign;
    }
    let open = || {
        let rest = data.strip_prefix(MAGIC)?;
        let (&kind, rest) = rest.split_first()?;
        let node = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let payload = &rest[8..];
        let message = match kind {
            b't' => Message::Text(Utf8Bytes::try_from(Bytes::copy_from_slice(payload)).ok()?),
            b'b' => Message::Binary(Bytes::copy_from_slice(payload)),
            _ => return None,
        };
        Some(Opened::Envelope(node, message))
    };
    open().unwrap_or(Opened::Malformed)
}

/// The delay before reconnect attempt `attempt` (0 = the first): exponential backoff with
/// 50-100 % jitter: nodes that lost the same broker do not all come
/// back in the same millisecond.
fn backoff(config: &LinkConfig, attempt: u32) -> Duration {
    let base = config.min_backoff.saturating_mul(1u32 << attempt.min(16)).min(config.max_backoff);
    let jitter = (random_u64() % 1000) as u32;
    base / 2 + base / 2 * jitter / 1000
}

/// A random number from the standard library's per-process hash keys and the clock.
fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn known_schemes() -> &'static str {
    match (cfg!(feature = "redis"), cfg!(feature = "nats")) {
        (true, true) => "redis, rediss, nats, tls",
        (true, false) => "redis, rediss",
        (false, true) => "nats, tls",
        (false, false) => "none: enable the redis or nats feature",
    }
}

/// Locks, ignoring poisoning: every update under these locks is one insert, remove or field
/// store.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_foreign_payloads_are_not_envelopes() {
        for message in [Message::text("héllo"), Message::binary(vec![0u8, 1, 2]), Message::text("")]
        {
            let data = envelope(42, &message);
            assert_eq!(open_envelope(&data), Opened::Envelope(42, message));
        }
        assert_eq!(open_envelope(b"hello"), Opened::Foreign);
        assert_eq!(open_envelope(b"wsx rocks"), Opened::Foreign, "text beginning with wsx");
        assert_eq!(open_envelope(b"wsx"), Opened::Foreign);
        assert_eq!(open_envelope(b""), Opened::Foreign);
        assert_eq!(open_envelope(b"wsx\x01t123"), Opened::Malformed, "a short node id");
        assert_eq!(open_envelope(b"wsx\x01"), Opened::Malformed, "no kind");
        assert_eq!(open_envelope(b"wsx\x01x12345678"), Opened::Malformed, "an unknown kind");
        assert_eq!(open_envelope(b"wsx\x01t12345678\xff"), Opened::Malformed, "not UTF-8");
        assert_eq!(open_envelope(b"wsx\x02t12345678hi"), Opened::Malformed, "a later version");
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let config =
            LinkConfig::default().backoff(Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..40 {
            let d = backoff(&config, attempt);
            let base = (Duration::from_millis(100) * 2u32.pow(attempt.min(16)))
                .min(Duration::from_secs(5));
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?} against {base:?}");
        }
        let delays: HashSet<Duration> = (0..20).map(|_| backoff(&config, 10)).collect();
        assert!(delays.len() > 1, "no jitter");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn every_failed_attempt_counts_and_an_outage_is_one() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let link = Link::new("redis://:pw@127.0.0.1:1", LinkConfig::default()).unwrap();
        let shared = &link.shared;
        let status = |l: &Link| {
            let s = l.stats();
            (s.connected, s.outages, s.reconnects, s.failed_connects)
        };
        // The first connection fails three times: one outage, three failed attempts.
        shared.down("refused");
        shared.fail(Fault::Refused, "WRONGPASS");
        shared.fail(Fault::Refused, "WRONGPASS");
        assert_eq!(status(&link), (false, 1, 0, 3));
        assert_eq!(link.stats().last_error.as_deref(), Some("WRONGPASS"));
        assert_eq!(lock(&shared.status).fault, Some(Fault::Refused));
        shared.up(Duration::ZERO);
        assert_eq!(status(&link), (true, 1, 0, 3));
        assert_eq!(link.stats().last_error, None);
        // Lost: a second outage, not a failed attempt; then one failed reconnect.
        shared.down("the broker closed the connection");
        assert_eq!(status(&link), (false, 2, 0, 3));
        shared.down("connection refused");
        assert_eq!(status(&link), (false, 2, 0, 4));
        assert_eq!(lock(&shared.status).fault, Some(Fault::Unreachable));
        shared.up(Duration::ZERO);
        assert_eq!(status(&link), (true, 2, 1, 4));
        // Up twice for one connection (the NATS tick and its event): one reconnect.
        shared.up(Duration::ZERO);
        assert_eq!(status(&link), (true, 2, 1, 4));
        // The password never shows.
        assert_eq!(link.stats().url, "redis://:***@127.0.0.1:1");
    }

    #[test]
    fn credentials_never_show() {
        for (url, public) in [
            ("nats://s3cret@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
            ("nats://:s3cret@127.0.0.1:4222", "nats://:***@127.0.0.1:4222"),
            ("nats://user:s3cret@127.0.0.1:4222", "nats://user:***@127.0.0.1:4222"),
            ("redis://user:s3cret@127.0.0.1/2", "redis://user:***@127.0.0.1/2"),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url s3cret", "(an invalid URL)"),
        ] {
            assert_eq!(public_url(url), public);
        }
    }

    #[cfg(feature = "nats")]
    #[test]
    fn a_token_in_the_url_is_hidden_from_stats_and_debug() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let link = Link::new("nats://s3cret@127.0.0.1:1", LinkConfig::default()).unwrap();
        assert_eq!(link.stats().url, "nats://***@127.0.0.1:1");
        assert!(!format!("{link:?}").contains("s3cret"), "{link:?}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn settings_out_of_range_are_clamped() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = runtime.enter();
        let config = LinkConfig {
            max_queued: 0,
            subscribe_batch: 0,
            ping_interval: Duration::ZERO,
            timeout: Duration::ZERO,
            min_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..LinkConfig::default()
        };
        let link = Link::new("redis://127.0.0.1:1", config).unwrap();
        let c = &link.shared.config;
        assert_eq!((c.max_queued, c.subscribe_batch), (1, 1));
        assert!(c.ping_interval >= Duration::from_millis(10) && c.timeout > Duration::ZERO);
        assert_eq!((c.min_backoff, c.max_backoff), (MIN_BACKOFF, MIN_BACKOFF));
        assert!(backoff(c, 0) >= MIN_BACKOFF / 2);
        // Started with them: no panic (a zero-capacity channel, chunks(0), a zero interval).
        let hub = Hub::with_broker(wsx::pubsub::HubConfig::default(), link.clone());
        hub.publish("t", &Message::text("x"));
        runtime.block_on(tokio::time::sleep(Duration::from_millis(50)));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_link_serves_one_hub_and_refuses_a_second() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = runtime.enter();
        let link = Link::new("redis://127.0.0.1:1", LinkConfig::default()).unwrap();
        let first = Hub::with_broker(wsx::pubsub::HubConfig::default(), link.clone());
        let second = Hub::with_broker(wsx::pubsub::HubConfig::default(), link.clone());
        let mut on_first = first.subscriber();
        on_first.subscribe("a");
        let mut on_second = second.subscriber();
        on_second.subscribe("a");
        on_second.subscribe("b");
        assert_eq!(link.stats().topics, 1, "the second hub's topics reached the link");
        // The second hub's last subscriber on "a" leaving does not take it from the first.
        drop(on_second);
        assert_eq!(link.stats().topics, 1);
        drop(on_first);
        assert_eq!(link.stats().topics, 0);
    }

    #[test]
    fn a_scheme_of_no_broker_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let err = Link::new("http://127.0.0.1:1", LinkConfig::default()).unwrap_err();
        assert!(matches!(err, Error::Scheme(ref s) if s == "http"), "{err}");
        assert!(matches!(Link::new("not a url", LinkConfig::default()), Err(Error::Url(_))));
    }
}
