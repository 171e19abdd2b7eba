//! The send queue: frames waiting for the transport, as one vectored [`Buf`].

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{FrameHeader, MAX_HEADER_LEN};
use crate::mask::{apply_mask, copy_unmasked};

/// The send buffer's first allocation in a batch of writes, when the first frame fits: small
/// enough for the allocator's per-thread cache (glibc serves up to ~1 KiB from it), so echoing a
/// small message costs no trip into the general allocator. A burst grows it by doubling.
const SEND_CHUNK: usize = 512;
/// Payloads up to this size are copied into the send buffer next to their header, so that many
/// small frames go out in one write; larger ones are queued as their own chunk without a copy.
const INLINE_PAYLOAD_MAX: usize = 4 << 10;

/// Outgoing bytes: small frames coalesced into one buffer, large payloads queued as their own
/// chunks without copying. Implements [`Buf`] with vectored chunks.
#[derive(Debug)]
pub struct SendQueue {
    /// A small frame queued when the queue was empty, sent before everything else: the common
    /// small echo goes out without a heap allocation. `small[small_pos..small_len]` is unsent.
    small: [u8; SMALL_FRAME_MAX],
    small_pos: u8,
    small_len: u8,
    /// Sealed chunks, sent after `small` and before `tail`.
    chunks: VecDeque<Bytes>,
    /// The buffer small frames are appended to.
    tail: BytesMut,
    len: usize,
    /// Bytes taken by the transport since the connection started (wrapping): progress that
    /// proves the peer is reading, for keepalive.
    written: u64,
}

/// The largest frame (header included) kept in [`SendQueue`]'s inline buffer: a 20-byte message
/// is 22 bytes from a server, 26 from a client.
const SMALL_FRAME_MAX: usize = 64;

impl Default for SendQueue {
    fn default() -> Self {
        Self {
            small: [0; SMALL_FRAME_MAX],
            small_pos: 0,
            small_len: 0,
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            len: 0,
            written: 0,
        }
    }
}

impl SendQueue {
    /// Bytes the transport has taken from the queue so far (wrapping).
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    pub(super) fn push_frame(&mut self, header: &FrameHeader, payload: Bytes) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let total = n + payload.len();
        if self.len == 0 && total <= SMALL_FRAME_MAX {
            self.small[..n].copy_from_slice(&head[..n]);
            self.small[n..total].copy_from_slice(&payload);
            if let Some(key) = header.mask {
                apply_mask(&mut self.small[n..total], key, 0);
            }
            // Both fit in a u8: total <= SMALL_FRAME_MAX.
            self.small_pos = 0;
            self.small_len = total as u8;
            self.len = total;
            return;
        }
        if self.tail.capacity() == 0 {
            let inline = header.mask.is_some() || payload.len() <= INLINE_PAYLOAD_MAX;
            let body = if inline { payload.len() } else { 0 };
            self.tail.reserve((n + body).max(SEND_CHUNK));
        }
        self.tail.extend_from_slice(&head[..n]);
        if let Some(key) = header.mask {
            // A masked payload must be copied anyway: mask it in its place in the buffer.
            let start = self.tail.len();
            self.tail.extend_from_slice(&payload);
            apply_mask(&mut self.tail[start..], key, 0);
        } else if payload.len() <= INLINE_PAYLOAD_MAX {
            self.tail.extend_from_slice(&payload);
        } else {
            self.chunks.push_back(self.tail.split().freeze());
            self.chunks.push_back(payload);
        }
        self.len += n + header.payload_len as usize;
    }
}

impl SendQueue {
    /// Queues the echo of one short frame: header byte `b0` (FIN, RSV and opcode), then
    /// `masked` (at most 125 bytes) unmasked with `key`, in its place in the queue. With
    /// `text`, the payload must be UTF-8: when it is not, nothing is queued and it returns
    /// false. The in-place echo's path (see `Connection::echo_input`).
    pub(super) fn push_echo(&mut self, b0: u8, masked: &[u8], key: [u8; 4], text: bool) -> bool {
        debug_assert!(masked.len() <= 125);
        // At most 125: fits the 7-bit length.
        let len = masked.len() as u8;
        let total = 2 + masked.len();
        if self.len == 0 && total <= SMALL_FRAME_MAX {
            let payload = &mut self.small[2..total];
            let ascii = copy_unmasked(payload, masked, key);
            if text && !ascii && std::str::from_utf8(payload).is_err() {
                return false;
            }
            self.small[0] = b0;
            self.small[1] = len;
            self.small_pos = 0;
            // Fits in a u8: total <= SMALL_FRAME_MAX.
            self.small_len = total as u8;
            self.len = total;
            return true;
        }
        if self.tail.capacity() - self.tail.len() < total {
            self.tail.reserve(total.max(SEND_CHUNK));
        }
        let start = self.tail.len();
        self.tail.extend_from_slice(&[b0, len]);
        self.tail.extend_from_slice(masked);
        let payload = &mut self.tail[start + 2..];
        let ascii = copy_unmasked(payload, masked, key);
        if text && !ascii && std::str::from_utf8(payload).is_err() {
            self.tail.truncate(start);
            return false;
        }
        self.len += total;
        true
    }
}

impl SendQueue {
    /// Queues a frame encoded elsewhere (a [`SharedFrame`](crate::SharedFrame)): copied when
    /// small, as [`Self::push_frame`] copies small payloads; otherwise queued as it is.
    pub(super) fn push_encoded(&mut self, frame: &Bytes) {
        let total = frame.len();
        if self.len == 0 && total <= SMALL_FRAME_MAX {
            self.small[..total].copy_from_slice(frame);
            self.small_pos = 0;
            // Fits in a u8: total <= SMALL_FRAME_MAX.
            self.small_len = total as u8;
            self.len = total;
            return;
        }
        if total <= INLINE_PAYLOAD_MAX + MAX_HEADER_LEN {
            if self.tail.capacity() - self.tail.len() < total {
                self.tail.reserve(total.max(SEND_CHUNK));
            }
            self.tail.extend_from_slice(frame);
        } else {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(frame.clone());
        }
        self.len += total;
    }
}

impl Buf for SendQueue {
    #[inline]
    fn remaining(&self) -> usize {
        self.len
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        if self.small_pos < self.small_len {
            return &self.small[usize::from(self.small_pos)..usize::from(self.small_len)];
        }
        match self.chunks.iter().find(|c| !c.is_empty()) {
            Some(c) => c,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the send queue");
        self.written = self.written.wrapping_add(cnt as u64);
        if cnt == self.len
            && cnt == usize::from(self.small_len - self.small_pos)
            && self.tail.capacity() == 0
        {
            // All of it was the inline frame (the usual small echo): nothing else to walk.
            self.len = 0;
            self.small_pos = 0;
            self.small_len = 0;
            return;
        }
        self.len -= cnt;
        let small = usize::from(self.small_len - self.small_pos).min(cnt);
        // `small` <= the u8 gap above.
        self.small_pos += small as u8;
        cnt -= small;
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(cnt);
                    return;
                }
                None => {
                    self.tail.advance(cnt);
                    break;
                }
            }
        }
        if self.len == 0 {
            // Everything is written: let go of the buffer so idle connections hold no memory;
            // the next batch allocates once (see `push_frame`).
            self.small_pos = 0;
            self.small_len = 0;
            if self.tail.capacity() > 0 {
                self.tail = BytesMut::new();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        if self.small_pos < self.small_len && !dst.is_empty() {
            dst[0] = IoSlice::new(self.chunk());
            n = 1;
        }
        for c in &self.chunks {
            if n == dst.len() {
                return n;
            }
            if !c.is_empty() {
                dst[n] = IoSlice::new(c);
                n += 1;
            }
        }
        if n < dst.len() && !self.tail.is_empty() {
            dst[n] = IoSlice::new(&self.tail);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn frame(payload_len: usize, mask: Option<[u8; 4]>) -> (FrameHeader, Bytes) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + payload_len) as u8).collect();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask,
            payload_len: payload_len as u64,
        };
        (header, Bytes::from(payload))
    }

    /// The bytes a frame should have on the wire.
    fn wire(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    /// Queues frames of these payload sizes (some masked) and drains the queue `step` bytes at a
    /// time, through `chunk` or through `chunks_vectored`; the bytes must come out in order.
    fn check(sizes: &[usize], step: usize, vectored: bool) {
        let mut q = SendQueue::default();
        let mut expected = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let mask = (i % 3 == 2).then_some([9, 8, 7, 6]);
            let (h, p) = frame(len, mask);
            expected.extend(wire(&h, &p));
            q.push_frame(&h, p);
        }
        assert_eq!(q.remaining(), expected.len());
        let mut out = Vec::new();
        while q.has_remaining() {
            let mut piece = Vec::new();
            if vectored {
                let mut slices = [IoSlice::new(&[]); 8];
                let n = q.chunks_vectored(&mut slices);
                assert!(n > 0);
                for s in &slices[..n] {
                    piece.extend_from_slice(s);
                }
            } else {
                piece.extend_from_slice(q.chunk());
            }
            piece.truncate(step);
            q.advance(piece.len());
            out.extend(piece);
        }
        assert_eq!(out, expected, "sizes {sizes:?}, step {step}, vectored {vectored}");
        assert_eq!((q.small_len, q.tail.capacity()), (0, 0), "a drained queue holds nothing");
    }

    #[test]
    fn send_queue_keeps_frame_order_across_inline_coalesced_and_large_frames() {
        let cases: &[&[usize]] = &[
            &[20],
            &[20, 20, 20],
            &[62, 63, 1],
            &[20, 5000, 20],
            &[5000, 20, 20],
            &[0, 125, 126, 65536, 20],
            &[20, 20, 70_000, 3, 4097],
        ];
        for sizes in cases {
            for step in [1, 3, 22, 64, 1000, usize::MAX] {
                check(sizes, step, false);
                check(sizes, step, true);
            }
        }
    }

    #[test]
    fn a_small_frame_queued_after_a_partial_write_goes_after_it() {
        let mut q = SendQueue::default();
        let (h1, p1) = frame(20, None);
        let (h2, p2) = frame(20, None);
        let mut expected = wire(&h1, &p1);
        expected.extend(wire(&h2, &p2));
        q.push_frame(&h1, p1);
        // Part of the first frame is written before the second is queued.
        let first = q.chunk()[..5].to_vec();
        q.advance(5);
        q.push_frame(&h2, p2);
        let mut out = first;
        out.extend(q.copy_to_bytes(q.remaining()));
        assert_eq!(out, expected);
    }
}
