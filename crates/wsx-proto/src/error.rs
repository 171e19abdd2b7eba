//! Errors of the protocol core: what the peer did wrong, what a handshake refused, and what the
//! local side may not send.

use http::StatusCode;

use crate::message::CloseCode;

/// The peer broke RFC 6455, or a configured limit.
///
/// The core has already queued the matching close frame ([`ProtocolError::close_code`]) when it
/// reports one of these; the connection then ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame used a reserved opcode (3-7, 11-15).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV1-3 were set without an extension that defines them.
    #[error("reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBits(u8),
    /// A client sent an unmasked frame (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (RFC 6455 §5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame had FIN clear (RFC 6455 §5.5).
    #[error("control frame is fragmented")]
    FragmentedControlFrame,
    /// A control frame's payload exceeded 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// A 64-bit payload length had its most significant bit set (RFC 6455 §5.2).
    #[error("payload length has the most significant bit set")]
    InvalidLength,
    /// A continuation frame arrived with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was unfinished.
    #[error("new data frame inside an unfinished fragmented message")]
    ExpectedContinuation,
    /// A text message or close reason was not valid UTF-8.
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A compressed message could not be inflated (RFC 7692).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A close frame carried a one-byte payload.
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// A close frame carried a status code that may not be sent.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A frame was larger than the configured maximum frame size.
    #[error("frame of {size} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The declared frame payload size.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message was larger than the configured maximum message size.
    #[error("message of at least {size} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The message size so far, including the frame that crossed the limit.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// The transport ended without a closing handshake (close code 1006 for the application).
    #[error("connection closed without a closing handshake")]
    ResetWithoutClosingHandshake,
    /// The peer did not answer a ping within the configured time.
    #[error("keepalive ping timed out")]
    KeepaliveTimeout,
}

impl ProtocolError {
    /// The close code the core sends for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            Self::ResetWithoutClosingHandshake => CloseCode::ABNORMAL,
            Self::KeepaliveTimeout => CloseCode::INTERNAL_ERROR,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Something the local side tried to send that the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent; nothing may follow it (RFC 6455 §5.5.1).
    #[error("the connection is closed")]
    Closed,
    /// A ping, pong or close payload over 125 bytes (a close reason over 123).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(usize),
    /// A close code that may not be sent (1005, 1006, 1015, or outside the valid ranges).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A whole message, or a chunk with `first` set, while a message sent in chunks is not
    /// finished: its frames may not interleave with another message's (RFC 6455 §5.4).
    #[error("a message sent in chunks is not finished")]
    ChunkedMessageInProgress,
    /// A chunk without `first` set while no message sent in chunks is in progress.
    #[error("no message sent in chunks is in progress")]
    NoChunkedMessage,
    /// A [`SharedFrame`](crate::SharedFrame) on a client connection: client frames must be
    /// masked, each with a key of its own (RFC 6455 §5.3), so they cannot be shared.
    #[error("a shared frame can only be sent by a server")]
    SharedFrameFromClient,
    /// A compressed [`SharedFrame`](crate::SharedFrame) on a connection that did not negotiate
    /// permessage-deflate with `server_no_context_takeover` and a 15-bit window.
    #[error("compressed shared frames need permessage-deflate without server context takeover")]
    CompressionNotNegotiated,
}

/// Why an opening handshake failed. On the server, [`HandshakeError::status`] is the HTTP status
/// to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes were not a valid HTTP/1.1 request or response head.
    #[error("malformed HTTP: {0}")]
    Malformed(&'static str),
    /// The head exceeded the configured byte limit.
    #[error("HTTP head exceeds {0} bytes")]
    HeadTooLarge(usize),
    /// The head had more header fields than the configured limit.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// The request method was not GET.
    #[error("method {0} is not GET")]
    MethodNotGet(String),
    /// An HTTP/2 WebSocket request's method was not CONNECT (RFC 8441 §4); answered with 405
    /// and `Allow: CONNECT`.
    #[error("method {0} is not CONNECT")]
    MethodNotConnect(String),
    /// An HTTP/2 CONNECT request without `:protocol websocket` (`None`: no `:protocol` at all,
    /// a plain CONNECT). Answered with 400.
    #[error("the CONNECT request's :protocol is {} instead of websocket", .0.as_deref().unwrap_or("missing"))]
    BadConnectProtocol(Option<String>),
    /// The peer's HTTP/2 SETTINGS do not enable extended CONNECT (RFC 8441 §3), so a WebSocket
    /// cannot be opened over that connection.
    #[error(
        "the server does not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL) on HTTP/2"
    )]
    ExtendedConnectNotEnabled,
    /// The request was not HTTP/1.1 or later.
    #[error("HTTP version is not 1.1")]
    WrongHttpVersion,
    /// A required header was missing or had the wrong value.
    #[error("missing or invalid {0} header")]
    BadHeader(&'static str),
    /// The upgrade request declared a body (`Content-Length` other than 0, or any
    /// `Transfer-Encoding`). What follows an upgrade request's head are the client's frames; a
    /// request that also declares a body is framed one way by the server and another way by any
    /// proxy between them (the request smuggling of vert.x CVE-2018-12541).
    #[error("the upgrade request has a body (Content-Length or Transfer-Encoding)")]
    RequestBody,
    /// A subprotocol name was not an RFC 7230 token, or was offered twice (RFC 6455 §4.1). On a
    /// client this is found before connecting.
    #[error("invalid subprotocol name {0:?}: subprotocols are distinct RFC 7230 tokens")]
    InvalidProtocol(String),
    /// `Sec-WebSocket-Version` was not 13 (answered with 426 and `Sec-WebSocket-Version: 13`).
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` did not decode to 16 bytes.
    #[error("Sec-WebSocket-Key is not 16 base64-encoded bytes")]
    BadKey,
    /// The server answered with a status other than 101 (200 for an HTTP/2 extended CONNECT).
    #[error("server answered {status} instead of accepting the WebSocket (101 on HTTP/1.1, 200 on HTTP/2)")]
    UnexpectedStatus {
        /// The status the server sent.
        status: StatusCode,
    },
    /// The server's `Sec-WebSocket-Accept` did not match the key.
    #[error("Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    /// The server selected a subprotocol the client did not offer.
    #[error("server selected subprotocol {0:?}, which was not offered")]
    UnofferedProtocol(String),
    /// The request's `Origin` is not one the server allows (`None`: the request had none and
    /// the server requires one). Answered with 403.
    #[error("Origin {} is not allowed", .0.as_deref().unwrap_or("(missing)"))]
    ForbiddenOrigin(Option<String>),
    /// The server selected an extension the client did not offer.
    #[error("server selected extension {0:?}, which was not offered")]
    UnofferedExtension(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::MethodNotGet(_) | Self::MethodNotConnect(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            Self::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Self::UnexpectedStatus { status } => *status,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
