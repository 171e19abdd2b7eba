//! Interop: the released `wsx serve` binary against Python `websockets`.
//!
//! These tests build nothing: they run `target/release/wsx` (override with
//! `WSX_BIN`), which `scripts/test.sh` builds with `cargo build --release`
//! before `cargo test`. The Python client runs under `WSX_PYTHON` (default:
//! the workspace's `.venv/bin/python`, which `scripts/test.sh` sets up with
//! `websockets` installed).
#![cfg(unix)]

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    free_addr, log_path, python, read_log, run_logged, script, wait_timeout, wsx_binary, ChildGuard,
};

/// Generous bounds so a broken build fails instead of hanging; no test
/// asserts on how fast anything is.
const STARTUP: Duration = Duration::from_secs(15);
const SHUTDOWN: Duration = Duration::from_secs(15);
const PYTHON_RUN: Duration = Duration::from_secs(300);

#[test]
fn python_websockets_client_echo_roundtrip() {
    let server = Server::start();
    let script = script("interop_python.py");
    let url = format!("ws://{}/interop", server.addr);
    let out = log_path("interop-python", server.addr.port());
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(&url);
    let (status, output) = run_logged(cmd, &out, PYTHON_RUN);
    assert!(
        status.is_some_and(|s| s.success()),
        "the Python websockets client failed against wsx serve ({}):\n\
         --- client output ---\n{output}\n--- wsx serve log ---\n{}",
        describe(status),
        server.log(),
    );
    print!("{output}");
}

#[test]
fn serve_returns_html_page_on_plain_get() {
    let server = Server::start();
    let response = http_get(server.addr, "/");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let head_lower = head.to_ascii_lowercase();
    let body_lower = body.to_ascii_lowercase();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET / should answer 200, got:\n{head}\n--- wsx serve log ---\n{}",
        server.log()
    );
    assert!(
        head_lower.lines().any(|l| l.starts_with("content-type:") && l.contains("text/html")),
        "GET / should be served as text/html, got:\n{head}"
    );
    assert!(
        body_lower.contains("<html") || body_lower.contains("<!doctype html"),
        "GET / should return an HTML page, got {} bytes:\n{}",
        body.len(),
        prefix(body, 500)
    );
}

#[test]
fn serve_exits_zero_on_sigint_and_sigterm() {
    for signal in ["INT", "TERM"] {
        let mut server = Server::start();
        let status = server.signal_and_wait(signal);
        assert!(
            status.is_some_and(|s| s.success()),
            "wsx serve should exit 0 on SIG{signal}, but {}\n--- wsx serve log ---\n{}",
            describe(status),
            server.log()
        );
    }
}

/// A running `wsx serve` on a free loopback port, killed when dropped (also
/// when a test panics).
struct Server {
    child: ChildGuard,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start() -> Self {
        let bin = wsx_binary();
        // The port is free when probed but could be taken before the server
        // binds it; retry with a new one in that case.
        let mut last_log = String::new();
        for _ in 0..3 {
            let addr = free_addr();
            let log = log_path("wsx-serve", addr.port());
            let stderr = File::create(&log).expect("create the server log file");
            let child = Command::new(&bin)
                .args(["serve", "--listen", &addr.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut server = Self { child: ChildGuard(child), addr, log };
            if server.wait_until_accepting() {
                return server;
            }
            last_log = server.log();
        }
        panic!("wsx serve did not start accepting connections; its log:\n{last_log}");
    }

    fn wait_until_accepting(&mut self) -> bool {
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                // Still ours: the process that answered has not exited.
                return matches!(self.child.0.try_wait(), Ok(None));
            }
            sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends `SIGNAL` (e.g. "TERM") and waits for the exit; `None` if the
    /// server did not exit in time (the guard then kills it).
    fn signal_and_wait(&mut self, signal: &str) -> Option<ExitStatus> {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.0.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
        wait_timeout(&mut self.child.0, SHUTDOWN)
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}

/// How the child ended, in this file's wording: "it exited with …".
fn describe(status: Option<ExitStatus>) -> String {
    format!("it {}", common::describe(status))
}

/// A plain HTTP/1.1 GET; returns the raw response as (lossy) text.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to wsx serve");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A server that keeps the connection open despite
            // `Connection: close`: judge what arrived.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("reading the response failed: {e}"),
        }
        if body_complete(&response) {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// True once the headers and a `Content-Length` body have fully arrived.
fn body_complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| response.len() >= end + 4 + len)
}

/// At most the first `max` bytes of `s`, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
