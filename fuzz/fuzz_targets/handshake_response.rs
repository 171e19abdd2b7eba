//! The client side of the opening handshake on arbitrary bytes: `parse_response`,
//! `validate_response` against the RFC 6455 §1.3 sample key, and `deflate::accept_response`
//! on the response's `Sec-WebSocket-Extensions`.
//!
//! Input: byte 0 picks the limits and the client's deflate offer; the rest is the response.
#![no_main]

use http::header::SEC_WEBSOCKET_EXTENSIONS;
use libfuzzer_sys::fuzz_target;
use wsx_proto::deflate::{self, DeflateConfig};
use wsx_proto::handshake::{self, HeadScanner};
use wsx_proto::Role;

/// RFC 6455 §1.3: this key's accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`, which the seeds use.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, data)) = data.split_first() else { return };
    let max_headers = if knobs & 0x80 != 0 { 4 } else { 100 };
    let head = match HeadScanner::new(16 << 10).scan(data) {
        Ok(Some(end)) => &data[..end],
        _ => data,
    };
    let Ok(resp) = handshake::parse_response(head, max_headers) else { return };
    let offered = ["chat".to_owned(), "superchat".to_owned()];
    let offered = &offered[..usize::from(knobs & 0x40 != 0) * 2];
    if let Ok(Some(p)) = handshake::validate_response(&resp, KEY, offered) {
        assert!(offered.contains(&p), "{p:?} was not offered");
    }

    let mut config = DeflateConfig::default();
    config.server_no_context_takeover = knobs & 0x01 != 0;
    config.client_no_context_takeover = knobs & 0x02 != 0;
    config.server_max_window_bits = 8 + ((knobs >> 2) & 0x07);
    config.client_max_window_bits = if knobs & 0x20 != 0 { 12 } else { 15 };
    let extensions: Vec<&str> = resp
        .headers()
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Ok(Some(p)) = deflate::accept_response(extensions.iter().copied(), &config) {
        // RFC 7692 §7.1: nothing beyond what the offer allowed.
        // §7.1.2.1: a server accepts an offer with server_max_window_bits=N by answering with
        // a value of at most N; an answer without it is not an acceptance of that offer.
        assert!(
            (8..=config.server_max_window_bits).contains(&p.server_max_window_bits()),
            "accepted {extensions:?}: server window {} bits, the offer allowed at most {}",
            p.server_max_window_bits(),
            config.server_max_window_bits,
        );
        assert!(
            (8..=config.client_max_window_bits).contains(&p.client_max_window_bits()),
            "accepted {extensions:?}: client window {} bits, the offer allowed at most {}",
            p.client_max_window_bits(),
            config.client_max_window_bits,
        );
        assert!(p.server_no_context_takeover() || !config.server_no_context_takeover);
        assert!(p.client_no_context_takeover() || !config.client_no_context_takeover);
        // What the client accepted both ends can use: a message round-trips each way.
        let mut client = deflate::Deflate::new(Role::Client, &p, &config);
        let mut server = deflate::Deflate::new(Role::Server, &p, &config);
        let msg = b"Hello, Hello, Hello";
        if let Some(c) = client.compress(msg) {
            assert_eq!(&server.decompress(&c, msg.len()).expect("inflates")[..], msg);
        }
        if let Some(c) = server.compress(msg) {
            assert_eq!(&client.decompress(&c, msg.len()).expect("inflates")[..], msg);
        }
    }
});
