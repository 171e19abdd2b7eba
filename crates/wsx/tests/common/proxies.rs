//! The real proxies the client tests go through: Debian's `tinyproxy` (HTTP `CONNECT`) and
//! `microsocks` (SOCKS5), each started on a free 127.0.0.1 port with its files in a fresh
//! directory under `CARGO_TARGET_TMPDIR`, in the foreground, and killed when dropped.
//!
//! `scripts/test.sh` installs both. When one is missing a test prints a skip line and returns,
//! unless `CI` is set: then it fails. `wsx`'s tests use this file through `common`, and
//! `wsx-cli`'s include it by path.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) const TINYPROXY: &str = "/usr/bin/tinyproxy";
pub(crate) const MICROSOCKS: &str = "/usr/bin/microsocks";

/// How long a proxy may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running proxy.
pub(crate) struct ProxyProcess {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
    dir: PathBuf,
}

impl ProxyProcess {
    /// `scheme://[user:pass@]127.0.0.1:PORT`.
    pub(crate) fn url(&self, scheme: &str, auth: Option<(&str, &str)>) -> String {
        match auth {
            Some((user, pass)) => format!("{scheme}://{user}:{pass}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// What the proxy logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the binary at `path` is there. If not: a skip line on stderr, or a failure when `CI`
/// is set (CI installs it, so missing there is a broken setup, not a reason to skip).
pub(crate) fn available(path: &str) -> bool {
    if Path::new(path).is_file() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{path} is missing and CI is set: scripts/test.sh installs it \
         (apt-get install tinyproxy microsocks)"
    );
    eprintln!("skipped: {path} is not installed (apt-get install tinyproxy microsocks)");
    false
}

/// tinyproxy allowing `CONNECT` to `connect_ports` only, requiring `auth` if given. `None` (after
/// a skip line) when tinyproxy is not installed.
pub(crate) fn tinyproxy(connect_ports: &[u16], auth: Option<(&str, &str)>) -> Option<ProxyProcess> {
    if !available(TINYPROXY) {
        return None;
    }
    Some(start("tinyproxy", |port, dir| {
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\n\
             LogLevel Connect\nLogFile \"{}\"\nPidFile \"{}\"\nDisableViaHeader Yes\n",
            log.display(),
            dir.join("tinyproxy.pid").display()
        );
        for p in connect_ports {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        if let Some((user, pass)) = auth {
            conf.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
        // -d: stay in the foreground, so that killing the child stops it.
        let mut cmd = Command::new(TINYPROXY);
        cmd.arg("-d").arg("-c").arg(conf_path);
        (cmd, log)
    }))
}

/// microsocks, requiring `auth` if given. `None` (after a skip line) when it is not installed.
pub(crate) fn microsocks(auth: Option<(&str, &str)>) -> Option<ProxyProcess> {
    if !available(MICROSOCKS) {
        return None;
    }
    Some(start("microsocks", |port, dir| {
        let mut cmd = Command::new(MICROSOCKS);
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((user, pass)) = auth {
            cmd.args(["-u", user, "-P", pass]);
        }
        (cmd, dir.join("microsocks.log"))
    }))
}

/// Starts the proxy `command(port, dir)` builds (with its log path) on a free port and waits
/// until it listens; tries other ports when another process took the one chosen.
fn start(what: &str, command: impl Fn(u16, &Path) -> (Command, PathBuf)) -> ProxyProcess {
    let mut last_log = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = fresh_dir(what);
        let (mut cmd, log) = command(port, &dir);
        // The child's own output goes to its log too (microsocks writes nowhere else).
        let out = File::create(dir.join("output.log")).expect("create the output log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the output log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let log = if log.ends_with("microsocks.log") { dir.join("output.log") } else { log };
        let mut proxy = ProxyProcess { child, port, log, dir };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if proxy.child.try_wait().expect("poll the proxy").is_some() {
                last_log = std::fs::read_to_string(proxy.dir.join("output.log"))
                    .unwrap_or_default()
                    + &proxy.log();
                break;
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                // The port may belong to someone else who answered this probe while our proxy
                // failed to bind it: give it a moment to exit before trusting the port.
                sleep(Duration::from_millis(100));
                if proxy.child.try_wait().expect("poll the proxy").is_none() {
                    return proxy;
                }
                continue;
            }
            assert!(Instant::now() < deadline, "{what} did not listen on port {port}");
            sleep(Duration::from_millis(20));
        }
    }
    panic!("{what} could not start: {last_log}");
}

/// A new directory under `CARGO_TARGET_TMPDIR`.
fn fresh_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    path
}
