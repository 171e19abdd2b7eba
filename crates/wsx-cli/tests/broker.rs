//! Two `wsx serve --pubsub --broker` nodes on one real broker, Redis and NATS: fan-out across
//! nodes exactly once and in each publisher's order (WebSocket and `POST /publish`), a topic
//! with subscribers on one node only, the broker subscription gone after the last subscriber
//! leaves (checked at the broker), and the broker killed and restarted mid-test.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::brokers::{BrokerKind, BrokerProcess};
use common::{free_port, HANG_GUARD, WSX};
use wsx::{MaybeTlsStream, Message, WebSocket};

const TOKEN: &str = "t0ken";
const MESSAGES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_through_redis() {
    let Some(broker) = BrokerProcess::start(BrokerKind::Redis) else { return };
    two_nodes(broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_through_nats() {
    let Some(broker) = BrokerProcess::start(BrokerKind::Nats) else { return };
    two_nodes(broker).await;
}

#[test]
fn a_bad_broker_url_is_a_one_line_error() {
    for (url, expected) in [
        ("http://127.0.0.1:1", "unsupported broker scheme \"http\""),
        ("redis//nope", "invalid broker URL"),
        // Parsed as a URL, refused by the Redis client: the database is not a number.
        ("redis://127.0.0.1:1/nope", "invalid broker URL"),
        // The same with credentials: they are not in the message.
        ("redis://user:s3cret@127.0.0.1:1/nope", "--broker redis://user:***@127.0.0.1:1/nope"),
        ("http://s3cret@127.0.0.1:1", "--broker http://***@127.0.0.1:1"),
    ] {
        let out = Command::new(WSX)
            .args(["serve", "--listen", "127.0.0.1:0", "--pubsub", "--broker", url])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: started");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{url}: a secret shown: {stderr}");
    }
}

async fn two_nodes(mut broker: BrokerProcess) {
    let kind = broker.kind;
    let url = broker.url();
    let mut a = Node::start(&url);
    let mut b = Node::start(&url);
    a.wait_connected(0);
    b.wait_connected(0);

    // Subscribers: two on A, two on B, and one of another topic on B only.
    let mut subs = Vec::new();
    for node in [&a, &a, &b, &b] {
        subs.push(node.ws("room").await);
    }
    let mut solo = b.ws("solo").await;
    broker.wait_for("subscribed room and solo", |br| {
        br.has_subscription("wsx.room") && br.has_subscription("wsx.solo")
    });

    // 500 over a WebSocket to A (the publisher is a subscriber too, and gets its own), then
    // 500 over POST /publish on A.
    let mut publisher = a.ws("room").await;
    broker.wait_for("two nodes on room", |_| a.stats().contains("\"subscriptions\":3"));
    for i in 0..MESSAGES / 2 {
        publisher.send(Message::text(format!("ws-{i}"))).await.unwrap();
    }
    let mut http = Http::new(a.port);
    for i in 0..MESSAGES / 2 {
        let reply = http.post("room", &format!("http-{i}"));
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    subs.push(publisher);
    for (n, ws) in subs.iter_mut().enumerate() {
        let got = recv_n(ws, MESSAGES).await;
        assert_in_order(&got, "ws-", MESSAGES / 2, n);
        assert_in_order(&got, "http-", MESSAGES / 2, n);
        assert_nothing_more(ws).await;
    }

    // A has no subscriber of "solo": its publishes still reach B's.
    for i in 0..100 {
        let reply = http.post("solo", &format!("solo-{i}"));
        assert!(reply.contains("\"delivered\":0"), "{reply}");
    }
    let got = recv_n(&mut solo, 100).await;
    assert_eq!(got, (0..100).map(|i| format!("solo-{i}")).collect::<Vec<_>>());

    // The last subscriber of "solo" leaves B: B unsubscribes at the broker.
    solo.close(None).await.unwrap();
    drop(solo);
    broker.wait_for("unsubscribed solo", |br| !br.has_subscription("wsx.solo"));
    assert!(broker.has_subscription("wsx.room"));

    // The broker dies: local fan-out goes on, nothing crosses, both nodes say so.
    broker.kill();
    a.wait_disconnected();
    b.wait_disconnected();
    for i in 0..50 {
        let reply = http.post("room", &format!("outage-{i}"));
        assert!(reply.contains("\"delivered\":3"), "{reply}");
    }
    for ws in &mut subs[..2] {
        let got = recv_n(ws, 50).await;
        assert_eq!(got, (0..50).map(|i| format!("outage-{i}")).collect::<Vec<_>>());
    }
    assert!(a.stats().contains("\"connected\":false"), "{}", a.stats());

    // Back: cross-node delivery resumes by itself.
    broker.restart();
    let back = Instant::now();
    let mut probes = 0;
    let first = loop {
        probes += 1;
        http.post("room", &format!("probe-{probes}"));
        match tokio::time::timeout(Duration::from_millis(50), subs[2].recv()).await {
            Ok(Some(Ok(Message::Text(t)))) => break t.to_string(),
            Ok(other) => panic!("B's subscriber: {other:?}"),
            Err(_) => assert!(back.elapsed() < HANG_GUARD, "no cross-node delivery after restart"),
        }
    };
    let resumed = back.elapsed();
    eprintln!(
        "{kind:?}: cross-node delivery resumed {:.0} ms after the broker was back ({probes} probes)",
        resumed.as_secs_f64() * 1000.0
    );
    assert!(first.starts_with("probe-"), "B got {first:?}: an outage message crossed");
    a.wait_connected(1);
    b.wait_connected(1);
    for node in [&mut a, &mut b] {
        let stats = node.stats();
        assert!(stats.contains("\"reconnects\":1"), "{stats}");
        assert!(!node.exited(), "a node exited");
        let log = node.log();
        let warned = log.matches("unreachable").count();
        assert_eq!(warned, 1, "the outage is logged once:\n{log}");
    }
    assert!(a.stats().contains(&format!(
        "\"kind\":\"{}\"",
        if kind == BrokerKind::Redis { "redis" } else { "nats" }
    )));
}

/// Reads `n` text messages (bounded).
async fn recv_n(ws: &mut WebSocket<MaybeTlsStream>, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(HANG_GUARD, ws.recv()).await {
            Ok(Some(Ok(Message::Text(t)))) => out.push(t.to_string()),
            other => panic!("after {} of {n} messages: {other:?}", out.len()),
        }
    }
    out
}

/// Nothing more arrives within a moment: each message came once.
async fn assert_nothing_more(ws: &mut WebSocket<MaybeTlsStream>) {
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), ws.recv()).await {
        panic!("a message too many: {extra:?}");
    }
}

/// `got` holds `prefix0..prefix{n-1}` in order (among other messages).
fn assert_in_order(got: &[String], prefix: &str, n: usize, subscriber: usize) {
    let mine: Vec<&str> = got.iter().filter_map(|m| m.strip_prefix(prefix)).collect();
    let expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(mine, expected, "subscriber {subscriber}, {prefix}");
}

/// A `wsx serve --pubsub --broker URL` process, its stderr in a file; killed when dropped.
struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Node {
    fn start(broker: &str) -> Self {
        Self::start_with(broker, &[])
    }

    /// [`Self::start`] with `extra` arguments for `wsx serve`.
    fn start_with(broker: &str, extra: &[&str]) -> Self {
        for attempt in 0..5 {
            let port = free_port();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("node-{}-{port}-{attempt}.log", std::process::id()));
            let listen = format!("127.0.0.1:{port}");
            let mut child = Command::new(WSX)
                .args(["serve", "--listen", &listen, "--pubsub", "--publish-token", TOKEN])
                .args(["--broker", broker])
                .args(extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() && started.elapsed() < HANG_GUARD {
                if TcpStream::connect(&listen).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                    if child.try_wait().unwrap().is_none() {
                        return Self { child, port, log };
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("wsx serve --broker {broker} never listened");
    }

    async fn ws(&self, topic: &str) -> WebSocket<MaybeTlsStream> {
        let url = format!("ws://127.0.0.1:{}/{topic}", self.port);
        tokio::time::timeout(HANG_GUARD, wsx::connect(&url)).await.unwrap().unwrap().0
    }

    fn stats(&self) -> String {
        let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        tcp.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        out
    }

    fn wait_connected(&self, reconnects: u64) {
        self.wait(&format!(
            "\"connected\":true,\"outages\":{reconnects},\"reconnects\":{reconnects}"
        ));
    }

    fn wait_disconnected(&self) {
        self.wait("\"connected\":false");
    }

    fn wait(&self, needle: &str) {
        let started = Instant::now();
        loop {
            let stats = self.stats();
            if stats.contains(needle) {
                return;
            }
            assert!(started.elapsed() < HANG_GUARD, "never {needle}: {stats}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// POST /publish/TOPIC over one kept-alive connection.
struct Http {
    tcp: TcpStream,
}

impl Http {
    fn new(port: u16) -> Self {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        Self { tcp }
    }

    /// The response head and body.
    fn post(&mut self, topic: &str, body: &str) -> String {
        let request = format!(
            "POST /publish/{topic} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.tcp.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(self.tcp.read(&mut byte).unwrap(), 1, "the server closed");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.tcp.read_exact(&mut body).unwrap();
        head + &String::from_utf8_lossy(&body)
    }
}

/// Credentials from the URL: `redis://:PASS@` (the default user's `requirepass`) and
/// `redis://USER:PASS@` (an ACL user) join; a wrong password and none at all are refused,
/// logged once as refused credentials, counted at every retry, and a node that was refused
/// joins by itself once the broker takes its password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_credentials_from_the_url() {
    let extra = ["--requirepass", "s3cret", "--user", "alice", "on", ">alic3", "~*", "&*", "+@all"];
    let Some(broker) = BrokerProcess::start_with(BrokerKind::Redis, &extra, &["s3cret"]) else {
        return;
    };
    let a = Node::start(&broker.url_as(":s3cret"));
    let b = Node::start(&broker.url_as("alice:alic3"));
    let wrong = Node::start(&broker.url_as(":wr0ng"));
    let none = Node::start(&broker.url());
    joined_and_refused(&broker, [&a, &b], [&wrong, &none], "s3cret").await;
    for node in [&wrong, &none] {
        let error = broker_field(&node.stats(), "last_error");
        assert!(error.contains("uthenticat"), "{error}");
    }

    // The broker takes the wrong password too from now on: that node joins, no restart.
    broker.resp(&["ACL", "SETUSER", "default", ">wr0ng"]).unwrap();
    wrong.wait("\"connected\":true,\"outages\":1,\"reconnects\":0");
    let mut on_wrong = wrong.ws("room").await;
    // A and B have no subscribers left: the one subscriber of room at the broker is this node.
    broker.wait_for("the fixed node on room", |br| {
        br.resp(&["PUBSUB", "NUMSUB", "wsx.room"]).unwrap() == ["wsx.room", "1"]
    });
    Http::new(a.port).post("room", "after the fix");
    assert_eq!(recv_n(&mut on_wrong, 1).await, ["after the fix"]);
    assert_eq!(broker_field(&none.stats(), "connected"), "false");
}

/// Credentials from the URL for NATS (`--user U --pass P`, `nats://U:P@`): two nodes join; a
/// wrong password and none at all are refused, logged once, counted at every retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_from_the_url() {
    let extra = ["--user", "wsx", "--pass", "n4ts"];
    let Some(broker) = BrokerProcess::start_with(BrokerKind::Nats, &extra, &[]) else { return };
    let a = Node::start(&broker.url_as("wsx:n4ts"));
    let b = Node::start(&broker.url_as("wsx:n4ts"));
    let wrong = Node::start(&broker.url_as("wsx:wr0ng"));
    let none = Node::start(&broker.url());
    joined_and_refused(&broker, [&a, &b], [&wrong, &none], "n4ts").await;
    for node in [&wrong, &none] {
        let error = broker_field(&node.stats(), "last_error");
        assert!(error.contains("authorization violation"), "{error}");
    }
    // The refused nodes are not connected at the broker, only A and B (waited for: a refused
    // node's attempt is there for a moment until the broker turns it away).
    broker.wait_for("only A and B connected", |br| br.client_count() == 2);
}

/// A NATS token from the URL (`--auth T`, `nats://T@`), percent-decoded; a wrong one refused.
#[test]
fn nats_token_from_the_url() {
    let Some(broker) = BrokerProcess::start_with(BrokerKind::Nats, &["--auth", "t/k"], &[]) else {
        return;
    };
    let good = Node::start(&broker.url_as("t%2Fk"));
    let wrong = Node::start(&broker.url_as("t%2Fx"));
    good.wait_connected(0);
    wait_failed_connects(&wrong, 2);
    assert_eq!(broker_field(&wrong.stats(), "connected"), "false");
    assert_eq!(wrong.log().matches("refused the credentials").count(), 1, "{}", wrong.log());
    // The token is neither in /stats (unauthenticated) nor in the log, decoded or not.
    for (node, token) in [(&good, "t/k"), (&wrong, "t/x")] {
        let (stats, log) = (node.stats(), node.log());
        let url = broker_field(&stats, "url");
        assert!(url.starts_with("nats://***@127.0.0.1:"), "{stats}");
        assert!(log.contains("nats://***@127.0.0.1:"), "{log}");
        for secret in [token.to_owned(), token.replace('/', "%2F")] {
            assert!(!stats.contains(&secret), "the token in /stats: {stats}");
            assert!(!log.contains(&secret), "the token in the log: {log}");
        }
    }
}

/// Messages from the broker are held to the node's `--max-message-size`: one larger (a
/// `PUBLISH` over raw RESP, as from redis-cli) is dropped and counted in `/stats`, a broken
/// envelope too; the node goes on delivering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_messages_are_held_to_the_node_limits() {
    let Some(broker) = BrokerProcess::start(BrokerKind::Redis) else { return };
    let node = Node::start_with(&broker.url(), &["--max-message-size", "1000"]);
    node.wait_connected(0);
    let mut ws = node.ws("room").await;
    broker.wait_for("subscribed", |br| br.subscribers("wsx.room") == 1);
    for data in [&"x".repeat(100_000), "wsx\x01t1234", "within the limit"] {
        assert_eq!(broker.resp(&["PUBLISH", "wsx.room", data]).unwrap(), ["1"]);
    }
    assert_eq!(recv_n(&mut ws, 1).await, ["within the limit"]);
    let stats = node.stats();
    assert_eq!(broker_field(&stats, "too_large"), "1", "{stats}");
    assert_eq!(broker_field(&stats, "malformed"), "1", "{stats}");
    assert_eq!(broker_field(&stats, "received"), "1", "{stats}");
    assert_eq!(broker_field(&stats, "connected"), "true", "{stats}");
}

/// `good` nodes carry messages both ways through the broker and hide the password in
/// `/stats`; `refused` nodes stay down with their failure logged once, counted at every
/// retry, and go on with local fan-out.
async fn joined_and_refused(
    broker: &BrokerProcess,
    good: [&Node; 2],
    refused: [&Node; 2],
    password: &str,
) {
    let [a, b] = good;
    a.wait_connected(0);
    b.wait_connected(0);
    let mut on_a = a.ws("room").await;
    let mut on_b = b.ws("room").await;
    broker.wait_for("both nodes on room", |_| {
        a.stats().contains("\"topics\":1") && b.stats().contains("\"topics\":1")
    });
    broker.wait_for("subscribed room", |br| br.has_subscription("wsx.room"));
    // Through the broker, both ways, in order (each also gets its own from the local fan-out;
    // nothing orders A's messages against B's, so B speaks once A's have arrived).
    for (from, prefix) in [(a, "a"), (b, "b")] {
        let mut http = Http::new(from.port);
        for i in 0..10 {
            http.post("room", &format!("{prefix}{i}"));
        }
        let expected: Vec<String> = (0..10).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(recv_n(&mut on_a, 10).await, expected);
        assert_eq!(recv_n(&mut on_b, 10).await, expected);
    }
    for node in [a, b] {
        let stats = node.stats();
        assert_eq!(broker_field(&stats, "published"), "10", "{stats}");
        assert_eq!(broker_field(&stats, "received"), "10", "{stats}");
        assert_eq!(broker_field(&stats, "failed_connects"), "0", "{stats}");
        assert!(!stats.contains(password), "the password in /stats: {stats}");
        assert!(broker_field(&stats, "url").contains(":***@"), "{stats}");
    }

    for node in refused {
        // Retried with backoff (100 ms, 200 ms, ...): a few attempts within seconds, one
        // outage, one log line, no password in either.
        wait_failed_connects(node, 3);
        let stats = node.stats();
        assert_eq!(broker_field(&stats, "connected"), "false", "{stats}");
        assert_eq!(broker_field(&stats, "outages"), "1", "{stats}");
        assert_eq!(broker_field(&stats, "reconnects"), "0", "{stats}");
        let log = node.log();
        assert_eq!(log.matches("refused the credentials").count(), 1, "{log}");
        assert_eq!(log.matches("unreachable").count(), 0, "{log}");
        assert!(!log.contains("wr0ng") && !stats.contains("wr0ng"), "a password shown: {log}");
        // Local fan-out goes on; the publish is dropped for the other nodes and counted.
        let mut local = node.ws("room").await;
        node.wait("\"subscriptions\":1");
        let reply = Http::new(node.port).post("room", "local only");
        assert!(reply.contains("\"delivered\":1"), "{reply}");
        assert_eq!(recv_n(&mut local, 1).await, ["local only"]);
        assert_eq!(broker_field(&node.stats(), "dropped"), "1");
    }
    // Nothing from the refused nodes reached the good ones.
    assert_nothing_more(&mut on_a).await;
}

/// Waits (bounded) until `node` has failed to connect at least `n` times.
fn wait_failed_connects(node: &Node, n: u64) {
    let started = Instant::now();
    while broker_field(&node.stats(), "failed_connects").parse::<u64>().unwrap() < n {
        assert!(started.elapsed() < HANG_GUARD, "no retries: {}", node.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `key` in the `broker` object of a `/stats` response, as it is written
/// (a JSON string without its quotes).
fn broker_field(stats: &str, key: &str) -> String {
    let broker = &stats[stats.find("\"broker\":").unwrap_or_else(|| panic!("{stats}"))..];
    let needle = format!("\"{key}\":");
    let rest = &broker
        [broker.find(&needle).unwrap_or_else(|| panic!("no {key}: {stats}")) + needle.len()..];
    if let Some(string) = rest.strip_prefix('"') {
        string[..string.find('"').unwrap()].to_owned()
    } else {
        rest[..rest.find([',', '}']).unwrap()].to_owned()
    }
}

/// TLS to Redis with a private CA: `rediss://` to redis-server's TLS port, which asks for a
/// client certificate. Nodes given the CA and a client certificate join and carry messages;
/// one without the CA refuses the broker's certificate, one without a client certificate is
/// refused by the broker; both stay down, retrying, with local fan-out going on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    let dir = common::tls_fixtures();
    let tls_port = free_port().to_string();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (leaf, key, ca) = (file("leaf.pem"), file("leaf.key"), file("ca.pem"));
    let extra = [
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &leaf,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "yes",
    ];
    let Some(broker) = BrokerProcess::start_with(BrokerKind::Redis, &extra, &[]) else { return };
    broker_over_tls(&broker, &format!("rediss://127.0.0.1:{tls_port}")).await;
}

/// TLS to NATS with a private CA: `tls://` to a nats-server that requires TLS and verifies
/// client certificates; as for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_with_a_private_ca() {
    let dir = common::tls_fixtures();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (leaf, key, ca) = (file("leaf.pem"), file("leaf.key"), file("ca.pem"));
    let extra = ["--tls", "--tlscert", &leaf, "--tlskey", &key, "--tlscacert", &ca, "--tlsverify"];
    let Some(broker) = BrokerProcess::start_with(BrokerKind::Nats, &extra, &[]) else { return };
    broker_over_tls(&broker, &format!("tls://127.0.0.1:{}", broker.port)).await;
}

async fn broker_over_tls(broker: &BrokerProcess, url: &str) {
    let dir = common::tls_fixtures();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let full = ["--broker-ca", &ca, "--broker-cert", &cert, "--broker-key", &key];
    let a = Node::start_with(url, &full);
    let b = Node::start_with(url, &full);
    // Without the CA the broker's certificate is unknown (checked against the built-in roots).
    let no_ca = Node::start_with(url, &["--broker-cert", &cert, "--broker-key", &key]);
    // Without a client certificate the broker refuses the node.
    let no_cert = Node::start_with(url, &["--broker-ca", &ca]);
    a.wait_connected(0);
    b.wait_connected(0);
    let mut on_a = a.ws("room").await;
    let mut on_b = b.ws("room").await;
    broker.wait_for("both nodes on room", |_| {
        a.stats().contains("\"topics\":1") && b.stats().contains("\"topics\":1")
    });
    broker.wait_for("subscribed room", |br| br.has_subscription("wsx.room"));
    let mut http = Http::new(a.port);
    for i in 0..10 {
        http.post("room", &format!("tls-{i}"));
    }
    let expected: Vec<String> = (0..10).map(|i| format!("tls-{i}")).collect();
    assert_eq!(recv_n(&mut on_a, 10).await, expected);
    assert_eq!(recv_n(&mut on_b, 10).await, expected);
    assert_eq!(broker_field(&b.stats(), "received"), "10", "{}", b.stats());

    // Why, as the node says it (Redis: rustls's reason; async-nats says only "IO error") and
    // as the broker logs it.
    let reasons = match broker.kind {
        BrokerKind::Redis => [
            ("UnknownIssuer", "alert unknown ca"),
            ("CertificateRequired", "peer did not return a certificate"),
        ],
        BrokerKind::Nats => [
            ("IO error (over TLS", "unknown certificate authority"),
            ("IO error (over TLS", "client didn't provide a certificate"),
        ],
    };
    for (node, (said, logged)) in [&no_ca, &no_cert].into_iter().zip(reasons) {
        wait_failed_connects(node, 2);
        let stats = node.stats();
        assert_eq!(broker_field(&stats, "connected"), "false", "{stats}");
        assert!(broker_field(&stats, "last_error").contains(said), "{stats}");
        assert!(broker.log().contains(logged), "{}", broker.log());
        let mut local = node.ws("room").await;
        node.wait("\"subscriptions\":1");
        let reply = Http::new(node.port).post("room", "local only");
        assert!(reply.contains("\"delivered\":1"), "{reply}");
        assert_eq!(recv_n(&mut local, 1).await, ["local only"]);
    }
    // Nothing from the refused nodes crossed.
    assert_nothing_more(&mut on_b).await;
}

/// TLS files that are missing, hold no certificate, or come with a URL that is not a TLS one:
/// a one-line error at start, naming the file.
#[test]
fn bad_broker_tls_files_are_a_one_line_error() {
    let dir = common::tls_fixtures();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let missing = file("missing.pem");
    let cases: [(&str, Vec<&str>, &str); 5] = [
        ("redis://127.0.0.1:1", vec!["--broker-ca", &ca], "needs a TLS URL"),
        ("nats://127.0.0.1:1", vec!["--broker-ca", &ca], "needs a TLS URL"),
        ("rediss://127.0.0.1:1", vec!["--broker-ca", &missing], "missing.pem"),
        // A key where the CA should be: no certificate in it.
        ("tls://127.0.0.1:1", vec!["--broker-ca", &key], "no PEM certificate"),
        // A certificate where the key should be.
        ("rediss://127.0.0.1:1", vec!["--broker-cert", &cert, "--broker-key", &cert], "key"),
    ];
    for (url, args, expected) in cases {
        let out = Command::new(WSX)
            .args(["serve", "--listen", "127.0.0.1:0", "--pubsub", "--broker", url])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} {args:?}: started");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("broker TLS") && stderr.contains(expected), "{args:?}: {stderr}");
    }
    // --broker-cert without --broker-key is refused by the argument parser.
    let out = Command::new(WSX)
        .args(["serve", "--pubsub", "--broker", "rediss://127.0.0.1:1", "--broker-cert", &cert])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--broker-key"));
}
