//! The opening handshake (RFC 6455 §4) through the public functions of `wsx_proto::handshake`:
//! the RFC vector, real browser requests, every refusal with its status, head scanning under
//! every split, and a full client/server round trip.

use http::header::{HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use wsx_proto::handshake::{
    accept_key, check_protocols, generate_key, http_response, http_response_head, is_token,
    is_upgrade_request, offered_protocols, parse_request, parse_response, rejection, request,
    response_101, validate_request, validate_response, HeadScanner,
};
use wsx_proto::HandshakeError;

/// The key and accept value of RFC 6455 §1.3.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What Chromium sends (captured; only the host changed).
const CHROME_REQUEST: &str = "GET /chat?room=1 HTTP/1.1\r\n\
Host: example.com:8000\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://example.com:8000\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// What Firefox sends: note `Connection: keep-alive, Upgrade`.
const FIREFOX_REQUEST: &str = "GET /chat HTTP/1.1\r\n\
Host: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Sec-WebSocket-Version: 13\r\n\
Origin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
Sec-WebSocket-Extensions: permessage-deflate\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Connection: keep-alive, Upgrade\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: websocket\r\n\
Sec-Fetch-Site: same-origin\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
Upgrade: websocket\r\n\
\r\n";

#[test]
fn rfc_6455_section_1_3_accept_key() {
    assert_eq!(accept_key(RFC_KEY.as_bytes()), RFC_ACCEPT);
}

#[test]
fn browser_requests_are_accepted() {
    for raw in [CHROME_REQUEST, FIREFOX_REQUEST] {
        let req = parse_request(raw.as_bytes(), 100).unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.version(), Version::HTTP_11);
        assert!(is_upgrade_request(&req));
        assert_eq!(validate_request(&req), Ok(RFC_ACCEPT.to_owned()));
    }
    let req = parse_request(CHROME_REQUEST.as_bytes(), 100).unwrap();
    assert_eq!(req.uri().path(), "/chat");
    assert_eq!(req.uri().query(), Some("room=1"));
    assert_eq!(req.headers()["origin"], "http://example.com:8000");
    assert!(offered_protocols(&req).is_empty());
    let req = parse_request(FIREFOX_REQUEST.as_bytes(), 100).unwrap();
    assert_eq!(offered_protocols(&req), ["chat", "superchat"]);
}

/// A minimal valid request, as (name, value) pairs so cases can drop or replace one.
const GOOD: [(&str, &str); 5] = [
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", RFC_KEY),
];

/// `GOOD` with header `name` replaced by `value`, or removed when `value` is `None`.
fn with(name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = GOOD
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    if let Some(v) = value {
        out.push((name.to_owned(), v.to_owned()));
    }
    out
}

fn head(request_line: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{request_line}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Parses and validates `raw`: it must be accepted, or refused with `expected` and `status`, and
/// the rejection response must carry that status.
fn check(raw: &[u8], expected: Result<&str, (HandshakeError, u16)>) {
    let ctx = String::from_utf8_lossy(raw).into_owned();
    let result = parse_request(raw, 100).and_then(|req| validate_request(&req));
    match expected {
        Ok(accept) => assert_eq!(result.as_deref(), Ok(accept), "{ctx}"),
        Err((err, status)) => {
            assert_eq!(result, Err(err.clone()), "{ctx}");
            assert_eq!(err.status().as_u16(), status, "{ctx}");
            check_rejection(&err, status);
        }
    }
}

/// The rejection response for `err` is a complete HTTP response with `status`, a body of the
/// declared length, `Connection: close`, and `Sec-WebSocket-Version: 13` on 426.
fn check_rejection(err: &HandshakeError, status: u16) {
    let bytes = rejection(err);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(&bytes).unwrap() else {
        panic!("incomplete rejection for {err:?}");
    };
    assert_eq!(resp.code, Some(status));
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
    };
    assert_eq!(header("content-length"), Some((bytes.len() - n).to_string()));
    assert_eq!(header("connection").as_deref(), Some("close"));
    let version = header("sec-websocket-version");
    if status == 426 {
        assert_eq!(version.as_deref(), Some("13"));
    } else {
        assert_eq!(version, None);
    }
    let allow = header("allow");
    if status == 405 {
        assert_eq!(allow.as_deref(), Some("GET"));
    } else {
        assert_eq!(allow, None);
    }
}

#[test]
fn minimal_request_is_accepted() {
    check(&head("GET / HTTP/1.1", &with("", None)), Ok(RFC_ACCEPT));
}

#[test]
fn bad_requests_are_refused_with_the_right_status() {
    use HandshakeError::*;
    let line = "GET / HTTP/1.1";
    let cases: Vec<(Vec<u8>, HandshakeError, u16)> = vec![
        (head("POST / HTTP/1.1", &with("", None)), MethodNotGet("POST".into()), 405),
        (head("HEAD / HTTP/1.1", &with("", None)), MethodNotGet("HEAD".into()), 405),
        (head("GET / HTTP/1.0", &with("", None)), WrongHttpVersion, 400),
        (head(line, &with("Host", None)), BadHeader("Host"), 400),
        (head(line, &with("Upgrade", None)), BadHeader("Upgrade"), 400),
        (head(line, &with("Upgrade", Some("h2c"))), BadHeader("Upgrade"), 400),
        (head(line, &with("Upgrade", Some("websockets"))), BadHeader("Upgrade"), 400),
        (head(line, &with("Connection", None)), BadHeader("Connection"), 400),
        (head(line, &with("Connection", Some("keep-alive"))), BadHeader("Connection"), 400),
        (head(line, &with("Connection", Some("Upgraded"))), BadHeader("Connection"), 400),
        (head(line, &with("Sec-WebSocket-Version", None)), UnsupportedVersion, 426),
        (head(line, &with("Sec-WebSocket-Version", Some("8"))), UnsupportedVersion, 426),
        (head(line, &with("Sec-WebSocket-Version", Some("13, 8"))), UnsupportedVersion, 426),
        (head(line, &with("Sec-WebSocket-Key", None)), BadKey, 400),
        (head(line, &with("Sec-WebSocket-Key", Some("not base64!"))), BadKey, 400),
        // 15 and 17 bytes, validly encoded.
        (head(line, &with("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA"))), BadKey, 400),
        (head(line, &with("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAAA="))), BadKey, 400),
        (head(line, &with("Sec-WebSocket-Key", Some(""))), BadKey, 400),
    ];
    for (raw, err, status) in cases {
        check(&raw, Err((err, status)));
    }
}

#[test]
fn too_many_headers_is_431() {
    let mut headers = with("", None);
    for i in 0..10 {
        headers.push((format!("X-Extra-{i}"), "1".to_owned()));
    }
    assert_eq!(headers.len(), 15);
    let raw = head("GET / HTTP/1.1", &headers);
    let err = parse_request(&raw, 14).unwrap_err();
    assert_eq!(err, HandshakeError::TooManyHeaders(14));
    assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    check_rejection(&err, 431);
    // Exactly at the limit is fine.
    let req = parse_request(&raw, 15).unwrap();
    assert_eq!(validate_request(&req), Ok(RFC_ACCEPT.to_owned()));
}

#[test]
fn too_large_head_is_431() {
    let raw = CHROME_REQUEST.as_bytes();
    // A head of exactly the limit is fine; one byte less is not.
    assert_eq!(HeadScanner::new(raw.len()).scan(raw), Ok(Some(raw.len())));
    let err = HeadScanner::new(raw.len() - 1).scan(raw).unwrap_err();
    assert_eq!(err, HandshakeError::HeadTooLarge(raw.len() - 1));
    assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    check_rejection(&err, 431);

    // A head that never ends is refused once the limit is reached, however it arrives.
    let endless = "X-Padding: aaaaaaaa\r\n".repeat(100);
    let endless = [b"GET / HTTP/1.1\r\n", endless.as_bytes()].concat();
    let mut scanner = HeadScanner::new(1024);
    let mut refused_at = None;
    for end in 1..=endless.len() {
        match scanner.scan(&endless[..end]) {
            Ok(None) => {}
            Ok(Some(n)) => panic!("found a head end at {n}"),
            Err(e) => {
                assert_eq!(e, HandshakeError::HeadTooLarge(1024));
                refused_at = Some(end);
                break;
            }
        }
    }
    assert_eq!(refused_at, Some(1024));
}

#[test]
fn head_scanner_finds_the_end_at_every_split() {
    let head_len = FIREFOX_REQUEST.len();
    // Bytes after the head (a pipelined first frame, even a second blank line) are not part of it.
    let mut buf = FIREFOX_REQUEST.as_bytes().to_vec();
    buf.extend_from_slice(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    buf.extend_from_slice(b"\r\n\r\n");
    for cut in 0..=buf.len() {
        let mut scanner = HeadScanner::new(16 << 10);
        let first = scanner.scan(&buf[..cut]).unwrap();
        let expected = if cut >= head_len { Some(head_len) } else { None };
        assert_eq!(first, expected, "first read of {cut} bytes");
        if first.is_none() {
            assert_eq!(scanner.scan(&buf).unwrap(), Some(head_len), "split at {cut}");
        }
    }
    // Three reads, with the cuts around the final CRLF CRLF.
    for a in head_len - 6..=head_len {
        for b in a..=head_len + 2 {
            let mut scanner = HeadScanner::new(16 << 10);
            let mut found = None;
            for end in [a, b, buf.len()] {
                if let Some(n) = scanner.scan(&buf[..end]).unwrap() {
                    found = Some((end, n));
                    break;
                }
            }
            let (end, n) = found.expect("head found");
            assert_eq!(n, head_len, "cuts {a}, {b}");
            assert!(end >= head_len);
        }
    }
    // Byte by byte: found exactly when the last byte of the head arrives.
    let mut scanner = HeadScanner::new(16 << 10);
    for end in 0..=buf.len() {
        match scanner.scan(&buf[..end]).unwrap() {
            None => assert!(end < head_len),
            Some(n) => {
                assert_eq!((end, n), (head_len, head_len));
                break;
            }
        }
    }
    // The head parses alone, and the rest is untouched.
    let req = parse_request(&buf[..head_len], 100).unwrap();
    assert_eq!(validate_request(&req), Ok(RFC_ACCEPT.to_owned()));
    assert_eq!(buf[head_len], 0x81);
}

#[test]
fn token_lists_are_matched_case_insensitively() {
    let line = "GET / HTTP/1.1";
    for (name, value) in [
        ("Connection", "keep-alive, Upgrade"),
        ("Connection", "keep-alive,upgrade"),
        ("Connection", "UPGRADE"),
        ("Connection", " Upgrade ,keep-alive"),
        ("Upgrade", "WebSocket"),
        ("Upgrade", "h2c, websocket"),
    ] {
        check(&head(line, &with(name, Some(value))), Ok(RFC_ACCEPT));
    }
    // The token may come in a second field of the same name.
    let mut headers = with("Connection", Some("keep-alive"));
    headers.push(("connection".to_owned(), "upgrade".to_owned()));
    check(&head(line, &headers), Ok(RFC_ACCEPT));
    // Header names are case-insensitive too.
    let lower: Vec<(String, String)> =
        with("", None).into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    check(&head(line, &lower), Ok(RFC_ACCEPT));
    // A substring is not a token.
    check(
        &head(line, &with("Connection", Some("keep-alive, Upgrade-Insecure"))),
        Err((HandshakeError::BadHeader("Connection"), 400)),
    );
}

#[test]
fn client_and_server_agree_on_a_handshake() {
    let protocols = vec!["chat".to_owned(), "superchat".to_owned()];
    for chosen in [None, Some("superchat")] {
        let key = generate_key();
        let mut extra = HeaderMap::new();
        extra.insert("origin", HeaderValue::from_static("https://example.com"));
        let req_bytes = request("example.com:8443", "/ws?x=1", &key, &protocols, &extra).unwrap();

        // Server side.
        let head_len = HeadScanner::new(16 << 10).scan(&req_bytes).unwrap().unwrap();
        assert_eq!(head_len, req_bytes.len());
        let req = parse_request(&req_bytes[..head_len], 100).unwrap();
        assert_eq!(req.uri(), "/ws?x=1");
        assert_eq!(req.headers()["host"], "example.com:8443");
        assert_eq!(req.headers()["origin"], "https://example.com");
        assert_eq!(offered_protocols(&req), protocols);
        let accept = validate_request(&req).unwrap();
        assert_eq!(accept, accept_key(key.as_bytes()));
        let mut resp_extra = HeaderMap::new();
        resp_extra.insert("x-served-by", HeaderValue::from_static("wsx"));
        let resp_bytes = response_101(&accept, chosen, &resp_extra);

        // Client side.
        let head_len = HeadScanner::new(16 << 10).scan(&resp_bytes).unwrap().unwrap();
        assert_eq!(head_len, resp_bytes.len());
        let resp = parse_response(&resp_bytes, 100).unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["x-served-by"], "wsx");
        assert_eq!(validate_response(&resp, &key, &protocols), Ok(chosen.map(str::to_owned)));
    }
}

#[test]
fn generated_keys_are_valid_and_fresh() {
    let a = generate_key();
    let b = generate_key();
    assert_ne!(a, b);
    for key in [a, b] {
        check(
            &head("GET / HTTP/1.1", &with("Sec-WebSocket-Key", Some(&key))),
            Ok(&accept_key(key.as_bytes())),
        );
    }
}

#[test]
fn request_defaults_to_root_path() {
    let raw = request("h", "", &generate_key(), &[], &HeaderMap::new()).unwrap();
    let req = parse_request(&raw, 100).unwrap();
    assert_eq!(req.uri(), "/");
    assert!(req.headers().get("sec-websocket-protocol").is_none());
}

/// A response to a request with `RFC_KEY`, with the given header changed or removed.
fn response(name: &str, value: Option<&str>) -> http::Response<()> {
    let mut fields = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", RFC_ACCEPT),
    ];
    fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        fields.push((name, v));
    }
    let mut raw = "HTTP/1.1 101 Switching Protocols\r\n".to_owned();
    for (n, v) in fields {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    parse_response(raw.as_bytes(), 100).unwrap()
}

#[test]
fn bad_responses_are_refused() {
    let offered = ["chat".to_owned()];
    assert_eq!(validate_response(&response("", None), RFC_KEY, &offered), Ok(None));
    let cases: [(&str, Option<&str>, HandshakeError); 7] = [
        ("Sec-WebSocket-Accept", None, HandshakeError::BadAccept),
        ("Sec-WebSocket-Accept", Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOO="), HandshakeError::BadAccept),
        ("Sec-WebSocket-Accept", Some(RFC_KEY), HandshakeError::BadAccept),
        ("Upgrade", None, HandshakeError::BadHeader("Upgrade")),
        ("Connection", None, HandshakeError::BadHeader("Connection")),
        (
            "Sec-WebSocket-Protocol",
            Some("superchat"),
            HandshakeError::UnofferedProtocol("superchat".into()),
        ),
        (
            "Sec-WebSocket-Protocol",
            Some("chat, superchat"),
            HandshakeError::UnofferedProtocol("chat, superchat".into()),
        ),
    ];
    for (name, value, expected) in cases {
        assert_eq!(
            validate_response(&response(name, value), RFC_KEY, &offered),
            Err(expected),
            "{name}: {value:?}"
        );
    }
    // Accepting for a different key is refused.
    let other_key = generate_key();
    assert_eq!(
        validate_response(&response("", None), &other_key, &offered),
        Err(HandshakeError::BadAccept)
    );
    // A subprotocol when none was offered.
    assert_eq!(
        validate_response(&response("Sec-WebSocket-Protocol", Some("chat")), RFC_KEY, &[]),
        Err(HandshakeError::UnofferedProtocol("chat".into()))
    );
    assert_eq!(
        validate_response(&response("Sec-WebSocket-Protocol", Some("chat")), RFC_KEY, &offered),
        Ok(Some("chat".to_owned()))
    );
}

#[test]
fn non_101_status_is_refused() {
    for status in [200u16, 301, 400, 403, 426, 503] {
        let raw = format!("HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n\r\n");
        let resp = parse_response(raw.as_bytes(), 100).unwrap();
        let err = validate_response(&resp, RFC_KEY, &[]).unwrap_err();
        let status = StatusCode::from_u16(status).unwrap();
        assert_eq!(err, HandshakeError::UnexpectedStatus { status });
        assert_eq!(err.status(), status);
    }
}

#[test]
fn malformed_heads_are_refused() {
    for raw in [
        &b"GET / HTTP/1.1\r\nHost example.com\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: example.com\r\n",
        b"\x00\x01\r\n\r\n",
    ] {
        let err = parse_request(raw, 100).unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed(_)), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }
    assert!(matches!(
        parse_response(b"HTTP/1.1 abc\r\n\r\n", 100),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn duplicate_key_is_refused() {
    // RFC 6455 §11.3.1: Sec-WebSocket-Key must not appear more than once; as one field the two
    // values ("k1, k2") do not decode to 16 bytes.
    let mut headers = with("", None);
    headers.push(("Sec-WebSocket-Key".to_owned(), "AAAAAAAAAAAAAAAAAAAAAA==".to_owned()));
    check(&head("GET / HTTP/1.1", &headers), Err((HandshakeError::BadKey, 400)));
}

/// A 101 response to `RFC_KEY` with `extra` header lines.
fn response_with(extra: &str) -> http::Response<()> {
    let raw = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n{extra}\r\n"
    );
    parse_response(raw.as_bytes(), 100).unwrap()
}

#[test]
fn two_selected_subprotocols_are_refused() {
    // RFC 6455 §4.2.2 and §11.3.4: the server selects one subprotocol, in one field. As one
    // field the value is "chat, superchat", which was not offered.
    let offered = ["chat".to_owned(), "superchat".to_owned()];
    let resp =
        response_with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: superchat\r\n");
    assert_eq!(
        validate_response(&resp, RFC_KEY, &offered),
        Err(HandshakeError::UnofferedProtocol("chat, superchat".into()))
    );
}

#[test]
fn duplicate_accept_is_refused() {
    // RFC 6455 §11.3.3: Sec-WebSocket-Accept must not appear more than once.
    let resp = response_with("Sec-WebSocket-Accept: bm90IHRoZSBhY2NlcHQ=\r\n");
    assert_eq!(validate_response(&resp, RFC_KEY, &[]), Err(HandshakeError::BadAccept));
}

#[test]
fn upgrade_request_with_a_body_is_refused_with_400() {
    // The bytes after an upgrade request's head are frames. A request that declares a body would
    // have them read as frames by the server and as a body by a proxy in between (the request
    // smuggling of vert.x CVE-2018-12541).
    let line = "GET / HTTP/1.1";
    for (name, value) in [
        ("Content-Length", "5"),
        ("Content-Length", "1000000"),
        ("Content-Length", "00x"),
        ("Content-Length", ""),
        ("Transfer-Encoding", "chunked"),
        ("Transfer-Encoding", "identity"),
        ("Transfer-Encoding", "gzip, chunked"),
    ] {
        check(&head(line, &with(name, Some(value))), Err((HandshakeError::RequestBody, 400)));
    }
    // An empty body is no body.
    check(&head(line, &with("Content-Length", Some("0"))), Ok(RFC_ACCEPT));
    // Two fields, one of them not zero.
    let mut headers = with("Content-Length", Some("0"));
    headers.push(("Content-Length".to_owned(), "7".to_owned()));
    check(&head(line, &headers), Err((HandshakeError::RequestBody, 400)));
}

#[test]
fn missing_empty_or_duplicate_host_is_refused_with_400() {
    // RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without Host or with more than
    // one; RFC 6455 §4.1: the upgrade's Host names the server.
    let line = "GET / HTTP/1.1";
    let mut duplicate = with("", None);
    duplicate.push(("Host".to_owned(), "other.example".to_owned()));
    let mut duplicate_same = with("", None);
    duplicate_same.push(("host".to_owned(), "example.com".to_owned()));
    for (what, headers) in [
        ("missing", with("Host", None)),
        ("empty", with("Host", Some(""))),
        ("blank", with("Host", Some("  "))),
        ("duplicate", duplicate),
        ("duplicate with the same value", duplicate_same),
    ] {
        let raw = head(line, &headers);
        let result = parse_request(&raw, 100).and_then(|req| validate_request(&req));
        assert_eq!(result, Err(HandshakeError::BadHeader("Host")), "{what}");
        check(&raw, Err((HandshakeError::BadHeader("Host"), 400)));
    }
}

#[test]
fn method_not_get_is_405_with_allow_get() {
    // RFC 9110 §15.5.6: a 405 response carries Allow, the methods the target supports.
    for method in ["POST", "HEAD", "PUT", "OPTIONS"] {
        let err = HandshakeError::MethodNotGet(method.to_owned());
        let bytes = rejection(&err);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(&bytes).unwrap().is_complete());
        assert_eq!(resp.code, Some(405));
        let allow: Vec<&[u8]> = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("allow"))
            .map(|h| h.value)
            .collect();
        assert_eq!(allow, [&b"GET"[..]], "{method}");
        check_rejection(&err, 405);
    }
}

#[test]
fn subprotocol_names_must_be_distinct_tokens() {
    for good in ["chat", "chat.v2", "x-Foo_1", "!#$%&'*+-.^_`|~09AZaz"] {
        assert!(is_token(good), "{good:?}");
    }
    assert_eq!(check_protocols(&["chat", "superchat", "Chat"]), Ok(()));
    assert_eq!(check_protocols::<&str>(&[]), Ok(()));
    let bad = [
        "",
        "two words",
        "a,b",
        "(chat)",
        "chat/2",
        "a:b",
        "a;b",
        "a=b",
        "\"q\"",
        "{x}",
        "a\tb",
        "ünï",
        "chat\r\nX-Injected: 1",
        "chat\n",
        "\0",
    ];
    for name in bad {
        assert!(!is_token(name), "{name:?}");
        let offered = ["fine", name];
        assert_eq!(check_protocols(&offered), Err(HandshakeError::InvalidProtocol(name.into())));
        // `request` refuses it before building anything.
        let offered: Vec<String> = offered.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            request("h", "/", RFC_KEY, &offered, &HeaderMap::new()),
            Err(HandshakeError::InvalidProtocol(name.into()))
        );
    }
    // RFC 6455 §4.1: the offered names are unique.
    assert_eq!(
        check_protocols(&["chat", "superchat", "chat"]),
        Err(HandshakeError::InvalidProtocol("chat".into()))
    );
}

#[test]
fn request_refuses_what_a_request_line_or_header_cannot_carry() {
    let none = HeaderMap::new();
    for host in ["", "a b", "a\r\nX: y", "h\n"] {
        assert_eq!(request(host, "/", RFC_KEY, &[], &none), Err(HandshakeError::BadHeader("Host")));
    }
    for path in ["/a b", "/\r\nX: y", "/\t"] {
        assert_eq!(
            request("h", path, RFC_KEY, &[], &none),
            Err(HandshakeError::Malformed("invalid request target"))
        );
    }
    for key in ["", "a\r\nb"] {
        assert_eq!(request("h", "/", key, &[], &none), Err(HandshakeError::BadKey));
    }
}

#[test]
fn responses_never_carry_a_line_break_from_their_arguments() {
    // A protocol that is not a valid header value selects none rather than end the line.
    let resp = response_101(RFC_ACCEPT, Some("chat\r\nX-Injected: 1"), &HeaderMap::new());
    let parsed = parse_response(&resp, 100).unwrap();
    assert!(parsed.headers().get("x-injected").is_none());
    assert_eq!(validate_response(&parsed, RFC_KEY, &["chat".into()]), Ok(None));
    // An invalid accept is left out: the client refuses the response.
    let resp = response_101("x\r\nX-Injected: 1", None, &HeaderMap::new());
    let parsed = parse_response(&resp, 100).unwrap();
    assert!(parsed.headers().get("x-injected").is_none());
    assert_eq!(validate_response(&parsed, RFC_KEY, &[]), Err(HandshakeError::BadAccept));

    // Framing fields in a plain response's headers cannot contradict its body.
    let mut headers = HeaderMap::new();
    headers.insert("content-length", HeaderValue::from_static("1000"));
    headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    headers.insert("connection", HeaderValue::from_static("keep-alive"));
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let bytes = http_response(StatusCode::OK, &headers, b"hello");
    let text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 5\r\n\
         Connection: close\r\n\r\nhello"
    );
    // The head alone, for HEAD, is the same head.
    let head = http_response_head(StatusCode::OK, &headers, 5);
    assert_eq!(head, text.as_bytes()[..text.len() - 5]);
}

#[test]
fn request_bodies_are_framed_by_one_decimal_content_length_or_not_at_all() {
    use wsx_proto::handshake::{body_length, expects_continue, keeps_alive, BodyLength};
    let req = |fields: &[(&str, &str)]| {
        let mut b = http::Request::post("/");
        for (k, v) in fields {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    };
    assert_eq!(body_length(&req(&[])), BodyLength::Length(0));
    assert_eq!(body_length(&req(&[("content-length", "42")])), BodyLength::Length(42));
    for bad in ["+3", "-1", "3 4", "", "0x10", "99999999999999999999999"] {
        assert_eq!(body_length(&req(&[("content-length", bad)])), BodyLength::Invalid, "{bad:?}");
    }
    let twice = req(&[("content-length", "3"), ("content-length", "3")]);
    assert_eq!(body_length(&twice), BodyLength::Invalid);
    let both = req(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
    assert_eq!(body_length(&both), BodyLength::Chunked);
    assert!(keeps_alive(&req(&[("content-length", "0")])));
    assert!(!keeps_alive(&req(&[("content-length", "3")])) && !keeps_alive(&both));
    assert!(expects_continue(&req(&[("expect", "100-Continue")])));
    assert!(!expects_continue(&req(&[])));
}
