//! Real brokers for the multi-node tests: Debian's `redis-server` and `nats-server`, each on a
//! free 127.0.0.1 port with its files in a fresh directory under `CARGO_TARGET_TMPDIR`, in the
//! foreground, killed when dropped; [`BrokerProcess::kill`] and [`BrokerProcess::restart`]
//! (same port) make an outage. What the broker holds is read from the broker itself: Redis
//! `PUBSUB CHANNELS` over a raw RESP socket, NATS's monitoring endpoint (`/connz?subs=1`).
//!
//! `scripts/test.sh` installs both. When one is missing a test prints a skip line and returns,
//! unless `CI` is set: then it fails. `wsx-cli`'s tests use this file through `common`, and
//! `wsx-broker`'s include it by path.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub(crate) const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// How long a broker may take to listen.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerKind {
    Redis,
    Nats,
}

/// A running (or killed, until restarted) broker.
pub(crate) struct BrokerProcess {
    pub(crate) kind: BrokerKind,
    child: Option<Child>,
    pub(crate) port: u16,
    /// NATS's monitoring port.
    monitor: u16,
    dir: PathBuf,
    /// More arguments for the broker (credentials, say).
    extra: Vec<String>,
    /// Redis: what this file's own commands send as `AUTH` first (password, or user and
    /// password), when the broker wants it.
    auth: Vec<String>,
}

impl BrokerProcess {
    /// The broker, or `None` (after a skip line) when it is not installed.
    pub(crate) fn start(kind: BrokerKind) -> Option<Self> {
        Self::start_with(kind, &[], &[])
    }

    /// The broker started with `extra` arguments (`--requirepass P`, `--user U --pass P`);
    /// Redis: `auth` are the arguments of the `AUTH` this file's own commands send first.
    pub(crate) fn start_with(kind: BrokerKind, extra: &[&str], auth: &[&str]) -> Option<Self> {
        let path = match kind {
            BrokerKind::Redis => REDIS_SERVER,
            BrokerKind::Nats => NATS_SERVER,
        };
        if !available(path) {
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "broker-{kind:?}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Self {
            kind,
            child: None,
            port: free_port(),
            monitor: free_port(),
            dir,
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
            auth: auth.iter().map(|&a| a.to_owned()).collect(),
        };
        broker.restart();
        Some(broker)
    }

    /// `redis://127.0.0.1:PORT` or `nats://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        self.url_as("")
    }

    /// The URL with `userinfo` (`user:pass`, `:pass`) before the host.
    pub(crate) fn url_as(&self, userinfo: &str) -> String {
        let at = if userinfo.is_empty() { "" } else { "@" };
        match self.kind {
            BrokerKind::Redis => format!("redis://{userinfo}{at}127.0.0.1:{}", self.port),
            BrokerKind::Nats => format!("nats://{userinfo}{at}127.0.0.1:{}", self.port),
        }
    }

    /// Kills the broker (SIGKILL: no goodbye to its clients) and waits for it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker (again) on its port and waits until it answers.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("broker.log")).unwrap();
        let port = self.port.to_string();
        let mut command = match self.kind {
            BrokerKind::Redis => {
                let mut c = Command::new(REDIS_SERVER);
                c.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--daemonize", "no", "--protected-mode", "yes", "--dir"])
                .arg(&self.dir);
                c
            }
            BrokerKind::Nats => {
                let mut c = Command::new(NATS_SERVER);
                c.args(["-a", "127.0.0.1", "-p", &port, "-m", &self.monitor.to_string()]);
                c
            }
        };
        let child = command
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} did not start: {e}", self.kind));
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{:?} exited ({status}):\n{}", self.kind, self.log());
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "{:?} never answered:\n{}",
                self.kind,
                self.log()
            );
            sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        match self.kind {
            BrokerKind::Redis => self.resp(&["PING"]).is_ok_and(|r| r == ["PONG"]),
            BrokerKind::Nats => {
                http_get(self.monitor, "/varz").is_ok()
                    && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
            }
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the broker: a stopped broker is a slow one.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// What the broker logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// Whether any client is subscribed at the broker to `channel` (Redis channel, NATS
    /// subject).
    pub(crate) fn has_subscription(&self, channel: &str) -> bool {
        match self.kind {
            BrokerKind::Redis => self
                .resp(&["PUBSUB", "CHANNELS", channel])
                .unwrap_or_else(|e| panic!("PUBSUB CHANNELS: {e}"))
                .iter()
                .any(|c| c == channel),
            BrokerKind::Nats => {
                let body = http_get(self.monitor, "/connz?subs=1&limit=1000")
                    .unwrap_or_else(|e| panic!("/connz: {e}"));
                body.contains(&format!("\"{channel}\""))
            }
        }
    }

    /// How many clients are subscribed at the broker to `channel` (Redis `PUBSUB NUMSUB`;
    /// NATS: the client connections listing the subject in `/connz?subs=1`).
    pub(crate) fn subscribers(&self, channel: &str) -> usize {
        match self.kind {
            BrokerKind::Redis => self
                .resp(&["PUBSUB", "NUMSUB", channel])
                .unwrap_or_else(|e| panic!("PUBSUB NUMSUB: {e}"))
                .get(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            BrokerKind::Nats => {
                let body = http_get(self.monitor, "/connz?subs=1&limit=1000")
                    .unwrap_or_else(|e| panic!("/connz: {e}"));
                body.matches(&format!("\"{channel}\"")).count()
            }
        }
    }

    /// NATS: how many client connections the broker accepted since it (re)started, the
    /// closed ones included (`/varz` `total_connections`).
    pub(crate) fn total_connections(&self) -> usize {
        let body = http_get(self.monitor, "/varz").unwrap_or_else(|e| panic!("/varz: {e}"));
        number_after(&body, "\"total_connections\":").unwrap_or_else(|| panic!("{body}"))
    }

    /// How many subscriptions the broker's clients hold, all together.
    pub(crate) fn subscription_count(&self) -> usize {
        match self.kind {
            BrokerKind::Redis => self.resp(&["PUBSUB", "CHANNELS"]).map_or(0, |c| c.len()),
            BrokerKind::Nats => {
                // Per client connection: /subsz's total has the server's own (system account)
                // subscriptions in it too.
                let body = http_get(self.monitor, "/connz?limit=100000").unwrap_or_default();
                let key = "\"subscriptions\":";
                body.match_indices(key).filter_map(|(i, _)| number_after(&body[i..], key)).sum()
            }
        }
    }

    /// One Redis command, after `AUTH` if the broker wants it.
    pub(crate) fn resp(&self, args: &[&str]) -> std::io::Result<Vec<String>> {
        let auth: Vec<&str> = self.auth.iter().map(String::as_str).collect();
        resp_as(self.port, &auth, args)
    }

    /// How many clients are connected to the broker (Redis `CLIENT LIST` without this
    /// file's own connection; NATS `/connz`).
    pub(crate) fn client_count(&self) -> usize {
        match self.kind {
            BrokerKind::Redis => self
                .resp(&["CLIENT", "LIST"])
                .map_or(0, |l| l.concat().lines().count().saturating_sub(1)),
            BrokerKind::Nats => {
                let body = http_get(self.monitor, "/connz").unwrap_or_default();
                number_after(&body, "\"num_connections\":").unwrap_or(0)
            }
        }
    }

    /// Waits (bounded) until `done` holds.
    pub(crate) fn wait_for(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(started.elapsed() < START_LIMIT, "{:?}: never {what}", self.kind);
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
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
         (apt-get install redis-server nats-server)"
    );
    eprintln!("skipped: {path} is not installed (apt-get install redis-server nats-server)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

/// The number after `key` in `body` (a JSON field).
fn number_after(body: &str, key: &str) -> Option<usize> {
    let rest = body[body.find(key)? + key.len()..].trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// One Redis command over a fresh connection; the reply as a list of strings (a simple or
/// bulk string is a list of one).
pub(crate) fn resp(port: u16, args: &[&str]) -> std::io::Result<Vec<String>> {
    resp_as(port, &[], args)
}

/// [`resp`], after `AUTH auth…` unless `auth` is empty.
pub(crate) fn resp_as(port: u16, auth: &[&str], args: &[&str]) -> std::io::Result<Vec<String>> {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let command = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    };
    let mut reader = BufReader::new(tcp.try_clone()?);
    if !auth.is_empty() {
        let mut line = vec!["AUTH"];
        line.extend_from_slice(auth);
        tcp.write_all(command(&line).as_bytes())?;
        let mut reply = String::new();
        reader.read_line(&mut reply)?;
        if reply.trim_end() != "+OK" {
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, reply));
        }
    }
    tcp.write_all(command(args).as_bytes())?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end().to_owned();
    let bulk = |reader: &mut BufReader<TcpStream>, len: usize| -> std::io::Result<String> {
        let mut buf = vec![0; len + 2];
        reader.read_exact(&mut buf)?;
        buf.truncate(len);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match line.as_bytes().first() {
        Some(b'+') => Ok(vec![line[1..].to_owned()]),
        Some(b':') => Ok(vec![line[1..].to_owned()]),
        Some(b'$') => {
            let len: usize = line[1..].parse().map_err(|_| bad(&line))?;
            Ok(vec![bulk(&mut reader, len)?])
        }
        Some(b'*') => {
            let n: usize = line[1..].parse().map_err(|_| bad(&line))?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let mut head = String::new();
                reader.read_line(&mut head)?;
                if let Some(number) = head.trim_end().strip_prefix(':') {
                    out.push(number.to_owned());
                    continue;
                }
                let len: usize = head
                    .trim_end()
                    .get(1..)
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| bad(&head))?;
                out.push(bulk(&mut reader, len)?);
            }
            Ok(out)
        }
        _ => Err(bad(&line)),
    }
}

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.0, read to the end).
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    tcp.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_owned())
        }
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, out)),
    }
}
