//! What a WebSocket peer sent that its consumer (a child's stdin for `--exec`, a TCP peer for
//! the bridges) has not taken yet: a bounded queue of pieces, written out in order.
//!
//! The WebSocket is received from only while the backlog has room, so a consumer that stops
//! reading holds the peer back through TCP once [`MAX_BACKLOG`] is reached, while the
//! WebSocket's timers go on (`WebSocket::timers`): the server neither grows without bound nor
//! stops its keepalive, idle and close timers for a consumer that does not read.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// Most bytes queued before the WebSocket stops being received from. One more received piece
/// may come on top (a message or chunk is at most about one read of the WebSocket, ~1 MiB).
pub(crate) const MAX_BACKLOG: usize = 1 << 20;

/// Pieces for a consumer, in order, and how many bytes they hold.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    pieces: VecDeque<Bytes>,
    len: usize,
}

impl Backlog {
    /// Whether more may be received for the consumer.
    pub(crate) fn has_room(&self) -> bool {
        self.len < MAX_BACKLOG
    }

    /// Queues a piece (an empty one is dropped).
    pub(crate) fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.pieces.push_back(data);
        }
    }

    /// Drops everything waiting (the consumer is gone).
    pub(crate) fn clear(&mut self) {
        self.pieces = VecDeque::new();
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
        while let Some(front) = self.pieces.front_mut() {
            let n = ready!(out.as_mut().poll_write(cx, front))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            front.advance(n);
            self.len -= n;
            if front.is_empty() {
                self.pieces.pop_front();
            }
        }
        if self.pieces.capacity() > 64 {
            // After a burst of small pieces: an idle connection keeps no large ring.
            self.pieces = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Writes everything waiting.
    pub(crate) async fn write_all<W>(&mut self, out: &mut W) -> io::Result<()>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        while let Some(piece) = self.pieces.pop_front() {
            self.len -= piece.len();
            out.write_all(&piece).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_come_out_in_order_through_a_slow_writer() {
        let mut backlog = Backlog::default();
        assert!(backlog.has_room());
        for piece in [&b"one "[..], b"", b"two ", b"three"] {
            backlog.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(backlog.len, 13);
        // A pipe that takes 3 bytes at a time.
        let (mut writer, mut reader) = tokio::io::duplex(3);
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut got).await.unwrap();
            got
        });
        std::future::poll_fn(|cx| backlog.poll_write(Pin::new(&mut writer), cx)).await.unwrap();
        assert_eq!(backlog.len, 0);
        drop(writer);
        assert_eq!(read.await.unwrap(), b"one two three");
    }

    #[test]
    fn room_ends_at_the_limit() {
        let mut backlog = Backlog::default();
        backlog.push(Bytes::from(vec![0; MAX_BACKLOG - 1]));
        assert!(backlog.has_room());
        backlog.push(Bytes::from_static(b"x"));
        assert!(!backlog.has_room());
        backlog.clear();
        assert!(backlog.has_room() && backlog.len == 0);
    }
}
