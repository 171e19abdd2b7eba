//! What a WebSocket peer sent that its consumer (a child's stdin for `--exec`, a TCP peer for
//! the bridges) has not taken yet: a bounded queue of pieces, written out in order.
//!
//! The WebSocket is received from only while the backlog has room, so a consumer that stops
//! reading holds the peer back through TCP once [`MAX_BACKLOG`] is reached, while the
//! WebSocket's timers go on (`WebSocket::timers`): the server neither grows without bound nor
//! stops its keepalive, idle and close timers for a consumer that does not read.
//!
//! The limit bounds memory, not only payload: a piece shorter than [`COALESCE_BELOW`] (an empty
//! text message's newline, a one-byte binary message) is copied onto the end of a shared tail
//! buffer instead of taking a slot of its own, so a flood of tiny messages costs about what
//! its bytes do; every slot is charged [`PIECE_COST`] on top of its bytes as well; and the ring
//! of slots shrinks again once it is mostly empty. Larger pieces are kept as they came,
//! without a copy.
//!
//! While receiving is paused the peer's frames are not parsed, so `--idle-timeout` (which
//! counts data messages, in the protocol core) sees a client whose upload waits for a slow
//! consumer as idle, even while the backlog drains: the core has no way for the application
//! to report that kind of activity. Keepalive is not affected the same way: a peer is heard
//! again as soon as the backlog has room and reading resumes.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// Most bytes (counting [`PIECE_COST`] per slot) queued before the WebSocket stops being
/// received from. One more received piece may come on top: a piece of a large uncompressed
/// message, at most about one read of the WebSocket (~1 MiB); but a compressed message
/// (permessage-deflate, offered by default with `--exec`) is inflated and arrives whole, so it
/// can be up to `--max-message-size`.
pub(crate) const MAX_BACKLOG: usize = 1 << 20;

/// Pieces shorter than this are copied onto the tail buffer rather than queued on their own.
pub(crate) const COALESCE_BELOW: usize = 8 << 10;

/// The tail buffer is queued as a piece of its own (and a new one started) before it would
/// grow past this.
const TAIL_MAX: usize = 64 << 10;

/// What a slot of the ring costs besides its bytes, for the limit: the `Bytes` handle and the
/// allocation header behind it, rounded up.
pub(crate) const PIECE_COST: usize = 64;

/// Above this many slots of capacity, the ring is shrunk once it is mostly empty.
const RING_KEEP: usize = 64;

/// Pieces for a consumer, in order, and how many bytes they hold.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// Pieces of at least [`COALESCE_BELOW`] bytes as they came, and sealed tails.
    pieces: VecDeque<Bytes>,
    /// Small pieces after the last of `pieces`, copied together.
    tail: BytesMut,
    /// Bytes in `pieces` and `tail`.
    len: usize,
}

impl Backlog {
    /// Whether more may be received for the consumer.
    pub(crate) fn has_room(&self) -> bool {
        self.cost() < MAX_BACKLOG
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a piece (an empty one is dropped).
    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if data.len() >= COALESCE_BELOW {
            self.seal_tail();
            self.pieces.push_back(data);
            return;
        }
        if self.tail.len() + data.len() > TAIL_MAX {
            self.seal_tail();
        }
        if self.tail.capacity() == 0 {
            // Sized for a burst from the start: no reallocations while it fills.
            self.tail = BytesMut::with_capacity(TAIL_MAX);
        }
        self.tail.extend_from_slice(&data);
    }

    /// Drops everything waiting (the consumer is gone).
    pub(crate) fn clear(&mut self) {
        self.pieces = VecDeque::new();
        self.tail = BytesMut::new();
        self.len = 0;
    }

    /// Writes what is waiting until it is all written or `out` is full.
    pub(crate) fn poll_write<W>(
        &mut self,
        mut out: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        let result = loop {
            let front = match self.pieces.front() {
                Some(front) => &front[..],
                None if !self.tail.is_empty() => &self.tail[..],
                None => break Ok(()),
            };
            let n = match out.as_mut().poll_write(cx, front) {
                Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => {
                    self.shrink();
                    return Poll::Pending;
                }
            };
            self.len -= n;
            match self.pieces.front_mut() {
                Some(front) => {
                    front.advance(n);
                    if front.is_empty() {
                        self.pieces.pop_front();
                    }
                }
                None => self.tail.advance(n),
            }
        };
        self.shrink();
        Poll::Ready(result)
    }

    /// Writes everything waiting.
    pub(crate) async fn write_all<W>(&mut self, out: &mut W) -> io::Result<()>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        std::future::poll_fn(|cx| self.poll_write(Pin::new(&mut *out), cx)).await?;
        out.flush().await
    }

    /// What the backlog counts against [`MAX_BACKLOG`].
    fn cost(&self) -> usize {
        self.len + (self.pieces.len() + 1) * PIECE_COST
    }

    /// Queues the tail as a piece of its own. A mostly empty one is copied out at its size, so
    /// that a small tail sealed by a large piece after it does not pin a whole tail buffer
    /// (the buffer is then kept for what comes next).
    fn seal_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let piece = if self.tail.len() * 2 >= self.tail.capacity() {
            std::mem::take(&mut self.tail).freeze()
        } else {
            let piece = Bytes::copy_from_slice(&self.tail);
            self.tail.clear();
            piece
        };
        self.pieces.push_back(piece);
    }

    /// Lets go of memory the queue no longer needs: a large ring once it is mostly empty, the
    /// tail buffer once it is written.
    fn shrink(&mut self) {
        if self.pieces.capacity() > RING_KEEP && self.pieces.len() * 4 <= self.pieces.capacity() {
            self.pieces.shrink_to(RING_KEEP.max(self.pieces.len() * 2));
        }
        if self.tail.is_empty() && self.tail.capacity() > 0 {
            self.tail = BytesMut::new();
        }
    }

    /// Bytes of memory held (payload capacity, ring slots), for tests.
    #[cfg(test)]
    fn footprint(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum::<usize>()
            + self.tail.capacity()
            + self.pieces.capacity() * std::mem::size_of::<Bytes>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `piece` until the backlog is full; how many went in.
    fn fill(backlog: &mut Backlog, piece: &Bytes) -> usize {
        let mut pushed = 0;
        while backlog.has_room() {
            backlog.push(piece.clone());
            pushed += 1;
        }
        pushed
    }

    #[tokio::test]
    async fn pieces_come_out_in_order_through_a_slow_writer() {
        let mut backlog = Backlog::default();
        assert!(backlog.has_room());
        let big = Bytes::from(vec![b'B'; COALESCE_BELOW + 3]);
        let mut expected = Vec::new();
        for piece in
            [&b"one "[..], b"", b"two ", &big, b"three", &big, &big, b"x", b"y", &vec![b'z'; 9000]]
        {
            backlog.push(Bytes::copy_from_slice(piece));
            expected.extend_from_slice(piece);
        }
        assert_eq!(backlog.len, expected.len());
        // A pipe that takes 3 bytes at a time.
        let (mut writer, mut reader) = tokio::io::duplex(3);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got).await.unwrap();
            got
        });
        backlog.write_all(&mut writer).await.unwrap();
        assert!(backlog.is_empty() && backlog.pieces.is_empty());
        // Written out, it holds no tail buffer and at most a small ring.
        assert_eq!(backlog.tail.capacity(), 0);
        assert!(backlog.pieces.capacity() <= RING_KEEP);
        drop(writer);
        assert!(read.await.unwrap() == expected, "the bytes came out changed or reordered");
    }

    #[test]
    fn room_ends_at_the_limit() {
        let mut backlog = Backlog::default();
        backlog.push(Bytes::from(vec![0; MAX_BACKLOG - 2 * PIECE_COST - 1]));
        assert!(backlog.has_room());
        backlog.push(Bytes::from_static(b"x"));
        assert!(!backlog.has_room());
        backlog.clear();
        assert!(backlog.has_room() && backlog.is_empty());
    }

    #[test]
    fn a_million_one_byte_pieces_stay_within_the_bound() {
        let mut backlog = Backlog::default();
        let one = Bytes::from_static(b"\n");
        let pushed = fill(&mut backlog, &one);
        // About a million pushes are taken (the slots of sealed tails cost a little room)…
        assert!(pushed > MAX_BACKLOG - 2048, "only {pushed} one-byte pieces fit");
        // …in a few dozen slots, not a million, and about a megabyte of memory.
        assert!(backlog.pieces.len() <= MAX_BACKLOG / (TAIL_MAX - COALESCE_BELOW) + 1);
        let held = backlog.footprint();
        assert!(held <= MAX_BACKLOG + 2 * TAIL_MAX, "{pushed} pieces hold {held} bytes");
        eprintln!("{pushed} one-byte pieces: {} slots, {held} bytes", backlog.pieces.len());
    }

    #[test]
    fn small_pieces_between_large_ones_pin_no_tail_buffers() {
        // Worst case for the tail: each one-byte piece is sealed by the large piece after it.
        let mut backlog = Backlog::default();
        let large = Bytes::from(vec![0; COALESCE_BELOW]);
        let one = Bytes::from_static(b"x");
        while backlog.has_room() {
            backlog.push(one.clone());
            backlog.push(large.clone());
        }
        let held = backlog.footprint();
        assert!(held <= MAX_BACKLOG + 2 * TAIL_MAX, "{held} bytes held");
        assert!(backlog.pieces.len() <= 2 * MAX_BACKLOG / COALESCE_BELOW + 2);
    }

    #[tokio::test]
    async fn the_ring_shrinks_once_mostly_written() {
        let mut backlog = Backlog::default();
        fill(&mut backlog, &Bytes::from(vec![7; COALESCE_BELOW]));
        let full = backlog.pieces.capacity();
        assert!(full >= 100, "{full}");
        let total = backlog.len;
        // A writer that takes all but the last few pieces, then blocks.
        let (mut writer, mut reader) = tokio::io::duplex(total - 4 * COALESCE_BELOW);
        let pending = std::future::poll_fn(|cx| {
            Poll::Ready(backlog.poll_write(Pin::new(&mut writer), cx).is_pending())
        })
        .await;
        assert!(pending);
        assert!(backlog.pieces.len() <= 5);
        assert!(backlog.pieces.capacity() <= RING_KEEP, "{} slots kept", backlog.pieces.capacity());
        let mut all = vec![0; total];
        let drain = tokio::io::AsyncReadExt::read_exact(&mut reader, &mut all);
        let (written, read) = tokio::join!(backlog.write_all(&mut writer), drain);
        written.unwrap();
        read.unwrap();
        assert!(backlog.is_empty() && all.iter().all(|&b| b == 7));
    }
}
