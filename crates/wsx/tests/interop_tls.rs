//! Interop over TLS with Python `websockets`, both ways:
//!
//! - the wsx client against a Python `wss://` echo server (with and without permessage-deflate,
//!   and without trusting the test CA);
//! - a Python client against the released `wsx serve --tls-cert … --tls-key …` binary: a `wss://`
//!   echo, and the demo page over https fetched with urllib.
//!
//! Each test generates a CA and a leaf for `localhost` and `127.0.0.1` with rcgen and writes the
//! PEM files into a fresh directory under `CARGO_TARGET_TMPDIR`, removed when the test ends; no
//! key material is ever committed.
//!
//! The Python side is `tests/interop_tls.py`, run under `WSX_PYTHON` (default: the workspace's
//! `.venv/bin/python`, which `scripts/test.sh` sets up with `websockets`). The server tests run
//! `target/release/wsx` (override with `WSX_BIN`), which `scripts/test.sh` builds first.
#![cfg(all(unix, feature = "tls"))]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::pem_files::PemFiles;
use common::pki::Pki;
use common::{
    describe, lines, next_line_starting_with, python, read_log, run_logged, script, summary,
    wsx_binary, ChildGuard,
};
use wsx::tls::rustls::{CertificateError, Error as TlsError};
use wsx::{
    ClientBuilder, CloseCode, CloseFrame, Config, Error, MaybeTlsStream, Message, WebSocket,
};

/// The Python side of these tests.
const SCRIPT: &str = "interop_tls.py";

/// Generous bounds so a broken build fails instead of hanging; no test asserts on how fast
/// anything is.
const STARTUP: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_secs(60);
const PYTHON_RUN: Duration = Duration::from_secs(300);

/// Message sizes in bytes: empty, the largest 7-bit length, the smallest 16-bit length, the
/// smallest 64-bit length, and 1 MiB (RFC 6455 §5.2 payload length encodings).
const SIZES: [usize; 5] = [0, 125, 126, 65536, 1 << 20];

// ---------------------------------------------------------------------------------------------
// wsx client → Python websockets server

#[tokio::test]
async fn wsx_client_echoes_through_a_python_wss_server() {
    let (extensions, conn) = wsx_client_against_python_server(Config::default()).await;
    assert_eq!(extensions, "", "nothing was offered, so nothing may be accepted");
    assert_eq!(conn.get("extensions"), "none", "the Python server negotiated: {conn:?}");
}

#[tokio::test]
async fn wsx_client_with_deflate_echoes_through_a_python_wss_server() {
    let config = Config::default().deflate(Some(Default::default()));
    let (extensions, conn) = wsx_client_against_python_server(config).await;
    assert!(
        extensions.contains("permessage-deflate"),
        "the response's Sec-WebSocket-Extensions: {extensions:?}"
    );
    assert_eq!(conn.get("extensions"), "permessage-deflate", "the Python server: {conn:?}");
}

#[tokio::test]
async fn wsx_client_without_the_ca_refuses_the_python_server_certificate() {
    let pki = Pki::generate();
    let server = PythonServer::start(&pki.files());
    let url = format!("wss://localhost:{}/", server.port);
    let result = tokio::time::timeout(STEP, ClientBuilder::new(url).connect())
        .await
        .expect("the connect attempt did not finish in time");
    let err = match result {
        Ok(_) => panic!("connected without trusting the test CA"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("is not signed by a trusted CA"), "{err}");
    assert!(
        matches!(
            &err,
            Error::Tls { error: TlsError::InvalidCertificate(CertificateError::UnknownIssuer), .. }
        ),
        "expected rustls' UnknownIssuer, got {err:?}"
    );
}

/// Connects the wsx client with `config` to a fresh Python `wss://` echo server trusting the test
/// CA, echoes every message, closes with 1000. Returns the response's `Sec-WebSocket-Extensions`
/// and what the Python server reported about the connection.
async fn wsx_client_against_python_server(config: Config) -> (String, ConnReport) {
    let pki = Pki::generate();
    let mut server = PythonServer::start(&pki.files());
    let url = format!("wss://localhost:{}/tls-echo", server.port);
    let builder = ClientBuilder::new(url)
        .add_root_certificates_pem(pki.ca_pem.as_bytes())
        .expect("the generated CA is valid PEM")
        .config(config);
    let (mut ws, response) = match tokio::time::timeout(STEP, builder.connect()).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(e)) => panic!("connect: {e}\n--- Python server ---\n{}", server.log()),
        Err(_) => panic!("connect timed out\n--- Python server ---\n{}", server.log()),
    };
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    match ws.get_ref() {
        MaybeTlsStream::Tls(tls) => {
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]), "ALPN");
        }
        other => panic!("wss:// must use TLS, got {other:?}"),
    }
    let extensions = response
        .headers()
        .get_all("sec-websocket-extensions")
        .iter()
        .map(|v| v.to_str().unwrap_or("<not UTF-8>").to_owned())
        .collect::<Vec<_>>()
        .join(", ");

    let messages = messages();
    for msg in &messages {
        ws.send(msg.clone()).await.unwrap_or_else(|e| panic!("send {}: {e}", summary(msg)));
        let echo = next_message(&mut ws).await;
        assert!(echo == *msg, "echo of {} came back as {}", summary(msg), summary(&echo));
    }

    ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "done"))).await.expect("send the close");
    match next_message(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::NORMAL, "the close reply: {frame:?}")
        }
        other => panic!("expected the close reply, got {}", summary(&other)),
    }
    let end = tokio::time::timeout(STEP, ws.recv()).await.expect("the stream did not end");
    assert!(end.is_none(), "after the close handshake: {end:?}");

    let conn = server.next_connection();
    assert_eq!(conn.get("path"), "/tls-echo", "{conn:?}");
    assert_eq!(conn.get("alpn"), "http/1.1", "{conn:?}");
    assert_eq!(conn.get("messages"), messages.len().to_string(), "echoes: {conn:?}");
    assert_eq!(conn.get("close_code"), "1000", "the close code the server received: {conn:?}");
    (extensions, conn)
}

/// Text with 1- to 4-byte UTF-8 characters and binary, each of every size in [`SIZES`] bytes.
fn messages() -> Vec<Message> {
    let mut out = Vec::new();
    for size in SIZES {
        let mut text = "a\u{e9}\u{20ac}\u{1f600}".repeat(size / 10);
        text.push_str(&"x".repeat(size - text.len()));
        assert_eq!(text.len(), size);
        out.push(Message::text(text));
        let binary: Vec<u8> = (0..size).map(|i| ((i * 7 + i / 251) % 256) as u8).collect();
        out.push(Message::binary(binary));
    }
    out
}

/// The next message, skipping pings and pongs; the end of the stream or an error fails.
async fn next_message(ws: &mut WebSocket<MaybeTlsStream>) -> Message {
    loop {
        match tokio::time::timeout(STEP, ws.recv()).await {
            Err(_) => panic!("no message within {STEP:?}"),
            Ok(None) => panic!("the connection ended"),
            Ok(Some(Err(e))) => panic!("receive: {e}"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(m))) => return m,
        }
    }
}

/// What the Python server printed about one finished connection: its `key=value` pairs.
#[derive(Debug)]
struct ConnReport(Vec<(String, String)>);

impl ConnReport {
    fn parse(line: &str) -> Self {
        let pairs = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self(pairs)
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in the Python server's report {:?}", self.0))
    }
}

/// `interop_tls.py server` on 127.0.0.1 with the leaf certificate; killed when dropped.
struct PythonServer {
    // Field order is drop order: closing stdin asks the script to exit, then the guard kills.
    _stdin: ChildStdin,
    child: ChildGuard,
    port: u16,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl PythonServer {
    fn start(files: &PemFiles) -> Self {
        let python = python();
        let log = log_path("tls-python-server");
        let stderr = File::create(&log).expect("create the server log file");
        let mut child = Command::new(&python)
            .arg(script(SCRIPT))
            .arg("server")
            .arg(&files.cert)
            .arg(&files.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = lines(child.stdout.take().expect("piped stdout"));
        let child = ChildGuard(child);
        let port = match lines.recv_timeout(STARTUP) {
            Ok(line) => line
                .strip_prefix("port ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("unexpected output {line:?}; log:\n{}", read_log(&log))),
            Err(_) => {
                panic!("the Python wss:// server did not start; its log:\n{}", read_log(&log))
            }
        };
        Self { _stdin: stdin, child, port, lines, log }
    }

    /// The report of the next connection to end.
    fn next_connection(&mut self) -> ConnReport {
        if let Some(line) = next_line_starting_with(&self.lines, "conn ", STEP) {
            return ConnReport::parse(&line);
        }
        let status = self.child.0.try_wait();
        panic!("the Python server reported no connection ({status:?}); its log:\n{}", self.log());
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}

// ---------------------------------------------------------------------------------------------
// Python websockets client → `wsx serve` over TLS

#[test]
fn python_client_echoes_through_wsx_serve_over_tls() {
    let pki = Pki::generate();
    let files = pki.files();
    let mut server = WsxServe::start(&files);
    let url = format!("wss://localhost:{}/tls-echo", server.port);
    let mut cmd = Command::new(python());
    cmd.arg(script(SCRIPT)).arg("client").arg(&url).arg(&files.ca).arg(&files.cert);
    let (status, output) = run_logged(cmd, &log_path("tls-python-client"), PYTHON_RUN);
    assert!(
        status.is_some_and(|s| s.success()),
        "the Python websockets client failed against wsx serve over TLS ({}):\n\
         --- client output ---\n{output}\n--- wsx serve log ---\n{}",
        describe(status),
        server.log(),
    );
    assert!(output.contains("ok: closed with 1000"), "the client did not finish:\n{output}");
    server.assert_running();
    print!("{output}");
}

#[test]
fn wsx_serve_sends_the_demo_page_over_https() {
    let pki = Pki::generate();
    let files = pki.files();
    let mut server = WsxServe::start(&files);
    let url = format!("https://localhost:{}/", server.port);
    let mut cmd = Command::new(python());
    cmd.arg(script(SCRIPT)).arg("page").arg(&url).arg(&files.ca);
    let (status, output) = run_logged(cmd, &log_path("tls-python-page"), PYTHON_RUN);
    assert!(
        status.is_some_and(|s| s.success()),
        "fetching {url} with urllib failed ({}):\n--- output ---\n{output}\n\
         --- wsx serve log ---\n{}",
        describe(status),
        server.log(),
    );
    assert!(output.contains("ok: the demo page over https"), "{output}");
    server.assert_running();
    print!("{output}");
}

/// The released `wsx serve` with `--tls-cert` and `--tls-key`, listening on 127.0.0.1 on a port
/// the system picks (read from its log, so no other process can take it first); killed when
/// dropped.
struct WsxServe {
    child: ChildGuard,
    port: u16,
    log: PathBuf,
}

impl WsxServe {
    fn start(files: &PemFiles) -> Self {
        let bin = wsx_binary();
        let log = log_path("tls-wsx-serve");
        let stderr = File::create(&log).expect("create the server log file");
        let child = Command::new(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--threads", "2"])
            .arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key)
            // The "listening on" line is logged at info.
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut server = Self { child: ChildGuard(child), port: 0, log };
        server.port = server.wait_for_port();
        server
    }

    /// Waits for "listening on https://127.0.0.1:PORT/" in the log.
    fn wait_for_port(&mut self) -> u16 {
        const PREFIX: &str = "listening on https://127.0.0.1:";
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            let log = self.log();
            if let Some((_, rest)) = log.split_once(PREFIX) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                return digits.parse().unwrap_or_else(|_| panic!("no port in the log:\n{log}"));
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("wsx serve exited with {status} before listening; its log:\n{log}");
            }
            sleep(Duration::from_millis(20));
        }
        panic!("wsx serve did not log its https:// address; its log:\n{}", self.log());
    }

    fn assert_running(&mut self) {
        let status = self.child.0.try_wait().expect("poll wsx serve");
        assert!(status.is_none(), "wsx serve exited ({status:?}); its log:\n{}", self.log());
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

/// A log file for `what`, unique to this process and call.
fn log_path(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}-{}-{n}.log", std::process::id()))
}
