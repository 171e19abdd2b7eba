//! The raw TCP baseline: the least work a WebSocket client will accept from an echo server.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest upgrade request read before giving up.
const MAX_REQUEST: usize = 8 << 10;
/// Bytes read from the socket at a time once upgraded.
const READ_SIZE: usize = 64 << 10;

/// Answers the upgrade, then echoes frames unmasked until the peer closes.
pub(crate) async fn serve(mut tcp: TcpStream) -> io::Result<()> {
    let leftover = handshake(&mut tcp).await?;
    let mut reframer = Reframer::default();
    let mut out = Vec::new();
    if !leftover.is_empty() {
        reframer.feed(&leftover, &mut out);
        tcp.write_all(&out).await?;
    }
    drop(leftover);
    // An idle connection holds no buffer: it is allocated at the first frame.
    tcp.readable().await?;
    let mut buf = vec![0; READ_SIZE];
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        out.clear();
        reframer.feed(&buf[..n], &mut out);
        tcp.write_all(&out).await?;
    }
}

/// Reads the upgrade request and answers 101; returns any bytes read past the request.
async fn handshake(tcp: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut req = Vec::with_capacity(1024);
    let end = loop {
        if let Some(end) = find(&req, b"\r\n\r\n") {
            break end + 4;
        }
        if req.len() >= MAX_REQUEST {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request too large"));
        }
        if tcp.read_buf(&mut req).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let key = header(&req[..end], b"sec-websocket-key")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Sec-WebSocket-Key"))?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key)
    );
    tcp.write_all(response.as_bytes()).await?;
    Ok(req.split_off(end))
}

/// The trimmed value of the first header called `name` (lower case).
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (key, value) = line.split_at(colon);
        key.eq_ignore_ascii_case(name).then(|| value[1..].trim_ascii())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Turns client frames into server frames, across any split of the input: each header loses
/// its mask bit and masking key, each payload is unmasked (RFC 6455 §5.3).
///
/// It trusts the peer completely (this is a benchmark floor, not a server): opcodes, lengths
/// and UTF-8 are passed through unchecked.
#[derive(Debug, Default)]
pub(crate) struct Reframer {
    /// The header being collected.
    header: [u8; 14],
    /// Bytes of `header` collected so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    /// The current frame's masking key, rotated so that index 0 applies to the next byte.
    mask: [u8; 4],
}

impl Reframer {
    /// Appends the server-side form of `input` to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.remaining > 0 {
                let n = input.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                let start = out.len();
                out.extend_from_slice(&input[..n]);
                unmask(&mut out[start..], self.mask);
                self.mask.rotate_left(n % 4);
                self.remaining -= n as u64;
                input = &input[n..];
                continue;
            }
            // Collect the header: 2 bytes, then the extended length and the masking key.
            let need = match self.have {
                0 | 1 => 2,
                _ => header_len(&self.header[..2]),
            };
            let take = (need - self.have).min(input.len());
            self.header[self.have..self.have + take].copy_from_slice(&input[..take]);
            self.have += take;
            input = &input[take..];
            if self.have < need || (need == 2 && header_len(&self.header[..2]) > 2) {
                continue;
            }
            self.emit_header(out);
        }
    }

    /// Writes the complete header in `self.header` without its mask and starts its payload.
    fn emit_header(&mut self, out: &mut Vec<u8>) {
        let h = &self.header[..self.have];
        let masked = h[1] & 0x80 != 0;
        let (len, ext) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 2),
            127 => (u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]), 8),
            n => (u64::from(n), 0),
        };
        out.push(h[0]);
        out.push(h[1] & 0x7f);
        out.extend_from_slice(&h[2..2 + ext]);
        self.mask = if masked { [h[2 + ext], h[3 + ext], h[4 + ext], h[5 + ext]] } else { [0; 4] };
        self.remaining = len;
        self.have = 0;
    }
}

/// Length of a client frame header given its first two bytes.
fn header_len(first: &[u8]) -> usize {
    let ext = match first[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// XORs `buf` with the repeating `mask`, eight bytes at a time.
fn unmask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask phase is still 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame carrying `payload` in one frame.
    fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// The unmasked server frame for `payload`.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = client_frame(opcode, payload, [0; 4]);
        f[1] &= 0x7f;
        let ext = match payload.len() {
            n if n < 126 => 0,
            n if n <= 0xffff => 2,
            _ => 8,
        };
        f.drain(2 + ext..6 + ext);
        f
    }

    fn check(input: &[u8], expected: &[u8]) {
        // Every split into two pieces, and byte by byte, gives the same output.
        for cut in 0..=input.len() {
            let mut r = Reframer::default();
            let mut out = Vec::new();
            r.feed(&input[..cut], &mut out);
            r.feed(&input[cut..], &mut out);
            assert_eq!(out, expected, "split at {cut}");
        }
        let mut r = Reframer::default();
        let mut out = Vec::new();
        for b in input {
            r.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, expected, "byte by byte");
    }

    #[test]
    fn rfc_6455_masked_hello_becomes_unmasked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message and its unmasked form.
        check(
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58],
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        );
    }

    #[test]
    fn frames_of_every_length_class_round_trip() {
        let mask = [0xa1, 0x02, 0xf3, 0x44];
        for len in [0, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut input = client_frame(0x2, &payload, mask);
            input.extend(client_frame(0x1, b"tail", mask));
            let mut expected = server_frame(0x2, &payload);
            expected.extend(server_frame(0x1, b"tail"));
            if len <= 1000 {
                check(&input, &expected);
            } else {
                let mut out = Vec::new();
                let mut r = Reframer::default();
                for piece in input.chunks(4093) {
                    r.feed(piece, &mut out);
                }
                assert_eq!(out, expected, "length {len}");
            }
        }
    }

    #[test]
    fn header_is_found_case_insensitively() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key:  dGhl \r\n\r\n";
        assert_eq!(header(head, b"sec-websocket-key"), Some(&b"dGhl"[..]));
        assert_eq!(header(head, b"origin"), None);
    }
}
