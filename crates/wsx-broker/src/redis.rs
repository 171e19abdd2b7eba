//! The Redis driver: one pub/sub connection for SUBSCRIBE and the messages, one multiplexed
//! connection for PUBLISH (a connection in subscribe mode may not publish).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::mpsc;
use tokio::time::timeout;
use wsx::pubsub::WeakHub;

use crate::{Changes, Fault, Outgoing, Shared, TlsFiles};

/// Publishes sent in one pipeline, at most.
const PUBLISH_BATCH: usize = 512;

/// Why a session ended.
enum Ended {
    /// The hub is gone: the task is done.
    HubGone,
    /// The connection failed, or the broker refused it; reconnect.
    Failed(Fault, String),
}

impl From<redis::RedisError> for Ended {
    fn from(e: redis::RedisError) -> Self {
        // WRONGPASS and a failed AUTH (redis-rs reports both as AuthenticationFailed), NOAUTH
        // (the broker wants a password the URL does not give), NOPERM (an ACL user without
        // the right to a command or a channel): the same again will not do better.
        let refused = e.kind() == redis::ErrorKind::AuthenticationFailed
            || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
        Self::Failed(if refused { Fault::Refused } else { Fault::Unreachable }, e.to_string())
    }
}

impl From<tokio::time::error::Elapsed> for Ended {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Self::Failed(Fault::Unreachable, "the broker did not answer in time".into())
    }
}

/// Whether redis-rs takes `url` (no I/O).
pub(crate) fn check(url: &str) -> Result<(), crate::Error> {
    redis::Client::open(url).map(drop).map_err(|e| crate::Error::Invalid(e.to_string()))
}

/// The client for `url`, with the CA and client certificate of `tls` when there are any.
fn client(url: &str, tls: Option<&TlsFiles>) -> redis::RedisResult<redis::Client> {
    match tls {
        None => redis::Client::open(url),
        Some(tls) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: tls.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
                root_cert: tls.ca.clone(),
            },
        ),
    }
}

/// Whether redis-rs takes `url` with `tls` (no I/O; the PEM files are parsed).
pub(crate) fn check_tls(url: &str, tls: Option<&TlsFiles>) -> Result<(), crate::Error> {
    client(url, tls).map(drop).map_err(|e| crate::Error::Tls(e.to_string()))
}

pub(crate) async fn run(shared: &Arc<Shared>, hub: &WeakHub, rx: &mut mpsc::Receiver<Outgoing>) {
    let client = match client(shared.url.as_str(), shared.tls.as_ref()) {
        Ok(client) => client,
        Err(e) => {
            shared.down(&format!("invalid Redis URL: {e}"));
            return;
        }
    };
    // A link that stayed up this long starts its backoff again from the first delay; one
    // that is lost sooner (a flapping broker) goes on from where it was.
    let stable = shared.config.max_backoff.max(Duration::from_secs(1));
    let mut attempt = 0;
    loop {
        let mut up_at = None;
        match session(shared, hub, rx, &client, &mut up_at).await {
            Ended::HubGone => return,
            Ended::Failed(fault, e) => shared.fail(fault, &e),
        }
        shared.drop_queued(rx);
        attempt = attempt_after(attempt, up_at.map(|t| t.elapsed()), stable);
        tokio::time::sleep(crate::backoff(&shared.config, attempt)).await;
        attempt = attempt.saturating_add(1);
        if hub.upgrade().is_none() {
            return;
        }
    }
}

/// The backoff attempt to wait for after a session that was up for `up_for` (`None`: it
/// never came up): from the start again only after a link that stayed up `stable`.
fn attempt_after(attempt: u32, up_for: Option<Duration>, stable: Duration) -> u32 {
    if up_for.is_some_and(|d| d >= stable) {
        0
    } else {
        attempt
    }
}

/// One connection's life: connect, subscribe every live topic, then serve until it fails.
async fn session(
    shared: &Shared,
    hub: &WeakHub,
    rx: &mut mpsc::Receiver<Outgoing>,
    client: &redis::Client,
    up_at: &mut Option<Instant>,
) -> Ended {
    let t = shared.config.timeout;
    let started = Instant::now();
    let connect = async {
        let pubsub = timeout(t, client.get_async_pubsub()).await??;
        let mut conn = timeout(t, client.get_multiplexed_async_connection()).await??;
        // Without credentials in the URL nothing is sent at connect: a broker that wants
        // some answers NOAUTH only to the first command. Ask now, not at the first publish.
        timeout(t, redis::cmd("PING").query_async::<()>(&mut conn)).await??;
        Ok::<_, Ended>((pubsub, conn))
    };
    let (pubsub, mut conn) = match connect.await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (mut sink, mut stream) = pubsub.split();
    let mut at_broker = HashSet::new();
    let all = shared.all_topics(&mut at_broker);
    if let Err(e) = apply(shared, &sink, all).await {
        return e;
    }
    shared.up(started.elapsed());
    *up_at = Some(Instant::now());
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.config.ping_interval,
        shared.config.ping_interval,
    );
    let prefix = shared.config.prefix.as_str();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Failed(
                        Fault::Unreachable,
                        "the broker closed the connection".into(),
                    );
                };
                let Some(hub) = hub.upgrade() else { return Ended::HubGone };
                if let Some(topic) = msg.get_channel_name().strip_prefix(prefix) {
                    shared.incoming(&hub, topic, msg.get_payload_bytes());
                }
            }
            () = shared.changed.notified() => {
                if hub.upgrade().is_none() {
                    return Ended::HubGone;
                }
                let changes = shared.changes(&mut at_broker);
                if let Err(e) = apply(shared, &sink, changes).await {
                    return e;
                }
            }
            out = rx.recv() => {
                let Some(first) = out else { return Ended::HubGone };
                if let Err(e) = publish(shared, &mut conn, rx, first).await {
                    return e;
                }
            }
            _ = ping.tick() => {
                if hub.upgrade().is_none() {
                    return Ended::HubGone;
                }
                if let Err(e) = ping_once(shared, &mut sink).await {
                    return e;
                }
            }
        }
    }
}

async fn ping_once(shared: &Shared, sink: &mut PubSubSink) -> Result<(), Ended> {
    timeout(shared.config.timeout, sink.ping::<redis::Value>()).await??;
    Ok(())
}

/// Sends the SUBSCRIBEs and UNSUBSCRIBEs of `changes`, [`LinkConfig::subscribe_batch`]
/// topics per command, every command sent before the first reply is awaited; each must be
/// answered within [`LinkConfig::timeout`].
///
/// [`LinkConfig::subscribe_batch`]: crate::LinkConfig::subscribe_batch
/// [`LinkConfig::timeout`]: crate::LinkConfig::timeout
async fn apply(shared: &Shared, sink: &PubSubSink, changes: Changes) -> Result<(), Ended> {
    let batch = shared.config.subscribe_batch;
    let t = shared.config.timeout;
    let prefix = &shared.config.prefix;
    let channels = |topics: &[Arc<str>]| -> Vec<String> {
        topics.iter().map(|t| format!("{prefix}{t}")).collect()
    };
    let mut requests = Vec::new();
    for chunk in changes.subscribe.chunks(batch) {
        let mut sink = sink.clone();
        let names = channels(chunk);
        requests.push(futures_util::future::Either::Left(async move {
            timeout(t, sink.subscribe(names)).await?.map_err(Ended::from)
        }));
    }
    for chunk in changes.unsubscribe.chunks(batch) {
        let mut sink = sink.clone();
        let names = channels(chunk);
        requests.push(futures_util::future::Either::Right(async move {
            timeout(t, sink.unsubscribe(names)).await?.map_err(Ended::from)
        }));
    }
    if requests.is_empty() {
        return Ok(());
    }
    shared.subscribe_requests.fetch_add(requests.len() as u64, Ordering::Relaxed);
    // Each batch has its own timeout, from when it is sent: many topics on a slow broker
    // take as long as they take, as long as each reply comes in time.
    try_join_all(requests).await?;
    Ok(())
}

/// Sends `first` and whatever else is queued (up to [`PUBLISH_BATCH`]) in one pipeline. The
/// payloads stay on the queue's byte count until the broker has answered the pipeline (or
/// it failed): what waits in the pipeline is bounded by [`LinkConfig::max_queued_bytes`] too.
///
/// [`LinkConfig::max_queued_bytes`]: crate::LinkConfig::max_queued_bytes
async fn publish(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    rx: &mut mpsc::Receiver<Outgoing>,
    first: Outgoing,
) -> Result<(), Ended> {
    let mut pipe = redis::pipe();
    let mut n = 0u64;
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(out) = next.take() {
        bytes += out.payload_len;
        let channel = format!("{}{}", shared.config.prefix, out.topic);
        pipe.cmd("PUBLISH").arg(channel).arg(out.envelope.as_ref()).ignore();
        n += 1;
        if n < PUBLISH_BATCH as u64 {
            next = rx.try_recv().ok();
        }
    }
    let result = timeout(shared.config.timeout, pipe.query_async::<()>(conn)).await;
    shared.sent_bytes(bytes);
    match result {
        Ok(Ok(())) => {
            shared.published.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(e)) => {
            shared.dropped.fetch_add(n, Ordering::Relaxed);
            Err(e.into())
        }
        Err(e) => {
            shared.dropped.fetch_add(n, Ordering::Relaxed);
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_broker_does_not_reset_the_backoff() {
        let stable = Duration::from_secs(5);
        assert_eq!(attempt_after(6, None, stable), 6, "never up");
        assert_eq!(attempt_after(6, Some(Duration::from_millis(50)), stable), 6, "flapping");
        assert_eq!(attempt_after(6, Some(Duration::from_secs(5)), stable), 0, "stayed up");
    }
}
