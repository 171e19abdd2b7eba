//! `wsx serve --exec PROGRAM [-- ARGS…]` and `--sh 'CMD'` (after websocketd): one child process
//! per WebSocket. Each text message is a line on the child's stdin and each line of its stdout
//! a text message (`--binary`: raw chunks both ways, as binary messages). The child gets a
//! CGI-style environment; its stderr goes to the log, tagged by connection.
//!
//! Both directions run at once in one loop, with nothing unbounded in between:
//! - the child's stdout is read only while the WebSocket's send queue is under its high-water
//!   mark, so a client that does not read holds the child back through the pipe (and the
//!   send queue's timers, keepalive included, run while it waits);
//! - the client is received from only while less than [`crate::backlog::MAX_BACKLOG`] waits
//!   for the child's stdin, so a child that does not read holds the client back through TCP.
//!   Meanwhile the WebSocket's timers still run (`WebSocket::timers`): keepalive pings go out,
//!   and a client that stays unheard past the ping timeout (its frames sit unread behind the
//!   data) is given up on with 1011 and its child ended, as is one that vanished. Input that
//!   fits the backlog does not stop reading: pings behind it are answered and a close behind
//!   it ends the connection at once.
//!
//! Small messages are gathered into shared buffers on their way to the child (see
//! [`crate::backlog`]), so the backlog's limit bounds its memory even for a flood of empty
//! messages. While receiving is paused for the backlog, `--idle-timeout` counts the client as
//! idle (its data is not parsed meanwhile).
//!
//! When the connection ends (the client closes or goes away, or the server shuts down) the
//! child's process group gets SIGTERM, then SIGKILL after `--kill-grace`. After a normal close
//! by the client (1000, 1001 or no code) what it sent before is written to the child's stdin
//! first, within `--kill-grace` (the child's stdout is read and dropped meanwhile, so a child
//! blocked on its output still takes its input), and stdin is closed: the child sees all of it
//! and then its end. When the child exits on its own, the rest of its stdout is sent and the
//! connection closes with 1000 for exit status 0, 1011 otherwise.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Sink;
use http::header::HOST;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::io::poll_read_buf;
use tracing::{debug, info, warn};
use wsx::{CloseCode, CloseFrame, Event, Message, Utf8Bytes, WebSocket};

use crate::backlog::Backlog;
use crate::serve::{next_or_stop, State};

/// Longest stdout line sent as one message in text mode: a longer one goes out in pieces of
/// this size, so a child that never writes a newline cannot grow the server's memory.
const MAX_LINE: usize = 1 << 20;

/// Most bytes read from the child's stdout at once in binary mode (one message each).
const BINARY_CHUNK: usize = 64 << 10;

/// Settings of exec mode.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The program and its arguments (`sh -c CMD` for `--sh`).
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// Raw chunks as binary messages instead of lines as text messages.
    pub(crate) binary: bool,
    /// Most children at once; further upgrades get 503.
    pub(crate) max_processes: usize,
    /// Between SIGTERM and SIGKILL.
    pub(crate) kill_grace: Duration,
    /// Children running (or not yet reaped).
    pub(crate) running: Arc<AtomicUsize>,
    /// Numbers connections for the log.
    pub(crate) next_id: Arc<AtomicU64>,
}

impl Options {
    pub(crate) fn new(
        program: OsString,
        args: Vec<OsString>,
        binary: bool,
        max_processes: usize,
        kill_grace: Duration,
    ) -> Self {
        Self {
            program,
            args,
            binary,
            max_processes,
            kill_grace,
            running: Arc::new(AtomicUsize::new(0)),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// Why no child was started for an upgrade.
#[derive(Debug)]
pub(crate) enum Refused {
    /// `--max-processes` children are running.
    Busy,
    /// The program could not be started.
    Spawn(std::io::Error),
}

/// Counts one child in [`Options::running`] until dropped (after the child is reaped).
#[derive(Debug)]
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The child of one connection. Dropped before it was reaped (a failed handshake, a task
/// dropped at shutdown), it kills the child's process group.
#[derive(Debug)]
pub(crate) struct Process {
    id: u64,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    reaped: bool,
    _ticket: Ticket,
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(rustix::process::Signal::KILL);
        }
    }
}

impl Process {
    /// Signals the child's process group (the child and what it started).
    fn signal(&self, signal: rustix::process::Signal) {
        let pid = self.child.id().and_then(|id| i32::try_from(id).ok());
        if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
            // ESRCH: the group is gone already.
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Ends the child: SIGTERM to its group, then SIGKILL once `grace` has passed, and reaps it.
    async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.stdin = None;
        if let Ok(Some(status)) = self.child.try_wait() {
            self.reaped = true;
            return Some(status);
        }
        self.signal(rustix::process::Signal::TERM);
        self.reap_within(grace).await
    }

    /// Waits up to `grace` for the child to exit, then SIGKILLs its group and reaps it.
    async fn reap_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                debug!(conn = self.id, "child outlived its grace period: SIGKILL");
                self.signal(rustix::process::Signal::KILL);
                // Bounded: a process stuck in the kernel is not worth hanging the task for.
                tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.ok()?.ok()
            }
        };
        self.reaped = status.is_some();
        status
    }
}

/// Starts the child of an upgrade request from `peer`, with the CGI environment of `request`.
/// `local` is the address the server listens on; `tls` whether the connection is `wss://`.
pub(crate) fn spawn(
    options: &Options,
    request: &http::Request<()>,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
) -> Result<Process, Refused> {
    let running = options.running.fetch_add(1, Ordering::Relaxed);
    let ticket = Ticket(options.running.clone());
    if running >= options.max_processes {
        return Err(Refused::Busy);
    }
    let id = options.next_id.fetch_add(1, Ordering::Relaxed);
    let mut command = Command::new(&options.program);
    command
        .args(&options.args)
        .envs(cgi_environment(request, peer, local, tls))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: SIGTERM and SIGKILL reach what a shell script starts too, and
        // a Ctrl-C at the server's terminal does not reach the children before the server.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(Refused::Spawn)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    if let Some(stderr) = child.stderr.take() {
        // Ends at the end of stderr, when the child (and whatever inherited it) is gone.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).split(b'\n');
            while let Ok(Some(line)) = lines.next_segment().await {
                let line = String::from_utf8_lossy(&line);
                info!(conn = id, %peer, "stderr: {}", line.trim_end_matches('\r'));
            }
        });
    }
    debug!(conn = id, %peer, pid = child.id(), "started {:?}", options.program);
    Ok(Process { id, child, stdin, stdout, reaped: false, _ticket: ticket })
}

/// The CGI variables (RFC 3875, as websocketd sets them) of a WebSocket request.
fn cgi_environment(
    request: &http::Request<()>,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
) -> Vec<(String, String)> {
    let uri = request.uri();
    let host = request.headers().get(HOST).and_then(|h| h.to_str().ok());
    // `Host: name:port`, or `[v6]:port`; without it the listening address.
    let (server_name, server_port) = match host.and_then(|h| h.parse::<http::uri::Authority>().ok())
    {
        Some(a) => (
            a.host().trim_start_matches('[').trim_end_matches(']').to_owned(),
            a.port_u16().unwrap_or(if tls { 443 } else { 80 }).to_string(),
        ),
        None => (local.ip().to_string(), local.port().to_string()),
    };
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
        ("SERVER_SOFTWARE".to_owned(), concat!("wsx/", env!("CARGO_PKG_VERSION")).to_owned()),
        ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
        ("SERVER_NAME".to_owned(), server_name),
        ("SERVER_PORT".to_owned(), server_port),
        ("REMOTE_ADDR".to_owned(), peer.ip().to_string()),
        ("REMOTE_PORT".to_owned(), peer.port().to_string()),
        ("REQUEST_METHOD".to_owned(), request.method().to_string()),
        ("REQUEST_URI".to_owned(), uri.path_and_query().map_or("/", |p| p.as_str()).to_owned()),
        ("SCRIPT_NAME".to_owned(), String::new()),
        ("PATH_INFO".to_owned(), uri.path().to_owned()),
        ("QUERY_STRING".to_owned(), uri.query().unwrap_or("").to_owned()),
    ];
    if tls {
        env.push(("HTTPS".to_owned(), "on".to_owned()));
    }
    for name in request.headers().keys() {
        let values: Vec<_> = request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let var = format!("HTTP_{}", name.as_str().to_ascii_uppercase().replace('-', "_"));
        env.push((var, values.join(", ")));
    }
    env
}

/// What one turn of the connection's loop saw.
enum Step {
    /// From the client (`None`: it is over).
    Client(Option<Result<Event, wsx::Error>>),
    /// The WebSocket's timers gave up on the client while its input waited for the child.
    GaveUp,
    /// Writing to the client failed: it is over.
    ClientFailed(wsx::Error),
    /// The WebSocket takes no more messages: a close went one way or the other.
    SendClosed,
    /// Writing to the child's stdin failed (it closed it, or exited).
    StdinFailed(std::io::Error),
    /// Bytes of the child's stdout read into the output buffer (0: its end).
    Read(std::io::Result<usize>),
    /// The child exited (after its stdout ended).
    Exited(std::io::Result<ExitStatus>),
}

/// One exec connection, until the child exits, the client goes or the server shuts down.
/// However it ends, the child is ended too (SIGTERM, then SIGKILL after the grace period).
pub(crate) async fn run<S>(
    ws: &mut WebSocket<S>,
    mut process: Process,
    options: &Options,
    state: &State,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let result = serve(ws, &mut process, options, state).await;
    if !process.reaped {
        let status = process.terminate(options.kill_grace).await;
        debug!(conn = process.id, ?status, "connection over, child ended");
    }
    result
}

async fn serve<S>(
    ws: &mut WebSocket<S>,
    process: &mut Process,
    options: &Options,
    state: &State,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = process.id;
    let stop = state.stop.notified();
    tokio::pin!(stop);
    let mut registered = false;
    // The client closed the connection normally: what it sent is the child's to read.
    let mut closed_normally = false;
    let mut pipes = Pipes {
        to_child: Backlog::default(),
        output: BytesMut::new(),
        binary: options.binary,
        stdout_reading: true,
        client_first: false,
    };
    loop {
        let step = next_or_stop(
            |cx| pipes.poll_turn(ws, process, cx),
            state,
            stop.as_mut(),
            &mut registered,
        )
        .await;
        let Some(step) = step else {
            // Shutdown: the child is told first, so its grace runs while the client closes.
            process.signal(rustix::process::Signal::TERM);
            process.stdin = None;
            let closed = Box::pin(crate::serve::going_away(ws)).await;
            process.reap_within(options.kill_grace).await;
            return closed;
        };
        match step {
            Step::Client(Some(Ok(Event::Message(Message::Close(frame))))) => {
                let code = frame.map(|f| f.code);
                closed_normally =
                    matches!(code, None | Some(CloseCode::NORMAL | CloseCode::GOING_AWAY));
            }
            Step::Client(Some(Ok(event))) => {
                if process.stdin.is_some() {
                    pipes.queue(event);
                }
            }
            Step::Client(Some(Err(e))) => debug!(conn = id, "peer error: {e}"),
            // The client closed or went away: `run` ends the child, after the input it has
            // if the close was a normal one.
            Step::Client(None) => {
                if closed_normally {
                    deliver_rest(process, &mut pipes.to_child, options.kill_grace).await;
                }
                return Ok(());
            }
            Step::GaveUp => {
                debug!(conn = id, "client given up on while its input waited for the child");
                // Bounded by the close deadline the timers set.
                while ws.recv_event().await.is_some() {}
                return Ok(());
            }
            Step::ClientFailed(e) => return Err(e),
            Step::SendClosed => pipes.stdout_reading = false,
            Step::StdinFailed(e) => {
                // The child closed its stdin (EPIPE): what the client sends is dropped.
                debug!(conn = id, "child's stdin closed: {e}");
                process.stdin = None;
                pipes.to_child.clear();
            }
            Step::Read(Ok(0)) | Step::Read(Err(_)) => {
                process.stdout = None;
                if !pipes.output.is_empty() {
                    let rest = pipes.output.split().freeze();
                    send(ws, to_message(rest, options.binary), &mut pipes);
                }
                pipes.output = BytesMut::new();
            }
            Step::Read(Ok(_)) => pipes.send_output(ws),
            Step::Exited(status) => {
                process.reaped = true;
                let frame = match status {
                    Ok(s) if s.success() => CloseFrame::new(CloseCode::NORMAL, ""),
                    Ok(s) => {
                        warn!(conn = id, "child exited with {s}");
                        CloseFrame::new(CloseCode::INTERNAL_ERROR, s.to_string())
                    }
                    Err(e) => CloseFrame::new(CloseCode::INTERNAL_ERROR, e.to_string()),
                };
                debug!(conn = id, code = u16::from(frame.code), "child exited: closing");
                process.stdin = None;
                ws.close(Some(frame)).await?;
                // The close reply, bounded by the close timeout of the connection's config;
                // what the client still sends has nowhere to go.
                while ws.recv_event().await.is_some() {}
                return Ok(());
            }
        }
    }
}

/// The bytes in flight between one client and its child.
struct Pipes {
    /// What the client sent, for the child's stdin.
    to_child: Backlog,
    /// What the child wrote, not yet a message (text mode: the start of a line).
    output: BytesMut,
    binary: bool,
    /// The child's stdout is read (not once the WebSocket takes no more messages).
    stdout_reading: bool,
    /// Alternates which side is polled first, so that neither direction starves the other.
    client_first: bool,
}

impl Pipes {
    /// One turn: write what waits for the child's stdin; then, in alternating order, receive
    /// from the client (while the backlog has room; otherwise run the WebSocket's timers) and
    /// read the child's stdout (while the WebSocket's send queue has room); notice the child's
    /// exit once its stdout ended; keep what was queued for the client moving.
    fn poll_turn<S>(
        &mut self,
        ws: &mut WebSocket<S>,
        process: &mut Process,
        cx: &mut Context<'_>,
    ) -> Poll<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Process { child, stdin, stdout, .. } = process;
        if let Some(stdin) = stdin.as_mut() {
            if let Poll::Ready(Err(e)) = self.to_child.poll_write(Pin::new(stdin), cx) {
                return Poll::Ready(Step::StdinFailed(e));
            }
        }
        self.client_first = !self.client_first;
        if self.client_first {
            if let Poll::Ready(step) = self.poll_client(ws, cx) {
                return Poll::Ready(step);
            }
        }
        if let Some(stdout) = stdout.as_mut() {
            if let Poll::Ready(step) = self.poll_stdout(ws, stdout, cx) {
                return Poll::Ready(step);
            }
        }
        if !self.client_first {
            if let Poll::Ready(step) = self.poll_client(ws, cx) {
                return Poll::Ready(step);
            }
        }
        if stdout.is_none() {
            // Output first: what the child wrote went out before its exit is noticed.
            let wait = child.wait();
            tokio::pin!(wait);
            if let Poll::Ready(status) = wait.poll(cx) {
                return Poll::Ready(Step::Exited(status));
            }
        }
        if let Poll::Ready(Err(e)) = Pin::new(&mut *ws).poll_flush(cx) {
            return Poll::Ready(Step::ClientFailed(e));
        }
        Poll::Pending
    }

    /// Receives from the client while the backlog for the child has room; otherwise runs the
    /// WebSocket's timers, so keepalive and the close timeout go on while the child does not
    /// read (and the client, held back by TCP, cannot be heard).
    fn poll_client<S>(&mut self, ws: &mut WebSocket<S>, cx: &mut Context<'_>) -> Poll<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.to_child.has_room() {
            let recv = ws.recv_event();
            tokio::pin!(recv);
            recv.poll(cx).map(Step::Client)
        } else {
            ws.poll_timers(cx).map(|()| Step::GaveUp)
        }
    }

    /// Reads the child's stdout if the WebSocket's send queue has room.
    fn poll_stdout<S>(
        &mut self,
        ws: &mut WebSocket<S>,
        stdout: &mut ChildStdout,
        cx: &mut Context<'_>,
    ) -> Poll<Step>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if !self.stdout_reading {
            return Poll::Pending;
        }
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Step::SendClosed),
            Poll::Pending => return Poll::Pending,
        }
        let want = if self.binary { BINARY_CHUNK } else { MAX_LINE - self.output.len() };
        self.output.reserve(want.min(BINARY_CHUNK));
        poll_read_buf(Pin::new(stdout), cx, &mut self.output).map(Step::Read)
    }

    /// A client message, or a piece of one, for the child's stdin: text mode ends each message
    /// with a newline.
    fn queue(&mut self, event: Event) {
        let (data, last) = match event {
            Event::Message(Message::Text(text)) => (text.into_bytes(), true),
            Event::Message(Message::Binary(data)) => (data, true),
            Event::Chunk(chunk) => {
                let last = chunk.is_last();
                (chunk.into_data(), last)
            }
            // Pings are answered by the library; pongs need nothing.
            Event::Message(_) => return,
        };
        self.to_child.push(data);
        if !self.binary && last {
            // Joins the line on the backlog's tail (a short line goes to the pipe in one write).
            self.to_child.push(Bytes::from_static(b"\n"));
        }
    }

    /// Queues what the child wrote: every whole line (without its `\n` or `\r\n`) in text mode,
    /// a line longer than [`MAX_LINE`] in pieces; all of it as one message in binary mode.
    /// Called after the send queue had room, so the queue goes past its high-water mark by at
    /// most one read of stdout.
    fn send_output<S>(&mut self, ws: &mut WebSocket<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.binary {
            let data = self.output.split().freeze();
            return send(ws, Message::Binary(data), self);
        }
        while let Some(end) = self.output.iter().position(|&b| b == b'\n') {
            let mut line = self.output.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            send(ws, to_message(line.freeze(), false), self);
        }
        if self.output.len() >= MAX_LINE {
            let piece = self.output.split().freeze();
            send(ws, to_message(piece, false), self);
        }
    }
}

/// Queues a message for the client without waiting (the caller checked for room); once the
/// WebSocket takes no more, the child's stdout is no longer read.
fn send<S>(ws: &mut WebSocket<S>, message: Message, pipes: &mut Pipes)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if Pin::new(ws).start_send(message).is_err() {
        pipes.stdout_reading = false;
    }
}

/// After the client's normal close: writes what it sent before to the child's stdin, within
/// `grace`, then closes stdin. The child's stdout is read and dropped meanwhile (the client is
/// gone), so a child blocked writing output still takes its input.
async fn deliver_rest(process: &mut Process, backlog: &mut Backlog, grace: Duration) {
    let Process { id, stdin, stdout, .. } = process;
    if let Some(pipe) = stdin.as_mut() {
        let mut discard = BytesMut::new();
        let write = poll_fn(|cx| {
            discard_output(stdout, &mut discard, cx);
            backlog.poll_write(Pin::new(&mut *pipe), cx)
        });
        match tokio::time::timeout(grace, write).await {
            Ok(Ok(())) => debug!(conn = *id, "the client's last input went to the child"),
            Ok(Err(e)) => debug!(conn = *id, "child's stdin closed: {e}"),
            Err(_) => debug!(conn = *id, "the child did not take its last input in {grace:?}"),
        }
    }
    backlog.clear();
    *stdin = None;
}

/// Reads and drops what the child writes, a bounded amount per call (then it asks to be polled
/// again), until its stdout ends.
fn discard_output(stdout: &mut Option<ChildStdout>, buf: &mut BytesMut, cx: &mut Context<'_>) {
    let Some(out) = stdout.as_mut() else { return };
    for _ in 0..16 {
        buf.clear();
        buf.reserve(BINARY_CHUNK);
        match poll_read_buf(Pin::new(&mut *out), cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => {}
            Poll::Ready(_) => {
                *stdout = None;
                return;
            }
            Poll::Pending => return,
        }
    }
    cx.waker().wake_by_ref();
}

/// Output as a message: binary as it is, text as UTF-8 (invalid sequences replaced).
fn to_message(data: Bytes, binary: bool) -> Message {
    if binary {
        return Message::Binary(data);
    }
    match Utf8Bytes::try_from(data.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Text(String::from_utf8_lossy(&data).into_owned().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_http_variables() {
        let request = http::Request::builder()
            .uri("/chat/room?x=1&y=2")
            .header("Host", "example.com:9000")
            .header("User-Agent", "test/1")
            .header("X-Two", "a")
            .header("X-Two", "b")
            .body(())
            .unwrap();
        let peer: SocketAddr = "10.0.0.7:5555".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let env = cgi_environment(&request, peer, local, false);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH_INFO"), Some("/chat/room"));
        assert_eq!(get("QUERY_STRING"), Some("x=1&y=2"));
        assert_eq!(get("REMOTE_ADDR"), Some("10.0.0.7"));
        assert_eq!(get("REMOTE_PORT"), Some("5555"));
        assert_eq!(get("SERVER_NAME"), Some("example.com"));
        assert_eq!(get("SERVER_PORT"), Some("9000"));
        assert_eq!(get("HTTP_USER_AGENT"), Some("test/1"));
        assert_eq!(get("HTTP_X_TWO"), Some("a, b"));
        assert_eq!(get("HTTPS"), None);
    }
}
