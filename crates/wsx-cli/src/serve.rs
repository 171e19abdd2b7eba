//! `wsx serve`: the echo server and its demo page.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use futures_util::Sink;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, ORIGIN};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wsx::pubsub::Subscriber;
use wsx::tls::{rustls::ServerConfig, TlsAcceptor};
use wsx::{
    Accept, Chunk, CloseCode, CloseFrame, Config, Event, Incoming, Reject, Utf8Bytes, WebSocket,
};

/// The demo page, embedded in the binary.
const DEMO_PAGE: &str = include_str!("demo.html");

/// Settings of the echo server.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) listen: SocketAddr,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// Most WebSocket connections at once.
    pub(crate) max_connections: usize,
    /// Origins browsers may connect from; empty accepts any.
    pub(crate) allowed_origins: Vec<String>,
    /// Limits and compression of every connection.
    pub(crate) config: Arc<Config>,
    /// Most bytes of a streamed message held for a client that is not reading its echo.
    pub(crate) echo_backlog: usize,
    /// Serve `wss://` and https with this configuration.
    pub(crate) tls: Option<Arc<ServerConfig>>,
    /// Pub/sub instead of echo.
    pub(crate) pubsub: Option<crate::pubsub::Options>,
    /// A child process per connection instead of echo.
    pub(crate) exec: Option<crate::exec::Options>,
    /// A TCP connection per WebSocket to this target instead of echo (`--to`).
    pub(crate) to: Option<crate::bridge::Target>,
}

/// Serves until Ctrl-C or SIGTERM, then closes every connection with 1001.
pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let listener =
        listen(options.listen).with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let (http, ws) = if options.tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    if let Some(target) = &options.to {
        info!("listening on {http}://{addr}/ ({ws}://{addr}/ bridges each WebSocket to {target})");
    } else if let Some(exec) = &options.exec {
        info!(
            "listening on {http}://{addr}/ ({ws}://{addr}/ runs {:?} per connection)",
            exec.program
        );
    } else if options.pubsub.is_some() {
        info!("listening on {http}://{addr}/ (pub/sub: {ws}://{addr}/TOPIC subscribes to TOPIC)");
    } else {
        info!("listening on {http}://{addr}/ (WebSocket echo on {ws}://{addr}/ at any path)");
    }

    let state = Arc::new(State {
        options,
        active: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        stop: Notify::new(),
        http1: Counts::default(),
        http2: Counts::default(),
        http2_connections: AtomicUsize::new(0),
    });
    let tracker = TaskTracker::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let state = state.clone();
                    let echoes = tracker.clone();
                    tracker.spawn(async move {
                        if let Err(e) = handle(tcp, peer, state, &echoes).await {
                            debug!(%peer, "connection ended: {e}");
                        }
                    });
                }
                // Running out of file descriptors and similar: keep serving the others.
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            signal = &mut stop => {
                info!("{signal}: closing connections");
                break;
            }
        }
    }
    drop(listener);
    tracker.close();
    // The flag first: an echo task checks it after registering for the notification.
    state.stopping.store(true, Ordering::SeqCst);
    state.stop.notify_waiters();
    if tokio::time::timeout(state.options.shutdown_timeout, tracker.wait()).await.is_err() {
        warn!("{} connections did not close in time; dropping them", tracker.len());
    }
    info!("stopped");
    Ok(())
}

/// Pending connections the kernel queues before `accept`: tokio's default of 128 drops SYNs
/// under bursts of new clients, which then wait a second for their retry.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (restarts don't wait for TIME_WAIT).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// One connection: TLS if configured, then the demo page for plain HTTP or the echo for
/// WebSocket upgrades. The handshake timeout covers TLS, the HTTP request and the answer
/// together.
///
/// An upgraded connection's echo runs as a task of its own (see [`spawn_echo`]), and this task
/// ends: the handshake's state, TLS acceptor and parser included, is freed with it instead of
/// sizing the long-lived task that every idle connection keeps.
async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    echoes: &TaskTracker,
) -> Result<(), wsx::Error> {
    let options = &state.options;
    tcp.set_nodelay(true)?;
    let deadline = Instant::now() + options.handshake_timeout;
    let timed_out = |_| wsx::Error::Timeout("handshake");
    match &options.tls {
        // Boxed: TLS state is large, and inline it would size every plain handshake too.
        Some(config) => {
            Box::pin(async {
                let accept = TlsAcceptor::from(config.clone()).accept(tcp);
                let tls = timeout_at(deadline, accept).await.map_err(timed_out)??;
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    return crate::http2::serve(tls, peer, &state, echoes, deadline).await;
                }
                let read =
                    Incoming::read_with_deadline(tls, options.config.clone(), Some(deadline));
                serve_requests(read.await?, peer, &state, echoes).await
            })
            .await?
        }
        None => {
            let read = Incoming::read_with_deadline(tcp, options.config.clone(), Some(deadline));
            serve_requests(read.await?, peer, &state, echoes).await?;
        }
    }
    Ok(())
}

/// How long a kept-alive HTTP connection may wait for its next request.
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);

/// Answers the requests of one connection, plain HTTP kept alive between them, until one is
/// upgraded (its echo then runs as a task of its own) or the connection ends.
async fn serve_requests<S>(
    mut incoming: Incoming<S>,
    peer: SocketAddr,
    state: &Arc<State>,
    echoes: &TaskTracker,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        match upgrade(incoming, peer, state).await? {
            Answered::Upgraded(ws, slot, mode) => {
                spawn_echo(echoes, ws, slot, mode);
                return Ok(());
            }
            Answered::Next(next) => incoming = next,
            Answered::Closed => return Ok(()),
        }
    }
}

/// What became of a request.
// Lives only between two lines of `serve_requests`; boxing the WebSocket would cost an
// allocation per upgrade for nothing.
#[allow(clippy::large_enum_variant)]
enum Answered<S> {
    /// Upgraded: the WebSocket, its place in the connection count, and what serves it.
    Upgraded(WebSocket<S>, Slot, Mode),
    /// Answered with the connection kept alive, and this is its next request.
    Next(Incoming<S>),
    /// Answered, and the connection is over.
    Closed,
}

/// What serves an upgraded connection.
pub(crate) enum Mode {
    Echo,
    /// Pub/sub, with the connection's subscription.
    PubSub(Subscriber),
    /// Exec, with the connection's child process.
    Exec(Box<crate::exec::Process>),
    /// A bridge, with the connection's TCP connection to the target.
    Bridge(TcpStream),
}

/// Runs the echo of an upgraded connection as its own task: the state every idle connection
/// keeps is this task, the echo loop and the socket, nothing more.
pub(crate) fn spawn_echo<S>(tracker: &TaskTracker, mut ws: WebSocket<S>, slot: Slot, mode: Mode)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The block owns the socket and echo borrows it. (An `async fn` taking `mut ws` by value
    // would hold it twice, as argument and as local: 424 more bytes in every connection.)
    // Two kinds of task, each as large as its own loop needs: one task type for both would
    // size every echo connection for the pub/sub loop too.
    match mode {
        Mode::PubSub(subscriber) => tracker.spawn(async move {
            let state = &slot.0;
            if let Some(options) = &state.options.pubsub {
                if let Err(e) = crate::pubsub::run(&mut ws, subscriber, options, state).await {
                    debug!("connection ended: {e}");
                }
            }
            drop(slot);
        }),
        Mode::Exec(process) => tracker.spawn(async move {
            let state = &slot.0;
            if let Some(options) = &state.options.exec {
                if let Err(e) = crate::exec::run(&mut ws, *process, options, state).await {
                    debug!("connection ended: {e}");
                }
            }
            drop(slot);
        }),
        Mode::Bridge(tcp) => tracker.spawn(async move {
            if let Err(e) = crate::bridge::run(&mut ws, tcp, Some(&slot.0)).await {
                debug!("connection ended: {e}");
            }
            drop(slot);
        }),
        Mode::Echo => tracker.spawn(async move {
            if let Err(e) = echo(&mut ws, &slot.0).await {
                debug!("connection ended: {e}");
            }
            drop(slot);
        }),
    };
}

/// The answer to a plain HTTP request for `path` (HTTP/1.1 or HTTP/2): the demo page, the
/// statistics, 404 or 405.
pub(crate) fn page(state: &State, method: &Method, path: &str) -> http::Response<Vec<u8>> {
    let stats;
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", DEMO_PAGE.as_bytes()),
        "/stats" => {
            stats = stats_json(state);
            ("application/json", stats.as_bytes())
        }
        _ => return text_response(StatusCode::NOT_FOUND, "not found\n"),
    };
    if matches!(*method, Method::GET | Method::HEAD) {
        let mut response = http::Response::new(body.to_vec());
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    } else {
        // RFC 9110 §15.5.6: a 405 lists the methods the resource supports.
        let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    }
}

/// `GET /stats`: open WebSockets, by HTTP version (open and accepted since the start), the
/// open HTTP/2 connections, and the pub/sub hub's figures.
fn stats_json(state: &State) -> String {
    let active = state.active.load(Ordering::Relaxed);
    let counts = |c: &Counts| {
        let (a, t) = (c.active.load(Ordering::Relaxed), c.total.load(Ordering::Relaxed));
        format!("{{\"active\":{a},\"total\":{t}}}")
    };
    let (h1, h2) = (counts(&state.http1), counts(&state.http2));
    let h2_conns = state.http2_connections.load(Ordering::Relaxed);
    let mut out = format!(
        "{{\"connections\":{active},\"http1\":{h1},\"http2\":{h2},\"http2_connections\":{h2_conns}"
    );
    if let Some(pubsub) = &state.options.pubsub {
        out.push_str(",\"pubsub\":");
        out.push_str(&crate::pubsub::stats_json(pubsub));
    }
    out.push_str("}\n");
    out
}

/// The server's shared state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) options: Options,
    /// Open WebSocket connections.
    active: AtomicUsize,
    /// Set at shutdown, before `stop` is notified.
    pub(crate) stopping: AtomicBool,
    /// Wakes every echo task at shutdown.
    pub(crate) stop: Notify,
    /// WebSockets over HTTP/1.1 and over HTTP/2.
    pub(crate) http1: Counts,
    pub(crate) http2: Counts,
    /// Open HTTP/2 connections.
    pub(crate) http2_connections: AtomicUsize,
}

/// Counts one open WebSocket connection while alive.
///
/// `active` is counted up by the caller (it compares the old count with the limit), and the
/// total per HTTP version once the WebSocket is admitted.
pub(crate) struct Slot(Arc<State>, bool);

impl Slot {
    fn new(state: &Arc<State>, http2: bool) -> Self {
        let counts = if http2 { &state.http2 } else { &state.http1 };
        counts.active.fetch_add(1, Ordering::Relaxed);
        Self(state.clone(), http2)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        let counts = if self.1 { &self.0.http2 } else { &self.0.http1 };
        counts.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// WebSockets over one HTTP version, for `/stats`.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Open now.
    pub(crate) active: AtomicUsize,
    /// Accepted since the start.
    pub(crate) total: AtomicUsize,
}

/// Answers plain HTTP, applies the Origin policy and the connection limit, and upgrades.
async fn upgrade<S>(
    incoming: Incoming<S>,
    peer: SocketAddr,
    state: &Arc<State>,
) -> Result<Answered<S>, wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !incoming.is_upgrade() {
        return Ok(match serve_page(incoming, state).await? {
            Some(next) => Answered::Next(next),
            None => Answered::Closed,
        });
    }
    match admit(incoming.request(), peer, state, false).await {
        Ok((slot, mode)) => {
            let ws = incoming.accept(Accept::default()).await?;
            Ok(Answered::Upgraded(ws, slot, mode))
        }
        Err(status) => {
            incoming.reject(Reject::status(status)).await?;
            Ok(Answered::Closed)
        }
    }
}

/// Everything decided before a WebSocket is accepted, over HTTP/1.1 and HTTP/2 alike: the
/// Origin policy, the connection limit, and what will serve it (subscribed, its process
/// started or its TCP target connected before the answer, so that a failure is an HTTP
/// status). `Err` is the status to refuse with.
pub(crate) async fn admit(
    request: &http::Request<()>,
    peer: SocketAddr,
    state: &Arc<State>,
    http2: bool,
) -> Result<(Slot, Mode), StatusCode> {
    if !origin_allowed(request, &state.options.allowed_origins) {
        debug!("refused Origin {:?}", request.headers().get(ORIGIN));
        return Err(StatusCode::FORBIDDEN);
    }
    let slot = Slot::new(state, http2);
    if state.active.fetch_add(1, Ordering::Relaxed) >= state.options.max_connections {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    // Subscribed before the 101: what is published from then on reaches the client.
    let path = request.uri().path();
    let mode = if let Some(p) = &state.options.pubsub {
        Mode::PubSub(crate::pubsub::subscribe(p, path))
    } else if let Some(exec) = &state.options.exec {
        // Started before the 101, so that a full table or a missing program is an HTTP error.
        let (local, tls) = (state.options.listen, state.options.tls.is_some());
        match crate::exec::spawn(exec, request, peer, local, tls) {
            Ok(process) => Mode::Exec(Box::new(process)),
            Err(crate::exec::Refused::Busy) => return Err(StatusCode::SERVICE_UNAVAILABLE),
            Err(crate::exec::Refused::Spawn(e)) => {
                warn!("cannot start {:?}: {e}", exec.program);
                return Err(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    } else if let Some(target) = &state.options.to {
        // Connected before the 101, so that an unreachable target is a 502. Half the handshake
        // timeout, so that the 502 still goes out within it.
        match target.connect(state.options.handshake_timeout / 2).await {
            Ok(tcp) => Mode::Bridge(tcp),
            Err(e) => {
                warn!("cannot connect to {target}: {e}");
                return Err(StatusCode::BAD_GATEWAY);
            }
        }
    } else {
        Mode::Echo
    };
    let counts = if http2 { &state.http2 } else { &state.http1 };
    counts.total.fetch_add(1, Ordering::Relaxed);
    Ok((slot, mode))
}

/// The echo loop of one upgraded connection, until it closes or the server shuts down.
///
/// Its state is in every connection's task, so it is kept small (see `spawn_echo`): the loop
/// waits in one place, [`echo_turn`], which waits for room in the send queue before it
/// receives, and a message is echoed (queued) in the same turn it arrives, so that no message
/// or event is kept across a wait.
///
/// A function returning an `async move` block rather than an `async fn`: the block uses its
/// captures in place, where an `async fn` would keep its arguments twice.
#[allow(clippy::manual_async_fn)]
fn echo<'a, S>(
    ws: &'a mut WebSocket<S>,
    state: &'a State,
) -> impl Future<Output = Result<(), wsx::Error>> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let stop = state.stop.notified();
        tokio::pin!(stop);
        let mut registered = false;
        let mut flow = Flow { echoing: true, streaming: false };
        // The rest of a streamed message held back while the client is not reading its echo.
        let mut held: Option<Box<Held>> = None;
        loop {
            let room = flow.echoing && !flow.streaming;
            let turn =
                next_or_stop(|cx| echo_turn(ws, room, cx), state, stop.as_mut(), &mut registered);
            let Some(turn) = turn.await else {
                // Boxed: its timer would otherwise sit in every idle connection's state.
                return Box::pin(going_away(ws)).await;
            };
            // The step is matched as a temporary, gone at the end of the statement, so that
            // only the chunk's future is kept across the wait below.
            let mut echoed =
                match echo_step(turn, ws, &mut held, &mut flow, state.options.echo_backlog)? {
                    Next::Receive => continue,
                    Next::Done => return Ok(()),
                    Next::Chunk(echoed) => echoed,
                };
            // Boxed: only messages past the stream threshold (64 KiB) come in chunks, where an
            // allocation is nothing, and its future would add 264 bytes to the state of every
            // connection. Awaited through the same stop check, since it may wait for room for
            // long.
            // (The result is matched as a temporary too, gone before `going_away` is awaited.)
            let echo = |cx: &mut Context<'_>| echoed.as_mut().poll(cx);
            let stopped = match next_or_stop(echo, state, stop.as_mut(), &mut registered).await {
                Some(result) => {
                    flow.echoing = still_echoing(result)?;
                    false
                }
                None => true,
            };
            if stopped {
                // A close may come between the frames of our fragmented echo; what is held of
                // the message is dropped.
                drop(echoed);
                return Box::pin(going_away(ws)).await;
            }
        }
    }
}

/// The echo loop's flags.
struct Flow {
    /// Cleared when an echo finds this side's close already sent: from then on messages are
    /// received, not echoed.
    echoing: bool,
    /// A streamed message is arriving: its chunks are echoed (or held) as they come, with
    /// no wait for room before each (`echo_chunk` minds the queue).
    streaming: bool,
}

/// What one turn of the echo loop found.
enum Turn {
    Event(Option<Result<Event, wsx::Error>>),
    /// This side's close is out: nothing more can be echoed.
    SendClosed,
    Failed(wsx::Error),
}

/// What the echo loop does after a turn.
enum Next<F> {
    Receive,
    Done,
    /// Echo a chunk of a streamed message.
    Chunk(Pin<Box<F>>),
}

/// One turn of the echo loop: with `room`, first waits while the send queue is full (a full
/// queue stops reading, with timers running), then receives the next event, echoing the
/// small messages it reads in place on the way (`WebSocket::poll_recv_event_echoing`: those
/// never come out as events). Without room (this side's close is out, or a streamed message
/// is arriving) it only receives.
fn echo_turn<S>(ws: &mut WebSocket<S>, room: bool, cx: &mut Context<'_>) -> Poll<Turn>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if room {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(wsx::Error::Closed)) => return Poll::Ready(Turn::SendClosed),
            Poll::Ready(Err(e)) => return Poll::Ready(Turn::Failed(e)),
        }
    }
    if room {
        return ws.poll_recv_event_echoing(cx).map(Turn::Event);
    }
    ws.poll_recv_event(cx).map(Turn::Event)
}

/// Acts on a turn: a whole message is echoed here, queued, not flushed (the next turn writes
/// it, so a burst of messages goes back in few writes; there was room, `echo_turn` waited for
/// it); a chunk of a streamed message is handed back as the future that echoes it, each piece
/// going back out as it arrives as one frame of a fragmented echo. Takes the turn by value,
/// so that nothing of it is kept while that future runs.
fn echo_step<'a, S>(
    turn: Turn,
    ws: &'a mut WebSocket<S>,
    held: &'a mut Option<Box<Held>>,
    flow: &mut Flow,
    limit: usize,
) -> Result<Next<impl Future<Output = Result<(), wsx::Error>> + 'a>, wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let event = match turn {
        Turn::Event(Some(Ok(event))) => event,
        Turn::Event(Some(Err(e))) => {
            debug!("peer error: {e}");
            return Ok(Next::Receive);
        }
        Turn::Event(None) => return Ok(Next::Done),
        Turn::SendClosed => {
            flow.echoing = false;
            return Ok(Next::Receive);
        }
        Turn::Failed(e) => return Err(e),
    };
    match event {
        // (A control message may come between a streamed message's chunks: it changes
        // nothing here.)
        Event::Message(msg) => {
            if msg.is_data() && flow.echoing {
                flow.echoing = still_echoing(Pin::new(&mut *ws).start_send(msg))?;
            }
            Ok(Next::Receive)
        }
        Event::Chunk(chunk) => {
            flow.streaming = !chunk.is_last();
            if !flow.echoing {
                return Ok(Next::Receive);
            }
            Ok(Next::Chunk(Box::pin(echo_chunk(ws, chunk, held, limit))))
        }
    }
}

/// Awaits `next` unless the server is shutting down (`None` then), checked first, so that a
/// connection that always has a message ready still stops.
///
/// `stop` is registered for the shutdown notification once, at the first wait (`registered`
/// says whether it is). Afterwards the flag alone says whether it came: re-polling the
/// notification on every message (as `select!` does) costs a lock and a waker comparison per
/// message.
pub(crate) fn next_or_stop<'a, 'n: 'a, T, F>(
    mut next: F,
    state: &'a State,
    mut stop: Pin<&'a mut Notified<'n>>,
    registered: &'a mut bool,
) -> impl Future<Output = Option<T>> + use<'a, 'n, T, F>
where
    F: FnMut(&mut Context<'_>) -> Poll<T> + 'a,
{
    // A plain function returning `poll_fn`, not an `async fn`: that would keep `next` twice in
    // every connection's task, as argument and as local. `next` is a poll function, not a
    // future, so that no future of the caller's needs pinning beside it.
    poll_fn(move |cx| {
        if state.stopping.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(output) = next(cx) {
            return Poll::Ready(Some(output));
        }
        if !*registered {
            *registered = true;
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        if state.stopping.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
}

/// Part of a streamed message that the echo holds instead of queueing.
struct Held {
    text: bool,
    /// The message's first frame already went out (what is held continues it).
    started: bool,
    data: BytesMut,
}

/// Echoes one piece of a streamed message. While the send queue is full the echo keeps
/// receiving and holds the rest of the message, up to `limit` bytes, as a store-and-forward
/// server would hold all of it: a client that writes a whole message before it reads its echo
/// (Autobahn's 9.1.6 sends 16 MiB that way) is served instead of deadlocked. Past `limit`, or
/// once the message is complete, the held part is queued, waiting for room: from there TCP flow
/// control holds the client back, and the timers close it if it never reads.
async fn echo_chunk<S>(
    ws: &mut WebSocket<S>,
    chunk: Chunk,
    held: &mut Option<Box<Held>>,
    limit: usize,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let last = chunk.is_last();
    let h = match held {
        Some(h) => h,
        None if !ws.is_send_buffer_full() || chunk.len() >= limit => {
            return ws.feed_chunk(chunk).await;
        }
        None => held.insert(Box::new(Held {
            text: chunk.is_text(),
            started: !chunk.is_first(),
            data: BytesMut::new(),
        })),
    };
    h.data.extend_from_slice(chunk.data());
    if !(last || h.data.len() >= limit || !ws.is_send_buffer_full()) {
        return Ok(());
    }
    let Some(h) = held.take() else { return Ok(()) };
    let data = h.data.freeze();
    let piece = if h.text && !h.started {
        // Text chunks end on whole code points, so the concatenation is valid UTF-8.
        match Utf8Bytes::try_from(data.clone()) {
            Ok(text) => Chunk::text(text, true, last),
            Err(_) => Chunk::binary(data, true, last),
        }
    } else {
        Chunk::binary(data, !h.started, last)
    };
    ws.feed_chunk(piece).await
}

/// Whether to go on echoing after queueing an echo: not once this side's close is out.
///
/// The core closes on its own (the idle timeout) and at shutdown, and messages the peer sent
/// before it saw that close still arrive. RFC 6455 §5.5.1: after a close no data frame may
/// follow, so the echo of such a message fails with `Closed`; that ends the echo, not the
/// connection, which keeps receiving until the peer's close reply completes the handshake.
fn still_echoing(queued: Result<(), wsx::Error>) -> Result<bool, wsx::Error> {
    match queued {
        Ok(()) => Ok(true),
        Err(wsx::Error::Closed) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Shutdown: close with 1001, then give the client a moment to answer.
pub(crate) async fn going_away<S>(ws: &mut WebSocket<S>) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down"))).await?;
    let drain = async { while ws.recv().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

/// Cross-site WebSocket hijacking protection: browsers always send Origin, so with a list
/// configured a browser page from elsewhere is refused; clients without Origin are not browsers.
fn origin_allowed<B>(req: &http::Request<B>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(ORIGIN).map(|v| v.to_str()) {
        None => true,
        Some(Ok(origin)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(origin.trim())),
        Some(Err(_)) => false,
    }
}

/// Plain HTTP: the demo page at `/`, the open connection count at `/stats`. Both answer GET
/// and HEAD (which gets the head alone), as RFC 9110 §9.1 asks of every resource; other methods
/// there get 405 with `Allow`, other paths 404. The connection is kept alive for the next
/// request when the client allows it; `Some` is that request.
async fn serve_page<S>(
    incoming: Incoming<S>,
    state: &State,
) -> Result<Option<Incoming<S>>, wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = incoming.request();
    if let Some(pubsub) = &state.options.pubsub {
        if let Some(topic) = req.uri().path().strip_prefix("/publish/") {
            let topic = topic.to_owned();
            return crate::pubsub::http_publish(incoming, pubsub, state, &topic).await;
        }
    }
    let response = page(state, req.method(), req.uri().path());
    incoming.respond_keep_alive(response, KEEP_ALIVE_IDLE).await
}

/// The `Content-Type` of short text answers.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A short plain-text answer.
pub(crate) fn text_response(
    status: StatusCode,
    body: impl Into<Vec<u8>>,
) -> http::Response<Vec<u8>> {
    let mut response = http::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    response
}

/// Resolves on Ctrl-C or SIGTERM, naming the signal.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "terminated",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "interrupted"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}
