//! Data messages encoded once, for fan-out: [`SharedFrame`].

use bytes::Bytes;

use crate::deflate::{Deflate, DeflateConfig};
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
///
/// [`SharedFrame::compressed`] makes the permessage-deflate form (RSV1), which only connections
/// that negotiated `server_no_context_takeover` with a 15-bit window may send
/// ([`Connection::takes_shared_compressed`](crate::Connection::takes_shared_compressed)).
#[derive(Clone, PartialEq, Eq)]
pub struct SharedFrame {
    /// The whole frame; its first byte says whether it is text and compressed. No other
    /// field: a subscriber's queue holds one of these per message waiting (32 bytes).
    bytes: Bytes,
}

/// The compressor of [`SharedFrame::compressed`]: no context between messages, 15-bit window.
/// One serves any number of connections.
#[derive(Debug)]
pub struct SharedCompressor(Deflate);

impl SharedCompressor {
    /// A compressor with `config`'s level and minimum size (its window and context settings
    /// do not apply: the output must suit every connection that takes it).
    pub fn new(config: &DeflateConfig) -> Self {
        Self(Deflate::stateless(config))
    }
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
        Some(Self::encode(opcode, message.payload(), text, false))
    }

    /// Encodes a data message compressed (permessage-deflate, RSV1 set); `None` for a control
    /// message, or when the compressor sends it as it is (shorter than its minimum size).
    pub fn compressed(message: &Message, compressor: &mut SharedCompressor) -> Option<Self> {
        let (opcode, text) = match message {
            Message::Text(_) => (OpCode::Text, true),
            Message::Binary(_) => (OpCode::Binary, false),
            _ => return None,
        };
        let payload = compressor.0.compress(message.payload())?;
        Some(Self::encode(opcode, &payload, text, true))
    }

    /// A text message; `text` is valid UTF-8 by its type.
    pub fn text(text: &str) -> Self {
        Self::encode(OpCode::Text, text.as_bytes(), true, false)
    }

    /// A binary message.
    pub fn binary(data: &[u8]) -> Self {
        Self::encode(OpCode::Binary, data, false, false)
    }

    fn encode(opcode: OpCode, payload: &[u8], text: bool, compressed: bool) -> Self {
        let header = FrameHeader {
            fin: true,
            // RSV1 marks a compressed message (RFC 7692 §6).
            rsv: if compressed { 0b100 } else { 0 },
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut bytes = Vec::with_capacity(n + payload.len());
        bytes.extend_from_slice(&head[..n]);
        bytes.extend_from_slice(payload);
        debug_assert_eq!((text, compressed), (bytes[0] & 0x0f == 0x1, bytes[0] & 0x40 != 0));
        Self { bytes: Bytes::from(bytes) }
    }

    /// Whether it is the compressed form (RSV1).
    pub fn is_compressed(&self) -> bool {
        self.bytes[0] & 0x40 != 0
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
        self.bytes[0] & 0x0f == OpCode::Text.as_u8()
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
            .field("text", &self.is_text())
            .field("compressed", &self.is_compressed())
            .field("wire_len", &self.bytes.len())
            .finish()
    }
}
