//! The session state machine: frames in, messages out; messages in, frames out.
//!
//! [`Connection`] owns the read buffer, the message being reassembled, the send queue and the
//! close handshake. It never blocks and never does I/O; see the crate docs for the driver loop.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::config::Config;
use crate::deflate::{Deflate, Params};
use crate::error::{ProtocolError, SendError};
use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::message::{Chunk, CloseCode, CloseFrame, Event, Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

/// Which end of the connection this is. Clients mask what they send and require unmasked frames;
/// servers the reverse (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that accepted it.
    Server,
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This end sent a close frame and waits for the peer's.
    Closing,
    /// The closing handshake finished, failed, or timed out. No more messages either way.
    Closed,
}

/// Smallest spare capacity offered to a driver's read.
const READ_CHUNK_MIN: usize = 16 << 10;
/// Largest step the read buffer grows by at once while a large frame arrives.
const READ_CHUNK_MAX: usize = 1 << 20;
/// The send buffer's first allocation in a batch of writes, when the first frame fits: small
/// enough for the allocator's per-thread cache (glibc serves up to ~1 KiB from it), so echoing a
/// small message costs no trip into the general allocator. A burst grows it by doubling.
const SEND_CHUNK: usize = 512;
/// Payloads up to this size are copied into the send buffer next to their header, so that many
/// small frames go out in one write; larger ones are queued as their own chunk without a copy.
const INLINE_PAYLOAD_MAX: usize = 4 << 10;

/// One WebSocket connection after the opening handshake.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// Shared: servers hand every connection the same settings.
    config: Arc<Config>,
    read_buf: BytesMut,
    /// The frame whose header has been read and whose payload is (partly) in `read_buf`.
    frame: Option<InFrame>,
    /// The data message being received: reassembled, or streamed out in chunks.
    message: Option<Partial>,
    /// A message sent in chunks is unfinished: its next frame is a continuation.
    sending_chunks: bool,
    utf8: Utf8Validator,
    /// Boxed: most connections go without, and the codec state is large.
    deflate: Option<Box<Deflate>>,
    out: SendQueue,
    /// Boxed: servers have none, and it is large.
    rng: Option<Box<StdRng>>,
    close_sent: bool,
    close_received: bool,
    /// No further messages will be reported.
    read_done: bool,
    failed: bool,
    eof: bool,
    timed_out: bool,
    close_deadline: Option<Instant>,
    /// A frame arrived since the last `handle_timeout`.
    rx_activity: bool,
    /// A data message went either way since the last `handle_timeout`.
    data_activity: bool,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    idle_deadline: Option<Instant>,
    ping_count: u64,
    /// The core queued a frame of its own (pong, close reply, keepalive ping) that should go
    /// out without waiting for the application's next call.
    reply_queued: bool,
    /// An error raised by a timer, reported by the next `poll_message`.
    pending_error: Option<ProtocolError>,
}

#[derive(Debug)]
struct InFrame {
    header: FrameHeader,
    /// Payload bytes of this frame not yet taken out of `read_buf`.
    len: usize,
    /// Payload bytes already taken out as chunks: the masking key's phase for the rest.
    taken: usize,
    /// Payload bytes at the front of `read_buf` already unmasked (and validated, for text).
    checked: usize,
    /// Whether the first bytes of the payload have been looked at (and `incremental` set).
    started: bool,
    /// Whether this frame's text is validated piece by piece as it arrives.
    incremental: bool,
}

/// RSV1: set on the first frame of a compressed message (RFC 7692 §6).
const RSV1: u8 = 0b100;

#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    /// Received bytes not yet delivered.
    buf: BytesMut,
    /// Bytes of the message received so far, delivered or not: the size limit counts them.
    size: u64,
    /// Part of it was delivered as chunks, so the rest is too.
    streaming: bool,
}

impl Connection {
    /// A connection in the given role, after a successful opening handshake.
    ///
    /// `config` may be a [`Config`] or an `Arc<Config>` shared by many connections (a server
    /// saves its size on every connection that way).
    pub fn new(role: Role, config: impl Into<Arc<Config>>) -> Self {
        let config = config.into();
        let rng = match role {
            // Masking keys must be unpredictable (RFC 6455 §5.3): a CSPRNG seeded once from the
            // OS, so each frame costs a few nanoseconds rather than a syscall.
            Role::Client => Some(Box::new(StdRng::from_os_rng())),
            Role::Server => None,
        };
        Self {
            role,
            config,
            read_buf: BytesMut::new(),
            frame: None,
            message: None,
            sending_chunks: false,
            utf8: Utf8Validator::new(),
            deflate: None,
            out: SendQueue::default(),
            rng,
            close_sent: false,
            close_received: false,
            read_done: false,
            failed: false,
            eof: false,
            timed_out: false,
            close_deadline: None,
            rx_activity: false,
            data_activity: false,
            next_ping: None,
            pong_deadline: None,
            idle_deadline: None,
            ping_count: 0,
            pending_error: None,
            reply_queued: false,
        }
    }

    /// Turns on permessage-deflate with the parameters negotiated in the opening handshake
    /// (see [`crate::deflate`]); compression settings come from [`Config::deflate`] or the
    /// defaults.
    pub fn with_deflate(mut self, params: Params) -> Self {
        let config = self.config.deflate.clone().unwrap_or_default();
        self.deflate = Some(Box::new(Deflate::new(self.role, &params, &config)));
        self
    }

    /// Whether permessage-deflate is on.
    pub fn is_deflate_enabled(&self) -> bool {
        self.deflate.is_some()
    }

    /// This connection's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This connection's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> State {
        if self.failed || self.close_received || self.timed_out || (self.eof && self.read_done) {
            State::Closed
        } else if self.close_sent {
            State::Closing
        } else {
            State::Open
        }
    }

    /// Whether the driver should close the transport once [`Self::transmit`] is empty.
    ///
    /// The server closes TCP first after a closing handshake (RFC 6455 §7.1.1); a client waits
    /// for the server to do so, up to [`Config::close_timeout`].
    pub fn should_close_transport(&self) -> bool {
        self.state() == State::Closed
            && (self.role == Role::Server || self.failed || self.eof || self.timed_out)
    }

    /// The read buffer, with spare capacity for the driver to read into. Bytes appended to it
    /// are parsed by the next [`Self::poll_message`].
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        if self.read_done {
            // Nothing more is parsed: whatever the peer still sends is discarded.
            self.read_buf.clear();
            self.frame = None;
        }
        let pending = match &self.frame {
            Some(f) => f.len.saturating_sub(self.read_buf.len()),
            None => 0,
        };
        let want = pending.clamp(READ_CHUNK_MIN, READ_CHUNK_MAX);
        if self.read_buf.capacity() - self.read_buf.len() < want {
            self.read_buf.reserve(want);
        }
        &mut self.read_buf
    }

    /// Appends received bytes (a copy; [`Self::recv_buf`] avoids it).
    pub fn handle_input(&mut self, data: &[u8]) {
        if !self.read_done {
            self.read_buf.extend_from_slice(data);
        }
    }

    /// Takes received bytes by value. When nothing is buffered (the usual case between
    /// messages) the buffer is adopted without a copy, so a driver can read into a scratch
    /// buffer shared by many connections and hand over just the filled part.
    pub fn handle_input_buf(&mut self, data: BytesMut) {
        if self.read_done {
            return;
        }
        if self.read_buf.is_empty() {
            self.read_buf = data;
        } else {
            self.read_buf.extend_from_slice(&data);
        }
    }

    /// Whether received bytes wait in the read buffer or a frame's payload is still arriving.
    /// When not, a driver may read into a shared scratch buffer and use
    /// [`Self::handle_input_buf`]; when so, reading into [`Self::recv_buf`] sizes the read to
    /// the frame.
    pub fn has_buffered_input(&self) -> bool {
        !self.read_buf.is_empty() || self.frame.is_some()
    }

    /// The transport reached end of stream: no more bytes will arrive.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// Advances timers to `now`: keepalive pings, the idle timeout and the close timeout. Call
    /// it once when the connection starts, after each batch of input, after commands, and when
    /// the deadline from [`Self::poll_timeout`] passes. Timers are armed relative to the `now`
    /// of the call that first sees the state they belong to.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state() {
            State::Open => self.keepalive(now),
            State::Closing => self.close_timer(now),
            State::Closed if !self.should_close_transport() => self.close_timer(now),
            State::Closed => {}
        }
        if self.state() != State::Open {
            self.next_ping = None;
            self.pong_deadline = None;
            self.idle_deadline = None;
        }
        if self.state() == State::Open || self.should_close_transport() {
            self.close_deadline = None;
        }
    }

    /// Whether [`Self::handle_timeout`] has anything to do: a keepalive or idle timer is
    /// configured, or the connection is closing. While false, a driver may skip reading the
    /// clock after input (it must still honour [`Self::poll_timeout`]).
    pub fn needs_time(&self) -> bool {
        self.config.ping_interval.is_some()
            || self.config.idle_timeout.is_some()
            || self.state() != State::Open
    }

    /// The next instant at which [`Self::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.close_deadline, self.next_ping, self.pong_deadline, self.idle_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keepalive (RFC 6455 §5.5.2: pings may serve to verify the peer is responsive) and the
    /// idle timeout, while open.
    fn keepalive(&mut self, now: Instant) {
        let cfg = &self.config;
        if std::mem::take(&mut self.rx_activity) {
            // Any frame from the peer proves it is alive; a pong stuck behind a large message
            // should not kill a busy connection.
            self.pong_deadline = None;
            self.next_ping = cfg.ping_interval.map(|i| now + i);
        }
        if std::mem::take(&mut self.data_activity) || self.idle_deadline.is_none() {
            self.idle_deadline = cfg.idle_timeout.map(|t| now + t);
        }
        if self.next_ping.is_none() && self.pong_deadline.is_none() {
            self.next_ping = cfg.ping_interval.map(|i| now + i);
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            let err = self.fail(ProtocolError::KeepaliveTimeout);
            self.pending_error = Some(err);
            return;
        }
        if self.idle_deadline.is_some_and(|d| now >= d) {
            self.queue_close(Some((CloseCode::GOING_AWAY, "idle timeout")));
            self.reply_queued = true;
            return;
        }
        if self.next_ping.is_some_and(|d| now >= d) {
            self.ping_count = self.ping_count.wrapping_add(1);
            let payload = Bytes::copy_from_slice(&self.ping_count.to_be_bytes());
            self.queue_frame(OpCode::Ping, payload);
            self.reply_queued = true;
            self.next_ping = self.config.ping_interval.map(|i| now + i);
            if self.pong_deadline.is_none() {
                self.pong_deadline = self.config.ping_timeout.map(|t| now + t);
            }
        }
    }

    /// The close timeout: for our close's reply, or (client) for the server to close TCP.
    fn close_timer(&mut self, now: Instant) {
        let Some(timeout) = self.config.close_timeout else {
            return;
        };
        match self.close_deadline {
            None => self.close_deadline = Some(now + timeout),
            Some(deadline) if now >= deadline => {
                self.timed_out = true;
                self.read_done = true;
                self.close_deadline = None;
            }
            Some(_) => {}
        }
    }

    /// The next message parsed from the bytes received so far, or `None` when more bytes are
    /// needed or the stream has ended.
    ///
    /// A protocol violation is returned once as an error, after every message that preceded it;
    /// the matching close frame is already queued in [`Self::transmit`]. After the peer's close
    /// frame ([`Message::Close`]) or an error, this only returns `None`.
    ///
    /// Data messages are reassembled whole. (If [`Self::poll_event`] already delivered part of
    /// the current message as chunks, each remaining chunk is returned as a message of its own.)
    pub fn poll_message(&mut self) -> Option<Result<Message, ProtocolError>> {
        Some(self.poll_inner(false)?.map(|event| match event {
            Event::Message(m) => m,
            Event::Chunk(c) => chunk_to_message(c),
        }))
    }

    /// Like [`Self::poll_message`], but streams large data messages: an uncompressed data
    /// message that has not fully arrived when [`Config::stream_threshold`] of its bytes are
    /// waiting is delivered as [`Event::Chunk`]s as it arrives, in pieces of at least that size
    /// (the last may be smaller), instead of being held whole. Smaller messages, compressed
    /// messages and control frames arrive as [`Event::Message`]. Limits still count the whole
    /// message, and text is still validated: a text message's last chunk is delivered only once
    /// all of it proved valid UTF-8.
    pub fn poll_event(&mut self) -> Option<Result<Event, ProtocolError>> {
        self.poll_inner(true)
    }

    fn poll_inner(&mut self, stream: bool) -> Option<Result<Event, ProtocolError>> {
        if let Some(err) = self.pending_error.take() {
            return Some(Err(err));
        }
        loop {
            if self.read_done {
                return None;
            }
            if self.frame.is_none() {
                match self.read_header() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.release_read_buf();
                        return self.end_of_input();
                    }
                    Err(e) => return Some(Err(self.fail(e))),
                }
            }
            match self.read_payload(stream) {
                // A frame is still arriving: its buffer stays, so a large frame streamed out in
                // chunks reuses one allocation (reclaimed once the chunks are dropped) instead
                // of fresh pages for every read.
                Ok(Progress::NeedMore) => return self.end_of_input(),
                Ok(Progress::Fragment) => {}
                Ok(Progress::Event(e)) => return Some(Ok(e)),
                Err(e) => return Some(Err(self.fail(e))),
            }
        }
    }

    /// Queues a message for sending. Data messages go out as one frame each.
    ///
    /// `Message::Close` is the same as [`Self::close`].
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if self.sending_chunks && message.is_data() {
            return Err(SendError::ChunkedMessageInProgress);
        }
        match message {
            Message::Text(text) => self.queue_data(OpCode::Text, text.into_bytes()),
            Message::Binary(data) => self.queue_data(OpCode::Binary, data),
            Message::Ping(data) => {
                check_control_len(data.len())?;
                self.queue_frame(OpCode::Ping, data);
            }
            Message::Pong(data) => {
                check_control_len(data.len())?;
                self.queue_frame(OpCode::Pong, data);
            }
            Message::Close(frame) => return self.close(frame),
        }
        Ok(())
    }

    /// Queues a piece of a data message as one frame of a fragmented message (RFC 6455 §5.4):
    /// the first chunk's frame carries the message type, later ones are continuations, and the
    /// last one sets FIN. Chunks are never compressed. Pings and pongs may go out between
    /// chunks; other data messages may not until the last chunk is sent.
    pub fn send_chunk(&mut self, chunk: Chunk) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let opcode = match (chunk.is_first(), self.sending_chunks) {
            (true, true) => return Err(SendError::ChunkedMessageInProgress),
            (false, false) => return Err(SendError::NoChunkedMessage),
            (true, false) if chunk.is_text() => OpCode::Text,
            (true, false) => OpCode::Binary,
            (false, true) => OpCode::Continuation,
        };
        let fin = chunk.is_last();
        self.sending_chunks = !fin;
        self.data_activity = true;
        self.queue(opcode, chunk.into_data(), 0, fin);
        Ok(())
    }

    /// Starts the closing handshake: queues a close frame. Nothing may be sent after it; messages
    /// the peer sent before its reply are still delivered.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if let Some(f) = &frame {
            if !f.code.is_sendable() {
                return Err(SendError::InvalidCloseCode(f.code.0));
            }
            check_control_len(2 + f.reason.len())?;
        }
        self.queue_close(frame.as_ref().map(|f| (f.code, f.reason.as_str())));
        Ok(())
    }

    /// The bytes waiting to be written to the transport, as a vectored [`Buf`]. The driver
    /// writes from it and advances it by what was written.
    pub fn transmit(&mut self) -> &mut SendQueue {
        &mut self.out
    }

    /// Whether the core queued a frame of its own since the last call (a pong, a close reply or
    /// the close for a violation, a keepalive ping); clears the flag. Reading implies writing:
    /// a driver that sees `true` writes [`Self::transmit`] now instead of when the application
    /// next calls it.
    pub fn take_reply_queued(&mut self) -> bool {
        std::mem::take(&mut self.reply_queued)
    }

    /// How many bytes wait in [`Self::transmit`].
    pub fn buffered_amount(&self) -> usize {
        self.out.remaining()
    }

    /// Whether senders should wait for the transport to drain before queuing more
    /// ([`Config::write_buffer_high_water`]), and drivers should stop reading meanwhile.
    ///
    /// While a received message is being delivered in chunks the mark is raised to
    /// [`Config::max_message_size`]: its chunks may be going straight back out (an echo, a
    /// proxy), and a peer that writes a whole message before it reads would deadlock against a
    /// reader that stopped half-way. Receiving the message whole would have held as much.
    pub fn is_send_buffer_full(&self) -> bool {
        let streaming = self.message.as_ref().is_some_and(|m| m.streaming);
        let mark = if streaming {
            self.config.write_buffer_high_water.max(self.config.max_message_size)
        } else {
            self.config.write_buffer_high_water
        };
        self.out.remaining() >= mark
    }

    /// Reads and checks a frame header. `Ok(false)` when the header is not complete yet.
    fn read_header(&mut self) -> Result<bool, ProtocolError> {
        let Some((header, header_len)) = FrameHeader::decode(&self.read_buf)? else {
            return Ok(false);
        };
        let len = self.check_header(&header)?;
        self.read_buf.advance(header_len);
        self.rx_activity = true;
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                self.message = Some(Partial {
                    text: header.opcode == OpCode::Text,
                    compressed: header.rsv & RSV1 != 0,
                    buf: BytesMut::new(),
                    size: len as u64,
                    streaming: false,
                });
            }
            OpCode::Continuation => {
                if let Some(m) = self.message.as_mut() {
                    m.size += len as u64;
                }
            }
            _ => {}
        }
        self.frame =
            Some(InFrame { header, len, taken: 0, checked: 0, started: false, incremental: false });
        Ok(true)
    }

    /// Enforces RFC 6455 §5 on a header and the configured limits; returns the payload length.
    fn check_header(&self, h: &FrameHeader) -> Result<usize, ProtocolError> {
        // RSV1 belongs to permessage-deflate, and only on a message's first frame.
        let allowed = match h.opcode {
            OpCode::Text | OpCode::Binary if self.deflate.is_some() => RSV1,
            _ => 0,
        };
        if h.rsv & !allowed != 0 {
            return Err(ProtocolError::ReservedBits(h.rsv));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong(h.payload_len));
            }
            return Ok(h.payload_len as usize);
        }
        match (h.opcode, &self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if h.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: h.payload_len,
                max: self.config.max_frame_size,
            });
        }
        let so_far = match h.opcode {
            OpCode::Continuation => self.message.as_ref().map_or(0, |m| m.size),
            _ => 0,
        };
        let total = so_far + h.payload_len;
        if total > self.config.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                size: total,
                max: self.config.max_message_size,
            });
        }
        // Both limits are usize, so the length fits.
        Ok(h.payload_len as usize)
    }

    /// Unmasks and checks what has arrived of the current frame's payload; completes the frame
    /// when all of it is there. With `stream`, a large data message comes out in chunks.
    fn read_payload(&mut self, stream: bool) -> Result<Progress, ProtocolError> {
        // At least 1: a zero set directly on the public field would hand out empty chunks forever.
        let threshold = self.config.stream_threshold.max(1);
        let Some(f) = self.frame.as_mut() else {
            return Ok(Progress::NeedMore);
        };
        let data_frame = !f.header.opcode.is_control();
        // Compressed text is validated after inflation, so it counts as binary here.
        let plain_text =
            data_frame && self.message.as_ref().is_some_and(|m| m.text && !m.compressed);
        let avail = self.read_buf.len().min(f.len);
        if !f.started {
            f.started = true;
            // A whole unfragmented text frame is validated once when the message is built;
            // anything arriving in pieces is validated as it comes, to fail fast.
            let whole = avail == f.len && f.header.fin && f.header.opcode != OpCode::Continuation;
            f.incremental = plain_text && !whole;
        }
        if avail > f.checked {
            let fresh = &mut self.read_buf[f.checked..avail];
            if let Some(key) = f.header.mask {
                apply_mask(fresh, key, f.taken + f.checked);
            }
            if f.incremental {
                self.utf8.feed(fresh).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            f.checked = avail;
        }
        if avail < f.len {
            let Some(m) = self.message.as_mut().filter(|m| data_frame && !m.compressed) else {
                return Ok(Progress::NeedMore);
            };
            let pending = if f.incremental { self.utf8.pending() } else { 0 };
            let ready = (m.buf.len() + f.checked).saturating_sub(pending);
            if !(stream || m.streaming) || ready < threshold {
                return Ok(Progress::NeedMore);
            }
            // Hand out what has arrived of the frame, keeping an unfinished code point back.
            let mut data = take_into(&mut m.buf, &mut self.read_buf, f.checked);
            f.taken += f.checked;
            f.len -= f.checked;
            f.checked = 0;
            m.buf = data.split_off(ready);
            let first = !std::mem::replace(&mut m.streaming, true);
            self.data_activity = true;
            return Ok(Progress::Event(Event::Chunk(Chunk::validated(
                m.text,
                data.freeze(),
                first,
                false,
            ))));
        }
        let header = f.header;
        let incremental = f.incremental;
        let payload = self.read_buf.split_to(f.len);
        self.frame = None;

        match header.opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if self.config.auto_pong && !self.close_sent {
                    self.queue_frame(OpCode::Pong, payload.clone());
                    self.reply_queued = true;
                }
                Ok(Progress::Event(Event::Message(Message::Ping(payload))))
            }
            OpCode::Pong => Ok(Progress::Event(Event::Message(Message::Pong(payload.freeze())))),
            OpCode::Close => self.read_close(payload).map(|m| Progress::Event(Event::Message(m))),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                let Some(m) = self.message.as_mut() else {
                    // check_header refuses a continuation without a message.
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if m.buf.is_empty() {
                    m.buf = payload;
                } else {
                    m.buf.extend_from_slice(&payload);
                }
                let streamable = (stream || m.streaming) && !m.compressed;
                if header.fin {
                    let Some(m) = self.message.take() else {
                        return Err(ProtocolError::UnexpectedContinuation);
                    };
                    if !(streamable && m.streaming) {
                        return self
                            .finish(m, incremental)
                            .map(|m| Progress::Event(Event::Message(m)));
                    }
                    if incremental {
                        self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                    self.data_activity = true;
                    let chunk = Chunk::validated(m.text, m.buf.freeze(), false, true);
                    return Ok(Progress::Event(Event::Chunk(chunk)));
                }
                let pending = if incremental { self.utf8.pending() } else { 0 };
                let ready = m.buf.len().saturating_sub(pending);
                if !streamable || ready < threshold {
                    return Ok(Progress::Fragment);
                }
                let mut data = std::mem::take(&mut m.buf);
                m.buf = data.split_off(ready);
                let first = !std::mem::replace(&mut m.streaming, true);
                self.data_activity = true;
                Ok(Progress::Event(Event::Chunk(Chunk::validated(
                    m.text,
                    data.freeze(),
                    first,
                    false,
                ))))
            }
        }
    }

    /// Builds a complete data message: inflates it if compressed, then checks text. `incremental`
    /// says whether the validator has seen the text already.
    fn finish(&mut self, m: Partial, incremental: bool) -> Result<Message, ProtocolError> {
        self.data_activity = true;
        let buf = if m.compressed {
            match self.deflate.as_mut() {
                Some(d) => d.decompress(&m.buf, self.config.max_message_size)?,
                // check_header refuses RSV1 without the extension.
                None => return Err(ProtocolError::ReservedBits(RSV1)),
            }
        } else {
            m.buf
        };
        if !m.text {
            return Ok(Message::Binary(buf.freeze()));
        }
        if incremental {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Utf8Bytes::try_from(buf.freeze()).map(Message::Text).map_err(|_| ProtocolError::InvalidUtf8)
    }

    /// Handles the peer's close frame (RFC 6455 §5.5.1, §7.4): checks it and echoes the code.
    fn read_close(&mut self, mut payload: BytesMut) -> Result<Message, ProtocolError> {
        let frame = match payload.len() {
            0 => None,
            1 => return Err(ProtocolError::InvalidClosePayload),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                payload.advance(2);
                let reason = Utf8Bytes::try_from(payload.freeze())
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                Some(CloseFrame { code, reason })
            }
        };
        self.close_received = true;
        self.read_done = true;
        self.message = None;
        if !self.close_sent {
            // RFC 6455 §5.5.1: reply with a close frame, typically echoing the status code.
            self.queue_close(frame.as_ref().map(|f| (f.code, "")));
            self.reply_queued = true;
        }
        Ok(Message::Close(frame))
    }

    /// Lets go of an empty read buffer's memory, so idle connections hold none (and views into a
    /// driver's shared scratch buffer do not pin it).
    fn release_read_buf(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            self.read_buf = BytesMut::new();
        }
    }

    /// What to report when the buffered input is used up.
    fn end_of_input(&mut self) -> Option<Result<Event, ProtocolError>> {
        if !self.eof {
            return None;
        }
        self.read_done = true;
        if self.close_sent {
            // We asked to close and the peer hung up without replying: over, not an error.
            return None;
        }
        self.failed = true;
        Some(Err(ProtocolError::ResetWithoutClosingHandshake))
    }

    /// Fails the connection (RFC 6455 §7.1.7): queues the close frame for `err` and stops
    /// reading.
    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        if !self.close_sent {
            let reason = err.to_string();
            // Reasons are ASCII and kept under the 123-byte limit.
            let reason = if reason.len() <= 123 { reason.as_str() } else { "" };
            self.queue_close(Some((err.close_code(), reason)));
            self.reply_queued = true;
        }
        self.failed = true;
        self.read_done = true;
        self.frame = None;
        self.message = None;
        self.read_buf = BytesMut::new();
        err
    }

    fn queue_close(&mut self, frame: Option<(CloseCode, &str)>) {
        let mut payload = Vec::with_capacity(125);
        if let Some((code, reason)) = frame {
            payload.extend_from_slice(&code.0.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
        }
        self.queue_frame(OpCode::Close, Bytes::from(payload));
        self.close_sent = true;
    }

    /// Queues a data message as one frame, compressed when the extension is on and it pays.
    fn queue_data(&mut self, opcode: OpCode, payload: Bytes) {
        self.data_activity = true;
        match self.deflate.as_mut().and_then(|d| d.compress(&payload)) {
            Some(compressed) => self.queue_frame_rsv(opcode, compressed, RSV1),
            None => self.queue_frame(opcode, payload),
        }
    }

    fn queue_frame(&mut self, opcode: OpCode, payload: Bytes) {
        self.queue_frame_rsv(opcode, payload, 0);
    }

    fn queue_frame_rsv(&mut self, opcode: OpCode, payload: Bytes, rsv: u8) {
        self.queue(opcode, payload, rsv, true);
    }

    fn queue(&mut self, opcode: OpCode, payload: Bytes, rsv: u8, fin: bool) {
        let mask = self.rng.as_mut().map(|rng| rng.next_u32().to_ne_bytes());
        let header = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
        self.out.push_frame(&header, payload);
    }
}

enum Progress {
    NeedMore,
    Fragment,
    Event(Event),
}

/// `buf` followed by the first `n` bytes of `read_buf`, which are taken out of it (without a
/// copy when `buf` is empty).
fn take_into(buf: &mut BytesMut, read_buf: &mut BytesMut, n: usize) -> BytesMut {
    if buf.is_empty() {
        return read_buf.split_to(n);
    }
    let mut data = std::mem::take(buf);
    data.extend_from_slice(&read_buf[..n]);
    read_buf.advance(n);
    data
}

/// A chunk seen by a caller of `poll_message`: a message of its own.
fn chunk_to_message(chunk: Chunk) -> Message {
    let text = chunk.is_text();
    let data = chunk.into_data();
    if !text {
        return Message::Binary(data);
    }
    // Text chunks hold whole code points of validated text, so this check passes.
    match Utf8Bytes::try_from(data.clone()) {
        Ok(t) => Message::Text(t),
        Err(_) => Message::Binary(data),
    }
}

fn check_control_len(len: usize) -> Result<(), SendError> {
    if len > 125 {
        return Err(SendError::ControlFrameTooLong(len));
    }
    Ok(())
}

/// Outgoing bytes: small frames coalesced into one buffer, large payloads queued as their own
/// chunks without copying. Implements [`Buf`] with vectored chunks.
#[derive(Debug)]
pub struct SendQueue {
    /// A small frame queued when the queue was empty, sent before everything else: the common
    /// small echo goes out without a heap allocation. `small[small_pos..small_len]` is unsent.
    small: [u8; SMALL_FRAME_MAX],
    small_pos: u8,
    small_len: u8,
    /// Sealed chunks, sent after `small` and before `tail`.
    chunks: VecDeque<Bytes>,
    /// The buffer small frames are appended to.
    tail: BytesMut,
    len: usize,
}

/// The largest frame (header included) kept in [`SendQueue`]'s inline buffer: a 20-byte message
/// is 22 bytes from a server, 26 from a client.
const SMALL_FRAME_MAX: usize = 64;

impl Default for SendQueue {
    fn default() -> Self {
        Self {
            small: [0; SMALL_FRAME_MAX],
            small_pos: 0,
            small_len: 0,
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            len: 0,
        }
    }
}

impl SendQueue {
    fn push_frame(&mut self, header: &FrameHeader, payload: Bytes) {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let total = n + payload.len();
        if self.len == 0 && total <= SMALL_FRAME_MAX {
            self.small[..n].copy_from_slice(&head[..n]);
            self.small[n..total].copy_from_slice(&payload);
            if let Some(key) = header.mask {
                apply_mask(&mut self.small[n..total], key, 0);
            }
            // Both fit in a u8: total <= SMALL_FRAME_MAX.
            self.small_pos = 0;
            self.small_len = total as u8;
            self.len = total;
            return;
        }
        if self.tail.capacity() == 0 {
            let inline = header.mask.is_some() || payload.len() <= INLINE_PAYLOAD_MAX;
            let body = if inline { payload.len() } else { 0 };
            self.tail.reserve((n + body).max(SEND_CHUNK));
        }
        self.tail.extend_from_slice(&head[..n]);
        if let Some(key) = header.mask {
            // A masked payload must be copied anyway: mask it in its place in the buffer.
            let start = self.tail.len();
            self.tail.extend_from_slice(&payload);
            apply_mask(&mut self.tail[start..], key, 0);
        } else if payload.len() <= INLINE_PAYLOAD_MAX {
            self.tail.extend_from_slice(&payload);
        } else {
            self.chunks.push_back(self.tail.split().freeze());
            self.chunks.push_back(payload);
        }
        self.len += n + header.payload_len as usize;
    }
}

impl Buf for SendQueue {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        if self.small_pos < self.small_len {
            return &self.small[usize::from(self.small_pos)..usize::from(self.small_len)];
        }
        match self.chunks.iter().find(|c| !c.is_empty()) {
            Some(c) => c,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the send queue");
        self.len -= cnt;
        let small = usize::from(self.small_len - self.small_pos).min(cnt);
        // `small` <= the u8 gap above.
        self.small_pos += small as u8;
        cnt -= small;
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(cnt);
                    return;
                }
                None => {
                    self.tail.advance(cnt);
                    break;
                }
            }
        }
        if self.len == 0 {
            // Everything is written: let go of the buffer so idle connections hold no memory;
            // the next batch allocates once (see `push_frame`).
            self.small_pos = 0;
            self.small_len = 0;
            if self.tail.capacity() > 0 {
                self.tail = BytesMut::new();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        if self.small_pos < self.small_len && !dst.is_empty() {
            dst[0] = IoSlice::new(self.chunk());
            n = 1;
        }
        for c in &self.chunks {
            if n == dst.len() {
                return n;
            }
            if !c.is_empty() {
                dst[n] = IoSlice::new(c);
                n += 1;
            }
        }
        if n < dst.len() && !self.tail.is_empty() {
            dst[n] = IoSlice::new(&self.tail);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, mask: Option<[u8; 4]>) -> (FrameHeader, Bytes) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + payload_len) as u8).collect();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask,
            payload_len: payload_len as u64,
        };
        (header, Bytes::from(payload))
    }

    /// The bytes a frame should have on the wire.
    fn wire(header: &FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = header.mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    /// Queues frames of these payload sizes (some masked) and drains the queue `step` bytes at a
    /// time, through `chunk` or through `chunks_vectored`; the bytes must come out in order.
    fn check(sizes: &[usize], step: usize, vectored: bool) {
        let mut q = SendQueue::default();
        let mut expected = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let mask = (i % 3 == 2).then_some([9, 8, 7, 6]);
            let (h, p) = frame(len, mask);
            expected.extend(wire(&h, &p));
            q.push_frame(&h, p);
        }
        assert_eq!(q.remaining(), expected.len());
        let mut out = Vec::new();
        while q.has_remaining() {
            let mut piece = Vec::new();
            if vectored {
                let mut slices = [IoSlice::new(&[]); 8];
                let n = q.chunks_vectored(&mut slices);
                assert!(n > 0);
                for s in &slices[..n] {
                    piece.extend_from_slice(s);
                }
            } else {
                piece.extend_from_slice(q.chunk());
            }
            piece.truncate(step);
            q.advance(piece.len());
            out.extend(piece);
        }
        assert_eq!(out, expected, "sizes {sizes:?}, step {step}, vectored {vectored}");
        assert_eq!((q.small_len, q.tail.capacity()), (0, 0), "a drained queue holds nothing");
    }

    #[test]
    fn send_queue_keeps_frame_order_across_inline_coalesced_and_large_frames() {
        let cases: &[&[usize]] = &[
            &[20],
            &[20, 20, 20],
            &[62, 63, 1],
            &[20, 5000, 20],
            &[5000, 20, 20],
            &[0, 125, 126, 65536, 20],
            &[20, 20, 70_000, 3, 4097],
        ];
        for sizes in cases {
            for step in [1, 3, 22, 64, 1000, usize::MAX] {
                check(sizes, step, false);
                check(sizes, step, true);
            }
        }
    }

    #[test]
    fn a_small_frame_queued_after_a_partial_write_goes_after_it() {
        let mut q = SendQueue::default();
        let (h1, p1) = frame(20, None);
        let (h2, p2) = frame(20, None);
        let mut expected = wire(&h1, &p1);
        expected.extend(wire(&h2, &p2));
        q.push_frame(&h1, p1);
        // Part of the first frame is written before the second is queued.
        let first = q.chunk()[..5].to_vec();
        q.advance(5);
        q.push_frame(&h2, p2);
        let mut out = first;
        out.extend(q.copy_to_bytes(q.remaining()));
        assert_eq!(out, expected);
    }
}
