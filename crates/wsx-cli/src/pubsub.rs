//! `wsx serve --pubsub`: a WebSocket to path `/P` subscribes to topic `P` and publishes what it
//! sends there; `POST /publish/P` publishes from HTTP with a bearer token.

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;
use wsx::pubsub::{Hub, Subscriber};
use wsx::{Incoming, Message, RequestBody, Utf8Bytes, WebSocket};

use crate::serve::{next_or_stop, text_response, State, KEEP_ALIVE_IDLE};

/// Settings of pub/sub mode.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) hub: Hub,
    /// The hub's link to the other nodes (`--broker`), for `/stats`.
    pub(crate) broker: Option<wsx_broker::Link>,
    /// Whether a sender gets its own messages too.
    pub(crate) echo_self: bool,
    /// The bearer token of `POST /publish/P`; `None`: HTTP publishing is off.
    pub(crate) publish_token: Option<String>,
}

/// The topic a WebSocket request for `path` subscribes to: the path without its leading
/// slash (`/` is the topic named ``, which uWebSockets' broadcast benchmark uses).
pub(crate) fn topic_of(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

/// A subscriber of the topic of `path`, made when the upgrade is accepted.
pub(crate) fn subscribe(options: &Options, path: &str) -> Subscriber {
    let mut subscriber = options.hub.subscriber();
    subscriber.subscribe(topic_of(path));
    subscriber
}

/// One pub/sub connection: receives, publishes every data message to its topic, and (by
/// receiving) writes out what is published to it, until it closes or the server shuts down.
///
/// Its state is in every subscriber's task, so it is kept small, as the echo loop's is (see
/// `serve::echo`): an `async move` block that uses its captures in place, and nothing
/// received kept across a wait.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<'a, S>(
    ws: &'a mut WebSocket<S>,
    subscriber: Subscriber,
    options: &'a Options,
    state: &'a State,
) -> impl Future<Output = Result<(), wsx::Error>> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move {
        ws.attach(&subscriber)?;
        let stop = state.stop.notified();
        tokio::pin!(stop);
        let mut registered = false;
        loop {
            let turn = next_or_stop(
                |cx| Pin::new(&mut *ws).poll_next(cx),
                state,
                stop.as_mut(),
                &mut registered,
            );
            let Some(next) = turn.await else {
                return Box::pin(crate::serve::going_away(ws)).await;
            };
            if !publish(next, &subscriber, options) {
                return Ok(());
            }
        }
    }
}

/// Publishes what a subscriber sent, if it is a data message; false once the connection is
/// over. Takes it by value, so that nothing of it is kept across the loop's next wait.
fn publish(
    next: Option<Result<Message, wsx::Error>>,
    subscriber: &Subscriber,
    options: &Options,
) -> bool {
    match next {
        None => return false,
        Some(Ok(msg)) if msg.is_data() => {
            // One topic per connection: the first is it.
            if let Some(topic) = subscriber.topics().next() {
                if options.echo_self {
                    options.hub.publish(topic, &msg);
                } else {
                    options.hub.publish_except(topic, &msg, subscriber);
                }
            }
        }
        Some(Ok(_)) => {}
        Some(Err(e)) => debug!("peer error: {e}"),
    }
    true
}

/// `POST /publish/P`: with the right bearer token, publishes the body to `P`, as text when
/// the content type is text (`text/*`, or anything with `charset=utf-8`) and the body is
/// UTF-8, as binary otherwise. 401 without a token, 403 with a wrong one, 404 when HTTP
/// publishing is off, 405 for other methods, 413 for a body over the message size limit,
/// 411 for a chunked one, 400 for a text body that is not UTF-8. Answers 200 with the number
/// of subscribers reached.
pub(crate) async fn http_publish<S>(
    mut incoming: Incoming<S>,
    options: &Options,
    state: &State,
    topic: &str,
) -> Result<Option<Incoming<S>>, wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(refusal) = refusal(options, incoming.request()) {
        return incoming.respond_keep_alive(refusal, KEEP_ALIVE_IDLE).await;
    }
    let limit = state.options.config.max_message_size;
    let body = match incoming.read_body(limit).await? {
        RequestBody::Complete(body) => body,
        RequestBody::TooLarge(len) => {
            return answer(incoming, too_large(len, limit)).await;
        }
        RequestBody::InvalidLength => {
            let reason = "Content-Length is not one decimal number\n";
            return answer(incoming, text_response(StatusCode::BAD_REQUEST, reason)).await;
        }
        _ => {
            let reason = "a body with a Content-Length is required\n";
            return answer(incoming, text_response(StatusCode::LENGTH_REQUIRED, reason)).await;
        }
    };
    let response = publish_body(options, incoming.request(), topic, body);
    answer(incoming, response).await
}

/// `POST /publish/P` over HTTP/2: the same rules and answers as [`http_publish`], but the body
/// needs no `Content-Length` (HTTP/2 frames it); it is read up to the message size limit (a
/// longer one gets 413 as soon as it passes the limit) within the handshake timeout (408).
pub(crate) async fn h2_publish(
    request: http::Request<h2::RecvStream>,
    options: &Options,
    state: &State,
    topic: &str,
) -> http::Response<Vec<u8>> {
    let (parts, mut recv) = request.into_parts();
    let head = http::Request::from_parts(parts, ());
    if let Some(refusal) = refusal(options, &head) {
        drain(&mut recv).await;
        return refusal;
    }
    let limit = state.options.config.max_message_size;
    let read = async {
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| {
                debug!("HTTP/2 publish body: {e}");
                text_response(StatusCode::BAD_REQUEST, "the request body was cut off\n")
            })?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if body.len() + chunk.len() > limit {
                return Err(too_large((body.len() + chunk.len()) as u64, limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    // As over HTTP/1.1, the body must arrive within the handshake timeout.
    let read = tokio::time::timeout(state.options.handshake_timeout, read).await;
    match read {
        Ok(Ok(body)) => publish_body(options, &head, topic, body),
        Ok(Err(refusal)) => {
            drain(&mut recv).await;
            refusal
        }
        Err(_) => text_response(StatusCode::REQUEST_TIMEOUT, "the request body took too long\n"),
    }
}

/// What [`drain`] reads of a refused HTTP/2 request body, at most.
const DRAIN_LIMIT: usize = 64 << 10;
/// How long [`drain`] waits for it, at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops what is left of a refused request's body, up to [`DRAIN_LIMIT`] bytes
/// within [`DRAIN_TIME`], before the refusal goes out. RFC 9113 §8.1 lets a server answer
/// before the request has ended (h2 then resets the stream with NO_ERROR), but a client still
/// sending can take that reset for an error (curl 7.88: "Stream error in the HTTP/2 framing
/// layer", instead of the 401); a small body read first ends the stream cleanly. A larger or
/// slower one is not waited for.
async fn drain(recv: &mut h2::RecvStream) {
    let read = async {
        let mut read = 0;
        while let Some(Ok(chunk)) = recv.data().await {
            read += chunk.len();
            let _ = recv.flow_control().release_capacity(chunk.len());
            if read > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// The checks before the body is read: the refusal, if any: 404 when HTTP publishing is off,
/// 405 for a method other than POST, 401 without a bearer token, 403 with a wrong one.
fn refusal<B>(options: &Options, request: &http::Request<B>) -> Option<http::Response<Vec<u8>>> {
    let Some(token) = &options.publish_token else {
        return Some(text_response(StatusCode::NOT_FOUND, "not found\n"));
    };
    if request.method() != Method::POST {
        let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return Some(response);
    }
    let given = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match given.and_then(|v| v.strip_prefix(b"Bearer ")) {
        None => {
            let mut response =
                text_response(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(response)
        }
        Some(given) if !same_token(given, token.as_bytes()) => {
            Some(text_response(StatusCode::FORBIDDEN, "wrong token\n"))
        }
        Some(_) => None,
    }
}

/// 413 for a body of `len` bytes (or more) over `limit`.
fn too_large(len: u64, limit: usize) -> http::Response<Vec<u8>> {
    let reason = format!("a body of {len} bytes exceeds the limit of {limit}\n");
    text_response(StatusCode::PAYLOAD_TOO_LARGE, reason)
}

/// Publishes a whole, authorized body to `topic`: text when the content type says so (400 if
/// it is not UTF-8), binary otherwise; 200 with the subscribers reached as JSON.
fn publish_body<B>(
    options: &Options,
    request: &http::Request<B>,
    topic: &str,
    body: bytes::Bytes,
) -> http::Response<Vec<u8>> {
    let content_type = request.headers().get(CONTENT_TYPE);
    let message = if content_type.is_some_and(|v| is_text(v.as_bytes())) {
        match Utf8Bytes::try_from(body) {
            Ok(text) => Message::Text(text),
            Err(_) => {
                let reason = "a text content type with a body that is not UTF-8\n";
                return text_response(StatusCode::BAD_REQUEST, reason);
            }
        }
    } else {
        Message::Binary(body)
    };
    let published = options.hub.publish(topic, &message);
    let body =
        format!("{{\"delivered\":{},\"skipped\":{}}}\n", published.delivered, published.skipped);
    let mut response = http::Response::new(body.into_bytes());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The pub/sub part of `/stats`, a JSON object; with `--broker`, a `broker` object in it.
pub(crate) fn stats_json(options: &Options) -> String {
    let s = options.hub.stats();
    let broker = options
        .broker
        .as_ref()
        .map_or_else(String::new, |link| format!(",\"broker\":{}", broker_json(&link.stats())));
    format!(
        "{{\"topics\":{},\"subscriptions\":{},\"published\":{},\"deliveries\":{},\"skipped\":{},\
         \"overflow_closes\":{},\"compressed_deliveries\":{}{broker}}}",
        s.topics,
        s.subscriptions,
        s.published,
        s.deliveries,
        s.skipped,
        s.overflow_closes,
        s.compressed_deliveries
    )
}

/// The `broker` object of `/stats`.
fn broker_json(s: &wsx_broker::LinkStats) -> String {
    let millis = |d: Option<std::time::Duration>| {
        d.map_or_else(|| "null".to_owned(), |d| format!("{:.3}", d.as_secs_f64() * 1000.0))
    };
    let error = s.last_error.as_deref().map_or_else(|| "null".to_owned(), json_string);
    format!(
        "{{\"kind\":\"{}\",\"url\":{},\"connected\":{},\"outages\":{},\"reconnects\":{},\
         \"failed_connects\":{},\"down_ms\":{},\"last_error\":{error},\"published\":{},\
         \"dropped\":{},\"received\":{},\"own_skipped\":{},\"too_large\":{},\"malformed\":{},\
         \"slow_consumer\":{},\"topics\":{},\"subscribe_requests\":{},\
         \"last_resubscribe_ms\":{}}}",
        s.kind,
        json_string(&s.url),
        s.connected,
        s.outages,
        s.reconnects,
        s.failed_connects,
        millis(s.down_for),
        s.published,
        s.dropped,
        s.received,
        s.own_skipped,
        s.too_large,
        s.malformed,
        s.slow_consumer,
        s.topics,
        s.subscribe_requests,
        millis(s.last_resubscribe),
    )
}

/// `s` as a JSON string.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a `Content-Type` says UTF-8 text: `text/*`, or a `charset=utf-8` parameter.
fn is_text(value: &[u8]) -> bool {
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    let charset = parts.find_map(|p| p.strip_prefix("charset=")).map(|c| c.trim_matches('"'));
    match charset {
        Some(c) => c == "utf-8" || c == "utf8",
        None => media.starts_with("text/"),
    }
}

/// Compares in time independent of where the tokens differ.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn answer<S>(
    incoming: Incoming<S>,
    response: http::Response<Vec<u8>>,
) -> Result<Option<Incoming<S>>, wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    incoming.respond_keep_alive(response, KEEP_ALIVE_IDLE).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_content_types() {
        for t in ["text/plain", "text/plain; charset=utf-8", "application/json; charset=UTF-8"] {
            assert!(is_text(t.as_bytes()), "{t}");
        }
        for t in ["application/octet-stream", "text/plain; charset=latin1", "application/json"] {
            assert!(!is_text(t.as_bytes()), "{t}");
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secre", b"secret"));
        assert!(!same_token(b"secreT", b"secret"));
    }

    #[test]
    fn topics_are_paths_without_the_slash() {
        assert_eq!(topic_of("/"), "");
        assert_eq!(topic_of("/room/1"), "room/1");
    }
}
