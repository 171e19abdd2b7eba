//! Interop for permessage-deflate (RFC 7692) with Python `websockets`, both ways:
//! a wsx echo server started in the test against the Python client, and the wsx client against
//! a Python echo server, with and without context takeover and with windows too small to
//! compress with.
//!
//! The Python side is `tests/interop_deflate.py`, run under `WSX_PYTHON` (default: the
//! workspace's `.venv/bin/python`, which `scripts/test.sh` sets up with `websockets`).
#![cfg(unix)]

mod common;

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    describe, free_addr, lines, log_path, next_line_starting_with, python, read_log, run_logged,
    script, summary, wait_timeout, ChildGuard,
};
use tokio::net::TcpListener;
use wsx::proto::deflate::DeflateConfig;
use wsx::{Accept, ClientBuilder, CloseCode, Config, Message};

/// The Python side of these tests.
const SCRIPT: &str = "interop_deflate.py";

/// Generous bounds so a broken build fails instead of hanging; no test asserts on how fast
/// anything is.
const STARTUP: Duration = Duration::from_secs(30);
const PYTHON_RUN: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Python client → wsx server

#[test]
fn python_client_with_default_deflate_against_wsx_server() {
    // websockets' default offer (`permessage-deflate; client_max_window_bits`, Chromium's too)
    // gets the default answer: no context takeover either way, which it accepts.
    python_client_against_wsx_server("default");
}

#[test]
fn python_client_against_wsx_server_with_context_takeover() {
    python_client_against_server(
        "takeover",
        WsxServer::start(DeflateConfig::default().context_takeover(true)),
    );
}

#[test]
fn python_client_without_context_takeover_against_wsx_server() {
    python_client_against_wsx_server("no-context-takeover");
}

#[test]
fn python_client_limiting_the_server_to_8_bits_gets_uncompressed_frames() {
    // zlib cannot compress with a 256-byte window; the wsx server must send as is, and still
    // inflate what Python compresses with 9 bits.
    python_client_against_wsx_server("server-window-8");
}

/// Runs the Python client in `mode` against a wsx echo server with deflate on by default.
fn python_client_against_wsx_server(mode: &str) {
    python_client_against_server(mode, WsxServer::start(DeflateConfig::default()));
}

/// Runs the Python client in `mode` against `server`.
fn python_client_against_server(mode: &str, server: WsxServer) {
    let url = format!("ws://{}/deflate", server.addr);
    let out = log_path(&format!("deflate-python-client-{mode}"), server.addr.port());
    let mut cmd = Command::new(python());
    cmd.arg(script(SCRIPT)).args(["client", mode, &url]);
    let (status, output) = run_logged(cmd, &out, PYTHON_RUN);
    let report = server.finish();
    assert!(
        status.is_some_and(|s| s.success()),
        "the Python websockets client ({mode}) failed against the wsx server ({}):\n\
         --- client output ---\n{output}\n--- wsx server ---\n{report:?}",
        describe(status),
    );
    let conn = report.unwrap_or_else(|e| panic!("the wsx server: {e}\n--- client ---\n{output}"));
    assert!(
        conn.offer.contains("permessage-deflate"),
        "the Python client did not offer permessage-deflate: {:?}",
        conn.offer
    );
    assert!(conn.echoed > 0, "the wsx server echoed nothing");
    print!("{output}");
}

/// What the wsx server saw of its one connection.
#[derive(Debug)]
struct ServedConnection {
    /// The request's `Sec-WebSocket-Extensions`.
    offer: String,
    echoed: usize,
}

/// A wsx echo server on a loopback port, running on its own tokio runtime, which it takes down
/// when dropped.
struct WsxServer {
    addr: SocketAddr,
    results: mpsc::Receiver<Result<ServedConnection, String>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl WsxServer {
    fn start(deflate: DeflateConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind an ephemeral loopback port");
        let addr = listener.local_addr().expect("the listener's address");
        let (tx, results) = mpsc::channel();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let config = Config::default().deflate(Some(deflate.clone()));
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(echo(tcp, config).await);
                });
            }
        });
        Self { addr, results, runtime: Some(runtime) }
    }

    /// The outcome of the first connection, once it has ended.
    fn finish(&self) -> Result<ServedConnection, String> {
        self.results
            .recv_timeout(STEP)
            .unwrap_or_else(|_| Err("no connection ended on the wsx server".to_owned()))
    }
}

impl Drop for WsxServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Accepts with deflate on and echoes data messages until the peer closes.
async fn echo(tcp: tokio::net::TcpStream, config: Config) -> Result<ServedConnection, String> {
    let offer = Arc::new(Mutex::new(String::new()));
    let seen = offer.clone();
    let mut ws = wsx::accept_with(tcp, config, move |request| {
        let values: Vec<&str> = request
            .headers()
            .get_all("sec-websocket-extensions")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        *seen.lock().unwrap() = values.join(", ");
        Ok(Accept::default())
    })
    .await
    .map_err(|e| format!("handshake: {e}"))?;
    let mut echoed = 0;
    let mut closed = false;
    while let Some(msg) = ws.recv().await {
        match msg.map_err(|e| format!("receive after {echoed} echoes: {e}"))? {
            Message::Close(frame) => {
                closed = frame.is_some_and(|f| f.code == CloseCode::NORMAL);
            }
            m if m.is_data() => {
                ws.send(m).await.map_err(|e| format!("send: {e}"))?;
                echoed += 1;
            }
            _ => {}
        }
    }
    if !closed {
        return Err(format!("no close frame with 1000 after {echoed} echoes"));
    }
    let offer = offer.lock().unwrap().clone();
    Ok(ServedConnection { offer, echoed })
}

// ---------------------------------------------------------------------------------------------
// wsx client → Python server

#[test]
fn wsx_client_with_context_takeover_against_python_server() {
    let takeover = DeflateConfig::default().context_takeover(true);
    let header = wsx_client_against_python_server("default", takeover, true);
    // websockets' defaults: 12-bit windows both ways, context kept.
    assert!(!header.contains("no_context_takeover"), "{header}");
    assert!(header.contains("server_max_window_bits=12"), "{header}");
    assert!(header.contains("client_max_window_bits=12"), "{header}");
}

#[test]
fn wsx_client_asking_for_no_context_takeover_against_python_server() {
    // The default offer asks for no context takeover either way.
    let header = wsx_client_against_python_server("default", DeflateConfig::default(), true);
    assert!(header.contains("server_no_context_takeover"), "{header}");
    assert!(header.contains("client_no_context_takeover"), "{header}");
}

#[test]
fn python_server_imposing_no_context_takeover_on_wsx_client() {
    let takeover = DeflateConfig::default().context_takeover(true);
    let header = wsx_client_against_python_server("no-context-takeover", takeover, true);
    assert!(header.contains("server_no_context_takeover"), "{header}");
    assert!(header.contains("client_no_context_takeover"), "{header}");
}

#[test]
fn wsx_client_asking_for_9_bit_windows_against_python_server() {
    let mut config = DeflateConfig::default();
    config.server_max_window_bits = 9;
    config.client_max_window_bits = 9;
    let header = wsx_client_against_python_server("default", config, true);
    assert!(header.contains("server_max_window_bits=9"), "{header}");
    assert!(header.contains("client_max_window_bits=9"), "{header}");
}

#[test]
fn python_server_limiting_wsx_client_to_8_bits_gets_uncompressed_frames() {
    let header =
        wsx_client_against_python_server("client-window-8", DeflateConfig::default(), false);
    assert!(header.contains("client_max_window_bits=8"), "{header}");
}

/// Runs the wsx client with `deflate` against the Python echo server in `mode`; checks the echo
/// of every message, that the client's frames were compressed exactly when `compresses`, and
/// returns the response's `Sec-WebSocket-Extensions`.
fn wsx_client_against_python_server(
    mode: &str,
    deflate: DeflateConfig,
    compresses: bool,
) -> String {
    let mut server = PythonServer::start(mode);
    let url = format!("ws://{}/deflate", server.addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let sent = Arc::new(Mutex::new(0));
    let client = wsx_client(&url, deflate, sent.clone());
    let result = runtime.block_on(async { tokio::time::timeout(PYTHON_RUN, client).await });
    let header = match result {
        Ok(Ok(header)) => header,
        Ok(Err(e)) => {
            panic!("the wsx client ({mode}): {e}\n--- Python server ---\n{}", server.log())
        }
        Err(_) => {
            panic!("the wsx client ({mode}) timed out\n--- Python server ---\n{}", server.log())
        }
    };
    assert!(header.contains("permessage-deflate"), "no permessage-deflate in {header:?}");

    let stats = server.stats();
    let sent = *sent.lock().unwrap();
    let count = |key: &str| -> usize {
        stats
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in the Python server's {stats:?}"))
    };
    assert_eq!(count("messages"), sent, "messages the Python server echoed: {stats}");
    let (compressed, plain) = (count("compressed"), count("plain"));
    assert_eq!(compressed + plain, sent, "data frames the Python server counted: {stats}");
    if compresses {
        assert_eq!(plain, 0, "the wsx client sent frames without compressing them: {stats}");
    } else {
        // An 8-bit window: zlib cannot compress with it, so wsx sends as is.
        assert_eq!(compressed, 0, "the wsx client compressed with an 8-bit window: {stats}");
    }
    let status = wait_timeout(&mut server.child.0, STEP);
    assert!(
        status.is_some_and(|s| s.success()),
        "the Python server {}:\n{}",
        describe(status),
        server.log()
    );
    header
}

/// The wsx side: connect, echo everything, close. Returns the response's
/// `Sec-WebSocket-Extensions`; counts the data messages sent in `sent`.
async fn wsx_client(
    url: &str,
    deflate: DeflateConfig,
    sent: Arc<Mutex<usize>>,
) -> Result<String, String> {
    let config = Config::default().deflate(Some(deflate));
    let (mut ws, response) = ClientBuilder::new(url)
        .config(config)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let header = response
        .headers()
        .get_all("sec-websocket-extensions")
        .iter()
        .map(|v| v.to_str().unwrap_or("<not UTF-8>").to_owned())
        .collect::<Vec<_>>()
        .join(", ");

    let messages = messages();
    for (i, msg) in messages.iter().enumerate() {
        ws.send(msg.clone()).await.map_err(|e| format!("send message {i}: {e}"))?;
        *sent.lock().unwrap() += 1;
        let echo = next_data(&mut ws).await.map_err(|e| format!("echo of message {i}: {e}"))?;
        if echo != *msg {
            return Err(format!("echo {i} differs: sent {}, got {}", summary(msg), summary(&echo)));
        }
    }
    // A burst: all sent before any echo is read; the order must hold.
    let burst: Vec<Message> = (0..40)
        .map(|i| match i % 2 {
            0 => Message::binary(vec![i as u8; i * 101]),
            _ => Message::text(format!("burst {i} ").repeat(i * 37 % 50)),
        })
        .collect();
    for msg in &burst {
        ws.feed(msg.clone()).await.map_err(|e| format!("feed: {e}"))?;
        *sent.lock().unwrap() += 1;
    }
    ws.flush().await.map_err(|e| format!("flush: {e}"))?;
    for (i, msg) in burst.iter().enumerate() {
        let echo = next_data(&mut ws).await.map_err(|e| format!("burst echo {i}: {e}"))?;
        if echo != *msg {
            return Err(format!("burst echo {i}: sent {}, got {}", summary(msg), summary(&echo)));
        }
    }

    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    let mut reply = None;
    while let Some(msg) = ws.recv().await {
        if let Message::Close(frame) = msg.map_err(|e| format!("after close: {e}"))? {
            reply = frame.map(|f| f.code);
        }
    }
    if reply != Some(CloseCode::NORMAL) {
        return Err(format!("the Python server answered the close with {reply:?}"));
    }
    Ok(header)
}

/// The next data message, skipping pings and pongs; a close or the end is an error.
async fn next_data<S>(ws: &mut wsx::WebSocket<S>) -> Result<Message, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(STEP, ws.recv()).await {
            Err(_) => return Err("timed out".to_owned()),
            Ok(None) => return Err("the connection ended".to_owned()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(m))) if m.is_data() => return Ok(m),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("closed: {frame:?}")),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sizes 0, 100, 64 KiB of JSON-like text (twice, so context takeover has something to refer
/// to), 1 MiB of binary, multi-byte UTF-8 and incompressible bytes.
fn messages() -> Vec<Message> {
    let mut rng = 0x7692_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut json = String::from("[");
    let mut i = 0;
    while json.len() < 64 << 10 {
        let n = next();
        json.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user-{}\",\"text\":\"h\u{e9}llo w\u{f6}rld \u{20ac} \u{1f600}\",\
             \"tags\":[\"a\",\"b\"],\"score\":{}}},",
            n % 1000,
            (n >> 16) % 100_000
        ));
        i += 1;
    }
    json.push(']');
    let mut binary = Vec::with_capacity(1 << 20);
    while binary.len() < 1 << 20 {
        let n = next();
        // Random stretches between runs: compressible, but not trivially.
        binary.extend_from_slice(&n.to_le_bytes());
        binary.extend(std::iter::repeat((n >> 8) as u8).take((n >> 20) as usize % 300));
    }
    binary.truncate(1 << 20);
    let utf8: String = "a\u{e9}\u{20ac}\u{1f600} \u{3042}\u{4e16}\u{754c}".repeat(1000);
    let random: Vec<u8> = (0..1 << 16).map(|_| next() as u8).collect();
    vec![
        Message::text(""),
        Message::binary(Vec::new()),
        Message::text("x".repeat(100)),
        Message::binary((0..100).map(|_| next() as u8).collect::<Vec<u8>>()),
        Message::text(json.clone()),
        Message::text(json),
        Message::binary(binary),
        Message::text(utf8),
        Message::binary(random),
    ]
}

/// A Python `websockets` echo server for one connection, killed when dropped if still running.
struct PythonServer {
    child: ChildGuard,
    addr: SocketAddr,
    /// Lines the script printed after "ready".
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl PythonServer {
    fn start(mode: &str) -> Self {
        let python = python();
        // The port is free when probed but could be taken before Python binds it; retry with a
        // new one in that case.
        let mut last_log = String::new();
        for _ in 0..3 {
            let addr = free_addr();
            let log = log_path(&format!("deflate-python-server-{mode}"), addr.port());
            let stderr = File::create(&log).expect("create the server log file");
            let mut child = Command::new(&python)
                .arg(script(SCRIPT))
                .args(["server", mode, &addr.port().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
            let lines = lines(child.stdout.take().expect("piped stdout"));
            let server = Self { child: ChildGuard(child), addr, lines, log };
            match server.lines.recv_timeout(STARTUP) {
                Ok(line) if line == "ready" => return server,
                Ok(line) => last_log = format!("unexpected output {line:?}\n{}", server.log()),
                Err(_) => last_log = server.log(),
            }
        }
        panic!("the Python websockets server ({mode}) did not start; its log:\n{last_log}");
    }

    /// The "stats …" line printed when the connection ended.
    fn stats(&self) -> String {
        next_line_starting_with(&self.lines, "stats ", STEP).unwrap_or_else(|| {
            panic!("the Python server printed no stats; its log:\n{}", self.log())
        })
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}
