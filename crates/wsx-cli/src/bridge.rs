//! TCP over WebSocket, both ends: `wsx serve --to tcp://HOST:PORT` (websockify: each WebSocket
//! gets a TCP connection of its own to HOST:PORT) and `wsx connect --listen tcp://HOST:PORT URL`
//! (each accepted TCP connection gets a WebSocket of its own to URL). One loop, [`run`], moves
//! the bytes of one pair.
//!
//! Bytes from TCP go out as binary messages, one per read (at most [`READ_CHUNK`]); every data
//! message received (text too, as its UTF-8 bytes; large ones piece by piece as they arrive)
//! is written to TCP as it is.
//!
//! Flow control both ways, with nothing unbounded in between:
//! - TCP is read only while the WebSocket's send queue is under its high-water mark, so a
//!   WebSocket peer that does not read holds the TCP sender back through TCP;
//! - the WebSocket is read only while less than [`crate::backlog::MAX_BACKLOG`] waits for
//!   TCP (so that a close or ping behind a little data is seen while TCP drains); then reading
//!   stops and the WebSocket peer is held back through TCP. The WebSocket's timers run all the
//!   while (`WebSocket::timers` while reading is stopped): keepalive pings go out, and a peer
//!   that stays unheard past the ping timeout (its frames sit unread behind data the TCP side
//!   does not take) is given up on with 1011, as is one that vanished; then TCP is reset.
//!   `--idle-timeout` counts the peer as idle while reading is stopped (see
//!   [`crate::backlog`]).
//!
//! Endings: TCP end of stream closes the WebSocket with 1000 once what the WebSocket peer sent
//! before it is written to TCP, a TCP error with 1011 at once; the
//! WebSocket's close (or end) shuts TCP's write side down once the pieces received before it
//! are written, then TCP is closed. When the WebSocket ends abnormally (a close code other
//! than 1000 or 1001, a protocol error, a connection lost without a close) the TCP connection
//! is reset instead, so that its peer sees an error rather than a clean end of a stream that
//! may be cut short.
//!
//! Why the 1000 waits for the backlog: once our close is sent, the close timeout runs, and
//! the peer's reply may sit behind data it sent before it saw our close. Were the close sent
//! while the backlog is full, reading would be paused (the TCP side being slow, not the peer)
//! and the close timeout could expire with valid data unread: the data dropped and TCP reset.
//! Until the backlog is empty the connection stays open and flow-controlled as before, with
//! keepalive to give up on a TCP side that takes nothing. What remains: data the peer sends
//! after the close went, more than the backlog holds, toward a TCP side too slow to take it
//! within the close timeout, still ends in a reset (a peer reads our close and stops
//! sending data, so that is what was in flight).

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Sink;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::io::poll_read_buf;
use tracing::debug;
use wsx::{CloseCode, CloseFrame, Event, Message, WebSocket};

use crate::backlog::Backlog;
use crate::serve::{next_or_stop, State};

/// The most bytes read from TCP at once: the largest message the bridge sends.
pub(crate) const READ_CHUNK: usize = 64 << 10;

/// How long the pieces still waiting for TCP get to be written once the WebSocket is over.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest close reason that fits a close frame (125 bytes, 2 of them the code).
const MAX_REASON: usize = 123;

/// A TCP endpoint, `tcp://HOST:PORT`: where `wsx serve --to` connects, where
/// `wsx connect --listen` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// A name or an address (an IPv6 one without its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    /// Connects, within `limit`, with `TCP_NODELAY` (interactive protocols are the usual cargo).
    pub(crate) async fn connect(&self, limit: Duration) -> io::Result<TcpStream> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let tcp = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "tcp://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "tcp://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `tcp://HOST:PORT` (clap's value parser for `--to` and `--listen`).
pub(crate) fn parse_target(raw: &str) -> Result<Target, String> {
    let expected = || format!("expected tcp://HOST:PORT, got {raw:?}");
    let rest = raw.strip_prefix("tcp://").ok_or_else(expected)?;
    let authority: http::uri::Authority = rest.parse().map_err(|_| expected())?;
    if authority.as_str() != rest || rest.contains('@') {
        return Err(expected());
    }
    let port = authority.port_u16().ok_or_else(|| format!("{raw:?} has no port"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(expected());
    }
    Ok(Target { host: host.to_owned(), port })
}

/// Moves bytes between `ws` and `tcp` until both are done (see the module's documentation).
/// With `state` (`wsx serve`), server shutdown ends it with a 1001 close.
pub(crate) async fn run<S>(
    ws: &mut WebSocket<S>,
    tcp: TcpStream,
    state: Option<&State>,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pipe = Pipe {
        tcp,
        to_tcp: Backlog::default(),
        from_tcp: BytesMut::new(),
        tcp_reading: true,
        tcp_writing: true,
        tcp_first: false,
        close_when_drained: false,
    };
    // Without a server there is no shutdown to wait for: a notification nobody sends.
    let never = Notify::new();
    let stop = state.map_or(&never, |s| &s.stop).notified();
    tokio::pin!(stop);
    let mut registered = false;
    // Whether the WebSocket ended other than with a normal close.
    let mut abnormal = false;
    loop {
        let step = match state {
            Some(state) => {
                next_or_stop(|cx| pipe.poll_turn(ws, cx), state, stop.as_mut(), &mut registered)
                    .await
            }
            None => Some(poll_fn(|cx| pipe.poll_turn(ws, cx)).await),
        };
        let Some(step) = step else {
            // Server shutdown: the client is told, then TCP ends after what it was sent.
            let closed = Box::pin(crate::serve::going_away(ws)).await;
            pipe.finish(false).await;
            return closed;
        };
        match step {
            Step::Ws(None) => break,
            Step::WsFailed(e) => {
                debug!("WebSocket failed: {e}");
                abnormal = true;
                break;
            }
            Step::GaveUp => {
                debug!("WebSocket peer given up on while its data waited for TCP");
                abnormal = true;
                // Bounded by the close deadline the timers set.
                while ws.recv_event().await.is_some() {}
                break;
            }
            Step::Ws(Some(Ok(event))) => match event {
                Event::Message(Message::Binary(data)) => pipe.queue(data),
                Event::Message(Message::Text(text)) => pipe.queue(text.into_bytes()),
                Event::Chunk(chunk) => pipe.queue(chunk.into_data()),
                Event::Message(Message::Close(frame)) => {
                    let code = frame.as_ref().map(|f| f.code);
                    debug!(?code, "WebSocket closed by the peer");
                    abnormal |=
                        !matches!(code, None | Some(CloseCode::NORMAL | CloseCode::GOING_AWAY));
                }
                // Pings are answered by the library; pongs need nothing.
                Event::Message(_) => {}
            },
            // The library has sent the close for it (or the transport is gone); receiving goes
            // on until the end.
            Step::Ws(Some(Err(e))) => {
                debug!("WebSocket failed: {e}");
                abnormal = true;
            }
            Step::TcpRead(Ok(0)) => {
                pipe.tcp_reading = false;
                if pipe.to_tcp.is_empty() {
                    debug!("TCP end of stream: closing with 1000");
                    close(ws, CloseFrame::new(CloseCode::NORMAL, ""));
                } else {
                    debug!("TCP end of stream: closing with 1000 once TCP has the data before");
                    pipe.close_when_drained = true;
                }
            }
            Step::TcpDrained => {
                debug!("TCP took the data before its end of stream: closing with 1000");
                close(ws, CloseFrame::new(CloseCode::NORMAL, ""));
            }
            Step::TcpRead(Ok(_)) => {
                let data = pipe.from_tcp.split().freeze();
                // `poll_turn` read only after `poll_ready` said there is room.
                if Pin::new(&mut *ws).start_send(Message::Binary(data)).is_err() {
                    pipe.tcp_reading = false;
                }
            }
            Step::TcpRead(Err(e)) | Step::TcpFailed(e) => {
                debug!("TCP failed: {e}: closing with 1011");
                pipe.tcp_reading = false;
                pipe.tcp_writing = false;
                pipe.close_when_drained = false;
                pipe.to_tcp.clear();
                close(ws, CloseFrame::new(CloseCode::INTERNAL_ERROR, reason(&format!("TCP: {e}"))));
            }
            // Closing (either way): nothing more can be sent, so TCP is no longer read.
            Step::SendClosed => pipe.tcp_reading = false,
        }
    }
    pipe.finish(abnormal).await;
    Ok(())
}

/// Queues a close frame if the WebSocket is still open (written by the loop's next turn).
fn close<S>(ws: &mut WebSocket<S>, frame: CloseFrame)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Not open any more (the peer closed first): its close is being answered already.
    let _ = Pin::new(ws).start_send(Message::Close(Some(frame)));
}

/// `text` cut to fit a close frame, on a character boundary.
fn reason(text: &str) -> String {
    let mut end = text.len().min(MAX_REASON);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What one turn of the loop saw.
enum Step {
    /// From the WebSocket (`None`: it is over).
    Ws(Option<Result<Event, wsx::Error>>),
    /// Writing to the WebSocket failed: it is over.
    WsFailed(wsx::Error),
    /// Bytes read from TCP into `from_tcp` (0: end of stream).
    TcpRead(io::Result<usize>),
    /// Writing to TCP failed.
    TcpFailed(io::Error),
    /// The WebSocket's timers gave up on its peer while its data waited for TCP.
    GaveUp,
    /// The WebSocket takes no more messages: a close went one way or the other.
    SendClosed,
    /// After TCP's end of stream, the backlog for TCP is written: time for our close.
    TcpDrained,
}

/// The TCP side of one bridge and the bytes in flight.
struct Pipe {
    tcp: TcpStream,
    /// What the WebSocket sent, being written to TCP.
    to_tcp: Backlog,
    /// What was read from TCP, not yet a message.
    from_tcp: BytesMut,
    /// TCP is read (not after its end of stream, or once the WebSocket takes no more).
    tcp_reading: bool,
    /// TCP is written (not after it failed).
    tcp_writing: bool,
    /// Alternates which side is polled first, so that neither direction starves the other.
    tcp_first: bool,
    /// TCP ended while data waited for it: the WebSocket is closed once that is written.
    close_when_drained: bool,
}

impl Pipe {
    /// One turn: write to TCP what is waiting, then (in alternating order) receive from the
    /// WebSocket and read from TCP as flow control allows, and keep the WebSocket's queued
    /// bytes moving.
    fn poll_turn<S>(&mut self, ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.poll_write_tcp(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Step::TcpFailed(e)),
            Poll::Ready(Ok(())) if self.close_when_drained && self.to_tcp.is_empty() => {
                self.close_when_drained = false;
                return Poll::Ready(Step::TcpDrained);
            }
            _ => {}
        }
        self.tcp_first = !self.tcp_first;
        if self.tcp_first {
            if let Poll::Ready(step) = self.poll_read_tcp(ws, cx) {
                return Poll::Ready(step);
            }
        }
        if self.to_tcp.has_room() {
            let recv = ws.recv_event();
            tokio::pin!(recv);
            if let Poll::Ready(event) = recv.poll(cx) {
                return Poll::Ready(Step::Ws(event));
            }
        } else if ws.poll_timers(cx).is_ready() {
            return Poll::Ready(Step::GaveUp);
        }
        if !self.tcp_first {
            if let Poll::Ready(step) = self.poll_read_tcp(ws, cx) {
                return Poll::Ready(step);
            }
        }
        // What was queued without waiting (a message, a close) goes out even while the
        // WebSocket is not read.
        if let Poll::Ready(Err(e)) = Pin::new(&mut *ws).poll_flush(cx) {
            return Poll::Ready(Step::WsFailed(e));
        }
        Poll::Pending
    }

    /// Writes what waits for TCP until done or TCP is full.
    fn poll_write_tcp(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.tcp_writing {
            return Poll::Ready(Ok(()));
        }
        self.to_tcp.poll_write(Pin::new(&mut self.tcp), cx)
    }

    /// Reads from TCP if the WebSocket's send queue has room.
    fn poll_read_tcp<S>(&mut self, ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.tcp_reading {
            return Poll::Pending;
        }
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Step::SendClosed),
            Poll::Pending => return Poll::Pending,
        }
        if self.from_tcp.capacity() < READ_CHUNK / 4 {
            self.from_tcp = BytesMut::with_capacity(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.from_tcp).map(Step::TcpRead)
    }

    /// A piece the WebSocket sent, for TCP (dropped once TCP has failed).
    fn queue(&mut self, data: Bytes) {
        if self.tcp_writing {
            self.to_tcp.push(data);
        }
    }

    /// The WebSocket is over: write what is left and shut TCP's write side down (within
    /// [`DRAIN_TIMEOUT`]), or, after an abnormal end, reset the connection.
    async fn finish(mut self, reset: bool) {
        if reset || !self.tcp_writing {
            // SO_LINGER 0: dropping the socket sends a reset. Failing that, it is closed.
            let _ = self.tcp.set_zero_linger();
            return;
        }
        let drain = async {
            self.to_tcp.write_all(&mut self.tcp).await?;
            self.tcp.shutdown().await
        };
        match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("TCP failed while draining: {e}"),
            Err(_) => debug!("TCP did not take the last bytes in {DRAIN_TIMEOUT:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let ok = |raw: &str, host: &str, port| {
            assert_eq!(parse_target(raw), Ok(Target { host: host.to_owned(), port }), "{raw}");
        };
        ok("tcp://127.0.0.1:5900", "127.0.0.1", 5900);
        ok("tcp://localhost:22", "localhost", 22);
        ok("tcp://[::1]:8080", "::1", 8080);
        ok("tcp://127.0.0.1:0", "127.0.0.1", 0);
        for bad in [
            "127.0.0.1:80",
            "ws://127.0.0.1:80",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:80/path",
            "tcp://user@host:80",
            "tcp://:80",
            "tcp://host:99999",
            "tcp://",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        let v6 = parse_target("tcp://[::1]:80").unwrap();
        assert_eq!(v6.to_string(), "tcp://[::1]:80");
        assert_eq!(parse_target("tcp://h:1").unwrap().to_string(), "tcp://h:1");
    }

    #[test]
    fn reasons_fit_a_close_frame() {
        assert_eq!(reason("short"), "short");
        assert_eq!(reason(&"x".repeat(200)).len(), MAX_REASON);
        // 'é' is two bytes: the cut backs off to a boundary.
        let cut = reason(&"é".repeat(100));
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
    }
}
