//! The timer contract: every call that queues a close arms its deadline at once, and
//! `poll_timeout` never hides a pending deadline. Plus the keepalive's view of a peer that reads
//! slowly, and where received payloads live. All with synthetic instants.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use wsx_proto::frame::{FrameHeader, OpCode};
use wsx_proto::{CloseCode, CloseFrame, Config, Connection, Message, ProtocolError, Role, State};

const SECOND: Duration = Duration::from_secs(1);

/// A masked frame from a client.
fn from_client(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// An unmasked frame from a server.
fn from_server(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

/// The opcodes of every frame queued, draining the queue.
fn sent_opcodes(conn: &mut Connection) -> Vec<OpCode> {
    let out = conn.transmit();
    let bytes = out.copy_to_bytes(out.remaining());
    let mut rest = &bytes[..];
    let mut ops = Vec::new();
    while let Some((h, n)) = FrameHeader::decode(rest).unwrap() {
        ops.push(h.opcode);
        rest = &rest[n + h.payload_len as usize..];
    }
    ops
}

fn started(role: Role, config: Config) -> (Connection, Instant) {
    let t0 = Instant::now();
    let mut conn = Connection::new(role, config);
    conn.handle_timeout(t0);
    (conn, t0)
}

/// The idle timeout queues a close, and the same `handle_timeout` call arms the close timeout:
/// a driver that sleeps until `poll_timeout` drops the peer after `close_timeout` without any
/// extra call.
#[test]
fn an_idle_close_arms_its_close_timeout_in_the_same_call() {
    let config = Config::default()
        .ping_interval(None)
        .idle_timeout(Some(10 * SECOND))
        .close_timeout(Some(3 * SECOND));
    let (mut conn, t0) = started(Role::Server, config);
    assert_eq!(conn.poll_timeout(), Some(t0 + 10 * SECOND));
    conn.handle_timeout(t0 + 10 * SECOND);
    assert_eq!(conn.state(), State::Closing);
    assert_eq!(sent_opcodes(&mut conn), [OpCode::Close]);
    assert_eq!(conn.poll_timeout(), Some(t0 + 13 * SECOND), "close timeout armed at once");
    conn.handle_timeout(t0 + 13 * SECOND);
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.should_close_transport());
    assert_eq!(conn.poll_timeout(), None, "nothing left to time");
}

/// `close()` has no clock: its deadline is due at once (an instant not after the last one the
/// connection saw), and the next `handle_timeout` arms it.
#[test]
fn an_application_close_is_due_at_once_and_armed_by_the_next_call() {
    let config = Config::default().ping_interval(None).close_timeout(Some(5 * SECOND));
    let (mut conn, t0) = started(Role::Server, config);
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_timeout(t0 + 7 * SECOND);
    conn.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))).unwrap();
    let due = conn.poll_timeout().expect("a pending close deadline is never hidden");
    assert!(due <= t0 + 7 * SECOND, "due now");
    conn.handle_timeout(t0 + 8 * SECOND);
    assert_eq!(conn.poll_timeout(), Some(t0 + 13 * SECOND));
    conn.handle_timeout(t0 + 12 * SECOND);
    assert_eq!(conn.state(), State::Closing);
    conn.handle_timeout(t0 + 13 * SECOND);
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.should_close_transport());
}

/// Whatever queued the close, while the connection is closing and a close timeout is set,
/// `poll_timeout` says when to come back; calling `handle_timeout` exactly then ends it.
#[test]
fn every_closing_path_keeps_a_deadline_until_the_transport_may_close() {
    type Setup = fn(&mut Connection, Instant);
    let cases: [(&str, Role, Setup); 4] = [
        ("application close", Role::Server, |c, _| c.close(None).unwrap()),
        ("close sent as a message", Role::Client, |c, _| c.send(Message::Close(None)).unwrap()),
        ("idle timeout", Role::Server, |c, t| c.handle_timeout(t + 60 * SECOND)),
        ("client after the server's close", Role::Client, |c, _| {
            c.handle_input(&from_server(0x8, &1000u16.to_be_bytes()));
            assert!(matches!(c.poll_message(), Some(Ok(Message::Close(_)))));
        }),
    ];
    for (name, role, setup) in cases {
        let config = Config::default()
            .ping_interval(None)
            .idle_timeout(Some(60 * SECOND))
            .close_timeout(Some(2 * SECOND));
        let (mut conn, t0) = started(role, config);
        setup(&mut conn, t0);
        let mut now = t0;
        for _ in 0..4 {
            if conn.should_close_transport() {
                break;
            }
            let next = conn.poll_timeout().unwrap_or_else(|| panic!("{name}: no deadline"));
            now = now.max(next);
            conn.handle_timeout(now);
        }
        assert!(conn.should_close_transport(), "{name}: still {:?}", conn.state());
        assert!(now <= t0 + 62 * SECOND + 2 * SECOND, "{name}: ended at {:?}", now - t0);
    }
}

/// A violation ends the connection at once: the transport may close as soon as the close frame
/// is written, so the core has no deadline left (the driver bounds that write).
#[test]
fn a_violation_leaves_no_deadline_behind() {
    let (mut conn, _) = started(Role::Server, Config::default());
    conn.handle_input(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']); // unmasked
    assert_eq!(conn.poll_message(), Some(Err(ProtocolError::UnmaskedFrame)));
    assert!(conn.should_close_transport());
    assert_eq!(conn.poll_timeout(), None);
}

/// A peer that reads slowly while our queue is held up by flow control is alive: the
/// transport taking our bytes proves it, even if the driver, busy writing, reads nothing.
#[test]
fn progress_of_a_blocked_send_queue_keeps_the_peer_alive() {
    let config = Config::default()
        .ping_interval(Some(10 * SECOND))
        .ping_timeout(Some(5 * SECOND))
        .write_buffer_high_water(1000);
    let (mut conn, t0) = started(Role::Server, config);
    for _ in 0..100 {
        conn.send(Message::binary(vec![0u8; 100])).unwrap();
    }
    assert!(conn.is_send_buffer_full());
    conn.handle_timeout(t0 + SECOND);
    let mut now = t0 + SECOND;
    // 40 s of a slow reader: a little progress every 4 s, never a frame from the peer.
    for _ in 0..10 {
        now += 4 * SECOND;
        conn.transmit().advance(300);
        conn.handle_timeout(now);
        assert_eq!(conn.state(), State::Open, "at {:?}", now - t0);
    }
    assert_eq!(conn.poll_message(), None);
}

/// A peer that takes nothing while our queue is blocked is pinged and then failed, as is one
/// whose only "progress" is the kernel buffering bytes while the queue was short.
#[test]
fn a_peer_that_takes_nothing_is_failed_after_the_ping_timeout() {
    let config = Config::default()
        .ping_interval(Some(10 * SECOND))
        .ping_timeout(Some(5 * SECOND))
        .write_buffer_high_water(1000);
    let (mut conn, t0) = started(Role::Server, config);
    for _ in 0..100 {
        conn.send(Message::binary(vec![0u8; 100])).unwrap();
    }
    let queued = conn.buffered_amount();
    conn.handle_timeout(t0 + 10 * SECOND);
    assert!(conn.buffered_amount() > queued, "no ping queued at the interval");
    // While the queue is full the timer looks every quarter interval; nothing moves, and the
    // ping's timeout fails the connection exactly when it is due.
    let mut now = t0 + 10 * SECOND;
    while conn.state() == State::Open {
        now = conn.poll_timeout().expect("a deadline while open");
        assert!(now <= t0 + 15 * SECOND, "still open at {:?}", now - t0);
        conn.handle_timeout(now);
    }
    assert_eq!(now, t0 + 15 * SECOND);
    assert_eq!(conn.poll_message(), Some(Err(ProtocolError::KeepaliveTimeout)));
    assert!(conn.should_close_transport());

    // Short queue: everything is taken at once (into a dead peer's kernel buffer), then silence.
    let (mut conn, t0) = started(Role::Server, Config::default().ping_timeout(Some(5 * SECOND)));
    conn.send(Message::text("hello")).unwrap();
    let n = conn.buffered_amount();
    conn.transmit().advance(n);
    conn.handle_timeout(t0 + 20 * SECOND);
    assert_eq!(sent_opcodes(&mut conn), [OpCode::Ping]);
    conn.handle_timeout(t0 + 25 * SECOND);
    assert_eq!(conn.poll_message(), Some(Err(ProtocolError::KeepaliveTimeout)));
}

/// A small received message owns its bytes: it does not point into the (possibly shared,
/// 64 KiB) buffer it arrived in. Large ones are taken without a copy.
#[test]
fn small_payloads_are_copied_out_of_the_read_buffer() {
    let mut conn = Connection::new(Role::Server, Config::default());
    let mut wire = from_client(0x2, &[7u8; 20]);
    wire.extend(from_client(0x1, b"twenty bytes of text"));
    wire.extend(from_client(0x9, b"ping"));
    wire.extend(from_client(0x2, &vec![9u8; 100_000]));
    let mut slab = BytesMut::with_capacity(256 << 10);
    slab.extend_from_slice(&wire);
    let range = slab.as_ptr() as usize..slab.as_ptr() as usize + slab.capacity();
    conn.handle_input_buf(slab);
    let mut inside = Vec::new();
    while let Some(msg) = conn.poll_message() {
        let msg = msg.unwrap();
        inside.push((msg.len(), range.contains(&(msg.payload().as_ptr() as usize))));
    }
    assert_eq!(inside, [(20, false), (20, false), (4, false), (100_000, true)]);
}

/// A peer that pings without reading cannot grow the send queue: while it is full, only the
/// latest ping's answer is kept (RFC 6455 §5.5.3), and it goes out once there is room.
#[test]
fn pings_answered_while_the_queue_is_full_keep_only_the_latest_pong() {
    let config = Config::default().ping_interval(None).write_buffer_high_water(1000);
    let mut conn = Connection::new(Role::Server, config);
    conn.send(Message::binary(vec![0u8; 2000])).unwrap();
    assert!(conn.is_send_buffer_full());
    let queued = conn.buffered_amount();
    for i in 0..1000u32 {
        conn.handle_input(&from_client(0x9, &i.to_be_bytes()));
        assert!(matches!(conn.poll_message(), Some(Ok(Message::Ping(_)))));
    }
    assert_eq!(conn.buffered_amount(), queued, "no pong queued while full");
    let n = conn.buffered_amount();
    conn.transmit().advance(n);
    let out = conn.transmit();
    let bytes = out.copy_to_bytes(out.remaining());
    assert_eq!(&bytes[..], &[0x8a, 4, 0, 0, 0x03, 0xe7], "one pong, for ping 999");
    assert!(conn.take_reply_queued());
}

/// A zero ping interval is no keepalive, not a ping at every call (a driver would spin).
#[test]
fn a_zero_ping_interval_sends_no_pings() {
    let (mut conn, t0) =
        started(Role::Server, Config::default().ping_interval(Some(Duration::ZERO)));
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_timeout(t0 + SECOND);
    assert!(sent_opcodes(&mut conn).is_empty());
}

/// A peer that keeps sending (here a ping every 3 s) while our queue stays stuck is not
/// reading: once the queue has been stalled for a ping interval its frames stop counting, and
/// keepalive fails it.
#[test]
fn a_peer_that_pings_but_never_reads_is_given_up_on() {
    let config = Config::default()
        .ping_interval(Some(10 * SECOND))
        .ping_timeout(Some(5 * SECOND))
        .write_buffer_high_water(1000);
    let (mut conn, t0) = started(Role::Server, config);
    conn.send(Message::binary(vec![0u8; 1 << 20])).unwrap();
    let mut failed_at = None;
    for k in 1..=60 {
        conn.handle_input(&from_client(0x9, b"still here"));
        while let Some(event) = conn.poll_message() {
            if event == Err(ProtocolError::KeepaliveTimeout) {
                failed_at = Some(3 * k);
            }
        }
        if failed_at.is_some() {
            break;
        }
        conn.handle_timeout(t0 + 3 * k * SECOND);
    }
    let failed_at = failed_at.expect("never given up on");
    // Stalled from the first step (3 s); frames count for one more interval, then the next ping
    // is an interval after the last one that counted, and its timeout follows; plus one 3 s
    // step to see it and one to report it.
    assert!(failed_at <= 3 + 10 + 10 + 5 + 2 * 3, "failed after {failed_at} s");
    assert!(conn.should_close_transport());
}

/// A high-water mark of 0 does not make an empty queue "full": senders would spin and pongs
/// would never be queued.
#[test]
fn a_zero_high_water_mark_still_answers_pings() {
    let mut conn = Connection::new(Role::Server, Config::default().write_buffer_high_water(0));
    assert!(!conn.is_send_buffer_full());
    conn.handle_input(&from_client(0x9, b"hi"));
    assert!(matches!(conn.poll_message(), Some(Ok(Message::Ping(_)))));
    assert_eq!(sent_opcodes(&mut conn), [OpCode::Pong]);
}

/// `Duration::MAX` as "forever" does not overflow an `Instant`.
#[test]
fn durations_too_long_for_an_instant_mean_no_deadline() {
    let config = Config::default()
        .ping_interval(Some(Duration::MAX))
        .idle_timeout(Some(Duration::MAX))
        .close_timeout(Some(Duration::MAX));
    let (mut conn, t0) = started(Role::Server, config);
    conn.handle_timeout(t0 + SECOND);
    conn.close(None).unwrap();
    conn.handle_timeout(t0 + 2 * SECOND);
    assert_eq!(conn.state(), State::Closing);
}
