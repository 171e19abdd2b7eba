//! Idle upgraded connections, for measuring a server's memory per connection.
//!
//! The client side is hand-written so that it is the same for every server and costs little:
//! a fixed upgrade request, a check for `101`, then nothing. Over TLS ([`open_tls`]) the same
//! request goes over a rustls session first.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Buf;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use wsx::proto::deflate::{self, DeflateConfig};
use wsx::proto::{Config, Connection, Message, Role};

/// Opens `count` WebSocket connections to `path` at `addr`, `parallel` handshakes at a time,
/// and returns them once every one is upgraded.
///
/// Handshakes are throttled so that a single-threaded server's accept backlog never overflows.
pub async fn open(
    addr: SocketAddr,
    path: &str,
    count: usize,
    parallel: usize,
) -> io::Result<Vec<TcpStream>> {
    futures_util::stream::iter(0..count)
        .map(|_| upgrade(addr, path))
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await
}

/// The TLS side of [`open_tls`]: the CA certificates trusted and the name the server's
/// certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// Trusts only the PEM certificates in `ca_pem` (a self-signed server certificate works)
    /// and expects `name` (a DNS name or an IP address) in the server's certificate. rustls's
    /// defaults otherwise, with ring as the provider, as wsx and the TLS peers use.
    pub fn new(ca_pem: &[u8], name: &str) -> io::Result<Self> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| invalid(format!("bad PEM certificate: {e}")))?;
            roots.add(cert).map_err(|e| invalid(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("no certificate found in the CA file".into()));
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| invalid(format!("server name {name:?}: {e}")))?;
        Ok(Self { connector: TlsConnector::from(Arc::new(config)), name })
    }
}

/// Like [`open`], over TLS (wss://): each connection completes a TLS handshake verified by
/// `tls`, then the upgrade, and is kept with its TLS session.
pub async fn open_tls(
    addr: SocketAddr,
    path: &str,
    count: usize,
    parallel: usize,
    tls: &TlsClient,
) -> io::Result<Vec<TlsStream<TcpStream>>> {
    futures_util::stream::iter(0..count)
        .map(|_| async move {
            let tcp = TcpStream::connect(addr).await?;
            let mut stream = tls.connector.connect(tls.name.clone(), tcp).await?;
            handshake(&mut stream, addr, path, None).await?;
            Ok(stream)
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await
}

/// One upgraded connection to `path` (`/` for an echo server; a pub/sub server such as
/// `wsx serve --pubsub` subscribes it to the topic of the path). The key is fixed (RFC 6455
/// §1.3's example); the accept value is not checked, only the `101` status.
pub async fn upgrade(addr: SocketAddr, path: &str) -> io::Result<TcpStream> {
    Ok(upgrade_offering(addr, path, None).await?.0)
}

/// Like [`upgrade`], with `offer` as the request's `Sec-WebSocket-Extensions` (e.g. Chromium's
/// `permessage-deflate; client_max_window_bits`); also returns the response's value of that
/// field, if any.
pub async fn upgrade_offering(
    addr: SocketAddr,
    path: &str,
    offer: Option<&str>,
) -> io::Result<(TcpStream, Option<String>)> {
    let mut tcp = TcpStream::connect(addr).await?;
    let answer = handshake(&mut tcp, addr, path, offer).await?;
    Ok((tcp, answer))
}

/// The upgrade on an open `stream`: the request, the check for `101`, and the response's
/// `Sec-WebSocket-Extensions`, if any.
async fn handshake<S>(
    stream: &mut S,
    addr: SocketAddr,
    path: &str,
    offer: Option<&str>,
) -> io::Result<Option<String>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let extensions =
        offer.map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         {extensions}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    // A TLS stream buffers what it writes: this sends the request.
    stream.flush().await?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
        // Byte by byte so that nothing past the head is consumed; the server sends nothing
        // after it anyway, and this runs once per connection.
        let b = stream.read_u8().await?;
        head.push(b);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(io::Error::other(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(line)
        )));
    }
    let head = String::from_utf8_lossy(&head);
    let answer = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-extensions").then(|| value.trim().to_owned())
    });
    Ok(answer)
}

/// A client connection that exchanges messages through wsx's own core, compressing as a
/// browser does (its own context kept unless the server's answer says otherwise), and counts
/// the bytes on the wire.
pub struct Peer {
    tcp: TcpStream,
    conn: Connection,
    /// Bytes written (frames, headers included).
    pub sent: u64,
    /// Bytes read (frames, headers included).
    pub received: u64,
    /// The server's `Sec-WebSocket-Extensions`, if it sent one.
    pub answer: Option<String>,
    buf: Vec<u8>,
}

impl Peer {
    /// Opens a connection offering `offer`; checks that the server's answer is a valid one for
    /// it (permessage-deflate only: any other answer fails).
    pub async fn open(addr: SocketAddr, path: &str, offer: Option<&str>) -> io::Result<Self> {
        let (tcp, answer) = upgrade_offering(addr, path, offer).await?;
        // What a browser does: it keeps its own context unless told not to, and asks nothing.
        let browser = DeflateConfig::default().context_takeover(true);
        let params = match &answer {
            Some(a) => deflate::accept_response([a.as_str()], &browser)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{a}: {e}")))?,
            None => None,
        };
        let mut conn = Connection::new(Role::Client, Config::default().deflate(Some(browser)));
        if let Some(p) = params {
            conn = conn.with_deflate(p);
        }
        Ok(Self { tcp, conn, sent: 0, received: 0, answer, buf: vec![0; 64 << 10] })
    }

    /// Whether permessage-deflate was negotiated.
    pub fn compresses(&self) -> bool {
        self.conn.is_deflate_enabled()
    }

    /// Sends `message` and waits for the next data message (an echo server's answer).
    pub async fn round_trip(&mut self, message: Message) -> io::Result<Message> {
        self.conn.send(message).map_err(io::Error::other)?;
        let out = self.conn.transmit();
        while out.has_remaining() {
            let n = self.tcp.write(out.chunk()).await?;
            out.advance(n);
            self.sent += n as u64;
        }
        loop {
            while let Some(m) = self.conn.poll_message() {
                match m.map_err(io::Error::other)? {
                    m if m.is_data() => return Ok(m),
                    Message::Close(_) => {
                        return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "closed"))
                    }
                    _ => {}
                }
            }
            let n = self.tcp.read(&mut self.buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.received += n as u64;
            self.conn.handle_input(&self.buf[..n]);
            // Pongs and other replies the core queued.
            let out = self.conn.transmit();
            while out.has_remaining() {
                let n = self.tcp.write(out.chunk()).await?;
                out.advance(n);
            }
        }
    }

    /// The connection, to hold idle; its core (with its codec state) is dropped.
    pub fn into_tcp(self) -> TcpStream {
        self.tcp
    }
}

/// A chat message of about 200 bytes with the keys every message repeats, number `i`.
pub fn chat_message(i: usize) -> String {
    format!(
        "{{\"type\":\"message\",\"room\":\"general\",\"user\":{{\"id\":{},\"name\":\"user-{}\",\
         \"status\":\"online\"}},\"text\":\"hello everyone, this is message number {i} of the \
         day, see you all later\",\"ts\":{}}}",
        i % 97,
        i % 97,
        1_700_000_000_000u64 + i as u64 * 1_337
    )
}
