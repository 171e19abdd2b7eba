//! `wsx serve --exec` and `--sh`: real child processes (`sh` scripts, `cat`, `env`) behind
//! WebSocket connections made with the `wsx` client.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{rss, Server, HANG_GUARD};
use wsx::http::{HeaderName, HeaderValue};
use wsx::{CloseCode, MaybeTlsStream, Message, ReadHalf, WebSocket, WriteHalf};

type Ws = WebSocket<MaybeTlsStream>;

/// Upper-cases every line, one `tr` per line (a `tr` of the whole stream would buffer).
const UPPER: &str = r#"while IFS= read -r l; do printf '%s\n' "$l" | tr a-z A-Z; done"#;

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(f)
}

/// Awaits `f`, failing the test after [`HANG_GUARD`].
async fn guard<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f).await.expect("no progress within the hang guard")
}

async fn connect(server: &Server, path: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}{path}", server.port);
    guard(wsx::connect(&url)).await.unwrap().0
}

/// The next text or binary message, or the close frame's code (`Err`) when the server closes.
async fn next(ws: &mut Ws) -> Result<Message, Option<CloseCode>> {
    loop {
        match guard(ws.recv()).await {
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
            Some(Ok(msg)) if msg.is_data() => return Ok(msg),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("client error: {e}"),
            None => return Err(None),
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Ok(Message::Text(t)) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Every text message until the server closes, and its close code.
async fn texts_until_close(ws: &mut Ws) -> (Vec<String>, Option<CloseCode>) {
    let mut lines = Vec::new();
    loop {
        match next(ws).await {
            Ok(Message::Text(t)) => lines.push(t.as_str().to_owned()),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(code) => return (lines, code),
        }
    }
}

/// Whether a process with this pid exists (a zombie counts: the server has not reaped it).
fn alive(pid: i32) -> bool {
    rustix::process::test_kill_process(rustix::process::Pid::from_raw(pid).unwrap()).is_ok()
}

/// Waits up to `limit` for `pid` to be gone; whether it went.
fn gone_within(pid: i32, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

#[test]
fn text_lines_go_through_the_child_and_back() {
    // --exec with the arguments after `--`: no shell parses the command line.
    let server = Server::start(&["--exec", "sh", "--", "-c", UPPER]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        for line in ["hello", "two words", "ünïcode ok"] {
            ws.send(Message::text(line)).await.unwrap();
        }
        assert_eq!(next_text(&mut ws).await, "HELLO");
        assert_eq!(next_text(&mut ws).await, "TWO WORDS");
        // `tr a-z` leaves the non-ASCII letters alone.
        assert_eq!(next_text(&mut ws).await, "üNïCODE OK");
        ws.close(None).await.unwrap();
    });
}

#[test]
fn binary_mode_passes_bytes_through_cat_exactly() {
    let server = Server::start(&["--binary", "--exec", "cat"]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        // Every byte value, newlines and NULs included, in pieces of assorted sizes.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(7919) >> 3) as u8).collect();
        let mut sent = 0;
        for size in [1, 255, 4096, 65_536, 100_000].iter().cycle() {
            if sent == data.len() {
                break;
            }
            let end = (sent + size).min(data.len());
            ws.send(Message::binary(data[sent..end].to_vec())).await.unwrap();
            sent = end;
        }
        let mut got = Vec::new();
        while got.len() < data.len() {
            match next(&mut ws).await {
                Ok(Message::Binary(b)) => got.extend_from_slice(&b),
                other => panic!("expected binary, got {other:?} after {} bytes", got.len()),
            }
        }
        assert!(got == data, "{} bytes came back, not the ones sent", got.len());
        ws.close(None).await.unwrap();
    });
}

#[test]
fn the_child_sees_the_cgi_environment() {
    let server = Server::start(&["--exec", "env"]);
    block_on(async {
        let url = format!("ws://127.0.0.1:{}/some/path?x=1&y=two", server.port);
        let (mut ws, _) = guard(
            wsx::ClientBuilder::new(url)
                .header(
                    HeaderName::from_static("user-agent"),
                    HeaderValue::from_static("exec-test/1.0"),
                )
                .connect(),
        )
        .await
        .unwrap();
        let (lines, code) = texts_until_close(&mut ws).await;
        let has = |l: &str| lines.iter().any(|x| x == l);
        for expected in [
            "PATH_INFO=/some/path",
            "QUERY_STRING=x=1&y=two",
            "HTTP_USER_AGENT=exec-test/1.0",
            "REMOTE_ADDR=127.0.0.1",
            "SERVER_NAME=127.0.0.1",
            &format!("SERVER_PORT={}", server.port),
        ] {
            assert!(has(expected), "no {expected} in {lines:#?}");
        }
        let port = lines.iter().find_map(|l| l.strip_prefix("REMOTE_PORT=")).unwrap();
        assert!(port.parse::<u16>().unwrap() > 0, "{port}");
        // env exits 0.
        assert_eq!(code, Some(CloseCode::NORMAL));
    });
}

#[test]
fn twenty_connections_get_a_child_each() {
    let script = r#"echo $$; while IFS= read -r l; do echo "$$:$l"; done"#;
    let server = Server::start(&["--sh", script]);
    block_on(async {
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(tokio::spawn({
                let url = format!("ws://127.0.0.1:{}/", server.port);
                async move { guard(wsx::connect(&url)).await.unwrap().0 }
            }));
        }
        let mut sockets = Vec::new();
        for c in clients {
            sockets.push(c.await.unwrap());
        }
        // All 20 open at once, each with its own child.
        let mut pids = HashSet::new();
        for ws in &mut sockets {
            pids.insert(next_text(ws).await.parse::<u32>().unwrap());
        }
        assert_eq!(pids.len(), 20, "{pids:?}");
        let tasks: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                tokio::spawn(async move {
                    ws.send(Message::text(format!("client {i}"))).await.unwrap();
                    let reply = next_text(&mut ws).await;
                    ws.close(None).await.unwrap();
                    (i, reply)
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in tasks {
            let (i, reply) = guard(t).await.unwrap();
            let (pid, line) = reply.split_once(':').unwrap();
            assert_eq!(line, format!("client {i}"));
            assert!(seen.insert(pid.to_owned()), "{pid} answered twice");
        }
        assert_eq!(seen.len(), 20);
    });
}

#[test]
fn past_max_processes_the_upgrade_gets_503() {
    let server = Server::start(&["--max-processes", "2", "--exec", "cat"]);
    block_on(async {
        let mut first = connect(&server, "/").await;
        let mut second = connect(&server, "/").await;
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let refused = guard(wsx::connect(&url)).await.expect_err("a third child was started");
        assert_eq!(refused.status(), Some(wsx::http::StatusCode::SERVICE_UNAVAILABLE));
        // The two are still served.
        for ws in [&mut first, &mut second] {
            ws.send(Message::text("still here")).await.unwrap();
            assert_eq!(next_text(ws).await, "still here");
        }
        // Once a child is gone its place is free again.
        first.close(None).await.unwrap();
        while guard(first.recv()).await.is_some() {}
        let started = Instant::now();
        let mut third = loop {
            match guard(wsx::connect(&url)).await {
                Ok((ws, _)) => break ws,
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    assert_eq!(e.status(), Some(wsx::http::StatusCode::SERVICE_UNAVAILABLE));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the place of a closed connection was never freed: {e}"),
            }
        };
        third.send(Message::text("third")).await.unwrap();
        assert_eq!(next_text(&mut third).await, "third");
    });
}

#[test]
fn exit_status_0_closes_with_1000_and_others_with_1011_after_the_output() {
    let server = Server::start(&["--sh", r#"read l; seq 1 500; [ "$l" = ok ] || exit 3"#]);
    block_on(async {
        for (input, code) in [("ok", CloseCode::NORMAL), ("fail", CloseCode::INTERNAL_ERROR)] {
            let mut ws = connect(&server, "/").await;
            ws.send(Message::text(input)).await.unwrap();
            let (lines, got) = texts_until_close(&mut ws).await;
            let expected: Vec<String> = (1..=500).map(|i| i.to_string()).collect();
            assert_eq!(lines, expected, "{input}: all of the output comes before the close");
            assert_eq!(got, Some(code), "{input}");
        }
    });
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let server =
        Server::start(&["--kill-grace", "1.5", "--sh", r#"trap "" TERM; echo $$; sleep 100"#]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        let pid: i32 = next_text(&mut ws).await.parse().unwrap();
        assert!(alive(pid));
        // Gone without a close: the TCP connection just ends.
        drop(ws);
        let dropped = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(alive(pid), "gone before the grace period was over: SIGTERM was not ignored?");
        assert!(gone_within(pid, Duration::from_secs(10)), "{pid} still runs");
        let after = dropped.elapsed();
        assert!(after >= Duration::from_millis(1400), "killed after {after:?}, before the grace");
        // SIGKILL at the end of the grace, not some later cleanup.
        assert!(after < Duration::from_millis(4500), "killed only after {after:?}");
    });
}

#[test]
fn a_child_that_honours_sigterm_ends_when_the_client_closes() {
    let server = Server::start(&["--kill-grace", "30", "--sh", "echo $$; exec sleep 100"]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        let pid: i32 = next_text(&mut ws).await.parse().unwrap();
        ws.close(None).await.unwrap();
        while guard(ws.recv()).await.is_some() {}
        // Well within the 30 s grace: SIGTERM did it, not SIGKILL.
        assert!(gone_within(pid, Duration::from_secs(10)), "{pid} still runs");
    });
}

#[test]
fn a_client_that_disconnects_mid_stream_ends_its_child_and_the_server_goes_on() {
    // `yes` writes as fast as it can: the server is mid-stream, held by flow control.
    let server = Server::start(&["--sh", "echo $$; exec yes flood"]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        let pid: i32 = next_text(&mut ws).await.parse().unwrap();
        for _ in 0..100 {
            assert_eq!(next_text(&mut ws).await, "flood");
        }
        drop(ws);
        assert!(gone_within(pid, Duration::from_secs(10)), "{pid} still runs");

        let mut again = connect(&server, "/").await;
        assert!(next_text(&mut again).await.parse::<i32>().is_ok());
        assert_eq!(next_text(&mut again).await, "flood");
    });
}

#[test]
fn a_child_that_does_not_read_holds_the_client_back() {
    let server = Server::start(&["--exec", "sleep", "--", "100"]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        // 256 MiB would be held if the server kept receiving for a child that does not read;
        // pipe and socket buffers take a few MiB, then sending must stall.
        let chunk = vec![b'x'; 1 << 20];
        let send = async {
            for _ in 0..256 {
                ws.send(Message::binary(chunk.clone())).await.unwrap();
            }
        };
        let stalled = tokio::time::timeout(Duration::from_secs(3), send).await.is_err();
        assert!(stalled, "256 MiB went to a child that reads nothing");
    });
}

/// A server process may hold this much while a client or its child is stalled (its VmRSS).
const RSS_BOUND: u64 = 64 << 20;

/// A child that prints its pid and never reads its stdin.
const DEAF: &str = "echo $$; exec sleep 100";

#[test]
fn pings_keepalive_and_the_close_still_work_while_the_child_does_not_read_input_that_fits() {
    // Half a second of silence brings a server ping; one second without an answer is a dead
    // client. After the client's close the child gets the 2 s grace to take the input it was
    // sent (it takes none), then SIGTERM.
    let server = Server::start(&[
        "--ping-interval",
        "0.5",
        "--ping-timeout",
        "1",
        "--kill-grace",
        "2",
        "--sh",
        DEAF,
    ]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        let pid: i32 = next_text(&mut ws).await.parse().unwrap();
        // 512 KiB for a child that reads none of it: more than its stdin pipe holds, so the
        // server's writes to it are stuck while all of this is received.
        for _ in 0..8 {
            ws.send(Message::binary(vec![b'x'; 64 << 10])).await.unwrap();
        }
        // For three seconds (three ping timeouts) the server's keepalive pings arrive and are
        // answered by this client's receive loop; the connection stays open.
        let mut pings = 0;
        let listening = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(listening);
        loop {
            tokio::select! {
                () = &mut listening => break,
                m = ws.recv() => match m {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    other => panic!("expected only pings, got {other:?}"),
                },
            }
        }
        assert!(pings >= 2, "{pings} keepalive pings in 3 s at a 0.5 s interval");
        // A ping of the client's own is answered.
        ws.send(Message::Ping(b"are you there"[..].into())).await.unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.recv().await {
                    Some(Ok(Message::Pong(p))) => return p,
                    Some(Ok(Message::Ping(_))) => {}
                    other => panic!("expected a pong, got {other:?}"),
                }
            }
        });
        assert_eq!(&answered.await.expect("no pong within 5 s")[..], b"are you there");
        // And the close is answered, well within the server's 10 s close timeout.
        let closing = Instant::now();
        ws.close(None).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.recv().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected the close reply, got {other:?}"),
                }
            }
        });
        assert_eq!(reply.await.expect("no close reply within 5 s"), Some(CloseCode::NORMAL));
        assert!(gone_within(pid, Duration::from_secs(10)), "{pid} still runs");
        eprintln!(
            "{pings} pings in 3 s; closed and child ended {:?} after the close",
            closing.elapsed()
        );
    });
}

/// Waits until `sent` stops growing for a second (or reaches `total`); returns its value then.
async fn stalled(sent: &AtomicU64, total: u64) -> u64 {
    let started = Instant::now();
    let mut last = sent.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == total {
            return now;
        }
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(started.elapsed() < HANG_GUARD, "the writer never stalled");
    }
}

/// Sends `total` bytes in binary messages of `size` from another task, counting them in
/// `sent` as they go; the task ends at the first error (returned) or when all went.
fn flood(
    mut writer: WriteHalf<MaybeTlsStream>,
    total: u64,
    size: usize,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![b'x'; size]);
        let mut done = 0;
        while done < total {
            if let Err(e) = writer.send(Message::Binary(chunk.clone())).await {
                return Some(e.to_string());
            }
            done += size as u64;
            sent.store(done, Ordering::Relaxed);
        }
        None
    })
}

#[test]
fn keepalive_pings_go_out_while_the_backlog_for_the_child_is_full() {
    // A ping every half second; a ping timeout long enough that the server does not give up.
    let server = Server::start(&["--ping-interval", "0.5", "--ping-timeout", "60", "--sh", DEAF]);
    block_on(async {
        let (mut reader, writer) = connect(&server, "/").await.split();
        let pid: i32 = match guard(reader.recv()).await {
            Some(Ok(Message::Text(t))) => t.as_str().parse().unwrap(),
            other => panic!("expected the pid, got {other:?}"),
        };
        // 4 MiB for a child that reads none of it: more than the server's backlog (1 MiB)
        // and the child's pipe together, so the server stops receiving once its backlog is
        // full; the rest waits in the sockets or holds the writer back.
        const TOTAL: u64 = 4 << 20;
        let sent = Arc::new(AtomicU64::new(0));
        let writer = flood(writer, TOTAL, 64 << 10, sent.clone());
        let at_stall = stalled(&sent, TOTAL).await;
        assert!(at_stall > (1 << 20) + (64 << 10), "only {at_stall} bytes went");
        // The server's timers run while it does not receive: its pings keep coming (its
        // keepalive does not hear our pongs, stuck behind the data, but waits 60 s).
        let mut pings = 0;
        let listening = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(listening);
        loop {
            tokio::select! {
                () = &mut listening => break,
                m = reader.recv() => match m {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    other => panic!("expected only pings, got {other:?}"),
                },
            }
        }
        eprintln!("{pings} pings in 3 s with the backlog full ({} KiB sent)", at_stall >> 10);
        assert!(pings >= 3, "{pings} keepalive pings in 3 s at a 0.5 s interval");
        assert!(alive(pid));
        writer.abort();
    });
}

/// Reads from `reader` until the server's close; its code.
async fn close_code(reader: &mut ReadHalf<MaybeTlsStream>) -> Option<CloseCode> {
    loop {
        match guard(reader.recv()).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("no close frame from the server: {e}"),
            None => return None,
        }
    }
}

#[test]
fn a_client_stuck_behind_a_child_that_does_not_read_is_dropped_by_keepalive() {
    let server = Server::start(&[
        "--ping-interval",
        "1",
        "--ping-timeout",
        "1",
        "--close-timeout",
        "1",
        "--sh",
        DEAF,
    ]);
    block_on(async {
        // No keepalive of the client's own: the server is the one to notice.
        let quiet = wsx::Config::default().ping_interval(None);
        let (mut ws, _) = guard(
            wsx::ClientBuilder::new(format!("ws://127.0.0.1:{}/", server.port))
                .config(quiet)
                .connect(),
        )
        .await
        .unwrap();
        let pid: i32 = next_text(&mut ws).await.parse().unwrap();
        // 50 MiB from a writer task: the child takes none of it, so after the server's
        // backlog and the socket buffers the writer is stuck in `send`, and the server hears
        // nothing from the client (its pongs sit behind the data) however long this lasts.
        // The reader sees what the server sends meanwhile: pings, then its close.
        let (mut reader, writer) = ws.split();
        let started = Instant::now();
        let sent = Arc::new(AtomicU64::new(0));
        let writer = flood(writer, 50 << 20, 1 << 20, sent.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let held = rss(server.child.id());
        // The server gives up on the client: ping, 1 s unanswered, 1011; then the connection
        // ends and so does the child.
        let code = close_code(&mut reader).await;
        let dropped = started.elapsed();
        let error = guard(writer).await.unwrap();
        assert!(gone_within(pid, Duration::from_secs(10)), "{pid} still runs");
        let sent = sent.load(Ordering::Relaxed);
        eprintln!(
            "closed with {code:?} after {dropped:?} ({} MiB sent: {error:?}); server RSS {} MiB \
             while stuck",
            sent >> 20,
            held >> 20
        );
        assert_eq!(code, Some(CloseCode::INTERNAL_ERROR), "keepalive's close code");
        assert!(sent < 50 << 20, "all 50 MiB went to a child that reads nothing");
        assert!(held < RSS_BOUND, "wsx serve holds {held} bytes");
    });
}

#[test]
fn a_client_that_stops_reading_a_flood_is_dropped_by_keepalive_in_bounded_memory() {
    let server = Server::start(&[
        "--ping-interval",
        "1",
        "--ping-timeout",
        "1",
        "--close-timeout",
        "1",
        "--sh",
        "echo $$; exec yes flood",
    ]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        let pid: i32 = next_text(&mut ws).await.parse().unwrap();
        assert_eq!(next_text(&mut ws).await, "flood");
        // From here the client reads nothing (and stays connected): `yes` goes on writing,
        // the server must neither buffer it all nor keep the connection for ever.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let held = rss(server.child.id());
        assert!(gone_within(pid, Duration::from_secs(20)), "{pid} still runs");
        eprintln!(
            "child ended {:?} after the client stopped reading; server RSS {} MiB meanwhile",
            started.elapsed(),
            held >> 20
        );
        assert!(held < RSS_BOUND, "wsx serve holds {held} bytes");
        drop(ws);
    });
}

#[test]
fn a_flood_of_empty_messages_for_a_child_that_does_not_read_stays_in_bounded_memory() {
    let server = Server::start(&["--sh", DEAF]);
    block_on(async {
        let mut ws = connect(&server, "/").await;
        next_text(&mut ws).await;
        let before = rss(server.child.id());
        // Half a million empty lines: 6 bytes each on the wire, a newline each for the child.
        // Within the backlog's limit (1 MiB of bytes), so the server takes them all; what they
        // cost it in memory is what this measures.
        for _ in 0..500_000 {
            guard(ws.feed(Message::text(""))).await.unwrap();
        }
        // Answered only once everything before it was received.
        ws.send(Message::Ping(b"after"[..].into())).await.unwrap();
        loop {
            match guard(ws.recv()).await {
                Some(Ok(Message::Pong(p))) if &p[..] == b"after" => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected the pong, got {other:?}"),
            }
        }
        let after = rss(server.child.id());
        let grown = after.saturating_sub(before);
        eprintln!(
            "500000 empty messages held for a child that does not read: server RSS {} -> {} KiB \
             (+{} KiB)",
            before >> 10,
            after >> 10,
            grown >> 10
        );
        assert!(grown < 8 << 20, "the queued empty messages cost the server {grown} bytes");
    });
}

/// Sends 900 KiB to a child running `--sh "trap '' TERM; BEFORE; wc -c > FILE"` (deaf to
/// SIGTERM: it ends on its own once its stdin does) and closes normally; how many bytes the
/// child counted.
fn bytes_seen_after_a_close(before: &str) -> (usize, usize) {
    let out =
        std::env::temp_dir().join(format!("wsx-exec-rest-{}-{}", std::process::id(), before.len()));
    let _ = std::fs::remove_file(&out);
    let script = format!(r#"trap "" TERM; {before}; wc -c > '{}'"#, out.display());
    let server = Server::start(&["--binary", "--kill-grace", "30", "--sh", &script]);
    const TOTAL: usize = 900 << 10;
    block_on(async {
        let mut ws = connect(&server, "/").await;
        // Under the server's backlog: all of it is received (most of it waiting for the child,
        // whose pipe holds 64 KiB) before the close is.
        let data = vec![b'd'; 60 << 10];
        let mut sent = 0;
        while sent < TOTAL {
            let n = data.len().min(TOTAL - sent);
            ws.send(Message::binary(data[..n].to_vec())).await.unwrap();
            sent += n;
        }
        ws.close(None).await.unwrap();
        while guard(ws.recv()).await.is_some() {}
    });
    let started = Instant::now();
    let counted = loop {
        if let Ok(text) = std::fs::read_to_string(&out) {
            if text.ends_with('\n') {
                break text;
            }
        }
        assert!(started.elapsed() < HANG_GUARD, "the child never counted its input");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&out);
    (counted.trim().parse().unwrap(), TOTAL)
}

#[test]
fn what_the_client_sent_before_its_close_reaches_the_child() {
    // A child slow to start reading.
    let (seen, sent) = bytes_seen_after_a_close("sleep 1");
    assert_eq!(seen, sent, "bytes the child saw");
}

#[test]
fn a_child_blocked_on_its_output_still_gets_what_the_client_sent_before_its_close() {
    // 20 MB of output first, which the client does not read: the child is blocked writing
    // it when the client closes, and reads its stdin only after.
    let (seen, sent) = bytes_seen_after_a_close("head -c 20000000 /dev/zero");
    assert_eq!(seen, sent, "bytes the child saw");
}

#[test]
fn a_missing_program_gets_500() {
    let server = Server::start(&["--exec", "/nonexistent/wsx-exec-test"]);
    block_on(async {
        let url = format!("ws://127.0.0.1:{}/", server.port);
        let refused = guard(wsx::connect(&url)).await.expect_err("upgraded without a child");
        assert_eq!(refused.status(), Some(wsx::http::StatusCode::INTERNAL_SERVER_ERROR));
    });
}

#[test]
fn server_shutdown_ends_the_children() {
    let mut server = Server::start(&["--sh", "echo $$; exec sleep 100"]);
    let pid: i32 = block_on(async {
        let mut ws = connect(&server, "/").await;
        let pid = next_text(&mut ws).await.parse().unwrap();
        // Answer the server's 1001 while it shuts down.
        tokio::spawn(async move { while ws.recv().await.is_some() {} });
        let server_pid = rustix::process::Pid::from_raw(server.child.id() as i32).unwrap();
        rustix::process::kill_process(server_pid, rustix::process::Signal::TERM).unwrap();
        pid
    });
    let started = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < HANG_GUARD, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone_within(pid, Duration::from_secs(5)), "{pid} outlived the server");
}
