//! The NATS driver: async-nats keeps the connection, reconnects (with this crate's backoff and
//! jitter) and writes every subscription again at a reconnect, all in one go; this driver
//! turns the hub's topics into subscriptions and its events into the link's state.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event};
use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use wsx::pubsub::WeakHub;

use crate::{Fault, Outgoing, Shared};

/// Publishes handed to the client between two looks at the rest, at most.
const PUBLISH_BATCH: usize = 512;

/// Commands (publishes, mostly) waiting in async-nats's channel to its connection task, at
/// most: with its write buffer (64 KiB, and one message past it), the only bytes beyond
/// [`LinkConfig::max_queued_bytes`] that a stalled broker holds up.
///
/// [`LinkConfig::max_queued_bytes`]: crate::LinkConfig::max_queued_bytes
const CLIENT_CAPACITY: usize = 128;

/// Messages from the broker waiting in one subscription's channel, at most (past that
/// async-nats drops them: a slow consumer); each at most the server's `max_payload` (1 MiB by
/// default). async-nats's default is 65,536; 256 lost messages of a burst of 1,000 on a
/// loaded machine, so a burst of a few thousand passes.
const SUBSCRIPTION_CAPACITY: usize = 8192;

/// The reconnect delay async-nats gets once the link is gone: it does not stop retrying by
/// itself, so it waits this long (and never tries again in practice).
const STOPPED_DELAY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// What a look at the client's own connection state says to do.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// Nothing: the link's state matches the client's.
    Nothing,
    /// Connected, but the link is down (a failed flush, a lost `Connected` event): flush
    /// again and count the link up.
    Flush,
    /// Not connected, but the link is up (a lost `Disconnected` event): the link is down.
    Down,
}

/// What to do for a link that counts as `up` on a client whose connection is `state`.
fn check(up: bool, state: &State) -> Check {
    match (up, matches!(state, State::Connected)) {
        (false, true) => Check::Flush,
        (true, false) => Check::Down,
        _ => Check::Nothing,
    }
}

/// Whether async-nats takes `url` (no I/O).
pub(crate) fn check_url(url: &str) -> Result<(), crate::Error> {
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|e| crate::Error::Invalid(e.to_string()))
}

pub(crate) async fn run(shared: &Arc<Shared>, hub: &WeakHub, rx: &mut mpsc::Receiver<Outgoing>) {
    let (events_tx, mut events) = mpsc::channel::<Event>(64);
    let config = shared.config.clone();
    let stop = shared.stop.clone();
    let options = ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .no_echo()
        .name(format!("wsx node {:016x}", shared.node_id))
        .connection_timeout(config.timeout)
        .ping_interval(config.ping_interval)
        .client_capacity(CLIENT_CAPACITY)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .reconnect_delay_callback(move |attempts| {
            if stop.is_cancelled() {
                STOPPED_DELAY
            } else {
                crate::backoff(&config, attempts as u32)
            }
        })
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                // Only connection changes matter here; a full channel drops the rest.
                let _ = events_tx.try_send(event);
            }
        });
    let (mut options, url) = credentials(options, &shared.url);
    let tls = shared.tls.is_some() || url.starts_with("tls://");
    // The files were read and checked by `Link::new`; async-nats reads them again at every
    // connect, from these paths. A CA given replaces the system's roots.
    if let Some(ca) = &shared.config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &shared.config.tls_client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
    }
    let client = match options.connect(url.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            shared.down(&format!("invalid NATS URL: {e}"));
            return;
        }
    };
    let _ = shared.nats_statistics.set(client.statistics());
    let prefix = shared.config.prefix.as_str();
    let mut at_broker = HashSet::new();
    let mut cancels: HashMap<Arc<str>, oneshot::Sender<()>> = HashMap::new();
    let mut streams = SelectAll::new();
    let mut changes = shared.all_topics(&mut at_broker);
    // Events are lossy (async-nats and this driver both drop them when their channel is
    // full) and a flush can fail on a connection that stays up: the client's own state is
    // looked at on this tick too, so the link never stays down on a connected client.
    let mut tick = tokio::time::interval(shared.config.ping_interval.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for topic in changes.subscribe.drain(..) {
            match client.subscribe(subject(prefix, &topic)).await {
                Ok(sub) => {
                    let (cancel, cancelled) = oneshot::channel();
                    cancels.insert(topic, cancel);
                    streams.push(sub.take_until(cancelled));
                }
                // The client's task is gone: nothing more will work.
                Err(e) => {
                    shared.down(&format!("NATS client stopped: {e}"));
                    return;
                }
            }
            shared.subscribe_requests.fetch_add(1, Ordering::Relaxed);
        }
        for topic in changes.unsubscribe.drain(..) {
            // The stream ends; dropping its subscriber sends the UNSUB.
            cancels.remove(&topic);
            shared.subscribe_requests.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            msg = streams.next(), if !streams.is_empty() => {
                let Some(msg) = msg else { continue };
                shared.taken.fetch_add(1, Ordering::Relaxed);
                let Some(hub) = hub.upgrade() else { return };
                if let Some(topic) = msg.subject.as_str().strip_prefix(prefix).and_then(topic) {
                    shared.incoming(&hub, &topic, &msg.payload);
                }
            }
            () = shared.changed.notified() => {
                if hub.upgrade().is_none() {
                    return;
                }
                changes = shared.changes(&mut at_broker);
            }
            _ = tick.tick() => {
                if hub.upgrade().is_none() {
                    return;
                }
                match check(shared.connected.load(Ordering::Relaxed), &client.connection_state()) {
                    Check::Nothing => {}
                    Check::Flush => flush(shared, &client).await,
                    Check::Down => {
                        shared.down("disconnected");
                        shared.drop_queued(rx);
                    }
                }
            }
            event = events.recv() => match event {
                Some(Event::Connected) => flush(shared, &client).await,
                Some(Event::Disconnected) => {
                    shared.down("disconnected");
                    shared.drop_queued(rx);
                }
                Some(Event::ServerError(e)) => tracing::warn!("broker {}: {e}", shared.public_url),
                // A connection attempt failed (async-nats retries it): an outage begins, or
                // goes on. async-nats says only what kind of failure it was.
                Some(Event::ClientError(e)) => {
                    let mut e = e.to_string();
                    let refused = e.contains("authorization violation");
                    // A failed TLS handshake reaches the event as a bare "IO error".
                    if e.ends_with("IO error") && tls {
                        e.push_str(
                            " (over TLS a refused certificate shows as this too: the broker's \
                             log says which)",
                        );
                    }
                    shared.fail(if refused { Fault::Refused } else { Fault::Unreachable }, &e);
                }
                Some(_) => {}
                None => return,
            },
            out = rx.recv() => {
                let Some(first) = out else { return };
                let mut next = Some(first);
                let mut n = 0;
                while let Some(out) = next.take() {
                    n += 1;
                    let len = out.payload_len;
                    // The payload stays on the queue's byte count until the client has taken
                    // it; its channel is short (CLIENT_CAPACITY), and a client that takes
                    // nothing within the timeout (a stalled broker) ends the batch.
                    let sent = if shared.connected.load(Ordering::Relaxed) {
                        let publish = client.publish(subject(prefix, &out.topic), out.envelope);
                        Some(timeout(shared.config.timeout, publish).await)
                    } else {
                        None
                    };
                    shared.sent_bytes(len);
                    if let Some(Ok(Ok(()))) = sent {
                        shared.published.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        if let Some(Err(_)) = sent {
                            break;
                        }
                    }
                    if n < PUBLISH_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
        }
    }
}

/// The client counts as connected after its handshake's PING was answered, with every
/// subscription queued again before that; async-nats's flush writes them out (it waits for
/// the socket, not for the broker): the link is up once it is done.
async fn flush(shared: &Shared, client: &Client) {
    let started = Instant::now();
    match timeout(shared.config.timeout, client.flush()).await {
        Ok(Ok(())) => shared.up(started.elapsed()),
        Ok(Err(e)) => shared.down(&e.to_string()),
        Err(_) => shared.down("the broker did not answer in time"),
    }
}

/// The credentials of `url` moved into `options` (async-nats reads none from the URL):
/// `nats://USER:PASS@` a user and password, `nats://TOKEN@` (or `nats://:TOKEN@`) a token,
/// percent-decoded; the URL without them.
fn credentials(options: ConnectOptions, url: &str) -> (ConnectOptions, String) {
    let Ok(mut parsed) = url::Url::parse(url) else { return (options, url.to_owned()) };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(parsed.username());
    let pass = parsed.password().map(decode);
    let options = match (user.is_empty(), pass) {
        (false, Some(pass)) => options.user_and_password(user, pass),
        (false, None) => options.token(user),
        (true, Some(token)) => options.token(token),
        (true, None) => return (options, url.to_owned()),
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    (options, parsed.to_string())
}

/// The subject of `topic`: the prefix, then the topic as one subject token: ASCII letters,
/// digits, `-` and `_` as they are, every other byte as `%XX`; the empty topic as `%`.
fn subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + topic.len() + 1);
    out.push_str(prefix);
    if topic.is_empty() {
        out.push('%');
    }
    for b in topic.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The topic of a subject token made by [`subject`]; `None` if it is not one.
fn topic(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_become_one_subject_token_and_back() {
        for (t, s) in [
            ("room", "wsx.room"),
            ("room/1", "wsx.room%2F1"),
            ("", "wsx.%"),
            ("a.b *>", "wsx.a%2Eb%20%2A%3E"),
            ("é", "wsx.%C3%A9"),
        ] {
            assert_eq!(subject("wsx.", t), s);
            assert_eq!(topic(s.strip_prefix("wsx.").unwrap()).as_deref(), Some(t));
        }
        assert_eq!(topic("%zz"), None);
        assert_eq!(topic("%4"), None);
    }

    #[test]
    fn the_client_state_corrects_the_link_state() {
        assert_eq!(check(false, &State::Connected), Check::Flush, "a lost or failed Connected");
        assert_eq!(check(true, &State::Disconnected), Check::Down, "a lost Disconnected");
        assert_eq!(check(true, &State::Pending), Check::Down);
        assert_eq!(check(true, &State::Connected), Check::Nothing);
        assert_eq!(check(false, &State::Disconnected), Check::Nothing);
    }
}
