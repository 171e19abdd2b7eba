//! WebSockets over HTTP/2 (RFC 8441, feature `http2`), on the `h2` crate.
//!
//! Over HTTP/2 a WebSocket is one stream of a connection the client may already hold for the
//! page and its other sockets: the client sends an extended CONNECT (`:method CONNECT`,
//! `:protocol websocket`), the server answers `200`, and from then on the stream's DATA frames
//! carry WebSocket frames. Only the transport differs: the same [`wsx_proto::Connection`] runs
//! over an [`H2Stream`], with the same limits, keepalive and close handshake, and the opening
//! handshake is the same sans-I/O step ([`ServerPolicy::accept_connect`],
//! [`ClientOffer::connect_request`]). Backpressure is HTTP/2 flow control: bytes are released
//! to the peer's window only as the WebSocket reads them, and a write waits for window.
//!
//! - **Server**: [`server_builder`] makes an `h2` server builder with extended CONNECT enabled
//!   and wsx's limits; [`is_websocket_request`] tells a WebSocket request from plain HTTP, and
//!   [`accept`] answers it. [`crate::hyper::upgrade`] and the axum extractor accept it too.
//! - **Client**: [`Http2Connection`] holds one HTTP/2 connection and opens any number of
//!   WebSockets as its streams; [`crate::ClientBuilder::http2`] uses it for `wss://` when the
//!   server offers `h2` and enables extended CONNECT, and HTTP/1.1 otherwise.
//!
//! A stream that ends without a closing handshake (RST_STREAM, or the connection failing) is an
//! I/O error on the WebSocket ([`std::io::ErrorKind::ConnectionReset`]), as a TCP reset is.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use wsx::proto::handshake::ServerPolicy;
//! # let tls: tokio::net::TcpStream = unimplemented!();
//! let policy = ServerPolicy::new(wsx::Config::default());
//! // `tls`: a connection that negotiated ALPN `h2`.
//! let mut connection = wsx::h2::server_builder().handshake(tls).await?;
//! while let Some(request) = connection.accept().await {
//!     let (request, respond) = request?;
//!     if wsx::h2::is_websocket_request(&request) {
//!         let mut ws = wsx::h2::accept(request, respond, &policy)?;
//!         tokio::spawn(async move {
//!             while let Some(Ok(msg)) = ws.recv().await {
//!                 if msg.is_data() && ws.send(msg).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! }
//! # Ok(()) }
//! ```

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wsx_proto::handshake::{self as hs, ClientOffer, Established, RequestHead, ServerPolicy};
use wsx_proto::HandshakeError;

use crate::{Config, Error, WebSocket};

/// Most streams one HTTP/2 connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`
/// of [`server_builder`]). A client opening more gets RST_STREAM(REFUSED_STREAM) for the extra
/// ones while the open ones go on, up to `h2`'s budget of 1,024 refused streams per
/// connection; past it the connection gets GOAWAY(ENHANCE_YOUR_CALM), which ends its open
/// streams too (other connections are not touched). Chromium opens at most 100 per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Largest request header list [`server_builder`] accepts (`SETTINGS_MAX_HEADER_LIST_SIZE`),
/// the same bound as an HTTP/1.1 request head (`Config::max_handshake_size`'s default).
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Flow-control window of each stream: what a peer may send that the WebSocket has not read
/// yet. HTTP/2's default.
pub const STREAM_WINDOW: u32 = 64 * 1024;

/// Flow-control window of a whole connection, shared by its streams: what a peer may have in
/// flight at once on one connection.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// An `h2` server builder for WebSockets: extended CONNECT enabled (`SETTINGS_ENABLE_CONNECT_PROTOCOL`,
/// RFC 8441 §3) and wsx's limits, each one a line a caller may change after:
/// [`MAX_CONCURRENT_STREAMS`], [`MAX_HEADER_LIST_SIZE`], [`STREAM_WINDOW`] and
/// [`CONNECTION_WINDOW`]. The protections `h2` has of its own stay at its defaults: at most 20
/// streams reset by the client before the server accepted them (the rapid-reset attack,
/// CVE-2023-44487; past it the connection gets GOAWAY), at most 1,024 streams reset for the
/// client's errors, and the DATA-frame budget (half the connection window) against floods of
/// tiny DATA frames (ENHANCE_YOUR_CALM past it).
///
/// Advertise extended CONNECT only on connections where WebSockets are really served: browsers
/// read the setting as that promise and send their WebSockets there.
pub fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    builder
}

/// Whether `request` is an extended CONNECT for a WebSocket (`:method CONNECT`,
/// `:protocol websocket`), as opposed to a plain HTTP request.
pub fn is_websocket_request<B>(request: &Request<B>) -> bool {
    RequestHead::from(request).is_extended_connect(protocol_of(request))
}

/// The `:protocol` pseudo-header of a request `h2` received.
fn protocol_of<B>(request: &Request<B>) -> Option<&str> {
    request.extensions().get::<h2::ext::Protocol>().map(h2::ext::Protocol::as_str)
}

/// Accepts an extended CONNECT under `policy` ([`ServerPolicy::accept_connect`]): answers
/// `200` with the negotiated subprotocol and permessage-deflate and returns the WebSocket over
/// the stream. A request the policy refuses is answered with the refusal's status, headers and
/// a short text body, and returned as [`Error::Handshake`].
///
/// Nothing is awaited: `h2` sends the response as the connection is polled.
pub fn accept(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    policy: &ServerPolicy,
) -> Result<WebSocket<H2Stream>, Error> {
    let accepted = match policy.accept_connect(&request, protocol_of(&request)) {
        Ok(accepted) => accepted,
        Err(e) => {
            refuse(respond, &e);
            return Err(e.into());
        }
    };
    let send = respond.send_response(accepted.response, false).map_err(h2_error)?;
    let stream = H2Stream::new(send, request.into_body());
    Ok(WebSocket::from_connection(stream, accepted.connection, accepted.protocol))
}

/// Answers a refused WebSocket request with [`hs::rejection_response`] for `err`.
pub fn refuse(respond: SendResponse<Bytes>, err: &HandshakeError) {
    let (parts, body) = hs::rejection_response(err).into_parts();
    respond_with(respond, Response::from_parts(parts, Bytes::from(body)));
}

/// Sends `response` with its body on the stream of `respond` (a plain HTTP answer over
/// HTTP/2, e.g. a page), with `Content-Length`. Errors (the client reset the stream) are
/// ignored: there is no one left to answer.
pub fn respond_with(mut respond: SendResponse<Bytes>, response: Response<Bytes>) {
    let (mut parts, body) = response.into_parts();
    parts.version = http::Version::HTTP_2;
    // HTTP/2 forbids connection-specific fields (RFC 9113 §8.2.2); `h2` refuses them.
    for name in [header::CONNECTION, header::UPGRADE, header::TRANSFER_ENCODING] {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    if !body.is_empty() || parts.status != StatusCode::NO_CONTENT {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let head = Response::from_parts(parts, ());
    let end = body.is_empty();
    if let Ok(mut send) = respond.send_response(head, end) {
        if !end {
            let _ = send.send_data(body, true);
        }
    }
}

/// A WebSocket's transport over one HTTP/2 stream: reads the stream's DATA, releasing flow
/// control as it is read; writes DATA within the window the peer grants; shutdown ends the
/// stream (END_STREAM). Dropping it before shutdown resets the stream (RST_STREAM CANCEL).
#[derive(Debug)]
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received and not yet read.
    pending: Bytes,
    /// END_STREAM was sent.
    shut: bool,
}

impl H2Stream {
    /// The transport over a stream's two halves.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self { send, recv, pending: Bytes::new(), shut: false }
    }

    /// The stream's id on its connection.
    pub fn stream_id(&self) -> h2::StreamId {
        self.send.stream_id()
    }

    /// Waits for window to send up to `want` bytes; the bytes that may be sent now.
    fn poll_window(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the HTTP/2 stream was ended",
            )));
        }
        // Asks for what this write needs; `h2` assigns window up to it (and up to the send
        // buffer bound), so at most one write's worth is buffered in `h2` per stream.
        self.send.reserve_capacity(want);
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(capacity.min(want)));
            }
            match self.send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_io_error(e))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the HTTP/2 stream was reset",
                    )))
                }
                Poll::Pending => {
                    // A reset while waiting for window ends the wait.
                    return match self.send.poll_reset(cx) {
                        Poll::Ready(Ok(reason)) => Poll::Ready(Err(reset_error(reason))),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(h2_io_error(e))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// Largest DATA payload handed to `h2` by one write: it splits it into frames of the peer's
/// maximum frame size itself.
const MAX_WRITE: usize = 256 * 1024;

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                // END_STREAM.
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => {
                    return Poll::Ready(match e.reason() {
                        // A stream ended with NO_ERROR after its data is an orderly end.
                        Some(Reason::NO_ERROR) => Ok(()),
                        _ => Err(h2_io_error(e)),
                    });
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // Read, so the peer may send as much again.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_window(cx, buf.len().min(MAX_WRITE)))?;
        self.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(h2_io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        // One DATA frame for a frame header and its payload, not one each.
        let n = ready!(self.poll_window(cx, total.min(MAX_WRITE)))?;
        let mut data = BytesMut::with_capacity(n);
        for b in bufs {
            let take = b.len().min(n - data.len());
            data.put_slice(&b[..take]);
            if data.len() == n {
                break;
            }
        }
        self.send.send_data(data.freeze(), false).map_err(h2_io_error)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // `h2` writes what was sent as its connection is polled.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            self.shut = true;
            // A stream the peer reset already has nothing to end.
            let _ = self.send.send_data(Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}

/// An `h2` error as an I/O error: a reset or GOAWAY is `ConnectionReset` (what a TCP reset is
/// to a WebSocket over TCP), a failed connection keeps its I/O error.
fn h2_io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    match e.reason() {
        Some(reason) => reset_error(reason),
        None => io::Error::other(e),
    }
}

fn reset_error(reason: Reason) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, format!("HTTP/2 stream reset: {reason}"))
}

fn h2_error(e: h2::Error) -> Error {
    Error::Io(h2_io_error(e))
}

/// One client HTTP/2 connection, over which WebSockets are opened as streams
/// ([`Http2Connection::websocket`]). Cheap to clone: clones share the connection, which lives
/// while a clone or one of its WebSockets does.
///
/// `h2` drives the connection in a task spawned on the current tokio runtime.
#[derive(Debug, Clone)]
pub struct Http2Connection {
    send: SendRequest<Bytes>,
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL` of the server's first SETTINGS.
    extended_connect: bool,
    /// `https` or `http` (h2c with prior knowledge).
    scheme: http::uri::Scheme,
    /// `host[:port]`, the `:authority` of every request.
    authority: http::uri::Authority,
}

impl Http2Connection {
    /// Starts HTTP/2 on `io` (a TLS connection that negotiated ALPN `h2`, or plain TCP to a
    /// server that speaks h2c with prior knowledge) to `authority` (`host[:port]`), and waits
    /// for the server's SETTINGS, so that [`Http2Connection::supports_websockets`] is known
    /// before any request is sent (RFC 8441 §3: a client sends `:protocol` only to a server
    /// that enabled it). Bounded by the caller (see [`crate::ClientBuilder::connect_timeout`]).
    pub async fn handshake<S>(io: S, authority: &str, tls: bool) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let authority: http::uri::Authority = authority
            .parse()
            .map_err(|_| Error::Url(format!("{authority}: not a valid host and port")))?;
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(h2_error)?;
        let ping = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
        });
        // The server's SETTINGS is the first frame it sends, so it has been read when the
        // answer to a PING sent now arrives.
        if let Some(mut ping) = ping {
            ping.ping(h2::Ping::opaque()).await.map_err(h2_error)?;
        }
        let extended_connect = send.is_extended_connect_protocol_enabled();
        let scheme = if tls { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        Ok(Self { send, extended_connect, scheme, authority })
    }

    /// Whether the server enabled extended CONNECT, so WebSockets can be opened here.
    pub fn supports_websockets(&self) -> bool {
        self.extended_connect
    }

    /// Whether the connection can still open streams (it has not failed or been shut down by
    /// the server's GOAWAY, as far as is known).
    pub fn is_open(&self) -> bool {
        let mut send = self.send.clone();
        let waker = futures_task::noop_waker();
        !matches!(send.poll_ready(&mut Context::from_waker(&waker)), Poll::Ready(Err(_)))
    }

    /// Opens a WebSocket to `path_and_query` (e.g. `/chat?room=1`) as a new stream: the
    /// extended CONNECT with `config`'s permessage-deflate offer, `protocols` and `headers`,
    /// then the server's answer, checked ([`ClientOffer::process_connect_response`]). Waits for
    /// a free stream when the server's `SETTINGS_MAX_CONCURRENT_STREAMS` are all in use.
    ///
    /// Refusals: [`HandshakeError::ExtendedConnectNotEnabled`] before sending anything when
    /// the server did not enable extended CONNECT, [`Error::Rejected`] with the status, headers
    /// and start of the body for any answer but `200`.
    pub async fn websocket(
        &self,
        path_and_query: &str,
        config: impl Into<std::sync::Arc<Config>>,
        protocols: &[String],
        headers: &HeaderMap,
    ) -> Result<(WebSocket<H2Stream>, Response<()>), Error> {
        match self.open(path_and_query, config, protocols, headers).await? {
            Answer::Accepted { stream, established, response } => {
                let Established { protocol, connection, .. } = established;
                Ok((WebSocket::from_connection(stream, connection, protocol), response))
            }
            Answer::Refused(response) => Err(Error::Rejected(Box::new(response))),
        }
    }

    /// [`Http2Connection::websocket`] up to the answer, for drivers that wrap the stream.
    pub(crate) async fn open(
        &self,
        path_and_query: &str,
        config: impl Into<std::sync::Arc<Config>>,
        protocols: &[String],
        headers: &HeaderMap,
    ) -> Result<Answer, Error> {
        if !self.extended_connect {
            return Err(HandshakeError::ExtendedConnectNotEnabled.into());
        }
        let offer = ClientOffer::new(config, protocols.iter().cloned())?;
        let path = if path_and_query.is_empty() { "/" } else { path_and_query };
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Error::Url(format!("{path}: {e}")))?;
        let mut request = offer.connect_request(uri, headers)?;
        request.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
        let mut send = self.send.clone().ready().await.map_err(h2_error)?;
        let (response, stream) = send.send_request(request, false).map_err(h2_error)?;
        let response = response.await.map_err(h2_error)?;
        let (parts, mut body) = response.into_parts();
        let head = Response::from_parts(parts, ());
        if head.status() != StatusCode::OK {
            let body = read_refusal(&mut body).await;
            let (parts, ()) = head.into_parts();
            return Ok(Answer::Refused(Response::from_parts(parts, body)));
        }
        let established = offer.process_connect_response(&head)?;
        Ok(Answer::Accepted { stream: H2Stream::new(stream, body), established, response: head })
    }
}

/// The server's answer to an extended CONNECT.
// Matched at once by the caller: boxing would cost an allocation per WebSocket.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answer {
    /// `200`, checked: the stream and the client's connection.
    Accepted { stream: H2Stream, established: Established, response: Response<()> },
    /// Any other status, with the start of its body.
    Refused(Response<Bytes>),
}

/// HTTP/2 connections shared by clients ([`crate::ClientBuilder::http2_pool`]): at most one per
/// origin (host and port), opened on the first WebSocket to it, reused by the next ones while
/// it is open. An origin whose server does not speak `h2` or does not enable extended CONNECT
/// is remembered, and its WebSockets use HTTP/1.1. Clones share the connections.
#[derive(Debug, Clone, Default)]
pub struct Http2Pool {
    origins: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Origin>>>,
}

/// One origin's entry: a lock, so that WebSockets opened at once share the one connection the
/// first of them opens instead of racing to open their own.
type Origin = std::sync::Arc<tokio::sync::Mutex<Option<Pooled>>>;

/// What is known of an origin.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) enum Pooled {
    /// Open, with extended CONNECT enabled.
    Live(Http2Connection),
    /// No WebSockets over HTTP/2 there: HTTP/1.1.
    Http1,
}

impl Http2Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open HTTP/2 connections that can carry WebSockets.
    pub fn connections(&self) -> usize {
        let origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        origins
            .values()
            .filter(|o| matches!(o.try_lock().as_deref(), Ok(Some(Pooled::Live(c))) if c.is_open()))
            .count()
    }

    /// The entry of `origin`, locked: the caller reuses what it holds or opens a connection
    /// and stores it.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) async fn lock(&self, origin: &str) -> tokio::sync::OwnedMutexGuard<Option<Pooled>> {
        let entry = {
            let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
            origins.entry(origin.to_owned()).or_default().clone()
        };
        entry.lock_owned().await
    }
}

/// The start of a refusal's body: at most as much as over HTTP/1.1, within a second.
async fn read_refusal(body: &mut RecvStream) -> Bytes {
    const MAX: usize = crate::client::MAX_REJECTION_BODY;
    let mut out = BytesMut::new();
    let read = async {
        while out.len() < MAX {
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    let take = chunk.len().min(MAX - out.len());
                    out.extend_from_slice(&chunk[..take]);
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), read).await;
    out.freeze()
}
