//! Connecting to WebSocket servers: [`connect`] for the common case, [`ClientBuilder`] for
//! headers, subprotocols, limits and timeouts.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, ORIGIN};
use http::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use wsx_proto::handshake::{self, ClientOffer, Established, HeadScanner};
use wsx_proto::Config;

use crate::{Error, WebSocket};

/// The most body bytes kept from a refused upgrade, for the error message.
const MAX_REJECTION_BODY: usize = 4096;

/// Connects to a `ws://` URL with default settings. Returns the connection and the server's
/// handshake response.
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
    ClientBuilder::new(url).connect().await
}

/// Options for a client connection.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    headers: HeaderMap,
    protocols: Vec<String>,
    config: Config,
    connect_timeout: Option<Duration>,
    #[cfg(feature = "tls")]
    tls: crate::tls::ClientTls,
}

impl ClientBuilder {
    /// A builder for `url` (`ws://host[:port]/path?query`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: HeaderMap::new(),
            protocols: Vec::new(),
            config: Config::default(),
            connect_timeout: Some(Duration::from_secs(30)),
            #[cfg(feature = "tls")]
            tls: Default::default(),
        }
    }

    /// Trusts the CA certificates in `pem` for `wss://`, on top of the platform's and the
    /// bundled web roots.
    ///
    /// A certificate given here is also trusted as it is when the server presents it as its own,
    /// even a self-signed one marked as a CA (as `openssl req -x509` makes them); its validity
    /// period, purpose and names are still checked, and the server must hold its key.
    #[cfg(feature = "tls")]
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        self.tls.add_roots(crate::tls::certificates_from_pem(pem)?);
        Ok(self)
    }

    /// Uses this rustls configuration for `wss://` instead of building one (its ALPN is used
    /// as given).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls.set_config(config);
        self
    }

    /// **Testing only**: accept any server certificate on `wss://`, which lets anyone on the
    /// path read and change the traffic.
    #[cfg(feature = "tls")]
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.set_accept_invalid_certs(accept);
        self
    }

    /// Adds a request header (authorization, cookies…). Repeatable.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the `Origin` header.
    pub fn origin(self, origin: HeaderValue) -> Self {
        self.header(ORIGIN, origin)
    }

    /// Offers a subprotocol. Repeatable, in order of preference.
    ///
    /// Names are RFC 7230 tokens, each offered once (RFC 6455 §4.1; see
    /// [`handshake::check_protocols`]). Any other makes [`ClientBuilder::connect`] and
    /// [`ClientBuilder::connect_on`] fail with [`HandshakeError::InvalidProtocol`](crate::HandshakeError::InvalidProtocol) before they
    /// connect or write anything, so a name can never inject a header.
    pub fn protocol(mut self, name: impl Into<String>) -> Self {
        self.protocols.push(name.into());
        self
    }

    /// Sets the connection's limits and behaviour.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Limits the time for TCP connect plus the opening handshake. Default 30 s; `None` waits
    /// forever. The wait for the server's response is also bounded by
    /// [`Config::handshake_timeout`]: whichever ends first applies.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects over TCP and performs the opening handshake: writing the request and reading the
    /// response are bounded by [`Config::handshake_timeout`], and everything by the
    /// [connect timeout](ClientBuilder::connect_timeout).
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        // Before connecting: an invalid subprotocol is the caller's mistake, not the server's.
        handshake::check_protocols(&self.protocols)?;
        let timeout = self.connect_timeout;
        let attempt = async move {
            let target = Target::parse(&self.url)?;
            let tcp = TcpStream::connect((target.connect_host.as_str(), target.port)).await?;
            tcp.set_nodelay(true)?;
            let stream = if target.tls {
                self.tls_stream(tcp, &target).await?
            } else {
                MaybeTlsStream::Plain(tcp)
            };
            self.handshake_within_timeout(stream, &target).await
        };
        match timeout {
            Some(t) => {
                tokio::time::timeout(t, attempt).await.map_err(|_| Error::Timeout("connecting"))?
            }
            None => attempt.await,
        }
    }

    /// Performs the opening handshake over an already connected transport.
    ///
    /// The handshake is bounded by [`Config::handshake_timeout`].
    pub async fn connect_on<S>(self, stream: S) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = Target::parse(&self.url)?;
        self.handshake_within_timeout(stream, &target).await
    }

    /// [`Self::handshake`], bounded by [`Config::handshake_timeout`].
    async fn handshake_within_timeout<S>(
        self,
        stream: S,
        target: &Target,
    ) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.config.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, self.handshake(stream, target))
                .await
                .map_err(|_| Error::Timeout("waiting for the handshake response"))?,
            None => self.handshake(stream, target).await,
        }
    }

    #[cfg(feature = "tls")]
    async fn tls_stream(&self, tcp: TcpStream, target: &Target) -> Result<MaybeTlsStream, Error> {
        let connector = crate::tls::TlsConnector::from(self.tls.client_config()?);
        let name = crate::tls::server_name(&target.connect_host)?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| crate::tls::handshake_error(e, &target.connect_host))?;
        Ok(MaybeTlsStream::Tls(Box::new(tls)))
    }

    #[cfg(not(feature = "tls"))]
    async fn tls_stream(&self, _tcp: TcpStream, target: &Target) -> Result<MaybeTlsStream, Error> {
        Err(Error::Url(format!("{}: wss:// needs wsx's `tls` feature", target.host_header)))
    }

    async fn handshake<S>(
        self,
        mut io: S,
        target: &Target,
    ) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let offer = ClientOffer::new(self.config, self.protocols)?;
        let request = offer.request(&target.host_header, &target.path, &self.headers)?;
        io.write_all(&request).await?;
        io.flush().await?;

        let mut buf = BytesMut::with_capacity(1024);
        let mut scanner = HeadScanner::new(offer.config().max_handshake_size);
        let head_len = loop {
            if let Some(n) = scanner.scan(&buf)? {
                break n;
            }
            buf.reserve(1024);
            if io.read_buf(&mut buf).await? == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection during the handshake",
                )));
            }
        };
        let response = handshake::parse_response(&buf[..head_len], offer.config().max_headers)?;
        let mut rest = buf.split_off(head_len);
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let body = read_body(&mut io, &response, rest).await;
            let (parts, ()) = response.into_parts();
            return Err(Error::Rejected(Box::new(Response::from_parts(parts, body))));
        }
        let Established { protocol, connection: mut conn, .. } =
            offer.process_response(&response)?;
        conn.handle_input(&rest.split());
        Ok((WebSocket::from_connection(io, conn, protocol), response))
    }
}

/// Reads up to [`MAX_REJECTION_BODY`] bytes of a refusal's body, best effort: a body that does not
/// arrive within a second is left out.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    response: &Response<()>,
    mut body: BytesMut,
) -> Bytes {
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let want = declared.unwrap_or(MAX_REJECTION_BODY).min(MAX_REJECTION_BODY);
    let read = async {
        while body.len() < want {
            body.reserve(want - body.len());
            match io.read_buf(&mut body).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
    body.truncate(want);
    body.freeze()
}

/// Where a URL points.
#[derive(Debug)]
struct Target {
    /// `wss://`.
    tls: bool,
    /// Host to resolve: a name or an IP literal without brackets.
    connect_host: String,
    port: u16,
    /// The `Host` header: with brackets for IPv6, with the port when it is not the default.
    host_header: String,
    path: String,
}

impl Target {
    fn parse(raw: &str) -> Result<Self, Error> {
        let url = url::Url::parse(raw).map_err(|e| Error::Url(format!("{raw}: {e}")))?;
        let (tls, default_port) = match url.scheme() {
            "ws" => (false, 80),
            "wss" => (true, 443),
            other => return Err(Error::Url(format!("{raw}: scheme {other} is not ws or wss"))),
        };
        let host = url.host_str().ok_or_else(|| Error::Url(format!("{raw}: no host")))?;
        let port = url.port().unwrap_or(default_port);
        let host_header = match url.port() {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        let connect_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Self { tls, connect_host, port, host_header, path })
    }
}

/// The transport [`connect`] returns.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
    /// TLS over TCP (`wss://`).
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("ws://example.com/chat?x=1").unwrap();
        assert_eq!(
            (t.connect_host.as_str(), t.port, t.host_header.as_str(), t.path.as_str()),
            ("example.com", 80, "example.com", "/chat?x=1")
        );
        let t = Target::parse("ws://[::1]:9001").unwrap();
        assert_eq!(
            (t.connect_host.as_str(), t.port, t.host_header.as_str(), t.path.as_str()),
            ("::1", 9001, "[::1]:9001", "/")
        );
        assert!(matches!(Target::parse("http://x/"), Err(Error::Url(_))));
        assert!(matches!(Target::parse("not a url"), Err(Error::Url(_))));
    }
}
