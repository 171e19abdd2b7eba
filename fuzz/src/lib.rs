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
//! closed; send and close fail only when they must; `handle_timeout(now)` is called exactly once
//! per step (after input, after commands, when the clock moves), as its documentation asks, and
//! after it no deadline is at or before `now` and a connection that is closing with a close
//! timeout configured (`Closing`, or `Closed` while the transport is still to be closed by the
//! peer) has a deadline in `poll_timeout()`; and everything in `transmit()` decodes as valid
//! frames for this role, data frames carrying (after inflation) exactly what was sent, and
//! nothing after a close frame.
//!
//! [`streaming`] drives the streaming path the same way: see there.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use wsx_proto::deflate::{self, Deflate, DeflateConfig, Params};
use wsx_proto::frame::{FrameHeader, OpCode};
use wsx_proto::{
    Chunk, CloseCode, CloseFrame, Config, Connection, Event, Message, Role, SendError, State,
};

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
                h.feed(chunk, Feed::Copy);
            }
            2 => {
                let (chunk, rest) = wire.split_at(((arg + 1) * 64).min(wire.len()));
                wire = rest;
                h.feed(chunk, Feed::RecvBuf);
            }
            3 => h.send_data(arg),
            4 => h.send_control(arg),
            5 => h.close(arg),
            6 => h.advance_clock(arg),
            _ => h.misc(arg, wire.is_empty()),
        }
        h.end_step();
    }
    h.finish(wire);
}

/// Streaming receive and send, in either role: [`Connection::poll_event`] (never
/// `poll_message`), [`Connection::send_chunk`] and [`Connection::handle_input_buf`]. The input
/// is `[knobs, threshold, control_len, control..., wire...]`: [`connection`]'s layout with one
/// more byte, whose low 2 bits pick [`Config::stream_threshold`] (1, 7, 64 or 1000 bytes). The same
/// wire is fed in one piece to a second connection with the same configuration, drained with
/// `poll_message`, as the reference.
///
/// Checked on top of [`connection`]'s invariants: the chunks of each message come in order
/// (first, then middle ones of at least the threshold, then last), with no data message in
/// between; text chunks are valid UTF-8 each; a message's chunks together never pass
/// `max_message_size`; the messages they make, with the whole messages, equal what the reference
/// reassembles, and the error is the same (a prefix only, when a timer or an early end of stream
/// cut the streamed run short); a fragmented send goes out as exactly the frames of its chunks
/// (the first with the type, continuations after, FIN on the last, never compressed), and
/// `send` of a data message and a misplaced first or later chunk fail while they must.
pub fn streaming(role: Role, data: &[u8]) {
    let [knobs, threshold, control_len, rest @ ..] = data else { return };
    let (control, wire) = rest.split_at(usize::from(*control_len).min(rest.len()));
    let mut h = Harness::new(role, *knobs);
    h.start_streaming(*knobs, *threshold, wire);
    let mut wire = wire;
    for &step in control {
        let arg = usize::from(step >> 3);
        match step & 0x07 {
            0 => {
                let (chunk, rest) = wire.split_at((arg + 1).min(wire.len()));
                wire = rest;
                h.feed(chunk, Feed::Copy);
            }
            1 => {
                let (chunk, rest) = wire.split_at(((arg + 1) * 16).min(wire.len()));
                wire = rest;
                h.feed(chunk, Feed::ByValue);
            }
            2 => {
                let (chunk, rest) = wire.split_at(((arg + 1) * 64).min(wire.len()));
                wire = rest;
                h.feed(chunk, Feed::RecvBuf);
            }
            3 => h.send_chunk(arg),
            4 if arg & 1 == 0 => h.send_control(arg >> 1),
            4 => h.send_data(arg >> 1),
            5 => h.close(arg),
            6 => h.advance_clock(arg),
            _ => h.misc(arg, wire.is_empty()),
        }
        h.end_step();
    }
    h.finish(wire);
}

/// How received bytes reach the connection.
#[derive(Clone, Copy)]
enum Feed {
    /// `handle_input`.
    Copy,
    /// `recv_buf().extend_from_slice`.
    RecvBuf,
    /// `handle_input_buf`.
    ByValue,
}

/// A message as compared between the streamed run and the reference: its opcode and payload.
type Received = (OpCode, Bytes);

/// The streaming side of a [`Harness`].
struct Streaming {
    threshold: usize,
    /// What the reference connection reported for the whole wire: messages, then at most one
    /// error.
    reference: Vec<Result<Received, wsx_proto::ProtocolError>>,
    /// What this run reported, chunks reassembled.
    received: Vec<Result<Received, wsx_proto::ProtocolError>>,
    /// The chunked message arriving: text or not, and its bytes so far.
    assembling: Option<(bool, BytesMut)>,
    /// A timer or an early end of stream changed what this run can receive.
    cut_short: bool,
    /// A chunked send is in progress.
    sending_chunks: bool,
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
    /// Set by [`streaming`]: events instead of messages.
    streaming: Option<Streaming>,
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
            let offer = deflate_offer(knobs);
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
                fragment: None,
            },
            streaming: None,
        };
        h.tick();
        h
    }

    /// Turns on the streaming checks: the connection again with the threshold, and the reference
    /// connection's report of the whole wire.
    fn start_streaming(&mut self, knobs: u8, threshold: u8, wire: &[u8]) {
        const THRESHOLDS: [usize; 4] = [1, 7, 64, 1000];
        let threshold = THRESHOLDS[usize::from(threshold & 0x03)];
        let mut config = self.conn.config().clone();
        config.stream_threshold = threshold;
        let deflate = self.conn.is_deflate_enabled().then(|| {
            let dc = config.deflate.clone().unwrap_or_default();
            deflate::negotiate([deflate_offer(knobs)], &dc).expect("a valid offer is accepted")
        });
        let role = self.role;
        let new = |config: Config| {
            let conn = Connection::new(role, config);
            match deflate {
                Some(p) => conn.with_deflate(p),
                None => conn,
            }
        };
        self.conn = new(config.clone());
        self.tick();
        let mut reference = new(config);
        reference.handle_input(wire);
        reference.handle_eof();
        let mut expected = Vec::new();
        while let Some(m) = reference.poll_message() {
            expected.push(m.map(|m| received(&m)));
        }
        self.streaming = Some(Streaming {
            threshold,
            reference: expected,
            received: Vec::new(),
            assembling: None,
            cut_short: false,
            sending_chunks: false,
        });
    }

    /// Gives `chunk` of the wire to the connection.
    fn feed(&mut self, chunk: &[u8], how: Feed) {
        match how {
            Feed::Copy => self.conn.handle_input(chunk),
            Feed::RecvBuf => self.conn.recv_buf().extend_from_slice(chunk),
            Feed::ByValue => self.conn.handle_input_buf(BytesMut::from(chunk)),
        }
        self.fed += chunk.len();
        self.drain_messages();
    }

    /// Step 7: end of stream, partial flushes, or the read-only queries.
    fn misc(&mut self, arg: usize, wire_done: bool) {
        match arg & 0x03 {
            0 => {
                self.conn.handle_eof();
                if !wire_done {
                    if let Some(st) = self.streaming.as_mut() {
                        st.cut_short = true;
                    }
                }
                self.drain_messages();
            }
            1 => self.flush(1 + (arg >> 2) * 7),
            2 => self.flush(usize::MAX),
            _ => {
                let _ = self.conn.is_send_buffer_full();
                let _ = self.conn.should_close_transport();
                let _ = self.conn.needs_time();
                let _ = self.conn.has_buffered_input();
                let _ = self.conn.poll_timeout();
            }
        }
    }

    /// After every step: the one `handle_timeout` the documentation asks for after input and
    /// commands, then whatever it reported.
    fn end_step(&mut self) {
        self.tick();
        self.drain_messages();
    }

    /// Feeds the rest of the wire, ends the stream, flushes, and checks the end state.
    fn finish(mut self, wire: &[u8]) {
        self.feed(wire, Feed::Copy);
        self.end_step();
        self.flush(usize::MAX);
        self.conn.handle_eof();
        self.drain_messages();
        self.end_step();
        assert_eq!(self.conn.state(), State::Closed, "open after end of stream");
        assert!(self.conn.should_close_transport());
        self.now += Duration::from_secs(3600);
        self.end_step();
        self.flush(usize::MAX);
        if let Some(st) = self.streaming.take() {
            st.compare(self.peer.close_seen);
        }
    }

    /// Drains `poll_message` (or `poll_event` when streaming), checking each message and the
    /// end-of-stream contract.
    fn drain_messages(&mut self) {
        if self.streaming.is_some() {
            return self.drain_events();
        }
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

    /// Drains `poll_event`, checking chunks and reassembling them for [`Streaming::compare`].
    fn drain_events(&mut self) {
        let max = self.max_message_size;
        while let Some(event) = self.conn.poll_event() {
            assert!(!self.ended, "{event:?} reported after the end of the stream");
            let st = self.streaming.as_mut().expect("streaming");
            match event {
                Err(e) => {
                    let _ = e.close_code();
                    if e == wsx_proto::ProtocolError::KeepaliveTimeout {
                        // Raised by the clock, not by the wire: the reference never sees it.
                        st.cut_short = true;
                    }
                    st.received.push(Err(e));
                    self.ended = true;
                }
                Ok(Event::Chunk(chunk)) => {
                    if chunk.is_text() {
                        assert!(
                            std::str::from_utf8(chunk.data()).is_ok(),
                            "a text chunk is not UTF-8: {chunk:?}"
                        );
                    }
                    assert!(
                        chunk.is_last() || chunk.len() >= st.threshold,
                        "a {}-byte middle chunk under the {}-byte threshold",
                        chunk.len(),
                        st.threshold
                    );
                    let (text, buf) = match st.assembling.as_mut() {
                        Some(assembling) => {
                            assert!(!chunk.is_first(), "a message started inside another");
                            assert_eq!(assembling.0, chunk.is_text(), "text changed mid-message");
                            assembling
                        }
                        None => {
                            assert!(chunk.is_first(), "a message without its first chunk");
                            st.assembling.insert((chunk.is_text(), BytesMut::new()))
                        }
                    };
                    buf.extend_from_slice(chunk.data());
                    assert!(buf.len() <= max, "chunks add up to {} bytes", buf.len());
                    if chunk.is_last() {
                        let opcode = if *text { OpCode::Text } else { OpCode::Binary };
                        let whole = std::mem::take(buf).freeze();
                        if *text {
                            assert!(std::str::from_utf8(&whole).is_ok(), "chunked text");
                        }
                        st.assembling = None;
                        st.received.push(Ok((opcode, whole)));
                    }
                }
                Ok(Event::Message(m)) => {
                    if m.is_data() {
                        assert!(st.assembling.is_none(), "{m:?} inside a chunked message");
                    }
                    let r = received(&m);
                    match &m {
                        Message::Text(_) | Message::Binary(_) => {
                            assert!(r.1.len() <= max, "{} bytes", r.1.len());
                        }
                        Message::Ping(b) | Message::Pong(b) => assert!(b.len() <= 125),
                        Message::Close(frame) => {
                            if let Some(f) = frame {
                                assert!(f.code.is_valid_on_wire(), "{:?}", f.code);
                            }
                            self.ended = true;
                        }
                        other => panic!("unknown message {other:?}"),
                    }
                    if let Message::Text(t) = &m {
                        assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    }
                    st.received.push(Ok(r));
                }
            }
        }
        if self.ended {
            assert!(self.conn.poll_event().is_none());
        }
    }

    /// `send_chunk`: bit 0 text, bit 1 asks for a first chunk, bit 2 a last one, bits 3-4 the
    /// length. Refused exactly when the chunk does not fit the message in progress.
    fn send_chunk(&mut self, arg: usize) {
        const LENS: [usize; 4] = [0, 1, 7, 300];
        let (text, first, last) = (arg & 1 != 0, arg & 2 != 0, arg & 4 != 0);
        let len = LENS[(arg >> 3) & 0x03];
        let (chunk, payload) = if text {
            let s: String = "é✓x".chars().cycle().take(len).collect();
            let payload = Bytes::from(s.clone());
            (Chunk::text(s, first, last), payload)
        } else {
            let payload: Bytes = (0..len).map(|i| (i * 13 + arg) as u8).collect();
            (Chunk::binary(payload.clone(), first, last), payload)
        };
        let open = self.conn.state() == State::Open;
        let st = self.streaming.as_mut().expect("streaming");
        let in_progress = st.sending_chunks;
        match self.conn.send_chunk(chunk) {
            Ok(()) => {
                assert!(!self.closed_by_us && first != in_progress, "chunk accepted");
                st.sending_chunks = !last;
                let opcode = match (first, text) {
                    (false, _) => OpCode::Continuation,
                    (true, true) => OpCode::Text,
                    (true, false) => OpCode::Binary,
                };
                self.peer.expected.push_back(Expected::Frame { opcode, payload, fin: last });
            }
            Err(SendError::Closed) => assert!(!open, "send_chunk refused while open"),
            Err(SendError::ChunkedMessageInProgress) => assert!(first && in_progress),
            Err(SendError::NoChunkedMessage) => assert!(!first && !in_progress),
            Err(e) => panic!("send_chunk failed: {e:?}"),
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
        let chunking = self.streaming.as_ref().is_some_and(|st| st.sending_chunks);
        match self.conn.send(message) {
            Ok(()) => {
                assert!(!self.closed_by_us && !chunking, "sent after our close or mid-chunks");
                self.peer.expected.push_back(Expected::Message(opcode, payload));
            }
            Err(SendError::Closed) => assert!(!open, "send refused while open"),
            Err(SendError::ChunkedMessageInProgress) => assert!(chunking),
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

    /// One `handle_timeout(now)`, as documented (once after input, after commands, and when
    /// the deadline passes; never twice to work around anything), then checks the timers: every
    /// deadline that passed was handled, and a connection closing with a close timeout
    /// configured has a deadline to be woken at, or a driver sleeping on `poll_timeout()` would
    /// wait forever for a peer that never answers.
    fn tick(&mut self) {
        let now = self.now;
        let closing_transport = self.conn.should_close_transport();
        self.conn.handle_timeout(now);
        if !closing_transport && self.conn.should_close_transport() {
            // The close timeout fired: reading stops here, not where the wire ends.
            if let Some(st) = self.streaming.as_mut() {
                st.cut_short = true;
            }
        }
        let deadline = self.conn.poll_timeout();
        if let Some(deadline) = deadline {
            assert!(deadline > now, "a deadline {:?} in the past", now - deadline);
        }
        let closing = match self.conn.state() {
            State::Open => false,
            State::Closing => true,
            State::Closed => !self.conn.should_close_transport(),
        };
        if self.close_timeout && closing {
            assert!(
                deadline.is_some(),
                "{:?} with a close timeout configured, but poll_timeout() is None",
                self.conn.state()
            );
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

/// What a data send must put on the wire.
enum Expected {
    /// `send`: one frame with FIN, compressed or not.
    Message(OpCode, Bytes),
    /// `send_chunk`: one frame as given, never compressed.
    Frame { opcode: OpCode, payload: Bytes, fin: bool },
}

/// The receiving end of `transmit()`: decodes and checks every frame the connection sent.
struct Peer {
    buf: BytesMut,
    inflate: Option<Deflate>,
    /// Data sends not yet seen on the wire, in order.
    expected: VecDeque<Expected>,
    close_seen: bool,
    /// A fragmented message is on the wire: control frames only may come before its next frame.
    fragment: Option<()>,
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
            assert!(h.fin || !h.opcode.is_control(), "a fragmented control frame: {h:?}");
            assert_eq!(h.mask.is_some(), role == Role::Client, "masking: {h:?}");
            if let Some(key) = h.mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
            }
            match h.opcode {
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    // RFC 6455 §5.4: a continuation exactly while a fragmented message is open.
                    assert_eq!(
                        self.fragment.is_some(),
                        h.opcode == OpCode::Continuation,
                        "{h:?} with a fragmented message {}",
                        if self.fragment.is_some() { "open" } else { "not open" }
                    );
                    self.fragment = (!h.fin).then_some(());
                    match self.expected.pop_front().expect("a data frame nobody sent") {
                        Expected::Message(opcode, sent) => {
                            assert!(h.fin, "a message sent whole must set FIN: {h:?}");
                            assert!(h.rsv == 0 || (deflate && h.rsv == 0b100), "rsv on {h:?}");
                            assert_eq!(h.opcode, opcode);
                            let body = if h.rsv != 0 {
                                let d = self.inflate.as_mut().expect("deflate is on");
                                d.decompress(&payload, sent.len())
                                    .expect("our compressed frame inflates")
                            } else {
                                payload
                            };
                            assert!(body[..] == sent[..], "data frame differs from what was sent");
                        }
                        Expected::Frame { opcode, payload: sent, fin } => {
                            assert_eq!((h.opcode, h.fin, h.rsv), (opcode, fin, 0), "{h:?}");
                            assert!(payload[..] == sent[..], "chunk differs from what was sent");
                        }
                    }
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
            }
        }
    }
}

impl Streaming {
    /// The streamed run against the reference: the same messages and error, or a prefix of
    /// them when the run was cut short. `we_closed`: this side sent a close frame, after which
    /// a peer that hangs up is the end, not an error.
    fn compare(self, we_closed: bool) {
        let Self { mut reference, received, cut_short, .. } = self;
        let reset = Err(wsx_proto::ProtocolError::ResetWithoutClosingHandshake);
        if we_closed && reference.last() == Some(&reset) && received.last() != Some(&reset) {
            reference.pop();
        }
        if cut_short {
            // The cut may come with an error of its own (keepalive, reset) in the last place.
            let complete = received.iter().take_while(|r| r.is_ok()).count();
            assert!(
                complete <= reference.len() && received[..complete] == reference[..complete],
                "streamed {received:?}\nis not a prefix of the reference {reference:?}"
            );
        } else {
            assert!(
                received == reference,
                "streamed {received:?}\ndiffers from the reference {reference:?}"
            );
        }
    }
}

/// A message as [`Received`].
fn received(m: &Message) -> Received {
    match m {
        Message::Text(t) => (OpCode::Text, t.clone().into_bytes()),
        Message::Binary(b) => (OpCode::Binary, b.clone()),
        Message::Ping(b) => (OpCode::Ping, b.clone()),
        Message::Pong(b) => (OpCode::Pong, b.clone()),
        Message::Close(frame) => {
            let mut b = BytesMut::new();
            if let Some(f) = frame {
                b.extend_from_slice(&f.code.0.to_be_bytes());
                b.extend_from_slice(f.reason.as_bytes());
            }
            (OpCode::Close, b.freeze())
        }
        other => panic!("unknown message {other:?}"),
    }
}

/// The permessage-deflate offer `knobs` picks.
fn deflate_offer(knobs: u8) -> &'static str {
    match (knobs >> 5) & 0x03 {
        0 => "permessage-deflate",
        1 => "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        2 => "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
        _ => "permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
    }
}
