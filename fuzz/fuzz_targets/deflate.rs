//! The permessage-deflate codec (RFC 7692).
//!
//! Byte 0 bit 7 picks the mode:
//! - inflate: arbitrary bytes as a sequence of compressed messages, inflated with a 1 MiB limit
//!   (or a small one): never panics and never returns more than the limit;
//! - round trip: arbitrary messages compressed and inflated in both directions under parameters
//!   negotiated from an offer the input builds, with context takeover across messages: the
//!   output equals the input, even with the limit set to exactly the message's length.
//!
//! Bytes 0-1 choose the parameters; the rest is a sequence of messages, each a length byte
//! (255: everything left) and that many bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_proto::deflate::{self, Deflate, DeflateConfig};
use wsx_proto::Role;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [k0, k1, rest @ ..] = data else { return };
    let (k0, k1) = (*k0, *k1);
    let mut offer = String::from(deflate::NAME);
    if k0 & 0x01 != 0 {
        offer.push_str("; server_no_context_takeover");
    }
    if k0 & 0x02 != 0 {
        offer.push_str("; client_no_context_takeover");
    }
    if k0 & 0x04 != 0 {
        offer.push_str(&format!("; server_max_window_bits={}", 8 + (k1 & 0x07)));
    }
    if k0 & 0x08 != 0 {
        offer.push_str(&format!("; client_max_window_bits={}", 8 + ((k1 >> 3) & 0x07)));
    }
    let mut config = DeflateConfig::default();
    config.level = u32::from((k0 >> 4) & 0x07) + u32::from((k1 >> 6) & 0x03) % 3;
    config.min_size = 0;
    let params = deflate::negotiate([offer.as_str()], &config).expect("a valid offer is accepted");

    let mut server = Deflate::new(Role::Server, &params, &config);
    let mut client = Deflate::new(Role::Client, &params, &config);
    let messages = Messages(rest);

    if k0 & 0x80 == 0 {
        // Inflate arbitrary input, alternating between the two ends' decompressors.
        for (i, msg) in messages.enumerate() {
            let limit = if k1 & 0x40 != 0 && i % 2 == 1 { usize::from(k1 & 0x3f) } else { LIMIT };
            let rx = if i % 2 == 0 { &mut client } else { &mut server };
            if let Ok(out) = rx.decompress(msg, limit) {
                assert!(out.len() <= limit, "{} bytes over a limit of {limit}", out.len());
            }
        }
        return;
    }

    for (i, msg) in messages.enumerate() {
        let (tx, rx, bits) = if i % 2 == 0 {
            (&mut server, &mut client, params.server_max_window_bits())
        } else {
            (&mut client, &mut server, params.client_max_window_bits())
        };
        let Some(compressed) = tx.compress(msg) else {
            // zlib cannot compress with an 8-bit window; everything else is compressed.
            assert_eq!(bits, 8, "compress declined a {}-byte message", msg.len());
            continue;
        };
        let out = rx.decompress(&compressed, msg.len()).unwrap_or_else(|e| {
            panic!("message {i} ({} bytes, {bits}-bit window) does not inflate: {e}", msg.len())
        });
        assert_eq!(&out[..], msg, "message {i}");
    }
});

/// Length-prefixed messages: a length byte (255 = the rest), then that many bytes.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.0.split_first()?;
        let len = if len == 255 { rest.len() } else { usize::from(len).min(rest.len()) };
        let (msg, rest) = rest.split_at(len);
        self.0 = rest;
        Some(msg)
    }
}
