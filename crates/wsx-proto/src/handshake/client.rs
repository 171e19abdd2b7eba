//! The client's opening handshake as one step: an offer builds the request; the server's
//! response, checked against the offer, yields a ready [`Connection`].

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::Response;

use super::{check_protocols, check_selected_protocol, generate_key, request, validate_response};
use crate::deflate;
use crate::{Config, Connection, HandshakeError, Role};

/// What a client offers: its [`Config`] (with the permessage-deflate offer, if any), the
/// subprotocols in its order of preference, and the `Sec-WebSocket-Key`.
///
/// ```
/// use wsx_proto::handshake::{ClientOffer, ServerPolicy};
/// use wsx_proto::{deflate::DeflateConfig, Config};
///
/// let config = Config::default().deflate(Some(DeflateConfig::default()));
/// let offer = ClientOffer::new(config.clone(), ["chat"]).unwrap();
/// let bytes = offer.request("example.com", "/", &http::HeaderMap::new()).unwrap();
/// let request = wsx_proto::handshake::parse_request(&bytes, 100).unwrap();
///
/// let accepted = ServerPolicy::new(config).protocols(["chat"]).accept(&request).unwrap();
/// let established = offer.process_response(&accepted.response).unwrap();
/// assert_eq!(established.protocol.as_deref(), Some("chat"));
/// assert!(established.connection.is_deflate_enabled());
/// ```
#[derive(Debug, Clone)]
pub struct ClientOffer {
    config: Arc<Config>,
    protocols: Vec<String>,
    key: String,
}

impl ClientOffer {
    /// An offer of `protocols` (in order of preference) with a fresh random key. Names that
    /// [`check_protocols`] refuses are refused here, before anything is built or sent.
    pub fn new<I, P>(config: impl Into<Arc<Config>>, protocols: I) -> Result<Self, HandshakeError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let protocols: Vec<String> = protocols.into_iter().map(Into::into).collect();
        check_protocols(&protocols)?;
        Ok(Self { config: config.into(), protocols, key: generate_key() })
    }

    /// Replaces the key (for test vectors; a real client keeps the random one).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// The configuration the connection is made with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The `Sec-WebSocket-Key`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The offered subprotocols.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The fields of the offer that do not depend on the HTTP version:
    /// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` (RFC 8441 sends them too).
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        // Checked tokens joined by ", ": always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&self.protocols.join(", ")) {
            if !self.protocols.is_empty() {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
        }
        if let Some(config) = &self.config.deflate {
            // Built from validated numbers and fixed names, so always a valid header value.
            if let Ok(offer) = HeaderValue::from_str(&deflate::client_offer(config)) {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, offer);
            }
        }
        headers
    }

    /// The HTTP/1.1 request head for `host` and `path_and_query`, with `extra` headers
    /// (see [`super::request`] for what is refused). An `extra` `Sec-WebSocket-Extensions`
    /// field is replaced by the offer's own when the config offers permessage-deflate.
    pub fn request(
        &self,
        host: &str,
        path_and_query: &str,
        extra: &HeaderMap,
    ) -> Result<Vec<u8>, HandshakeError> {
        let mut headers = extra.clone();
        if let Some(offer) = self.headers().remove(header::SEC_WEBSOCKET_EXTENSIONS) {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, offer);
        }
        request(host, path_and_query, &self.key, &self.protocols, &headers)
    }

    /// Checks an HTTP/1.1 response (RFC 6455 §4.1): `101`, `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Accept` for the key, then [`ClientOffer::negotiate_response`]; returns
    /// the client's [`Connection`].
    pub fn process_response<B>(
        &self,
        response: &Response<B>,
    ) -> Result<Established, HandshakeError> {
        validate_response(response, &self.key, &self.protocols)?;
        let negotiated = self.negotiate_response(response.headers())?;
        let protocol = negotiated.protocol.clone();
        let connection = negotiated.into_connection(Role::Client, self.config.clone());
        Ok(Established { protocol, connection })
    }

    /// The HTTP/2 extended CONNECT request (RFC 8441 §5) for `uri` (`https://host:port/path`,
    /// the `:scheme`, `:authority` and `:path`), with `extra` headers: method `CONNECT`,
    /// `Sec-WebSocket-Version: 13` and the offer's [`ClientOffer::headers`]. The driver adds
    /// `:protocol websocket` the way its HTTP/2 library takes it (`h2::ext::Protocol` in the
    /// request's extensions). Connection-specific fields in `extra` (`Connection`, `Upgrade`,
    /// `Keep-Alive`, `Transfer-Encoding`, `Host`, the `Sec-WebSocket-Key`) are dropped: HTTP/2
    /// forbids the first ones, and `:authority` replaces `Host`.
    pub fn connect_request(
        &self,
        uri: http::Uri,
        extra: &HeaderMap,
    ) -> Result<http::Request<()>, HandshakeError> {
        check_protocols(&self.protocols)?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::CONNECT;
        *request.version_mut() = http::Version::HTTP_2;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        for (name, value) in extra {
            let dropped = [
                header::CONNECTION,
                header::UPGRADE,
                header::TRANSFER_ENCODING,
                header::HOST,
                header::SEC_WEBSOCKET_KEY,
                header::TE,
                header::HeaderName::from_static("keep-alive"),
                header::HeaderName::from_static("proxy-connection"),
            ];
            if !dropped.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        for (name, value) in self.headers() {
            if let Some(name) = name {
                headers.insert(name, value);
            }
        }
        Ok(request)
    }

    /// Checks the server's answer to [`ClientOffer::connect_request`] (RFC 8441 §5): a `200`,
    /// then [`ClientOffer::negotiate_response`]; returns the client's [`Connection`].
    pub fn process_connect_response<B>(
        &self,
        response: &Response<B>,
    ) -> Result<Established, HandshakeError> {
        if response.status() != http::StatusCode::OK {
            return Err(HandshakeError::UnexpectedStatus { status: response.status() });
        }
        let negotiated = self.negotiate_response(response.headers())?;
        let protocol = negotiated.protocol.clone();
        let connection = negotiated.into_connection(Role::Client, self.config.clone());
        Ok(Established { protocol, connection })
    }

    /// The part of the check that does not depend on the HTTP version: the selected
    /// subprotocol and the extensions must be ones that were offered (RFC 6455 §4.1,
    /// RFC 7692 §7.1).
    pub fn negotiate_response(
        &self,
        headers: &HeaderMap,
    ) -> Result<super::Negotiated, HandshakeError> {
        let protocol = check_selected_protocol(headers, &self.protocols)?;
        let extensions = headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
        let extensions = extensions.iter().map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let deflate = match &self.config.deflate {
            Some(config) => deflate::accept_response(extensions, config)?,
            None => match extensions.into_iter().next() {
                Some(ext) => return Err(HandshakeError::UnofferedExtension(ext.to_owned())),
                None => None,
            },
        };
        Ok(super::Negotiated { protocol, deflate })
    }
}

/// A completed client handshake.
#[derive(Debug)]
#[non_exhaustive]
pub struct Established {
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// The client's protocol core, with permessage-deflate if negotiated.
    pub connection: Connection,
}
