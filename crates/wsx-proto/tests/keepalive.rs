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

/// Drives a connection as the tokio driver does: `handle_timeout` at every instant
/// `poll_timeout` asks for, and after input or a send only while `wants_clock` is true.
/// Records when pings and closes went out, how often the clock was read for activity and how
/// often the timer fired.
struct Driver {
    conn: Connection,
    now: Instant,
    pings: Vec<Instant>,
    closed_at: Option<Instant>,
    clock_reads: usize,
    wakes: usize,
    /// The peer reads what is sent: the queue is drained after every step.
    peer_reads: bool,
}

impl Driver {
    fn new(config: Config) -> Self {
        let (conn, now) = server(config);
        Self {
            conn,
            now,
            pings: Vec::new(),
            closed_at: None,
            clock_reads: 0,
            wakes: 0,
            peer_reads: true,
        }
    }

    /// Fires every deadline up to `t`, then stands at `t`.
    fn advance_to(&mut self, t: Instant) {
        while let Some(deadline) = self.conn.poll_timeout() {
            if deadline > t || self.closed_at.is_some() {
                break;
            }
            self.now = self.now.max(deadline);
            self.wakes += 1;
            let queued = self.conn.buffered_amount();
            self.conn.handle_timeout(self.now);
            if !self.peer_reads && self.conn.buffered_amount() > queued {
                // Queued behind what the peer does not take: a ping while open, else a close.
                match self.conn.state() {
                    State::Open => self.pings.push(self.now),
                    _ => self.closed_at = self.closed_at.or(Some(self.now)),
                }
            }
            self.collect();
        }
        self.now = t;
    }

    /// The peer's frame arrives at `t`.
    fn input(&mut self, t: Instant, frame: &[u8]) {
        self.advance_to(t);
        self.conn.handle_input(frame);
        while self.conn.poll_message().is_some() {}
        self.date();
        self.collect();
    }

    /// The application sends a message at `t`.
    fn send(&mut self, t: Instant) {
        self.advance_to(t);
        self.conn.send(Message::text("out")).unwrap();
        self.date();
        self.collect();
    }

    fn date(&mut self) {
        if self.conn.wants_clock() {
            self.clock_reads += 1;
            self.conn.handle_timeout(self.now);
        }
    }

    fn collect(&mut self) {
        if !self.peer_reads {
            return;
        }
        for (op, _) in sent(&mut self.conn) {
            match op {
                OpCode::Ping => self.pings.push(self.now),
                OpCode::Close if self.closed_at.is_none() => self.closed_at = Some(self.now),
                _ => {}
            }
        }
    }
}

const MS: Duration = Duration::from_millis(1);

/// A connection busy for a minute (a message every 70 ms, so the last one falls at every
/// phase of the timer's quarter-interval checks), then silent: the ping comes between one
/// interval and 1.25 intervals after its last input, with one clock read for the whole busy
/// spell and about four timer wake-ups per interval.
#[test]
fn a_busy_then_silent_connection_pings_within_a_quarter_interval_of_the_interval() {
    let interval = 20 * SECOND;
    for last in [60_000, 60_010, 61_330, 62_500, 64_990, 65_000, 66_660] {
        let config = Config::default().ping_interval(Some(interval)).ping_timeout(None);
        let mut d = Driver::new(config);
        let t0 = d.now;
        let mut t = 0;
        while t <= last {
            d.input(t0 + t * MS, &from_client(0x1, b"busy"));
            t += 70;
        }
        let last_input = t0 + (t - 70) * MS;
        assert!(d.pings.is_empty(), "pinged a busy connection at {:?}", d.pings[0] - t0);
        d.advance_to(last_input + 2 * interval);
        let ping = d.pings.first().copied().expect("no ping after the connection went silent");
        let silence = ping - last_input;
        assert!(
            silence >= interval && silence <= interval * 5 / 4,
            "last input at {:?}: ping after {silence:?} of silence",
            last_input - t0
        );
        assert_eq!(d.clock_reads, 1, "the clock is read for the first input only");
        let busy_intervals = (last_input - t0).as_secs() as usize / 20 + 1;
        assert!(d.wakes <= 4 * (busy_intervals + 2), "{} timer wake-ups", d.wakes);
    }
}

/// The idle timeout alike, for data received or sent: it closes between `idle_timeout` and
/// 1.25 times that after the last data message, never before.
#[test]
fn a_busy_then_idle_connection_closes_within_a_quarter_of_the_idle_timeout() {
    let idle = 30 * SECOND;
    for (last, send) in [(40_000, false), (41_111, true), (47_400, false), (47_500, true)] {
        let config = Config::default().ping_interval(None).idle_timeout(Some(idle));
        let mut d = Driver::new(config);
        let t0 = d.now;
        let mut t = 0;
        while t <= last {
            match send {
                true => d.send(t0 + t * MS),
                false => d.input(t0 + t * MS, &from_client(0x2, b"data")),
            }
            t += 90;
        }
        let last_data = t0 + (t - 90) * MS;
        // The peer keeps pinging: control frames are not data, and do not keep it open.
        for k in 1..=10 {
            d.input(last_data + k * 3 * SECOND, &from_client(0x9, b"hi"));
        }
        d.advance_to(last_data + 2 * idle);
        let closed = d.closed_at.expect("never closed for idleness");
        let silence = closed - last_data;
        assert!(
            silence >= idle && silence <= idle * 5 / 4,
            "last data at {:?}: closed after {silence:?}",
            last_data - t0
        );
        assert_eq!(d.conn.state(), State::Closing);
    }
}

/// An idle connection whose peer answers every ping wakes once per interval, for the ping,
/// and pings every interval after the answer; the answer costs one clock read.
#[test]
fn an_idle_connection_wakes_once_per_interval() {
    let interval = 20 * SECOND;
    let config = Config::default().ping_interval(Some(interval)).ping_timeout(Some(interval));
    let mut d = Driver::new(config);
    let t0 = d.now;
    let rtt = 30 * MS;
    for k in 1..=10usize {
        d.advance_to(t0 + k as u32 * (interval + rtt));
        assert_eq!(d.pings.len(), k, "pings by {:?}", d.now - t0);
        let ping = d.pings[k - 1];
        let mut payload = [0u8; 8];
        payload.copy_from_slice(&(k as u64).to_be_bytes());
        d.input(ping + rtt, &from_client(0xa, &payload));
        if k > 1 {
            let gap = ping - d.pings[k - 2];
            assert_eq!(gap, interval + rtt, "a ping an interval after the last answer");
        }
    }
    assert_eq!(d.wakes, 10, "one timer wake-up per ping");
    assert_eq!(d.clock_reads, 10, "one clock read per answer");
    assert_eq!(d.conn.state(), State::Open);
}

/// Busy, then blocked: the peer stops reading and goes silent while our queue is full. The
/// quarter-interval checks keep running, and keepalive fails it within 1.25 intervals plus the
/// ping timeout of its last input.
#[test]
fn a_busy_peer_that_stops_reading_is_failed_by_the_timers() {
    let interval = 10 * SECOND;
    let timeout = 5 * SECOND;
    let config = Config::default()
        .ping_interval(Some(interval))
        .ping_timeout(Some(timeout))
        .write_buffer_high_water(1000);
    let mut d = Driver::new(config);
    let t0 = d.now;
    for t in (0..30_000).step_by(50) {
        d.input(t0 + t * MS, &from_client(0x2, b"data"));
        // Echoed (and written: the peer reads).
        d.send(t0 + t * MS);
    }
    let last_input = t0 + 29_950 * MS;
    // The peer stops reading: our queue fills and stays full.
    d.peer_reads = false;
    d.conn.send(Message::binary(vec![0u8; 1 << 20])).unwrap();
    assert!(d.conn.is_send_buffer_full());
    d.advance_to(last_input + 3 * interval);
    assert_eq!(d.conn.poll_message(), Some(Err(ProtocolError::KeepaliveTimeout)));
    assert!(d.conn.should_close_transport());
    let ping = *d.pings.first().expect("pinged");
    let silence = ping - last_input;
    assert!(silence >= interval && silence <= interval * 5 / 4, "ping after {silence:?}");
}
