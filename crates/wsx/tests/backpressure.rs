//! Timers under backpressure: a peer that stops reading fills the transport and then the send
//! queue, and whatever the application is waiting in — `recv`, `send`, `feed`, either half of a
//! split socket — keepalive, the idle timeout and the close timeout must still run, so the
//! connection ends instead of waiting forever.
//!
//! A server `WebSocket` over a `tokio::io::duplex` with a 1 KiB buffer: a 1 MiB message queued
//! for a peer that does not read keeps the queue above its high-water mark. Tokio's clock is
//! paused, so it jumps straight to the next timer: the elapsed (virtual) times asserted here are
//! exact, and a hang turns into a failure at [`GUARD`] rather than a stuck test.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::raw::{frame, read_frame, FIN, MASK, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG};
use common::{guard, GUARD};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use wsx::{CloseCode, CloseFrame, Config, Error, Message, ProtocolError, Role, WebSocket};

const PING_INTERVAL: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// When the idle timeout closes at the latest after the last data message: the core's timer
/// looks at activity every quarter of the idle timeout while the connection is busy, and dates
/// it exactly when it comes after a quiet spell, so a quarter more at most.
const IDLE_CLOSE_BY: Duration = Duration::from_millis(1250);
/// The paused clock's timers fire at their deadline to the millisecond; this only absorbs that.
const SLACK: Duration = Duration::from_millis(100);
/// Bytes each way in the duplex: the peer's unread bytes stop the server's writes there.
const DUPLEX: usize = 1024;
/// Far above the send queue's 128 KiB high-water mark.
const BIG: usize = 1 << 20;

#[tokio::test(start_paused = true)]
async fn recv_blocked_by_a_peer_that_does_not_read_ends_after_keepalive_and_the_close_timeout() {
    let (mut ws, mut peer) = server(keepalive());
    let start = Instant::now();
    // Below the mark when fed, so queued at once; the application then waits in recv().
    ws.feed(big()).await.unwrap();

    let got = timeout(GUARD, drain(&mut ws)).await;
    let waited = start.elapsed();
    let got = got.unwrap_or_else(|_| {
        panic!("recv() still waiting {GUARD:?} after the peer stopped reading (paused clock)")
    });
    assert!(
        matches!(got[..], [Err(Error::Protocol(ProtocolError::KeepaliveTimeout))]),
        "expected the keepalive failure, then the end: {got:?}"
    );
    let limit = PING_INTERVAL + PING_TIMEOUT + CLOSE_TIMEOUT;
    assert!(waited <= limit + SLACK, "the stream ended {waited:?} after the peer went silent");
    // The transport was shut down: the peer finds the end after what fitted in the duplex.
    assert_transport_ended(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn send_to_a_peer_that_does_not_read_fails_after_keepalive_and_the_close_timeout() {
    let (mut ws, _peer) = server(keepalive());
    let start = Instant::now();
    let sent = timeout(GUARD, ws.send(big())).await;
    let waited = start.elapsed();
    let sent = sent.unwrap_or_else(|_| {
        panic!("send() still waiting {GUARD:?} after the peer stopped reading (paused clock)")
    });
    assert!(sent.is_err(), "send() to a peer that never reads succeeded");
    let limit = PING_INTERVAL + PING_TIMEOUT + CLOSE_TIMEOUT;
    assert!(waited <= limit + SLACK, "send() failed only {waited:?} after the peer went silent");
    // The connection is over: the stream ends without waiting again.
    let rest = timeout(CLOSE_TIMEOUT + SLACK, drain(&mut ws)).await;
    let rest = rest.expect("recv() after the failed send waited again");
    assert!(rest.iter().all(Result::is_err), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn feed_into_a_full_queue_fails_after_keepalive_and_the_transport_is_closed() {
    let (mut ws, mut peer) = server(keepalive());
    let start = Instant::now();
    ws.feed(big()).await.unwrap();
    // Now above the mark: this feed waits for room that never comes.
    let fed = timeout(GUARD, ws.feed(big())).await;
    let waited = start.elapsed();
    let fed = fed.unwrap_or_else(|_| {
        panic!("feed() still waiting {GUARD:?} after the peer stopped reading (paused clock)")
    });
    assert!(fed.is_err(), "feed() into a queue that never drains succeeded");
    assert!(
        waited <= PING_INTERVAL + PING_TIMEOUT + SLACK,
        "feed() failed only {waited:?} after the peer went silent"
    );
    // Receiving finishes the close: the transport goes within the close timeout.
    let rest = timeout(GUARD, drain(&mut ws)).await.expect("recv() after the failed feed hung");
    assert!(rest.iter().all(Result::is_err), "{rest:?}");
    let waited = start.elapsed();
    let limit = PING_INTERVAL + PING_TIMEOUT + CLOSE_TIMEOUT;
    assert!(waited <= limit + SLACK, "the stream ended {waited:?} after the peer went silent");
    assert_transport_ended(&mut peer).await;
}

/// A peer that was busy (so the timer checks every quarter interval instead of dating each
/// message) stops reading and goes silent while the application is blocked sending: the
/// checks go on in that wait, and keepalive gives up on it within 1.25 intervals plus the ping
/// timeout of its last frame.
#[tokio::test(start_paused = true)]
async fn a_busy_peer_that_stops_reading_while_we_are_blocked_is_given_up_on() {
    let (mut ws, mut peer) = server(keepalive());
    let mut last_input = Instant::now();
    // 3 s of traffic: a message from the peer every 50 ms, echoed, and read by the peer.
    for _ in 0..60 {
        peer.write_all(&frame(FIN | OP_BINARY, Some(MASK), b"busy")).await.unwrap();
        last_input = Instant::now();
        let message = guard("a message", ws.recv()).await.unwrap().unwrap();
        ws.send(message).await.unwrap();
        assert_eq!(read_frame(&mut peer).await.opcode(), OP_BINARY);
        sleep(Duration::from_millis(50)).await;
    }
    // The peer stops reading: the first feed fills the queue, the second waits for room.
    ws.feed(big()).await.unwrap();
    let fed = timeout(GUARD, ws.feed(big())).await.expect("feed() never gave up on the peer");
    assert!(fed.is_err(), "feed() into a queue that never drains succeeded");
    let waited = last_input.elapsed();
    let limit = PING_INTERVAL * 5 / 4 + PING_TIMEOUT;
    assert!(waited <= limit + SLACK, "given up on {waited:?} after the peer's last frame");
    assert!(waited >= PING_INTERVAL + PING_TIMEOUT, "given up on after only {waited:?}");
    let rest = timeout(GUARD, drain(&mut ws)).await.expect("recv() after the failed feed hung");
    assert!(
        matches!(rest[..], [Err(Error::Protocol(ProtocolError::KeepaliveTimeout))]),
        "expected the keepalive failure, then the end: {rest:?}"
    );
    assert!(last_input.elapsed() <= limit + CLOSE_TIMEOUT + SLACK);
    assert_transport_ended(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn split_reader_answers_pings_and_the_close_while_the_writer_is_held_up() {
    let config = Config::default().ping_interval(None).close_timeout(Some(CLOSE_TIMEOUT));
    let (ws, mut peer) = server(config);
    let (mut read, mut write) = ws.split();
    let writer = tokio::spawn(async move { write.send(big()).await });
    // The paused clock moves only once every task waits: by then the writer is held up.
    sleep(Duration::from_millis(10)).await;
    assert!(!writer.is_finished(), "a peer that does not read did not hold the writer up");

    peer.write_all(&frame(FIN | OP_PING, Some(MASK), b"still there?")).await.unwrap();
    let ping = timeout(GUARD, read.recv()).await.unwrap_or_else(|_| {
        panic!("the read half stopped receiving while the writer was held up ({GUARD:?})")
    });
    assert_eq!(ping.unwrap().unwrap(), Message::Ping(Bytes::from_static(b"still there?")));

    // The peer reads again: the writer's message, then the pong.
    let data = read_frame(&mut peer).await;
    assert_eq!((data.opcode(), data.payload.len()), (OP_BINARY, BIG));
    let pong = read_frame(&mut peer).await;
    assert_eq!((pong.opcode(), pong.payload.as_slice()), (OP_PONG, &b"still there?"[..]));
    guard("writer", writer).await.unwrap().unwrap();

    // The peer's close is read and echoed, and the server closes the transport.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    peer.write_all(&frame(FIN | OP_CLOSE, Some(MASK), &close)).await.unwrap();
    let got = guard("close", read.recv()).await.unwrap().unwrap();
    assert_eq!(got, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))));
    let echo = read_frame(&mut peer).await;
    assert_eq!((echo.opcode(), echo.payload.as_slice()), (OP_CLOSE, &1000u16.to_be_bytes()[..]));
    assert!(guard("end", read.recv()).await.is_none());
    assert_transport_ended(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn split_halves_end_at_the_close_timeout_when_the_peer_closes_without_reading() {
    let config = Config::default().ping_interval(None).close_timeout(Some(CLOSE_TIMEOUT));
    let (ws, mut peer) = server(config);
    let (mut read, mut write) = ws.split();
    let writer = tokio::spawn(async move { write.send(big()).await });
    sleep(Duration::from_millis(10)).await;
    assert!(!writer.is_finished(), "a peer that does not read did not hold the writer up");

    // The peer says goodbye but never reads: the echo cannot go out.
    peer.write_all(&frame(FIN | OP_CLOSE, Some(MASK), &1000u16.to_be_bytes())).await.unwrap();
    let got = timeout(GUARD, read.recv()).await.unwrap_or_else(|_| {
        panic!("the read half did not read the peer's close while the writer was held up")
    });
    assert_eq!(got.unwrap().unwrap(), Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    let closed = Instant::now();

    let end = timeout(GUARD, read.recv()).await.expect("the read half never ended");
    assert!(end.is_none(), "{end:?}");
    let sent = timeout(GUARD, writer).await.expect("the writer still waits").unwrap();
    assert!(sent.is_err(), "the held-up send succeeded though the peer never read");
    let waited = closed.elapsed();
    assert!(
        waited <= CLOSE_TIMEOUT + SLACK,
        "the halves ended {waited:?} after the peer's close; the close timeout is {CLOSE_TIMEOUT:?}"
    );
    assert_transport_ended(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_under_backpressure_queues_1001_and_closes_after_the_close_timeout() {
    let config = Config::default()
        .ping_interval(None)
        .idle_timeout(Some(IDLE_TIMEOUT))
        .close_timeout(Some(CLOSE_TIMEOUT));
    let (mut ws, mut peer) = server(config);
    let start = Instant::now();
    ws.feed(big()).await.unwrap();
    // The peer reads only after the idle timeout has passed (halfway through the close
    // timeout): it then finds the message, the 1001 queued behind it, and the end of the
    // stream once the close timeout counted from the idle timeout, not from its reading, runs out.
    let peer_reads_late = async {
        sleep_until(start + IDLE_CLOSE_BY + CLOSE_TIMEOUT / 2).await;
        let data = read_frame(&mut peer).await;
        let close = read_frame(&mut peer).await;
        let mut rest = Vec::new();
        guard("EOF", peer.read_to_end(&mut rest)).await.unwrap();
        (data, close, rest, start.elapsed())
    };
    let (got, (data, close, rest, ended)) =
        tokio::join!(timeout(GUARD, drain(&mut ws)), peer_reads_late);

    let got = got.expect("recv() never ended");
    assert!(got.iter().all(Result::is_err), "{got:?}");
    assert_eq!((data.opcode(), data.payload.len()), (OP_BINARY, BIG));
    assert_eq!(close.opcode(), OP_CLOSE);
    assert_eq!(close.payload[..2], CloseCode::GOING_AWAY.0.to_be_bytes());
    assert_eq!(&close.payload[2..], b"idle timeout");
    assert!(rest.is_empty(), "{} bytes after the close frame", rest.len());
    assert!(
        ended <= IDLE_CLOSE_BY + CLOSE_TIMEOUT + SLACK,
        "the transport ended {ended:?} after the last data: the idle timeout ({IDLE_TIMEOUT:?}) \
         did not fire while the send queue was full"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_a_connection_whose_peer_never_reads() {
    let config = Config::default()
        .ping_interval(None)
        .idle_timeout(Some(IDLE_TIMEOUT))
        .close_timeout(Some(CLOSE_TIMEOUT));
    let (mut ws, mut peer) = server(config);
    let start = Instant::now();
    ws.feed(big()).await.unwrap();
    let got = timeout(GUARD, drain(&mut ws)).await.unwrap_or_else(|_| {
        panic!("recv() still waiting {GUARD:?} after the peer stopped reading (paused clock)")
    });
    let waited = start.elapsed();
    assert!(got.iter().all(Result::is_err), "{got:?}");
    assert!(
        waited <= IDLE_CLOSE_BY + CLOSE_TIMEOUT + SLACK,
        "the stream ended {waited:?} after the last data"
    );
    assert_transport_ended(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn timers_without_receiving_ping_and_give_up_on_an_unheard_peer() {
    let (mut ws, mut peer) = server(keepalive());
    let start = Instant::now();
    // The application has stopped receiving (its consumer is full) and only runs the timers:
    // the keepalive ping still goes out.
    let ping = async {
        let ping = read_frame(&mut peer).await;
        assert_eq!(ping.opcode(), OP_PING);
        // The peer answers, but the application reads nothing, so the pong is not heard.
        peer.write_all(&frame(FIN | OP_PONG, Some(MASK), &ping.payload)).await.unwrap();
        start.elapsed()
    };
    let (pinged_after, ()) = tokio::join!(ping, async {
        timeout(GUARD, ws.timers()).await.expect("timers() never gave up on the peer")
    });
    let waited = start.elapsed();
    assert_eq!(pinged_after, PING_INTERVAL, "the ping went out after {pinged_after:?}");
    assert!(waited <= PING_INTERVAL + PING_TIMEOUT + SLACK, "gave up after {waited:?}");
    // The receive loop then ends the connection at once: the pong (read now) is too late.
    let got = timeout(CLOSE_TIMEOUT + SLACK, drain(&mut ws)).await.expect("recv() waited again");
    assert!(
        matches!(got[..], [.., Err(Error::Protocol(ProtocolError::KeepaliveTimeout))]),
        "expected the keepalive failure, then the end: {got:?}"
    );
    let close = read_frame(&mut peer).await;
    assert_eq!(close.opcode(), OP_CLOSE);
    assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1011);
    assert_transport_ended(&mut peer).await;
}

#[tokio::test(start_paused = true)]
async fn timers_pend_without_a_deadline_and_leave_the_connection_alone() {
    let (mut ws, mut peer) = server(Config::default().ping_interval(None));
    // No keepalive or idle timer: nothing to fire, so timers() pends (for ever, on a paused
    // clock that jumps straight to any timer there were).
    assert!(timeout(Duration::from_secs(3600), ws.timers()).await.is_err());
    // And the connection is untouched: a message still arrives.
    peer.write_all(&frame(FIN | OP_BINARY, Some(MASK), b"still open")).await.unwrap();
    match guard("a message after timers()", ws.recv()).await {
        Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"still open"),
        other => panic!("expected the message, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Keepalive at 1 s with a 1 s ping timeout, and a 1 s close timeout.
fn keepalive() -> Config {
    Config::default()
        .ping_interval(Some(PING_INTERVAL))
        .ping_timeout(Some(PING_TIMEOUT))
        .close_timeout(Some(CLOSE_TIMEOUT))
}

/// A server socket (the handshake is taken as done) and its peer's end of the duplex.
fn server(config: Config) -> (WebSocket<DuplexStream>, DuplexStream) {
    let (io, peer) = duplex(DUPLEX);
    (WebSocket::from_raw(io, Role::Server, config), peer)
}

fn big() -> Message {
    Message::binary(vec![0x5a; BIG])
}

/// Everything received until the end of the stream.
async fn drain(ws: &mut WebSocket<DuplexStream>) -> Vec<Result<Message, Error>> {
    let mut got = Vec::new();
    while let Some(item) = ws.recv().await {
        got.push(item);
    }
    got
}

/// The server shut the transport down: the peer reads what was left in the duplex, then EOF.
async fn assert_transport_ended(peer: &mut DuplexStream) {
    let mut rest = Vec::new();
    let read = timeout(GUARD, peer.read_to_end(&mut rest)).await;
    let read = read.expect("the server never closed the transport");
    read.expect("reading to the end of the transport");
}
