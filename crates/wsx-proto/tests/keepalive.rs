//! Keepalive pings, the ping timeout and the idle timeout, driven with synthetic instants.

use std::time::{Duration, Instant};

use bytes::Buf;
use wsx_proto::frame::{FrameHeader, OpCode};
use wsx_proto::{CloseCode, Config, Connection, Message, ProtocolError, Role, State};

const SECOND: Duration = Duration::from_secs(1);

/// Decodes every frame the connection queued (server role: unmasked) and drains the queue.
fn sent(conn: &mut Connection) -> Vec<(OpCode, Vec<u8>)> {
    let out = conn.transmit();
    let bytes = out.copy_to_bytes(out.remaining());
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while let Some((h, n)) = FrameHeader::decode(rest).unwrap() {
        let len = h.payload_len as usize;
        frames.push((h.opcode, rest[n..n + len].to_vec()));
        rest = &rest[n + len..];
    }
    assert!(rest.is_empty());
    frames
}

/// A masked frame from a client.
fn from_client(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn server(config: Config) -> (Connection, Instant) {
    let t0 = Instant::now();
    let mut conn = Connection::new(Role::Server, config);
    conn.handle_timeout(t0);
    (conn, t0)
}

#[test]
fn pings_after_the_interval_and_fails_without_an_answer() {
    let config = Config::default().ping_interval(Some(20 * SECOND)).ping_timeout(Some(5 * SECOND));
    let (mut conn, t0) = server(config);
    assert_eq!(conn.poll_timeout(), Some(t0 + 20 * SECOND));
    conn.handle_timeout(t0 + 19 * SECOND);
    assert!(sent(&mut conn).is_empty(), "no ping before the interval");

    conn.handle_timeout(t0 + 20 * SECOND);
    let frames = sent(&mut conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, OpCode::Ping);
    assert_eq!(conn.poll_timeout(), Some(t0 + 25 * SECOND));

    conn.handle_timeout(t0 + 25 * SECOND);
    assert_eq!(conn.poll_message(), Some(Err(ProtocolError::KeepaliveTimeout)));
    assert_eq!(conn.poll_message(), None);
    let frames = sent(&mut conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, OpCode::Close);
    assert_eq!(u16::from_be_bytes([frames[0].1[0], frames[0].1[1]]), CloseCode::INTERNAL_ERROR.0);
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.should_close_transport());
}

#[test]
fn any_frame_from_the_peer_counts_as_an_answer() {
    let config = Config::default().ping_interval(Some(10 * SECOND)).ping_timeout(Some(5 * SECOND));
    let (mut conn, t0) = server(config);
    conn.handle_timeout(t0 + 10 * SECOND);
    assert_eq!(sent(&mut conn)[0].0, OpCode::Ping);

    // A data message (not the pong) arrives before the timeout.
    conn.handle_input(&from_client(0x1, b"busy"));
    assert_eq!(conn.poll_message(), Some(Ok(Message::text("busy"))));
    conn.handle_timeout(t0 + 12 * SECOND);
    assert_eq!(conn.poll_timeout(), Some(t0 + 22 * SECOND), "next ping re-armed from the frame");
    conn.handle_timeout(t0 + 15 * SECOND);
    assert_eq!(conn.poll_message(), None);
    assert_eq!(conn.state(), State::Open);
}

#[test]
fn pong_answers_the_ping() {
    let config = Config::default().ping_interval(Some(10 * SECOND)).ping_timeout(Some(5 * SECOND));
    let (mut conn, t0) = server(config);
    conn.handle_timeout(t0 + 10 * SECOND);
    let (_, payload) = sent(&mut conn).remove(0);
    conn.handle_input(&from_client(0xa, &payload));
    assert_eq!(conn.poll_message(), Some(Ok(Message::Pong(payload.into()))));
    conn.handle_timeout(t0 + 11 * SECOND);
    conn.handle_timeout(t0 + 16 * SECOND);
    assert_eq!(conn.state(), State::Open);
    conn.handle_timeout(t0 + 21 * SECOND);
    assert_eq!(sent(&mut conn)[0].0, OpCode::Ping, "the next ping comes an interval later");
}

#[test]
fn keepalive_can_be_turned_off() {
    let (mut conn, t0) = server(Config::default().ping_interval(None));
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_timeout(t0 + 3600 * SECOND);
    assert!(sent(&mut conn).is_empty());
    assert_eq!(conn.state(), State::Open);
}

#[test]
fn idle_timeout_closes_with_1001_and_pings_do_not_count() {
    let config = Config::default()
        .ping_interval(Some(10 * SECOND))
        .ping_timeout(Some(5 * SECOND))
        .idle_timeout(Some(30 * SECOND));
    let (mut conn, t0) = server(config);
    // The peer answers every ping, but sends no data.
    for k in 1..=2u32 {
        conn.handle_timeout(t0 + 10 * k * SECOND);
        let (op, payload) = sent(&mut conn).remove(0);
        assert_eq!(op, OpCode::Ping);
        conn.handle_input(&from_client(0xa, &payload));
        assert!(matches!(conn.poll_message(), Some(Ok(Message::Pong(_)))));
        // As a driver does after each read.
        conn.handle_timeout(t0 + 10 * k * SECOND);
    }
    conn.handle_timeout(t0 + 30 * SECOND);
    let frames = sent(&mut conn);
    let close = frames.iter().find(|(op, _)| *op == OpCode::Close).expect("a close frame");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), CloseCode::GOING_AWAY.0);
    assert_eq!(&close.1[2..], b"idle timeout");
    assert_eq!(conn.state(), State::Closing);
}

#[test]
fn data_keeps_the_idle_timer_away() {
    let config = Config::default().ping_interval(None).idle_timeout(Some(30 * SECOND));
    let (mut conn, t0) = server(config);
    conn.handle_timeout(t0 + 20 * SECOND);
    conn.send(Message::text("tick")).unwrap();
    conn.handle_timeout(t0 + 25 * SECOND);
    conn.handle_timeout(t0 + 50 * SECOND);
    assert_eq!(conn.state(), State::Open, "sent data at 20 s re-armed the timer to 55 s");
    conn.handle_timeout(t0 + 55 * SECOND);
    assert_eq!(conn.state(), State::Closing);
}

#[test]
fn the_clock_is_needed_only_with_timers_or_while_closing() {
    let (conn, _) = server(Config::default());
    assert!(conn.needs_time(), "keepalive is on by default");
    let (conn, _) = server(Config::default().ping_interval(None).idle_timeout(Some(SECOND)));
    assert!(conn.needs_time(), "an idle timeout needs the clock");

    let (mut conn, t0) = server(Config::default().ping_interval(None));
    assert!(!conn.needs_time());
    assert_eq!(conn.poll_timeout(), None);
    conn.close(None).unwrap();
    // The close timer runs from the next handle_timeout on.
    assert!(conn.needs_time());
    conn.handle_timeout(t0);
    assert!(conn.poll_timeout().is_some());
}

#[test]
fn a_ping_stuck_behind_unsent_data_still_times_out() {
    // A peer that stops reading: the driver cannot write, so nothing leaves the send queue, and
    // nothing arrives either. The ping joins the queue behind the data and never goes out; its
    // timeout must fail the connection all the same.
    let config = Config::default().ping_interval(Some(10 * SECOND)).ping_timeout(Some(5 * SECOND));
    let (mut conn, t0) = server(config);
    conn.send(Message::binary(vec![0; 1 << 20])).unwrap();
    assert!(conn.is_send_buffer_full());
    let queued = conn.buffered_amount();
    conn.handle_timeout(t0 + 10 * SECOND);
    assert!(conn.buffered_amount() > queued, "no ping queued at the interval");
    assert_eq!(conn.state(), State::Open);
    conn.handle_timeout(t0 + 15 * SECOND);
    assert_eq!(conn.poll_message(), Some(Err(ProtocolError::KeepaliveTimeout)));
    assert!(conn.should_close_transport());
}
