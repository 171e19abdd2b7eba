//! The server's opening handshake as one step: a request head and the server's policy in, the
//! `101` response and a ready [`Connection`] out (or the refusal to answer with).

use std::fmt;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::{single, RequestHead};
use crate::deflate::{self, Params};
use crate::{Config, Connection, HandshakeError, Role};

/// What a server accepts: its [`Config`] (limits, keepalive, permessage-deflate), the
/// subprotocols it speaks and the origins it lets in.
///
/// [`ServerPolicy::accept`] applies it to an HTTP/1.1 upgrade request. Every driver calls it
/// (`wsx`'s own server, hyper, axum), so that a request is checked and negotiated one way.
///
/// ```
/// use wsx_proto::handshake::{ServerPolicy, RequestHead};
/// use wsx_proto::{deflate::DeflateConfig, Config};
///
/// let policy = ServerPolicy::new(Config::default().deflate(Some(DeflateConfig::default())))
///     .protocols(["v2.chat", "chat"]);
/// let request = http::Request::get("/")
///     .header("Host", "example.com")
///     .header("Upgrade", "websocket")
///     .header("Connection", "Upgrade")
///     .header("Sec-WebSocket-Version", "13")
///     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("Sec-WebSocket-Protocol", "chat, v2.chat")
///     .header("Sec-WebSocket-Extensions", "permessage-deflate")
///     .body(())
///     .unwrap();
/// let accepted = policy.accept(&request).unwrap();
/// assert_eq!(accepted.response.status(), 101);
/// assert_eq!(accepted.protocol.as_deref(), Some("v2.chat"));
/// assert_eq!(accepted.response.headers()["Sec-WebSocket-Accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// assert!(accepted.connection.is_deflate_enabled());
/// ```
#[derive(Clone)]
pub struct ServerPolicy {
    config: Arc<Config>,
    protocols: Protocols,
    origins: Option<Vec<String>>,
    require_origin: bool,
}

/// How a subprotocol is selected.
#[derive(Clone)]
enum Protocols {
    /// Never: the response names none.
    None,
    /// The first of these, in this order, that the client offered.
    Preferred(Vec<String>),
    /// What the closure returns for the offered ones; it must be one of them.
    Chooser(Arc<Chooser>),
}

/// A subprotocol chooser: the offered names in, the selected one out.
type Chooser = dyn Fn(&[&str]) -> Option<String> + Send + Sync;

impl ServerPolicy {
    /// A policy with `config`, no subprotocol and any origin.
    pub fn new(config: impl Into<Arc<Config>>) -> Self {
        Self {
            config: config.into(),
            protocols: Protocols::None,
            origins: None,
            require_origin: false,
        }
    }

    /// The subprotocols this server speaks, in its order of preference: the first of them that
    /// the client offered is selected. A client that offers none of them is still accepted, with
    /// no subprotocol (RFC 6455 §4.2.2 lets the server select none); the application sees that
    /// in [`Accepted::protocol`].
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.protocols = Protocols::Preferred(protocols.into_iter().map(Into::into).collect());
        self
    }

    /// Selects the subprotocol with `choose`, which sees the offered ones in the client's order.
    /// It must return one of them or `None`; any other name refuses the request with
    /// [`HandshakeError::UnofferedProtocol`] (400), since a client fails a handshake that
    /// selects a subprotocol it did not offer (RFC 6455 §4.1).
    pub fn select_protocol<F>(mut self, choose: F) -> Self
    where
        F: Fn(&[&str]) -> Option<String> + Send + Sync + 'static,
    {
        self.protocols = Protocols::Chooser(Arc::new(choose));
        self
    }

    /// Accepts only requests whose `Origin` is one of `origins` (serialized origins such as
    /// `https://example.com`, compared ignoring ASCII case); others are refused with
    /// [`HandshakeError::ForbiddenOrigin`] (403). This is what stops another site's page from
    /// opening a WebSocket with the user's cookies (RFC 6455 §10.2).
    ///
    /// A request without `Origin` did not come from a browser and is accepted, unless
    /// [`ServerPolicy::require_origin`] is set.
    pub fn allowed_origins<I, O>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = O>,
        O: Into<String>,
    {
        self.origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Refuses requests without an `Origin` header (403). Default `false`.
    pub fn require_origin(mut self, on: bool) -> Self {
        self.require_origin = on;
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: impl Into<Arc<Config>>) -> Self {
        self.config = config.into();
        self
    }

    /// The configuration connections are made with.
    pub fn connection_config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The whole HTTP/1.1 step: checks the request ([`RequestHead::validate`]), negotiates
    /// ([`ServerPolicy::negotiate`]) and returns the `101 Switching Protocols` response with
    /// `Upgrade`, `Connection`, `Sec-WebSocket-Accept` and the negotiated
    /// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`, and the server's
    /// [`Connection`], with permessage-deflate if it was negotiated.
    ///
    /// On error, answer with [`super::rejection_response`]: it carries the status
    /// ([`HandshakeError::status`]) and the headers the refusal needs.
    pub fn accept<'a>(
        &self,
        request: impl Into<RequestHead<'a>>,
    ) -> Result<Accepted, HandshakeError> {
        let request = request.into();
        let accept = request.validate()?;
        let negotiated = self.negotiate(request)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        // Base64 of a SHA-1: always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
        }
        headers.extend(negotiated.response_headers());
        let protocol = negotiated.protocol.clone();
        let connection = negotiated.into_connection(Role::Server, self.config.clone());
        Ok(Accepted { response, protocol, connection })
    }

    /// The whole HTTP/2 step (RFC 8441 §5): checks an extended CONNECT request
    /// ([`RequestHead::validate_connect`]: method `CONNECT`, `:protocol` `websocket`, which the
    /// driver reads from its HTTP/2 library and passes as `protocol`, and
    /// `Sec-WebSocket-Version: 13`), negotiates ([`ServerPolicy::negotiate`]) and returns the
    /// `200` response with the negotiated `Sec-WebSocket-Protocol` and
    /// `Sec-WebSocket-Extensions`, and the server's [`Connection`]. There is no key and no
    /// `Sec-WebSocket-Accept` over HTTP/2, and the response has no `Content-Length` (a 2xx answer
    /// to CONNECT has no content; RFC 9110 §9.3.6).
    ///
    /// ```
    /// use wsx_proto::handshake::ServerPolicy;
    /// use wsx_proto::Config;
    ///
    /// let request = http::Request::connect("https://example.com/chat")
    ///     .version(http::Version::HTTP_2)
    ///     .header("Sec-WebSocket-Version", "13")
    ///     .header("Sec-WebSocket-Protocol", "chat")
    ///     .body(())
    ///     .unwrap();
    /// let policy = ServerPolicy::new(Config::default()).protocols(["chat"]);
    /// let accepted = policy.accept_connect(&request, Some("websocket")).unwrap();
    /// assert_eq!(accepted.response.status(), 200);
    /// assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    /// assert!(policy.accept_connect(&request, None).is_err());
    /// ```
    pub fn accept_connect<'a>(
        &self,
        request: impl Into<RequestHead<'a>>,
        protocol: Option<&str>,
    ) -> Result<Accepted, HandshakeError> {
        let request = request.into();
        request.validate_connect(protocol)?;
        let negotiated = self.negotiate(request)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::OK;
        *response.version_mut() = http::Version::HTTP_2;
        response.headers_mut().extend(negotiated.response_headers());
        let protocol = negotiated.protocol.clone();
        let connection = negotiated.into_connection(Role::Server, self.config.clone());
        Ok(Accepted { response, protocol, connection })
    }

    /// The part of the step that does not depend on the HTTP version, for HTTP/1.1 and for an
    /// HTTP/2 extended CONNECT (RFC 8441) alike: the `Origin` policy, the subprotocol and
    /// permessage-deflate. The caller checks the version-specific part of the request first.
    pub fn negotiate(&self, request: RequestHead<'_>) -> Result<Negotiated, HandshakeError> {
        let h = request.headers;
        match h.get(header::ORIGIN) {
            None if self.require_origin => return Err(HandshakeError::ForbiddenOrigin(None)),
            None => {}
            Some(value) => {
                if let Some(allowed) = &self.origins {
                    let origin = single(h, &header::ORIGIN).and_then(|v| v.to_str().ok());
                    let origin = origin.map(str::trim);
                    if !origin.is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o))) {
                        let origin = String::from_utf8_lossy(value.as_bytes()).into_owned();
                        return Err(HandshakeError::ForbiddenOrigin(Some(origin)));
                    }
                }
            }
        }
        let offered: Vec<&str> = request.offered_protocols().collect();
        let protocol = match &self.protocols {
            Protocols::None => None,
            Protocols::Preferred(ours) => {
                ours.iter().find(|p| offered.contains(&p.as_str())).cloned()
            }
            Protocols::Chooser(choose) => match choose(&offered) {
                // The offered names come from header values, so the one selected cannot put a
                // line break into the response.
                Some(p) if offered.contains(&p.as_str()) => Some(p),
                Some(p) => return Err(HandshakeError::UnofferedProtocol(p)),
                None => None,
            },
        };
        let deflate = self.config.deflate.as_ref().and_then(|config| {
            let offers = h.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
            deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok()), config)
        });
        Ok(Negotiated { protocol, deflate })
    }
}

impl fmt::Debug for ServerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocols: &dyn fmt::Debug = match &self.protocols {
            Protocols::None => &"none",
            Protocols::Preferred(p) => p,
            Protocols::Chooser(_) => &"chooser",
        };
        f.debug_struct("ServerPolicy")
            .field("config", &self.config)
            .field("protocols", protocols)
            .field("origins", &self.origins)
            .field("require_origin", &self.require_origin)
            .finish()
    }
}

/// The outcome of negotiation, in either role: the subprotocol and the permessage-deflate
/// parameters, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated {
    /// The selected subprotocol.
    pub protocol: Option<String>,
    /// The negotiated permessage-deflate parameters.
    pub deflate: Option<Params>,
}

impl Negotiated {
    /// The response fields a server answers with: `Sec-WebSocket-Protocol` and
    /// `Sec-WebSocket-Extensions`, each when negotiated.
    pub fn response_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // A selected protocol is one of the offered tokens, so a valid header value.
        if let Some(value) = self.protocol.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        // Built from validated tokens only, so always a valid header value.
        if let Some(value) =
            self.deflate.and_then(|p| HeaderValue::from_str(&p.to_response_header()).ok())
        {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        headers
    }

    /// The connection for `role` with `config`, compressing if deflate was negotiated.
    pub fn into_connection(self, role: Role, config: impl Into<Arc<Config>>) -> Connection {
        let conn = Connection::new(role, config);
        match self.deflate {
            Some(params) => conn.with_deflate(params),
            None => conn,
        }
    }
}

/// An accepted upgrade: the response to send and the connection to drive once it is sent.
#[derive(Debug)]
#[non_exhaustive]
pub struct Accepted {
    /// `101 Switching Protocols` with the negotiated headers. A driver may add its own (e.g.
    /// `Set-Cookie`); [`super::response_head`] encodes it for HTTP/1.1.
    pub response: Response<()>,
    /// The selected subprotocol, also in the response.
    pub protocol: Option<String>,
    /// The server's protocol core, with permessage-deflate if negotiated.
    pub connection: Connection,
}
