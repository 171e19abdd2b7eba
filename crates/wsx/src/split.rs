//! `WebSocket::split`: a receiving half and a sending half over one shared connection.
//!
//! Both halves may write (the receiver flushes pongs and close replies), and a transport keeps
//! only the last waker registered for writing. So each half polls the transport with a waker
//! that wakes *both* halves; neither can then sleep through the other's registration.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use futures_task::{waker, ArcWake};
use futures_util::future::poll_fn;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use wsx_proto::{Chunk, CloseFrame, Event, Message};

use crate::{Error, WebSocket};

/// The receiving half of a split [`WebSocket`]: a [`Stream`] of messages.
#[derive(Debug)]
pub struct ReadHalf<S> {
    shared: Arc<Shared<S>>,
}

/// The sending half of a split [`WebSocket`]: a [`Sink`] of messages.
#[derive(Debug)]
pub struct WriteHalf<S> {
    shared: Arc<Shared<S>>,
}

#[derive(Debug)]
struct Shared<S> {
    ws: Mutex<WebSocket<S>>,
    wakers: Arc<Wakers>,
}

#[derive(Debug, Default)]
struct Wakers {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl ArcWake for Wakers {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.read.wake();
        arc_self.write.wake();
    }
}

pub(crate) fn split<S>(ws: WebSocket<S>) -> (ReadHalf<S>, WriteHalf<S>) {
    let shared = Arc::new(Shared { ws: Mutex::new(ws), wakers: Arc::default() });
    (ReadHalf { shared: shared.clone() }, WriteHalf { shared })
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, WebSocket<S>> {
        // A panic while holding the lock cannot leave the core half-updated in a way that
        // matters more than the panic itself; keep going with the inner value.
        self.ws.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with a context whose waker wakes both halves.
    fn with_shared_waker<R>(&self, f: impl FnOnce(&mut WebSocket<S>, &mut Context<'_>) -> R) -> R {
        let both = waker(self.wakers.clone());
        let mut cx = Context::from_waker(&both);
        f(&mut self.lock(), &mut cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReadHalf<S> {
    /// Receives the next message; see [`WebSocket::recv`].
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Receives the next message or piece of a large one; see [`WebSocket::recv_event`].
    pub async fn recv_event(&mut self) -> Option<Result<Event, Error>> {
        poll_fn(|cx| {
            self.shared.wakers.read.register(cx.waker());
            self.shared.with_shared_waker(|ws, cx| ws.poll_recv_event(cx))
        })
        .await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteHalf<S> {
    /// Sends a message and flushes it; see [`WebSocket::send`].
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        Pin::new(&mut *self).start_send(message)?;
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Sends a piece of a data message and flushes it; see [`WebSocket::send_chunk`].
    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), Error> {
        poll_fn(|cx| Pin::new(&mut *self).poll_ready(cx)).await?;
        self.shared.lock().start_send_chunk(chunk)?;
        poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }

    /// Starts the closing handshake; see [`WebSocket::close`].
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if let Some(frame) = frame {
            let sent = self.shared.lock().start_send_message(Message::Close(Some(frame)));
            match sent {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => return Err(e),
            }
        }
        poll_fn(|cx| Pin::new(&mut *self).poll_close(cx)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for ReadHalf<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.shared.wakers.read.register(cx.waker());
        self.shared.with_shared_waker(|ws, cx| ws.poll_recv(cx))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WriteHalf<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.wakers.write.register(cx.waker());
        self.shared.with_shared_waker(|ws, cx| ws.poll_ready_to_send(cx))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.shared.lock().start_send_message(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.wakers.write.register(cx.waker());
        self.shared.with_shared_waker(|ws, cx| ws.poll_flush_timed(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.wakers.write.register(cx.waker());
        self.shared.with_shared_waker(|ws, cx| ws.poll_close_sink(cx))
    }
}
