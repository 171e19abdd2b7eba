//! Support code shared by the integration tests of the `wsx` binary: `wsx serve` on a free port,
//! and TLS fixtures on disk.
//!
//! Every test file in `tests/` includes this module with `mod common;`, and each of those test
//! binaries uses only a subset of it: without the `allow`, every item a binary leaves unused
//! would warn as dead code there.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// The test CA and leaf are made in one place for the whole workspace: next to the `wsx` crate's
// tests, which use them the most.
#[path = "../../../wsx/tests/common/pki.rs"]
mod pki;

// The real proxies (tinyproxy, microsocks) the client tests go through, started the same way for
// both crates.
#[path = "../../../wsx/tests/common/proxies.rs"]
pub(crate) mod proxies;

// The real brokers (redis-server, nats-server) of the multi-node tests.
pub(crate) mod brokers;

// A raw WebSocket client for hostile or careless client behaviour.
pub(crate) mod raw;

use pki::Pki;

/// The binary under test.
pub(crate) const WSX: &str = env!("CARGO_BIN_EXE_wsx");

/// How long anything may take before the test gives up: a guard against hangs, not an
/// assertion about speed.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(60);

/// `wsx serve` on a free port, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Server {
    /// Starts `wsx serve --listen 127.0.0.1:PORT EXTRA…` and waits until it accepts connections.
    pub(crate) fn start(extra: &[&str]) -> Self {
        // Another socket may take the free port before `wsx serve` binds it; then it exits
        // and the next attempt picks another port.
        for _ in 0..5 {
            if let Some(server) = Self::try_start(extra) {
                return server;
            }
        }
        panic!("wsx serve {extra:?} could not start");
    }

    fn try_start(extra: &[&str]) -> Option<Self> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(WSX)
            .args(["serve", "--listen", &listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if TcpStream::connect(&listen).is_ok() {
                // The port may have gone to another test's server meanwhile, which answered
                // this probe while ours failed to bind: ours then exits at once. Give it a
                // moment to do so before trusting the port.
                thread::sleep(Duration::from_millis(100));
                if child.try_wait().unwrap().is_some() {
                    return None;
                }
                return Some(Self { child, port });
            }
            if started.elapsed() > HANG_GUARD {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wsx serve never listened on {listen}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of a process, in bytes.
pub(crate) fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A port nothing listens on (at the time of asking).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// The TLS test fixtures, generated once per test process into a directory of its own: a CA
/// (`ca.pem`), a certificate for localhost and 127.0.0.1 signed by it (`leaf.pem`,
/// `leaf.key`) and a client certificate it signed (`client.pem`, `client.key`). Once per process because tests run in parallel: a second set written to the
/// same directory would pair one test's leaf with another's CA. Keys are made anew on every
/// run; none is stored in the repository.
pub(crate) fn tls_fixtures() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("wsx-connect-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki::generate();
        std::fs::write(dir.join("ca.pem"), pki.ca_pem).unwrap();
        std::fs::write(dir.join("leaf.pem"), pki.leaf_pem).unwrap();
        std::fs::write(dir.join("leaf.key"), pki.leaf_key_pem).unwrap();
        std::fs::write(dir.join("client.pem"), pki.client_pem).unwrap();
        std::fs::write(dir.join("client.key"), pki.client_key_pem).unwrap();
        dir
    })
    .clone()
}

/// An HTTP response from the server.
pub(crate) struct Response {
    pub(crate) status: u16,
    /// The head, lower-cased.
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
    /// Bytes after the body.
    pub(crate) rest: Vec<u8>,
}

impl Response {
    /// Parses the response at the start of `bytes`.
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no complete response head in {text:?}"))
            + 4;
        let head = String::from_utf8(bytes[..end].to_vec()).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 "), "not a response: {text:?}");
        let status = head[9..12].parse().unwrap();
        let mut response = Self { status, head, body: Vec::new(), rest: Vec::new() };
        // A response to HEAD declares the length of a body it does not carry.
        let body_end = (end + response.content_length()).min(bytes.len());
        response.body = bytes[end..body_end].to_vec();
        response.rest = bytes[body_end..].to_vec();
        response
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then_some(v.trim())
        })
    }

    pub(crate) fn has_header(&self, name: &str, value: &str) -> bool {
        self.header(name) == Some(value)
    }

    pub(crate) fn content_length(&self) -> usize {
        self.header("content-length").map_or(0, |v| v.parse().unwrap())
    }
}

/// The head as text, and the body and what follows it by length and start: a page or a large
/// body would drown the failure message.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned();
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("head", &self.head)
            .field("body", &format_args!("{} bytes: {:?}…", self.body.len(), start(&self.body)))
            .field("rest", &format_args!("{} bytes: {:?}…", self.rest.len(), start(&self.rest)))
            .finish()
    }
}

/// The Python with `websockets`: `WSX_PYTHON`, or the workspace's `.venv/bin/python`, which
/// `scripts/test.sh` sets up.
pub(crate) fn python() -> PathBuf {
    let python = std::env::var_os("WSX_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
    });
    assert!(python.is_file(), "{} is missing: run scripts/test.sh", python.display());
    python
}
