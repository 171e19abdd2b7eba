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
//! decompressor about `2^bits + 7 KiB` (39 KiB at 15 bits); both are allocated on first use.
//! `*_no_context_takeover` and smaller window bits trade ratio for memory. zlib cannot compress
//! with an 8-bit window, so when a peer limits this side to 8 bits, messages are sent
//! uncompressed (which RFC 7692 always allows); inflating uses at least a 9-bit window, which
//! reads 8-bit streams correctly.

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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Ask that the server reset its compression context after every message (client), or do
    /// so always (server). Saves the server's compressor memory between messages' ratios.
    pub server_no_context_takeover: bool,
    /// Ask that the client reset its compression context after every message.
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
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            min_size: 0,
        }
    }
}

impl DeflateConfig {
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
    /// window zlib cannot produce).
    pub fn compress(&mut self, data: &[u8]) -> Option<Bytes> {
        if data.len() < self.min_size || self.compress_bits < 9 {
            return None;
        }
        let (level, bits) = (self.level, self.compress_bits);
        let c = self
            .compressor
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut pos = 0;
        loop {
            let before = c.total_in();
            if c.compress_vec(&data[pos..], &mut out, FlushCompress::Sync).is_err() {
                // zlib only fails on misuse; sending this message uncompressed is always valid,
                // but the stream state is unknown, so start over.
                c.reset();
                return None;
            }
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
        if self.compress_reset {
            c.reset();
        }
        Some(Bytes::from(out))
    }

    /// Inflates one whole message's payload, failing with 1009 as soon as the output would pass
    /// `limit` bytes; memory never grows past `limit` plus one step. Data that does not inflate,
    /// or that follows a final (BFINAL) block, fails with 1007
    /// ([`ProtocolError::InvalidCompressedData`]).
    pub fn decompress(&mut self, data: &[u8], limit: usize) -> Result<BytesMut, ProtocolError> {
        let bits = self.decompress_bits;
        let d =
            self.decompressor.get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let mut out: Vec<u8> =
            Vec::with_capacity(data.len().saturating_mul(2).clamp(64, limit.max(64)));
        let mut ended = false;
        for (is_payload, input) in [(true, data), (false, &TAIL[..])] {
            let mut pos = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() > limit {
                        d.reset(false);
                        return Err(ProtocolError::MessageTooLarge {
                            size: out.len() as u64,
                            max: limit,
                        });
                    }
                    // Grow by doubling, but never past limit + 1: one byte over is enough to know.
                    let step =
                        out.capacity().max(4096).min(limit.saturating_add(1) - out.len()).max(1);
                    out.reserve_exact(step);
                }
                let before = d.total_in();
                let status = d
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| ProtocolError::InvalidCompressedData);
                let status = match status {
                    Ok(s) => s,
                    Err(e) => {
                        d.reset(false);
                        return Err(e);
                    }
                };
                pos += (d.total_in() - before) as usize;
                if out.len() > limit {
                    d.reset(false);
                    return Err(ProtocolError::MessageTooLarge {
                        size: out.len() as u64,
                        max: limit,
                    });
                }
                if status == Status::StreamEnd {
                    // RFC 1951 §3.2.3: a block with BFINAL set ends the stream, so inflate
                    // stops there. RFC 7692 §7.2.3.4 allows one byte after it, 0x00: the header
                    // bits of the empty stored block that the appended tail completes. Anything
                    // else the sender put after the final block would never be decompressed:
                    // the message is malformed (§7.2.2), not to be silently cut short.
                    if is_payload && !matches!(&input[pos..], [] | [0x00]) {
                        d.reset(false);
                        return Err(ProtocolError::InvalidCompressedData);
                    }
                    ended = true;
                    break;
                }
                if pos == input.len() && out.len() < out.capacity() {
                    break;
                }
            }
            if ended {
                break;
            }
        }
        // A final block ends the stream, and with it any context to take over.
        if self.decompress_reset || ended {
            d.reset(false);
        }
        Ok(BytesMut::from(Bytes::from(out)))
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

    fn server(offer: &str) -> Option<String> {
        negotiate([offer], &DeflateConfig::default()).map(|p| p.to_response_header())
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
        let config = DeflateConfig::default();
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
        let limited = DeflateConfig::default().server_max_window_bits(10);
        assert!(accept_response(["permessage-deflate"], &limited).is_err());
        let p = accept_response(["permessage-deflate; server_max_window_bits=9"], &limited)
            .unwrap()
            .unwrap();
        assert_eq!(p.server_max_window_bits(), 9);
    }

    #[test]
    fn rfc_7692_hello_vectors() {
        // §7.2.3.1: "Hello" compressed in one message.
        let params = negotiate(["permessage-deflate"], &DeflateConfig::default()).unwrap();
        let mut d = Deflate::new(Role::Client, &params, &DeflateConfig::default());
        let out = d.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1024).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.2: a second "Hello" referring back to the first one's context.
        let out = d.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 1024).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.3: an uncompressed (stored) block.
        let mut fresh = Deflate::new(Role::Client, &params, &DeflateConfig::default());
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
