//! Support code shared by the integration tests of `wsx`: child processes (the released `wsx`
//! binary and the Python `websockets` scripts) and their logs, free loopback ports, the test PKI,
//! a guard that turns a hung async step into a failure, and raw frames for mock peers.
//!
//! Every test file in `tests/` includes this module with `mod common;`, and each of those test
//! binaries uses only a subset of it: without the `allow`, every item a binary leaves unused
//! would warn as dead code there.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use wsx::Message;

pub(crate) mod pki;
pub(crate) mod proxies;
pub(crate) mod raw;

// ---------------------------------------------------------------------------------------------
// Hang guard

/// Generous bound that turns a hang into a failure; no test asserts how fast anything is.
pub(crate) const GUARD: Duration = Duration::from_secs(60);

/// Awaits `f`, panicking with `what` if it makes no progress within [`GUARD`].
pub(crate) async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress within {GUARD:?}"))
}

// ---------------------------------------------------------------------------------------------
// Client round trips

/// Sends each of `msgs`, checks its echo, then closes and reads until the stream ends.
pub(crate) async fn echo_and_close<S>(ws: &mut wsx::WebSocket<S>, msgs: &[Message])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for msg in msgs {
        ws.send(msg.clone()).await.unwrap();
        let got = guard("an echo", ws.recv()).await.expect("stream ended").unwrap();
        assert_eq!(&got, msg);
    }
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = guard("the close", ws.recv()).await {}
}

/// The error connecting with `builder` fails with; panics if it connects.
pub(crate) async fn connect_error(builder: wsx::ClientBuilder) -> wsx::Error {
    match guard("connecting", builder.connect()).await {
        Ok(_) => panic!("connected, but it should have failed"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Kills and reaps the child when dropped (also when a test panics).
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The released `wsx` binary: `WSX_BIN`, or `target/release/wsx`, which `scripts/test.sh`
/// builds with `cargo build --release` before `cargo test`.
pub(crate) fn wsx_binary() -> PathBuf {
    let bin = std::env::var_os("WSX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/wsx"));
    assert!(
        bin.is_file(),
        "{} is missing: these tests run the release binary; build it first with \
         `cargo build --release` (scripts/test.sh does), or point WSX_BIN at it",
        bin.display()
    );
    bin
}

/// The Python with `websockets`: `WSX_PYTHON`, or the workspace's `.venv/bin/python`, which
/// `scripts/test.sh` sets up.
pub(crate) fn python() -> PathBuf {
    let python = std::env::var_os("WSX_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: set WSX_PYTHON to a Python with `websockets` installed, \
         or run scripts/test.sh, which creates .venv",
        python.display()
    );
    python
}

/// The Python script `name` in `tests/` (it imports `interop_common.py` from beside it).
pub(crate) fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// A loopback address with a port that was free when asked.
pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
}

/// The log file for `what` on `port`, under `CARGO_TARGET_TMPDIR`.
pub(crate) fn log_path(what: &str, port: u16) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}-{port}.log"))
}

/// What a child wrote to its log so far; empty if there is no log.
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs `cmd` with stdout and stderr in the file `out` (a file, not a pipe, so a chatty child
/// cannot block on a full pipe while we poll it). Returns the exit status (`None` on timeout,
/// after killing it) and the output.
pub(crate) fn run_logged(
    mut cmd: Command,
    out: &Path,
    limit: Duration,
) -> (Option<ExitStatus>, String) {
    let file = File::create(out).expect("create the output file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone the output file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut guard = ChildGuard(child);
    let status = wait_timeout(&mut guard.0, limit);
    drop(guard);
    (status, read_log(out))
}

/// Waits up to `limit` for `child` to exit; `None` if it did not.
pub(crate) fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

/// How a child ended, for failure messages: "exited with …" or "did not exit in time …".
pub(crate) fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => format!("exited with {s}"),
        None => "did not exit in time and was killed".to_owned(),
    }
}

/// The lines a child prints on `pipe`, as they arrive, read on a thread of their own.
pub(crate) fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The next of `lines` that starts with `prefix`, skipping others; `None` if none arrives within
/// `limit` or the child's output ends first.
pub(crate) fn next_line_starting_with(
    lines: &mpsc::Receiver<String>,
    prefix: &str,
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return Some(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A message's kind and size, for failure messages (never its payload: it may be 1 MiB).
pub(crate) fn summary(m: &Message) -> String {
    match m {
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates on disk

/// The PEM files of a [`Pki`](pki::Pki), in a directory of their own.
#[cfg(unix)]
pub(crate) mod pem_files {
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::pki::Pki;

    impl Pki {
        /// Writes the PEM files into a fresh directory, removed when the result is dropped.
        pub(crate) fn files(&self) -> PemFiles {
            let dir = TempDir::new("interop-tls");
            let ca = dir.write("ca.pem", &self.ca_pem);
            let cert = dir.write("leaf.pem", &self.leaf_pem);
            let key = dir.write("leaf-key.pem", &self.leaf_key_pem);
            PemFiles { ca, cert, key, _dir: dir }
        }
    }

    /// The PEM files of a [`Pki`].
    pub(crate) struct PemFiles {
        pub(crate) ca: PathBuf,
        pub(crate) cert: PathBuf,
        pub(crate) key: PathBuf,
        _dir: TempDir,
    }

    /// A directory under `CARGO_TARGET_TMPDIR` that no other test uses, removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(what: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("{what}-{}-{n}-{nanos}", std::process::id());
            let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
            // create_dir, not create_dir_all: fails rather than reuse an existing directory.
            std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            Self(path)
        }

        /// Writes `contents` to `name`, readable by this user only (it may be a private key).
        pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            file.write_all(contents.as_bytes()).expect("write a PEM file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Examples and raw HTTP

/// The example `name` of this package, built by `cargo test` beside the test binaries
/// (`target/<profile>/examples/`).
pub(crate) fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("examples").join(name))
        .expect("the test binary is in target/<profile>/deps");
    assert!(bin.is_file(), "{} is missing: cargo test builds examples", bin.display());
    bin
}

/// Starts `cmd` (a server that takes its listen address last) on a free loopback port and waits
/// until that port accepts connections. Its output goes to a log named after `what`.
pub(crate) fn start_on_free_port(what: &str, mut cmd: Command) -> (ChildGuard, SocketAddr) {
    let addr = free_addr();
    let log = log_path(what, addr.port());
    let file = File::create(&log).expect("create the log file");
    let child = cmd
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone the log file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + GUARD;
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = guard.0.try_wait().expect("poll the server") {
            panic!("{what} exited with {status} before listening: {}", read_log(&log));
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}: {}", read_log(&log));
        sleep(Duration::from_millis(20));
    }
    (guard, addr)
}

/// Sends `request` (a whole HTTP/1.1 head) over a fresh connection and returns the response's
/// status and its header fields (names lowercase), read up to the end of the head.
pub(crate) fn raw_http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>) {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(GUARD)).expect("set a read timeout");
    tcp.write_all(request.as_bytes()).expect("write the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                panic!("response head cut short ({other:?}): {:?}", String::from_utf8_lossy(&head))
            }
        }
    }
    let head = String::from_utf8(head).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// The value of header `name` (lowercase) in `headers`, if any.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A server and a client WebSocket over an in-memory pipe of `buffer` bytes, already open;
/// with `deflate`, permessage-deflate negotiated without server context takeover (so the
/// server takes the pub/sub hub's shared compressed frames).
pub(crate) fn duplex_pair(
    buffer: usize,
    deflate: bool,
) -> (wsx::WebSocket<tokio::io::DuplexStream>, wsx::WebSocket<tokio::io::DuplexStream>) {
    use wsx::proto::deflate::{self, DeflateConfig};
    use wsx::proto::Connection;
    use wsx::{Config, Role, WebSocket};
    let (a, b) = tokio::io::duplex(buffer);
    if !deflate {
        return (
            WebSocket::from_raw(a, Role::Server, Config::default()),
            WebSocket::from_raw(b, Role::Client, Config::default()),
        );
    }
    let params = deflate::negotiate(
        ["permessage-deflate; server_no_context_takeover"],
        &DeflateConfig::default(),
    )
    .expect("the offer is valid");
    let server = Connection::new(Role::Server, Config::default()).with_deflate(params);
    let client = Connection::new(Role::Client, Config::default()).with_deflate(params);
    (WebSocket::from_connection(a, server, None), WebSocket::from_connection(b, client, None))
}

/// `len` pseudo-random bytes (xorshift; deflate cannot shrink them much), different for each
/// `seed`.
pub(crate) fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
