//! `wsx serve` over HTTP/2 (RFC 8441): a TLS connection that negotiated ALPN `h2` is served by
//! `h2` with extended CONNECT enabled ([`wsx::h2::server_builder`]'s limits). Each WebSocket is
//! one stream and runs the same echo, pub/sub, exec or bridge loop as over HTTP/1.1, admitted by
//! the same [`admit`] (Origin, connection limit, mode); plain requests get the same pages.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, timeout_at, Instant};
use tokio_util::task::TaskTracker;
use tracing::debug;
use wsx::proto::handshake::ServerPolicy;

use crate::serve::{admit, page, spawn_echo, text_response, State};

/// How long an HTTP/2 connection may stay without streams. Longer than HTTP/1.1's keep-alive:
/// a browser opens its WebSockets over HTTP/2 only on a connection it already holds (the one
/// that loaded the page), and falls back to HTTP/1.1 once that one is gone; browsers keep idle
/// HTTP/2 connections for minutes (nginx's default idle timeout is 75 s).
pub(crate) const HTTP2_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Counts one open HTTP/2 connection while alive.
struct Open<'a>(&'a State);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.http2_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one HTTP/2 connection until the client ends it, it stays without streams for
/// [`HTTP2_IDLE`], or the server shuts down (GOAWAY, then the open WebSockets close with
/// 1001 as everywhere). The HTTP/2 preface and SETTINGS exchange must finish by `deadline`.
pub(crate) async fn serve<S>(
    io: S,
    peer: SocketAddr,
    state: &Arc<State>,
    echoes: &TaskTracker,
    deadline: Instant,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = wsx::h2::server_builder().handshake::<_, Bytes>(io);
    let mut conn = timeout_at(deadline, handshake)
        .await
        .map_err(|_| wsx::Error::Timeout("HTTP/2 handshake"))?
        .map_err(|e| wsx::Error::Io(std::io::Error::other(e)))?;
    state.http2_connections.fetch_add(1, Ordering::Relaxed);
    let _open = Open(state);
    let policy = ServerPolicy::new(state.options.config.clone());
    let mut going_away = false;
    loop {
        if !going_away && state.stopping.load(Ordering::SeqCst) {
            going_away = true;
            conn.graceful_shutdown();
        }
        let idle = sleep(HTTP2_IDLE);
        let stop = state.stop.notified();
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((request, respond))) => {
                    // A task of its own: deciding may wait (a bridge's TCP connect), and the
                    // connection's other streams move only while this loop polls `accept`.
                    let (state, echoes_, policy) = (state.clone(), echoes.clone(), policy.clone());
                    echoes.spawn(async move {
                        stream(request, respond, peer, &state, &echoes_, &policy).await;
                    });
                }
                Some(Err(e)) => {
                    debug!(%peer, "HTTP/2 connection error: {e}");
                    break;
                }
                None => break,
            },
            // Checked every HTTP2_IDLE: a connection whose last stream ended goes away
            // at the next check.
            () = idle, if !going_away => {
                if !conn.has_streams() {
                    debug!(%peer, "HTTP/2 connection idle: GOAWAY");
                    going_away = true;
                    conn.graceful_shutdown();
                }
            }
            () = stop, if !going_away => {}
        }
    }
    Ok(())
}

/// One stream: a WebSocket (extended CONNECT) or a plain request.
async fn stream(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    peer: SocketAddr,
    state: &Arc<State>,
    echoes: &TaskTracker,
    policy: &ServerPolicy,
) {
    if !wsx::h2::is_websocket_request(&request) {
        let head_only = request.method() == http::Method::HEAD;
        let publish = request.uri().path().strip_prefix("/publish/").map(str::to_owned);
        let response = match (&state.options.pubsub, publish) {
            (Some(pubsub), Some(topic)) => {
                crate::pubsub::h2_publish(request, pubsub, state, &topic).await
            }
            _ => page(state, request.method(), request.uri().path()),
        };
        let (parts, body) = response.into_parts();
        let body = if head_only { Bytes::new() } else { Bytes::from(body) };
        wsx::h2::respond_with(respond, http::Response::from_parts(parts, body));
        return;
    }
    // The request's head, for the decisions made before the answer (exec's environment too).
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    match admit(&head, peer, state, true).await {
        Ok((slot, mode)) => match wsx::h2::accept(request, respond, policy) {
            Ok(ws) => spawn_echo(echoes, ws, slot, mode),
            Err(e) => debug!(%peer, "HTTP/2 WebSocket refused: {e}"),
        },
        Err(status) => {
            let reason = format!("{}\n", status.canonical_reason().unwrap_or(""));
            let (parts, body) = text_response(status, reason.as_str()).into_parts();
            wsx::h2::respond_with(respond, http::Response::from_parts(parts, Bytes::from(body)));
        }
    }
}
