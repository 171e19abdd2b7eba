//! A WebSocket whose transport is itself a wsx WebSocket on the same thread (a tunnel): the
//! outer connection's read calls into the inner one's, so the per-thread read slab must not be
//! borrowed across the transport's `poll_read` (it used to be, and the inner read panicked on
//! `borrow_mut`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wsx::{Config, Message, Role, WebSocket};

/// A byte stream carried in the binary messages of a wsx WebSocket.
struct Tunnel {
    ws: WebSocket<tokio::io::DuplexStream>,
    pending: Bytes,
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match futures_util::ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_util::ready!(self.ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        let msg = Message::binary(Bytes::copy_from_slice(data));
        self.ws.start_send_unpin(msg).map_err(io::Error::other)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(io::Error::other)
    }
}

fn pair() -> (WebSocket<tokio::io::DuplexStream>, WebSocket<tokio::io::DuplexStream>) {
    let (a, b) = tokio::io::duplex(64 << 10);
    let config = || Config::default().ping_interval(None);
    (WebSocket::from_raw(a, Role::Client, config()), WebSocket::from_raw(b, Role::Server, config()))
}

#[tokio::test(flavor = "current_thread")]
async fn a_websocket_tunnelled_through_a_websocket_on_the_same_thread_works() {
    let (inner_client, inner_server) = pair();
    let client_tunnel = Tunnel { ws: inner_client, pending: Bytes::new() };
    let server_tunnel = Tunnel { ws: inner_server, pending: Bytes::new() };
    // A short close timeout: the client waits that long for the tunnel to end after the close.
    let outer = || Config::default().close_timeout(Some(std::time::Duration::from_millis(200)));
    let mut outer_client = WebSocket::from_raw(client_tunnel, Role::Client, outer());
    let mut outer_server = WebSocket::from_raw(server_tunnel, Role::Server, outer());

    let echo = async {
        while let Some(Ok(msg)) = outer_server.recv().await {
            if msg.is_data() {
                outer_server.send(msg).await.unwrap();
            }
        }
    };
    let talk = async {
        for text in ["through", "the tunnel", &"x".repeat(100_000)] {
            outer_client.send(Message::text(text)).await.unwrap();
            assert_eq!(outer_client.recv().await.unwrap().unwrap(), Message::text(text));
        }
        outer_client.close(None).await.unwrap();
        while outer_client.recv().await.is_some() {}
    };
    let run = async { tokio::join!(echo, talk) };
    tokio::time::timeout(std::time::Duration::from_secs(30), run).await.expect("hang");
}
