//! Review tests for `WebSocket::poll_recv_event_echoing` (the in-place echo) at the tokio
//! layer: order against pongs and larger messages across split reads, keepalive and the idle
//! timeout while echoing in place, and backpressure from a client that never reads.

mod common;

use std::time::Duration;

use common::guard;
use common::raw::{
    frame, raw_client_handshake, read_frame_unguarded, FIN, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG,
    OP_TEXT,
};
use futures_util::future::poll_fn;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::{sleep, Instant};
use wsx::{Accept, Config, Event, WebSocket};

/// A server `WebSocket` over an in-memory pipe of `capacity` bytes, upgraded by a hand-written
/// client request with `config`; the client's end of the pipe.
async fn upgraded(capacity: usize, config: Config) -> (WebSocket<DuplexStream>, DuplexStream) {
    let (server_io, mut raw) = duplex(capacity);
    let (server, ()) = tokio::join!(
        wsx::accept_with(server_io, config, |_| Ok(Accept::default())),
        raw_client_handshake(&mut raw)
    );
    (server.unwrap(), raw)
}

/// The echo loop `wsx serve` runs, reduced: data events are fed back, the rest ignored.
async fn echo_server<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> usize {
    let mut n = 0;
    loop {
        let event = poll_fn(|cx| ws.poll_recv_event_echoing(cx)).await;
        match event {
            None => return n,
            Some(Ok(Event::Message(m))) => {
                if m.is_data() {
                    n += 1;
                    let _ = ws.feed(m).await;
                }
            }
            Some(Ok(Event::Chunk(_))) => panic!("no chunks expected"),
            Some(Err(_)) => {}
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(rng: &mut Rng) -> Option<[u8; 4]> {
    Some((rng.next() as u32).to_ne_bytes())
}

#[tokio::test]
async fn in_place_echo_keeps_order_with_pongs_and_large_messages_across_split_reads() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
        let config = Config::default().ping_interval(None).stream_threshold(usize::MAX);
        let (server, raw) = upgraded(8 + rng.below(3000) as usize, config).await;
        let server = tokio::spawn(echo_server(server));

        let mut input = Vec::new();
        let mut expected: Vec<(u8, Vec<u8>)> = Vec::new();
        for i in 0..300u32 {
            let roll = rng.below(20);
            let len = match roll {
                0 => 126 + rng.below(5000) as usize,
                1 => 125,
                _ => rng.below(126) as usize,
            };
            let payload: Vec<u8> = (0..len).map(|j| b'a' + ((i as usize + j) % 26) as u8).collect();
            if roll == 2 {
                let p = i.to_be_bytes().to_vec();
                input.extend(frame(FIN | OP_PING, key(&mut rng), &p));
                expected.push((FIN | OP_PONG, p));
            } else {
                let b0 = if roll % 2 == 0 { FIN | OP_TEXT } else { FIN | OP_BINARY };
                input.extend(frame(b0, key(&mut rng), &payload));
                expected.push((b0, payload));
            }
        }
        let close = 1000u16.to_be_bytes().to_vec();
        input.extend(frame(FIN | OP_CLOSE, key(&mut rng), &close));
        expected.push((FIN | OP_CLOSE, close));

        let (mut rd, mut wr) = tokio::io::split(raw);
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let step = 1 + rng.below(700) as usize;
            cuts.push(input[at..(at + step).min(input.len())].to_vec());
            at += step;
        }
        let writer = tokio::spawn(async move {
            for piece in cuts {
                wr.write_all(&piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            wr
        });
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let f = guard("an echo", read_frame_unguarded(&mut rd)).await;
            assert!(!f.masked);
            got.push((f.b0, f.payload));
        }
        let wr_back = writer.await.unwrap();
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "seed {seed}: frame {i} differs");
        }
        let mut rest = Vec::new();
        guard("EOF", rd.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty());
        drop(wr_back);
        guard("server end", server).await.unwrap();
    }
}

/// A busy client gets no ping; once it goes silent the keepalive ping still goes out within
/// 1.25 intervals, and without an answer the 1011 follows the ping timeout.
#[tokio::test(start_paused = true)]
async fn keepalive_still_fires_after_in_place_echoes() {
    let config = Config::default()
        .ping_interval(Some(Duration::from_secs(1)))
        .ping_timeout(Some(Duration::from_secs(1)))
        .idle_timeout(None);
    let (server, raw) = upgraded(64 << 10, config).await;
    let server = tokio::spawn(echo_server(server));
    let (mut rd, mut wr) = tokio::io::split(raw);
    let mut rng = Rng(7);
    for i in 0..30u8 {
        wr.write_all(&frame(FIN | OP_TEXT, key(&mut rng), &[b'a' + i % 26; 20])).await.unwrap();
        let f = guard("echo", read_frame_unguarded(&mut rd)).await;
        assert_eq!(f.opcode(), OP_TEXT, "frame {i} while busy");
        sleep(Duration::from_millis(100)).await;
    }
    let silent = Instant::now();
    let ping = guard("ping", read_frame_unguarded(&mut rd)).await;
    let after = silent.elapsed();
    assert_eq!(ping.opcode(), OP_PING);
    assert!(after <= Duration::from_millis(1300), "ping {after:?} after silence");
    let close = guard("close", read_frame_unguarded(&mut rd)).await;
    assert_eq!(close.opcode(), OP_CLOSE);
    assert_eq!(close.payload[..2], 1011u16.to_be_bytes());
    assert!(silent.elapsed() <= Duration::from_millis(2700), "{:?}", silent.elapsed());
    drop((rd, wr));
    let _ = guard("server end", server).await;
}

/// Echoed data counts as data for the idle timeout; pings alone do not.
#[tokio::test(start_paused = true)]
async fn idle_timeout_counts_in_place_echoes_and_fires_after_them() {
    let config = Config::default().ping_interval(None).idle_timeout(Some(Duration::from_secs(1)));
    let (server, raw) = upgraded(64 << 10, config).await;
    let server = tokio::spawn(echo_server(server));
    let (mut rd, mut wr) = tokio::io::split(raw);
    let mut rng = Rng(11);
    for i in 0..20u8 {
        wr.write_all(&frame(FIN | OP_BINARY, key(&mut rng), &[i; 10])).await.unwrap();
        let f = guard("echo", read_frame_unguarded(&mut rd)).await;
        assert_eq!((f.opcode(), f.payload), (OP_BINARY, vec![i; 10]), "message {i}");
        sleep(Duration::from_millis(200)).await;
    }
    let last_data = Instant::now() - Duration::from_millis(200);
    loop {
        wr.write_all(&frame(FIN | OP_PING, key(&mut rng), b"p")).await.unwrap();
        let f = guard("pong or close", read_frame_unguarded(&mut rd)).await;
        if f.opcode() == OP_CLOSE {
            assert_eq!(f.payload[..2], 1001u16.to_be_bytes());
            break;
        }
        assert_eq!(f.opcode(), OP_PONG);
        assert!(last_data.elapsed() < Duration::from_secs(2), "no idle close");
        sleep(Duration::from_millis(100)).await;
    }
    let idle = last_data.elapsed();
    assert!(idle >= Duration::from_millis(950), "closed {idle:?} after the last data");
    assert!(idle <= Duration::from_millis(1500), "closed {idle:?} after the last data");
    drop((rd, wr));
    let _ = guard("server end", server).await;
}

/// A client that sends small messages and never reads: the server stops reading once its send
/// queue is at the mark, so the client's writes stall instead of the server's memory growing.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_held_back() {
    let config = Config::default().ping_interval(None).write_buffer_high_water(16 << 10);
    let (server, raw) = upgraded(64 << 10, config).await;
    let server = tokio::spawn(echo_server(server));
    let (rd, mut wr) = tokio::io::split(raw);
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = written.clone();
    let writer = tokio::spawn(async move {
        let mut rng = Rng(3);
        for i in 0..10_000u32 {
            let f = frame(FIN | OP_TEXT, key(&mut rng), &[b'a' + (i % 26) as u8; 100]);
            wr.write_all(&f).await.unwrap();
            count.fetch_add(f.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    sleep(Duration::from_secs(5)).await;
    let n = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n < 400 << 10, "the client wrote {n} bytes without reading any");
    writer.abort();
    server.abort();
    drop(rd);
}

/// A timer first polled while the task's cooperative budget is spent still fires: tokio's
/// `Sleep` then returns `Pending` without registering, so a driver that took that poll as
/// "armed" would never poll it again and the keepalive ping would never go out.
#[tokio::test(start_paused = true)]
async fn a_timer_first_polled_with_the_budget_spent_still_fires() {
    let config = Config::default()
        .ping_interval(Some(Duration::from_millis(500)))
        .ping_timeout(None)
        .idle_timeout(None);
    let (server, mut raw) = upgraded(64 << 10, config).await;
    let mut ws = server;
    // More ready items than a task's budget (128), so every poll spends it all first.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..2000 {
        tx.send(()).unwrap();
    }
    let server = tokio::spawn(async move {
        poll_fn(|cx| {
            while let std::task::Poll::Ready(Some(())) = rx.poll_recv(cx) {}
            ws.poll_timers(cx)
        })
        .await;
        drop(tx);
    });
    let ping = tokio::time::timeout(Duration::from_secs(5), read_frame_unguarded(&mut raw))
        .await
        .expect("no keepalive ping within 5 s: the timer never fired");
    assert_eq!(ping.opcode(), OP_PING);
    server.abort();
}

/// A transport that always has another small masked frame ready and takes every write: it
/// never pends, and tokio's budget does not apply to it.
struct Flood {
    frame: Vec<u8>,
    written: usize,
    /// Reads since the test last looked: a call that never returns would run past the cap.
    reads: usize,
}

impl AsyncRead for Flood {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.reads += 1;
        assert!(self.reads < 100_000, "the receive loop never handed control back");
        // Whole frames only, so that every read is echoed in place and none makes an event.
        let frame = std::mem::take(&mut self.frame);
        while buf.remaining() >= frame.len() {
            buf.put_slice(&frame);
        }
        self.frame = frame;
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Flood {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.written += buf.len();
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Under a flood of small messages that are all echoed in place, `poll_recv_event_echoing`
/// still returns now and then (`Pending`, with the task woken), so that the caller can look
/// at a shutdown flag between calls, and what it echoed was written.
#[tokio::test]
async fn echoing_in_place_hands_control_back_under_a_flood() {
    let frame = frame(FIN | OP_TEXT, Some([1, 2, 3, 4]), b"twenty bytes of text");
    let io = Flood { frame, written: 0, reads: 0 };
    let mut ws = WebSocket::from_raw(io, wsx::Role::Server, Config::default());
    let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Flag(woken.clone())));
    let mut cx = std::task::Context::from_waker(&waker);
    for call in 0..3 {
        woken.store(false, std::sync::atomic::Ordering::SeqCst);
        let poll = ws.poll_recv_event_echoing(&mut cx);
        assert!(poll.is_pending(), "call {call}: {poll:?}");
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst), "call {call}: not woken");
    }
    // Every echo is a 22-byte frame, and some went out.
    let written = ws.get_ref().written;
    assert!(written >= 22 * 16, "{written} bytes written");
    assert_eq!(written % 22, 0, "{written} bytes written");
}
