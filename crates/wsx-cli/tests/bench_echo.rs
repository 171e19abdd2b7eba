//! End-to-end tests of `wsx bench` in echo and handshake modes against `wsx serve`.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Server, HANG_GUARD, WSX};

/// Runs `wsx bench ARGS…` to completion (within the hang guard).
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(WSX)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("wsx bench {args:?} hung; stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number after `"key":` in the report (the first such key).
fn number(json: &str, key: &str) -> f64 {
    let pattern = format!("\"{key}\":");
    let at = json.find(&pattern).unwrap_or_else(|| panic!("no {key} in {json}")) + pattern.len();
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | '+'))
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// The JSON report of a run that succeeded.
fn clean_report(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout} / {stderr}");
    let json = stdout.trim_end().lines().last().unwrap_or_default().to_owned();
    assert!(json.ends_with('}'), "no JSON report: {stdout} / {stderr}");
    assert_eq!(number(&json, "errors"), 0.0, "{json} / {stderr}");
    json
}

#[test]
fn open_loop_echoes_above_the_stream_threshold_arrive_whole() {
    // 200 kB echoes arrive as chunks (the client's stream threshold is 64 KiB), and a tick
    // every 0.5 ms interrupts the receive mid-echo: the bytes counted before the interruption
    // must not be lost (they were, and the rest of the echo was then taken for a short one:
    // "an echo of 39246 bytes for a message of 200000" with these very settings).
    let server = Server::start(&["--threads", "1"]);
    let url = server.url();
    let output = bench(&[
        &url, "-c", "1", "-s", "200000", "--rate", "2000", "-d", "1", "--warmup", "0.1", "--json",
    ]);
    let json = clean_report(&output);
    assert!(number(&json, "messages") > 0.0, "{json}");
}

#[test]
fn a_rate_beyond_any_schedule_is_refused_with_one_line() {
    for rate in ["1e12", "1e300", "inf", "0", "-5", "1e-300"] {
        let output = bench(&["ws://127.0.0.1:9/", &format!("--rate={rate}"), "-d", "1"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "--rate {rate}: {stderr}");
        assert!(!stderr.contains("panicked"), "--rate {rate}: {stderr}");
        assert!(stderr.starts_with("wsx: error: --rate"), "--rate {rate}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "--rate {rate}: {stderr}");
    }
}

#[test]
fn connections_are_opened_concurrently() {
    // A gate in front of the server holds every connection until 20 are open at once, then
    // lets them all through: a generator that connects one at a time never gets past the
    // first, and the gate gives up (closing them) after its own timeout.
    const N: usize = 20;
    let server = Server::start(&["--threads", "1"]);
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let gate_addr = listener.local_addr().unwrap();
    let backend: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let gate = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
            async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut held = Vec::new();
                let gathered = tokio::time::timeout(Duration::from_secs(15), async {
                    while held.len() < N {
                        held.push(listener.accept().await.unwrap().0);
                    }
                })
                .await;
                if gathered.is_err() {
                    return held.len();
                }
                let mut pipes = Vec::new();
                for mut client in held {
                    pipes.push(tokio::spawn(async move {
                        let mut upstream = tokio::net::TcpStream::connect(backend).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }));
                }
                for pipe in pipes {
                    let _ = pipe.await;
                }
                N
            },
        )
    });
    let url = format!("ws://{gate_addr}/");
    let output = bench(&[&url, "-c", &N.to_string(), "-d", "0.5", "--warmup", "0.1", "--json"]);
    let json = clean_report(&output);
    assert!(number(&json, "messages") > 0.0, "{json}");
    assert_eq!(gate.join().unwrap(), N, "the gate saw fewer connections at once");
}

#[test]
fn handshake_mode_counts_connections_per_second() {
    let server = Server::start(&["--threads", "1"]);
    let url = server.url();
    let output = bench(&[&url, "--handshakes", "-c", "4", "-d", "1", "--warmup", "0.2", "--json"]);
    let json = clean_report(&output);
    assert!(json.contains("\"mode\":\"handshakes\""), "{json}");
    let handshakes = number(&json, "handshakes");
    assert!(handshakes > 0.0, "{json}");
    assert_eq!(number(&json, "handshakes_per_sec"), handshakes / number(&json, "duration_secs"));
    let p50 = number(&json, "p50");
    assert!(p50 > 0.0 && p50 <= number(&json, "max"), "{json}");

    // The text report says the same.
    let output = bench(&[&url, "--handshakes", "-c", "2", "-d", "0.3", "--warmup", "0"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("connections/s"), "{text}");
    assert!(text.contains("errors     0"), "{text}");
}

#[test]
fn handshake_mode_against_nothing_fails_with_one_line() {
    let port = common::free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let output = bench(&[&url, "--handshakes", "-c", "2", "-d", "0.3", "--warmup", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("wsx: error: every handshake failed"), "{stderr}");
}
