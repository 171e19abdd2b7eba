//! End-to-end tests of `wsx bench --pubsub` (uWebSockets' broadcast_test protocol) against
//! `wsx serve --pubsub`: every round, each of N connections publishes one message and gets
//! all N, so a clean run delivers exactly rounds × N × N.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::{Server, HANG_GUARD, WSX};

/// Runs `wsx bench --pubsub --json ARGS…` to completion (within the hang guard).
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(WSX)
        .args(["bench", "--pubsub", "--json"])
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
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The number after `"key":` in a flat JSON object (the report has no nested key of the same
/// name).
fn number(json: &str, key: &str) -> f64 {
    let pattern = format!("\"{key}\":");
    let at = json.find(&pattern).unwrap_or_else(|| panic!("no {key} in {json}")) + pattern.len();
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | '+'))
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

fn report(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.trim_end().ends_with('}'), "no JSON report: {stdout} / {stderr}");
    stdout.trim_end().lines().last().unwrap().to_owned()
}

/// Checks a clean closed-loop run of `n` connections.
fn assert_clean(output: &Output, n: u64) -> String {
    let json = report(output);
    assert!(output.status.success(), "{json} / {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    let rounds = number(&json, "rounds") as u64;
    let deliveries = number(&json, "deliveries") as u64;
    assert!(deliveries > 0, "{json}");
    assert_eq!(deliveries, rounds * n * n, "{json}");
    assert_eq!(number(&json, "published") as u64, rounds * n, "{json}");
    assert!(json.contains("\"mode\":\"pubsub\""), "{json}");
    assert!(number(&json, "deliveries_per_sec") > 0.0, "{json}");
    let p50 = number(&json, "p50");
    assert!(
        p50 > 0.0 && p50 <= number(&json, "p99") && number(&json, "p99") <= number(&json, "p999")
    );
    json
}

#[test]
fn every_connection_gets_every_message_of_every_round() {
    let server = Server::start(&["--pubsub", "--threads", "1"]);
    let output = bench(&[&server.url(), "-c", "20", "-d", "1", "--warmup", "0.2"]);
    assert_clean(&output, 20);
}

#[test]
fn a_topic_path_and_larger_messages() {
    let server = Server::start(&["--pubsub", "--threads", "1"]);
    let url = format!("ws://127.0.0.1:{}/room/1", server.port);
    let output = bench(&[&url, "-c", "5", "-s", "4000", "-d", "0.5", "--warmup", "0"]);
    let json = assert_clean(&output, 5);
    assert_eq!(number(&json, "size"), 4000.0);
}

#[test]
fn the_wsx_client_path_counts_the_same() {
    // --deflate makes the generator use a wsx::WebSocket (which offers compression) instead
    // of its lean ws:// client; deliveries still come uncompressed.
    let server = Server::start(&["--pubsub", "--threads", "1"]);
    let output = bench(&[&server.url(), "-c", "10", "-d", "0.5", "--warmup", "0", "--deflate"]);
    assert_clean(&output, 10);
}

#[test]
fn a_server_that_leaves_the_sender_out_fails_the_run() {
    // broadcast_test needs the sender's own message back: without it no round completes.
    let server = Server::start(&["--pubsub", "--no-echo-self"]);
    let output =
        bench(&[&server.url(), "-c", "3", "-d", "0.2", "--warmup", "0", "--round-timeout", "1"]);
    assert!(!output.status.success());
    let json = report(&output);
    assert!(number(&json, "errors") > 0.0, "{json}");
    assert_eq!(number(&json, "rounds"), 0.0, "{json}");
}

#[test]
fn open_loop_publishes_at_the_rate() {
    let server = Server::start(&["--pubsub", "--threads", "1"]);
    let output = bench(&[&server.url(), "-c", "4", "-d", "1", "--warmup", "0.2", "--rate", "400"]);
    let json = report(&output);
    assert!(output.status.success(), "{json}");
    assert_eq!(number(&json, "errors"), 0.0, "{json}");
    let published = number(&json, "published");
    // 400 publishes per second for one second, give or take the edges.
    assert!((360.0..=440.0).contains(&published), "{json}");
    // Each reaches the four connections; the last ones may land after the window.
    let deliveries = number(&json, "deliveries");
    assert!(deliveries >= published * 4.0 * 0.9 && deliveries <= published * 4.0 + 16.0, "{json}");
    assert!(json.contains("\"loop\":\"open\""), "{json}");
}

#[test]
fn too_small_messages_are_refused() {
    let output = bench(&["ws://127.0.0.1:9/", "-s", "8"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16"));
}
