//! Upgrading hyper 1.x requests to WebSockets (feature `hyper`).
//!
//! A hyper service checks a request with [`is_upgrade_request`], answers it with the response
//! [`upgrade`] returns, and awaits the [`UpgradeFut`] (usually in a spawned task) for the
//! [`WebSocket`]. The request is checked and negotiated by
//! [`ServerPolicy::accept`](wsx_proto::handshake::ServerPolicy::accept), as `wsx`'s own server
//! does. Works with any HTTP/1.1 server of hyper's whose connections are served
//! `with_upgrades()` (hyper-util's auto server upgrades by default).
//!
//! ```no_run
//! use std::convert::Infallible;
//! use http_body_util::{Either, Empty, Full};
//! use wsx::bytes::Bytes;
//! use wsx::proto::handshake::ServerPolicy;
//!
//! async fn handle(
//!     mut req: hyper::Request<hyper::body::Incoming>,
//! ) -> Result<hyper::Response<Either<Empty<Bytes>, Full<Bytes>>>, Infallible> {
//!     if !wsx::hyper::is_upgrade_request(&req) {
//!         return Ok(hyper::Response::new(Either::Right(Full::from("not a WebSocket\n"))));
//!     }
//!     let policy = ServerPolicy::new(wsx::Config::default());
//!     match wsx::hyper::upgrade(&mut req, &policy) {
//!         Ok((response, upgrade)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = upgrade.await else { return };
//!                 while let Some(Ok(msg)) = ws.recv().await {
//!                     if msg.is_data() && ws.send(msg).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!             Ok(response.map(Either::Left))
//!         }
//!         Err(refusal) => Ok(refusal.response().map(Either::Right)),
//!     }
//! }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::time::{sleep_until, Instant, Sleep};
use wsx_proto::handshake::{self as hs, Accepted, RequestHead, ServerPolicy};
use wsx_proto::{Connection, HandshakeError};

use crate::Error;

/// A WebSocket over an upgraded hyper connection.
pub type WebSocket = crate::WebSocket<TokioIo<Upgraded>>;

/// Whether `req` asks for a WebSocket (`Upgrade: websocket` on HTTP/1.1; with the `http2`
/// feature, an extended CONNECT with `:protocol websocket` on HTTP/2), as opposed to being a
/// plain HTTP request for the service to answer itself.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    asks_for_websocket(RequestHead::from(req), req.extensions())
}

/// Accepts the upgrade `req` asks for under `policy`: the `101 Switching Protocols` response
/// to answer with (`200` for an HTTP/2 extended CONNECT, RFC 8441, with the `http2` feature),
/// and the future of the [`WebSocket`], which completes once hyper has sent the response and
/// handed over the connection (over HTTP/2: the request's stream).
///
/// Refused: an invalid upgrade request, an `Origin` or subprotocol choice the policy refuses
/// (see [`ServerPolicy::accept`]), and a request whose connection hyper cannot upgrade
/// ([`Refusal::NotUpgradable`]: HTTP/2 without the `http2` feature, or a connection not served
/// `with_upgrades()`). Answer
/// a refusal with [`Refusal::response`]. The request's body is not touched.
///
/// Answer with the returned response and no other: hyper hands the connection over after
/// whatever response a service gives an upgrade request, so the future would complete even
/// after, say, a 400.
pub fn upgrade<B>(
    req: &mut Request<B>,
    policy: &ServerPolicy,
) -> Result<(Response<Empty<Bytes>>, UpgradeFut), Refusal> {
    let accepted = if req.version() == http::Version::HTTP_2 {
        accept_h2(req, policy)?
    } else {
        policy.accept(&*req)?
    };
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>().ok_or(Refusal::NotUpgradable)?;
    let (response, upgrade) = finish(accepted, on_upgrade);
    Ok((response.map(|()| Empty::new()), upgrade))
}

/// The HTTP/2 step: an extended CONNECT (RFC 8441) with hyper's `:protocol`.
#[cfg(feature = "http2")]
pub(crate) fn accept_h2<B>(req: &Request<B>, policy: &ServerPolicy) -> Result<Accepted, Refusal> {
    Ok(policy.accept_connect(req, protocol_of(req.extensions()))?)
}

/// Checks an HTTP/2 request for [`accept_h2`] without negotiating.
pub(crate) fn validate_h2(
    head: RequestHead<'_>,
    #[allow(unused_variables)] extensions: &http::Extensions,
) -> Result<(), Refusal> {
    #[cfg(feature = "http2")]
    return Ok(head.validate_connect(protocol_of(extensions))?);
    #[cfg(not(feature = "http2"))]
    {
        let _ = head;
        Err(Refusal::NotUpgradable)
    }
}

/// Without the `http2` feature an HTTP/2 request cannot carry a WebSocket.
#[cfg(not(feature = "http2"))]
pub(crate) fn accept_h2<B>(_req: &Request<B>, _policy: &ServerPolicy) -> Result<Accepted, Refusal> {
    Err(Refusal::NotUpgradable)
}

/// The `:protocol` hyper read from an HTTP/2 request.
#[cfg(feature = "http2")]
pub(crate) fn protocol_of(extensions: &http::Extensions) -> Option<&str> {
    extensions.get::<hyper::ext::Protocol>().map(hyper::ext::Protocol::as_str)
}

/// Whether `req` asks for a WebSocket at all: an HTTP/1.1 upgrade, or (with the `http2`
/// feature) an HTTP/2 extended CONNECT with `:protocol websocket`.
pub(crate) fn asks_for_websocket(
    head: RequestHead<'_>,
    #[allow(unused_variables)] extensions: &http::Extensions,
) -> bool {
    #[cfg(feature = "http2")]
    if head.version == http::Version::HTTP_2 {
        return head.is_extended_connect(protocol_of(extensions));
    }
    head.is_upgrade()
}

/// The response and the upgrade future for an accepted request, for the extractors built on
/// this module.
pub(crate) fn finish(accepted: Accepted, on_upgrade: OnUpgrade) -> (Response<()>, UpgradeFut) {
    let Accepted { response, protocol, connection, .. } = accepted;
    // The clock is read now; the timer is made at the first poll (in the runtime that polls
    // it: this function may run where no timer is available).
    let deadline =
        connection.config().handshake_timeout.map(|limit| Deadline::At(Instant::now() + limit));
    (response, UpgradeFut { on_upgrade, pending: Some((connection, protocol)), deadline })
}

/// The future of an accepted upgrade: resolves to the [`WebSocket`] once hyper hands over the
/// connection, or to an error if the connection ends first (the client went away before or
/// while the `101` was sent, or the server dropped the connection).
///
/// Bounded by [`Config::handshake_timeout`](crate::Config::handshake_timeout) from the call to
/// [`upgrade`]: a service that never sends the response, or a `101` that cannot be written,
/// ends in [`Error::Timeout`] instead of a task waiting forever.
#[derive(Debug)]
#[must_use = "the WebSocket exists only once this future is awaited"]
pub struct UpgradeFut {
    on_upgrade: OnUpgrade,
    /// The negotiated connection and subprotocol; taken when the future completes.
    pending: Option<(Connection, Option<String>)>,
    /// When the handshake timeout runs out.
    deadline: Option<Deadline>,
}

/// The upgrade's deadline: when, then its timer once polled.
#[derive(Debug)]
enum Deadline {
    At(Instant),
    // Boxed: `Sleep` is not `Unpin`, and the future is short-lived.
    Timer(Pin<Box<Sleep>>),
}

impl Future for UpgradeFut {
    type Output = Result<WebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let upgraded = match Pin::new(&mut self.on_upgrade).poll(cx) {
            Poll::Ready(upgraded) => upgraded,
            Poll::Pending => {
                if let Some(Deadline::At(at)) = self.deadline {
                    self.deadline = Some(Deadline::Timer(Box::pin(sleep_until(at))));
                }
                if let Some(Deadline::Timer(timer)) = &mut self.deadline {
                    ready!(timer.as_mut().poll(cx));
                    self.pending = None;
                    return Poll::Ready(Err(Error::Timeout("waiting for the upgrade")));
                }
                return Poll::Pending;
            }
        };
        let Some((connection, protocol)) = self.pending.take() else {
            return Poll::Ready(Err(Error::Io(io::Error::other(
                "UpgradeFut polled after completion",
            ))));
        };
        let upgraded = upgraded.map_err(|e| Error::Io(io::Error::other(e)))?;
        // Bytes the client sent after its request head (its first frames) are kept by
        // `Upgraded` and read first.
        Poll::Ready(Ok(crate::WebSocket::from_connection(
            TokioIo::new(upgraded),
            connection,
            protocol,
        )))
    }
}

/// Why an upgrade was refused; [`Refusal::response`] is the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The request is not a valid upgrade, or the policy refused it: answered with
    /// [`HandshakeError::status`] (400, 403, 405 with `Allow: GET`, 426 with
    /// `Sec-WebSocket-Version: 13`).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// hyper cannot upgrade this request's connection: it is HTTP/2 and wsx was built without
    /// the `http2` feature, or the connection is not served `with_upgrades()`. Answered with
    /// 426.
    #[error("this connection cannot be upgraded to a WebSocket")]
    NotUpgradable,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Handshake(e) => e.status(),
            Self::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
        }
    }

    /// The response: the status, the headers the refusal needs and a short plain-text body
    /// giving the reason.
    pub fn response(&self) -> Response<Full<Bytes>> {
        match self {
            Self::Handshake(e) => hs::rejection_response(e).map(Full::from),
            Self::NotUpgradable => {
                let mut response = Response::new(Full::from(format!("{self}\n")));
                *response.status_mut() = self.status();
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                response
            }
        }
    }
}
