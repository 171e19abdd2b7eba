//! Messages, text that is valid UTF-8 by construction, close frames and close codes.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

/// A complete WebSocket message, or a control frame.
///
/// Data messages arrive reassembled from their fragments. Control frames are reported too, so
/// applications can see pings, pongs and the peer's close frame; the core already answers pings
/// and echoes the close on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// A text message: valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its payload (at most 125 bytes).
    Ping(Bytes),
    /// A pong with its payload (at most 125 bytes).
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Self::Binary(data.into())
    }

    /// Whether this is a text or binary message (not a control frame).
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }

    /// The payload bytes (for a close frame: none; use the frame's fields).
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b,
            Self::Close(_) => &[],
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::Text(s.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Self {
        Self::Binary(v.into())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

/// A piece of a large data message, delivered as it arrives instead of after the whole message
/// (see [`crate::Connection::poll_event`]), or sent the same way
/// ([`crate::Connection::send_chunk`]): each chunk goes out as one frame of a fragmented message.
///
/// Text chunks always hold whole code points, so every text chunk is valid UTF-8 on its own;
/// a received text message's last chunk is only delivered once the whole message has been
/// validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    text: bool,
    data: Bytes,
    first: bool,
    last: bool,
}

impl Chunk {
    /// A piece of a text message. `first` starts a message, `last` ends it.
    pub fn text(text: impl Into<Utf8Bytes>, first: bool, last: bool) -> Self {
        Self { text: true, data: text.into().into_bytes(), first, last }
    }

    /// A piece of a binary message. `first` starts a message, `last` ends it.
    pub fn binary(data: impl Into<Bytes>, first: bool, last: bool) -> Self {
        Self { text: false, data: data.into(), first, last }
    }

    /// Built by the core from validated bytes: `data` is valid UTF-8 when `text` is set.
    pub(crate) fn validated(text: bool, data: Bytes, first: bool, last: bool) -> Self {
        Self { text, data, first, last }
    }

    /// Whether this is part of a text message.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// Whether this chunk starts its message.
    pub fn is_first(&self) -> bool {
        self.first
    }

    /// Whether this chunk ends its message.
    pub fn is_last(&self) -> bool {
        self.last
    }

    /// The payload bytes of this piece.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The piece of a text message as a `str` (`None` for binary). It is checked again here,
    /// as `str::from_utf8` does; use [`Self::data`] to skip that.
    pub fn as_text(&self) -> Option<&str> {
        if self.text {
            std::str::from_utf8(&self.data).ok()
        } else {
            None
        }
    }

    /// The payload bytes of this piece, by value.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What [`crate::Connection::poll_event`] reports: a whole message (small data messages and all
/// control frames) or a piece of a large data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message or control frame, as from [`crate::Connection::poll_message`].
    Message(Message),
    /// A piece of a data message too large to wait for.
    Chunk(Chunk),
}

/// Bytes that are valid UTF-8 by construction: a zero-copy `str` over [`Bytes`].
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Utf8Bytes(ByteString);

impl Utf8Bytes {
    /// Wraps a static string without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(ByteString::from_static(s))
    }

    /// Text the receive path validated piece by piece as it arrived: see
    /// [`crate::mask::validated_text`] for the promise the caller keeps.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        Self(crate::mask::validated_text(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes().as_ref()
    }

    /// Unwraps the underlying [`Bytes`].
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(ByteString::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(ByteString::from(s))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        s.as_str().into()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;
    fn try_from(b: Bytes) -> Result<Self, Self::Error> {
        Ok(Self(ByteString::try_from(b)?))
    }
}

impl TryFrom<Vec<u8>> for Utf8Bytes {
    type Error = std::string::FromUtf8Error;
    fn try_from(v: Vec<u8>) -> Result<Self, Self::Error> {
        Ok(String::from_utf8(v)?.into())
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// A close frame's status code and reason (RFC 6455 §5.5.1, §7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason: UTF-8, at most 123 bytes on the wire.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// A close frame with a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        Self { code, reason: reason.into() }
    }
}

/// A close status code (RFC 6455 §7.4). Any `u16` can be held; see [`CloseCode::is_valid_on_wire`]
/// for which ones a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: closed without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a message's data did not match its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway got a bad response from upstream.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: the TLS handshake failed (never sent on the wire).
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether a peer may send this code in a close frame: 1000-1003, 1007-1014 and 3000-4999.
    /// Anything else received is a protocol error.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether this endpoint may send this code. The same set as [`Self::is_valid_on_wire`].
    pub fn is_sendable(self) -> bool {
        self.is_valid_on_wire()
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_ranges() {
        for code in [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn utf8_bytes_checks_on_conversion() {
        assert!(Utf8Bytes::try_from(Bytes::from_static(&[0xff])).is_err());
        let t = Utf8Bytes::try_from(Bytes::from_static("héllo".as_bytes())).unwrap();
        assert_eq!(t, "héllo");
        assert_eq!(&*t, "héllo");
    }
}
