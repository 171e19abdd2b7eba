//! Accepting WebSocket connections.
//!
//! [`accept`] and [`accept_with`] cover the usual case. To also answer plain HTTP requests on the
//! same port (as `wsx serve` does with its demo page), read the request with [`Incoming::read`]
//! and then [`Incoming::accept`], [`Incoming::reject`] or [`Incoming::respond`].

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use http::{HeaderMap, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wsx_proto::deflate;
use wsx_proto::handshake::{self, HeadScanner};
use wsx_proto::{Config, Connection, HandshakeError, Role};

use crate::{Error, WebSocket};

/// Accepts a WebSocket connection on `stream` with the default [`Config`], any path, no
/// subprotocol.
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, Config::default(), |_| Ok(Accept::default())).await
}

/// Accepts a WebSocket connection after `on_request` inspects the request: it may pick a
/// subprotocol and add response headers ([`Accept`]), or refuse with an HTTP status ([`Reject`]).
///
/// Invalid upgrade requests are answered with the right status (400, 405, 426 with
/// `Sec-WebSocket-Version: 13`, 431) and `Connection: close`, and returned as
/// [`Error::Handshake`].
pub async fn accept_with<S, F>(
    stream: S,
    config: impl Into<Arc<Config>>,
    on_request: F,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request<()>) -> Result<Accept, Reject>,
{
    let incoming = Incoming::read(stream, config).await?;
    match on_request(incoming.request()) {
        Ok(accept) => incoming.accept(accept).await,
        Err(reject) => {
            let mut response = Response::new(Bytes::from(reject.body.clone()));
            *response.status_mut() = reject.status;
            incoming.reject(reject).await?;
            Err(Error::Rejected(Box::new(response)))
        }
    }
}

/// What to answer an acceptable upgrade with.
#[derive(Debug, Clone, Default)]
pub struct Accept {
    /// The subprotocol to select; it must be one the client offered.
    pub protocol: Option<String>,
    /// Extra response headers (e.g. `Set-Cookie`).
    pub headers: HeaderMap,
}

/// An HTTP refusal of an upgrade.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The status, e.g. 401, 403 or 503.
    pub status: StatusCode,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A short plain-text body.
    pub body: String,
}

impl Reject {
    /// A refusal with `status` and its canonical reason as the body.
    pub fn status(status: StatusCode) -> Self {
        let body = format!("{}\n", status.canonical_reason().unwrap_or(""));
        Self { status, headers: Vec::new(), body }
    }
}

/// A parsed HTTP request on a fresh connection, before deciding how to answer it.
#[derive(Debug)]
pub struct Incoming<S> {
    io: S,
    request: Request<()>,
    /// Bytes that arrived after the request head: the client's first frames.
    rest: BytesMut,
    config: Arc<Config>,
}

impl<S> Incoming<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads one HTTP request head from `stream`, within `config`'s size limits. A head that is
    /// too large or malformed is answered (431 or 400) and returned as an error.
    ///
    /// The whole read is bounded by [`Config::handshake_timeout`].
    /// `config` may be shared (`Arc<Config>`) by every connection of a server.
    pub async fn read(stream: S, config: impl Into<Arc<Config>>) -> Result<Self, Error> {
        let config = config.into();
        match config.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, Self::read_head(stream, config))
                .await
                .map_err(|_| Error::Timeout("reading the handshake request"))?,
            None => Self::read_head(stream, config).await,
        }
    }

    async fn read_head(mut stream: S, config: Arc<Config>) -> Result<Self, Error> {
        let mut buf = BytesMut::with_capacity(1024);
        let mut scanner = HeadScanner::new(config.max_handshake_size);
        let head_len = loop {
            match scanner.scan(&buf) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(e) => return Err(refuse(&mut stream, e).await),
            }
            buf.reserve(1024);
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        let request = match handshake::parse_request(&buf[..head_len], config.max_headers) {
            Ok(r) => r,
            Err(e) => return Err(refuse(&mut stream, e).await),
        };
        let rest = buf.split_off(head_len);
        Ok(Self { io: stream, request, rest, config })
    }

    /// The request.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Whether the request asks for a WebSocket upgrade (rather than, say, a web page).
    pub fn is_upgrade(&self) -> bool {
        handshake::is_upgrade_request(&self.request)
    }

    /// Completes the upgrade: checks the request (answering an invalid one with its status),
    /// sends `101 Switching Protocols`, and returns the connection. Frames that arrived with
    /// the request are kept.
    pub async fn accept(mut self, accept: Accept) -> Result<WebSocket<S>, Error> {
        let key = match handshake::validate_request(&self.request) {
            Ok(k) => k,
            Err(e) => return Err(refuse(&mut self.io, e).await),
        };
        if let Some(p) = &accept.protocol {
            if !handshake::offered_protocols(&self.request).iter().any(|o| o == p) {
                let e = HandshakeError::UnofferedProtocol(p.clone());
                return Err(refuse(&mut self.io, e).await);
            }
        }
        let mut headers = accept.headers;
        let deflate = self.config.deflate.as_ref().and_then(|config| {
            let offers = self.request.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
            deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok()), config)
        });
        if let Some(params) = &deflate {
            // Built from validated tokens only, so always a valid header value.
            if let Ok(value) = HeaderValue::from_str(&params.to_response_header()) {
                headers.insert(SEC_WEBSOCKET_EXTENSIONS, value);
            }
        }
        let response = handshake::response_101(&key, accept.protocol.as_deref(), &headers);
        self.io.write_all(&response).await?;
        self.io.flush().await?;
        let mut conn = Connection::new(Role::Server, self.config);
        if let Some(params) = deflate {
            conn = conn.with_deflate(params);
        }
        conn.handle_input(&self.rest);
        Ok(WebSocket::from_connection(self.io, conn, accept.protocol))
    }

    /// Refuses the upgrade with an HTTP response and closes the connection.
    pub async fn reject(self, reject: Reject) -> Result<(), Error> {
        let headers: HeaderMap = reject.headers.into_iter().collect();
        let bytes = handshake::http_response(
            reject.status,
            &headers,
            "text/plain; charset=utf-8",
            reject.body.as_bytes(),
        );
        self.finish(&bytes).await
    }

    /// Answers with a plain HTTP response (e.g. a web page) and closes the connection.
    pub async fn respond(
        self,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), Error> {
        let bytes = handshake::http_response(status, &HeaderMap::new(), content_type, body);
        self.finish(&bytes).await
    }

    async fn finish(mut self, bytes: &[u8]) -> Result<(), Error> {
        self.io.write_all(bytes).await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

/// Answers a refused handshake with its status and `Connection: close`, then closes the
/// transport; returns the error to report. Write failures are secondary to the refusal.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, err: HandshakeError) -> Error {
    let _ = io.write_all(&handshake::rejection(&err)).await;
    let _ = io.shutdown().await;
    Error::Handshake(err)
}
