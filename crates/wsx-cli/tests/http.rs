//! The HTTP side of the `wsx` binary: what `wsx serve` answers to plain HTTP (HEAD, methods it
//! does not serve), to upgrades it refuses, and to clients still sending when it answers; the
//! closing handshake when a message races its idle close; and `wsx connect` refusing invalid
//! headers and subprotocols before it connects.
//!
//! Timeouts here only guard against hangs; no test asserts how fast anything is.

mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Response, Server, HANG_GUARD, WSX};

/// The masking key of RFC 6455 §5.7's examples; any key will do for a test client.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

// ---------------------------------------------------------------------------------------------
// wsx serve: plain HTTP
// ---------------------------------------------------------------------------------------------

/// Reads one response from `tcp`: the head, then as many body bytes as it declares (none for
/// a response to HEAD).
fn read_response(tcp: &mut TcpStream, head_request: bool) -> Response {
    let mut bytes = Vec::new();
    let mut byte = [0; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).unwrap(), 1, "the connection ended in a head: {bytes:?}");
        bytes.push(byte[0]);
    }
    let mut response = Response::parse(&bytes);
    if !head_request {
        let mut body = vec![0; response.content_length()];
        tcp.read_exact(&mut body).unwrap();
        response.body = body;
    }
    response
}

/// Whether the server ends `tcp` (EOF or reset) within `within`, sending nothing more.
fn ends_within(tcp: &mut TcpStream, within: Duration) -> bool {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0; 64];
    let ended = match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    };
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    ended
}

/// RFC 9112 §9.3: HTTP/1.1 connections persist unless a side says `Connection: close`.
/// Requests one after another and pipelined ones are each answered on one connection, HEAD
/// with the head alone, and a WebSocket upgrade may follow page requests; HTTP/1.0 persists
/// only when it asks to, and `Connection: close` is honoured.
#[test]
fn plain_http_connections_are_kept_alive_between_requests() {
    let server = Server::start(&[]);
    let connect = || {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        tcp
    };
    let keep = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
    };

    // One request after another, then pipelined, on one connection.
    let mut tcp = connect();
    for (method, path, status) in
        [("GET", "/", 200), ("HEAD", "/stats", 200), ("GET", "/missing", 404), ("POST", "/", 405)]
    {
        tcp.write_all(&keep(method, path)).unwrap();
        let response = read_response(&mut tcp, method == "HEAD");
        assert_eq!(response.status, status, "{method} {path}: {response:?}");
        assert_eq!(response.header("connection"), None, "{method} {path}: {response:?}");
    }
    let pipelined = [keep("GET", "/stats"), keep("GET", "/index.html"), request("GET", "/stats")];
    tcp.write_all(&pipelined.concat()).unwrap();
    for last in [false, false, true] {
        let response = read_response(&mut tcp, false);
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.has_header("connection", "close"), last, "{response:?}");
    }
    assert!(ends_within(&mut tcp, HANG_GUARD), "Connection: close was not honoured");

    // An upgrade after a page request on the same connection, and the echo works.
    let mut tcp = connect();
    tcp.write_all(&keep("GET", "/")).unwrap();
    assert_eq!(read_response(&mut tcp, false).status, 200);
    tcp.write_all(upgrade_request("").as_bytes()).unwrap();
    let response = read_response(&mut tcp, true);
    assert_eq!(response.status, 101, "{response:?}");
    tcp.write_all(&masked_frame(OP_TEXT, b"after a page")).unwrap();
    let mut frame = [0; 14];
    tcp.read_exact(&mut frame).unwrap();
    assert_eq!(&frame[..2], &[0x81, 12]);
    assert_eq!(&frame[2..], b"after a page");

    // HTTP/1.0: closed after the answer, unless it asks for keep-alive.
    let mut tcp = connect();
    tcp.write_all(b"GET /stats HTTP/1.0\r\n\r\n").unwrap();
    let response = read_response(&mut tcp, false);
    assert!(response.has_header("connection", "close"), "{response:?}");
    assert!(ends_within(&mut tcp, HANG_GUARD));
    let mut tcp = connect();
    for _ in 0..2 {
        tcp.write_all(b"GET /stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let response = read_response(&mut tcp, false);
        assert!(response.has_header("connection", "keep-alive"), "{response:?}");
    }

    // A request with a body is not read past: its connection closes after the answer.
    let mut tcp = connect();
    tcp.write_all(b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    let response = read_response(&mut tcp, false);
    assert_eq!(response.status, 405, "{response:?}");
    assert!(response.has_header("connection", "close"), "{response:?}");

    // A kept-alive connection that sends nothing more is closed after the idle limit (5 s).
    let mut tcp = connect();
    tcp.write_all(&keep("GET", "/stats")).unwrap();
    read_response(&mut tcp, false);
    let started = Instant::now();
    assert!(ends_within(&mut tcp, HANG_GUARD), "an idle kept-alive connection stayed open");
    assert!(started.elapsed() >= Duration::from_secs(4), "closed early: {:?}", started.elapsed());
}

/// Every request of a kept-alive connection gets `--handshake-timeout` (1 s here), not only
/// the first: a client that sends one byte of its second request and stalls is cut off.
#[test]
fn a_kept_alive_connection_s_next_request_has_the_handshake_timeout_too() {
    let server = Server::start(&["--handshake-timeout", "1"]);
    // Control: the first request, started and never finished, is cut at 1 s.
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    tcp.write_all(b"G").unwrap();
    let mut buf = [0; 512];
    assert!(tcp.read(&mut buf).is_ok(), "the first request is not cut at 1 s");

    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    tcp.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    read_response(&mut tcp, false);
    tcp.write_all(b"G").unwrap(); // the next request starts, and stalls
    let ended = match tcp.read(&mut buf) {
        Ok(_) => true,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    };
    assert!(ended, "a stalled second request was still open after 4 s (handshake timeout 1 s)");
}

#[test]
fn head_gets_the_headers_of_get_without_the_body() {
    let server = Server::start(&[]);
    for path in ["/", "/index.html", "/stats", "/missing"] {
        let get = Response::parse(&exchange(server.port, &request("GET", path)));
        let head = Response::parse(&exchange(server.port, &request("HEAD", path)));
        // RFC 9110 §9.3.2: the same status and fields, Content-Length included, and no content.
        assert_eq!(head.head, get.head, "{path}");
        assert!(!get.body.is_empty(), "{path}: GET has a body: {get:?}");
        assert_eq!(get.body.len(), get.content_length(), "{path}: {get:?}");
        assert!(head.body.is_empty() && head.rest.is_empty(), "{path}: HEAD got a body: {head:?}");
    }
}

#[test]
fn methods_that_are_not_served_get_405_with_allow() {
    let server = Server::start(&[]);
    for (method, path) in
        [("POST", "/"), ("PUT", "/index.html"), ("DELETE", "/stats"), ("OPTIONS", "/")]
    {
        let response = Response::parse(&exchange(server.port, &request(method, path)));
        assert_eq!(response.status, 405, "{method} {path}: {response:?}");
        // RFC 9110 §15.5.6: a 405 lists what the resource supports.
        assert_eq!(response.header("allow"), Some("get, head"), "{method} {path}: {response:?}");
    }
    // Nothing is at an unknown path, whatever the method.
    let response = Response::parse(&exchange(server.port, &request("POST", "/missing")));
    assert_eq!(response.status, 404, "{response:?}");
    // An upgrade is GET only.
    let post = upgrade_request("").replacen("GET", "POST", 1);
    let response = Response::parse(&exchange(server.port, post.as_bytes()));
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.header("allow"), Some("get"), "{response:?}");
}

#[test]
fn an_upgrade_with_a_body_is_refused_and_the_body_is_not_echoed() {
    let server = Server::start(&[]);
    let body = masked_frame(OP_TEXT, b"smuggled");
    for declared in
        [format!("Content-Length: {}\r\n", body.len()), "Transfer-Encoding: x\r\n".into()]
    {
        let mut bytes = upgrade_request(&declared).into_bytes();
        bytes.extend_from_slice(&body);
        let response = Response::parse(&exchange(server.port, &bytes));
        assert_eq!(response.status, 400, "{declared:?}: {response:?}");
        assert!(response.rest.is_empty(), "{declared:?}: more after the response: {response:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// wsx serve: answers reach a client that is still sending
// ---------------------------------------------------------------------------------------------

/// What a client sends after its request head, before it reads.
const TAIL: usize = 200 << 10;

#[test]
fn a_refused_origin_reaches_a_client_still_sending() {
    let server = Server::start(&["--allow-origin", "https://good.example"]);
    let head = upgrade_request("Origin: https://evil.example\r\n");
    let response = send_with_tail(server.port, head.as_bytes());
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.body.len(), response.content_length(), "{response:?}");
}

#[test]
fn the_page_reaches_a_client_still_sending() {
    let server = Server::start(&[]);
    let response = send_with_tail(server.port, &request("GET", "/"));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.content_length() > 0, "{response:?}");
    assert_eq!(response.body.len(), response.content_length(), "{response:?}");
}

/// Sends `head` and [`TAIL`] bytes after it from a socket with a small send buffer, all before
/// reading (as a client uploading a body does), ends its side, then reads everything. The
/// writes must all succeed and the response must end with a clean end of stream: a server
/// that closes with unread input resets the connection, which fails the writes and can destroy
/// the response before it is read.
fn send_with_tail(port: u16, head: &[u8]) -> Response {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tcp = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        socket.connect((Ipv4Addr::LOCALHOST, port).into()).await.unwrap()
    });
    let mut tcp = tcp.into_std().unwrap();
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    tcp.set_write_timeout(Some(HANG_GUARD)).unwrap();
    let mut bytes = head.to_vec();
    bytes.resize(bytes.len() + TAIL, b'a');
    tcp.write_all(&bytes).expect("the server must keep reading while the client sends");
    tcp.shutdown(std::net::Shutdown::Write).unwrap();
    let mut received = Vec::new();
    tcp.read_to_end(&mut received).expect("a clean end of stream, not a reset");
    Response::parse(&received)
}

// ---------------------------------------------------------------------------------------------
// wsx serve: the echo and a racing close
// ---------------------------------------------------------------------------------------------

#[test]
fn a_message_racing_the_idle_close_still_gets_a_closing_handshake() {
    let server = Server::start(&[
        "--idle-timeout",
        "1",
        "--ping-interval",
        "0",
        "--close-timeout",
        "30",
        "--no-deflate",
    ]);
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap();
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    tcp.write_all(upgrade_request("").as_bytes()).unwrap();
    let head = read_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");

    // Without reading it, wait for the server's idle close to arrive: from then on the server
    // has closed, and what the client sends crosses that close.
    let started = Instant::now();
    let mut byte = [0];
    while tcp.peek(&mut byte).unwrap() == 0 {
        assert!(started.elapsed() < HANG_GUARD, "no idle close");
        thread::sleep(Duration::from_millis(10));
    }
    tcp.write_all(&masked_frame(OP_TEXT, b"crossing the close")).unwrap();

    // The close, and no echo: nothing may follow a close (RFC 6455 §5.5.1).
    let (opcode, payload) = read_frame(&mut tcp).expect("the server's close");
    assert_eq!(opcode, OP_CLOSE, "expected the close, got {:?}", String::from_utf8_lossy(&payload));
    assert_eq!(payload[..2], 1001u16.to_be_bytes(), "{payload:?}");

    // The server still waits for the reply: the connection is not ended under the client. (It
    // ends it at --close-timeout, 30 s, without a reply; this wait is well within that.)
    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    match tcp.read(&mut byte) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the server ended the connection before the client answered its close"),
        other => panic!("expected the server to wait for the close reply: {other:?}"),
    }
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();

    // The reply completes the handshake, and the server ends the TCP connection cleanly.
    tcp.write_all(&masked_frame(OP_CLOSE, &payload[..2])).unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).expect("a clean end of stream after the closing handshake");
    assert!(rest.is_empty(), "{rest:?}");
}

// ---------------------------------------------------------------------------------------------
// wsx connect: invalid values are refused before connecting
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_refuses_invalid_headers_and_subprotocols_before_connecting() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let cases: [&[&str]; 8] = [
        &["--protocol", "chat\r\nX-Injected: 1"],
        &["--protocol", "two words"],
        &["--protocol", ""],
        &["--protocol", "chat", "--protocol", "chat"],
        &["-H", "X-Token: a\r\nX-Injected: 1"],
        &["-H", "X-Token: bad\nvalue"],
        &["-H", "no colon"],
        &["--origin", "https://example.test\r\nX-Injected: 1"],
    ];
    for args in cases {
        let output = Command::new(WSX)
            .arg("connect")
            .args(args)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one error line expected: {stderr:?}");
        assert!(lines[0].starts_with("wsx: error: invalid "), "{args:?}: {stderr:?}");
        match listener.accept() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("{args:?}: wsx connected: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A plain request for `path` with `method`.
fn request(method: &str, path: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// An upgrade request with RFC 6455 §1.3's key and `extra` header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends `bytes` on a new connection (from another thread: the server may stop reading) and
/// returns everything the server sends until it ends the connection.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let mut writer = tcp.try_clone().unwrap();
    let bytes = bytes.to_vec();
    let writing = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut out = Vec::new();
    let mut buf = [0; 16 << 10];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was not ended: {e}"),
        }
    }
    writing.join().unwrap();
    out
}

/// A masked client frame with FIN set and a payload of at most 125 bytes.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let len = u8::try_from(payload.len()).ok().filter(|n| *n <= 125).expect("a short payload");
    let mut out = vec![0x80 | opcode, 0x80 | len];
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Reads an HTTP head, byte by byte so that nothing after it is consumed.
fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("a complete head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// The next server frame (unmasked, payload under 126 bytes): opcode and payload.
fn read_frame(tcp: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0; 2];
    tcp.read_exact(&mut head)?;
    assert_eq!(head[1] & 0x80, 0, "RFC 6455 §5.1: a server must not mask");
    let len = usize::from(head[1] & 0x7f);
    assert!(len < 126, "a short frame expected");
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload)?;
    Ok((head[0] & 0x0f, payload))
}
