//! RFC 6455 frames written and parsed by hand, for mock peers: the bytes on the wire are checked
//! independently of `wsx-proto`'s own encoder and decoder.

use tokio::io::{AsyncRead, AsyncReadExt};

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
