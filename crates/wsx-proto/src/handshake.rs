//! The opening handshake (RFC 6455 §4), as pure functions: find and parse an HTTP head, check
//! it, and build the bytes to answer with.
//!
//! Server: [`HeadScanner`] finds the end of the request head in linear time however the bytes
//! are chunked; [`parse_request`] parses it with `httparse`; [`validate_request`] checks the
//! upgrade and computes `Sec-WebSocket-Accept`; [`response_101`] or [`rejection`] build the answer,
//! and [`http_response`] a plain one.
//!
//! Client: [`generate_key`], [`request`] (which checks the subprotocols with
//! [`check_protocols`]), then [`parse_response`] and [`validate_response`].
//!
//! The steps that drivers call are [`ServerPolicy::accept`] (request head and policy in, the
//! `101` response and a ready [`crate::Connection`] out) and [`ClientOffer`] (the request, then
//! [`ClientOffer::process_response`]); the functions above are their parts. Negotiation
//! ([`ServerPolicy::negotiate`], [`ClientOffer::negotiate_response`]) is split from the
//! HTTP/1.1 key and accept check so that an HTTP/2 driver (RFC 8441) can reuse it.
//!
//! Nothing these functions write can end a header line early: values come from typed
//! [`HeaderMap`]s or are checked, so no caller's input puts a CR or LF into a head.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use rand::{RngCore, SeedableRng};
use sha1::{Digest, Sha1};

use crate::error::HandshakeError;

mod client;
mod server;

pub use client::{ClientOffer, Established};
pub use server::{Accepted, Negotiated, ServerPolicy};

/// The GUID that RFC 6455 §1.3 appends to the key.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Finds the end of an HTTP head (`\r\n\r\n`) as bytes accumulate, scanning each byte once.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    scanned: usize,
    max: usize,
}

impl HeadScanner {
    /// A scanner that refuses heads longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { scanned: 0, max }
    }

    /// Looks at `buf` (all bytes received so far, the same prefix as in earlier calls) and
    /// returns the head's length once it is complete.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
        let from = self.scanned.saturating_sub(3);
        let found = buf[from.min(buf.len())..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| from + p + 4);
        match found {
            Some(end) if end <= self.max => Ok(Some(end)),
            Some(_) => Err(HandshakeError::HeadTooLarge(self.max)),
            None if buf.len() >= self.max => Err(HandshakeError::HeadTooLarge(self.max)),
            None => {
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }
}

/// Parses a complete request head (as found by [`HeadScanner`]) into an [`http::Request`].
pub fn parse_request(head: &[u8], max_headers: usize) -> Result<Request<()>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders(max_headers))
        }
        Err(_) => return Err(HandshakeError::Malformed("invalid request head")),
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| HandshakeError::Malformed("invalid method"))?;
    let mut builder = Request::builder()
        .method(method)
        .uri(req.path.unwrap_or("/"))
        .version(http_version(req.version));
    if let Some(map) = builder.headers_mut() {
        copy_headers(req.headers, map)?;
    }
    builder.body(()).map_err(|_| HandshakeError::Malformed("invalid request target"))
}

/// Whether a request asks for a WebSocket upgrade at all (`Upgrade: websocket`), as opposed to
/// being a plain HTTP request a server may want to answer itself.
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    RequestHead::from(req).is_upgrade()
}

/// Checks an upgrade request (RFC 6455 §4.2.1) and returns the `Sec-WebSocket-Accept` value.
pub fn validate_request<B>(req: &Request<B>) -> Result<String, HandshakeError> {
    RequestHead::from(req).validate()
}

/// The subprotocols a request offers, in order of preference.
pub fn offered_protocols<B>(req: &Request<B>) -> Vec<String> {
    RequestHead::from(req).offered_protocols().map(str::to_owned).collect()
}

/// A borrowed view of a request head: what the handshake reads of a request.
///
/// Made from an [`http::Request`] of any body type or from [`http::request::Parts`], so that a
/// server framework's request (hyper's, axum's) is checked in place, without moving its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The HTTP version.
    pub version: Version,
    /// The header fields.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// Whether the request asks for a WebSocket upgrade at all (`Upgrade: websocket`).
    pub fn is_upgrade(&self) -> bool {
        has_token(self.headers, &header::UPGRADE, "websocket")
    }

    /// Checks an HTTP/1.1 upgrade request (RFC 6455 §4.2.1) and returns the
    /// `Sec-WebSocket-Accept` value: the part of the handshake that belongs to HTTP/1.1's
    /// `Upgrade` (method, `Host`, no body, `Upgrade`, `Connection`, the key), plus
    /// `Sec-WebSocket-Version`.
    pub fn validate(&self) -> Result<String, HandshakeError> {
        if self.method != Method::GET {
            return Err(HandshakeError::MethodNotGet(self.method.to_string()));
        }
        if self.version < Version::HTTP_11 {
            return Err(HandshakeError::WrongHttpVersion);
        }
        let h = self.headers;
        // RFC 9112 §3.2: an HTTP/1.1 request without Host, or with more than one, is answered
        // 400; RFC 6455 §4.1: the upgrade's Host names the server, so it is not empty either.
        match single(h, &header::HOST) {
            Some(host) if !host.as_bytes().trim_ascii().is_empty() => {}
            _ => return Err(HandshakeError::BadHeader("Host")),
        }
        // RFC 9112 §6.3: a request has a body when it has Transfer-Encoding or a
        // Content-Length. An upgrade's bytes after the head are frames, so a request that
        // declares a body would be framed one way here and another way by an intermediary
        // (vert.x CVE-2018-12541).
        if h.contains_key(header::TRANSFER_ENCODING)
            || h.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes().trim_ascii() != b"0")
        {
            return Err(HandshakeError::RequestBody);
        }
        if !has_token(h, &header::UPGRADE, "websocket") {
            return Err(HandshakeError::BadHeader("Upgrade"));
        }
        if !has_token(h, &header::CONNECTION, "upgrade") {
            return Err(HandshakeError::BadHeader("Connection"));
        }
        check_version(h)?;
        // RFC 6455 §11.3.1: the key field appears exactly once.
        let key = single(h, &header::SEC_WEBSOCKET_KEY).ok_or(HandshakeError::BadKey)?;
        let key = key.as_bytes().trim_ascii();
        match BASE64.decode(key) {
            Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
            _ => Err(HandshakeError::BadKey),
        }
    }

    /// Whether the request is an HTTP/2 extended CONNECT for a WebSocket (RFC 8441 §4):
    /// method `CONNECT` with `:protocol` `websocket`. `protocol` is the `:protocol`
    /// pseudo-header, which [`http::Request`] does not carry: the driver reads it from its
    /// HTTP/2 library (`h2::ext::Protocol`, `hyper::ext::Protocol`).
    pub fn is_extended_connect(&self, protocol: Option<&str>) -> bool {
        *self.method == Method::CONNECT
            && protocol.is_some_and(|p| p.trim().eq_ignore_ascii_case("websocket"))
    }

    /// Checks an HTTP/2 extended CONNECT request (RFC 8441 §5): method `CONNECT`, `:protocol`
    /// `websocket` (see [`RequestHead::is_extended_connect`]) and `Sec-WebSocket-Version: 13`.
    /// The HTTP/1.1 fields (`Upgrade`, `Connection`, `Sec-WebSocket-Key`) are not used; HTTP/2
    /// itself forbids the connection-specific ones. `:scheme`, `:path` and `:authority` are
    /// checked by the HTTP/2 library.
    pub fn validate_connect(&self, protocol: Option<&str>) -> Result<(), HandshakeError> {
        if *self.method != Method::CONNECT {
            return Err(HandshakeError::MethodNotConnect(self.method.to_string()));
        }
        match protocol {
            Some(p) if p.trim().eq_ignore_ascii_case("websocket") => {}
            other => return Err(HandshakeError::BadConnectProtocol(other.map(str::to_owned))),
        }
        check_version(self.headers)
    }

    /// The subprotocols the request offers, in its order of preference.
    pub fn offered_protocols(&self) -> impl Iterator<Item = &'a str> {
        tokens(self.headers, &header::SEC_WEBSOCKET_PROTOCOL)
    }
}

impl<'a, B> From<&'a Request<B>> for RequestHead<'a> {
    fn from(req: &'a Request<B>) -> Self {
        Self { method: req.method(), version: req.version(), headers: req.headers() }
    }
}

impl<'a> From<&'a http::request::Parts> for RequestHead<'a> {
    fn from(parts: &'a http::request::Parts) -> Self {
        Self { method: &parts.method, version: parts.version, headers: &parts.headers }
    }
}

/// `Sec-WebSocket-Version: 13`, in one field (RFC 6455 §4.2.1; RFC 8441 §5 keeps it).
pub(crate) fn check_version(h: &HeaderMap) -> Result<(), HandshakeError> {
    if single(h, &header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes().trim_ascii()) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(())
}

/// Whether `s` is an RFC 7230 token (RFC 9110 §5.6.2): one or more visible ASCII characters,
/// none of them a delimiter (`"(),/:;<=>?@[\]{}`). Subprotocol names are tokens (RFC 6455 §4.1).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks the subprotocols a client offers (RFC 6455 §4.1): each an RFC 7230 token, none twice.
/// The first that is not is returned in [`HandshakeError::InvalidProtocol`].
pub fn check_protocols<P: AsRef<str>>(protocols: &[P]) -> Result<(), HandshakeError> {
    for (i, p) in protocols.iter().map(AsRef::as_ref).enumerate() {
        if !is_token(p) || protocols[..i].iter().any(|q| q.as_ref() == p) {
            return Err(HandshakeError::InvalidProtocol(p.to_owned()));
        }
    }
    Ok(())
}

/// The `101 Switching Protocols` response head, with an optional chosen subprotocol and extra
/// headers.
///
/// `protocol` should be one of the request's [`offered_protocols`] (a server selects one of
/// those, RFC 6455 §4.2.2), which can only hold text that is valid in a header. Any other value
/// that is not valid there (a CR, an LF or another control character) is left out rather than
/// written: no subprotocol is selected. The same holds for `accept`, which then makes the
/// response one that clients refuse; [`validate_request`] only returns valid ones.
pub fn response_101(accept: &str, protocol: Option<&str>, extra: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    if is_field_value(accept) {
        push_header(&mut out, "Sec-WebSocket-Accept", accept.as_bytes());
    }
    if let Some(p) = protocol.filter(|p| !p.is_empty() && is_field_value(p)) {
        push_header(&mut out, "Sec-WebSocket-Protocol", p.as_bytes());
    }
    for (name, value) in extra {
        push_header(&mut out, name.as_str(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The HTTP/1.1 head of `response` as it is (status line, its fields, the blank line): for a
/// `101` such as [`Accepted::response`]. Nothing is added; the WebSocket fields are written
/// with their usual capitalisation, others as `http` keeps them (lowercase).
pub fn response_head(response: &Response<()>) -> Vec<u8> {
    let status = response.status();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        let name = match *name {
            header::UPGRADE => "Upgrade",
            header::CONNECTION => "Connection",
            header::SEC_WEBSOCKET_ACCEPT => "Sec-WebSocket-Accept",
            header::SEC_WEBSOCKET_PROTOCOL => "Sec-WebSocket-Protocol",
            header::SEC_WEBSOCKET_EXTENSIONS => "Sec-WebSocket-Extensions",
            _ => name.as_str(),
        };
        push_header(&mut out, name, value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A plain HTTP response with `Connection: close`, a body and its length: for refused upgrades
/// and for servers answering non-WebSocket requests. `headers` are the other fields
/// (`Content-Type`, `Allow`…).
///
/// The framing is this function's: `Content-Length`, `Transfer-Encoding` and `Connection` in
/// `headers` are left out, so that the head always describes the body that follows.
pub fn http_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = http_response_head(status, headers, body.len());
    out.extend_from_slice(body);
    out
}

/// The head alone of the [`http_response`] with a body of `content_length` bytes: the answer to
/// a HEAD request, which has the headers GET would get and no body (RFC 9110 §9.3.2), or a head
/// to write before a large body without copying the body behind it.
pub fn http_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    content_length: usize,
) -> Vec<u8> {
    head_with_connection(status, headers, content_length, Some("close"))
}

/// Whether the connection of `req` may carry another request after the answer to this one
/// (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
/// `Connection: keep-alive`; and never after a request with a body (`Transfer-Encoding`, or a
/// `Content-Length` other than 0), which a server answering heads alone does not read.
pub fn keeps_alive<B>(req: &Request<B>) -> bool {
    is_persistent(req) && body_length(req) == BodyLength::Length(0)
}

/// How a request's body is framed (RFC 9112 §6.3), for a server that reads bodies by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyLength {
    /// `Content-Length` bytes (0 without the field).
    Length(u64),
    /// `Transfer-Encoding` (chunked or otherwise): not framed by a length.
    Chunked,
    /// Several `Content-Length` fields, or one that is not only decimal digits (RFC 9110
    /// §8.6): the framing is ambiguous, and the request is to be refused with 400.
    Invalid,
}

/// The framing of `req`'s body. `Transfer-Encoding` wins over `Content-Length` (RFC 9112
/// §6.3): a request with both is [`BodyLength::Chunked`].
pub fn body_length<B>(req: &Request<B>) -> BodyLength {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING) {
        return BodyLength::Chunked;
    }
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => BodyLength::Length(0),
        (Some(v), None) => {
            let v = v.as_bytes().trim_ascii();
            let digits = !v.is_empty() && v.iter().all(u8::is_ascii_digit);
            match std::str::from_utf8(v).ok().filter(|_| digits).and_then(|v| v.parse().ok()) {
                Some(len) => BodyLength::Length(len),
                None => BodyLength::Invalid,
            }
        }
        (Some(_), Some(_)) => BodyLength::Invalid,
    }
}

/// Whether the client waits for `100 Continue` before it sends the body (`Expect:
/// 100-continue`, RFC 9110 §10.1.1).
pub fn expects_continue<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Whether the client of `req` lets its connection persist after the answer (RFC 9112 §9.3):
/// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`. A server
/// that reads the request's body may keep it; see [`keeps_alive`] for one that does not.
pub fn is_persistent<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    match req.version() {
        Version::HTTP_11 => !has_token(h, &header::CONNECTION, "close"),
        Version::HTTP_10 => has_token(h, &header::CONNECTION, "keep-alive"),
        _ => false,
    }
}

/// The head of a response after which the connection stays open for the next request of
/// `req` (which [`keeps_alive`] allows): as [`http_response_head`], with no `Connection` field
/// for HTTP/1.1 and `Connection: keep-alive` for HTTP/1.0.
pub fn http_response_head_keep_alive<B>(
    req: &Request<B>,
    status: StatusCode,
    headers: &HeaderMap,
    content_length: usize,
) -> Vec<u8> {
    let connection = (req.version() == Version::HTTP_10).then_some("keep-alive");
    head_with_connection(status, headers, content_length, connection)
}

fn head_with_connection(
    status: StatusCode,
    headers: &HeaderMap,
    content_length: usize,
    connection: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION].contains(name) {
            continue;
        }
        push_header(&mut out, name.as_str(), value.as_bytes());
    }
    push_header(&mut out, "Content-Length", content_length.to_string().as_bytes());
    if let Some(connection) = connection {
        push_header(&mut out, "Connection", connection.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The response refusing an upgrade for `err`: [`rejection_response`], encoded.
pub fn rejection(err: &HandshakeError) -> Vec<u8> {
    let response = rejection_response(err);
    http_response(response.status(), response.headers(), response.body().as_bytes())
}

/// The response refusing an upgrade for `err`, before encoding: its status, `Allow: GET` on
/// 405 (RFC 9110 §15.5.6), `Sec-WebSocket-Version: 13` on 426 (RFC 6455 §4.4), and the reason
/// as a short text body. For drivers that encode it themselves, e.g. as the head alone for a
/// HEAD request.
pub fn rejection_response(err: &HandshakeError) -> Response<String> {
    let mut response = Response::new(format!("{err}\n"));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    match err {
        HandshakeError::MethodNotGet(_) => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        HandshakeError::MethodNotConnect(_) => {
            headers.insert(header::ALLOW, HeaderValue::from_static("CONNECT"));
        }
        HandshakeError::UnsupportedVersion => {
            headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        _ => {}
    }
    response
}

/// A fresh random `Sec-WebSocket-Key`: 16 random bytes, base64-encoded.
pub fn generate_key() -> String {
    let mut raw = [0u8; 16];
    // Seeded from the OS, like the masking keys; the key is not a secret, it only proves the
    // server understood the WebSocket request (RFC 6455 §4.1).
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut raw);
    BASE64.encode(raw)
}

/// The client's upgrade request head for `host` (with port, if not the default) and
/// `path_and_query`, offering `protocols` in order of preference.
///
/// Refused, before anything is built: a subprotocol that [`check_protocols`] refuses
/// ([`HandshakeError::InvalidProtocol`]), and a `host`, `path_and_query` or `key` that is empty
/// (the path may be: it means `/`) or holds anything but visible ASCII, which a request line or
/// header value cannot carry.
pub fn request(
    host: &str,
    path_and_query: &str,
    key: &str,
    protocols: &[String],
    extra: &HeaderMap,
) -> Result<Vec<u8>, HandshakeError> {
    check_protocols(protocols)?;
    let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if host.is_empty() || !visible(host) {
        return Err(HandshakeError::BadHeader("Host"));
    }
    if !visible(path_and_query) {
        return Err(HandshakeError::Malformed("invalid request target"));
    }
    if key.is_empty() || !visible(key) {
        return Err(HandshakeError::BadKey);
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(if path_and_query.is_empty() { "/" } else { path_and_query }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(&mut out, "Host", host.as_bytes());
    out.extend_from_slice(
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
    );
    push_header(&mut out, "Sec-WebSocket-Key", key.as_bytes());
    if !protocols.is_empty() {
        push_header(&mut out, "Sec-WebSocket-Protocol", protocols.join(", ").as_bytes());
    }
    for (name, value) in extra {
        push_header(&mut out, name.as_str(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// Parses a complete response head (as found by [`HeadScanner`]).
pub fn parse_response(head: &[u8], max_headers: usize) -> Result<Response<()>, HandshakeError> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders(max_headers))
        }
        Err(_) => return Err(HandshakeError::Malformed("invalid response head")),
    }
    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
        .map_err(|_| HandshakeError::Malformed("invalid status code"))?;
    let mut builder = Response::builder().status(status).version(http_version(resp.version));
    if let Some(map) = builder.headers_mut() {
        copy_headers(resp.headers, map)?;
    }
    builder.body(()).map_err(|_| HandshakeError::Malformed("invalid response"))
}

/// Checks a server's response (RFC 6455 §4.2.2 / §4.1) against the request's key and offered
/// subprotocols; returns the selected subprotocol. `Sec-WebSocket-Extensions` is checked
/// against the offer by [`crate::deflate::accept_response`].
pub fn validate_response<B>(
    resp: &Response<B>,
    key: &str,
    offered: &[String],
) -> Result<Option<String>, HandshakeError> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(HandshakeError::UnexpectedStatus { status: resp.status() });
    }
    let h = resp.headers();
    if !has_token(h, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::BadHeader("Upgrade"));
    }
    if !has_token(h, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::BadHeader("Connection"));
    }
    let expected = accept_key(key.as_bytes());
    if single(h, &header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes().trim_ascii())
        != Some(expected.as_bytes())
    {
        return Err(HandshakeError::BadAccept);
    }
    check_selected_protocol(h, offered)
}

/// The subprotocol a response selects, which must be one that was offered.
fn check_selected_protocol(
    h: &HeaderMap,
    offered: &[String],
) -> Result<Option<String>, HandshakeError> {
    // RFC 6455 §4.2.2: the server selects one subprotocol, in one field.
    if h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().count() > 1 {
        let all: Vec<&str> = tokens(h, &header::SEC_WEBSOCKET_PROTOCOL).collect();
        return Err(HandshakeError::UnofferedProtocol(all.join(", ")));
    }
    match h.get(header::SEC_WEBSOCKET_PROTOCOL) {
        None => Ok(None),
        Some(v) => {
            let chosen =
                v.to_str().map_err(|_| HandshakeError::BadHeader("Sec-WebSocket-Protocol"))?.trim();
            if offered.iter().any(|p| p == chosen) {
                Ok(Some(chosen.to_owned()))
            } else {
                Err(HandshakeError::UnofferedProtocol(chosen.to_owned()))
            }
        }
    }
}

fn http_version(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

fn copy_headers(src: &[httparse::Header<'_>], dst: &mut HeaderMap) -> Result<(), HandshakeError> {
    dst.reserve(src.len());
    for h in src {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HandshakeError::Malformed("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HandshakeError::Malformed("invalid header value"))?;
        dst.append(name, value);
    }
    Ok(())
}

/// The comma-separated tokens of every field named `name`, trimmed.
fn tokens<'a>(h: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The value of a field that may appear only once; `None` when it is missing or repeated.
fn single<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = h.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

fn has_token(h: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(h, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether `s` may be written as a header value: no control characters but tab (RFC 9110 §5.5).
fn is_field_value(s: &str) -> bool {
    HeaderValue::from_str(s).is_ok()
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
