//! Messages an application keeps must not keep the receive path's buffers alive: a 20-byte
//! message held in a `Vec` should cost about 20 bytes, not the 64 KiB read slab it was read
//! into, nor the 16 KiB read buffer of a frame that arrived in two reads.
//!
//! A server-side `WebSocket` reads 100,000 masked 20-byte messages from an in-memory transport
//! that delivers the bytes on a schedule of read sizes; live heap bytes are counted by a global
//! allocator that wraps the system one in this test binary.

mod common;

#[path = "../../wsx-proto/tests/common/live_heap.rs"]
mod live_heap;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use common::raw::{frame, FIN, MASK, OP_BINARY};
use live_heap::{alone, live};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wsx::{Config, Message, Role, WebSocket};

const MESSAGES: usize = 100_000;
const PAYLOAD: usize = 20;
/// Live heap bytes the kept messages may hold, all of them together: a few MB, not gigabytes.
const BOUND: isize = 16 << 20;

#[test]
fn kept_messages_split_after_their_first_byte_hold_only_their_bytes() {
    // Each frame arrives in two reads: its first byte (into the shared read slab), then the
    // rest (into the connection's read buffer, which reserves 16 KiB for it).
    let frame_len = wire_frame_len();
    kept_messages_hold_only_their_bytes("1 byte, then the rest", &[1, frame_len - 1])
}

#[test]
fn kept_messages_split_after_their_header_hold_only_their_bytes() {
    // The header (2 bytes and the masking key) in one read, the payload in the next.
    let frame_len = wire_frame_len();
    kept_messages_hold_only_their_bytes("header, then payload", &[6, frame_len - 6])
}

#[test]
fn kept_messages_read_one_frame_at_a_time_hold_only_their_bytes() {
    kept_messages_hold_only_their_bytes("one frame per read", &[wire_frame_len()])
}

#[test]
fn kept_messages_read_many_frames_at_a_time_hold_only_their_bytes() {
    // 64 KiB reads: about 2,500 frames each, and a frame cut at every read's end.
    kept_messages_hold_only_their_bytes("64 KiB reads", &[64 << 10])
}

/// Receives [`MESSAGES`] messages delivered with read sizes cycling through `reads`, keeps
/// them all, and asserts that the live heap grew by less than [`BOUND`]. It checks as it goes
/// and stops at the first excess, so a failing run never allocates gigabytes.
fn kept_messages_hold_only_their_bytes(what: &str, reads: &[usize]) {
    let _alone = alone();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(receive_and_keep(what, reads));
}

async fn receive_and_keep(what: &str, reads: &[usize]) {
    let wire: Vec<u8> =
        (0..MESSAGES).flat_map(|i| frame(FIN | OP_BINARY, Some(MASK), &payload(i))).collect();
    let transport = Scripted { wire, pos: 0, reads: reads.to_vec(), next: 0 };
    // No keepalive: nothing but the messages goes either way.
    let config = Config::default().ping_interval(None);
    let mut ws = WebSocket::from_raw(transport, Role::Server, config);
    let mut kept = Vec::with_capacity(MESSAGES);

    let before = live();
    for i in 0..MESSAGES {
        let msg = ws.recv().await.expect("the stream ended early").expect("a message");
        kept.push(msg);
        if i % 1000 == 999 {
            let grown = live() - before;
            assert!(
                grown < BOUND,
                "{what}: {} kept 20-byte messages hold {grown} bytes of heap, {} bytes each",
                i + 1,
                grown / (i as isize + 1)
            );
        }
    }
    let grown = live() - before;
    eprintln!(
        "{what}: {MESSAGES} kept 20-byte messages hold {:.2} MB of heap, {} bytes each",
        grown as f64 / 1e6,
        grown / MESSAGES as isize
    );
    assert!(grown < BOUND, "{what}: {grown} bytes for {MESSAGES} kept messages");
    for (i, msg) in kept.iter().enumerate() {
        assert_eq!(*msg, Message::binary(payload(i)), "{what}: message {i}");
    }
}

/// The payload of message `i`: its number, then filler.
fn payload(i: usize) -> Vec<u8> {
    let mut p = vec![0xa5; PAYLOAD];
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

/// Bytes of one masked 20-byte frame on the wire.
fn wire_frame_len() -> usize {
    frame(FIN | OP_BINARY, Some(MASK), &payload(0)).len()
}

/// A transport that delivers `wire` in reads of the sizes in `reads`, in a cycle, and takes
/// (and discards) every write. Never pending: each read is ready at once.
struct Scripted {
    wire: Vec<u8>,
    pos: usize,
    reads: Vec<usize>,
    next: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let want = this.reads[this.next % this.reads.len()];
        this.next += 1;
        let n = want.min(buf.remaining()).min(this.wire.len() - this.pos);
        buf.put_slice(&this.wire[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
