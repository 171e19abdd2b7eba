//! Data messages encoded once, for fan-out: [`SharedFrame`].

use bytes::Bytes;

use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::message::Message;

/// A data message encoded once as a complete, unmasked server frame (header and payload in one
/// buffer), to be queued on many server connections with
/// [`Connection::send_shared`](crate::Connection::send_shared). Cloning shares the buffer.
///
/// Server frames carry no mask (RFC 6455 §5.1), so the same bytes are valid on every
/// connection, those with permessage-deflate too: a frame without RSV1 is an uncompressed
/// message, which the extension allows at any time (RFC 7692 §6) and which leaves the
/// compression context untouched.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedFrame {
    bytes: Bytes,
    text: bool,
}

impl SharedFrame {
    /// Encodes a data message; `None` for a control message (ping, pong, close), which is
    /// never shared.
    pub fn new(message: &Message) -> Option<Self> {
        let (opcode, text) = match message {
            Message::Text(_) => (OpCode::Text, true),
            Message::Binary(_) => (OpCode::Binary, false),
            _ => return None,
        };
        Some(Self::encode(opcode, message.payload(), text))
    }

    /// A text message; `text` is valid UTF-8 by its type.
    pub fn text(text: &str) -> Self {
        Self::encode(OpCode::Text, text.as_bytes(), true)
    }

    /// A binary message.
    pub fn binary(data: &[u8]) -> Self {
        Self::encode(OpCode::Binary, data, false)
    }

    fn encode(opcode: OpCode, payload: &[u8], text: bool) -> Self {
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut bytes = Vec::with_capacity(n + payload.len());
        bytes.extend_from_slice(&head[..n]);
        bytes.extend_from_slice(payload);
        Self { bytes: Bytes::from(bytes), text }
    }

    /// The frame as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its length on the wire, header included.
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is a text message.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The shared buffer (a clone of the handle, not of the bytes).
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// The frame's type and wire length; the payload can be large.
impl std::fmt::Debug for SharedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFrame")
            .field("text", &self.text)
            .field("wire_len", &self.bytes.len())
            .finish()
    }
}
