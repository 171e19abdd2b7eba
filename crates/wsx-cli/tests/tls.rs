//! `wsx connect --cacert` against `wsx serve --tls-cert/--tls-key` with the self-signed
//! certificate most people make with one `openssl req -x509` command (OpenSSL 3 marks it
//! CA:TRUE), and the one-line errors for every certificate that must still be refused.
//!
//! The certificates are made by the `openssl` binary at test time, exactly as users make them;
//! no key is stored in the repository.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, HANG_GUARD, WSX};

#[test]
fn a_self_signed_ca_true_certificate_given_with_cacert_is_trusted() {
    let dir = TempDir::new("trusted");
    let (cert, key) =
        openssl_self_signed(&dir.0, "server", "localhost", "DNS:localhost,IP:127.0.0.1");
    let server = serve_tls(&cert, &key);

    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{}/", server.port);
        let run = connect(&["--cacert", path_str(&cert), &url], b"hello\n");
        assert!(run.status.success(), "{host}: {run:?}");
        assert_eq!(run.stdout, "hello\n", "{host}: {run:?}");
        assert_eq!(run.stderr, "", "{host}: {run:?}");
    }
}

#[test]
fn another_self_signed_certificate_as_cacert_is_refused_in_one_line() {
    let dir = TempDir::new("other");
    let (cert, key) =
        openssl_self_signed(&dir.0, "server", "localhost", "DNS:localhost,IP:127.0.0.1");
    let (other, _) =
        openssl_self_signed(&dir.0, "other", "localhost", "DNS:localhost,IP:127.0.0.1");
    let server = serve_tls(&cert, &key);

    let url = format!("wss://localhost:{}/", server.port);
    let run = connect(&["--cacert", path_str(&other), &url], b"hello\n");
    assert!(!run.status.success(), "{run:?}");
    let line = one_error_line(&run);
    assert!(line.contains("not signed by a trusted CA"), "{run:?}");
    assert!(line.contains("--cacert"), "the fix is named: {run:?}");
}

#[test]
fn no_cacert_for_a_self_signed_server_says_how_to_trust_it() {
    let dir = TempDir::new("untrusted");
    let (cert, key) =
        openssl_self_signed(&dir.0, "server", "localhost", "DNS:localhost,IP:127.0.0.1");
    let server = serve_tls(&cert, &key);

    let url = format!("wss://localhost:{}/", server.port);
    let run = connect(&[&url], b"hello\n");
    assert!(!run.status.success(), "{run:?}");
    let line = one_error_line(&run);
    assert!(line.contains("not signed by a trusted CA"), "{run:?}");
    assert!(line.contains("--cacert"), "the fix is named: {run:?}");
}

#[test]
fn a_trusted_self_signed_certificate_for_another_name_is_refused_in_one_line() {
    let dir = TempDir::new("name");
    let (cert, key) =
        openssl_self_signed(&dir.0, "server", "elsewhere.example", "DNS:elsewhere.example");
    let server = serve_tls(&cert, &key);

    for host in ["localhost", "127.0.0.1"] {
        let url = format!("wss://{host}:{}/", server.port);
        let run = connect(&["--cacert", path_str(&cert), &url], b"hello\n");
        assert!(!run.status.success(), "{host}: {run:?}");
        let line = one_error_line(&run);
        assert!(line.contains(&format!("is for elsewhere.example, not {host}")), "{host}: {run:?}");
    }
}

// --- helpers ---------------------------------------------------------------------------------

/// A fresh directory under the target's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("wsx-cli-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `openssl req -x509 -newkey rsa:2048 -nodes -keyout NAME.key -out NAME.pem -days 365
/// -subj /CN=CN -addext subjectAltName=SAN`: the usual self-signed certificate (CA:TRUE with
/// OpenSSL 3). Returns the certificate's and the key's paths.
fn openssl_self_signed(dir: &Path, name: &str, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "365", "-subj", &format!("/CN={cn}"), "-addext"])
        .arg(format!("subjectAltName={san}"))
        .stdin(Stdio::null())
        .output()
        .expect("the openssl binary runs");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn serve_tls(cert: &Path, key: &Path) -> Server {
    Server::start(&["--tls-cert", path_str(cert), "--tls-key", path_str(key)])
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("the target directory's path is UTF-8")
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("status", &self.status)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// Runs `wsx connect ARGS` with `input` on stdin, to completion (killed after [`HANG_GUARD`]).
fn connect(args: &[&str], input: &'static [u8]) -> Run {
    let mut child = Command::new(WSX)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // wsx may exit before reading everything (an error): ignore EPIPE.
    let _ = stdin.write_all(input);
    drop(stdin);
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsx connect {args:?} hung");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// The one line of stderr, which must be a `wsx: error:` line.
fn one_error_line(run: &Run) -> &str {
    let lines: Vec<_> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {run:?}");
    assert!(lines[0].starts_with("wsx: error: "), "{run:?}");
    lines[0]
}
