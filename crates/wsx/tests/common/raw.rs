//! RFC 6455 frames written and parsed by hand, for mock peers: the bytes on the wire are checked
//! independently of `wsx-proto`'s own encoder and decoder.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::guard;

pub(crate) const FIN: u8 = 0x80;
pub(crate) const RSV2: u8 = 0x20;
pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xa;
pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame: first byte `b0` (FIN, RSV, opcode), masked with `mask` if given.
pub(crate) fn frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[derive(Debug)]
pub(crate) struct RawFrame {
    pub(crate) b0: u8,
    pub(crate) masked: bool,
    /// Unmasked.
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    pub(crate) fn opcode(&self) -> u8 {
        self.b0 & 0x0f
    }
}

/// Reads one frame; panics if none arrives within [`super::GUARD`].
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> RawFrame {
    guard("reading a raw frame", read_frame_unguarded(r)).await
}

pub(crate) async fn read_frame_unguarded<R: AsyncRead + Unpin>(r: &mut R) -> RawFrame {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await.expect("frame header");
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await.unwrap()),
        127 => r.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let masked = head[1] & 0x80 != 0;
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await.unwrap();
    }
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    r.read_exact(&mut payload).await.expect("frame payload");
    if masked {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
    }
    assert_eq!(head[0] & 0x70, 0, "wsx set RSV bits without an extension");
    RawFrame { b0: head[0], masked, payload }
}

/// RFC 6455 §1.3's example key and its accept value.
pub(crate) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub(crate) const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An upgrade request for `/chat` with [`KEY`] and `extra` header lines.
pub(crate) fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends an upgrade request and checks the 101 response, byte by byte so that nothing after the
/// head is consumed.
pub(crate) async fn raw_client_handshake<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    io.write_all(upgrade_request("").as_bytes()).await.unwrap();
    let head = read_head(io).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(header(&head, "sec-websocket-accept"), Some(ACCEPT), "{head}");
}

/// Reads an HTTP head up to and including the blank line, one byte at a time.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = guard("reading an HTTP head", r.read_u8()).await;
        head.push(byte.expect("connection ended inside an HTTP head"));
    }
    String::from_utf8(head).unwrap()
}

/// The value of header `name` (case-insensitive) in an HTTP head.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
