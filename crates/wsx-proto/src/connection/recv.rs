//! The receive path: frame headers checked against RFC 6455 and the limits, payloads unmasked
//! and validated, fragments reassembled or streamed out, control frames answered.

use bytes::{Buf, BytesMut};

use super::{Connection, Phase, Role};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, OpCode};
use crate::mask::apply_mask;
use crate::message::{Chunk, CloseCode, CloseFrame, Event, Message, Utf8Bytes};
use crate::utf8::Utf8Validator;

/// Payloads up to this size are copied out of the read buffer into an allocation of their own,
/// so a message the application keeps never pins the buffer it arrived in: that buffer may be
/// a thread's read slab shared by many connections (64 KiB), or a connection's read buffer
/// (16 KiB at least). Larger payloads are split off without a copy: one that arrived inside a
/// frame read goes to a buffer sized to the frame; one that arrived whole in a slab read pins
/// that slab, at most 16 times its own size.
const COPY_OUT_MAX: usize = 4 << 10;

#[derive(Debug)]
pub(super) struct InFrame {
    header: FrameHeader,
    /// Payload bytes of this frame not yet taken out of `read_buf`.
    pub(super) len: usize,
    /// Payload bytes already taken out as chunks: the masking key's phase for the rest.
    taken: usize,
    /// Payload bytes at the front of `read_buf` already unmasked (and validated, for text).
    checked: usize,
    /// Whether the first bytes of the payload have been looked at (and `incremental` set).
    started: bool,
    /// Whether this frame's text is validated piece by piece as it arrives.
    incremental: bool,
}

#[derive(Debug)]
pub(super) struct Partial {
    text: bool,
    compressed: bool,
    /// Received bytes not yet delivered.
    buf: BytesMut,
    /// Bytes of the message received so far, delivered or not: the size limit counts them.
    size: u64,
    /// Part of it was delivered as chunks, so the rest is too.
    streaming: bool,
    /// Uncompressed text every frame of which so far went through `Connection::utf8` as it
    /// arrived: once the validator's `finish` accepts it, the text needs no second check.
    validated: bool,
}

/// RSV1: set on the first frame of a compressed message (RFC 7692 §6).
pub(super) const RSV1: u8 = 0b100;

impl Connection {
    /// Reads and checks a frame header. `Ok(false)` when the header is not complete yet.
    pub(super) fn read_header(&mut self) -> Result<bool, ProtocolError> {
        let Some((header, header_len)) = FrameHeader::decode(&self.read_buf)? else {
            return Ok(false);
        };
        let len = self.check_header(&header)?;
        self.read_buf.advance(header_len);
        self.keepalive.rx_activity = true;
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                let text = header.opcode == OpCode::Text;
                let compressed = header.rsv & RSV1 != 0;
                // A fresh validator per message, so what it accepts is exactly this message's
                // bytes (the core stops reading after an error, but this does not rely on it).
                self.utf8 = Utf8Validator::new();
                self.message = Some(Partial {
                    text,
                    compressed,
                    buf: BytesMut::new(),
                    size: len as u64,
                    streaming: false,
                    validated: text && !compressed,
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
    pub(super) fn read_payload(&mut self, stream: bool) -> Result<Progress, ProtocolError> {
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
            if let Some(m) = self.message.as_mut().filter(|_| data_frame) {
                m.validated &= f.incremental;
            }
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
            self.keepalive.data_activity = true;
            return Ok(Progress::Event(Event::Chunk(Chunk::validated(
                m.text,
                data.freeze(),
                first,
                false,
            ))));
        }
        let header = f.header;
        let incremental = f.incremental;
        let payload = take_payload(&mut self.read_buf, f.len);
        self.frame = None;

        match header.opcode {
            OpCode::Ping => {
                let payload = payload.freeze();
                if self.config.auto_pong && self.phase == Phase::Open {
                    // RFC 6455 §5.5.3 allows answering only the most recent of several pings:
                    // while the send queue is full the answer waits (replacing an older one),
                    // so a peer that pings without reading cannot grow the queue.
                    // Boxed, and only then: rare, and 24 bytes less in every connection.
                    if self.is_send_buffer_full() {
                        self.deferred_pong = Some(Box::new(payload.clone()));
                    } else {
                        self.deferred_pong = None;
                        self.queue_frame(OpCode::Pong, payload.clone());
                        self.reply_queued = true;
                    }
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
                    self.keepalive.data_activity = true;
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
                self.keepalive.data_activity = true;
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
        self.keepalive.data_activity = true;
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
            if m.validated {
                // Every byte passed the validator as it arrived: no second pass (10 M
                // instructions for 1 MiB of mixed UTF-8; see `crate::mask`).
                return Ok(Message::Text(Utf8Bytes::from_validated(buf.freeze())));
            }
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
        self.message = None;
        self.peer_closed(frame.as_ref().map(|f| f.code));
        Ok(Message::Close(frame))
    }
}

pub(super) enum Progress {
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

/// The first `len` bytes of `read_buf`, taken out of it: copied when small (see
/// [`COPY_OUT_MAX`]), split off without a copy otherwise.
fn take_payload(read_buf: &mut BytesMut, len: usize) -> BytesMut {
    if len > COPY_OUT_MAX {
        return read_buf.split_to(len);
    }
    let payload = BytesMut::from(&read_buf[..len]);
    read_buf.advance(len);
    payload
}
