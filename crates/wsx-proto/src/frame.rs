//! Frame headers (RFC 6455 §5.2): decoding and encoding.

use crate::error::ProtocolError;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the 4-bit opcode; reserved values are an error.
    pub fn from_u8(op: u8) -> Result<Self, ProtocolError> {
        Ok(match op {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xa => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xa,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The most bytes a frame header can take: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of a message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the low three bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`. Returns the header and its length in bytes, or
    /// `None` when `buf` does not yet hold a whole header.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(b);
                    let len = u64::from_be_bytes(len);
                    // RFC 6455 §5.2: the most significant bit MUST be 0.
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(k) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        Ok(Some((
            Self { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x07, opcode, mask, payload_len },
            pos,
        )))
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Encodes the header into `dst`, returning the number of bytes written. The shortest
    /// length encoding is always used (RFC 6455 §5.2).
    pub fn encode(&self, dst: &mut [u8; MAX_HEADER_LEN]) -> usize {
        dst[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x07) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = match self.payload_len {
            n @ 0..=125 => {
                dst[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xffff => {
                dst[1] = mask_bit | 126;
                dst[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                dst[1] = mask_bit | 127;
                dst[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            dst[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], expected: FrameHeader) {
        let (h, n) = FrameHeader::decode(bytes).unwrap().unwrap();
        assert_eq!(h, expected);
        assert_eq!(n, bytes.len());
        assert_eq!(h.encoded_len(), bytes.len());
        let mut out = [0u8; MAX_HEADER_LEN];
        let m = h.encode(&mut out);
        assert_eq!(&out[..m], bytes);
        for cut in 0..bytes.len() {
            assert_eq!(FrameHeader::decode(&bytes[..cut]), Ok(None), "cut {cut}");
        }
    }

    fn hdr(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>, payload_len: u64) -> FrameHeader {
        FrameHeader { fin, rsv: 0, opcode, mask, payload_len }
    }

    #[test]
    fn rfc_6455_section_5_7_examples() {
        // Single-frame unmasked text "Hello".
        check(&[0x81, 0x05], hdr(true, OpCode::Text, None, 5));
        // Single-frame masked text "Hello".
        check(
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d],
            hdr(true, OpCode::Text, Some([0x37, 0xfa, 0x21, 0x3d]), 5),
        );
        // Fragmented unmasked text: "Hel" then "lo".
        check(&[0x01, 0x03], hdr(false, OpCode::Text, None, 3));
        check(&[0x80, 0x02], hdr(true, OpCode::Continuation, None, 2));
        // Unmasked ping "Hello".
        check(&[0x89, 0x05], hdr(true, OpCode::Ping, None, 5));
        // 256 bytes binary in one unmasked frame.
        check(&[0x82, 0x7e, 0x01, 0x00], hdr(true, OpCode::Binary, None, 256));
        // 64 KiB binary in one unmasked frame.
        check(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0], hdr(true, OpCode::Binary, None, 65536));
    }

    #[test]
    fn length_boundaries() {
        for (len, header_len) in
            [(0u64, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (1 << 40, 10)]
        {
            let h = hdr(true, OpCode::Binary, None, len);
            let mut out = [0u8; MAX_HEADER_LEN];
            assert_eq!(h.encode(&mut out), header_len);
            assert_eq!(FrameHeader::decode(&out[..header_len]).unwrap().unwrap(), (h, header_len));
        }
    }

    #[test]
    fn rejects_reserved_opcodes_and_top_length_bit() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::decode(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
        let mut bad = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(FrameHeader::decode(&bad), Err(ProtocolError::InvalidLength));
        bad[2] = 0x7f;
        assert!(FrameHeader::decode(&bad).unwrap().is_some());
    }

    #[test]
    fn reads_rsv_bits() {
        let (h, _) = FrameHeader::decode(&[0xc1, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b100);
        let (h, _) = FrameHeader::decode(&[0x91, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b001);
    }
}
