//! Idle upgraded connections, for measuring a server's memory per connection.
//!
//! The client side is hand-written so that it is the same for every server and costs little:
//! a fixed upgrade request, a check for `101`, then nothing.

use std::io;
use std::net::SocketAddr;

use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `count` WebSocket connections to `path` at `addr`, `parallel` handshakes at a time,
/// and returns them once every one is upgraded.
///
/// Handshakes are throttled so that a single-threaded server's accept backlog never overflows.
pub async fn open(
    addr: SocketAddr,
    path: &str,
    count: usize,
    parallel: usize,
) -> io::Result<Vec<TcpStream>> {
    futures_util::stream::iter(0..count)
        .map(|_| upgrade(addr, path))
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await
}

/// One upgraded connection to `path` (`/` for an echo server; a pub/sub server such as
/// `wsx serve --pubsub` subscribes it to the topic of the path). The key is fixed (RFC 6455
/// §1.3's example); the accept value is not checked, only the `101` status.
pub async fn upgrade(addr: SocketAddr, path: &str) -> io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response head too large"));
        }
        // Byte by byte so that nothing past the head is consumed; the server sends nothing
        // after it anyway, and this runs once per connection.
        let b = tcp.read_u8().await?;
        head.push(b);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(io::Error::other(format!(
            "upgrade refused: {}",
            String::from_utf8_lossy(line)
        )));
    }
    Ok(tcp)
}
