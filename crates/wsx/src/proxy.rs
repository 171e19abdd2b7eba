//! Reaching a WebSocket server through a proxy: HTTP `CONNECT` tunnels (RFC 9110 §9.3.6) and
//! SOCKS5 (RFC 1928, username/password from RFC 1929).
//!
//! A [`Proxy`] comes from [`ClientBuilder::proxy`](crate::ClientBuilder::proxy) or, by default,
//! from the environment as curl reads it (see
//! [`ClientBuilder::no_proxy`](crate::ClientBuilder::no_proxy) to turn that off):
//!
//! | URL | variables, first set wins |
//! |---|---|
//! | `wss://` | `wss_proxy`, `WSS_PROXY`, `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY` |
//! | `ws://` | `ws_proxy`, `WS_PROXY`, `http_proxy`, `all_proxy`, `ALL_PROXY` |
//!
//! Upper-case `HTTP_PROXY` is ignored, as curl ignores it: CGI programs get a request's
//! `Proxy:` header under that name. `no_proxy` (or `NO_PROXY`) lists hosts reached directly:
//! comma-separated names (`example.com` and `.example.com` both match `example.com` and every
//! name under it), IP addresses, CIDR ranges (`10.0.0.0/8`, `fd00::/8`), each optionally with a
//! `:port`; `*` alone matches everything. Names are compared as written: no name is resolved to
//! match an address.
//!
//! Once the proxy has opened the tunnel, the stream is an ordinary TCP stream to the server: TLS
//! for `wss://` runs inside it, end to end with the server.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::BytesMut;
use http::StatusCode;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wsx_proto::handshake::{self, HeadScanner};

use crate::Error;

/// The largest response head accepted from an HTTP proxy.
const MAX_PROXY_HEAD: usize = 16 << 10;

/// The most headers accepted in a proxy's response.
const MAX_PROXY_HEADERS: usize = 64;

/// A proxy to tunnel connections through: `http://` (HTTP `CONNECT`), `socks5://` (the target
/// name is resolved here and the proxy gets an address) or `socks5h://` (the proxy gets the name
/// and resolves it).
///
/// Credentials in the URL (`http://user:pass@host:port`, percent-decoded) become
/// `Proxy-Authorization: Basic` for HTTP and RFC 1929 username/password for SOCKS5. They never
/// appear in [`Display`](fmt::Display), [`Debug`] or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: Kind,
    /// A name or an IP literal without brackets.
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Socks5,
    Socks5h,
}

#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

impl Proxy {
    /// Parses a proxy URL: `http://`, `socks5://` or `socks5h://`, with optional
    /// `user:password@` and `:port`. Without a scheme it is `http://` (as for curl). Default
    /// ports: 80 for `http://`, 1080 for SOCKS.
    ///
    /// `https://` proxies (TLS to the proxy itself) and SOCKS4 are refused with
    /// [`Error::Url`].
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let raw = raw.trim();
        let shown = redact(raw);
        let with_scheme;
        let full = if raw.contains("://") {
            raw
        } else {
            with_scheme = format!("http://{raw}");
            &with_scheme
        };
        let url =
            url::Url::parse(full).map_err(|e| Error::Url(format!("proxy URL {shown}: {e}")))?;
        let kind = match url.scheme() {
            "http" => Kind::Http,
            "socks5" => Kind::Socks5,
            "socks5h" => Kind::Socks5h,
            "https" => {
                return Err(Error::Url(format!(
                    "proxy URL {shown}: https:// proxies (TLS to the proxy) are not supported; \
                     use http://, socks5:// or socks5h://"
                )))
            }
            other => {
                return Err(Error::Url(format!(
                    "proxy URL {shown}: scheme {other} is not http, socks5 or socks5h"
                )))
            }
        };
        let host = url.host_str().filter(|h| !h.is_empty());
        let host = host.ok_or_else(|| Error::Url(format!("proxy URL {shown}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let default_port = if kind == Kind::Http { 80 } else { 1080 };
        let port = url.port().unwrap_or(default_port);
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials =
            (!url.username().is_empty() || url.password().is_some()).then(|| Credentials {
                user: decode(url.username()),
                password: decode(url.password().unwrap_or("")),
            });
        Ok(Self { kind, host, port, credentials })
    }

    /// Uses these credentials (instead of any in the URL).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials { user: user.into(), password: password.into() });
        self
    }

    /// The proxy's `host:port` (brackets around an IPv6 address), as error messages name it.
    pub fn addr(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Opens a TCP connection to `host:port` through the proxy. A proxy that cannot be reached,
    /// refuses or fails is an [`Error::Proxy`] naming it.
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        if self.kind != Kind::Socks5 || host.parse::<IpAddr>().is_ok() {
            let mut tcp = self.reach().await?;
            self.handshake(&mut tcp, &Address::from_host(host, port)).await?;
            return Ok(tcp);
        }
        // socks5://: the name is resolved here. Like a direct connection, try each address in
        // turn while the proxy reports it unreachable.
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                self.error(format!(
                    "(socks5://) cannot be given an address for {host}: resolving it failed: {e} \
                     (socks5h:// lets the proxy resolve it)"
                ))
            })?
            .collect();
        let mut last = None;
        for addr in addrs {
            let mut tcp = self.reach().await?;
            match self.handshake(&mut tcp, &Address::Ip(addr)).await {
                Ok(()) => return Ok(tcp),
                Err(e @ Error::Proxy { .. }) if is_retryable(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| self.error(format!("(socks5://): {host} has no address"))))
    }

    /// Connects to the proxy itself.
    async fn reach(&self) -> Result<TcpStream, Error> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.error(format!("is unreachable: {e}")))?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// Asks the proxy, over `io`, for a tunnel to `target`.
    async fn handshake<S>(&self, io: &mut S, target: &Address) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.kind {
            Kind::Http => self.http_connect(io, target).await,
            Kind::Socks5 | Kind::Socks5h => self.socks5(io, target).await,
        }
    }

    /// RFC 9110 §9.3.6: `CONNECT host:port`, any 2xx opens the tunnel.
    async fn http_connect<S>(&self, io: &mut S, target: &Address) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = target.to_string();
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.user, c.password));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        let io_error = |e: io::Error| self.error(format!("failed during CONNECT {target}: {e}"));
        io.write_all(request.as_bytes()).await.map_err(io_error)?;
        io.flush().await.map_err(io_error)?;

        let mut buf = BytesMut::with_capacity(1024);
        let mut scanner = HeadScanner::new(MAX_PROXY_HEAD);
        let head_len = loop {
            match scanner.scan(&buf) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(e) => return Err(self.error(format!("sent an invalid answer to CONNECT: {e}"))),
            }
            buf.reserve(1024);
            if io.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                return Err(
                    self.error(format!("closed the connection before answering CONNECT {target}"))
                );
            }
        };
        let response = handshake::parse_response(&buf[..head_len], MAX_PROXY_HEADERS)
            .map_err(|e| self.error(format!("sent an invalid answer to CONNECT: {e}")))?;
        let status = response.status();
        if status.is_success() {
            // The server speaks only after the client does (TLS, the upgrade request): bytes
            // already here are the proxy's, a body this tunnel cannot carry.
            if buf.len() > head_len {
                return Err(
                    self.error(format!("sent data after its {status} answer to CONNECT {target}"))
                );
            }
            return Ok(());
        }
        // 407 is the proxy's status for credentials (RFC 9110 §15.5.8); some proxies
        // (tinyproxy) answer wrong ones with 401.
        let auth =
            matches!(status, StatusCode::PROXY_AUTHENTICATION_REQUIRED | StatusCode::UNAUTHORIZED);
        let reason = match &self.credentials {
            None if auth => format!("requires authentication ({})", status.as_u16()),
            Some(c) if auth => {
                format!("refused the credentials of user {:?} ({})", c.user, status.as_u16())
            }
            _ if status == StatusCode::FORBIDDEN => {
                format!("refused the tunnel to {target} ({status})")
            }
            _ => format!("answered CONNECT {target} with {status}"),
        };
        Err(Error::Proxy { proxy: self.addr(), reason, status: Some(status) })
    }

    /// RFC 1928 §3-6, with RFC 1929 username/password when the proxy has credentials.
    async fn socks5<S>(&self, io: &mut S, target: &Address) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io_error = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                self.error("closed the connection during the SOCKS5 handshake")
            }
            _ => self.error(format!("failed during the SOCKS5 handshake: {e}")),
        };
        // Methods: 0x00 no authentication, 0x02 username/password.
        let greeting: &[u8] = if self.credentials.is_some() { &[5, 2, 0, 2] } else { &[5, 1, 0] };
        io.write_all(greeting).await.map_err(io_error)?;
        let mut choice = [0u8; 2];
        io.read_exact(&mut choice).await.map_err(io_error)?;
        if choice[0] != 5 {
            return Err(self
                .error(format!("is not a SOCKS5 proxy (it answered with version {})", choice[0])));
        }
        match (choice[1], &self.credentials) {
            (0, _) => {}
            (2, Some(c)) => self.socks5_login(io, c, io_error).await?,
            (0xff, None) => {
                return Err(
                    self.error("requires authentication (SOCKS5 username/password)".to_owned())
                )
            }
            (0xff, Some(_)) => {
                return Err(self
                    .error("accepts none of the offered SOCKS5 authentication methods".to_owned()))
            }
            (other, _) => {
                return Err(self.error(format!(
                    "chose SOCKS5 authentication method {other}, which was not offered"
                )))
            }
        }

        let mut request = vec![5, 1, 0]; // CONNECT
        match target {
            Address::Ip(SocketAddr::V4(a)) => {
                request.push(1);
                request.extend_from_slice(&a.ip().octets());
            }
            Address::Ip(SocketAddr::V6(a)) => {
                request.push(4);
                request.extend_from_slice(&a.ip().octets());
            }
            Address::Name(name, _) => {
                let len = u8::try_from(name.len()).map_err(|_| {
                    self.error(format!("cannot be given {name}: longer than 255 bytes"))
                })?;
                request.push(3);
                request.push(len);
                request.extend_from_slice(name.as_bytes());
            }
        }
        request.extend_from_slice(&target.port().to_be_bytes());
        io.write_all(&request).await.map_err(io_error)?;
        io.flush().await.map_err(io_error)?;

        // VER REP RSV ATYP, then the bound address, which is read and ignored.
        let mut reply = [0u8; 4];
        io.read_exact(&mut reply).await.map_err(io_error)?;
        if reply[0] != 5 {
            return Err(
                self.error(format!("is not a SOCKS5 proxy (its reply has version {})", reply[0]))
            );
        }
        if reply[1] != 0 {
            return Err(Error::Proxy {
                proxy: self.addr(),
                reason: format!(
                    "could not connect to {target}: {} (SOCKS5 reply {})",
                    socks5_reply_meaning(reply[1]),
                    reply[1]
                ),
                status: None,
            });
        }
        let rest = match reply[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8];
                io.read_exact(&mut len).await.map_err(io_error)?;
                usize::from(len[0]) + 2
            }
            other => {
                return Err(
                    self.error(format!("sent a SOCKS5 reply with an unknown address type {other}"))
                )
            }
        };
        let mut bound = [0u8; 255 + 2];
        io.read_exact(&mut bound[..rest]).await.map_err(io_error)?;
        Ok(())
    }

    /// RFC 1929 username/password sub-negotiation.
    async fn socks5_login<S>(
        &self,
        io: &mut S,
        c: &Credentials,
        io_error: impl Fn(io::Error) -> Error,
    ) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (Ok(user_len), Ok(pass_len)) =
            (u8::try_from(c.user.len()), u8::try_from(c.password.len()))
        else {
            return Err(self.error(
                "cannot be sent a SOCKS5 username or password longer than 255 bytes".to_owned(),
            ));
        };
        let mut login = vec![1, user_len];
        login.extend_from_slice(c.user.as_bytes());
        login.push(pass_len);
        login.extend_from_slice(c.password.as_bytes());
        io.write_all(&login).await.map_err(&io_error)?;
        io.flush().await.map_err(&io_error)?;
        let mut status = [0u8; 2];
        io.read_exact(&mut status).await.map_err(&io_error)?;
        if status[1] != 0 {
            return Err(self.error(format!(
                "refused the username and password of user {:?} (SOCKS5 status {})",
                c.user, status[1]
            )));
        }
        Ok(())
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Proxy { proxy: self.addr(), reason: reason.into(), status: None }
    }
}

impl FromStr for Proxy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// `scheme://host:port`, without credentials.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            Kind::Http => "http",
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
        };
        write!(f, "{scheme}://{}", self.addr())
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.to_string())
            .field("user", &self.credentials.as_ref().map(|c| &c.user))
            .finish()
    }
}

/// Reads an environment variable.
pub(crate) type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where to find the proxy for a connection.
#[derive(Clone, Default)]
pub(crate) enum ProxySetting {
    /// From the environment: `std::env::var`, or a lookup function given in tests.
    #[default]
    Environment,
    EnvironmentFrom(EnvLookup),
    /// Always connect directly.
    Direct,
    /// Always this proxy.
    Given(Proxy),
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("Environment"),
            Self::EnvironmentFrom(_) => f.write_str("EnvironmentFrom(..)"),
            Self::Direct => f.write_str("Direct"),
            Self::Given(p) => f.debug_tuple("Given").field(p).finish(),
        }
    }
}

impl ProxySetting {
    /// The proxy for `host:port` (`tls`: a `wss://` URL), if any.
    pub(crate) fn for_target(
        &self,
        tls: bool,
        host: &str,
        port: u16,
    ) -> Result<Option<Proxy>, Error> {
        match self {
            Self::Direct => Ok(None),
            Self::Given(p) => Ok(Some(p.clone())),
            Self::Environment => from_env(&|name: &str| std::env::var(name).ok(), tls, host, port),
            Self::EnvironmentFrom(lookup) => from_env(lookup.as_ref(), tls, host, port),
        }
    }
}

/// The proxy the environment names for `host:port`, as curl chooses it (see the module docs).
fn from_env(
    env: &dyn Fn(&str) -> Option<String>,
    tls: bool,
    host: &str,
    port: u16,
) -> Result<Option<Proxy>, Error> {
    let names: &[&str] = if tls {
        &["wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
    } else {
        &["ws_proxy", "WS_PROXY", "http_proxy", "all_proxy", "ALL_PROXY"]
    };
    let found = names
        .iter()
        .find_map(|&name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v)));
    let Some((name, value)) = found else { return Ok(None) };
    let no_proxy = env("no_proxy").or_else(|| env("NO_PROXY")).unwrap_or_default();
    if NoProxy::parse(&no_proxy).matches(host, port) {
        return Ok(None);
    }
    Proxy::parse(&value).map(Some).map_err(|e| match e {
        Error::Url(m) => Error::Url(format!("${name}: {m}")),
        other => other,
    })
}

/// A parsed `no_proxy` list.
#[derive(Debug, Default)]
pub(crate) struct NoProxy {
    all: bool,
    entries: Vec<(Pattern, Option<u16>)>,
}

#[derive(Debug, PartialEq)]
enum Pattern {
    /// A name, lower case, without leading or trailing dots: matches itself and names under it.
    Domain(String),
    /// An address with a prefix length (the full length for a single address).
    Net(IpAddr, u8),
}

impl NoProxy {
    /// Parses a comma-separated list; entries that make no sense are skipped.
    pub(crate) fn parse(list: &str) -> Self {
        let mut out = Self::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                out.all = true;
            } else if let Some(parsed) = parse_entry(entry) {
                out.entries.push(parsed);
            }
        }
        out
    }

    /// Whether `host:port` (a name or an IP literal, brackets or not) is reached directly.
    pub(crate) fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|(pattern, p)| {
            p.map_or(true, |p| p == port)
                && match (pattern, ip) {
                    (Pattern::Net(net, bits), Some(ip)) => in_net(ip, *net, *bits),
                    (Pattern::Domain(d), None) => {
                        name == *d
                            || (name.len() > d.len()
                                && name.ends_with(d.as_str())
                                && name.as_bytes()[name.len() - d.len() - 1] == b'.')
                    }
                    _ => false,
                }
        })
    }
}

/// One `no_proxy` entry: `name`, `.name`, `name:port`, `1.2.3.4`, `10.0.0.0/8`, `::1`,
/// `[::1]:8080`, `fd00::/8`.
fn parse_entry(entry: &str) -> Option<(Pattern, Option<u16>)> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (inside, port)
    } else if entry.matches(':').count() == 1 {
        let (h, p) = entry.split_once(':')?;
        (h, Some(p.parse().ok()?))
    } else {
        (entry, None)
    };
    let (addr, bits) = match host.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (host, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        return (bits <= max).then_some((Pattern::Net(ip, bits), port));
    }
    if bits.is_some() {
        return None;
    }
    let name = host.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some((Pattern::Domain(name), port))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => {
            a.to_ipv4_mapped().is_some_and(|a| in_net(IpAddr::V4(a), net, bits))
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// What the tunnel is asked to reach.
#[derive(Debug)]
enum Address {
    Ip(SocketAddr),
    Name(String, u16),
}

impl Address {
    fn from_host(host: &str, port: u16) -> Self {
        match host.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(SocketAddr::new(ip, port)),
            Err(_) => Self::Name(host.to_owned(), port),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Self::Ip(a) => a.port(),
            Self::Name(_, p) => *p,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// RFC 1928 §6, the REP field.
fn socks5_reply_meaning(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// A SOCKS5 failure to reach one address, after which the next address may work.
fn is_retryable(e: &Error) -> bool {
    let Error::Proxy { reason, .. } = e else { return false };
    ["(SOCKS5 reply 3)", "(SOCKS5 reply 4)", "(SOCKS5 reply 5)", "(SOCKS5 reply 6)"]
        .iter()
        .any(|r| reason.ends_with(r))
}

/// `raw` without the credentials of a `scheme://user:pass@host` URL, for error messages.
fn redact(raw: &str) -> String {
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), raw),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://u%40x:p%3Aw@127.0.0.1:8888").unwrap();
        assert_eq!((p.kind, p.addr().as_str()), (Kind::Http, "127.0.0.1:8888"));
        let c = p.credentials.as_ref().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u@x", "p:w"));
        assert_eq!(p.to_string(), "http://127.0.0.1:8888");
        assert!(!format!("{p:?}").contains("p:w"));

        let p = Proxy::parse("proxy.example:3128").unwrap();
        assert_eq!((p.kind, p.addr().as_str()), (Kind::Http, "proxy.example:3128"));
        assert_eq!(Proxy::parse("http://proxy").unwrap().port, 80);
        let p = Proxy::parse("socks5h://[::1]").unwrap();
        assert_eq!((p.kind, p.addr().as_str()), (Kind::Socks5h, "[::1]:1080"));
        assert_eq!(Proxy::parse("socks5://h:9").unwrap().kind, Kind::Socks5);

        for bad in ["https://p:443", "socks4://p", "ftp://p", "http://"] {
            assert!(matches!(Proxy::parse(bad), Err(Error::Url(_))), "{bad}");
        }
        let Err(Error::Url(m)) = Proxy::parse("https://user:secret@p") else { panic!() };
        assert!(!m.contains("secret"), "{m}");
    }

    #[test]
    fn no_proxy_lists() {
        let check = |list: &str, host: &str, port: u16, expected: bool| {
            assert_eq!(
                NoProxy::parse(list).matches(host, port),
                expected,
                "{list:?} {host}:{port}"
            );
        };
        check("", "example.com", 80, false);
        check("*", "anything", 1, true);
        check("example.com", "example.com", 80, true);
        check("example.com", "a.b.Example.COM", 80, true);
        check(".example.com", "example.com", 80, true);
        check(".example.com", "www.example.com", 80, true);
        check("example.com", "badexample.com", 80, false);
        check("example.com:8080", "example.com", 8080, true);
        check("example.com:8080", "example.com", 80, false);
        check(" other , localhost ", "localhost", 9, true);
        check("127.0.0.1", "127.0.0.1", 9, true);
        check("127.0.0.1", "localhost", 9, false);
        check("10.0.0.0/8", "10.200.3.4", 9, true);
        check("10.0.0.0/8", "11.0.0.1", 9, false);
        check("::1", "[::1]", 9, true);
        check("[::1]:9", "::1", 9, true);
        check("[::1]:9", "::1", 10, false);
        check("fd00::/8", "fd12::1", 9, true);
        check("0.0.0.0/0", "8.8.8.8", 9, true);
        check("bad/8, /x, :", "bad", 9, false);
    }

    #[test]
    fn environment_as_curl_reads_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        let pick = |vars, tls, host: &str| {
            from_env(&env(vars), tls, host, 80).unwrap().map(|p| p.to_string())
        };
        let vars: &[_] = &[
            ("ws_proxy", "http://ws:1"),
            ("http_proxy", "http://http:1"),
            ("https_proxy", "http://https:1"),
            ("ALL_PROXY", "socks5://all:1"),
        ];
        assert_eq!(pick(vars, false, "h").as_deref(), Some("http://ws:1"));
        assert_eq!(pick(vars, true, "h").as_deref(), Some("http://https:1"));
        // Upper-case HTTP_PROXY is not read.
        let vars: &[_] = &[("HTTP_PROXY", "http://upper:1")];
        assert_eq!(pick(vars, false, "h"), None);
        let vars: &[_] = &[("HTTP_PROXY", "http://upper:1"), ("ALL_PROXY", "socks5h://all:1")];
        assert_eq!(pick(vars, false, "h").as_deref(), Some("socks5h://all:1"));
        let vars: &[_] = &[("WSS_PROXY", "http://u:1"), ("https_proxy", "http://l:1")];
        assert_eq!(pick(vars, true, "h").as_deref(), Some("http://u:1"));
        let vars: &[_] = &[("all_proxy", "http://p:1"), ("NO_PROXY", "h")];
        assert_eq!(pick(vars, true, "h"), None);
        assert_eq!(pick(vars, true, "other").as_deref(), Some("http://p:1"));
        let vars: &[_] = &[("all_proxy", "http://p:1"), ("no_proxy", ""), ("NO_PROXY", "h")];
        assert_eq!(pick(vars, true, "h").as_deref(), Some("http://p:1"));
        let vars: &[_] = &[("ws_proxy", "https://p:1")];
        let Err(Error::Url(m)) = from_env(&env(vars), false, "h", 80) else { panic!() };
        assert!(m.starts_with("$ws_proxy: "), "{m}");
    }

    /// Runs the proxy handshake for `proxy` against a scripted peer that sends `answer` and
    /// checks that what it got starts with `expect`.
    async fn scripted(
        proxy: &str,
        target: Address,
        expect: &[u8],
        answer: &[u8],
    ) -> Result<(), Error> {
        let proxy = Proxy::parse(proxy).unwrap();
        let (mut client, mut server) = tokio::io::duplex(4096);
        let answer = answer.to_vec();
        let peer = tokio::spawn(async move {
            server.write_all(&answer).await.unwrap();
            server.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        });
        let result = proxy.handshake(&mut client, &target).await;
        drop(client);
        let got = peer.await.unwrap();
        assert!(got.starts_with(expect), "sent {got:?}, expected {expect:?}");
        result
    }

    #[tokio::test]
    async fn http_connect_answers() {
        let target = || Address::Name("h".into(), 443);
        let ok = scripted(
            "http://p:1",
            target(),
            b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
            b"HTTP/1.0 200 Connection established\r\nProxy-agent: x\r\n\r\n",
        )
        .await;
        assert!(ok.is_ok(), "{ok:?}");
        let auth =
            b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n";
        let e = scripted("http://u:p@p:1", target(), auth, b"HTTP/1.1 407 No\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "proxy p:1 refused the credentials of user \"u\" (407)");
        let e = scripted("http://p:1", target(), b"CONNECT", b"HTTP/1.1 407 No\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "proxy p:1 requires authentication (407)");
        let e = scripted("http://p:1", target(), b"CONNECT", b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "proxy p:1 answered CONNECT h:443 with 502 Bad Gateway");
        let e = scripted("http://p:1", target(), b"CONNECT", b"HTTP/1.1 200 OK\r\n\r\nextra")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("sent data after its 200 OK"), "{e}");
        let e = scripted("http://p:1", target(), b"CONNECT", b"garbage\r\n\r\n").await.unwrap_err();
        assert!(e.to_string().starts_with("proxy p:1 sent an invalid answer"), "{e}");
        let e = scripted("http://p:1", target(), b"CONNECT", b"HTTP/1.1 200").await.unwrap_err();
        assert!(e.to_string().contains("closed the connection before answering"), "{e}");
    }

    #[tokio::test]
    async fn socks5_replies() {
        let v4 = || Address::Ip("127.0.0.1:80".parse().unwrap());
        let ok = [&[5u8, 0][..], &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]].concat();
        let expect = [&[5u8, 1, 0][..], &[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]].concat();
        assert!(scripted("socks5://p:1", v4(), &expect, &ok).await.is_ok());
        // socks5h sends the name.
        let expect = [&[5u8, 1, 0][..], &[5, 1, 0, 3, 2, b'h', b'x', 1, 187]].concat();
        let named = [&[5u8, 0][..], &[5, 0, 0, 3, 1, b'z', 0, 0]].concat();
        assert!(scripted("socks5h://p:1", Address::Name("hx".into(), 443), &expect, &named)
            .await
            .is_ok());

        let e = scripted("socks5://p:1", v4(), &[5, 1, 0], &[5, 0xff]).await.unwrap_err();
        assert_eq!(e.to_string(), "proxy p:1 requires authentication (SOCKS5 username/password)");
        let e = scripted(
            "socks5://u:pw@p:1",
            v4(),
            &[5, 2, 0, 2, 1, 1, b'u', 2, b'p', b'w'],
            &[5, 2, 1, 1],
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "proxy p:1 refused the username and password of user \"u\" (SOCKS5 status 1)"
        );
        let refused = [&[5u8, 0][..], &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]].concat();
        let e = scripted("socks5://p:1", v4(), &[5, 1, 0], &refused).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "proxy p:1 could not connect to 127.0.0.1:80: connection refused (SOCKS5 reply 5)"
        );
        assert!(is_retryable(&e));
        let e = scripted("socks5://p:1", v4(), &[5, 1, 0], b"HTTP/1.1 400").await.unwrap_err();
        assert!(e.to_string().contains("is not a SOCKS5 proxy"), "{e}");
        let e = scripted("socks5://p:1", v4(), &[5, 1, 0], &[5]).await.unwrap_err();
        assert!(e.to_string().contains("closed the connection during the SOCKS5 handshake"), "{e}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("http://u:p@h:1/x@y"), "http://***@h:1/x@y");
        assert_eq!(redact("u:p@h"), "***@h");
        assert_eq!(redact("http://h:1"), "http://h:1");
    }
}
