//! Connecting to WebSocket servers: [`connect`] for the common case, [`ClientBuilder`] for
//! headers, subprotocols, limits, timeouts, proxies and redirects.
//!
//! A connection is made in three steps, each hop of a redirect chain again: open a transport
//! (TCP, directly or through a [`Proxy`]), TLS for `wss://`, then the WebSocket handshake.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE, LOCATION, ORIGIN};
use http::{HeaderMap, Response, StatusCode};
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wsx_proto::handshake::{self, ClientOffer, Established, HeadScanner};
use wsx_proto::Config;

use crate::proxy::ProxySetting;
use crate::{Error, Proxy, WebSocket};

/// The most body bytes kept from a refused upgrade, for the error message.
pub(crate) const MAX_REJECTION_BODY: usize = 4096;

/// Redirects followed by default.
const DEFAULT_MAX_REDIRECTS: usize = 10;

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
    proxy: ProxySetting,
    max_redirects: usize,
    on_redirect: Option<RedirectHook>,
    #[cfg(feature = "tls")]
    tls: crate::tls::ClientTls,
    /// WebSockets over HTTP/2 for `wss://`, sharing these connections.
    #[cfg(all(feature = "http2", feature = "tls"))]
    http2: Option<crate::h2::Http2Pool>,
}

/// A redirect the client is following, as [`ClientBuilder::on_redirect`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// The URL that answered with the redirect (without credentials).
    pub from: String,
    /// The URL it sent the client to, resolved and mapped to `ws://` or `wss://` (without
    /// credentials).
    pub to: String,
}

#[derive(Clone)]
struct RedirectHook(Arc<dyn Fn(&Redirect) + Send + Sync>);

impl fmt::Debug for RedirectHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedirectHook(..)")
    }
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
            proxy: ProxySetting::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            on_redirect: None,
            #[cfg(feature = "tls")]
            tls: Default::default(),
            #[cfg(all(feature = "http2", feature = "tls"))]
            http2: None,
        }
    }

    /// Opens `wss://` WebSockets over HTTP/2 (RFC 8441) when the server offers it: TLS offers
    /// ALPN `h2` and `http/1.1`; a server that picks `h2` and enables extended CONNECT in its
    /// SETTINGS gets the WebSocket as a stream, any other over HTTP/1.1 (on the connection
    /// already open when it picked `http/1.1`, on a new one otherwise). The WebSocket and its
    /// [`Config`] are the same either way; [`MaybeTlsStream::Http2`] is the transport.
    ///
    /// This builder and its clones share one HTTP/2 connection per origin, so WebSockets
    /// opened with them are streams of one connection; [`Self::http2_pool`] shares one pool
    /// between builders. `ws://` URLs are not affected (no h2c). Needs the `http2` feature.
    #[cfg(all(feature = "http2", feature = "tls"))]
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on.then(crate::h2::Http2Pool::new);
        self
    }

    /// [`Self::http2`], sharing the HTTP/2 connections of `pool` (with every builder given a
    /// clone of it).
    #[cfg(all(feature = "http2", feature = "tls"))]
    pub fn http2_pool(mut self, pool: crate::h2::Http2Pool) -> Self {
        self.http2 = Some(pool);
        self
    }

    /// Connects through `proxy` (HTTP `CONNECT` or SOCKS5), whatever the environment says.
    ///
    /// Without this or [`Self::no_proxy`], the proxy comes from the environment as curl reads
    /// it: `wss_proxy`/`https_proxy` for `wss://`, `ws_proxy`/`http_proxy` for `ws://`, then
    /// `all_proxy`, except for hosts in `no_proxy` (see [`crate::proxy`]).
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxySetting::Given(proxy);
        self
    }

    /// [`Self::proxy`] with a URL: `http://[user:pass@]host[:port]`, `socks5://…` or
    /// `socks5h://…` (see [`Proxy::parse`]).
    pub fn proxy_url(self, url: &str) -> Result<Self, Error> {
        Ok(self.proxy(Proxy::parse(url)?))
    }

    /// Connects directly, ignoring the proxy variables of the environment.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySetting::Direct;
        self
    }

    /// Reads the proxy variables through `lookup` instead of the process environment (tests
    /// that must not change the environment of their whole process).
    #[doc(hidden)]
    pub fn proxy_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.proxy = ProxySetting::EnvironmentFrom(Arc::new(lookup));
        self
    }

    /// Follows up to `n` redirects (301, 302, 303, 307, 308; default 10). 0 turns following
    /// off: a redirect is then an [`Error::Redirect`], as is one past the limit.
    ///
    /// `http://` and `https://` locations become `ws://` and `wss://`; a redirect from `wss://`
    /// to `ws://` is refused. On a redirect to another origin (scheme, host, port),
    /// `Authorization` and `Cookie` are dropped, and so is every header whose value is marked
    /// [sensitive](HeaderValue::set_sensitive); they stay dropped for the rest of the chain.
    /// Each hop is a new connection. [`Config::handshake_timeout`] bounds the whole chain.
    pub fn max_redirects(mut self, n: usize) -> Self {
        self.max_redirects = n;
        self
    }

    /// Calls `hook` for each redirect before following it (to log the hops).
    pub fn on_redirect(mut self, hook: impl Fn(&Redirect) + Send + Sync + 'static) -> Self {
        self.on_redirect = Some(RedirectHook(Arc::new(hook)));
        self
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

    /// Limits the time for everything [`Self::connect`] does: TCP connect, the proxy's handshake,
    /// TLS and the opening handshake, for every hop of a redirect chain. Default 30 s; `None`
    /// waits forever. The wait for the server's response is also bounded by
    /// [`Config::handshake_timeout`]: whichever ends first applies.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects (through a proxy if one applies, see [`Self::proxy`]) and performs the opening
    /// handshake, following redirects (see [`Self::max_redirects`]). `user:password@` in the
    /// URL is sent as `Authorization: Basic`, unless an `Authorization` header is set.
    ///
    /// Writing the requests and reading the responses are bounded by
    /// [`Config::handshake_timeout`], and everything by the
    /// [connect timeout](ClientBuilder::connect_timeout).
    pub async fn connect(self) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        // Before connecting: an invalid subprotocol is the caller's mistake, not the server's.
        handshake::check_protocols(&self.protocols)?;
        let timeout = self.connect_timeout;
        let attempt = self.connect_following_redirects();
        match timeout {
            Some(t) => {
                tokio::time::timeout(t, attempt).await.map_err(|_| Error::Timeout("connecting"))?
            }
            None => attempt.await,
        }
    }

    /// Performs the opening handshake over an already connected transport.
    ///
    /// The handshake is bounded by [`Config::handshake_timeout`]. A redirect cannot be followed
    /// on one transport: it is an [`Error::Redirect`].
    pub async fn connect_on<S>(self, stream: S) -> Result<(WebSocket<S>, Response<()>), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = Target::parse(&self.url)?;
        let headers = with_basic_auth(&self.headers, target.basic_auth.as_ref());
        let deadline = self.config.handshake_timeout.map(|t| Instant::now() + t);
        match within(deadline, self.handshake(stream, &target, &headers)).await? {
            Handshake::Done(ws, response) => Ok((ws, response)),
            Handshake::Redirect { status, location } => Err(Error::Redirect {
                status,
                location: target.url.join(&location).map_or(location, |u| shown(&u)),
                reason: "connect_on cannot open the new connection a redirect needs".to_owned(),
            }),
        }
    }

    /// Each hop: open a transport, handshake; a redirect moves to the next hop.
    async fn connect_following_redirects(
        self,
    ) -> Result<(WebSocket<MaybeTlsStream>, Response<()>), Error> {
        let mut target = Target::parse(&self.url)?;
        let mut headers = self.headers.clone();
        let mut auth = target.basic_auth.clone();
        // Set when the first request goes out: the handshake timeout bounds the whole chain.
        let mut deadline = None;
        let mut followed = 0;
        loop {
            let request_headers = with_basic_auth(&headers, auth.as_ref());
            let h1 = match self.try_http2(&target, &request_headers).await? {
                Http2Attempt::Done(answer) => Ok(answer),
                Http2Attempt::Http1(stream) => Err(stream),
            };
            let deadline = *deadline
                .get_or_insert_with(|| self.config.handshake_timeout.map(|t| Instant::now() + t));
            let answer = match h1 {
                Ok(answer) => answer,
                Err(stream) => {
                    let stream = match stream {
                        Some(stream) => stream,
                        None => self.open_transport(&target).await?,
                    };
                    within(deadline, self.handshake(stream, &target, &request_headers)).await?
                }
            };
            let (status, location) = match answer {
                Handshake::Done(ws, response) => return Ok((ws, response)),
                Handshake::Redirect { status, location } => (status, location),
            };
            if followed >= self.max_redirects {
                let reason = match self.max_redirects {
                    0 => "redirects are off".to_owned(),
                    n => format!("more than {n} redirects"),
                };
                let location = target.url.join(&location).map_or(location, |u| shown(&u));
                return Err(Error::Redirect { status, location, reason });
            }
            followed += 1;
            let next = target.redirect(status, &location)?;
            let same_origin = next.origin() == target.origin();
            if !same_origin {
                headers = without_credentials(headers);
            }
            auth = match (&next.basic_auth, same_origin) {
                (Some(a), _) => Some(a.clone()),
                (None, true) => auth,
                (None, false) => None,
            };
            if let Some(hook) = &self.on_redirect {
                (hook.0)(&Redirect { status, from: shown(&target.url), to: shown(&next.url) });
            }
            target = next;
        }
    }

    /// The WebSocket over HTTP/2 when [`Self::http2`] is on, the server offers it and the URL
    /// is `wss://`; otherwise `Http1`, with the TLS connection already open when the server
    /// answered ALPN with `http/1.1`. The whole attempt is bounded by the handshake timeout.
    #[cfg(all(feature = "http2", feature = "tls"))]
    async fn try_http2(&self, target: &Target, headers: &HeaderMap) -> Result<Http2Attempt, Error> {
        let Some(pool) = self.http2.as_ref().filter(|_| target.tls) else {
            return Ok(Http2Attempt::Http1(None));
        };
        let attempt = async {
            let origin = format!("{}:{}", target.connect_host, target.port);
            let mut entry = pool.lock(&origin).await;
            let conn = match entry.as_ref() {
                Some(crate::h2::Pooled::Http1) => return Ok(Http2Attempt::Http1(None)),
                Some(crate::h2::Pooled::Live(conn)) if conn.is_open() => conn.clone(),
                _ => {
                    let tcp = self.open_tcp(target).await?;
                    let tls = self.tls_stream_alpn(tcp, target, true).await?;
                    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                        *entry = Some(crate::h2::Pooled::Http1);
                        return Ok(Http2Attempt::Http1(Some(MaybeTlsStream::Tls(Box::new(tls)))));
                    }
                    let conn =
                        crate::h2::Http2Connection::handshake(tls, &target.host_header, true)
                            .await?;
                    if !conn.supports_websockets() {
                        *entry = Some(crate::h2::Pooled::Http1);
                        return Ok(Http2Attempt::Http1(None));
                    }
                    *entry = Some(crate::h2::Pooled::Live(conn.clone()));
                    conn
                }
            };
            drop(entry);
            let answer =
                conn.open(&target.path, self.config.clone(), &self.protocols, headers).await?;
            Ok(Http2Attempt::Done(match answer {
                crate::h2::Answer::Accepted { stream, established, response } => {
                    let Established { protocol, connection, .. } = established;
                    let stream = MaybeTlsStream::Http2(Box::new(stream));
                    Handshake::Done(
                        WebSocket::from_connection(stream, connection, protocol),
                        response,
                    )
                }
                crate::h2::Answer::Refused(response) => {
                    let (parts, body) = response.into_parts();
                    let head = Response::from_parts(parts, ());
                    if let Some(location) = redirect_location(&head) {
                        Handshake::Redirect { status: head.status(), location }
                    } else {
                        let (parts, ()) = head.into_parts();
                        return Err(Error::Rejected(Box::new(Response::from_parts(parts, body))));
                    }
                }
            }))
        };
        match self.config.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .map_err(|_| Error::Timeout("opening the WebSocket over HTTP/2"))?,
            None => attempt.await,
        }
    }

    #[cfg(not(all(feature = "http2", feature = "tls")))]
    async fn try_http2(
        &self,
        _target: &Target,
        _headers: &HeaderMap,
    ) -> Result<Http2Attempt, Error> {
        Ok(Http2Attempt::Http1(None))
    }

    /// TCP to `target`, directly or through the proxy that applies.
    async fn open_tcp(&self, target: &Target) -> Result<TcpStream, Error> {
        let host = target.connect_host.as_str();
        let tcp = match self.proxy.for_target(target.tls, host, target.port)? {
            Some(proxy) => proxy.connect(host, target.port).await?,
            None => TcpStream::connect((host, target.port)).await?,
        };
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// Opens the transport to `target`: TCP, directly or through the proxy that applies, then
    /// TLS for `wss://`.
    async fn open_transport(&self, target: &Target) -> Result<MaybeTlsStream, Error> {
        let tcp = self.open_tcp(target).await?;
        if target.tls {
            self.tls_stream(tcp, target).await
        } else {
            Ok(MaybeTlsStream::Plain(tcp))
        }
    }

    #[cfg(feature = "tls")]
    async fn tls_stream(&self, tcp: TcpStream, target: &Target) -> Result<MaybeTlsStream, Error> {
        let tls = self.tls_stream_alpn(tcp, target, false).await?;
        Ok(MaybeTlsStream::Tls(Box::new(tls)))
    }

    /// TLS to `target`, offering ALPN `h2` before `http/1.1` when `h2` is set.
    #[cfg(feature = "tls")]
    async fn tls_stream_alpn(
        &self,
        tcp: TcpStream,
        target: &Target,
        h2: bool,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
        let mut config = self.tls.client_config()?;
        if h2 {
            let mut with_h2 = (*config).clone();
            with_h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            config = Arc::new(with_h2);
        }
        let connector = crate::tls::TlsConnector::from(config);
        let name = crate::tls::server_name(&target.connect_host)?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| crate::tls::handshake_error(e, &target.connect_host))?;
        Ok(tls)
    }

    #[cfg(not(feature = "tls"))]
    async fn tls_stream(&self, _tcp: TcpStream, target: &Target) -> Result<MaybeTlsStream, Error> {
        Err(Error::Url(format!("{}: wss:// needs wsx's `tls` feature", target.host_header)))
    }

    /// Writes the upgrade request with `headers` and reads the answer: the connection, or a
    /// redirect to follow (its connection dropped, body unread).
    async fn handshake<S>(
        &self,
        mut io: S,
        target: &Target,
        headers: &HeaderMap,
    ) -> Result<Handshake<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let offer = ClientOffer::new(self.config.clone(), self.protocols.clone())?;
        let request = offer.request(&target.host_header, &target.path, headers)?;
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
        if let Some(location) = redirect_location(&response) {
            return Ok(Handshake::Redirect { status: response.status(), location });
        }
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let body = read_body(&mut io, &response, rest).await;
            let (parts, ()) = response.into_parts();
            return Err(Error::Rejected(Box::new(Response::from_parts(parts, body))));
        }
        let Established { protocol, connection: mut conn, .. } =
            offer.process_response(&response)?;
        conn.handle_input(&rest.split());
        Ok(Handshake::Done(WebSocket::from_connection(io, conn, protocol), response))
    }
}

/// What [`ClientBuilder::try_http2`] found.
// As `Handshake`: matched at once.
#[allow(clippy::large_enum_variant)]
#[cfg_attr(not(all(feature = "http2", feature = "tls")), allow(dead_code))]
enum Http2Attempt {
    /// The WebSocket over HTTP/2, or a redirect.
    Done(Handshake<MaybeTlsStream>),
    /// Use HTTP/1.1, on this TLS connection if the server chose it by ALPN.
    Http1(Option<MaybeTlsStream>),
}

/// How one handshake ended, short of an error.
// Lives for one return and is matched at once: boxing the connection would cost an allocation
// per connection for nothing.
#[allow(clippy::large_enum_variant)]
enum Handshake<S> {
    Done(WebSocket<S>, Response<()>),
    Redirect { status: StatusCode, location: String },
}

/// `f`, bounded by `deadline`.
async fn within<T>(
    deadline: Option<Instant>,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f)
            .await
            .map_err(|_| Error::Timeout("waiting for the handshake response"))?,
        None => f.await,
    }
}

/// The `Location` of a redirect status (RFC 9110 §15.4), if the response is one.
fn redirect_location(response: &Response<()>) -> Option<String> {
    let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
    let location = response.headers().get(LOCATION)?.to_str().ok()?.trim();
    (redirect && !location.is_empty()).then(|| location.to_owned())
}

/// `headers` plus `Authorization: auth`, unless they set their own.
fn with_basic_auth(headers: &HeaderMap, auth: Option<&HeaderValue>) -> HeaderMap {
    let mut headers = headers.clone();
    if let Some(auth) = auth {
        if !headers.contains_key(AUTHORIZATION) {
            headers.insert(AUTHORIZATION, auth.clone());
        }
    }
    headers
}

/// `headers` without what must not reach another origin: `Authorization`, `Cookie` and values
/// marked sensitive.
fn without_credentials(headers: HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in &headers {
        if name != AUTHORIZATION && name != COOKIE && !value.is_sensitive() {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// A URL as shown in errors and to the redirect hook: without its credentials.
fn shown(url: &url::Url) -> String {
    let mut url = url.clone();
    // Only fails for URLs that cannot have credentials anyway.
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
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
    url: url::Url,
    /// `wss://`.
    tls: bool,
    /// Host to resolve: a name or an IP literal without brackets.
    connect_host: String,
    port: u16,
    /// The `Host` header: with brackets for IPv6, with the port when it is not the default.
    host_header: String,
    path: String,
    /// `Authorization: Basic` from the URL's `user:password@`.
    basic_auth: Option<HeaderValue>,
}

impl Target {
    fn parse(raw: &str) -> Result<Self, Error> {
        let url = url::Url::parse(raw).map_err(|e| Error::Url(format!("{raw}: {e}")))?;
        Self::from_url(url, raw)
    }

    fn from_url(url: url::Url, raw: &str) -> Result<Self, Error> {
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
        let basic_auth = (!url.username().is_empty() || url.password().is_some())
            .then(|| {
                let decode = |s: &str| percent_decode_str(s).collect::<Vec<u8>>();
                let mut pair = decode(url.username());
                pair.push(b':');
                pair.extend(decode(url.password().unwrap_or("")));
                let token = base64::engine::general_purpose::STANDARD.encode(pair);
                HeaderValue::from_str(&format!("Basic {token}")).ok()
            })
            .flatten()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Ok(Self { url, tls, connect_host, port, host_header, path, basic_auth })
    }

    /// Scheme, host and port: what must stay the same for credentials to follow a redirect.
    fn origin(&self) -> (bool, &str, u16) {
        (self.tls, self.connect_host.as_str(), self.port)
    }

    /// The target a redirect to `location` leads to, relative to this one.
    fn redirect(&self, status: StatusCode, location: &str) -> Result<Self, Error> {
        let refuse =
            |location: String, reason: String| Error::Redirect { status, location, reason };
        let mut next = self.url.join(location).map_err(|e| {
            refuse(location.to_owned(), format!("Location is not a valid URL: {e}"))
        })?;
        let scheme = match next.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => {
                return Err(refuse(
                    shown(&next),
                    format!("scheme {other} is not ws, wss, http or https"),
                ))
            }
        };
        if next.scheme() != scheme && next.set_scheme(scheme).is_err() {
            return Err(refuse(shown(&next), format!("it cannot be made a {scheme}:// URL")));
        }
        next.set_fragment(None);
        if self.tls && scheme == "ws" {
            return Err(refuse(shown(&next), "it leaves TLS (wss:// to ws://)".to_owned()));
        }
        let raw = shown(&next);
        Self::from_url(next, &raw)
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
    /// A stream of an HTTP/2 connection over TLS (`wss://` with [`ClientBuilder::http2`]).
    #[cfg(feature = "http2")]
    Http2(Box<crate::h2::H2Stream>),
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
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
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
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            Self::Http2(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "http2")]
            Self::Http2(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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

    #[test]
    fn redirect_locations() {
        let moved = StatusCode::MOVED_PERMANENTLY;
        let next = |from: &str, location: &str| {
            Target::parse(from).unwrap().redirect(moved, location).map(|t| shown(&t.url))
        };
        assert_eq!(next("ws://h:1/a/b?q", "c").unwrap(), "ws://h:1/a/c");
        assert_eq!(next("ws://h:1/a/b", "/x?y#frag").unwrap(), "ws://h:1/x?y");
        assert_eq!(next("ws://h/", "//other:2/p").unwrap(), "ws://other:2/p");
        assert_eq!(next("ws://h/", "http://o/p").unwrap(), "ws://o/p");
        assert_eq!(next("ws://h/", "https://o/p").unwrap(), "wss://o/p");
        assert_eq!(next("wss://h/", "wss://o:8443/").unwrap(), "wss://o:8443/");
        assert_eq!(next("ws://u:p@h/", "/x").unwrap(), "ws://h/x");
        for (from, to) in
            [("wss://h/", "ws://h/"), ("wss://h/", "http://h/"), ("ws://h/", "ftp://h/")]
        {
            let Err(Error::Redirect { status, .. }) = next(from, to) else { panic!("{from} {to}") };
            assert_eq!(status, moved);
        }
        let same = |a: &str, b: &str| {
            Target::parse(a).unwrap().origin() == Target::parse(b).unwrap().origin()
        };
        assert!(same("ws://h/a", "ws://H:80/b"));
        assert!(!same("ws://h/", "ws://h:81/"));
        assert!(!same("ws://h/", "wss://h/"));
        assert!(!same("ws://h/", "ws://g/"));
    }

    #[test]
    fn userinfo_becomes_basic_auth() {
        let t = Target::parse("ws://Aladdin:open%20sesame@h/").unwrap();
        let auth = t.basic_auth.unwrap();
        assert_eq!(auth, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(auth.is_sensitive());
        assert_eq!(t.host_header, "h");
        assert!(Target::parse("ws://h/").unwrap().basic_auth.is_none());

        let mut own = HeaderMap::new();
        own.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert_eq!(with_basic_auth(&own, Some(&auth))[AUTHORIZATION], "Bearer t");
        assert_eq!(with_basic_auth(&HeaderMap::new(), Some(&auth))[AUTHORIZATION], auth);
    }

    #[test]
    fn credentials_stay_with_their_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert(COOKIE, HeaderValue::from_static("a=b"));
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        headers.insert("x-api-key", secret);
        headers.insert("x-trace", HeaderValue::from_static("1"));
        let kept = without_credentials(headers);
        assert_eq!(kept.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-trace"]);
    }
}
