//! The NATS driver: async-nats keeps the connection, reconnects (with this crate's backoff and
//! jitter) and writes every subscription again at a reconnect, all in one go; this driver
//! turns the hub's topics into subscriptions and its events into the link's state.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use async_nats::{ConnectOptions, Event};
use futures_util::stream::SelectAll;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use wsx::pubsub::WeakHub;

use crate::{Fault, Outgoing, Shared};

/// Publishes handed to the client between two looks at the rest, at most.
const PUBLISH_BATCH: usize = 512;

/// Whether async-nats takes `url` (no I/O).
pub(crate) fn check(url: &str) -> Result<(), crate::Error> {
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|e| crate::Error::Invalid(e.to_string()))
}

pub(crate) async fn run(shared: &Arc<Shared>, hub: &WeakHub, rx: &mut mpsc::Receiver<Outgoing>) {
    let (events_tx, mut events) = mpsc::channel::<Event>(64);
    let config = shared.config.clone();
    let options = ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .no_echo()
        .name(format!("wsx node {:016x}", shared.node_id))
        .connection_timeout(config.timeout)
        .ping_interval(config.ping_interval)
        .client_capacity(config.max_queued.clamp(128, 65_536))
        .reconnect_delay_callback(move |attempts| crate::backoff(&config, attempts as u32))
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                // Only connection changes matter here; a full channel drops the rest.
                let _ = events_tx.try_send(event);
            }
        });
    let (options, url) = credentials(options, &shared.url);
    let client = match options.connect(url.as_str()).await {
        Ok(client) => client,
        Err(e) => {
            shared.down(&format!("invalid NATS URL: {e}"));
            return;
        }
    };
    let prefix = shared.config.prefix.as_str();
    let mut at_broker = HashSet::new();
    let mut cancels: HashMap<Arc<str>, oneshot::Sender<()>> = HashMap::new();
    let mut streams = SelectAll::new();
    let mut changes = shared.all_topics(&mut at_broker);
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
            event = events.recv() => match event {
                Some(Event::Connected) => {
                    // Every subscription was written again before this event; a flush is a
                    // round trip behind them.
                    let started = Instant::now();
                    match timeout(shared.config.timeout, client.flush()).await {
                        Ok(Ok(())) => shared.up(started.elapsed()),
                        Ok(Err(e)) => shared.down(&e.to_string()),
                        Err(_) => shared.down("the broker did not answer in time"),
                    }
                }
                Some(Event::Disconnected) => {
                    shared.down("disconnected");
                    shared.drop_queued(rx);
                }
                Some(Event::ServerError(e)) => tracing::warn!("broker {}: {e}", shared.public_url),
                // A connection attempt failed (async-nats retries it): an outage begins, or
                // goes on. async-nats says only what kind of failure it was.
                Some(Event::ClientError(e)) => {
                    let e = e.to_string();
                    let refused = e.contains("authorization violation");
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
                    shared.sent(&out);
                    n += 1;
                    if !shared.connected.load(Ordering::Relaxed) {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                    } else if client.publish(subject(prefix, &out.topic), out.envelope).await.is_ok() {
                        shared.published.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    if n < PUBLISH_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
        }
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
}
