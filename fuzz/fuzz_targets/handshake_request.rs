//! The server side of the opening handshake on arbitrary bytes: `HeadScanner` under arbitrary
//! chunking, `parse_request`, `validate_request`, `offered_protocols`, and `deflate::negotiate`
//! on the request's `Sec-WebSocket-Extensions`. An accepted request must produce a 101 response
//! that the client side (`parse_response`, `validate_response`, `deflate::accept_response`)
//! accepts with the same parameters.
//!
//! Input: byte 0 picks the chunk sizes, the head limit and the server's deflate settings; the
//! rest is the request as received.
#![no_main]

use http::header::{HeaderMap, HeaderValue, SEC_WEBSOCKET_EXTENSIONS};
use libfuzzer_sys::fuzz_target;
use wsx_proto::deflate::{self, DeflateConfig};
use wsx_proto::handshake::{self, HeadScanner};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, data)) = data.split_first() else { return };
    // Small limits in some runs so that "too large" paths are reached; the default otherwise.
    let max = if knobs & 0x80 != 0 { 64 + usize::from(knobs & 0x3f) * 8 } else { 16 << 10 };
    let max_headers = if knobs & 0x40 != 0 { 4 } else { 100 };

    let head = scan_chunked(data, max, knobs);
    // Parse the head when one was found; otherwise parse everything anyway, so the parser also
    // sees incomplete and oversized input.
    let Ok(req) = handshake::parse_request(head.unwrap_or(data), max_headers) else { return };
    let _ = handshake::is_upgrade_request(&req);
    let protocols = handshake::offered_protocols(&req);
    for p in &protocols {
        assert!(!p.is_empty() && p.trim() == p && !p.contains(','), "{p:?}");
    }
    let extensions: Vec<&str> = req
        .headers()
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut server_config = DeflateConfig::default();
    server_config.server_no_context_takeover = knobs & 0x01 != 0;
    server_config.client_no_context_takeover = knobs & 0x02 != 0;
    server_config.server_max_window_bits = if knobs & 0x04 != 0 { 9 } else { 15 };
    server_config.client_max_window_bits = if knobs & 0x08 != 0 { 10 } else { 15 };
    let params = deflate::negotiate(extensions.iter().copied(), &server_config);
    if let Some(p) = &params {
        for bits in [p.server_max_window_bits(), p.client_max_window_bits()] {
            assert!((8..=15).contains(&bits), "window bits {bits}");
        }
    }

    let Ok(accept) = handshake::validate_request(&req) else { return };
    assert_eq!(accept.len(), 28, "{accept:?}");

    // What the server answers must satisfy a client that sent this request.
    let key = req.headers()["sec-websocket-key"].to_str().expect("a valid key is base64").trim();
    assert_eq!(handshake::accept_key(key.as_bytes()), accept);
    let chosen = protocols.first().map(String::as_str);
    let mut extra = HeaderMap::new();
    if let Some(p) = &params {
        let value = HeaderValue::from_str(&p.to_response_header()).expect("a valid header value");
        extra.insert(SEC_WEBSOCKET_EXTENSIONS, value);
    }
    let response = handshake::response_101(&accept, chosen, &extra);
    let end = HeadScanner::new(response.len()).scan(&response).expect("fits").expect("complete");
    assert_eq!(end, response.len());
    let resp = handshake::parse_response(&response, 100).expect("our 101 parses");
    let selected = handshake::validate_response(&resp, key, &protocols).expect("our 101 validates");
    assert_eq!(selected.as_deref(), chosen);
    let answer: Vec<&str> = resp
        .headers()
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|v| v.to_str().expect("ASCII"))
        .collect();
    // The client that sent an arbitrary offer: one that allows context takeover both ways
    // accepts every answer a server may give (a server may always add either
    // no_context_takeover parameter); the default, which asks for none, would refuse an answer
    // that keeps the server's context.
    let client_config = DeflateConfig::default().context_takeover(true);
    let client = deflate::accept_response(answer.iter().copied(), &client_config)
        .expect("the client accepts what the server negotiated");
    match (params, client) {
        (None, None) => {}
        (Some(s), Some(c)) => {
            assert_eq!(s.server_no_context_takeover(), c.server_no_context_takeover());
            assert_eq!(s.client_no_context_takeover(), c.client_no_context_takeover());
            assert_eq!(s.server_max_window_bits(), c.server_max_window_bits());
            assert_eq!(s.client_max_window_bits(), c.client_max_window_bits());
        }
        (s, c) => panic!("server negotiated {s:?}, client saw {c:?}"),
    }
});

/// Feeds `data` to a `HeadScanner` in growing prefixes whose steps come from `knobs` and the
/// data itself, checking each answer against a naive search of the same prefix.
fn scan_chunked(data: &[u8], max: usize, knobs: u8) -> Option<&[u8]> {
    let mut scanner = HeadScanner::new(max);
    let mut len = 0;
    let mut step_seed = usize::from(knobs);
    loop {
        // Chunk sizes 1..=16, varied by the bytes passing by.
        step_seed = step_seed
            .wrapping_mul(31)
            .wrapping_add(usize::from(data.get(len).copied().unwrap_or(0)));
        len = (len + 1 + step_seed % 16).min(data.len());
        let prefix = &data[..len];
        let got = scanner.scan(prefix);
        let expected = naive_scan(prefix, max);
        assert_eq!(got.is_err(), expected.is_err(), "prefix {len}: {got:?} vs {expected:?}");
        match got {
            Ok(Some(end)) => {
                assert_eq!(Ok(Some(end)), expected);
                return Some(&data[..end]);
            }
            Ok(None) => assert_eq!(expected, Ok(None)),
            Err(_) => return None,
        }
        if len == data.len() {
            return None;
        }
    }
}

fn naive_scan(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) if p + 4 <= max => Ok(Some(p + 4)),
        Some(_) => Err(()),
        None if buf.len() >= max => Err(()),
        None => Ok(None),
    }
}
