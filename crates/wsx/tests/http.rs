//! The HTTP side of the opening handshake through the tokio layer: requests that must be refused
//! (a body, a method other than GET), how refusals and plain answers are delivered (HEAD without
//! a body, nothing injected into headers, a lingering close so that a client still sending reads
//! the whole response), the handshake timeout on every write and on the client's wait, and the
//! client's checks of its subprotocols before it connects.
//!
//! `tokio::time::timeout` only guards against hangs; no test asserts how fast anything is.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::guard;
use http::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::StatusCode;
use tokio::io::{duplex, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use wsx::{Accept, ClientBuilder, Config, Error, HandshakeError, Incoming, Reject};

/// RFC 6455 §1.3's example key.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A short handshake timeout for the tests that wait for it.
const SHORT: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Requests that are refused
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_upgrade_with_a_body_is_refused_and_its_body_is_never_read_as_frames() {
    // The "body" is a valid masked text frame: accepted as frames, it would be a message.
    let body = masked_text_frame(b"smuggled");
    for declared in
        [format!("Content-Length: {}\r\n", body.len()), "Transfer-Encoding: chunked\r\n".to_owned()]
    {
        let (server_io, mut raw) = duplex(8192);
        let mut request = upgrade_request(&declared).into_bytes();
        request.extend_from_slice(&body);
        raw.write_all(&request).await.unwrap();
        raw.shutdown().await.unwrap();
        let result = guard("accept", wsx::accept(server_io)).await;
        let err = match result {
            Ok(_) => panic!("{declared:?}: upgraded, and the body would be read as frames"),
            Err(e) => e,
        };
        assert!(
            matches!(err, Error::Handshake(HandshakeError::RequestBody)),
            "{declared:?}: {err:?}"
        );
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST), "{declared:?}");
        let response = Response::parse(&read_all(&mut raw).await);
        assert_eq!(response.status, 400, "{declared:?}: {response:?}");
        assert_eq!(response.header("connection"), Some("close"), "{declared:?}");
    }
}

#[tokio::test]
async fn a_non_get_upgrade_is_answered_405_with_allow_get() {
    for method in ["POST", "PUT", "HEAD"] {
        let (server_io, mut raw) = duplex(8192);
        raw.write_all(upgrade_request("").replacen("GET", method, 1).as_bytes()).await.unwrap();
        raw.shutdown().await.unwrap();
        let err = guard("accept", wsx::accept(server_io)).await.expect_err("refused");
        assert_eq!(err.status(), Some(StatusCode::METHOD_NOT_ALLOWED), "{method}");
        let response = Response::parse(&read_all(&mut raw).await);
        assert_eq!(response.status, 405, "{method}: {response:?}");
        assert_eq!(response.headers("allow"), ["GET"], "{method}: {response:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Plain answers: HEAD, typed headers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn head_is_answered_with_the_headers_of_get_and_no_body() {
    let page = b"<h1>hello</h1>";
    let mut heads = Vec::new();
    for method in ["GET", "HEAD"] {
        let (server_io, mut raw) = duplex(8192);
        let request = format!("{method} / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        raw.write_all(request.as_bytes()).await.unwrap();
        raw.shutdown().await.unwrap();
        let incoming = guard("read", Incoming::read(server_io, Config::default())).await.unwrap();
        guard("respond", incoming.respond(StatusCode::OK, "text/html", page)).await.unwrap();
        let bytes = read_all(&mut raw).await;
        let response = Response::parse(&bytes);
        assert_eq!(response.status, 200, "{method}: {response:?}");
        assert_eq!(response.header("content-length"), Some("14"), "{method}: {response:?}");
        let expected: &[u8] = if method == "HEAD" { b"" } else { page };
        // RFC 9110 §9.3.2: HEAD gets the headers GET would, and no content.
        assert_eq!(response.body, expected, "{method}: {response:?}");
        assert!(response.rest.is_empty(), "{method}: {response:?}");
        heads.push(response.head);
    }
    assert_eq!(heads[0], heads[1], "HEAD and GET must get the same status and headers");
}

#[tokio::test]
async fn respond_refuses_a_content_type_that_would_inject_headers() {
    for content_type in ["text/html\r\nSet-Cookie: session=stolen", "text/html\n", "a\0b"] {
        let (server_io, mut raw) = duplex(8192);
        raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
        raw.shutdown().await.unwrap();
        let incoming = guard("read", Incoming::read(server_io, Config::default())).await.unwrap();
        let result = guard("respond", incoming.respond(StatusCode::OK, content_type, b"hi")).await;
        let bytes = read_all(&mut raw).await;
        match result {
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::InvalidInput => {}
            other => {
                panic!("{content_type:?}: {other:?}, sent {:?}", String::from_utf8_lossy(&bytes))
            }
        }
        assert!(bytes.is_empty(), "{content_type:?}: {:?}", String::from_utf8_lossy(&bytes));
    }
}

#[tokio::test]
async fn respond_with_sends_typed_headers_and_its_own_framing() {
    for method in ["POST", "HEAD"] {
        let (server_io, mut raw) = duplex(8192);
        let request = format!("{method} /stats HTTP/1.1\r\nHost: localhost\r\n\r\n");
        raw.write_all(request.as_bytes()).await.unwrap();
        raw.shutdown().await.unwrap();
        let incoming = guard("read", Incoming::read(server_io, Config::default())).await.unwrap();
        let mut response = http::Response::new("method not allowed\n");
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let headers = response.headers_mut();
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        // Framing is the server's: these would contradict the body.
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        guard("respond", incoming.respond_with(response)).await.unwrap();
        let response = Response::parse(&read_all(&mut raw).await);
        assert_eq!(response.status, 405, "{response:?}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{response:?}");
        assert_eq!(response.header("content-type"), Some("text/plain"), "{response:?}");
        assert_eq!(response.header("content-length"), Some("19"), "{response:?}");
        assert_eq!(response.header("connection"), Some("close"), "{response:?}");
        assert_eq!(response.header("transfer-encoding"), None, "{response:?}");
        let body: &[u8] = if method == "HEAD" { b"" } else { b"method not allowed\n" };
        assert_eq!(response.body, body, "{method}: {response:?}");
        assert!(response.rest.is_empty(), "{method}: {response:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_lingering_close_ends_without_the_client_closing() {
    // The client neither reads nor ends its side: the answer is written, and the lingering
    // read that follows gives up on its own.
    let (server_io, mut raw) = duplex(8192);
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nand more").await.unwrap();
    let incoming = guard("read", Incoming::read(server_io, Config::default())).await.unwrap();
    guard("respond", incoming.respond(StatusCode::OK, "text/plain", b"hi")).await.unwrap();
    let response = Response::parse(&read_all(&mut raw).await);
    assert_eq!(response.body, b"hi");
}

// ---------------------------------------------------------------------------------------------
// Client checks before connecting
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_subprotocols_fail_connect_before_any_connection_is_made() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    // RFC 6455 §4.1: the elements of Sec-WebSocket-Protocol are unique RFC 7230 tokens.
    let cases: [&[&str]; 9] = [
        &["chat\r\nX-Injected: 1"],
        &["chat\n"],
        &[""],
        &["two words"],
        &["a,b"],
        &["(chat)"],
        &["chat/2"],
        &["ünï"],
        &["chat", "chat"],
    ];
    for protocols in cases {
        let mut builder = ClientBuilder::new(url.clone()).connect_timeout(Some(SHORT));
        for p in protocols {
            builder = builder.protocol(*p);
        }
        let result = guard("connect", builder.connect()).await;
        let err = result.err().unwrap_or_else(|| panic!("{protocols:?}: connected"));
        let invalid = protocols.last().copied().unwrap_or_default();
        assert!(
            matches!(&err, Error::Handshake(HandshakeError::InvalidProtocol(p)) if p == invalid),
            "{protocols:?}: {err:?}"
        );
        match listener.accept() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("{protocols:?}: a connection was made: {other:?}"),
        }
    }

    // Over a given transport, nothing is written.
    let (client_io, mut raw) = duplex(8192);
    let builder = ClientBuilder::new("ws://localhost/").protocol("bad\r\nname");
    let err = guard("connect_on", builder.connect_on(client_io)).await.expect_err("refused");
    assert!(matches!(err, Error::Handshake(HandshakeError::InvalidProtocol(_))), "{err:?}");
    assert!(read_all(&mut raw).await.is_empty());
}

#[tokio::test]
async fn connect_gives_up_at_the_handshake_timeout_when_the_server_never_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    // Accepts, reads nothing, answers nothing, and keeps the connection open.
    let silent = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
        drop(tcp);
    });
    let builder = ClientBuilder::new(url)
        .config(Config::default().handshake_timeout(Some(SHORT)))
        .connect_timeout(None);
    let result = guard("connect", builder.connect()).await;
    assert!(matches!(result, Err(Error::Timeout(_))), "{:?}", result.map(|(_, r)| r));
    silent.abort();
}

// ---------------------------------------------------------------------------------------------
// The handshake timeout bounds every write
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_101_to_a_client_that_never_reads_ends_at_the_handshake_timeout() {
    // 64 bytes of buffer: the 101 does not fit, and the client never reads it.
    let (server_io, mut raw) = duplex(64);
    let config = Config::default().handshake_timeout(Some(SHORT));
    let accept = wsx::accept_with(server_io, config, |_| Ok(Accept::default()));
    let (result, ()) = tokio::join!(guard("accept", accept), async {
        raw.write_all(upgrade_request("").as_bytes()).await.unwrap();
    });
    assert!(matches!(result, Err(Error::Timeout(_))), "{:?}", result.err());
}

#[tokio::test(start_paused = true)]
async fn refusals_to_a_client_that_never_reads_end_at_the_handshake_timeout() {
    let config = Config::default().handshake_timeout(Some(SHORT));
    // Refused by the application, then by the checks (an invalid key); 16 bytes of buffer hold
    // neither answer. The application's refusal reports the timeout; the checks' refusal
    // reports itself, as when its answer cannot be written at all.
    let cases = [
        (upgrade_request(""), "the application's refusal"),
        (upgrade_request("").replace(KEY, "short"), "the checks' refusal"),
    ];
    for (request, what) in cases {
        let (server_io, mut raw) = duplex(16);
        let reject = |req: &http::Request<()>| match req.headers()["sec-websocket-key"] == KEY {
            true => Err(Reject::status(StatusCode::FORBIDDEN)),
            false => Ok(Accept::default()),
        };
        let accept = wsx::accept_with(server_io, config.clone(), reject);
        let (result, ()) = tokio::join!(guard("refusing", accept), async {
            raw.write_all(request.as_bytes()).await.unwrap();
        });
        match result {
            Err(Error::Timeout(_)) if what == "the application's refusal" => {}
            Err(Error::Handshake(HandshakeError::BadKey)) if what == "the checks' refusal" => {}
            other => panic!("{what}: {:?}", other.map(|_| "upgraded")),
        }
    }
}

#[tokio::test]
async fn a_large_response_to_a_client_that_never_reads_ends_at_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config::default().handshake_timeout(Some(SHORT));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let incoming = Incoming::read(tcp, config).await?;
        // Far more than any socket buffers: the write waits for a reader that never comes.
        let body = vec![b'x'; 64 << 20];
        incoming.respond(StatusCode::OK, "application/octet-stream", &body).await
    });
    let mut client = tiny_receive_buffer_client(addr).await;
    client.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let result = guard("the server task", server).await.unwrap();
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    drop(client);
}

// ---------------------------------------------------------------------------------------------
// Lingering close: the response reaches a client that is still sending
// ---------------------------------------------------------------------------------------------

/// What a client sends after the request head, and keeps sending while the server answers.
const TAIL: usize = 200 << 10;

#[tokio::test]
async fn a_refused_upgrade_reaches_a_client_still_sending() {
    let head = upgrade_request("").replace(KEY, "short").into_bytes();
    let response = exchange_with_tail(head, |tcp| async move {
        let err = wsx::accept(tcp).await.expect_err("refused");
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    })
    .await;
    assert_eq!(response.status, 400, "{response:?}");
}

#[tokio::test]
async fn an_application_refusal_reaches_a_client_still_sending() {
    let head = upgrade_request("Origin: https://elsewhere.example\r\n").into_bytes();
    let response = exchange_with_tail(head, |tcp| async move {
        let reject = |_: &_| Err(Reject::status(StatusCode::FORBIDDEN));
        let err = wsx::accept_with(tcp, Config::default(), reject).await.expect_err("refused");
        assert!(matches!(err, Error::Rejected(_)), "{err:?}");
    })
    .await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.body, b"Forbidden\n");
}

#[tokio::test]
async fn an_oversized_head_is_refused_to_a_client_still_sending() {
    // The tail continues the head: it never ends, and is refused at 16 KiB.
    let head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Padding: ".to_vec();
    let response = exchange_with_tail(head, |tcp| async move {
        let err = Incoming::read(tcp, Config::default()).await.expect_err("refused");
        assert_eq!(err.status(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    })
    .await;
    assert_eq!(response.status, 431, "{response:?}");
}

#[tokio::test]
async fn a_plain_response_reaches_a_client_still_sending() {
    let page = "<p>hello</p>\n".repeat(1000);
    let head = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    let served = page.clone();
    let response = exchange_with_tail(head, |tcp| async move {
        let incoming = Incoming::read(tcp, Config::default()).await.unwrap();
        incoming.respond(StatusCode::OK, "text/html", served.as_bytes()).await.unwrap();
    })
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, page.as_bytes());
}

/// A server on loopback runs `serve` on one connection; a client with a small send buffer
/// writes `head` and [`TAIL`] bytes after it, all before reading (as a client uploading a body
/// does), then ends its side and reads. Every write must succeed and the response must end
/// with a clean end of stream: a server that closes with unread input resets the connection,
/// failing the client's writes and possibly discarding the response.
async fn exchange_with_tail<F, Fut>(head: Vec<u8>, serve: F) -> Response
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        serve(tcp).await;
    });
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let mut client = guard("connect", socket.connect(addr)).await.unwrap();
    let mut request = head;
    request.resize(request.len() + TAIL, b'a');
    guard("writing the request and its tail", client.write_all(&request))
        .await
        .expect("the server must keep reading while the client sends");
    client.shutdown().await.unwrap();
    let mut bytes = Vec::new();
    guard("reading the response", client.read_to_end(&mut bytes))
        .await
        .expect("the response must end with a clean end of stream, not a reset");
    guard("the server task", server).await.unwrap();
    Response::parse(&bytes)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An upgrade request for `/chat` with [`KEY`] and `extra` header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A masked text frame with a payload of at most 125 bytes.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let len = u8::try_from(payload.len()).ok().filter(|n| *n <= 125).expect("a short payload");
    let mut out = vec![0x81, 0x80 | len];
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Everything `r` yields until its end.
async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    guard("reading to the end", r.read_to_end(&mut out)).await.unwrap();
    out
}

/// A loopback client whose receive buffer is as small as the kernel allows.
async fn tiny_receive_buffer_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1).unwrap();
    guard("connect", socket.connect(addr)).await.unwrap()
}

/// An HTTP response as received.
struct Response {
    status: u16,
    /// The head, as sent.
    head: String,
    /// The body, as long as Content-Length says (or what arrived of it).
    body: Vec<u8>,
    /// Bytes after the body.
    rest: Vec<u8>,
}

impl Response {
    fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {text:?}"))
            + 4;
        let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 "), "not a response: {text:?}");
        let status = head[9..12].parse().unwrap();
        let mut response = Self { status, head, body: Vec::new(), rest: Vec::new() };
        let length: usize = response.header("content-length").map_or(0, |v| v.parse().unwrap());
        let body_end = (end + length).min(bytes.len());
        response.body = bytes[end..body_end].to_vec();
        response.rest = bytes[body_end..].to_vec();
        response
    }

    /// The values of every field `name` (case-insensitive).
    fn headers(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    /// The value of field `name`, which must appear at most once.
    fn header(&self, name: &str) -> Option<&str> {
        let values = self.headers(name);
        assert!(values.len() <= 1, "{name} appears {} times: {self:?}", values.len());
        values.first().copied()
    }
}

/// The head as text, and the body and what follows it by length and start: a page or a large
/// body would drown the failure message.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("head", &self.head)
            .field("body", &format_args!("{} bytes: {:?}…", self.body.len(), start(&self.body)))
            .field("rest", &format_args!("{} bytes: {:?}…", self.rest.len(), start(&self.rest)))
            .finish()
    }
}
