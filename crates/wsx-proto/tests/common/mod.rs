//! Helpers shared by the integration tests: two connections wired in memory, a frame builder
//! that can write anything (including what the core must refuse), and a decoder for what the
//! core queued to send.

use bytes::Buf;
use wsx_proto::frame::{FrameHeader, OpCode};
use wsx_proto::{Config, Connection, Message, ProtocolError, Role};

/// What [`Connection::poll_message`] reports.
pub(crate) type Event = Result<Message, ProtocolError>;

/// Opcodes as raw wire values, so tests can also write reserved ones.
pub(crate) const CONT: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xa;

/// The masking key of RFC 6455 §5.7, used for frames a test client sends.
pub(crate) const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client and a server [`Connection`] wired together in memory.
pub(crate) struct Pair {
    pub(crate) client: Connection,
    pub(crate) server: Connection,
}

impl Pair {
    pub(crate) fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub(crate) fn with_config(config: Config) -> Self {
        Self {
            client: Connection::new(Role::Client, config.clone()),
            server: Connection::new(Role::Server, config),
        }
    }

    /// Moves everything the client queued to the server; returns what the server reports.
    pub(crate) fn deliver_to_server(&mut self) -> Vec<Event> {
        let bytes = take_transmit(&mut self.client);
        self.server.handle_input(&bytes);
        poll_all(&mut self.server)
    }

    /// Moves everything the server queued to the client; returns what the client reports.
    pub(crate) fn deliver_to_client(&mut self) -> Vec<Event> {
        let bytes = take_transmit(&mut self.server);
        self.client.handle_input(&bytes);
        poll_all(&mut self.client)
    }
}

/// Drains [`Connection::transmit`] chunk by chunk, as a driver writing to a socket would.
pub(crate) fn take_transmit(conn: &mut Connection) -> Vec<u8> {
    let out = conn.transmit();
    let mut bytes = Vec::with_capacity(out.remaining());
    while out.has_remaining() {
        let chunk = out.chunk();
        assert!(!chunk.is_empty(), "chunk() is empty with {} bytes remaining", out.remaining());
        bytes.extend_from_slice(chunk);
        let n = chunk.len();
        out.advance(n);
    }
    assert_eq!(conn.buffered_amount(), 0);
    bytes
}

/// Polls until `None`.
pub(crate) fn poll_all(conn: &mut Connection) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = conn.poll_message() {
        events.push(event);
        assert!(events.len() < 1_000_000, "poll_message never returns None");
    }
    events
}

/// The header bytes of a frame: `b0` as given (FIN, RSV and opcode, which may be reserved), the
/// shortest length form, then the masking key.
pub(crate) fn raw_header(b0: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![b0];
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame: [`raw_header`] followed by the payload, masked with `mask` if given.
pub(crate) fn raw_frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = raw_header(b0, mask, payload.len() as u64);
    match mask {
        Some(key) => out.extend(xor(payload, key)),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as a client sends it (masked with [`KEY`]): input for a server.
pub(crate) fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(u8::from(fin) << 7 | opcode, Some(KEY), payload)
}

/// A frame as a server sends it (unmasked): input for a client.
pub(crate) fn unmasked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(u8::from(fin) << 7 | opcode, None, payload)
}

/// A close frame payload: the code, big-endian, then the reason.
pub(crate) fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// Masking by the definition in RFC 6455 §5.3, byte by byte.
pub(crate) fn xor(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect()
}

/// One frame read back from a transmit buffer, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireFrame {
    pub(crate) header: FrameHeader,
    pub(crate) payload: Vec<u8>,
}

impl WireFrame {
    /// The status code of a close frame, if it carries one.
    pub(crate) fn close_code(&self) -> Option<u16> {
        assert_eq!(self.header.opcode, OpCode::Close);
        assert_ne!(self.payload.len(), 1, "a close payload of one byte was sent");
        self.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}

/// Splits bytes a connection queued into frames; every byte must belong to a whole frame.
pub(crate) fn parse_frames(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (header, n) = FrameHeader::decode(bytes)
            .expect("queued frame header is valid")
            .expect("queued frame header is complete");
        let end = n + usize::try_from(header.payload_len).unwrap();
        assert!(end <= bytes.len(), "queued frame is truncated");
        let payload = &bytes[n..end];
        let payload = match header.mask {
            Some(key) => xor(payload, key),
            None => payload.to_vec(),
        };
        frames.push(WireFrame { header, payload });
        bytes = &bytes[end..];
    }
    frames
}

/// The frames `conn` queued, checked for the masking its role requires (RFC 6455 §5.1).
pub(crate) fn sent_frames(conn: &mut Connection) -> Vec<WireFrame> {
    let role = conn.role();
    let frames = parse_frames(&take_transmit(conn));
    for f in &frames {
        assert_eq!(f.header.mask.is_some(), role == Role::Client, "masking of {f:?} by {role:?}");
        assert_eq!(f.header.rsv, 0);
        assert!(f.header.fin);
    }
    frames
}

/// The close frames `conn` queued.
pub(crate) fn sent_closes(conn: &mut Connection) -> Vec<WireFrame> {
    sent_frames(conn).into_iter().filter(|f| f.header.opcode == OpCode::Close).collect()
}
