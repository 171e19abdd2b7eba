//! The raw TCP baseline: the least work a WebSocket client will accept from an echo server.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest upgrade request read before giving up.
const MAX_REQUEST: usize = 8 << 10;
/// Bytes read from the socket at a time once upgraded.
const READ_SIZE: usize = 256 << 10;
/// Echo bytes kept while the socket is not writable before reading pauses.
const MAX_BACKLOG: usize = 4 << 20;
/// Room before the read position for a header whose bytes straddled two reads (see
/// [`Reframer::reframe`]); at least the largest server header, 10 bytes.
const HEADROOM: usize = 16;

/// Answers the upgrade, then echoes frames unmasked until the peer closes.
///
/// Reads never wait for writes: what the socket does not take at once is kept (up to
/// [`MAX_BACKLOG`]) and written when it can be, while reading goes on. A loop that blocked in
/// `write_all` would stall a peer that writes a large message before it reads its echo, and
/// measure that stall rather than the floor.
pub(crate) async fn serve(mut tcp: TcpStream) -> io::Result<()> {
    let leftover = handshake(&mut tcp).await?;
    if leftover.is_empty() {
        // An idle connection holds no buffer: it is allocated at the first frame.
        tcp.readable().await?;
    }
    let mut buf = vec![0; HEADROOM + READ_SIZE];
    let mut n = leftover.len();
    buf[HEADROOM..HEADROOM + n].copy_from_slice(&leftover);
    drop(leftover);
    let mut reframer = Reframer::default();
    // Echo bytes the socket has not taken yet, oldest first.
    let mut backlog: VecDeque<u8> = VecDeque::new();
    loop {
        if n > 0 {
            let out = reframer.reframe(&mut buf, HEADROOM + n);
            let mut out = &buf[out];
            if backlog.is_empty() {
                // The common case: the whole echo goes out in this one write.
                match tcp.try_write(out) {
                    Ok(written) => out = &out[written..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            backlog.extend(out);
            n = 0;
        }
        while !backlog.is_empty() {
            let (front, _) = backlog.as_slices();
            match tcp.try_write(front) {
                Ok(written) => drop(backlog.drain(..written)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if backlog.is_empty() {
            // `read` rather than `ready` + `try_read`: after a short read tokio knows the socket
            // is drained and waits for readiness instead of trying a read that would block.
            n = tcp.read(&mut buf[HEADROOM..]).await?;
            if n == 0 {
                return Ok(());
            }
            continue;
        }
        let interest = if backlog.len() >= MAX_BACKLOG {
            Interest::WRITABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let ready = tcp.ready(interest).await?;
        if ready.is_readable() && interest.is_readable() {
            match tcp.try_read(&mut buf[HEADROOM..]) {
                Ok(0) => {
                    // The peer is done sending: write out the rest, then stop.
                    let (a, b) = backlog.as_slices();
                    tcp.write_all(a).await?;
                    tcp.write_all(b).await?;
                    return Ok(());
                }
                Ok(read) => n = read,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
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

/// Turns client frames into server frames in place, across any split of the input: each header
/// loses its mask bit and masking key, each payload is unmasked (RFC 6455 §5.3).
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
    /// Rewrites the client bytes in `buf[HEADROOM..end]` into server bytes within `buf`, and
    /// returns where they are.
    ///
    /// Output never overtakes input: a server header is 4 bytes shorter than the client header
    /// it replaces, so everything moves left or stays, and the payload of a large frame is
    /// unmasked where it was read, without a copy. The one exception is a header begun in the
    /// previous read: its output can be longer than the part of it in this read, so it starts
    /// in the headroom.
    pub(crate) fn reframe(&mut self, buf: &mut [u8], end: usize) -> Range<usize> {
        let (mut start, mut r, mut w) = (HEADROOM, HEADROOM, HEADROOM);
        while r < end {
            if self.remaining > 0 {
                let n = (end - r).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                if w != r {
                    buf.copy_within(r..r + n, w);
                }
                unmask(&mut buf[w..w + n], self.mask);
                self.mask.rotate_left(n % 4);
                self.remaining -= n as u64;
                r += n;
                w += n;
                continue;
            }
            // Collect the header: 2 bytes, then the extended length and the masking key.
            let need = if self.have < 2 { 2 } else { header_len(&self.header[..2]) };
            let take = (need - self.have).min(end - r);
            self.header[self.have..self.have + take].copy_from_slice(&buf[r..r + take]);
            self.have += take;
            r += take;
            if self.have < need || (need == 2 && header_len(&self.header[..2]) > 2) {
                continue;
            }
            let mut out = [0; 10];
            let len = self.start_payload(&mut out);
            if w + len > r {
                // Only the first header of a read can be short of input (see above).
                debug_assert_eq!(w, start);
                start = r - len;
                w = start;
            }
            buf[w..w + len].copy_from_slice(&out[..len]);
            w += len;
        }
        start..w
    }

    /// Writes the server form of the complete header in `self.header` to `out`, returning its
    /// length, and starts the frame's payload.
    fn start_payload(&mut self, out: &mut [u8; 10]) -> usize {
        let h = &self.header[..self.have];
        let masked = h[1] & 0x80 != 0;
        let (len, ext) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 2),
            127 => (u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]), 8),
            n => (u64::from(n), 0),
        };
        out[0] = h[0];
        out[1] = h[1] & 0x7f;
        out[2..2 + ext].copy_from_slice(&h[2..2 + ext]);
        self.mask = if masked { [h[2 + ext], h[3 + ext], h[4 + ext], h[5 + ext]] } else { [0; 4] };
        self.remaining = len;
        self.have = 0;
        2 + ext
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

    /// Feeds `input` as one read, the way `serve` does.
    fn feed(r: &mut Reframer, input: &[u8], out: &mut Vec<u8>) {
        let mut buf = vec![0xee; HEADROOM + input.len()];
        buf[HEADROOM..].copy_from_slice(input);
        let end = buf.len();
        let range = r.reframe(&mut buf, end);
        out.extend_from_slice(&buf[range]);
    }

    fn check(input: &[u8], expected: &[u8]) {
        // Every split into two pieces, and byte by byte, gives the same output.
        for cut in 0..=input.len() {
            let mut r = Reframer::default();
            let mut out = Vec::new();
            feed(&mut r, &input[..cut], &mut out);
            feed(&mut r, &input[cut..], &mut out);
            assert_eq!(out, expected, "split at {cut}");
        }
        let mut r = Reframer::default();
        let mut out = Vec::new();
        for b in input {
            feed(&mut r, std::slice::from_ref(b), &mut out);
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
                    feed(&mut r, piece, &mut out);
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
