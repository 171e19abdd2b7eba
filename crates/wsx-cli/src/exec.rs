//! `wsx serve --exec PROGRAM [-- ARGS…]` and `--sh 'CMD'` (after websocketd): one child process
//! per WebSocket. Each text message is a line on the child's stdin and each line of its stdout
//! a text message (`--binary`: raw chunks both ways, as binary messages). The child gets a
//! CGI-style environment; its stderr goes to the log, tagged by connection.
//!
//! Flow control both ways: the child's stdout is read only as fast as the WebSocket drains
//! (feeding waits on the send buffer's high-water mark, and what is fed is flushed before the
//! next read), and a message is received from the client only once the previous one is wholly
//! written to the child's stdin, so a child that does not read holds the client back through
//! TCP instead of growing the server's memory.
//!
//! When the connection ends (the client closes or goes away, or the server shuts down) the
//! child's process group gets SIGTERM, then SIGKILL after `--kill-grace`. When the child exits
//! on its own, the rest of its stdout is sent and the connection closes with 1000 for exit
//! status 0, 1011 otherwise.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HOST;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tracing::{debug, info, warn};
use wsx::{CloseCode, CloseFrame, Message, Utf8Bytes, WebSocket};

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
    /// From the client.
    Client(Option<Result<Message, wsx::Error>>),
    /// Bytes of the pending input written to the child's stdin.
    Wrote(std::io::Result<usize>),
    /// Bytes of the child's stdout read into the output buffer.
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
    // A message from the client not yet wholly written to the child's stdin: nothing more is
    // received meanwhile.
    let mut pending = Bytes::new();
    let mut output = BytesMut::new();
    loop {
        let step = {
            let Process { child, stdin, stdout, .. } = &mut *process;
            let stdout_open = stdout.is_some();
            let writing = !pending.is_empty();
            if !stdout_open && output.is_empty() {
                output = BytesMut::new();
            }
            let want = if options.binary { BINARY_CHUNK } else { MAX_LINE - output.len() };
            output.reserve(want.min(BINARY_CHUNK));
            let turn = async {
                tokio::select! {
                    // Output first: what the child wrote goes out before its exit is noticed.
                    r = read_some(stdout.as_mut(), &mut output), if stdout_open => Step::Read(r),
                    w = write_some(stdin.as_mut(), &pending), if writing => Step::Wrote(w),
                    m = ws.recv(), if !writing => Step::Client(m),
                    s = child.wait(), if !stdout_open => Step::Exited(s),
                }
            };
            tokio::pin!(turn);
            next_or_stop(turn, state, stop.as_mut(), &mut registered).await
        };
        let Some(step) = step else {
            // Shutdown: the child is told first, so its grace runs while the client closes.
            process.signal(rustix::process::Signal::TERM);
            process.stdin = None;
            let closed = Box::pin(crate::serve::going_away(ws)).await;
            process.reap_within(options.kill_grace).await;
            return closed;
        };
        match step {
            Step::Read(Ok(0)) | Step::Read(Err(_)) => {
                process.stdout = None;
                if !output.is_empty() {
                    let rest = output.split().freeze();
                    ws.feed(to_message(rest, options.binary)).await?;
                }
                ws.flush().await?;
            }
            Step::Read(Ok(_)) => {
                send_output(ws, &mut output, options.binary).await?;
                ws.flush().await?;
            }
            Step::Wrote(Ok(n)) => pending.advance(n),
            Step::Wrote(Err(e)) => {
                // The child closed its stdin (EPIPE): what the client sends is dropped.
                debug!(conn = id, "child's stdin closed: {e}");
                process.stdin = None;
                pending = Bytes::new();
            }
            Step::Client(Some(Ok(msg))) => {
                if process.stdin.is_none() {
                    continue;
                }
                pending = match msg {
                    Message::Text(text) if !options.binary => line(text.as_bytes()),
                    Message::Binary(data) if !options.binary => line(&data),
                    Message::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
                    Message::Binary(data) => data,
                    _ => continue,
                };
            }
            Step::Client(Some(Err(e))) => debug!(conn = id, "peer error: {e}"),
            // The client closed or went away: `run` ends the child.
            Step::Client(None) => return Ok(()),
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
                // The close reply, bounded by the close timeout of the connection's config.
                while ws.recv().await.is_some() {}
                return Ok(());
            }
        }
    }
}

/// `data` and a newline: one line for the child's stdin.
fn line(data: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(data.len() + 1);
    line.extend_from_slice(data);
    line.extend_from_slice(b"\n");
    line.freeze()
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

/// Feeds what the child wrote: every whole line (without its `\n` or `\r\n`) in text mode, a
/// line longer than [`MAX_LINE`] in pieces; all of it as one message in binary mode. Feeding
/// waits while the send buffer is above its high-water mark.
async fn send_output<S>(
    ws: &mut WebSocket<S>,
    output: &mut BytesMut,
    binary: bool,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if binary {
        return ws.feed(Message::Binary(output.split().freeze())).await;
    }
    while let Some(end) = output.iter().position(|&b| b == b'\n') {
        let mut line = output.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        ws.feed(to_message(line.freeze(), false)).await?;
    }
    if output.len() >= MAX_LINE {
        ws.feed(to_message(output.split().freeze(), false)).await?;
    }
    Ok(())
}

/// Reads from the child's stdout into `buf`; never resolves without a stdout.
async fn read_some(stdout: Option<&mut ChildStdout>, buf: &mut BytesMut) -> std::io::Result<usize> {
    match stdout {
        Some(stdout) => stdout.read_buf(buf).await,
        None => std::future::pending().await,
    }
}

/// Writes some of `data` to the child's stdin; never resolves without a stdin.
async fn write_some(stdin: Option<&mut ChildStdin>, data: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(stdin) => stdin.write(data).await,
        None => std::future::pending().await,
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
