//! The session state machine: frames in, messages out; messages in, frames out.
//!
//! [`Connection`] owns the read buffer, the message being reassembled, the send queue and the
//! close handshake. It never blocks and never does I/O; see the crate docs for the driver loop.
//!
//! The receive path is in `recv`, the send queue in `send_queue`, timers in `timers`.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::config::Config;
use crate::deflate::{Deflate, Params};
use crate::error::{ProtocolError, SendError};
use crate::frame::{FrameHeader, OpCode};
use crate::message::{Chunk, CloseCode, CloseFrame, Event, Message, Utf8Bytes};
use crate::shared::SharedFrame;
use crate::utf8::Utf8Validator;

mod recv;
mod send_queue;
mod timers;

pub use send_queue::SendQueue;

use recv::{InFrame, Partial, Progress, RSV1};
use timers::Keepalive;

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
    /// The closing handshake, with the timer of its current stage.
    phase: Phase,
    /// The transport reached end of stream (what is buffered may still hold messages).
    eof: bool,
    keepalive: Keepalive,
    /// The latest `now` given to `handle_timeout`.
    clock: Option<Instant>,
    /// The core queued a frame of its own (pong, close reply, keepalive ping) that should go
    /// out without waiting for the application's next call.
    reply_queued: bool,
    /// An error raised by a timer, reported by the next `poll_message`.
    pending_error: Option<ProtocolError>,
    /// The answer to the latest ping, held back while the send queue is full.
    deferred_pong: Option<Box<Bytes>>,
}

/// The closing handshake (RFC 6455 §7) as one value: each stage carries only what belongs to
/// it, so "closed but still reading" or "timed out while open" cannot be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Messages flow both ways.
    Open,
    /// Our close frame is queued; messages from the peer are still delivered until its close
    /// arrives (RFC 6455 §7.1.2), within the close timeout.
    CloseSent { timer: CloseTimer },
    /// No more messages either way. A client that completed the handshake still waits (with
    /// `timer`) for the server to close TCP first (RFC 6455 §7.1.1).
    Ended { end: End, timer: CloseTimer },
}

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both close frames went: the closing handshake completed.
    Handshake,
    /// The peer broke the protocol or stopped answering keepalive pings: our close is queued
    /// and nothing more is read.
    Failed,
    /// The transport ended (after our close, or with no close at all).
    Eof,
    /// The close timeout passed.
    TimedOut,
}

/// The close timeout of a closing stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseTimer {
    /// No close timeout is configured, or none is needed.
    Off,
    /// Armed by the next `handle_timeout` (the close was queued by a call without a clock).
    Due,
    /// Fires at this instant.
    At(Instant),
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
            phase: Phase::Open,
            eof: false,
            keepalive: Keepalive::default(),
            clock: None,
            reply_queued: false,
            pending_error: None,
            deferred_pong: None,
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
        match self.phase {
            Phase::Open => State::Open,
            Phase::CloseSent { .. } => State::Closing,
            Phase::Ended { .. } => State::Closed,
        }
    }

    /// Whether the driver should close the transport once [`Self::transmit`] is empty.
    ///
    /// The core sets no deadline for that last write: a driver bounds it itself (the tokio
    /// driver gives it [`Config::close_timeout`], 10 s when unset), since a peer that stopped
    /// reading may never take the close frame.
    ///
    /// The server closes TCP first after a closing handshake (RFC 6455 §7.1.1); a client waits
    /// for the server to do so, up to [`Config::close_timeout`].
    pub fn should_close_transport(&self) -> bool {
        match self.phase {
            Phase::Ended { end: End::Handshake, .. } => self.role == Role::Server || self.eof,
            Phase::Ended { .. } => true,
            Phase::Open | Phase::CloseSent { .. } => false,
        }
    }

    /// The read buffer, with spare capacity for the driver to read into. Bytes appended to it
    /// are parsed by the next [`Self::poll_message`].
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        if self.is_read_done() {
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
        if !self.is_read_done() && !data.is_empty() {
            self.keepalive.rx_activity = true;
            self.read_buf.extend_from_slice(data);
        }
    }

    /// Takes received bytes by value. When nothing is buffered (the usual case between
    /// messages) the buffer is adopted without a copy, so a driver can read into a scratch
    /// buffer shared by many connections and hand over just the filled part. (Messages never
    /// keep such a buffer alive: small payloads are copied out of it.)
    pub fn handle_input_buf(&mut self, data: BytesMut) {
        if self.is_read_done() || data.is_empty() {
            return;
        }
        // Bytes from the peer prove it is alive (for keepalive) before a frame is parsed, so a
        // driver can ask `wants_clock` right after the read.
        self.keepalive.rx_activity = true;
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

    /// Echoes the complete unfragmented data messages of at most 125 bytes at the front of
    /// what is buffered, straight from the input into the send queue: what an echo server does
    /// with [`Self::poll_event`] and [`Self::send`], without building a message. Returns how
    /// many it echoed. It stops at anything else (a control frame, a larger or fragmented
    /// message, an incomplete frame, text that is not valid UTF-8, a full send queue), which
    /// [`Self::poll_event`] then handles as usual, so the order is kept and every check still
    /// applies. Only a server echoes this way, and never with permessage-deflate negotiated (the
    /// echo would be compressed), after a close, or while a chunked send is unfinished.
    #[inline]
    pub fn echo_buffered(&mut self) -> usize {
        if self.read_buf.is_empty() {
            return 0;
        }
        self.echo_read_buf()
    }

    fn echo_read_buf(&mut self) -> usize {
        if !self.echoes_in_place() {
            return 0;
        }
        let input = std::mem::take(&mut self.read_buf);
        let (consumed, echoed) = self.echo_frames(&input);
        self.read_buf = input;
        self.read_buf.advance(consumed);
        echoed
    }

    /// [`Self::echo_buffered`] for bytes not handed over yet, which must be the next bytes of
    /// the stream (so only while [`Self::has_buffered_input`] is false): echoes the complete
    /// small messages at the front of `input` and returns how many bytes of it that took.
    /// The rest goes to [`Self::handle_input_buf`] (or [`Self::handle_input`]) as usual. A
    /// driver reading into a shared scratch buffer so hands over nothing in the common case.
    pub fn echo_input(&mut self, input: &[u8]) -> usize {
        if self.has_buffered_input() || self.is_read_done() || !self.echoes_in_place() {
            return 0;
        }
        let (consumed, _) = self.echo_frames(input);
        consumed
    }

    fn echoes_in_place(&self) -> bool {
        self.role == Role::Server
            && self.phase == Phase::Open
            && self.frame.is_none()
            && self.message.is_none()
            && !self.sending_chunks
            && self.deflate.is_none()
            && self.pending_error.is_none()
            && self.deferred_pong.is_none()
    }

    /// The in-place echo over `input`: (bytes consumed, messages echoed).
    #[inline]
    fn echo_frames(&mut self, mut input: &[u8]) -> (usize, usize) {
        let max = 125.min(self.config.max_frame_size).min(self.config.max_message_size);
        let total = input.len();
        let mut echoed = 0;
        while let &[b0, b1, k0, k1, k2, k3, ref rest @ ..] = input {
            // FIN, no RSV bit, text or binary; masked, with a 7-bit length.
            if (b0 != 0x81 && b0 != 0x82) || b1 & 0x80 == 0 {
                break;
            }
            let len = usize::from(b1 & 0x7f);
            if len > max || rest.len() < len || self.is_send_buffer_full() {
                break;
            }
            // Text that is not UTF-8 stays in place for `poll_event`, which fails with 1007.
            if !self.out.push_echo(b0, &rest[..len], [k0, k1, k2, k3], b0 == 0x81) {
                break;
            }
            input = &rest[len..];
            echoed += 1;
        }
        if echoed > 0 {
            self.keepalive.rx_activity = true;
            self.keepalive.data_activity = true;
        }
        (total - input.len(), echoed)
    }

    /// Like [`Self::poll_message`], but streams large data messages: an uncompressed data
    /// message that has not fully arrived when [`Config::stream_threshold`] of its bytes are
    /// waiting is delivered as [`Event::Chunk`]s as it arrives, in pieces of at least that size
    /// (the last may be smaller), instead of being held whole. Smaller messages, compressed
    /// messages and control frames arrive as [`Event::Message`]. Limits still count the whole
    /// message, and text is still validated: a text message's last chunk is delivered only once
    /// all of it proved valid UTF-8.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Result<Event, ProtocolError>> {
        if self.is_quiet() {
            self.release_read_buf();
            return None;
        }
        self.poll_inner(true)
    }

    /// Nothing received, nothing owed: the usual state between messages (a driver asks for an
    /// event before every read), answered without a call.
    #[inline]
    fn is_quiet(&self) -> bool {
        self.read_buf.is_empty()
            && self.frame.is_none()
            && !self.eof
            && self.pending_error.is_none()
            && self.deferred_pong.is_none()
    }

    fn poll_inner(&mut self, stream: bool) -> Option<Result<Event, ProtocolError>> {
        if self.is_quiet() {
            self.release_read_buf();
            return None;
        }
        self.queue_deferred_pong();
        if let Some(err) = self.pending_error.take() {
            return Some(Err(err));
        }
        loop {
            if self.is_read_done() {
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
        if self.phase != Phase::Open {
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
        if self.phase != Phase::Open {
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
        self.keepalive.data_activity = true;
        self.queue(opcode, chunk.into_data(), 0, fin);
        Ok(())
    }

    /// Queues a data message encoded once for many connections ([`SharedFrame`]): its bytes
    /// are copied into the send buffer next to other small frames, or, when large, queued as
    /// they are (the buffer is shared, not copied). Never compressed. Servers only.
    ///
    /// Refused like [`Self::send`]: after a close, and while a message sent in chunks is not
    /// finished.
    pub fn send_shared(&mut self, frame: &SharedFrame) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::Closed);
        }
        if self.role != Role::Server {
            return Err(SendError::SharedFrameFromClient);
        }
        if self.sending_chunks {
            return Err(SendError::ChunkedMessageInProgress);
        }
        if frame.is_compressed() && !self.takes_shared_compressed() {
            return Err(SendError::CompressionNotNegotiated);
        }
        self.keepalive.data_activity = true;
        self.out.push_encoded(frame.bytes());
        Ok(())
    }

    /// Whether this connection may send the compressed form of a [`SharedFrame`]
    /// ([`SharedFrame::compressed`]): a server with permessage-deflate negotiated with
    /// `server_no_context_takeover` and a 15-bit server window.
    pub fn takes_shared_compressed(&self) -> bool {
        self.role == Role::Server
            && self.deflate.as_ref().is_some_and(|d| d.takes_stateless_output())
    }

    /// Starts the closing handshake: queues a close frame. Nothing may be sent after it; messages
    /// the peer sent before its reply are still delivered.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::Closed);
        }
        if let Some(f) = &frame {
            if !f.code.is_sendable() {
                return Err(SendError::InvalidCloseCode(f.code.0));
            }
            check_control_len(2 + f.reason.len())?;
        }
        self.queue_close(frame.as_ref().map(|f| (f.code, f.reason.as_str())), None);
        Ok(())
    }

    /// The bytes waiting to be written to the transport, as a vectored [`Buf`]. The driver
    /// writes from it and advances it by what was written.
    ///
    /// A pong held back while the queue was full joins it here once there is room.
    #[inline]
    pub fn transmit(&mut self) -> &mut SendQueue {
        self.queue_deferred_pong();
        &mut self.out
    }

    /// Whether the core queued a frame of its own since the last call (a pong, a close reply or
    /// the close for a violation, a keepalive ping); clears the flag. Reading implies writing:
    /// a driver that sees `true` writes [`Self::transmit`] now instead of when the application
    /// next calls it.
    pub fn take_reply_queued(&mut self) -> bool {
        std::mem::take(&mut self.reply_queued)
    }

    /// Whether anything waits to be written: queued bytes, or a pong held back.
    #[inline]
    pub fn has_output(&self) -> bool {
        self.out.remaining() > 0 || self.deferred_pong.is_some()
    }

    /// How many bytes wait in [`Self::transmit`].
    pub fn buffered_amount(&self) -> usize {
        self.out.remaining()
    }

    /// Whether senders should wait for the transport to drain before queuing more
    /// ([`Config::write_buffer_high_water`]). Reading may go on: what the core queues by itself
    /// while reading is bounded (a close reply; pongs wait for room, only the latest kept).
    ///
    /// The mark is the same whatever is being received: while a large message streams in and
    /// its chunks go straight back out (an echo, a proxy), a peer that does not read its
    /// echo is met with TCP flow control, not with a send queue that grows with the message.
    pub fn is_send_buffer_full(&self) -> bool {
        // An empty queue is never full, whatever the mark (a mark of 0 must not spin senders).
        let queued = self.out.remaining();
        queued > 0 && queued >= self.config.write_buffer_high_water
    }

    /// Queues the pong held back by a full send queue, once there is room.
    #[inline]
    fn queue_deferred_pong(&mut self) {
        if self.deferred_pong.is_some() {
            self.queue_deferred_pong_now();
        }
    }

    fn queue_deferred_pong_now(&mut self) {
        if self.is_send_buffer_full() {
            return;
        }
        if let Some(payload) = self.deferred_pong.take() {
            if self.phase == Phase::Open {
                self.queue_frame(OpCode::Pong, *payload);
                self.reply_queued = true;
            }
        }
    }

    /// No further messages will be reported.
    fn is_read_done(&self) -> bool {
        matches!(self.phase, Phase::Ended { .. })
    }

    /// Lets go of an empty read buffer's memory, so idle connections hold none.
    #[inline]
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
        let closing = matches!(self.phase, Phase::CloseSent { .. });
        self.phase = Phase::Ended { end: End::Eof, timer: CloseTimer::Off };
        if closing {
            // We asked to close and the peer hung up without replying: over, not an error.
            return None;
        }
        Some(Err(ProtocolError::ResetWithoutClosingHandshake))
    }

    /// The peer's close frame arrived (RFC 6455 §5.5.1): reply unless our close already went,
    /// and stop reading.
    fn peer_closed(&mut self, code: Option<CloseCode>) {
        let timer = match self.phase {
            Phase::Open => {
                // Reply with a close frame, typically echoing the status code.
                self.queue_close(code.map(|c| (c, "")), None);
                self.reply_queued = true;
                self.close_timer_from(None)
            }
            // The client keeps the close timer running while it waits for the server's TCP close.
            Phase::CloseSent { timer } => timer,
            Phase::Ended { .. } => return,
        };
        let timer = if self.role == Role::Client { timer } else { CloseTimer::Off };
        self.phase = Phase::Ended { end: End::Handshake, timer };
    }

    /// Fails the connection (RFC 6455 §7.1.7): queues the close frame for `err` and stops
    /// reading.
    fn fail(&mut self, err: ProtocolError) -> ProtocolError {
        if self.phase == Phase::Open {
            let reason = err.to_string();
            // Reasons are ASCII and kept under the 123-byte limit.
            let reason = if reason.len() <= 123 { reason.as_str() } else { "" };
            self.queue_close(Some((err.close_code(), reason)), None);
            self.reply_queued = true;
        }
        self.phase = Phase::Ended { end: End::Failed, timer: CloseTimer::Off };
        self.frame = None;
        self.message = None;
        self.read_buf = BytesMut::new();
        err
    }

    /// Queues our close frame and enters the closing stage, its timer armed at `now` when
    /// known (see [`Self::poll_timeout`]).
    fn queue_close(&mut self, frame: Option<(CloseCode, &str)>, now: Option<Instant>) {
        let mut payload = Vec::with_capacity(125);
        if let Some((code, reason)) = frame {
            payload.extend_from_slice(&code.0.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
        }
        self.queue_frame(OpCode::Close, Bytes::from(payload));
        if self.phase == Phase::Open {
            self.phase = Phase::CloseSent { timer: self.close_timer_from(now) };
        }
    }

    /// Queues a data message as one frame, compressed when the extension is on and it pays.
    fn queue_data(&mut self, opcode: OpCode, payload: Bytes) {
        self.keepalive.data_activity = true;
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
