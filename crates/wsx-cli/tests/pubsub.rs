//! `wsx serve --pubsub`: Python `websockets` clients check fan-out, per-publisher order, topics
//! kept apart, `--no-echo-self` and a subscriber that never reads (tests/pubsub.py); raw HTTP
//! checks `POST /publish/P` with no token, a wrong one and the right one.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{python, Response, Server, HANG_GUARD};

/// Runs a scenario of tests/pubsub.py against `server`, asserting it prints its `ok` line.
fn scenario(server: &Server, name: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pubsub.py");
    let mut child = Command::new(python())
        .arg(script)
        .args([name, &server.port.to_string(), &server.child.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // Bounded: the scenarios take seconds; a hang is a failure, not a stuck CI job.
    let limit = HANG_GUARD * 3;
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{name}: no result within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success() && stdout.contains(&format!("ok {name}")), "{stdout}\n{stderr}");
}

#[test]
fn every_subscriber_gets_every_message_once_and_in_each_publishers_order() {
    scenario(&Server::start(&["--pubsub"]), "fanout");
}

#[test]
fn no_echo_self_leaves_the_sender_out() {
    scenario(&Server::start(&["--pubsub", "--no-echo-self"]), "no-echo-self");
}

#[test]
fn a_subscriber_that_never_reads_is_skipped_and_holds_bounded_memory() {
    scenario(&Server::start(&["--pubsub", "--threads", "2"]), "slow");
}

/// One request on a new connection, closed after it; the response.
fn http(port: u16, request: &str) -> Response {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = tcp.read_to_end(&mut bytes);
    Response::parse(&bytes)
}

fn publish(port: u16, auth: Option<&str>, content_type: &str, body: &str) -> Response {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    http(
        port,
        &format!(
            "POST /publish/news HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A raw WebSocket subscriber of /news: upgrades, then reads unmasked server frames.
struct Sub(TcpStream);

impl Sub {
    fn new(port: u16) -> Self {
        let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
        tcp.write_all(
            b"GET /news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Self(tcp)
    }

    /// The next frame's opcode and payload (short frames only).
    fn next(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0; 2];
        self.0.read_exact(&mut head).unwrap();
        let len = usize::from(head[1] & 0x7f);
        assert!(len < 126);
        let mut payload = vec![0; len];
        self.0.read_exact(&mut payload).unwrap();
        (head[0] & 0x0f, payload)
    }
}

#[test]
fn http_publishing_needs_the_token_and_publishes_text_or_binary() {
    let server = Server::start(&["--pubsub", "--publish-token", "s3cret"]);
    let mut sub = Sub::new(server.port);
    // Wait until the subscription is counted.
    for _ in 0..100 {
        let stats =
            http(server.port, "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if String::from_utf8_lossy(&stats.body).contains("\"subscriptions\":1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let none = publish(server.port, None, "text/plain", "nope");
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.header("www-authenticate"), Some("bearer"), "{none:?}");
    let wrong = publish(server.port, Some("Bearer s3cre7"), "text/plain", "nope");
    assert_eq!(wrong.status, 403, "{wrong:?}");
    let basic = publish(server.port, Some("Basic czNjcmV0"), "text/plain", "nope");
    assert_eq!(basic.status, 401, "{basic:?}");
    let text = publish(server.port, Some("Bearer s3cret"), "text/plain; charset=utf-8", "héllo");
    assert_eq!(text.status, 200, "{text:?}");
    assert_eq!(String::from_utf8_lossy(&text.body), "{\"delivered\":1,\"skipped\":0}\n");
    let binary = publish(server.port, Some("Bearer s3cret"), "application/octet-stream", "raw");
    assert_eq!(binary.status, 200, "{binary:?}");
    // Only the authorized publishes arrived, text as text and binary as binary, in order.
    assert_eq!(sub.next(), (0x1, "héllo".as_bytes().to_vec()));
    assert_eq!(sub.next(), (0x2, b"raw".to_vec()));
    let get =
        http(server.port, "GET /publish/news HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((get.status, get.header("allow")), (405, Some("post")), "{get:?}");
    let stats = http(server.port, "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let stats = String::from_utf8_lossy(&stats.body).into_owned();
    assert!(stats.contains("\"published\":2") && stats.contains("\"deliveries\":2"), "{stats}");

    // Content-Length is digits only (RFC 9110 §8.6): a sign is refused, and so are two fields.
    for lengths in ["Content-Length: +3\r\n", "Content-Length: 3\r\nContent-Length: 3\r\n"] {
        let bad = http(
            server.port,
            &format!(
                "POST /publish/news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\
                 {lengths}\r\nabc"
            ),
        );
        assert_eq!(bad.status, 400, "{lengths:?}: {bad:?}");
    }
    // A client that waits for 100 Continue before its body gets it, then the answer.
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port)).unwrap();
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    tcp.write_all(
        b"POST /publish/news HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\
          Connection: close\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0; 25];
    tcp.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"later").unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert_eq!(Response::parse(&rest).status, 200);
    assert_eq!(sub.next(), (0x2, b"later".to_vec()));

    // Without --publish-token HTTP publishing is off.
    let closed = Server::start(&["--pubsub"]);
    let off = publish(closed.port, Some("Bearer s3cret"), "text/plain", "nope");
    assert_eq!(off.status, 404, "{off:?}");
}

/// `curl ARGS… URL` against a TLS server of the test CA in `dir`: (status, HTTP version, body).
fn curl(dir: &std::path::Path, args: &[&str], url: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(args)
        .args(["-w", "\n%{http_code} %{http_version}", url])
        .stdin(Stdio::null())
        .output()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    (status.parse().unwrap_or(0), version.to_owned(), body.to_owned())
}

#[test]
fn http_publishing_works_over_http2_with_the_same_rules() {
    let dir = common::tls_fixtures();
    let (cert, key) = (dir.join("leaf.pem"), dir.join("leaf.key"));
    let server = Server::start(&[
        "--pubsub",
        "--publish-token",
        "s3cret",
        "--max-message-size",
        "1024",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let base = format!("https://localhost:{}", server.port);
    // The subscriber: `wsx connect` to the topic, over its own TLS connection.
    let mut sub = Command::new(common::WSX)
        .args(["connect", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg(format!("wss://localhost:{}/news", server.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let (_, _, stats) = curl(&dir, &["--http2"], &format!("{base}/stats"));
        if stats.contains("\"subscriptions\":1") {
            break;
        }
        assert!(started.elapsed() < HANG_GUARD, "never subscribed: {stats}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let publish = format!("{base}/publish/news");
    let bearer = "Authorization: Bearer s3cret";
    let text = ["--http2", "-H", "Content-Type: text/plain"];
    // Refusals first: they publish nothing.
    let none = curl(&dir, &[&text[..], &["--data-binary", "nope"]].concat(), &publish);
    assert_eq!((none.0, none.1.as_str()), (401, "2"), "{none:?}");
    let wrong = ["-H", "Authorization: Bearer s3cre7", "--data-binary", "nope"];
    let wrong = curl(&dir, &[&text[..], &wrong].concat(), &publish);
    assert_eq!(wrong.0, 403, "{wrong:?}");
    let big = "x".repeat(2000);
    let large = curl(&dir, &[&text[..], &["-H", bearer, "--data-binary", &big]].concat(), &publish);
    assert_eq!(large.0, 413, "{large:?}");
    let get = curl(&dir, &["--http2", "-H", bearer], &publish);
    assert_eq!(get.0, 405, "{get:?}");
    // The authorized one is delivered, and answers as over HTTP/1.1.
    let ok =
        curl(&dir, &[&text[..], &["-H", bearer, "--data-binary", "over h2"]].concat(), &publish);
    assert_eq!((ok.0, ok.1.as_str()), (200, "2"), "{ok:?}");
    assert_eq!(ok.2, "{\"delivered\":1,\"skipped\":0}\n", "{ok:?}");
    // And the same over HTTP/1.1 on the same port, after it.
    let h1 = ["--http1.1", "-H", "Content-Type: text/plain", "-H", bearer];
    let h1 = curl(&dir, &[&h1[..], &["--data-binary", "over h1"]].concat(), &publish);
    assert_eq!((h1.0, h1.1.as_str()), (200, "1.1"), "{h1:?}");

    // Read on a thread of its own, so that a missing message fails the test instead of hanging it.
    let mut out = std::io::BufReader::new(sub.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut out, &mut line);
            lines.push(line);
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(HANG_GUARD);
    let _ = sub.kill();
    let lines = lines.expect("the subscriber got both messages");
    assert_eq!(lines, ["over h2\n", "over h1\n"], "only the authorized publishes, in order");
    let _ = sub.wait();
}
