//! permessage-deflate (RFC 7692): negotiation in both roles and the message codec.
//!
//! Negotiation is pure string work on `Sec-WebSocket-Extensions`: a server picks the first offer
//! it can honour ([`negotiate`]); a client builds its offer ([`client_offer`]) and checks the
//! server's answer ([`accept_response`]). The result is a [`Params`], which can only hold valid
//! values, and a [`Deflate`] codec built from it compresses and inflates whole messages.
//!
//! The backend is flate2 with zlib-rs. On a 64 KiB JSON-like message at level 1 (this machine,
//! one core) it compressed at 1,340 MB/s and inflated at 1,690-1,770 MB/s, against 600 and
//! 1,230 MB/s for C zlib and 570-640 and 850 MB/s for miniz_oxide (flate2's default backend, which
//! also cannot use window bits below 15); zlib-rs's level 1 compresses less (14.3 KB against C
//! zlib's 10.0 KB), so raise [`DeflateConfig::level`] when bandwidth matters more than CPU.
//!
//! Costs: with context takeover, each direction keeps its LZ77 window for the connection's life.
//! zlib's compressor takes about `2^(bits+2) + 128 KiB` (256 KiB at 15 bits) and its
//! decompressor about `2^bits + 7 KiB` (39 KiB at 15 bits); both are allocated on first use and
//! kept until the connection ends, so 50,000 connections that each sent one message hold over
//! 10 GB. Without context takeover in a direction (`*_no_context_takeover`, the default of
//! [`DeflateConfig`]) a connection keeps no codec state for it between messages: the codec is
//! borrowed from a small per-thread pool for the one call that compresses or inflates a whole
//! message, reset, and given back, so the memory is per thread, not per connection. A compressed
//! message is never held half-inflated across reads: its compressed frames are reassembled
//! first (bounded by the message size limit) and inflated in one call, and
//! [`Connection::send_chunk`](crate::Connection::send_chunk) never compresses, so no message in
//! flight needs a codec between calls.
//!
//! The trade-off, measured on this machine (zlib-rs, level 1, 15-bit windows, 100,000 chat-like
//! JSON messages of about 190 B, one compress and one inflate each, user CPU time): with context
//! takeover they compress to 14 % of their size at 0.5-0.7 µs a message; without, to 98 % (zlib-rs
//! level 1 codes a message alone with fixed Huffman codes and little to refer back to) at
//! 3.9-4.1 µs, most of it zlib clearing its 128 KiB hash table at every reset. Level 2 compresses
//! such lone messages to 78 % at about 9 µs. Allocating a fresh codec per message instead of borrowing
//! one took 6.2-7.3 µs (callgrind: 488,000 instructions a message against 208,000 borrowed and
//! 6,100 with takeover; it counts every byte a `rep stosb` clears, which inflates the first two).
//! Turn context takeover on
//! ([`DeflateConfig::context_takeover`]) for few long-lived connections that send many small
//! similar messages.
//!
//! zlib cannot compress with an 8-bit window, so when a peer limits this side to 8 bits,
//! messages are sent uncompressed (which RFC 7692 always allows); inflating uses at least a
//! 9-bit window, which reads 8-bit streams correctly.

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::connection::Role;
use crate::error::{HandshakeError, ProtocolError};

/// The extension's registered name.
pub const NAME: &str = "permessage-deflate";

/// The tail every sync-flushed message ends with; stripped on send, re-appended on receive
/// (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What this endpoint offers (client) or accepts (server).
///
/// The default asks for no context takeover in both directions (RFC 7692 §7.1.1): a server
/// answers every offer with `server_no_context_takeover; client_no_context_takeover` (which the
/// RFC allows whether or not the client asked), a client offers both, and neither end keeps
/// codec state between messages (see [the module docs](self) for the measured cost in ratio and
/// CPU). [`DeflateConfig::context_takeover`] turns takeover on for both directions, at about
/// 300 KiB per connection that has sent and received a compressed message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Ask that the server reset its compression context after every message (client), or do
    /// so always (server). Saves the server's compressor (about 256 KiB at 15 bits) between
    /// messages, at the cost of ratio on small messages. Default `true`.
    pub server_no_context_takeover: bool,
    /// Ask that the client reset its compression context after every message (server: answer
    /// every offer with `client_no_context_takeover`; client: reset always and say so). Saves
    /// the server's decompressor (about 39 KiB at 15 bits) and the client's compressor between
    /// messages. Default `true`.
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (8-15 bits) the server may compress with.
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (8-15 bits) the client may compress with.
    pub client_max_window_bits: u8,
    /// zlib compression level, 0-9. Default 1: the fastest, still several times smaller for
    /// JSON-like text.
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed, saving the CPU of
    /// compressing what barely shrinks. Default 0: everything is compressed.
    pub min_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            min_size: 0,
        }
    }
}

impl DeflateConfig {
    /// Context takeover in both directions (`on`), or in neither: sets both
    /// `*_no_context_takeover` fields to `!on`. With it, small similar messages compress far
    /// better, and each connection keeps its compressor and decompressor (about 300 KiB at
    /// 15 bits) from its first compressed message until it ends.
    pub fn context_takeover(self, on: bool) -> Self {
        self.server_no_context_takeover(!on).client_no_context_takeover(!on)
    }

    /// Sets [`DeflateConfig::server_no_context_takeover`].
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::client_no_context_takeover`].
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::server_max_window_bits`] (pulled into 8..=15).
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = clamp_bits(bits);
        self
    }

    /// Sets [`DeflateConfig::client_max_window_bits`] (pulled into 8..=15).
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = clamp_bits(bits);
        self
    }

    /// Sets [`DeflateConfig::level`] (0-9).
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`DeflateConfig::min_size`].
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }
}

/// Negotiated parameters. Window bits are always within 8..=15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
    /// Whether the response names `client_max_window_bits` (only if the offer had it).
    client_bits_in_response: bool,
    server_bits_in_response: bool,
}

impl Params {
    /// Whether the server resets its context after each message.
    pub fn server_no_context_takeover(&self) -> bool {
        self.server_no_context_takeover
    }

    /// Whether the client resets its context after each message.
    pub fn client_no_context_takeover(&self) -> bool {
        self.client_no_context_takeover
    }

    /// The server's compression window, in bits.
    pub fn server_max_window_bits(&self) -> u8 {
        self.server_max_window_bits
    }

    /// The client's compression window, in bits.
    pub fn client_max_window_bits(&self) -> u8 {
        self.client_max_window_bits
    }

    /// The `Sec-WebSocket-Extensions` value of a server response accepting these parameters.
    pub fn to_response_header(&self) -> String {
        let mut out = String::from(NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_bits_in_response {
            out.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        }
        if self.client_bits_in_response {
            out.push_str(&format!("; client_max_window_bits={}", self.client_max_window_bits));
        }
        out
    }
}

/// Server side: the parameters for the first `permessage-deflate` offer in `header_values` (all
/// `Sec-WebSocket-Extensions` fields of the request) that can be accepted under `config`, or
/// `None` to go without compression. Offers with unknown, duplicate or invalid parameters are
/// declined (RFC 7692 §5).
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Option<Params> {
    for value in header_values {
        for offer in split_quoted(value, ',') {
            let Some((name, params)) = parse_extension(offer) else { continue };
            if !name.eq_ignore_ascii_case(NAME) {
                continue;
            }
            if let Some(p) = accept_offer(&params, config) {
                return Some(p);
            }
        }
    }
    None
}

fn accept_offer(params: &[ExtParam], config: &DeflateConfig) -> Option<Params> {
    let mut seen = Vec::with_capacity(params.len());
    let mut p = Params {
        server_no_context_takeover: config.server_no_context_takeover,
        client_no_context_takeover: config.client_no_context_takeover,
        server_max_window_bits: clamp_bits(config.server_max_window_bits),
        client_max_window_bits: 15,
        client_bits_in_response: false,
        server_bits_in_response: config.server_max_window_bits < 15,
    };
    for (name, value) in params {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (name.as_str(), value) {
            ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => {
                let bits = parse_bits(v)?;
                p.server_max_window_bits = p.server_max_window_bits.min(bits);
                p.server_bits_in_response = true;
            }
            ("client_max_window_bits", v) => {
                let offered = match v {
                    Some(v) => parse_bits(v)?,
                    None => 15,
                };
                p.client_max_window_bits = offered.min(clamp_bits(config.client_max_window_bits));
                p.client_bits_in_response = p.client_max_window_bits < 15 || v.is_some();
            }
            _ => return None,
        }
        seen.push(name);
    }
    Some(p)
}

/// Client side: the `Sec-WebSocket-Extensions` offer for `config`.
pub fn client_offer(config: &DeflateConfig) -> String {
    let mut out = String::from(NAME);
    if config.server_no_context_takeover {
        out.push_str("; server_no_context_takeover");
    }
    if config.client_no_context_takeover {
        out.push_str("; client_no_context_takeover");
    }
    if config.server_max_window_bits < 15 {
        out.push_str(&format!(
            "; server_max_window_bits={}",
            clamp_bits(config.server_max_window_bits)
        ));
    }
    // Always say the client can limit its window; a value only when configured.
    if config.client_max_window_bits < 15 {
        out.push_str(&format!(
            "; client_max_window_bits={}",
            clamp_bits(config.client_max_window_bits)
        ));
    } else {
        out.push_str("; client_max_window_bits");
    }
    out
}

/// Client side: checks the server's `Sec-WebSocket-Extensions` (all fields) against the offer
/// made from `config`. `Ok(None)` when the server declined compression. Anything the offer did
/// not allow fails the handshake (RFC 7692 §7.1).
pub fn accept_response<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Result<Option<Params>, HandshakeError> {
    let bad = |what: &str| HandshakeError::UnofferedExtension(what.to_owned());
    let mut accepted = None;
    for value in header_values {
        for ext in split_quoted(value, ',') {
            let (name, params) = parse_extension(ext).ok_or_else(|| bad(ext))?;
            if !name.eq_ignore_ascii_case(NAME) || accepted.is_some() {
                return Err(bad(ext));
            }
            let mut p = Params {
                server_no_context_takeover: false,
                client_no_context_takeover: config.client_no_context_takeover,
                server_max_window_bits: 15,
                client_max_window_bits: clamp_bits(config.client_max_window_bits),
                client_bits_in_response: false,
                server_bits_in_response: false,
            };
            let mut seen: Vec<String> = Vec::new();
            for (pname, value) in &params {
                let pname = pname.to_ascii_lowercase();
                if seen.contains(&pname) {
                    return Err(bad(ext));
                }
                match (pname.as_str(), value) {
                    ("server_no_context_takeover", None) => p.server_no_context_takeover = true,
                    ("client_no_context_takeover", None) => p.client_no_context_takeover = true,
                    ("server_max_window_bits", Some(v)) => {
                        let bits = parse_bits(v).ok_or_else(|| bad(ext))?;
                        if bits > clamp_bits(config.server_max_window_bits) {
                            return Err(bad(ext));
                        }
                        p.server_max_window_bits = bits;
                    }
                    ("client_max_window_bits", Some(v)) => {
                        let bits = parse_bits(v).ok_or_else(|| bad(ext))?;
                        if bits > clamp_bits(config.client_max_window_bits) {
                            return Err(bad(ext));
                        }
                        p.client_max_window_bits = bits;
                    }
                    _ => return Err(bad(ext)),
                }
                seen.push(pname);
            }
            if config.server_no_context_takeover && !p.server_no_context_takeover {
                // The offer asked for it; a server that accepts must agree (RFC 7692 §7.1.1.1).
                return Err(bad(ext));
            }
            if clamp_bits(config.server_max_window_bits) < 15
                && !seen.iter().any(|n| n == "server_max_window_bits")
            {
                // The offer limited the server's window; accepting means answering with a limit
                // no larger (RFC 7692 §7.1.2.1).
                return Err(bad(ext));
            }
            accepted = Some(p);
        }
    }
    Ok(accepted)
}

/// The permessage-deflate codec of one connection.
pub struct Deflate {
    level: Compression,
    min_size: usize,
    compress_bits: u8,
    compress_reset: bool,
    decompress_bits: u8,
    decompress_reset: bool,
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("compress_bits", &self.compress_bits)
            .field("compress_reset", &self.compress_reset)
            .field("decompress_bits", &self.decompress_bits)
            .field("decompress_reset", &self.decompress_reset)
            .finish_non_exhaustive()
    }
}

impl Deflate {
    /// The codec for `role` under the negotiated `params`.
    pub fn new(role: Role, params: &Params, config: &DeflateConfig) -> Self {
        let (ours, theirs) = match role {
            Role::Server => (
                (params.server_max_window_bits, params.server_no_context_takeover),
                (params.client_max_window_bits, params.client_no_context_takeover),
            ),
            Role::Client => (
                (params.client_max_window_bits, params.client_no_context_takeover),
                (params.server_max_window_bits, params.server_no_context_takeover),
            ),
        };
        Self {
            level: Compression::new(config.level.min(9)),
            min_size: config.min_size,
            compress_bits: ours.0,
            compress_reset: ours.1,
            decompress_bits: theirs.0.max(9),
            decompress_reset: theirs.1,
            compressor: None,
            decompressor: None,
        }
    }

    /// A compressor with no context between messages and the full 15-bit window, whose output
    /// any server connection that negotiated `server_no_context_takeover` with a 15-bit server
    /// window can send (see [`Self::takes_stateless_output`]): one compression of a message
    /// can then go to all of them.
    pub(crate) fn stateless(config: &DeflateConfig) -> Self {
        Self {
            level: Compression::new(config.level.min(9)),
            min_size: config.min_size,
            compress_bits: 15,
            compress_reset: true,
            decompress_bits: 15,
            decompress_reset: true,
            compressor: None,
            decompressor: None,
        }
    }

    /// Whether what [`Self::stateless`] compresses is valid from this codec's endpoint: it
    /// resets its own context after every message (so the peer expects no back-references
    /// into earlier ones) and may use a 15-bit window.
    pub(crate) fn takes_stateless_output(&self) -> bool {
        self.compress_reset && self.compress_bits == 15
    }

    /// Compresses one whole message, or returns `None` to send it uncompressed (too small, or a
    /// window zlib cannot produce). Without context takeover on this side the compressor is
    /// borrowed from the thread's pool for this call only.
    pub fn compress(&mut self, data: &[u8]) -> Option<Bytes> {
        if data.len() < self.min_size || self.compress_bits < 9 {
            return None;
        }
        let (level, bits) = (self.level, self.compress_bits);
        if self.compress_reset {
            // Borrowed and reset after use: nothing is kept on the connection.
            return pool::with_compressor(level, bits, |c| deflate_message(c, data));
        }
        let c = self
            .compressor
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let out = deflate_message(c, data);
        if out.is_none() {
            // zlib only fails on misuse; the stream state is unknown, so start over.
            c.reset();
        }
        out
    }

    /// Inflates one whole message's payload, failing with 1009 as soon as the output would pass
    /// `limit` bytes; memory never grows past `limit` plus one step. Data that does not inflate,
    /// or that follows a final (BFINAL) block, fails with 1007
    /// ([`ProtocolError::InvalidCompressedData`]). Without context takeover on the peer's side
    /// the decompressor is borrowed from the thread's pool for this call only.
    pub fn decompress(&mut self, data: &[u8], limit: usize) -> Result<BytesMut, ProtocolError> {
        let bits = self.decompress_bits;
        if self.decompress_reset {
            return pool::with_decompressor(bits, |d| inflate_message(d, data, limit).map(|r| r.0));
        }
        let d =
            self.decompressor.get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        match inflate_message(d, data, limit) {
            Ok((out, ended)) => {
                // A final block ends the stream, and with it any context to take over.
                if ended {
                    d.reset(false);
                }
                Ok(out)
            }
            Err(e) => {
                d.reset(false);
                Err(e)
            }
        }
    }
}

/// Compresses `data` as one sync-flushed message with the tail stripped (RFC 7692 §7.2.1).
/// `None` if zlib fails; the caller then resets `c`.
fn deflate_message(c: &mut Compress, data: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut pos = 0;
    loop {
        let before = c.total_in();
        // zlib only fails on misuse; sending this message uncompressed is always valid.
        c.compress_vec(&data[pos..], &mut out, FlushCompress::Sync).ok()?;
        pos += (c.total_in() - before) as usize;
        if pos == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(1024));
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    if out.is_empty() {
        // zlib emits nothing for empty input right after a flush; the message must still
        // be a valid block once the receiver appends the tail: an empty stored block's
        // header byte (RFC 7692 §7.2.3.6).
        out.push(0x00);
    }
    Some(Bytes::from(out))
}

/// Inflates one message (`data` and the tail) with `d`; also says whether a final block ended
/// the stream. On an error the caller resets `d`.
fn inflate_message(
    d: &mut Decompress,
    data: &[u8],
    limit: usize,
) -> Result<(BytesMut, bool), ProtocolError> {
    let too_large = |size: usize| ProtocolError::MessageTooLarge { size: size as u64, max: limit };
    let mut out: Vec<u8> =
        Vec::with_capacity(data.len().saturating_mul(2).clamp(64, limit.max(64)));
    for (is_payload, input) in [(true, data), (false, &TAIL[..])] {
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(too_large(out.len()));
                }
                // Grow by doubling, but never past limit + 1: one byte over is enough to know.
                let step = out.capacity().max(4096).min(limit.saturating_add(1) - out.len()).max(1);
                out.reserve_exact(step);
            }
            let before = d.total_in();
            let status = d
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            pos += (d.total_in() - before) as usize;
            if out.len() > limit {
                return Err(too_large(out.len()));
            }
            if status == Status::StreamEnd {
                // RFC 1951 §3.2.3: a block with BFINAL set ends the stream, so inflate
                // stops there. RFC 7692 §7.2.3.4 allows one byte after it, 0x00: the header
                // bits of the empty stored block that the appended tail completes. Anything
                // else the sender put after the final block would never be decompressed:
                // the message is malformed (§7.2.2), not to be silently cut short.
                if is_payload && !matches!(&input[pos..], [] | [0x00]) {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                return Ok((BytesMut::from(Bytes::from(out)), true));
            }
            if pos == input.len() && out.len() < out.capacity() {
                break;
            }
        }
    }
    Ok((BytesMut::from(Bytes::from(out)), false))
}

/// Codecs for directions without context takeover, lent for one message at a time.
///
/// Measured against allocating a codec for each message and dropping it after (zlib-rs,
/// ~190 B JSON, compress + inflate, user CPU): 3.9-4.1 µs a message borrowed from here,
/// 6.2-7.3 µs allocated fresh (zlib initialises ~300 KiB each time); callgrind counts 2.3×
/// fewer instructions. The pool costs at most [`pool::MAX_PER_KIND`] codecs of each kind per thread.
mod pool {
    use std::cell::RefCell;

    use flate2::{Compress, Compression, Decompress};

    /// Codecs kept per thread and kind: one per window size and level in use covers the usual
    /// server (one configuration); more are allocated and dropped per message.
    pub(super) const MAX_PER_KIND: usize = 4;

    #[derive(Default)]
    struct Pool {
        compressors: Vec<(u32, u8, Compress)>,
        decompressors: Vec<(u8, Decompress)>,
    }

    thread_local! {
        static POOL: RefCell<Pool> = RefCell::default();
    }

    /// Runs `f` with a compressor for `level` and `bits` in its initial state, then resets it
    /// and keeps it for the next message on this thread.
    pub(super) fn with_compressor<R>(
        level: Compression,
        bits: u8,
        f: impl FnOnce(&mut Compress) -> R,
    ) -> R {
        let key = (level.level(), bits);
        let taken = POOL
            .try_with(|p| {
                let mut p = p.try_borrow_mut().ok()?;
                let i = p.compressors.iter().position(|(l, b, _)| (*l, *b) == key)?;
                Some(p.compressors.swap_remove(i).2)
            })
            .ok()
            .flatten();
        let mut c = taken.unwrap_or_else(|| Compress::new_with_window_bits(level, false, bits));
        let out = f(&mut c);
        c.reset();
        // During thread teardown, or (never, but cheaply handled) when the pool is borrowed,
        // the codec is dropped instead.
        let _ = POOL.try_with(move |p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.compressors.len() < MAX_PER_KIND {
                    p.compressors.push((key.0, key.1, c));
                }
            }
        });
        out
    }

    /// Runs `f` with a decompressor for `bits` in its initial state, then resets it and keeps
    /// it for the next message on this thread.
    pub(super) fn with_decompressor<R>(bits: u8, f: impl FnOnce(&mut Decompress) -> R) -> R {
        let taken = POOL
            .try_with(|p| {
                let mut p = p.try_borrow_mut().ok()?;
                let i = p.decompressors.iter().position(|(b, _)| *b == bits)?;
                Some(p.decompressors.swap_remove(i).1)
            })
            .ok()
            .flatten();
        let mut d = taken.unwrap_or_else(|| Decompress::new_with_window_bits(false, bits));
        let out = f(&mut d);
        d.reset(false);
        let _ = POOL.try_with(move |p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.decompressors.len() < MAX_PER_KIND {
                    p.decompressors.push((bits, d));
                }
            }
        });
        out
    }

    /// Codecs this thread's pool holds: (compressors, decompressors).
    #[cfg(test)]
    pub(super) fn held() -> (usize, usize) {
        POOL.with(|p| {
            let p = p.borrow();
            (p.compressors.len(), p.decompressors.len())
        })
    }
}

/// An extension parameter: its name and its value, unquoted.
type ExtParam = (String, Option<String>);

/// 8..=15, where a config value out of range is pulled in.
fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(8, 15)
}

/// A window-bits value: 1*DIGIT without a leading zero, 8..=15 (RFC 7692 §7.1.2).
fn parse_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 2 {
        return None;
    }
    let bits: u8 = v.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// `name *(; param[=value])`, values unquoted. `None` when malformed.
fn parse_extension(s: &str) -> Option<(&str, Vec<ExtParam>)> {
    let mut parts = split_quoted(s, ';').into_iter();
    let name = parts.next()?.trim();
    if !is_token(name) {
        return None;
    }
    let mut params = Vec::new();
    for part in parts {
        let part = part.trim();
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (part, None),
        };
        if !is_token(k) {
            return None;
        }
        let v = match v {
            Some(v) if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => {
                Some(v[1..v.len() - 1].replace('\\', ""))
            }
            Some(v) => Some(v.to_owned()),
            None => None,
        };
        if let Some(v) = &v {
            if !is_token(v) {
                return None;
            }
        }
        params.push((k.to_owned(), v));
    }
    Some((name, params))
}

/// Splits on `sep` outside double quotes; empty pieces are dropped.
fn split_quoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.retain(|p| !p.trim().is_empty());
    out
}

/// An HTTP token (RFC 7230 §3.2.6).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The response of a server with context takeover, whose answer follows the offer.
    fn server(offer: &str) -> Option<String> {
        negotiate([offer], &DeflateConfig::default().context_takeover(true))
            .map(|p| p.to_response_header())
    }

    /// The response of a server with the default configuration.
    fn default_server(offer: &str) -> Option<String> {
        negotiate([offer], &DeflateConfig::default()).map(|p| p.to_response_header())
    }

    #[test]
    fn default_answer_has_no_context_takeover_both_ways() {
        // RFC 7692 §7.1.1.1 and §7.1.1.2: a server may name both parameters in its response
        // whether or not the offer did.
        let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        for (offer, expected) in [
            // Chromium's, Firefox's and Python websockets' (17.4) default offer, byte for byte.
            ("permessage-deflate; client_max_window_bits", both.to_owned()),
            ("permessage-deflate", both.to_owned()),
            ("permessage-deflate; server_no_context_takeover", both.to_owned()),
            ("permessage-deflate; client_no_context_takeover", both.to_owned()),
            (
                "permessage-deflate; client_max_window_bits=10",
                format!("{both}; client_max_window_bits=10"),
            ),
            (
                "permessage-deflate; server_max_window_bits=9",
                format!("{both}; server_max_window_bits=9"),
            ),
        ] {
            assert_eq!(default_server(offer).as_deref(), Some(expected.as_str()), "{offer}");
            let p = negotiate([offer], &DeflateConfig::default()).unwrap();
            assert!(p.server_no_context_takeover() && p.client_no_context_takeover(), "{offer}");
        }
        // A client with context takeover (as browsers) accepts that answer and resets too.
        let browser = DeflateConfig::default().context_takeover(true);
        assert_eq!(client_offer(&browser), "permessage-deflate; client_max_window_bits");
        let p = accept_response([both], &browser).unwrap().unwrap();
        assert!(p.server_no_context_takeover() && p.client_no_context_takeover());
        // The default client offers both and accepts only an answer with the server's.
        let offer = client_offer(&DeflateConfig::default());
        assert_eq!(
            offer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits"
        );
        assert!(accept_response(["permessage-deflate"], &DeflateConfig::default()).is_err());
        assert!(accept_response([both], &DeflateConfig::default()).unwrap().is_some());
    }

    #[test]
    fn negotiation_grammar() {
        assert_eq!(server("permessage-deflate").as_deref(), Some("permessage-deflate"));
        assert_eq!(
            server("permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            server("permessage-deflate; client_max_window_bits=10").as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=9; server_no_context_takeover")
                .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
        );
        assert_eq!(
            server("permessage-deflate; client_no_context_takeover").as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=\"12\"").as_deref(),
            Some("permessage-deflate; server_max_window_bits=12")
        );
        // Declined: unknown, duplicate, invalid values, values where none belong.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(server(bad), None, "{bad}");
        }
        // The first acceptable offer wins.
        assert_eq!(
            server("permessage-deflate; foo=1, permessage-deflate; client_max_window_bits=9")
                .as_deref(),
            Some("permessage-deflate; client_max_window_bits=9")
        );
    }

    #[test]
    fn client_checks_the_response() {
        let config = DeflateConfig::default().context_takeover(true);
        assert_eq!(client_offer(&config), "permessage-deflate; client_max_window_bits");
        let p = accept_response(["permessage-deflate; server_max_window_bits=10"], &config)
            .unwrap()
            .unwrap();
        assert_eq!(p.server_max_window_bits(), 10);
        assert_eq!(accept_response([] as [&str; 0], &config), Ok(None));
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate, permessage-deflate",
            "x-other",
        ] {
            assert!(accept_response([bad], &config).is_err(), "{bad}");
        }
        // An offer that limits the server's window needs the limit in the answer.
        let limited = config.clone().server_max_window_bits(10);
        assert!(accept_response(["permessage-deflate"], &limited).is_err());
        let p = accept_response(["permessage-deflate; server_max_window_bits=9"], &limited)
            .unwrap()
            .unwrap();
        assert_eq!(p.server_max_window_bits(), 9);
    }

    #[test]
    fn rfc_7692_hello_vectors() {
        // §7.2.3.1: "Hello" compressed in one message.
        let takeover = DeflateConfig::default().context_takeover(true);
        let params = negotiate(["permessage-deflate"], &takeover).unwrap();
        let mut d = Deflate::new(Role::Client, &params, &takeover);
        let out = d.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1024).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.2: a second "Hello" referring back to the first one's context.
        let out = d.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 1024).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.3: an uncompressed (stored) block.
        let mut fresh = Deflate::new(Role::Client, &params, &takeover);
        let out = fresh
            .decompress(&[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00], 1024)
            .unwrap();
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for no_takeover in [false, true] {
            let config = DeflateConfig {
                server_no_context_takeover: no_takeover,
                client_no_context_takeover: no_takeover,
                min_size: 0,
                ..DeflateConfig::default()
            };
            let params = negotiate([client_offer(&config).as_str()], &config).unwrap();
            let mut server = Deflate::new(Role::Server, &params, &config);
            let mut client = Deflate::new(Role::Client, &params, &config);
            let messages = [&b""[..], b"a", b"", b"hello hello hello hello", b"", &[7u8; 100_000]];
            for msg in messages {
                let c = server.compress(msg).unwrap();
                assert_eq!(&client.decompress(&c, 1 << 20).unwrap()[..], msg);
                let c = client.compress(msg).unwrap();
                assert_eq!(&server.decompress(&c, 1 << 20).unwrap()[..], msg);
            }
            // Without context takeover nothing stays on either codec after a message.
            for d in [&server, &client] {
                assert_eq!(d.compressor.is_none(), no_takeover, "{no_takeover}");
                assert_eq!(d.decompressor.is_none(), no_takeover, "{no_takeover}");
            }
        }
    }

    #[test]
    fn codecs_without_context_takeover_are_borrowed_per_message() {
        let config = DeflateConfig::default();
        let params = negotiate(["permessage-deflate; client_max_window_bits"], &config).unwrap();
        let msg = br#"{"type":"chat","room":"general","text":"hello hello hello"}"#;
        let mut first = None;
        // Many connections on one thread: each borrows the same pooled codecs in turn.
        for _ in 0..100 {
            let mut server = Deflate::new(Role::Server, &params, &config);
            let mut client = Deflate::new(Role::Client, &params, &config);
            let c = server.compress(msg).unwrap();
            // A pooled compressor starts every message from a reset state.
            assert_eq!(first.get_or_insert_with(|| c.clone()), &c);
            assert_eq!(&client.decompress(&c, 1024).unwrap()[..], msg);
            let c = client.compress(msg).unwrap();
            assert_eq!(&server.decompress(&c, 1024).unwrap()[..], msg);
            assert!(server.compressor.is_none() && server.decompressor.is_none());
            assert!(client.compressor.is_none() && client.decompressor.is_none());
        }
        let (compressors, decompressors) = pool::held();
        assert!((1..=pool::MAX_PER_KIND).contains(&compressors), "{compressors}");
        assert!((1..=pool::MAX_PER_KIND).contains(&decompressors), "{decompressors}");
        // A failed inflate gives back a reset decompressor: the next message inflates.
        let mut server = Deflate::new(Role::Server, &params, &config);
        assert_eq!(server.decompress(&[0xff; 16], 1024), Err(ProtocolError::InvalidCompressedData));
        let c = Deflate::new(Role::Client, &params, &config).compress(msg).unwrap();
        assert_eq!(&server.decompress(&c, 1024).unwrap()[..], msg);
        // So does one stopped by the size limit.
        let big = Deflate::new(Role::Client, &params, &config).compress(&[b'a'; 5000]).unwrap();
        assert!(matches!(server.decompress(&big, 100), Err(ProtocolError::MessageTooLarge { .. })));
        assert_eq!(&server.decompress(&c, 1024).unwrap()[..], msg);
    }

    #[test]
    fn the_pool_stays_bounded_with_many_window_sizes() {
        // Six window sizes on one thread: the pool keeps at most MAX_PER_KIND of each kind and
        // the others are built for their message and dropped; every message still round-trips.
        for round in 0..3 {
            for bits in 10..=15u8 {
                let config = DeflateConfig::default()
                    .server_max_window_bits(bits)
                    .client_max_window_bits(bits);
                let offer = client_offer(&config);
                let params = negotiate([offer.as_str()], &config).unwrap();
                let mut server = Deflate::new(Role::Server, &params, &config);
                let mut client = Deflate::new(Role::Client, &params, &config);
                let msg = format!("{round} {bits} hello hello hello hello");
                let c = server.compress(msg.as_bytes()).unwrap();
                assert_eq!(&client.decompress(&c, 1024).unwrap()[..], msg.as_bytes());
                let (compressors, decompressors) = pool::held();
                assert!(compressors <= pool::MAX_PER_KIND, "{compressors}");
                assert!(decompressors <= pool::MAX_PER_KIND, "{decompressors}");
            }
        }
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let config = DeflateConfig { min_size: 0, ..DeflateConfig::default() };
        let params = negotiate(["permessage-deflate"], &config).unwrap();
        let mut tx = Deflate::new(Role::Server, &params, &config);
        let mut rx = Deflate::new(Role::Client, &params, &config);
        let bomb = tx.compress(&vec![0u8; 10 << 20]).unwrap();
        assert!(bomb.len() < (10 << 20) / 50, "{}", bomb.len());
        let err = rx.decompress(&bomb, 1 << 20).unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooLarge { max, .. } if max == 1 << 20));
    }

    #[test]
    fn window_of_8_bits_sends_uncompressed() {
        let config = DeflateConfig { min_size: 0, ..DeflateConfig::default() };
        let params = negotiate(["permessage-deflate; server_max_window_bits=8"], &config).unwrap();
        assert_eq!(params.server_max_window_bits(), 8);
        let mut server = Deflate::new(Role::Server, &params, &config);
        assert_eq!(server.compress(b"hello hello hello hello hello"), None);
    }
}
