//! Shared driver for the `connection_server` and `connection_client` fuzz targets.
//!
//! Input layout: `[knobs, control_len, control..., wire...]`.
//! - `knobs` picks the configuration: small limits, auto-pong, close timeout, keepalive and idle
//!   timers, and permessage-deflate with parameters from [`deflate::negotiate`].
//! - `control` is a small program, one byte per step (low 3 bits: the operation, high 5 bits: its
//!   argument): feed the next chunk of `wire` (chunk size from the argument), send, close, advance
//!   a synthetic clock, end of stream, or drain part of the transmit buffer.
//! - `wire` is what the peer sends. Whatever the program did not feed is fed at the end, followed
//!   by end of stream. Keeping it contiguous lets seed frames stay valid under mutation.
//!
//! Invariants checked: no panic; every message respects the limits; after an error or the
//! peer's close, `poll_message` only returns `None`; after end of stream the connection is
//! closed; send and close fail only when they must; after `handle_timeout(now)` no deadline is
//! at or before `now` and a closing connection has its close timer armed (calling it twice when
//! it just queued a close, as the `wsx` driver does); and everything in `transmit()` decodes as
//! valid frames for this role, data frames carrying (after inflation) exactly what was sent, and
//! nothing after a close frame.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use wsx_proto::deflate::{self, Deflate, DeflateConfig, Params};
use wsx_proto::frame::{FrameHeader, OpCode};
use wsx_proto::{CloseCode, CloseFrame, Config, Connection, Message, Role, SendError, State};

/// Runs one input against a connection in `role`.
pub fn connection(role: Role, data: &[u8]) {
    let [knobs, control_len, rest @ ..] = data else { return };
    let (control, wire) = rest.split_at(usize::from(*control_len).min(rest.len()));
    let mut h = Harness::new(role, *knobs);
    let mut wire = wire;
    for &step in control {
        let arg = usize::from(step >> 3);
        match step & 0x07 {
            0 | 1 => {
                let (chunk, rest) = wire.split_at((arg + 1).min(wire.len()));
                wire = rest;
                h.conn.handle_input(chunk);
                h.fed += chunk.len();
                h.drain_messages();
            }
            2 => {
                let (chunk, rest) = wire.split_at(((arg + 1) * 64).min(wire.len()));
                wire = rest;
                h.conn.recv_buf().extend_from_slice(chunk);
                h.fed += chunk.len();
                h.drain_messages();
            }
            3 => h.send_data(arg),
            4 => h.send_control(arg),
            5 => h.close(arg),
            6 => {
                h.advance_clock(arg);
                h.drain_messages();
            }
            _ => match arg & 0x03 {
                0 => {
                    h.conn.handle_eof();
                    h.drain_messages();
                }
                1 => h.flush(1 + (arg >> 2) * 7),
                2 => h.flush(usize::MAX),
                _ => {
                    let _ = h.conn.is_send_buffer_full();
                    let _ = h.conn.should_close_transport();
                    let _ = h.conn.poll_timeout();
                }
            },
        }
    }
    h.conn.handle_input(wire);
    h.fed += wire.len();
    h.drain_messages();
    h.tick();
    h.drain_messages();
    h.flush(usize::MAX);
    h.conn.handle_eof();
    h.drain_messages();
    assert_eq!(h.conn.state(), State::Closed, "open after end of stream");
    assert!(h.conn.should_close_transport());
    h.now += Duration::from_secs(3600);
    h.tick();
    h.drain_messages();
    h.flush(usize::MAX);
}

struct Harness {
    conn: Connection,
    role: Role,
    max_message_size: usize,
    deflate: bool,
    /// `Config::close_timeout` is set.
    close_timeout: bool,
    now: Instant,
    /// Bytes given to the connection so far.
    fed: usize,
    /// Messages reported so far.
    reported: usize,
    /// An error or the peer's close was reported: nothing more may be.
    ended: bool,
    /// Our own `close` succeeded: sending must now fail.
    closed_by_us: bool,
    peer: Peer,
}

impl Harness {
    fn new(role: Role, knobs: u8) -> Self {
        let mut config = Config::default();
        if knobs & 0x01 != 0 {
            config = config.max_frame_size(100).max_message_size(300);
        }
        if knobs & 0x02 != 0 {
            config = config.auto_pong(false);
        }
        if knobs & 0x04 != 0 {
            config = config.close_timeout(None);
        }
        if knobs & 0x08 != 0 {
            config = config
                .ping_interval(Some(Duration::from_secs(1)))
                .ping_timeout(Some(Duration::from_secs(2)))
                .idle_timeout(Some(Duration::from_secs(5)));
        }
        let mut params: Option<Params> = None;
        let mut dc = DeflateConfig::default();
        if knobs & 0x10 != 0 {
            let offer = match (knobs >> 5) & 0x03 {
                0 => "permessage-deflate",
                1 => "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                2 => "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
                _ => "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
            };
            dc.min_size = if knobs & 0x80 != 0 { 16 } else { 0 };
            dc.level = if knobs & 0x80 != 0 { 9 } else { 1 };
            params = Some(deflate::negotiate([offer], &dc).expect("a valid offer is accepted"));
            config = config.deflate(Some(dc.clone()));
        }
        let max_message_size = config.max_message_size;
        let close_timeout = config.close_timeout.is_some();
        let mut conn = Connection::new(role, config);
        if let Some(p) = params {
            conn = conn.with_deflate(p);
        }
        assert_eq!(conn.is_deflate_enabled(), params.is_some());
        let now = Instant::now();
        let peer_role = match role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let mut h = Self {
            conn,
            role,
            max_message_size,
            deflate: params.is_some(),
            close_timeout,
            now,
            fed: 0,
            reported: 0,
            ended: false,
            closed_by_us: false,
            peer: Peer {
                buf: BytesMut::new(),
                inflate: params.map(|p| Deflate::new(peer_role, &p, &dc)),
                expected: VecDeque::new(),
                close_seen: false,
            },
        };
        h.tick();
        h
    }

    /// Drains `poll_message`, checking each message and the end-of-stream contract.
    fn drain_messages(&mut self) {
        while let Some(event) = self.conn.poll_message() {
            assert!(!self.ended, "{event:?} reported after the end of the stream");
            self.reported += 1;
            // Every message (and the one error) consumes at least a 2-byte header, bar the
            // errors raised by timers or end of stream.
            assert!(
                self.reported <= self.fed / 2 + 2,
                "{} messages from {} bytes",
                self.reported,
                self.fed
            );
            match event {
                Err(e) => {
                    let _ = e.close_code();
                    self.ended = true;
                }
                Ok(Message::Close(frame)) => {
                    if let Some(f) = frame {
                        assert!(f.code.is_valid_on_wire(), "{:?}", f.code);
                        assert!(f.reason.len() <= 123);
                    }
                    self.ended = true;
                }
                Ok(Message::Text(t)) => {
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    assert!(t.len() <= self.max_message_size, "{} bytes", t.len());
                }
                Ok(Message::Binary(b)) => {
                    assert!(b.len() <= self.max_message_size, "{} bytes", b.len());
                }
                Ok(Message::Ping(b) | Message::Pong(b)) => assert!(b.len() <= 125),
                Ok(other) => panic!("unknown message {other:?}"),
            }
        }
        // And it stays that way.
        if self.ended {
            assert!(self.conn.poll_message().is_none());
        }
    }

    fn send_data(&mut self, arg: usize) {
        const LENS: [usize; 16] =
            [0, 1, 2, 5, 17, 50, 100, 125, 126, 301, 1000, 4096, 4097, 20_000, 65_535, 65_536];
        // Compressing tens of KiB under coverage instrumentation costs milliseconds per input;
        // with deflate on, stay small (what deflate changes does not depend on the size).
        let len = if self.deflate { LENS[arg >> 1].min(600) } else { LENS[arg >> 1] };
        let (opcode, payload) = if arg & 1 == 0 {
            const PATTERN: &str = "wsx ✓ é ";
            let text = PATTERN.repeat(len / PATTERN.len() + 1);
            let mut cut = len;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            (OpCode::Text, Bytes::copy_from_slice(&text.as_bytes()[..cut]))
        } else {
            (OpCode::Binary, (0..len).map(|i| (i * 7 + arg) as u8).collect::<Bytes>())
        };
        let message = match opcode {
            OpCode::Text => Message::Text(payload.clone().try_into().expect("UTF-8")),
            _ => Message::Binary(payload.clone()),
        };
        let open = self.conn.state() == State::Open;
        match self.conn.send(message) {
            Ok(()) => {
                assert!(!self.closed_by_us, "sent after our close");
                self.peer.expected.push_back((opcode, payload));
            }
            Err(SendError::Closed) => assert!(!open, "send refused while open"),
            Err(e) => panic!("data send failed: {e:?}"),
        }
    }

    fn send_control(&mut self, arg: usize) {
        let len = (arg >> 1) * 9;
        let payload: Bytes = (0..len).map(|i| i as u8).collect();
        let open = self.conn.state() == State::Open;
        let message = if arg & 1 == 0 { Message::Ping(payload) } else { Message::Pong(payload) };
        match self.conn.send(message) {
            Ok(()) => assert!(len <= 125 && !self.closed_by_us, "{len}-byte control frame sent"),
            Err(SendError::Closed) => assert!(!open, "send refused while open"),
            Err(SendError::ControlFrameTooLong(n)) => assert!(n > 125 && n == len),
            Err(e) => panic!("control send failed: {e:?}"),
        }
    }

    fn close(&mut self, arg: usize) {
        const CODES: [u16; 8] = [1000, 1001, 1005, 1006, 3000, 4999, 999, 5000];
        const REASONS: [usize; 4] = [0, 5, 123, 124];
        let frame = (arg != 0).then(|| {
            let reason = "r".repeat(REASONS[arg & 0x03]);
            CloseFrame::new(CloseCode(CODES[(arg >> 2) & 0x07]), reason)
        });
        let valid = frame.as_ref().is_none_or(|f| f.code.is_sendable() && f.reason.len() <= 123);
        let open = self.conn.state() == State::Open;
        let result = if arg & 0x10 != 0 {
            self.conn.send(Message::Close(frame))
        } else {
            self.conn.close(frame)
        };
        match result {
            Ok(()) => {
                assert!(valid && !self.closed_by_us, "close accepted");
                self.closed_by_us = true;
            }
            Err(SendError::Closed) => assert!(!open, "close refused while open"),
            Err(_) => assert!(!valid, "valid close refused: {result:?}"),
        }
    }

    fn advance_clock(&mut self, arg: usize) {
        const STEPS_MS: [u64; 16] =
            [0, 1, 100, 500, 999, 1000, 1001, 2000, 4999, 5000, 9999, 10_000, 20_000, 60_000, 0, 0];
        if arg >= 14 {
            // Jump to the deadline the connection asked for, as a driver's timer would.
            if let Some(t) = self.conn.poll_timeout() {
                self.now = self.now.max(t);
            }
        } else {
            self.now += Duration::from_millis(STEPS_MS[arg & 0x0f]);
        }
        self.tick();
    }

    /// `handle_timeout(now)` the way the `wsx` driver calls it, then checks the timers: every
    /// deadline that passed was handled, and a closing connection has a close timer armed.
    fn tick(&mut self) {
        let now = self.now;
        self.conn.handle_timeout(now);
        if self.conn.poll_timeout().is_none() && self.conn.state() != State::Open {
            // A close was just queued by this very call (idle timeout): the driver calls again
            // to arm the close timer.
            self.conn.handle_timeout(now);
        }
        if let Some(deadline) = self.conn.poll_timeout() {
            assert!(deadline > now, "a deadline {:?} in the past", now - deadline);
        } else if self.close_timeout && !self.conn.should_close_transport() {
            assert_eq!(self.conn.state(), State::Open, "closing without a close timer");
        }
    }

    /// Moves up to `max` bytes from `transmit()` to the peer, chunk by chunk, and checks them.
    fn flush(&mut self, max: usize) {
        let role = self.role;
        let deflate = self.deflate;
        let queued = self.conn.buffered_amount();
        let out = self.conn.transmit();
        assert_eq!(out.remaining(), queued);
        let mut slices = [IoSlice::new(&[]); 16];
        let n = out.chunks_vectored(&mut slices);
        let vectored: usize = slices[..n].iter().map(|s| s.len()).sum();
        assert!(vectored <= queued);
        if n < slices.len() {
            assert_eq!(vectored, queued, "chunks_vectored misses bytes");
        }
        let mut left = max.min(queued);
        while left > 0 {
            let chunk = out.chunk();
            assert!(!chunk.is_empty(), "empty chunk with {} bytes remaining", out.remaining());
            let k = chunk.len().min(left);
            self.peer.buf.extend_from_slice(&chunk[..k]);
            out.advance(k);
            left -= k;
        }
        assert_eq!(out.remaining(), queued - max.min(queued));
        self.peer.check_frames(role, deflate);
    }
}

/// The receiving end of `transmit()`: decodes and checks every frame the connection sent.
struct Peer {
    buf: BytesMut,
    inflate: Option<Deflate>,
    /// Data messages sent and not yet seen on the wire, in order.
    expected: VecDeque<(OpCode, Bytes)>,
    close_seen: bool,
}

impl Peer {
    fn check_frames(&mut self, role: Role, deflate: bool) {
        loop {
            let (h, n) = match FrameHeader::decode(&self.buf) {
                Ok(Some(hn)) => hn,
                Ok(None) => return,
                Err(e) => panic!(
                    "transmit() holds an invalid frame: {e:?} in {:02x?}",
                    &self.buf[..self.buf.len().min(14)]
                ),
            };
            let len = usize::try_from(h.payload_len).expect("fits");
            if self.buf.len() < n + len {
                return;
            }
            self.buf.advance(n);
            let mut payload = self.buf.split_to(len);
            assert!(!self.close_seen, "{h:?} sent after a close frame");
            assert!(h.fin, "unfragmented sends must set FIN: {h:?}");
            assert_eq!(h.mask.is_some(), role == Role::Client, "masking: {h:?}");
            if let Some(key) = h.mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
            }
            match h.opcode {
                OpCode::Text | OpCode::Binary => {
                    assert!(h.rsv == 0 || (deflate && h.rsv == 0b100), "rsv on {h:?}");
                    let (opcode, sent) =
                        self.expected.pop_front().expect("a data frame nobody sent");
                    assert_eq!(h.opcode, opcode);
                    let body = if h.rsv != 0 {
                        let d = self.inflate.as_mut().expect("deflate is on");
                        d.decompress(&payload, sent.len()).expect("our compressed frame inflates")
                    } else {
                        payload
                    };
                    assert!(body[..] == sent[..], "data frame differs from what was sent");
                }
                OpCode::Close => {
                    assert_eq!(h.rsv, 0);
                    assert!(len != 1 && len <= 125, "close payload of {len}");
                    if len >= 2 {
                        let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                        assert!(code.is_sendable(), "close code {code:?} sent");
                        assert!(std::str::from_utf8(&payload[2..]).is_ok(), "close reason");
                    }
                    self.close_seen = true;
                }
                OpCode::Ping | OpCode::Pong => {
                    assert_eq!(h.rsv, 0);
                    assert!(len <= 125);
                }
                OpCode::Continuation => panic!("continuation frame sent: {h:?}"),
            }
        }
    }
}
