//! `wsx connect`: a command-line WebSocket client in the spirit of websocat.
//!
//! Each stdin line goes out as one message (or each NUL-terminated piece with `-0`, each read
//! with `--binary`, all of stdin with `--whole`); each message received comes out on stdout, one
//! per line; diagnostics go to stderr. The end of stdin (Ctrl-D, or the end of a pipe) starts the
//! closing handshake, and messages the server sends before its close reply are still printed,
//! so `echo hi | wsx connect URL` prints the reply and exits.

use std::fmt::Write as _;
use std::io::{self, BufWriter, StdoutLock, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use http::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncBufReadExt, BufReader, Stdin};
use tokio::time::Instant;
use wsx::proto::deflate::DeflateConfig;
use wsx::proto::handshake::{check_protocols, is_token};
use wsx::proto::State;
use wsx::{
    ClientBuilder, CloseCode, CloseFrame, Config, HandshakeError, MaybeTlsStream, Message,
    WebSocket,
};

/// How long to wait for the server's close reply (and then for it to end the TCP connection)
/// once this side has sent its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most characters of a refused upgrade's body shown in the error line.
const MAX_BODY_SHOWN: usize = 200;

/// `wsx connect --help`: one line per use.
pub(crate) const EXAMPLES: &str = "\
Examples:
  wsx connect ws://127.0.0.1:8080/             stdin lines out, messages received on stdout
  echo hello | wsx connect ws://127.0.0.1:8080/
                                               sends, prints the echo, closes, exits 0
  wsx connect --count 10 -H 'Authorization: Bearer T' --protocol v1 wss://example.com/feed
  wsx connect --binary --binary-raw URL < in.bin > out.bin
                                               bytes as they are, one message per read
  wsx connect --binary --whole URL < file.bin  all of stdin as one binary message
  find . -print0 | wsx connect -0 --jsonl URL  NUL-separated messages; a JSON line per reply
  wsx connect --reconnect --ping-interval 5 URL
                                               survives server restarts and dead links
  wsx connect --proxy socks5h://127.0.0.1:1080 URL
                                               through SOCKS5 (or http://user:pass@proxy:3128)
  wsx connect --listen tcp://127.0.0.1:2222 wss://host/ssh
                                               each local TCP connection over its own WebSocket";

/// Options of `wsx connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// The server's URL: ws://host[:port]/path (or wss://).
    url: String,
    /// Send binary messages instead of text. stdin is then a byte stream, not split on
    /// newlines: each read becomes one message (or all of it with --whole; or NUL-separated
    /// pieces with -0).
    #[arg(long)]
    binary: bool,
    /// Send all of stdin as one message, at its end (binary with --binary, else UTF-8 text).
    #[arg(long, conflicts_with = "null")]
    whole: bool,
    /// Split stdin on NUL bytes instead of newlines: each piece, without its NUL, is one
    /// message (text unless --binary).
    #[arg(short = '0', long)]
    null: bool,
    /// Write received binary messages to stdout as raw bytes, with nothing added, instead of
    /// one line of hex each.
    #[arg(long)]
    binary_raw: bool,
    /// Add a request header, written 'Name: value'. Repeatable.
    // Checked by `builder`, not by clap: clap's error would echo an invalid value as is, line
    // breaks included, over several lines.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Offer a subprotocol (a token: letters, digits and !#$%&'*+-.^_`|~). Repeatable, in order
    /// of preference.
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Send this Origin header.
    #[arg(long, value_name = "URL")]
    origin: Option<String>,
    /// Exit after receiving N text or binary messages, closing with 1000. The end of stdin then
    /// no longer closes the connection: `echo subscribe | wsx connect --count 5 URL` waits for
    /// five messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Give up after SECS seconds, connecting included: close with 1000 and exit with an
    /// error.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Also trust the PEM certificates in FILE as roots for wss:// (a private or test CA).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// DANGEROUS, for testing only: accept any TLS certificate for wss://, so anyone on the
    /// network path can read and change the traffic.
    #[arg(long)]
    insecure: bool,
    /// Do not offer permessage-deflate compression (offered by default).
    #[arg(long)]
    no_deflate: bool,
    /// Open wss:// WebSockets over HTTP/2 (RFC 8441) when the server offers it (ALPN h2 and
    /// extended CONNECT), HTTP/1.1 otherwise; with --listen, every forwarded connection is a
    /// stream of one HTTP/2 connection. -v shows which was used.
    #[arg(long)]
    http2: bool,
    /// Print each message received as one JSON line, so that message boundaries stay clear:
    /// {"type":"text","data":"…"} or {"type":"binary","base64":"…"}.
    #[arg(long, conflicts_with = "binary_raw")]
    jsonl: bool,
    /// Seconds without hearing from the server before a keepalive ping (0: no keepalive)
    /// [default: 20].
    #[arg(long, value_name = "SECS", value_parser = parse_secs_or_zero)]
    ping_interval: Option<Duration>,
    /// Seconds to wait for any frame after a keepalive ping before closing with 1011 (0: wait
    /// for ever) [default: 20].
    #[arg(long, value_name = "SECS", value_parser = parse_secs_or_zero)]
    ping_timeout: Option<Duration>,
    /// Print each redirect followed and the server's response (status line and headers) on
    /// stderr after the handshake.
    #[arg(short, long)]
    verbose: bool,
    /// Connect through this proxy: http://[USER:PASS@]HOST[:PORT] (HTTP CONNECT),
    /// socks5://… (the server's name resolved here) or socks5h://… (resolved by the proxy).
    /// Without it the proxy comes from the environment as for curl: wss_proxy or https_proxy
    /// for wss://, ws_proxy or http_proxy for ws://, then all_proxy; no_proxy lists the hosts
    /// reached directly.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Connect directly, ignoring the proxy variables of the environment.
    #[arg(long)]
    no_proxy: bool,
    /// Follow at most N redirects (301, 302, 303, 307, 308); 0 makes a redirect an error.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_redirects: usize,
    /// The status code of the close sent at the end of stdin: 1000-1003, 1007-1014 or
    /// 3000-4999 [default: 1000].
    // A string, checked by `end_close`: clap's error for a bad number spans several lines.
    #[arg(long, value_name = "CODE")]
    close_code: Option<String>,
    /// The reason of the close sent at the end of stdin (at most 123 bytes of UTF-8).
    #[arg(long, value_name = "TEXT")]
    close_reason: Option<String>,
    /// When the connection drops (not after the end of stdin, --count or --timeout), connect
    /// again and carry on reading stdin; waits between attempts double from 0.5 s, with jitter.
    /// Each attempt is one line on stderr. Messages in flight when it dropped may be lost.
    #[arg(long)]
    reconnect: bool,
    /// Seconds of the longest wait between --reconnect attempts.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "30")]
    reconnect_max: Duration,
    /// Forward TCP instead of stdin and stdout (the client side of `wsx serve --to`): listen on
    /// HOST:PORT (port 0 picks a free one; the address is printed on stderr) and carry every
    /// connection accepted there over a WebSocket of its own to URL, as binary messages both
    /// ways. Runs until interrupted. The WebSocket options (-H, --protocol, --origin, TLS and
    /// ping options, -v) apply to each connection; compression is not offered.
    #[arg(
        long,
        value_name = "tcp://HOST:PORT",
        value_parser = crate::bridge::parse_target,
        conflicts_with_all = [
            "binary", "whole", "null", "binary_raw", "count", "timeout", "jsonl", "close_code",
            "close_reason", "reconnect",
        ]
    )]
    listen: Option<crate::bridge::Target>,
}

/// Runs a `wsx connect` session on its own single-threaded runtime.
///
/// Errors are for the caller to print as one line. A session the server ended with a close
/// code other than 1000 or 1001 is reported here on stderr (`closed: CODE REASON`) and comes
/// back as `Ok(ExitCode::FAILURE)`.
pub(crate) fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if let Some(listen) = args.listen.clone() {
        return runtime.block_on(forward(args, listen));
    }
    let result = runtime.block_on(session(args));
    // Tokio reads stdin with a blocking read on another thread that cannot be cancelled; at a
    // terminal, dropping the runtime normally would wait for the user to press Enter.
    runtime.shutdown_background();
    result
}

/// `--listen`: accepts TCP connections on `listen` and bridges each to a WebSocket of its own,
/// until Ctrl-C or SIGTERM. A connection whose WebSocket cannot be opened is closed, with one
/// line on stderr saying why.
async fn forward(args: ConnectArgs, listen: crate::bridge::Target) -> anyhow::Result<ExitCode> {
    let builder = builder(&args)?;
    let listener = tokio::net::TcpListener::bind((listen.host.as_str(), listen.port))
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    eprintln!("wsx: listening on tcp://{local}, forwarding each connection to {}", args.url);
    let url: std::sync::Arc<str> = args.url.as_str().into();
    let verbose = args.verbose;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: keep serving the others.
                Err(e) => {
                    eprintln!("wsx: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return Ok(ExitCode::SUCCESS),
        };
        let connecting = builder.clone().connect();
        let url = url.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let mut ws = match connecting.await {
                Ok((ws, response)) => {
                    if verbose {
                        eprint!("{}", describe_response(&response));
                    }
                    ws
                }
                Err(e) => {
                    eprintln!("wsx: {peer}: {}", connect_error(&url, e));
                    return;
                }
            };
            tracing::debug!(%peer, "forwarding to {url}");
            if let Err(e) = crate::bridge::run(&mut ws, tcp, None).await {
                tracing::debug!(%peer, "bridge ended: {e}");
            }
        });
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Why this side started the closing handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// stdin ended.
    StdinEnd,
    /// `--count` messages arrived.
    Count,
    /// `--timeout` passed.
    Timeout,
    /// stdout was closed (`wsx connect … | head -1`): nobody reads what arrives.
    StdoutClosed,
    /// Something failed on this side (stdin, stdout); the failure is reported.
    Failed,
}

/// The close frame the server sent.
#[derive(Debug)]
struct PeerClose {
    frame: Option<CloseFrame>,
    /// Whether the server closed first (rather than replying to this side's close).
    initiated: bool,
}

/// What one connection's loop ended with.
enum End {
    /// The session is over, with this result.
    Done(anyhow::Result<ExitCode>),
    /// The connection dropped (the transport failed, or the server closed first) while this
    /// side still had work: `--reconnect` connects again. `result` is the session's result
    /// without it; `reason` is one line for the reconnect log.
    Dropped { reason: String, result: anyhow::Result<ExitCode> },
}

/// What a session keeps across connections.
struct Session {
    args: ConnectArgs,
    builder: ClientBuilder,
    deadline: Option<Instant>,
    end_close: Option<CloseFrame>,
    out: Output,
    stdin: StdinReader,
    stdin_open: bool,
    /// Data messages received, for `--count`.
    received: u64,
}

async fn session(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let end_close = end_close(&args)?;
    let builder = builder(&args)?;
    let out = Output::new(if args.jsonl {
        OutputMode::Jsonl
    } else if args.binary_raw {
        OutputMode::Raw
    } else {
        OutputMode::Plain
    });
    let stdin = StdinReader::new(framing(&args));
    let mut session =
        Session { args, builder, deadline, end_close, out, stdin, stdin_open: true, received: 0 };
    // The first connection's failure ends the session, whatever `--reconnect` says: a wrong
    // URL or a refused upgrade is better reported than retried.
    let mut ws = session.connect().await.map_err(|e| session.connect_error(e))?;
    loop {
        let (reason, result) = match session.run(&mut ws).await {
            End::Done(result) => return result,
            End::Dropped { reason, result } => (reason, result),
        };
        if !session.args.reconnect {
            return result;
        }
        ws = session.reconnect(reason).await?;
    }
}

impl Session {
    /// Connects (bounded by `--timeout`) and shows the response with `-v`.
    async fn connect(&self) -> Result<WebSocket<MaybeTlsStream>, ConnectFailure> {
        let connecting = self.builder.clone().connect();
        let connected = match self.deadline {
            Some(d) => tokio::time::timeout_at(d, connecting)
                .await
                .map_err(|_| ConnectFailure::TimedOut)?,
            None => connecting.await,
        };
        let (ws, response) = connected.map_err(ConnectFailure::Error)?;
        tracing::debug!(protocol = ws.protocol(), "connected to {}", self.args.url);
        if self.args.verbose {
            eprint!("{}", describe_response(&response));
        }
        Ok(ws)
    }

    fn connect_error(&self, failure: ConnectFailure) -> anyhow::Error {
        match failure {
            ConnectFailure::TimedOut => timed_out(&self.args),
            ConnectFailure::Error(e) => connect_error(&self.args.url, e),
        }
    }

    /// Connects again after a drop, with exponential backoff and jitter, until it works or
    /// `--timeout` passes; each attempt is one line on stderr.
    async fn reconnect(&self, mut reason: String) -> anyhow::Result<WebSocket<MaybeTlsStream>> {
        let url = &self.args.url;
        for attempt in 1u32.. {
            let delay = backoff(attempt, self.args.reconnect_max);
            eprintln!(
                "wsx: reconnect attempt {attempt} to {url} in {:.2} s ({reason})",
                delay.as_secs_f64()
            );
            let wake = Instant::now() + delay;
            if self.deadline.is_some_and(|d| d <= wake) {
                tokio::time::sleep_until(self.deadline.unwrap_or(wake)).await;
                return Err(timed_out(&self.args));
            }
            tokio::time::sleep_until(wake).await;
            match self.connect().await {
                Ok(ws) => {
                    eprintln!("wsx: reconnected to {url}");
                    return Ok(ws);
                }
                Err(ConnectFailure::TimedOut) => return Err(timed_out(&self.args)),
                Err(ConnectFailure::Error(e)) => {
                    reason =
                        one_line(&self.connect_error(ConnectFailure::Error(e)).to_string(), 300);
                }
            }
        }
        unreachable!("u32 attempts run out after a hundred years at 30 s each")
    }

    /// Runs one connection: stdin out, messages to stdout, until it ends.
    async fn run(&mut self, ws: &mut WebSocket<MaybeTlsStream>) -> End {
        let args = &self.args;
        let url = args.url.as_str();
        // The code of the close this side sent: a reply that echoes it is not an error.
        let mut sent_code = None;
        let mut closing: Option<Why> = None;
        let mut peer_close: Option<PeerClose> = None;
        let mut failure: Option<anyhow::Error> = None;
        // Why the connection failed under this side, if it did.
        let mut dropped: Option<String> = None;
        let timer = tokio::time::sleep_until(self.deadline.unwrap_or_else(Instant::now));
        tokio::pin!(timer);

        loop {
            let open = closing.is_none() && ws.state() == State::Open;
            let mut close_now = None;
            tokio::select! {
                msg = ws.recv() => match msg {
                    None => break,
                    Some(Ok(Message::Close(frame))) => {
                        if closing.is_none() {
                            dropped = Some(format!("closed: {}", describe_close(frame.as_ref())));
                        }
                        peer_close = Some(PeerClose { frame, initiated: closing.is_none() });
                    }
                    Some(Ok(msg)) if msg.is_data() => {
                        // Past `--count`, or with nobody reading stdout, the rest is dropped
                        // while the close completes.
                        if matches!(closing, Some(Why::Count | Why::StdoutClosed)) {
                            continue;
                        }
                        match self.out.write(&msg) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                                close_now = Some(Why::StdoutClosed);
                            }
                            Err(e) => {
                                failure.get_or_insert_with(|| anyhow!("cannot write to stdout: {e}"));
                                close_now = Some(Why::Failed);
                            }
                        }
                        self.received += 1;
                        if args.count == Some(self.received) {
                            close_now.get_or_insert(Why::Count);
                        }
                    }
                    // Pings are answered by the library; pongs need nothing.
                    Some(Ok(_)) => {}
                    // The library has already sent the matching close frame (or the transport
                    // is gone); keep receiving until the end to finish the handshake.
                    Some(Err(e)) => {
                        if closing.is_none() {
                            dropped.get_or_insert_with(|| e.to_string());
                        }
                        failure.get_or_insert_with(|| anyhow!("connection to {url} failed: {e}"));
                    }
                },
                read = self.stdin.next(), if open && self.stdin_open => match read {
                    Ok(None) => {
                        self.stdin_open = false;
                        if args.count.is_none() {
                            close_now = Some(Why::StdinEnd);
                        }
                    }
                    Ok(Some(piece)) => match piece_message(piece, self.stdin.framing, args.binary) {
                        // Queued, not flushed: `recv` writes queued bytes before it waits
                        // (reading implies writing), so the message leaves on the next turn of
                        // the loop, and receiving never stops behind a slow write.
                        Ok(msg) => {
                            if let Err(e) = ws.feed(msg).await {
                                // The transport's failure: the next `recv` ends the loop.
                                dropped.get_or_insert_with(|| e.to_string());
                                failure.get_or_insert_with(|| anyhow!("cannot send to {url}: {e}"));
                            }
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                            close_now = Some(Why::Failed);
                        }
                    },
                    Err(e) => {
                        failure.get_or_insert_with(|| anyhow!("cannot read stdin: {e}"));
                        close_now = Some(Why::Failed);
                    }
                },
                () = &mut timer, if open && self.deadline.is_some() => close_now = Some(Why::Timeout),
            }
            if let Some(why) = close_now {
                if closing.is_none() {
                    closing = Some(why);
                    let frame = if why == Why::StdinEnd { self.end_close.clone() } else { None };
                    sent_code = Some(frame.as_ref().map_or(CloseCode::NORMAL, |f| f.code));
                    // A failure here is the transport's; the next `recv` ends the loop.
                    if let Err(e) = ws.close(frame).await {
                        tracing::debug!("sending close: {e}");
                    }
                }
            }
        }

        let result = if let Some(e) = failure {
            Err(e)
        } else if closing == Some(Why::Timeout) {
            Err(timed_out(args))
        } else {
            match (closing, peer_close) {
                // The server closed first, or answered this side's close with an error code.
                (_, Some(close))
                    if close.initiated
                        || !(is_normal(close.frame.as_ref())
                            || close.frame.as_ref().map(|f| f.code) == sent_code) =>
                {
                    // Reported by the reconnect line instead when there is one.
                    if !(args.reconnect && closing.is_none()) {
                        eprintln!("closed: {}", describe_close(close.frame.as_ref()));
                    }
                    Ok(if is_normal(close.frame.as_ref()) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                (Some(_), Some(close)) if args.verbose => {
                    eprintln!("closed: {}", describe_close(close.frame.as_ref()));
                    Ok(ExitCode::SUCCESS)
                }
                // This side closed; the reply, or the server ending the connection without one
                // (or not within CLOSE_TIMEOUT), finishes the session.
                (Some(_), _) => Ok(ExitCode::SUCCESS),
                // The library reports a connection that ends without a close frame as an
                // error, so this is not expected; say so rather than exit 0.
                (None, _) => {
                    dropped.get_or_insert_with(|| "the connection ended".to_owned());
                    Err(anyhow!("connection to {url} ended unexpectedly"))
                }
            }
        };
        // Only a drop that this side did not cause: not after the end of stdin, --count,
        // --timeout, a closed stdout or a failure here.
        match dropped {
            Some(reason) if closing.is_none() => {
                End::Dropped { reason: one_line(&reason, 300), result }
            }
            _ => End::Done(result),
        }
    }
}

/// Why connecting failed.
enum ConnectFailure {
    /// `--timeout` passed.
    TimedOut,
    Error(wsx::Error),
}

/// The wait before reconnect attempt `attempt` (from 1): 0.5 s doubling each time, at most
/// `max`, then scaled by a random factor between 0.5 and 1 so that clients dropped together do
/// not come back together.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let exponential = RECONNECT_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(20));
    exponential.min(max).mul_f64(0.5 + 0.5 * random_fraction())
}

/// The first reconnect attempt's wait, before jitter.
const RECONNECT_BASE: Duration = Duration::from_millis(500);

/// A random number in [0, 1), from the standard library's randomly keyed hasher (good enough
/// for jitter; no dependency).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The client for `args`: URL, headers, subprotocols, TLS roots. Invalid headers and
/// subprotocols are refused here, before connecting, each with a one-line error that shows the
/// value escaped.
fn builder(args: &ConnectArgs) -> anyhow::Result<ClientBuilder> {
    let mut config = Config::default().close_timeout(Some(CLOSE_TIMEOUT));
    // Zero turns either off.
    if let Some(interval) = args.ping_interval {
        config = config.ping_interval(Some(interval).filter(|d| !d.is_zero()));
    }
    if let Some(timeout) = args.ping_timeout {
        config = config.ping_timeout(Some(timeout).filter(|d| !d.is_zero()));
    }
    // Not for a TCP bridge: see `--to` in main.rs.
    let deflate = !args.no_deflate && args.listen.is_none();
    let config = config.deflate(deflate.then(DeflateConfig::default));
    let mut builder = ClientBuilder::new(args.url.clone()).config(config).http2(args.http2);
    for raw in &args.headers {
        let (name, value) = parse_header(raw).map_err(|e| anyhow!("invalid -H {raw:?}: {e}"))?;
        builder = builder.header(name, value);
    }
    check_protocols(&args.protocols).map_err(|e| match e {
        HandshakeError::InvalidProtocol(name) if is_token(&name) => {
            anyhow!("invalid --protocol {name:?}: offered twice")
        }
        HandshakeError::InvalidProtocol(name) => anyhow!(
            "invalid --protocol {name:?}: a subprotocol is a token (letters, digits and \
             !#$%&'*+-.^_`|~), offered once"
        ),
        other => anyhow!("invalid --protocol: {other}"),
    })?;
    for protocol in &args.protocols {
        builder = builder.protocol(protocol.clone());
    }
    if let Some(raw) = &args.origin {
        let origin =
            parse_header_value(raw).map_err(|e| anyhow!("invalid --origin {raw:?}: {e}"))?;
        builder = builder.origin(origin);
    }
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        builder = builder
            .add_root_certificates_pem(&pem)
            .map_err(|e| anyhow!("--cacert {}: {e}", path.display()))?;
    }
    if args.insecure {
        eprintln!("wsx: warning: --insecure: TLS certificates are NOT verified; testing only");
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(raw) = &args.proxy {
        builder = builder.proxy_url(raw).map_err(|e| match e {
            wsx::Error::Url(m) => {
                anyhow!("invalid --proxy: {}", m.strip_prefix("proxy URL ").unwrap_or(&m))
            }
            other => anyhow!("invalid --proxy: {other}"),
        })?;
    }
    if args.no_proxy {
        builder = builder.no_proxy();
    }
    builder = builder.max_redirects(args.max_redirects);
    if args.verbose {
        builder = builder.on_redirect(|r: &wsx::Redirect| {
            eprintln!(
                "redirect {} {}: {} -> {}",
                r.status.as_str(),
                r.status.canonical_reason().unwrap_or(""),
                r.from,
                r.to
            );
        });
    }
    Ok(builder)
}

/// One line saying why connecting failed. `wsx::Error`s are formatted here rather than wrapped,
/// so that the line does not repeat their source.
fn connect_error(url: &str, e: wsx::Error) -> anyhow::Error {
    match e {
        // Already names the URL.
        wsx::Error::Url(_) => anyhow!("{e}"),
        wsx::Error::Rejected(response) => {
            let body = one_line(&String::from_utf8_lossy(response.body()), MAX_BODY_SHOWN);
            let body = if body.is_empty() { String::new() } else { format!(": {body}") };
            anyhow!(
                "cannot connect to {url}: server refused the WebSocket upgrade with {}{body}",
                response.status()
            )
        }
        e => anyhow!("cannot connect to {url}: {e}"),
    }
}

/// The close frame for the end of stdin, from `--close-code` and `--close-reason`; `None` for
/// the default (a close without a code, which the server takes as 1000). Checked before
/// connecting.
fn end_close(args: &ConnectArgs) -> anyhow::Result<Option<CloseFrame>> {
    let code = match &args.close_code {
        None => None,
        Some(raw) => {
            let code = raw.trim().parse::<u16>().ok().map(CloseCode).filter(|c| c.is_sendable());
            Some(code.ok_or_else(|| {
                anyhow!(
                    "invalid --close-code {raw:?}: a close code that may be sent is 1000-1003, \
                     1007-1014 or 3000-4999"
                )
            })?)
        }
    };
    let reason = args.close_reason.as_deref().unwrap_or("");
    if reason.len() > MAX_CLOSE_REASON {
        return Err(anyhow!(
            "invalid --close-reason: {} bytes, at most {MAX_CLOSE_REASON} fit in a close frame",
            reason.len()
        ));
    }
    if code.is_none() && args.close_reason.is_none() {
        return Ok(None);
    }
    Ok(Some(CloseFrame::new(code.unwrap_or(CloseCode::NORMAL), reason)))
}

/// The most bytes of a close reason: a control frame carries 125, the code takes 2.
const MAX_CLOSE_REASON: usize = 123;

/// The response's status line and headers, a line each, as `-v` shows them.
fn describe_response(response: &http::Response<()>) -> String {
    let status = response.status();
    let mut text = format!(
        "{:?} {} {}\n",
        response.version(),
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in response.headers() {
        let _ = writeln!(text, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    text
}

fn timed_out(args: &ConnectArgs) -> anyhow::Error {
    let secs = args.timeout.unwrap_or_default().as_secs_f64();
    anyhow!("{}: timed out after {secs} s (--timeout)", args.url)
}

/// How stdin is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// One message per line, without its `\n` (and, for text, a `\r` before it).
    Lines,
    /// One message per NUL-terminated piece, without the NUL (`-0`).
    Nul,
    /// One message per read (`--binary`).
    Chunks,
    /// All of stdin, one message (`--whole`).
    Whole,
}

fn framing(args: &ConnectArgs) -> Framing {
    if args.null {
        Framing::Nul
    } else if args.whole {
        Framing::Whole
    } else if args.binary {
        Framing::Chunks
    } else {
        Framing::Lines
    }
}

/// The most bytes one read of stdin takes, so the largest message `--binary` makes from a read.
const STDIN_CHUNK: usize = 64 << 10;

/// stdin, cut into pieces by a [`Framing`].
struct StdinReader {
    reader: BufReader<Stdin>,
    framing: Framing,
    /// The start of a piece not yet complete. Kept here, across calls, so that [`Self::next`]
    /// is cancel-safe: a call dropped by `select!` loses nothing it read.
    pending: Vec<u8>,
    ended: bool,
}

impl StdinReader {
    fn new(framing: Framing) -> Self {
        Self {
            reader: BufReader::with_capacity(STDIN_CHUNK, tokio::io::stdin()),
            framing,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The next piece of stdin (delimiter removed), or `None` once it has ended. Cancel-safe.
    async fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.ended {
            return Ok(None);
        }
        match self.framing {
            Framing::Lines | Framing::Nul => {
                let delimiter = if self.framing == Framing::Nul { 0 } else { b'\n' };
                // The count returned covers this call only: when an earlier call was cancelled
                // after reading the start of a last piece that has no delimiter, this one
                // returns 0 at the end of stdin with that start still in `pending`. So
                // `pending` decides.
                self.reader.read_until(delimiter, &mut self.pending).await?;
                if self.pending.is_empty() {
                    self.ended = true;
                    return Ok(None);
                }
                let mut piece = std::mem::take(&mut self.pending);
                if piece.last() == Some(&delimiter) {
                    piece.pop();
                }
                Ok(Some(piece))
            }
            Framing::Chunks => {
                let chunk = self.reader.fill_buf().await?;
                if chunk.is_empty() {
                    self.ended = true;
                    return Ok(None);
                }
                let piece = chunk.to_vec();
                self.reader.consume(piece.len());
                Ok(Some(piece))
            }
            Framing::Whole => loop {
                let chunk = self.reader.fill_buf().await?;
                if chunk.is_empty() {
                    self.ended = true;
                    // Empty stdin is one empty message: "all of stdin" still goes out.
                    return Ok(Some(std::mem::take(&mut self.pending)));
                }
                self.pending.extend_from_slice(chunk);
                let n = chunk.len();
                self.reader.consume(n);
            },
        }
    }
}

/// The message for one piece of stdin; for text lines, a `\r` at the end is dropped.
fn piece_message(piece: Vec<u8>, framing: Framing, binary: bool) -> anyhow::Result<Message> {
    if binary {
        return Ok(Message::binary(piece));
    }
    let mut piece = piece;
    if framing == Framing::Lines && piece.last() == Some(&b'\r') {
        piece.pop();
    }
    let text = String::from_utf8(piece)
        .map_err(|_| anyhow!("stdin is not valid UTF-8 (--binary sends bytes as they are)"))?;
    Ok(Message::text(text))
}

/// 1000, 1001 and a close frame without a code end a session normally.
fn is_normal(frame: Option<&CloseFrame>) -> bool {
    frame.map_or(true, |f| matches!(f.code, CloseCode::NORMAL | CloseCode::GOING_AWAY))
}

/// `CODE REASON`, on one line; 1005 for a close frame without a code (RFC 6455 §7.1.5).
fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => CloseCode::NO_STATUS.to_string(),
        Some(f) => {
            let reason = one_line(f.reason.as_str(), usize::MAX);
            if reason.is_empty() {
                f.code.to_string()
            } else {
                format!("{} {reason}", f.code)
            }
        }
    }
}

/// `text` with its control characters and whitespace runs (newlines included) collapsed to
/// single spaces, trimmed, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let spaced: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut line = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => {
            line.truncate(cut);
            line.push('…');
            line
        }
        None => line,
    }
}

/// How received messages are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputMode {
    /// Text as is, binary as hex, a line each.
    Plain,
    /// Text as is, a line each; binary as its raw bytes with nothing added (`--binary-raw`).
    Raw,
    /// A JSON object per line (`--jsonl`).
    Jsonl,
}

/// Received messages to stdout, flushed after each so that a reader at the other end of a
/// pipe sees it at once.
struct Output {
    writer: BufWriter<StdoutLock<'static>>,
    mode: OutputMode,
}

impl Output {
    fn new(mode: OutputMode) -> Self {
        Self { writer: BufWriter::new(io::stdout().lock()), mode }
    }

    fn write(&mut self, msg: &Message) -> io::Result<()> {
        match (msg, self.mode) {
            (Message::Text(_) | Message::Binary(_), OutputMode::Jsonl) => {
                self.writer.write_all(json_line(msg).as_bytes())?;
            }
            (Message::Text(text), _) => {
                self.writer.write_all(text.as_bytes())?;
                self.writer.write_all(b"\n")?;
            }
            (Message::Binary(data), OutputMode::Raw) => self.writer.write_all(data)?,
            (Message::Binary(data), _) => {
                let mut hex = String::with_capacity(data.len() * 2 + 1);
                for byte in data.iter() {
                    // Writing to a String cannot fail.
                    let _ = write!(hex, "{byte:02x}");
                }
                hex.push('\n');
                self.writer.write_all(hex.as_bytes())?;
            }
            _ => return Ok(()),
        }
        self.writer.flush()
    }
}

/// A data message as one line of JSON, `\n` included: `{"type":"text","data":"…"}` or
/// `{"type":"binary","base64":"…"}`.
fn json_line(msg: &Message) -> String {
    match msg {
        Message::Text(text) => {
            let mut line = String::with_capacity(text.len() + 28);
            line.push_str(r#"{"type":"text","data":"#);
            push_json_string(&mut line, text.as_str());
            line.push_str("}\n");
            line
        }
        Message::Binary(data) => {
            let mut line = String::with_capacity(data.len() / 3 * 4 + 34);
            line.push_str(r#"{"type":"binary","base64":""#);
            push_base64(&mut line, data);
            line.push_str("\"}\n");
            line
        }
        _ => String::new(),
    }
}

/// `text` as a JSON string, quotes included (RFC 8259 §7): `"` and `\` escaped, control
/// characters as short escapes or `\u00XX`, everything else as is (the output is UTF-8).
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `data` in standard base64 with padding (RFC 4648 §4).
fn push_base64(out: &mut String, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// `Name: value`, with the spaces around either trimmed.
fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = raw.split_once(':').ok_or_else(|| "expected 'Name: value'".to_owned())?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    Ok((name, parse_header_value(value.trim())?))
}

fn parse_header_value(raw: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(raw)
        .map_err(|_| format!("{raw:?} is not a header value (visible ASCII, spaces and tabs)"))
}

fn parse_secs(raw: &str) -> Result<Duration, String> {
    raw.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive number of seconds".to_owned())
}

/// Like [`parse_secs`], but 0 is allowed (it turns the option off).
fn parse_secs_or_zero(raw: &str) -> Result<Duration, String> {
    if raw.parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_secs(raw).map_err(|_| "expected a number of seconds (0 for off)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_pieces_become_messages() {
        let check = |piece: &[u8], framing: Framing, binary: bool, expected: Message| {
            let msg = piece_message(piece.to_vec(), framing, binary).unwrap();
            assert_eq!(msg, expected, "{piece:?} {framing:?}");
        };
        check(b"hi", Framing::Lines, false, Message::text("hi"));
        check(b"hi\r", Framing::Lines, false, Message::text("hi"));
        check(b"", Framing::Lines, false, Message::text(""));
        // Only a line loses its "\r".
        check(b"a\r\nb\r", Framing::Nul, false, Message::text("a\r\nb\r"));
        check(b"a\r", Framing::Whole, false, Message::text("a\r"));
        check(b"\x00\xff\r", Framing::Chunks, true, Message::binary(&b"\x00\xff\r"[..]));
        check(b"\xff\r", Framing::Nul, true, Message::binary(&b"\xff\r"[..]));
        assert!(piece_message(b"\xff".to_vec(), Framing::Lines, false).is_err());
    }

    #[test]
    fn headers_parse() {
        let (name, value) = parse_header("X-Token:  abc def ").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-token", "abc def"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("X: bad\nvalue").is_err());
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "soon", "inf", "NaN"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_lines() {
        assert_eq!(json_line(&Message::text("a\"b")), "{\"type\":\"text\",\"data\":\"a\\\"b\"}\n");
        let mut s = String::new();
        push_json_string(&mut s, "\\ \n\r\t\u{1}\u{7f} é\u{2028}");
        assert_eq!(s, r#""\\ \n\r\t\u0001\u007f é\u{2028}""#.replace("\\u{2028}", "\u{2028}"));
        assert_eq!(
            json_line(&Message::binary(&b"\x00\xff"[..])),
            "{\"type\":\"binary\",\"base64\":\"AP8=\"}\n"
        );
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (data, expected) in cases {
            let mut out = String::new();
            push_base64(&mut out, data.as_bytes());
            assert_eq!(out, expected, "{data:?}");
        }
        let mut out = String::new();
        push_base64(&mut out, &[0xfb, 0xff, 0xfe]);
        assert_eq!(out, "+//+");
    }

    #[test]
    fn close_options() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ConnectArgs,
        }
        let args = |code: Option<&str>, reason: Option<&str>| ConnectArgs {
            close_code: code.map(str::to_owned),
            close_reason: reason.map(str::to_owned),
            ..<Cli as clap::Parser>::parse_from(["x", "ws://h/"]).args
        };
        assert_eq!(end_close(&args(None, None)).unwrap(), None);
        let frame = end_close(&args(Some("4001"), Some("bye"))).unwrap().unwrap();
        assert_eq!((frame.code, frame.reason.as_str()), (CloseCode(4001), "bye"));
        let frame = end_close(&args(None, Some("done"))).unwrap().unwrap();
        assert_eq!(frame.code, CloseCode::NORMAL);
        for bad in ["999", "1005", "1006", "1015", "2999", "5000", "70000", "x", ""] {
            assert!(end_close(&args(Some(bad), None)).is_err(), "{bad}");
        }
        assert!(end_close(&args(Some("1000"), Some(&"x".repeat(124)))).is_err());
        assert!(end_close(&args(Some("1000"), Some(&"x".repeat(123)))).is_ok());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let max = Duration::from_secs(30);
        for (attempt, full) in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (1000, 30.0)] {
            for _ in 0..50 {
                let delay = backoff(attempt, max).as_secs_f64();
                assert!((full / 2.0..=full).contains(&delay), "{attempt}: {delay}");
            }
        }
        // Jitter: not the same wait every time.
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(5, max)).collect();
        assert!(waits.len() > 1);
        assert!(backoff(9, Duration::from_secs(1)) <= Duration::from_secs(1));
    }

    #[test]
    fn close_descriptions() {
        let frame = |code, reason| CloseFrame::new(CloseCode(code), reason);
        assert_eq!(describe_close(None), "1005");
        assert_eq!(describe_close(Some(&frame(1000, ""))), "1000");
        assert_eq!(describe_close(Some(&frame(4000, "bye\nnow"))), "4000 bye now");
        assert!(is_normal(None));
        assert!(is_normal(Some(&frame(1001, "going"))));
        assert!(!is_normal(Some(&frame(1011, "oops"))));
    }

    #[test]
    fn one_line_collapses_and_cuts() {
        assert_eq!(one_line("  <h1>No</h1>\r\n\tway \u{7} ", 100), "<h1>No</h1> way");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("é", 1), "é");
    }
}
