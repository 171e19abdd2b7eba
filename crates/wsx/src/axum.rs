//! An axum 0.8 extractor for WebSocket upgrades (feature `axum`), shaped like axum's own
//! `axum::extract::ws::WebSocketUpgrade` so that switching is an import, with what that one
//! lacks: permessage-deflate (RFC 7692), message and frame limits, keepalive, backpressure and
//! streaming receive, all from [`Config`].
//!
//! ```no_run
//! use axum::{response::Response, routing::get, Router};
//! use wsx::axum::{WebSocket, WebSocketUpgrade};
//!
//! async fn ws(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade
//!         .protocols(["chat"])
//!         .max_message_size(1 << 20)
//!         .on_upgrade(|mut socket: WebSocket| async move {
//!             while let Some(Ok(msg)) = socket.recv().await {
//!                 if msg.is_data() && socket.send(msg).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         })
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new().route("/ws", get(ws));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! **HTTP/2** (RFC 8441, with the `http2` feature and a server that enables extended CONNECT,
//! as `axum::serve` does with axum's `http2` feature): the request of a WebSocket over HTTP/2
//! has the method `CONNECT`, not `GET`, so route the handler with
//! [`any`](https://docs.rs/axum/0.8/axum/routing/method_routing/fn.any.html) (or
//! `on(MethodFilter::GET.or(MethodFilter::CONNECT), …)`). A `get` route still upgrades
//! HTTP/1.1 but answers an HTTP/2 WebSocket with 405 before the extractor runs.
//!
//! One route can serve a page and upgrade: extract `Option<WebSocketUpgrade>`, which is `None`
//! for a request without `Upgrade: websocket` (and still a rejection for a broken upgrade).
//!
//! **Compression**: the extractor starts from [`Config::default`] with permessage-deflate
//! allowed ([`DeflateConfig::default`]), so it is used whenever the client offers it, as
//! browsers do. The default answers without context takeover either way, so a connection keeps
//! no codec between messages; `.deflate(DeflateConfig::default().context_takeover(true))`
//! compresses small similar messages far better at about 300 KiB per connection (see
//! [`wsx_proto::deflate`]); `.deflate(None)` turns compression off.
//!
//! The request is checked and negotiated by
//! [`ServerPolicy::accept`](wsx_proto::handshake::ServerPolicy::accept), as by every other
//! `wsx` server; refusals are [`WebSocketUpgradeRejection`]s with the status and headers
//! RFC 6455 asks for.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, Method, Version};
use hyper::upgrade::OnUpgrade;
use wsx_proto::deflate::DeflateConfig;
use wsx_proto::handshake::{RequestHead, ServerPolicy};

use crate::{Config, Error};

/// A WebSocket over an upgraded axum (hyper) connection.
pub type WebSocket = crate::hyper::WebSocket;

/// Why a request could not be upgraded; its response has the right status and headers: 400
/// for a broken upgrade request, 403 for a refused `Origin`, 405 with `Allow: GET` for another
/// method, 426 with `Sec-WebSocket-Version: 13` for a missing or other version, 426 for a
/// connection that cannot be upgraded.
pub type WebSocketUpgradeRejection = crate::hyper::Refusal;

/// The extractor: a request that asks for a WebSocket upgrade and can have one.
///
/// Set the subprotocols, limits and keepalive, then answer with
/// [`WebSocketUpgrade::on_upgrade`].
#[must_use = "a WebSocketUpgrade does nothing until on_upgrade answers the request"]
pub struct WebSocketUpgrade<F = DefaultOnFailedUpgrade> {
    /// Shared by every request until a setter changes it (then copied once): each connection
    /// keeps a reference to its configuration, and a copy per connection would cost memory.
    config: Arc<Config>,
    policy: ServerPolicy,
    method: Method,
    version: Version,
    headers: HeaderMap,
    on_upgrade: OnUpgrade,
    on_failed_upgrade: F,
    selected_protocol: Option<String>,
}

impl<F> std::fmt::Debug for WebSocketUpgrade<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("selected_protocol", &self.selected_protocol)
            .finish_non_exhaustive()
    }
}

impl<F> WebSocketUpgrade<F> {
    /// The subprotocols this server speaks, in its order of preference: the first of them that
    /// the client offered is selected, and named in the response. A client that offered none
    /// of them is still upgraded, without a subprotocol; see
    /// [`WebSocketUpgrade::selected_protocol`] and [`crate::WebSocket::protocol`].
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.policy = self.policy.protocols(protocols);
        self.selected_protocol = self.policy.negotiate(self.head()).ok().and_then(|n| n.protocol);
        self
    }

    /// The subprotocol that [`WebSocketUpgrade::protocols`] selected, if any.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.selected_protocol.as_deref()
    }

    /// Upgrades only requests whose `Origin` is one of `origins` (e.g.
    /// `https://example.com`); others are answered 403. Requests without `Origin` (not from a
    /// browser) are accepted. See
    /// [`ServerPolicy::allowed_origins`](wsx_proto::handshake::ServerPolicy::allowed_origins).
    pub fn allowed_origins<I, O>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        self.policy = self.policy.allowed_origins(origins);
        self
    }

    /// Replaces the whole connection configuration (its `deflate` included: `None` there turns
    /// compression off).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_message_size = bytes;
        self
    }

    /// Sets [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_frame_size = bytes;
        self
    }

    /// Sets [`Config::write_buffer_high_water`].
    pub fn write_buffer_high_water(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).write_buffer_high_water = bytes;
        self
    }

    /// Sets [`Config::ping_interval`] (`None`: no keepalive pings).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        Arc::make_mut(&mut self.config).ping_interval = interval;
        self
    }

    /// Sets [`Config::ping_timeout`].
    pub fn ping_timeout(mut self, timeout: Option<Duration>) -> Self {
        Arc::make_mut(&mut self.config).ping_timeout = timeout;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        Arc::make_mut(&mut self.config).idle_timeout = timeout;
        self
    }

    /// Sets [`Config::deflate`]: the permessage-deflate parameters accepted when the client
    /// offers compression, or `None` to never compress. Default: [`DeflateConfig::default`].
    pub fn deflate(mut self, deflate: impl Into<Option<DeflateConfig>>) -> Self {
        Arc::make_mut(&mut self.config).deflate = deflate.into();
        self
    }

    /// Calls `callback` with the error if the upgrade fails after the `101` response (the
    /// client went away, or the connection could not be handed over). By default the error is
    /// logged at `debug` level and dropped.
    pub fn on_failed_upgrade<C>(self, callback: C) -> WebSocketUpgrade<C>
    where
        C: OnFailedUpgrade,
    {
        WebSocketUpgrade {
            config: self.config,
            policy: self.policy,
            method: self.method,
            version: self.version,
            headers: self.headers,
            on_upgrade: self.on_upgrade,
            on_failed_upgrade: callback,
            selected_protocol: self.selected_protocol,
        }
    }

    /// Answers the request: the `101 Switching Protocols` response with the negotiated
    /// subprotocol and extensions, and, in a spawned task once hyper hands over the
    /// connection, `callback` with the [`WebSocket`].
    ///
    /// A request the policy refuses here (an `Origin` not allowed) is answered with the
    /// refusal instead, and `callback` is not called.
    pub fn on_upgrade<C, Fut>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
        F: OnFailedUpgrade,
    {
        let policy = self.policy.clone().config(self.config.clone());
        // An HTTP/2 request got here only as an extended CONNECT for `websocket`.
        let accepted = if self.version == Version::HTTP_2 {
            policy.accept_connect(self.head(), Some("websocket"))
        } else {
            policy.accept(self.head())
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(e) => return WebSocketUpgradeRejection::Handshake(e).into_response(),
        };
        let (response, upgrade) = crate::hyper::finish(accepted, self.on_upgrade);
        let on_failed_upgrade = self.on_failed_upgrade;
        tokio::spawn(async move {
            // The upgrade future is gone before the callback runs: as `match upgrade.await {
            // Ok(s) => callback(s).await, … }` it would stay in the task, next to the callback's
            // future, for the whole life of the connection (about 600 bytes more per idle one).
            let socket = match upgrade.await {
                Ok(socket) => socket,
                Err(e) => return on_failed_upgrade.call(e),
            };
            callback(socket).await
        });
        response.map(|()| Body::empty())
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead { method: &self.method, version: self.version, headers: &self.headers }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade<DefaultOnFailedUpgrade> {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.version == Version::HTTP_2 {
            // Checked again in `on_upgrade`; refused here so that a handler never runs for a
            // request that cannot be upgraded.
            crate::hyper::validate_h2(RequestHead::from(&*parts), &parts.extensions)?;
        } else {
            RequestHead::from(&*parts).validate()?;
        }
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(WebSocketUpgradeRejection::NotUpgradable)?;
        let config = default_config();
        Ok(Self {
            policy: ServerPolicy::new(config.clone()),
            config,
            method: parts.method.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            on_upgrade,
            on_failed_upgrade: DefaultOnFailedUpgrade,
            selected_protocol: None,
        })
    }
}

/// The extractor's configuration until a setter changes it: the defaults with
/// permessage-deflate on, one copy for every connection.
fn default_config() -> Arc<Config> {
    static DEFAULT: OnceLock<Arc<Config>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(Config::default().deflate(Some(DeflateConfig::default()))))
        .clone()
}

/// `Option<WebSocketUpgrade>`: `None` for a request that does not ask for an upgrade (no
/// `Upgrade: websocket`), so that one handler serves a page and upgrades; a request that asks
/// and is broken is still rejected.
impl<S: Send + Sync> OptionalFromRequestParts<S> for WebSocketUpgrade<DefaultOnFailedUpgrade> {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if !crate::hyper::asks_for_websocket(RequestHead::from(&*parts), &parts.extensions) {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
    }
}

impl IntoResponse for WebSocketUpgradeRejection {
    fn into_response(self) -> Response {
        self.response().map(Body::new)
    }
}

/// What to do when an upgrade fails after the `101` response was sent.
pub trait OnFailedUpgrade: Send + 'static {
    /// Handles the error.
    fn call(self, error: Error);
}

impl<F> OnFailedUpgrade for F
where
    F: FnOnce(Error) + Send + 'static,
{
    fn call(self, error: Error) {
        self(error)
    }
}

/// The default [`OnFailedUpgrade`]: logs the error at `debug` level.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DefaultOnFailedUpgrade;

impl OnFailedUpgrade for DefaultOnFailedUpgrade {
    fn call(self, error: Error) {
        tracing::debug!(%error, "WebSocket upgrade failed");
    }
}
