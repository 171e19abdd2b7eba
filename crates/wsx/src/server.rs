//! Accepting WebSocket connections.
//!
//! [`accept`] and [`accept_with`] cover the usual case. To also answer plain HTTP requests on the
//! same port (as `wsx serve` does with its demo page), read the request with [`Incoming::read`]
//! and then [`Incoming::accept`], [`Incoming::reject`], [`Incoming::respond`] or
//! [`Incoming::respond_with`], or [`Incoming::respond_keep_alive`] to answer and read the
//! connection's next request.
//!
//! Every answer is written within the handshake timeout, and a connection answered without an
//! upgrade is closed in stages, so that the answer reaches a client that is still sending.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use wsx_proto::handshake::{self, Accepted, BodyLength, HeadScanner, ServerPolicy};
use wsx_proto::{Config, HandshakeError};

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
/// Invalid upgrade requests are answered with the right status (400, 405 with `Allow: GET`, 426
/// with `Sec-WebSocket-Version: 13`, 431) and `Connection: close`, and returned as
/// [`Error::Handshake`]. The handshake is bounded by [`Config::handshake_timeout`] (see
/// [`Incoming`]).
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
///
/// One deadline, set when reading the request starts ([`Config::handshake_timeout`], or the one
/// given to [`Incoming::read_with_deadline`]), bounds the whole handshake: reading the request
/// and writing the answer, whichever of [`Incoming::accept`], [`Incoming::reject`] or
/// [`Incoming::respond`] it is. A client that stops reading cannot hold the connection longer.
#[derive(Debug)]
pub struct Incoming<S> {
    io: S,
    request: Request<()>,
    /// Bytes that arrived after the request head: the client's first frames.
    rest: BytesMut,
    config: Arc<Config>,
    /// When the handshake must be over.
    deadline: Option<Instant>,
    /// The request's body was read ([`Incoming::read_body`]): the connection may persist.
    body_read: bool,
    /// The time each request on this connection gets (the next ones after keep-alive too):
    /// [`Config::handshake_timeout`], or what was left of the deadline given to
    /// [`Incoming::read_with_deadline`] when this request started.
    request_limit: Option<Duration>,
}

/// A request body read by [`Incoming::read_body`], or why it was not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestBody {
    /// The body (empty when the request has none).
    Complete(Bytes),
    /// `Content-Length` exceeds the limit given (answer 413 Content Too Large); nothing was
    /// read.
    TooLarge(u64),
    /// The body is chunked (answer 411 Length Required); nothing was read.
    LengthRequired,
    /// `Content-Length` is not one decimal number (answer 400): several fields, or anything but
    /// digits (RFC 9110 §8.6); nothing was read.
    InvalidLength,
}

impl<S> Incoming<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads one HTTP request head from `stream`, within `config`'s size limits. A head that is
    /// too large or malformed is answered (431 or 400) and returned as an error.
    ///
    /// The handshake, from here to the end of the answer, is bounded by
    /// [`Config::handshake_timeout`]; running out is [`Error::Timeout`].
    /// `config` may be shared (`Arc<Config>`) by every connection of a server.
    pub async fn read(stream: S, config: impl Into<Arc<Config>>) -> Result<Self, Error> {
        let config = config.into();
        let deadline = config.handshake_timeout.map(|limit| Instant::now() + limit);
        Self::read_with_deadline(stream, config, deadline).await
    }

    /// Like [`Incoming::read`], but the handshake is bounded by `deadline` (`None`: no limit)
    /// instead of [`Config::handshake_timeout`] from now: for a server whose handshake started
    /// before the request, with TLS for instance, and that gives all of it one limit.
    pub async fn read_with_deadline(
        stream: S,
        config: impl Into<Arc<Config>>,
        deadline: Option<Instant>,
    ) -> Result<Self, Error> {
        let config = config.into();
        let limit = config
            .handshake_timeout
            .or_else(|| deadline.map(|d| d.saturating_duration_since(Instant::now())));
        let buf = BytesMut::with_capacity(1024);
        match Self::read_head(stream, buf, config, limit, deadline, None).await? {
            Some(incoming) => Ok(incoming),
            None => Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
        }
    }

    /// Reads a request head into `buf`, which may already hold the start of it. With
    /// `idle_until` (a connection waiting for its next request), a connection that ends or
    /// stays silent until then before a first byte is `None`, and `deadline` starts with that
    /// first byte, `request_limit` from it; otherwise an end before the head is an error.
    async fn read_head(
        mut stream: S,
        mut buf: BytesMut,
        config: Arc<Config>,
        request_limit: Option<Duration>,
        mut deadline: Option<Instant>,
        idle_until: Option<Instant>,
    ) -> Result<Option<Self>, Error> {
        if let Some(idle_until) = idle_until {
            if buf.is_empty() {
                buf.reserve(1024);
                match timeout_at(idle_until, stream.read_buf(&mut buf)).await {
                    // Silent until the idle limit, or closed: no request follows.
                    Err(_) | Ok(Ok(0)) => return Ok(None),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.into()),
                }
            }
            deadline = request_limit.map(|limit| Instant::now() + limit);
        }
        let mut scanner = HeadScanner::new(config.max_handshake_size);
        let head_len = loop {
            match scanner.scan(&buf) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(e) => return Err(refuse(stream, buf, e, false, deadline).await),
            }
            buf.reserve(1024);
            let read = within(deadline, "reading the handshake request", async {
                Ok(stream.read_buf(&mut buf).await?)
            });
            if read.await? == 0 {
                return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        };
        let request = match handshake::parse_request(&buf[..head_len], config.max_headers) {
            Ok(r) => r,
            Err(e) => return Err(refuse(stream, buf, e, false, deadline).await),
        };
        let rest = buf.split_off(head_len);
        Ok(Some(Self {
            io: stream,
            request,
            rest,
            config,
            deadline,
            body_read: false,
            request_limit,
        }))
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
    ///
    /// [`Accept::protocol`] must be one of the subprotocols the client offered; another is
    /// refused with 400 and [`HandshakeError::UnofferedProtocol`].
    pub async fn accept(mut self, accept: Accept) -> Result<WebSocket<S>, Error> {
        let mut policy = ServerPolicy::new(self.config.clone());
        if let Some(protocol) = accept.protocol {
            // The step refuses a name the client did not offer.
            policy = policy.select_protocol(move |_| Some(protocol.clone()));
        }
        let Accepted { mut response, protocol, mut connection, .. } =
            match policy.accept(&self.request) {
                Ok(accepted) => accepted,
                Err(e) => return Err(self.refuse(e).await),
            };
        response.headers_mut().extend(accept.headers);
        let response = handshake::response_head(&response);
        let io = &mut self.io;
        within(self.deadline, "writing the handshake response", async {
            io.write_all(&response).await?;
            io.flush().await?;
            Ok(())
        })
        .await?;
        connection.handle_input(&self.rest);
        Ok(WebSocket::from_connection(self.io, connection, protocol))
    }

    /// Refuses the upgrade with an HTTP response and closes the connection: `reject`'s status
    /// and headers, and its body as `text/plain` unless the headers name another
    /// `Content-Type`. A HEAD request gets the head alone.
    ///
    /// The connection is closed as [`Incoming::respond`] describes.
    pub async fn reject(self, reject: Reject) -> Result<(), Error> {
        let mut headers: HeaderMap = reject.headers.into_iter().collect();
        headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static(TEXT_PLAIN));
        self.answer(reject.status, &headers, reject.body.as_bytes()).await
    }

    /// Answers with a plain HTTP response (e.g. a web page) and closes the connection: `status`,
    /// `Content-Type`, `Content-Length` and `Connection: close`, then `body`. A HEAD request gets
    /// the same head without the body (RFC 9110 §9.3.2). For other headers, see
    /// [`Incoming::respond_with`].
    ///
    /// A `content_type` that is not a valid header value (it holds a CR, an LF or another
    /// control character) is refused before anything is written, with an
    /// [`io::ErrorKind::InvalidInput`] error; the connection is then dropped.
    ///
    /// After the response the write side is shut down, and what the client still sends is read
    /// and dropped until it ends its side, for at most 2 s (never past the handshake deadline)
    /// and 1 MiB: closing with unread input makes the kernel reset the connection, which can
    /// destroy the response before the client reads it (RFC 9112 §9.6). The call returns then.
    pub async fn respond(
        self,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), Error> {
        let content_type = HeaderValue::from_str(content_type).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "Content-Type is not a valid header value")
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type);
        self.answer(status, &headers, body).await
    }

    /// Answers with `response` (its status, headers and body) and closes the connection, as
    /// [`Incoming::respond`] does. `Content-Length` and `Connection: close` are added;
    /// `Content-Length`, `Transfer-Encoding` and `Connection` fields in `response` are left out,
    /// so that the head always matches the body.
    pub async fn respond_with<B: AsRef<[u8]>>(self, response: Response<B>) -> Result<(), Error> {
        self.answer(response.status(), response.headers(), response.body().as_ref()).await
    }

    /// Reads the request's body, of at most `limit` bytes, as declared by `Content-Length`
    /// (within the handshake deadline). Chunked bodies are not read. After a complete body the
    /// connection may persist ([`Incoming::respond_keep_alive`]).
    pub async fn read_body(&mut self, limit: usize) -> Result<RequestBody, Error> {
        let len = match handshake::body_length(&self.request) {
            BodyLength::Length(len) => len,
            BodyLength::Chunked => return Ok(RequestBody::LengthRequired),
            _ => return Ok(RequestBody::InvalidLength),
        };
        if len > limit as u64 {
            return Ok(RequestBody::TooLarge(len));
        }
        // Fits in usize: at most `limit`.
        let len = len as usize;
        let expects_continue = handshake::expects_continue(&self.request);
        let (io, rest) = (&mut self.io, &mut self.rest);
        within(self.deadline, "reading the request body", async {
            // RFC 9110 §10.1.1: a client waiting to send its body gets the interim answer.
            if expects_continue && rest.len() < len {
                io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                io.flush().await?;
            }
            while rest.len() < len {
                rest.reserve(len - rest.len());
                if io.read_buf(rest).await? == 0 {
                    return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Ok(())
        })
        .await?;
        self.body_read = true;
        Ok(RequestBody::Complete(self.rest.split_to(len).freeze()))
    }

    /// Answers with `response` as [`Incoming::respond_with`] does, but keeps the connection
    /// open when HTTP/1.1 persistence allows it ([`handshake::keeps_alive`]: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`, and no request body
    /// unless [`Incoming::read_body`] read it),
    /// and then reads the client's next request: `Some` with it, `None` when the client closed
    /// the connection or sent nothing for `idle`. Bytes pipelined behind this request are kept.
    /// The next request gets a handshake deadline of its own, from its first byte.
    ///
    /// A request that does not allow persistence is answered with `Connection: close` and
    /// closed as [`Incoming::respond`] describes, and the result is `None`.
    pub async fn respond_keep_alive<B: AsRef<[u8]>>(
        self,
        response: Response<B>,
        idle: Duration,
    ) -> Result<Option<Self>, Error> {
        let persistent = if self.body_read {
            handshake::is_persistent(&self.request)
        } else {
            handshake::keeps_alive(&self.request)
        };
        if !persistent {
            self.respond_with(response).await?;
            return Ok(None);
        }
        let body = response.body().as_ref();
        let head = handshake::http_response_head_keep_alive(
            &self.request,
            response.status(),
            response.headers(),
            body.len(),
        );
        let body = if self.request.method() == Method::HEAD { &[][..] } else { body };
        let Self { mut io, rest, config, deadline, request_limit, .. } = self;
        within(deadline, "writing the response", async {
            io.write_all_buf(&mut Buf::chain(&head[..], body)).await?;
            io.flush().await?;
            Ok(())
        })
        .await?;
        let idle_until = Instant::now() + idle;
        Self::read_head(io, rest, config, request_limit, None, Some(idle_until)).await
    }

    /// Writes a response that ends the connection: the head alone for HEAD.
    async fn answer(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Error> {
        let head = handshake::http_response_head(status, headers, body.len());
        let body = if self.request.method() == Method::HEAD { &[][..] } else { body };
        deliver(self.io, self.rest, &head, body, self.deadline).await
    }

    /// Answers a request that [`ServerPolicy::accept`] refused.
    async fn refuse(self, err: HandshakeError) -> Error {
        let head_only = self.request.method() == Method::HEAD;
        refuse(self.io, self.rest, err, head_only, self.deadline).await
    }
}

/// The `Content-Type` of refusals.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// How long a connection answered without an upgrade keeps reading what the client still sends
/// before it is closed (at most; never past the handshake deadline).
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The most bytes read and dropped so.
const LINGER_BYTES: usize = 1 << 20;

/// Answers a refused handshake with its status and `Connection: close` (the head alone when
/// `head_only`), then closes the transport; returns the error to report. Write failures are
/// secondary to the refusal.
async fn refuse<S>(
    io: S,
    scratch: BytesMut,
    err: HandshakeError,
    head_only: bool,
    deadline: Option<Instant>,
) -> Error
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let response = handshake::rejection_response(&err);
    let body = response.body().as_bytes();
    let head = handshake::http_response_head(response.status(), response.headers(), body.len());
    let body = if head_only { &[][..] } else { body };
    let _ = deliver(io, scratch, &head, body, deadline).await;
    Error::Handshake(err)
}

/// Writes a response after which the connection ends, by `deadline`, and closes in stages (RFC
/// 9112 §9.6): the write side is shut down, then what the client still sends is read into
/// `scratch` and dropped until it ends its side, for at most [`LINGER_TIME`] (never past
/// `deadline`) and [`LINGER_BYTES`], and only then is the transport dropped. Dropped at once
/// with unread input, a TCP socket is reset, and the reset can discard the response before the
/// client has read it: a client still sending (a pipelined tail, a body) would never see it.
async fn deliver<S>(
    mut io: S,
    mut scratch: BytesMut,
    head: &[u8],
    body: &[u8],
    deadline: Option<Instant>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    within(deadline, "writing the response", async {
        io.write_all_buf(&mut Buf::chain(head, body)).await?;
        io.shutdown().await?;
        Ok(())
    })
    .await?;
    let linger_end = Instant::now() + LINGER_TIME;
    let linger_end = deadline.map_or(linger_end, |d| d.min(linger_end));
    scratch.clear();
    scratch.resize(8 << 10, 0);
    let drain = async {
        let mut left = LINGER_BYTES;
        while left > 0 {
            let room = left.min(scratch.len());
            match io.read(&mut scratch[..room]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n,
            }
        }
    };
    let _ = timeout_at(linger_end, drain).await;
    Ok(())
}

/// Runs `op`, or gives up at `deadline` with [`Error::Timeout`] naming `what`.
async fn within<T>(
    deadline: Option<Instant>,
    what: &'static str,
    op: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match deadline {
        Some(deadline) => timeout_at(deadline, op).await.map_err(|_| Error::Timeout(what))?,
        None => op.await,
    }
}
