//! A raw WebSocket client over a blocking `TcpStream`, frames written and read by hand: for
//! tests that send what a well-behaved client library would not, or stop reading on purpose.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use super::{Response, HANG_GUARD};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// The masking key of RFC 6455 §5.7's examples; any key will do for a test client.
pub(crate) const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A WebSocket upgrade request without extensions, with `extra` header lines.
pub(crate) fn upgrade_request(extra: &[&str]) -> String {
    let mut head = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\n"
        .to_owned();
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A client frame (masked with `mask`) carrying `payload`.
pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = frame_header(fin, opcode, payload.len() as u64, mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A client frame header (masked with `mask`) declaring `len` payload bytes.
pub(crate) fn frame_header(fin: bool, opcode: u8, len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out
}

/// Code and reason of a close frame's payload.
pub(crate) fn parse_close(payload: &[u8]) -> (u16, String) {
    assert!(payload.len() >= 2, "close frame without a code: {payload:?}");
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        String::from_utf8(payload[2..].to_vec()).unwrap(),
    )
}

/// A raw TCP client speaking WebSocket frames written by hand.
pub(crate) struct Raw {
    pub(crate) tcp: TcpStream,
    pub(crate) reader: BufReader<TcpStream>,
}

/// A frame from the server.
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Raw {
    pub(crate) fn connect(port: u16) -> Self {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        tcp.set_write_timeout(Some(HANG_GUARD)).unwrap();
        let reader = BufReader::new(tcp.try_clone().unwrap());
        Self { tcp, reader }
    }

    /// Connects and upgrades, asserting `101`.
    pub(crate) fn upgrade(port: u16, extra: &[&str]) -> Self {
        let mut raw = Self::connect(port);
        raw.send(upgrade_request(extra).as_bytes());
        let response = raw.read_head();
        assert_eq!(response.status, 101, "{response:?}");
        raw
    }

    /// Connects and upgrades like [`Self::upgrade`], with the client's receive buffer set to
    /// `bytes` before connecting: the window it advertises stays that small, so a client that
    /// does not read stops the server's writes after a few KiB.
    pub(crate) fn upgrade_with_recv_buffer(port: u16, bytes: u32) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let tcp = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(bytes).unwrap();
            let tcp = socket.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;
            tcp.unwrap().into_std().unwrap()
        });
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        tcp.set_write_timeout(Some(HANG_GUARD)).unwrap();
        let reader = BufReader::new(tcp.try_clone().unwrap());
        let mut raw = Self { tcp, reader };
        raw.send(upgrade_request(&[]).as_bytes());
        let response = raw.read_head();
        assert_eq!(response.status, 101, "{response:?}");
        raw
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).unwrap();
    }

    /// Reads a response head (no body).
    pub(crate) fn read_head(&mut self) -> Response {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = self.reader.read_until(b'\n', &mut head).unwrap();
            assert!(n > 0, "connection closed within the response head: {head:?}");
        }
        Response::parse(&head)
    }

    /// Reads a response head and its body.
    pub(crate) fn read_response(&mut self) -> Response {
        let mut response = self.read_head();
        let mut body = vec![0; response.content_length()];
        self.reader.read_exact(&mut body).unwrap();
        response.body = body;
        response
    }

    /// The next frame; `None` at the end of the stream.
    pub(crate) fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0; 2];
        match self.reader.read(&mut head[..1])? {
            0 => return Ok(None),
            _ => self.reader.read_exact(&mut head[1..])?,
        }
        assert_eq!(head[1] & 0x80, 0, "RFC 6455 §5.1: a server must not mask");
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0; 2];
                self.reader.read_exact(&mut ext)?;
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0; 8];
                self.reader.read_exact(&mut ext)?;
                u64::from_be_bytes(ext)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).unwrap()];
        self.reader.read_exact(&mut payload)?;
        Ok(Some(Frame { fin: head[0] & 0x80 != 0, opcode: head[0] & 0x0f, payload }))
    }

    /// Reads the next frame, which must be a close frame.
    pub(crate) fn expect_close(&mut self) -> (u16, String) {
        let frame = self.read_frame().unwrap().expect("closed without a close frame");
        assert_eq!(frame.opcode, OP_CLOSE, "expected a close frame: {:?}", frame.payload);
        parse_close(&frame.payload)
    }

    /// Asserts that the server closes the connection and sends nothing more.
    pub(crate) fn expect_end(&mut self) {
        let rest = read_to_end(&mut self.reader);
        assert!(
            rest.is_empty(),
            "{} more bytes after the end: {:?}",
            rest.len(),
            &rest[..rest.len().min(16)]
        );
    }
}

/// Everything until the peer closes (or resets) the connection; panics on a timeout.
pub(crate) fn read_to_end(reader: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0; 16 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}
