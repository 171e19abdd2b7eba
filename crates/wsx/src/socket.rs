use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::future::poll_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::coop::unconstrained;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::io::{poll_read_buf, poll_write_buf};
use wsx_proto::connection::State;
use wsx_proto::{
    Chunk, CloseCode, CloseFrame, Config, Connection, Event, Message, ProtocolError, Role,
    SendError,
};

use crate::pubsub::{Inbox, Subscriber, Taken};
use crate::split::{self, ReadHalf, WriteHalf};
use crate::Error;

/// Run-queue passes the receive loop lets go by, at most, before taking new deliveries while
/// more keep coming (see `WebSocket::poll_send_all`).
const DEFER_PASSES: u8 = 2;

/// Reads in a row that find data before the receive loop looks at its timer anyway.
const TIMER_CHECK_READS: u8 = 16;

/// Size of each thread's shared read slab.
const SCRATCH_SLAB: usize = 64 << 10;
/// A new slab is started when less than this is left of the current one.
const SCRATCH_MIN_SPARE: usize = 16 << 10;

thread_local! {
    /// Spare capacity that reads between frames land in; filled parts are split off and owned by
    /// the connection (and the messages) that read them.
    /// A `Cell` with a constant start, so that an access is a take or a put, with no lazy
    /// initialisation or borrow flag to check.
    static SCRATCH: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

/// A WebSocket connection over a transport `S` (a `TcpStream`, a TLS stream, an in-memory
/// duplex…), after the opening handshake.
///
/// Receive with [`WebSocket::recv`] or as a [`Stream`]; send with [`WebSocket::send`] or as a
/// [`Sink`]. Pings are answered and the peer's close is echoed while receiving, so keep
/// receiving: the stream yields the peer's [`Message::Close`] and then ends (`None`). Sending
/// after a close returns [`Error::Closed`].
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    conn: Connection,
    timer: Option<Pin<Box<Sleep>>>,
    /// The waker `timer` was last polled with while pending at its current deadline.
    timer_waker: Option<Waker>,
    /// Boxed `str`, not `String`: 8 bytes less in every connection.
    /// Boxed twice, so that the field is one pointer (8 bytes, not 16): it is in every
    /// connection, and set in few.
    #[allow(clippy::box_collection)]
    protocol: Option<Box<String>>,
    /// The transport reached end of stream.
    eof: bool,
    /// The write side of the transport was shut down after the last frame.
    shut_down: bool,
    /// When the transport is dropped at the latest once the core said to close it.
    close_deadline: Option<Instant>,
    /// The peer broke the protocol and may still be sending: read until it closes too.
    linger: bool,
    /// Writing to the transport failed in the receive loop: nothing more is written, but what
    /// the peer sent before (its close frame, say) is still read and reported.
    write_error: Option<io::Error>,
    finished: bool,
    /// Reads that found data since the receive loop last looked at the timer.
    reads_unchecked: u8,
    /// Deliveries of the pub/sub subscriber attached, if any.
    inbox: Option<Arc<Inbox>>,
    /// Passes the receive loop let go by since it found deliveries (see
    /// [`Self::poll_send_all`]).
    deferrals: u8,
    /// Nothing was written to the transport since it was last flushed.
    flushed: bool,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a transport on which the opening handshake has already happened.
    pub fn from_raw(io: S, role: Role, config: Config) -> Self {
        Self::from_connection(io, Connection::new(role, config), None)
    }

    /// Wraps a transport and a protocol core, with the negotiated subprotocol.
    pub fn from_connection(io: S, mut conn: Connection, protocol: Option<String>) -> Self {
        // Arms keepalive from the start of the connection.
        conn.handle_timeout(Instant::now().into_std());
        Self {
            io,
            conn,
            timer: None,
            timer_waker: None,
            protocol: protocol.map(Box::new),
            eof: false,
            shut_down: false,
            close_deadline: None,
            linger: false,
            write_error: None,
            finished: false,
            reads_unchecked: 0,
            inbox: None,
            deferrals: 0,
            flushed: false,
        }
    }

    /// Attaches a pub/sub [`Subscriber`]: what is published to its topics is written to this
    /// connection, in order with what is sent on it, while the connection is received from
    /// (and when it sends or flushes). Replaces a subscriber attached before. Servers only:
    /// the shared frames are unmasked ([`SendError::SharedFrameFromClient`] on a client).
    /// A connection with permessage-deflate negotiated without server context takeover gets
    /// publishes compressed (once per publish, for all such subscribers).
    ///
    /// [`SendError::SharedFrameFromClient`]: wsx_proto::SendError::SharedFrameFromClient
    pub fn attach(&mut self, subscriber: &Subscriber) -> Result<(), Error> {
        if self.conn.role() != Role::Server {
            return Err(Error::Send(SendError::SharedFrameFromClient));
        }
        subscriber.set_takes_compressed(self.conn.takes_shared_compressed());
        self.inbox = Some(subscriber.inbox().clone());
        Ok(())
    }

    /// Receives the next message. `None` once the connection is closed.
    ///
    /// Data messages, pings and pongs are all returned; the peer's close frame is returned as
    /// [`Message::Close`] just before the end. A protocol violation by the peer is returned once
    /// as [`Error::Protocol`] (the close frame for it has been sent).
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives the next message or, for a large data message, the next piece of it as it
    /// arrives: see [`Connection::poll_event`] and [`Config::stream_threshold`]. Small messages
    /// and control frames come whole, as from [`Self::recv`]. A file transfer or a proxy can
    /// pass large payloads on without holding them whole in memory.
    pub async fn recv_event(&mut self) -> Option<Result<Event, Error>> {
        poll_fn(|cx| self.poll_recv_event(cx)).await
    }

    /// Queues a piece of a data message (one frame of a fragmented message; see
    /// [`Connection::send_chunk`]) without flushing, waiting only while the send buffer is above
    /// its high-water mark. Echoing the chunks of [`Self::recv_event`] streams a message through.
    pub async fn feed_chunk(&mut self, chunk: Chunk) -> Result<(), Error> {
        poll_fn(|cx| self.poll_ready_to_send(cx)).await?;
        self.start_send_chunk(chunk)
    }

    /// Sends a piece of a data message and flushes it; see [`Self::feed_chunk`].
    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), Error> {
        self.feed_chunk(chunk).await?;
        self.flush().await
    }

    /// Sends a message and flushes it to the transport.
    pub async fn send(&mut self, message: Message) -> Result<(), Error> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without flushing, waiting only while the send buffer is above its
    /// high-water mark. Many small messages fed in a row go out in one write; queued bytes are
    /// also written when receiving.
    pub async fn feed(&mut self, message: Message) -> Result<(), Error> {
        poll_fn(|cx| self.poll_ready_to_send(cx)).await?;
        self.start_send_message(message)
    }

    /// Writes everything queued to the transport.
    ///
    /// Timers run while it waits: if keepalive or the close timeout gives up on a peer that
    /// does not read, it returns [`Error::Closed`] (or [`Error::Timeout`] once the close frame
    /// could not be written in time) instead of waiting forever.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush_timed(cx)).await
    }

    /// Starts the closing handshake with `frame` (or 1000 with no reason when `None`) and
    /// flushes it. Keep calling [`Self::recv`] until `None` to read what the peer sent before its
    /// reply and to finish the handshake. Calling it again does nothing.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.conn.state() == State::Open {
            let frame = frame.unwrap_or_else(|| CloseFrame::new(CloseCode::NORMAL, ""));
            self.conn.close(Some(frame))?;
        }
        self.flush().await
    }

    /// Runs the timers without receiving, for an application that has stopped receiving
    /// because what it received has nowhere to go yet (a consumer that does not keep up: flow
    /// control toward the peer), so that keepalive, the idle timeout and the close timeout go
    /// on meanwhile. What they queue (a ping, a close) is written, with anything queued before
    /// it, as far as the transport takes it.
    ///
    /// Nothing is read from the peer meanwhile, its pongs included: keepalive that hears
    /// nothing for `ping_interval` + `ping_timeout` gives up on the peer as on a silent one.
    ///
    /// Pends while there is nothing else to do. Resolves once the connection is to be ended by
    /// the receive loop (the core gave up on the peer, a close timed out, the transport
    /// failed): then receive until `None`, which closes the transport within the close timeout.
    /// Cancel-safe.
    pub async fn timers(&mut self) {
        poll_fn(|cx| self.poll_timers(cx)).await
    }

    /// The subprotocol negotiated in the opening handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref().map(String::as_str)
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Whether the send queue is at its high-water mark ([`Config::write_buffer_high_water`]):
    /// [`Self::feed`] and [`Self::send`] would wait for the peer to read. An application that
    /// must keep receiving meanwhile (an echo of a message the peer has not finished sending)
    /// can hold data back instead.
    pub fn is_send_buffer_full(&self) -> bool {
        self.conn.is_send_buffer_full()
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Splits into a receiving half and a sending half that can live in different tasks.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        split::split(self)
    }

    /// The receive loop for whole messages.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
        self.poll_recv_with(cx, Connection::poll_message, false)
    }

    /// [`Self::recv_event`] as a poll function, for a caller that keeps no future of its own
    /// across waits (a hand-written loop or `poll_fn`): `Ready(None)` once the connection is
    /// over. Everything `recv_event` does happens here: queued sends and pongs are written,
    /// timers run.
    pub fn poll_recv_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        self.poll_recv_with(cx, Connection::poll_event, false)
    }

    /// [`Self::poll_recv_event`] for an echo server: the data messages the core can echo in
    /// place (see [`Connection::echo_input`]: small, whole, uncompressed, on a server, while
    /// there is room in the send queue) are queued as their echo and not handed out; they are
    /// written on the loop's next write pass, as anything queued is. Every other event comes
    /// out as usual, data messages included (a larger one, or any while the send queue is at
    /// its high-water mark, or any once the connection negotiated permessage-deflate), and the
    /// caller echoes those itself. After 16 reads in a row that found data it returns
    /// `Pending` with the task woken, so that a caller checking something between calls (a
    /// shutdown flag) sees it under a flood of small messages too.
    pub fn poll_recv_event_echoing(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event, Error>>> {
        self.poll_recv_with(cx, Connection::poll_event, true)
    }

    /// [`Self::timers`] as a poll function.
    pub fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.finished || self.conn.should_close_transport() {
                return Poll::Ready(());
            }
            match self.poll_send_all(cx, false) {
                // The receive loop meets the error again and reports it.
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                // Written, or waiting for the transport to take it: either way the timers run.
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            if !self.poll_timer(cx) {
                return Poll::Pending;
            }
        }
    }

    pub(crate) fn start_send_chunk(&mut self, chunk: Chunk) -> Result<(), Error> {
        self.conn.send_chunk(chunk)?;
        self.note_activity();
        Ok(())
    }

    /// The receive loop: parse what is buffered (with `next`), write what the core queued,
    /// close the transport when the core says so, fire timers, read more.
    fn poll_recv_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut next: impl FnMut(&mut Connection) -> Option<Result<T, ProtocolError>>,
        echo: bool,
    ) -> Poll<Option<Result<T, Error>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            if echo && self.conn.echo_buffered() > 0 {
                self.note_activity();
            }
            if let Some(result) = next(&mut self.conn) {
                // Linger after a violation the peer committed, not after our keepalive gave up on
                // a silent peer.
                self.linger |= matches!(&result, Err(e) if *e != ProtocolError::KeepaliveTimeout);
                if self.conn.take_reply_queued() {
                    // Reading implies writing: the pong or close the core just queued (and
                    // anything queued before it) goes out now, best effort, so it neither waits
                    // for the application's next call nor is lost if the caller stops here. A
                    // transport error shows up on the next call.
                    let _ = self.poll_write_out(cx);
                }
                return Poll::Ready(Some(result.map_err(Error::from)));
            }
            if self.conn.should_close_transport() {
                ready!(self.poll_close_transport(cx));
                self.finished = true;
                return Poll::Ready(None);
            }
            // Reading implies writing: pongs, close replies and echoes go out before waiting.
            // A full send queue does not stop reading: flow control toward the peer comes from
            // the application waiting for room before it sends (`feed`, `poll_ready`), and what
            // the core queues on its own while reading is bounded (one close reply; pongs wait
            // for room, only the latest kept). So a reader never stops answering pings or the
            // peer's close because a writer is held up.
            // A failed write does not end the stream at once: a peer that closed (or reset)
            // the connection may have sent its close frame first, with the code that says why
            // (a server giving up on a client stuck behind its own unsent data, say). That is
            // read first; the failure is reported at the end of what was received.
            if self.write_error.is_none() {
                if let Poll::Ready(Err(e)) = self.poll_send_all(cx, true) {
                    self.write_error = Some(e);
                }
            }
            // Timers are checked before waiting, not on every pass: a read that finds data
            // goes on to parse it, and the timer is looked at when the transport has nothing
            // more (where every wait happens), or after `TIMER_CHECK_READS` reads in a row for
            // a transport that never pends.
            let read = self.poll_read(cx, echo);
            // Echoing in place returns no events: after reads in a row that all found data,
            // control goes back to the caller once (what was echoed is written on the next
            // call, which the wake makes come soon).
            let mut hand_back = false;
            if read.is_pending() || self.reads_unchecked >= TIMER_CHECK_READS {
                hand_back = echo && read.is_ready();
                self.reads_unchecked = 0;
                // A fired timer may have queued a ping or a close: the next pass writes it.
                if self.poll_timer(cx) && read.is_pending() {
                    continue;
                }
            } else {
                self.reads_unchecked += 1;
            }
            match ready!(read) {
                Ok(0) => {
                    if let Some(e) = self.write_error.take() {
                        self.finished = true;
                        return Poll::Ready(self.io_error(e));
                    }
                    self.eof = true;
                    self.conn.handle_eof();
                }
                // No clock read and no `handle_timeout` per read: the core notes that the peer
                // spoke, and its timer's quarter-period checks see that while the connection is
                // busy. Only the first reads after a quiet spell are dated (`note_activity`).
                Ok(_) => {
                    self.note_activity();
                    if hand_back {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Err(e) => {
                    self.finished = true;
                    return Poll::Ready(self.io_error(e));
                }
            }
        }
    }

    /// Ends the transport once the core says so: writes what is still queued (the close frame)
    /// and shuts the write side down; after a protocol error, also reads and discards until the
    /// peer closes too (a lingering close). All within [`Config::close_timeout`] (10 s when
    /// unset), so a peer that stops reading cannot hold the connection open.
    ///
    /// Why linger: a peer that broke the protocol may still be sending, and closing a socket
    /// with unread input makes the kernel reset the connection, which can destroy the close
    /// frame (and the data queued before it) before the peer reads it.
    fn poll_close_transport(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.transport_close_deadline();
        let expired = self.poll_deadline(cx, deadline).is_ready();
        if !self.shut_down {
            match self.poll_write_out(cx) {
                Poll::Pending if !expired => return Poll::Pending,
                // Written, failed, or out of time: shut down what can be.
                _ => {}
            }
            match Pin::new(&mut self.io).poll_shutdown(cx) {
                Poll::Pending if !expired => return Poll::Pending,
                // A failed shutdown changes nothing: the connection is over either way.
                _ => self.shut_down = true,
            }
        }
        while self.linger && !self.eof {
            // Checked on every pass: a peer that keeps the socket readable must not hold the
            // connection past the deadline (over a transport without tokio's budget the loop
            // would otherwise never yield).
            // The clock, not only the timer: a `Sleep` can report `Pending` past its deadline
            // once tokio's budget is spent, and a transport without a budget never yields.
            if Instant::now() >= deadline || self.poll_deadline(cx, deadline).is_ready() {
                break;
            }
            match ready!(self.poll_read(cx, false)) {
                // The core discards what arrives after the close.
                Ok(n) if n > 0 => {}
                _ => self.eof = true,
            }
        }
        Poll::Ready(())
    }

    /// Polls the timer set to `deadline`.
    ///
    /// Once the timer has been polled at this deadline by the task polling now, it is not
    /// polled again until it fires: it wakes that task then, and asking it on every pass of the
    /// loop costs more than the rest of the timer logic together (measured with callgrind).
    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = match &mut self.timer {
            Some(t) if t.deadline() == deadline => {
                let armed = self.timer_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
                if armed && !t.is_elapsed() {
                    return Poll::Pending;
                }
                t
            }
            Some(t) => {
                t.as_mut().reset(deadline);
                self.timer_waker = None;
                t
            }
            None => {
                self.timer_waker = None;
                self.timer.insert(Box::pin(sleep_until(deadline)))
            }
        };
        // Outside tokio's cooperative budget: with the budget spent, a `Sleep` returns
        // `Pending` without registering the waker, and the check above would then never poll
        // it again (the timer would be dead). It is polled this way only when its deadline or
        // the task changed, or it fired, so it cannot starve other tasks.
        let poll = Pin::new(&mut unconstrained(timer.as_mut())).poll(cx);
        match (&poll, &self.timer_waker) {
            (Poll::Ready(()), _) => self.timer_waker = None,
            (Poll::Pending, Some(w)) if w.will_wake(cx.waker()) => {}
            (Poll::Pending, _) => self.timer_waker = Some(cx.waker().clone()),
        }
        poll
    }

    /// Reads from the transport into the core. Between frames the read goes into this thread's
    /// shared scratch slab and the filled part is handed over without a copy, so an idle
    /// connection owns no read buffer; inside a frame it reads straight into the core's buffer.
    ///
    /// With `echo`, the complete small messages at the front of a slab read are echoed
    /// straight from the slab ([`Connection::echo_input`]); only what is left is handed over.
    fn poll_read(&mut self, cx: &mut Context<'_>, echo: bool) -> Poll<io::Result<usize>> {
        if self.conn.has_buffered_input() {
            return poll_read_buf(Pin::new(&mut self.io), cx, self.conn.recv_buf());
        }
        // The slab is taken out of the thread-local for the read, not borrowed across it: the
        // transport may itself be driven by a WebSocket on this thread (a tunnel), whose own
        // read then simply starts a slab of its own.
        let mut scratch = match SCRATCH.take() {
            Some(s) if s.capacity() >= SCRATCH_MIN_SPARE => s,
            _ => BytesMut::with_capacity(SCRATCH_SLAB),
        };
        let result = poll_read_buf(Pin::new(&mut self.io), cx, &mut scratch);
        let filled = match &result {
            Poll::Ready(Ok(n)) if *n > 0 => {
                let echoed = if echo { self.conn.echo_input(&scratch) } else { 0 };
                if echoed == scratch.len() {
                    scratch.clear();
                    None
                } else {
                    scratch.advance(echoed);
                    Some(scratch.split())
                }
            }
            _ => None,
        };
        SCRATCH.with(|slab| slab.set(Some(scratch)));
        if let Some(data) = filled {
            self.conn.handle_input_buf(data);
        }
        result
    }

    /// Waits while the send buffer is above its high-water mark, with timers running: once
    /// the connection is no longer open (keepalive or the idle timeout gave up on a peer that
    /// does not read, or a close went either way) it returns [`Error::Closed`].
    pub(crate) fn poll_ready_to_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            if self.finished || self.conn.state() != State::Open {
                return Poll::Ready(Err(Error::Closed));
            }
            if !self.conn.is_send_buffer_full() {
                return Poll::Ready(Ok(()));
            }
            match self.poll_send_all(cx, false) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => {
                    if !self.poll_timer(cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// Writes everything queued, with timers running while the transport is not ready: a
    /// connection the core gave up on stops waiting once [`Self::transport_close_deadline`]
    /// passes.
    pub(crate) fn poll_flush_timed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            match self.poll_send_all(cx, false) {
                Poll::Ready(result) => return Poll::Ready(result.map_err(Error::from)),
                Poll::Pending if self.finished => return Poll::Ready(Err(Error::Closed)),
                Poll::Pending if self.conn.should_close_transport() => {
                    let deadline = self.transport_close_deadline();
                    ready!(self.poll_deadline(cx, deadline));
                    self.finished = true;
                    return Poll::Ready(Err(Error::Timeout("writing the close frame")));
                }
                Poll::Pending => {
                    if !self.poll_timer(cx) {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    /// When the transport is dropped at the latest, now that the core says to close it: the
    /// close timeout (10 s when unset) from the first time this is asked.
    fn transport_close_deadline(&mut self) -> Instant {
        *self.close_deadline.get_or_insert_with(|| {
            let grace = self.conn.config().close_timeout.unwrap_or(Duration::from_secs(10));
            let now = Instant::now();
            now.checked_add(grace).unwrap_or(now + Duration::from_secs(86_400 * 365))
        })
    }

    pub(crate) fn start_send_message(&mut self, message: Message) -> Result<(), Error> {
        self.conn.send(message)?;
        self.note_activity();
        Ok(())
    }

    /// Sends a normal close if still open, then flushes.
    pub(crate) fn poll_close_sink(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.conn.state() == State::Open {
            self.conn.close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        self.poll_flush_timed(cx)
    }

    /// Takes the attached subscriber's deliveries into the send queue (as many as fit under
    /// the high-water mark) and writes everything out, until both are empty or the transport
    /// is full. With `register`, the task is woken by the next delivery once all are taken:
    /// only the receive loop registers, since it is the one every application keeps polling
    /// (a write half may sit idle in another task).
    ///
    /// The receive loop takes deliveries a pass or two late: when it first finds some, it
    /// wakes its own task, which puts it at the back of the run queue, and writes only what
    /// the connection queued itself; on the next pass it takes everything published by then,
    /// unless more for it came meanwhile, when it waits one pass more ([`DEFER_PASSES`] at most). In
    /// a fan-out the publishes of the other connections ready at that moment then share one
    /// write instead of costing one each. broadcast_test, 100 connections: one pass late,
    /// 4.9–5.4 M deliveries/s instead of 3.7–4.2 M, 179–196 ns of server CPU per delivery
    /// instead of 229–262; two passes when more came, 67–74 deliveries per write instead of
    /// 44–45 and 160–180 ns instead of 195 (on a loaded machine).
    #[inline]
    fn poll_send_all(&mut self, cx: &mut Context<'_>, register: bool) -> Poll<io::Result<()>> {
        if self.inbox.is_none() && self.flushed && !self.conn.has_output() {
            // Nothing to deliver, write or flush: the usual pass before a read, answered
            // without a call.
            return Poll::Ready(Ok(()));
        }
        self.poll_send_queued(cx, register)
    }

    fn poll_send_queued(&mut self, cx: &mut Context<'_>, register: bool) -> Poll<io::Result<()>> {
        if register {
            if let Some(inbox) = &self.inbox {
                let arrivals = inbox.arrivals();
                if arrivals != inbox.arrivals_seen() && self.deferrals < DEFER_PASSES {
                    inbox.set_arrivals_seen(arrivals);
                    self.deferrals += 1;
                    cx.waker().wake_by_ref();
                    return self.poll_write_out(cx);
                }
            }
            self.deferrals = 0;
        }
        loop {
            let more = self.deliver(register.then(|| cx.waker()));
            ready!(self.poll_write_out(cx))?;
            if !more {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Moves deliveries from the inbox into the core's send queue while it has room; true when
    /// more wait for room (the caller writes, then comes back for them). Not while a message
    /// sent in chunks is unfinished: its frames may not be interleaved.
    fn deliver(&mut self, waker: Option<&Waker>) -> bool {
        let Self { inbox, conn, .. } = self;
        let Some(shared) = inbox else { return false };
        if conn.state() != State::Open {
            *inbox = None;
            return false;
        }
        // Before the take: what comes after it moves the value again.
        shared.set_arrivals_seen(shared.arrivals());
        let outcome = shared
            .take(waker, |frame| !conn.is_send_buffer_full() && conn.send_shared(frame).is_ok());
        let more = match outcome {
            Taken::Empty => false,
            // Held up by a full queue, not by a chunked message: worth coming back after a write.
            Taken::More => conn.is_send_buffer_full(),
            Taken::Overflowed => {
                *inbox = None;
                let frame = CloseFrame::new(CloseCode::TRY_AGAIN_LATER, "subscriber too slow");
                // Open was checked above, and the frame is valid: this cannot fail.
                let _ = conn.close(Some(frame));
                false
            }
        };
        if !matches!(outcome, Taken::Empty) {
            self.note_activity();
        }
        more
    }

    /// Writes everything the core queued, vectored, then flushes the transport.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let out = self.conn.transmit();
            if !out.has_remaining() {
                break;
            }
            let chunk = out.chunk();
            let n = if chunk.len() == out.remaining() {
                // One contiguous piece, the usual case for small messages: a plain write takes
                // a shorter path through the kernel than writev.
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, chunk))?;
                out.advance(n);
                n
            } else {
                ready!(poll_write_buf(Pin::new(&mut self.io), cx, out))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.flushed = false;
        }
        if !self.flushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flushed = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Drives the core's timers; true when `handle_timeout` ran (the caller loops, since the
    /// core may have queued a ping or a close, or given up on the peer).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        // The usual wait of a busy open connection: the timer is armed for this task at the
        // deadline the core gave, which cannot have moved since, because while open only
        // `handle_timeout` moves it and `run_timers` forgets the waker when it calls that. So
        // neither the core's deadline nor the timer's is looked at again, only whether it fired.
        if let (Some(t), Some(w)) = (&self.timer, &self.timer_waker) {
            if w.will_wake(cx.waker())
                && self.close_deadline.is_none()
                && self.conn.state() == State::Open
                && !t.is_elapsed()
            {
                return false;
            }
        }
        if self.timer.is_none() && !self.conn.needs_time() {
            // Open, no keepalive or idle timer configured, none armed: nothing can fire.
            return false;
        }
        let Some(deadline) = self.conn.poll_timeout() else {
            if self.close_deadline.is_none() {
                self.timer = None;
                self.timer_waker = None;
            }
            return false;
        };
        let deadline = Instant::from_std(deadline);
        if self.poll_deadline(cx, deadline).is_pending() {
            return false;
        }
        self.run_timers(Instant::now().max(deadline));
        true
    }

    /// Dates activity for the timers when the core asks ([`Connection::wants_clock`]): a clock
    /// read for the first reads or sends after a quiet spell, none while the connection is busy.
    fn note_activity(&mut self) {
        if self.conn.wants_clock() {
            self.run_timers(Instant::now());
        }
    }

    /// Advances the core's timers to `now`, and bounds the end of a connection they gave up on.
    fn run_timers(&mut self, now: Instant) {
        // The deadline may move: the next `poll_timer` asks the core again (see there).
        self.timer_waker = None;
        let was_open = self.conn.state() == State::Open;
        let was_done = self.conn.should_close_transport();
        self.conn.handle_timeout(now.into_std());
        if !was_done && self.conn.should_close_transport() {
            // The core gave up on the peer. A keepalive failure still gets the close timeout
            // to write its 1011; after a close timeout there is no time left. No lingering
            // either way: the peer is silent.
            self.linger = false;
            let grace = match (was_open, self.conn.config().close_timeout) {
                (true, Some(t)) => t,
                (true, None) => Duration::from_secs(10),
                (false, _) => Duration::ZERO,
            };
            self.close_deadline =
                Some(now.checked_add(grace).unwrap_or(now + Duration::from_secs(86_400 * 365)));
        }
    }

    /// An I/O error ends the stream; after a close frame went either way it is just the end.
    fn io_error<T>(&self, e: io::Error) -> Option<Result<T, Error>> {
        match self.conn.state() {
            State::Open => Some(Err(Error::Io(e))),
            _ => None,
        }
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S> Sink<Message> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_ready_to_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        self.get_mut().start_send_message(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flush_timed(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_close_sink(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport whose writes fail (the peer reset the connection) and whose reads give what
    /// the peer sent before, then the end.
    struct Broken {
        input: io::Cursor<Vec<u8>>,
    }

    impl AsyncRead for Broken {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.input).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }

    /// A client with a message queued that can no longer be written, over `input`.
    async fn stuck_client(input: &[u8]) -> WebSocket<Broken> {
        let io = Broken { input: io::Cursor::new(input.to_vec()) };
        let mut ws = WebSocket::from_raw(io, Role::Client, Config::default());
        ws.feed(Message::binary(vec![7; 100])).await.unwrap();
        ws
    }

    #[tokio::test]
    async fn a_close_received_before_a_failed_write_is_still_reported() {
        // RFC 6455 §5.5.1: an unmasked server close frame, code 1011.
        let mut ws = stuck_client(&[0x88, 0x02, 0x03, 0xf3]).await;
        match ws.recv().await {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::INTERNAL_ERROR)
            }
            other => panic!("expected the server's close, got {other:?}"),
        }
        assert!(ws.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_once_what_was_received_is_read() {
        // A text message "hi", then the end without a close.
        let mut ws = stuck_client(&[0x81, 0x02, b'h', b'i']).await;
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("hi"));
        match ws.recv().await {
            Some(Err(Error::Io(e))) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("expected the write's error, got {other:?}"),
        }
        assert!(ws.recv().await.is_none());
    }
}
