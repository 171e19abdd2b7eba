//! End-to-end tests of `wsx connect`: the binary against `wsx serve` and against small mock
//! servers written here (with the `wsx` library, or raw TCP for a refused upgrade).

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{free_port, tls_fixtures, Server, HANG_GUARD, WSX};
use wsx::{Accept, CloseCode, CloseFrame, Config, Incoming, Message, WebSocket};

#[test]
fn echoes_text_lines_and_exits_after_the_close_handshake() {
    let server = Server::start(&[]);
    let run = connect(&[&server.url()], Input::Bytes(b"hello\nworld\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "hello\nworld\n");
    // This side closed and the server replied 1000: nothing to report.
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn crlf_and_a_last_line_without_newline_are_sent_as_lines() {
    let server = Server::start(&[]);
    let run = connect(&[&server.url()], Input::Bytes(b"one\r\n\ntwo"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "one\n\ntwo\n");
}

#[test]
fn binary_whole_sends_stdin_as_one_message_and_prints_hex() {
    let server = Server::start(&[]);
    let run = connect(&["--binary", "--whole", &server.url()], Input::Bytes(b"hello\n\x00\xff\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "68656c6c6f0a00ff0a\n");
}

#[test]
fn binary_raw_prints_the_bytes_as_received() {
    let server = Server::start(&[]);
    let run = connect(
        &["--binary", "--whole", "--binary-raw", &server.url()],
        Input::Bytes(b"\x00\xffab\ncd\n"),
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, b"\x00\xffab\ncd\n");
}

#[test]
fn binary_stdin_is_a_byte_stream_sent_unchanged() {
    // 1 MiB of pseudo-random bytes, so newlines, "\r\n" and NULs all over it, and some runs.
    let mut input = random_bytes(1 << 20, 7);
    input[..6].copy_from_slice(b"\r\n\0\0\n\n");
    input.extend_from_slice(b"last line\n\0");
    let server = Server::start(&[]);
    for extra in [&[][..], &["--whole"][..]] {
        let mut args = vec!["--binary", "--binary-raw"];
        args.extend_from_slice(extra);
        let url = server.url();
        args.push(&url);
        let run = connect(&args, Input::Owned(input.clone()));
        assert!(run.status.success(), "{extra:?}: {:?}", run.stderr);
        assert_eq!(run.stdout.len(), input.len(), "{extra:?}");
        assert!(run.stdout == input, "{extra:?}: the echo differs from the input");
    }
}

#[test]
fn null_splits_stdin_on_nul_bytes() {
    let server = Server::start(&[]);
    // Newlines stay inside the pieces; "\0\0" is an empty piece; the last needs no NUL.
    let run =
        connect(&["-0", "--binary", &server.url()], Input::Bytes(b"one\0two\nlines\0\0\r\n\0last"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "6f6e65\n74776f0a6c696e6573\n\n0d0a\n6c617374\n");
}

#[test]
fn jsonl_keeps_message_boundaries() {
    let server = Server::start(&[]);
    // Text with newlines, quotes, a backslash, a tab and a control character, sent whole.
    let text = "line one\nline \"two\"\t\\ \u{1} é\n";
    let run = connect(&["--jsonl", "--whole", &server.url()], Input::Owned(text.into()));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout_text(),
        r#"{"type":"text","data":"line one\nline \"two\"\t\\ \u0001 é\n"}"#.to_owned() + "\n"
    );
    // With -0: two text messages, each one line however many newlines it holds.
    let run = connect(&["--jsonl", "-0", &server.url()], Input::Bytes(b"a\nb\n\0c"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout_text(),
        "{\"type\":\"text\",\"data\":\"a\\nb\\n\"}\n{\"type\":\"text\",\"data\":\"c\"}\n"
    );
    let run = connect(
        &["--jsonl", "--binary", "--whole", &server.url()],
        Input::Bytes(b"\x00\xff\nfoobar"),
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "{\"type\":\"binary\",\"base64\":\"AP8KZm9vYmFy\"}\n");
}

#[test]
fn verbose_prints_the_response_head_on_stderr() {
    let server = Server::start(&[]);
    let run = connect(&["-v", &server.url()], Input::Bytes(b"hi\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "hi\n");
    assert!(run.stderr.starts_with("HTTP/1.1 101 Switching Protocols\n"), "{run:?}");
    assert!(run.stderr.to_lowercase().contains("\nsec-websocket-accept: "), "{run:?}");
    assert!(run.stderr.to_lowercase().contains("\nupgrade: websocket\n"), "{run:?}");
}

#[test]
fn close_code_and_reason_are_sent_at_the_end_of_stdin() {
    let (url, server) = mock_server_raw(|tcp| async move {
        let mut ws = wsx::accept(tcp).await.unwrap();
        let mut close = None;
        while let Some(msg) = ws.recv().await {
            match msg {
                Ok(Message::Close(frame)) => close = frame,
                Ok(msg) => ws.send(msg).await.unwrap(),
                Err(_) => break,
            }
        }
        close.map(|f| (f.code, f.reason.to_string()))
    });
    let run = connect(
        &["--close-code", "4001", "--close-reason", "bye now", &url],
        Input::Bytes(b"hi\n"),
    );
    // The server echoed 4001: the answer to this side's own code is no error.
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "hi\n");
    assert_eq!(run.stderr, "", "{run:?}");
    assert_eq!(server.join().unwrap(), Some((CloseCode(4001), "bye now".to_owned())));

    // wsx serve echoes the code, which -v shows.
    let server = Server::start(&[]);
    let run = connect(&["-v", "--close-code", "3000", &server.url()], Input::Bytes(b""));
    assert!(run.status.success(), "{run:?}");
    assert!(run.stderr.ends_with("\nclosed: 3000\n"), "{run:?}");
}

#[test]
fn unsendable_close_codes_are_refused_before_connecting() {
    // Nothing listens there: connecting would be a different error.
    let url = format!("ws://127.0.0.1:{}/", free_port());
    for code in ["1005", "1006", "999", "2000", "5000", "70000", "soon"] {
        let run = connect(&["--close-code", code, &url], Input::Bytes(b""));
        assert!(!run.status.success(), "{code}: {run:?}");
        assert_one_error_line(&run, "--close-code");
    }
    let long = "x".repeat(124);
    let run = connect(&["--close-reason", &long, &url], Input::Bytes(b""));
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "--close-reason");
}

#[test]
fn ping_interval_sends_keepalive_pings() {
    let (url, server) = mock_server(|mut ws| async move {
        // The default interval (20 s) would not ping within this wait.
        let pinged = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(msg)) = ws.recv().await {
                if matches!(msg, Message::Ping(_)) {
                    return true;
                }
            }
            false
        });
        let pinged = pinged.await.unwrap_or(false);
        ws.send(Message::text(if pinged { "pinged" } else { "no ping" })).await.unwrap();
        client_close(&mut ws).await
    });
    let run = connect(&["--ping-interval", "0.2", "--count", "1", &url], Input::Open);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "pinged\n");
    assert_eq!(server.join().unwrap(), Some(CloseCode::NORMAL));
}

#[test]
fn ping_timeout_fails_a_silent_connection() {
    let (url, server) = mock_server_raw(|tcp| async move {
        // Pings go unanswered, and nothing else is sent.
        let incoming = Incoming::read(tcp, Config::default().auto_pong(false)).await.unwrap();
        let mut ws = incoming.accept(Accept::default()).await.unwrap();
        client_close(&mut ws).await
    });
    let run = connect(
        &["--ping-interval", "0.2", "--ping-timeout", "0.3", "--timeout", "20", &url],
        Input::Open,
    );
    assert!(!run.status.success(), "{run:?}");
    assert!(
        !run.stderr.contains("timed out after"),
        "--timeout must not be what ended it: {run:?}"
    );
    assert_eq!(server.join().unwrap(), Some(CloseCode::INTERNAL_ERROR));
}

#[test]
fn reconnect_after_the_server_restarts_and_carries_on_with_stdin() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let mut server = serve_on(port);
    let mut child = Command::new(WSX)
        .args(["connect", "--reconnect", "--reconnect-max", "1", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    let log = line_reader(child.stderr.take().unwrap());
    let wait = Duration::from_secs(20);
    writeln!(stdin, "one").unwrap();
    assert_eq!(lines.recv_timeout(wait).as_deref(), Ok("one\n"));

    let _ = server.kill();
    let _ = server.wait();
    // At least one attempt finds nothing listening.
    let first = log.recv_timeout(wait).expect("no reconnect attempt logged");
    assert!(first.starts_with("wsx: reconnect attempt 1 to "), "{first:?}");
    thread::sleep(Duration::from_millis(1500));
    let mut server = serve_on(port);
    let mut logged = vec![first];
    loop {
        let line = log.recv_timeout(wait).unwrap_or_else(|_| panic!("no reconnect: {logged:?}"));
        logged.push(line.clone());
        if line.starts_with("wsx: reconnected to ") {
            break;
        }
        assert!(line.starts_with("wsx: reconnect attempt "), "{logged:?}");
    }
    assert!(logged.len() >= 3, "an attempt while the server was down: {logged:?}");
    assert!(logged[1].contains("refused"), "{logged:?}");

    // The same stdin carries on over the new connection.
    writeln!(stdin, "two").unwrap();
    assert_eq!(lines.recv_timeout(wait).as_deref(), Ok("two\n"));
    drop(stdin);
    let status = wait_exit(&mut child, wait);
    assert!(status.success(), "{status:?}");
    // The end of stdin is a normal end: no reconnect after it.
    assert_eq!(log.recv_timeout(wait), Err(mpsc::RecvTimeoutError::Disconnected));
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn reconnect_does_not_follow_a_normal_end_or_a_first_failure() {
    let server = Server::start(&[]);
    let run = connect(&["--reconnect", &server.url()], Input::Bytes(b"hi\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "hi\n");
    assert_eq!(run.stderr, "", "{run:?}");
    // The first connection failing is reported, not retried.
    let url = format!("ws://127.0.0.1:{}/", free_port());
    let run = connect(&["--reconnect", &url], Input::Bytes(b"hi\n"));
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "refused");
}

#[test]
fn count_exits_after_that_many_messages() {
    let server = Server::start(&[]);
    let run = connect(&["--count", "1", &server.url()], Input::Bytes(b"one\ntwo\nthree\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "one\n");
}

#[test]
fn count_waits_for_messages_after_stdin_ends() {
    let (url, server) = mock_server(|mut ws| async move {
        // Later than the client's end of stdin: with --count, that must not close.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for text in ["a", "b", "c"] {
            ws.send(Message::text(text)).await.unwrap();
        }
        client_close(&mut ws).await
    });
    let run = connect(&["--count", "2", &url], Input::Bytes(b""));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "a\nb\n");
    assert_eq!(server.join().unwrap(), Some(CloseCode::NORMAL));
}

#[test]
fn interactive_replies_are_printed_as_they_arrive_and_eof_closes() {
    let server = Server::start(&[]);
    let mut child = Command::new(WSX)
        .args(["connect", &server.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    // Each reply must show up while stdin is still open: nothing waits for the end of input.
    for text in ["hello", "again"] {
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
        let line = lines.recv_timeout(HANG_GUARD).expect("no reply printed");
        assert_eq!(line, format!("{text}\n"));
    }
    drop(stdin); // Ctrl-D
    let run = finish(child, None);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(lines.recv_timeout(HANG_GUARD), Err(mpsc::RecvTimeoutError::Disconnected));
}

#[test]
fn server_close_is_reported_on_stderr_with_its_exit_status() {
    // (code, reason, whether wsx exits 0)
    let cases = [
        (1000, "done", true),
        (1001, "restarting", true),
        (1011, "oops", false),
        (4000, "", false),
    ];
    for (code, reason, ok) in cases {
        let (url, server) = mock_server(move |mut ws| async move {
            ws.send(Message::text("before close")).await.unwrap();
            ws.close(Some(CloseFrame::new(CloseCode(code), reason))).await.unwrap();
            while ws.recv().await.is_some() {}
            None
        });
        // stdin stays open: only the server's close ends the session.
        let run = connect(&[&url], Input::Open);
        server.join().unwrap();
        assert_eq!(run.status.success(), ok, "{code}: {run:?}");
        assert_eq!(run.stdout_text(), "before close\n", "{code}");
        let expected = format!("closed: {code} {reason}");
        assert_eq!(run.stderr.trim_end(), expected.trim_end(), "{code}");
    }
}

#[test]
fn headers_subprotocols_and_origin_are_sent() {
    let (url, server) = mock_server_raw(|tcp| async move {
        let incoming = Incoming::read(tcp, Config::default()).await.unwrap();
        let headers = incoming.request().headers();
        let get = |name: &str| {
            headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>().join(",")
        };
        let report = format!(
            "token={} origin={} protocols={}",
            get("x-token"),
            get("origin"),
            get("sec-websocket-protocol")
        );
        let accept = Accept { protocol: Some("chat.v2".into()), ..Accept::default() };
        let mut ws = incoming.accept(accept).await.unwrap();
        ws.send(Message::text(report)).await.unwrap();
        client_close(&mut ws).await
    });
    let run = connect(
        &[
            "-H",
            "X-Token: secret value",
            "--header=x-token:second",
            "--protocol",
            "chat.v2",
            "--protocol",
            "chat.v1",
            "--origin",
            "https://example.test",
            "--count",
            "1",
            &url,
        ],
        Input::Open,
    );
    assert!(run.status.success(), "{run:?}");
    let protocols = run.stdout_text().split("protocols=").nth(1).unwrap().replace(' ', "");
    assert_eq!(protocols, "chat.v2,chat.v1\n");
    assert!(
        run.stdout_text()
            .starts_with("token=secret value,second origin=https://example.test protocols="),
        "{run:?}"
    );
    assert_eq!(server.join().unwrap(), Some(CloseCode::NORMAL));
}

#[test]
fn timeout_closes_and_fails() {
    let (url, server) = mock_server(|mut ws| async move {
        // Says nothing; the client must give up and close.
        client_close(&mut ws).await
    });
    let run = connect(&["--timeout", "0.3", &url], Input::Open);
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "timed out");
    assert_eq!(server.join().unwrap(), Some(CloseCode::NORMAL));
}

#[test]
fn connection_refused_names_the_address() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(&[&url], Input::Bytes(b"hi\n"));
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, &format!("127.0.0.1:{port}"));
    assert!(run.stderr.to_lowercase().contains("refused"), "{run:?}");
    assert_eq!(run.stdout, b"");
}

#[test]
fn invalid_urls_are_clear_errors() {
    for url in ["not a url", "http://127.0.0.1/", "ws://"] {
        let run = connect(&[url], Input::Bytes(b""));
        assert!(!run.status.success(), "{url}: {run:?}");
        assert_one_error_line(&run, "invalid URL");
    }
}

#[test]
fn refused_upgrade_shows_status_and_body() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let body = "<h1>Bad token</h1>\n<p>ask an admin</p>\n";
        write!(
            tcp,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let run = connect(&[&url], Input::Bytes(b"hi\n"));
    server.join().unwrap();
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "401 Unauthorized");
    // The body, on the same line.
    assert!(run.stderr.contains("<h1>Bad token</h1> <p>ask an admin</p>"), "{run:?}");
}

#[test]
fn invalid_utf8_on_stdin_is_an_error() {
    let server = Server::start(&[]);
    let run = connect(&[&server.url()], Input::Bytes(b"\xff\xfe\n"));
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "UTF-8");
}

#[test]
fn wss_verifies_certificates() {
    let dir = tls_fixtures();
    let cert = dir.join("leaf.pem");
    let key = dir.join("leaf.key");
    let server =
        Server::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let url = format!("wss://localhost:{}/", server.port);

    // Signed by a CA nobody trusts by default.
    let run = connect(&[&url], Input::Bytes(b"hi\n"));
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "certificate");

    let ca = dir.join("ca.pem");
    let run = connect(&["--cacert", ca.to_str().unwrap(), &url], Input::Bytes(b"hi\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "hi\n");

    let run = connect(&["--insecure", &url], Input::Bytes(b"hi\n"));
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout_text(), "hi\n");
    assert!(run.stderr.contains("--insecure"), "the danger is announced: {run:?}");

    let run = connect(&["--cacert", key.to_str().unwrap(), &url], Input::Bytes(b"hi\n"));
    assert!(!run.status.success(), "{run:?}");
    assert_one_error_line(&run, "--cacert");

    let _ = std::fs::remove_dir_all(dir);
}

// --- helpers ---------------------------------------------------------------------------------

enum Input {
    /// Written to stdin, which is then closed.
    Bytes(&'static [u8]),
    /// The same, owned.
    Owned(Vec<u8>),
    /// stdin stays open until the process exits.
    Open,
}

struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("status", &self.status)
            .field("stdout", &String::from_utf8_lossy(&self.stdout))
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// Runs `wsx connect ARGS` to completion.
fn connect(args: &[&str], input: Input) -> Run {
    let mut child = Command::new(WSX)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = match input {
        Input::Bytes(bytes) => bytes.to_vec(),
        Input::Owned(bytes) => bytes,
        Input::Open => return finish(child, Some(stdin)),
    };
    // From another thread, while stdout is read: a large input would otherwise fill both pipes
    // (wsx blocked writing the echo, this test blocked writing stdin).
    let writer = thread::spawn(move || {
        // wsx may exit before reading everything (an error, --count): ignore EPIPE.
        let _ = stdin.write_all(&bytes);
    });
    let run = finish(child, None);
    writer.join().unwrap();
    run
}

/// Waits for `child` (killing it after [`HANG_GUARD`]), collecting its output; `stdin` is
/// closed only after it exits.
fn finish(mut child: Child, stdin: Option<ChildStdin>) -> Run {
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("wsx did not exit within {HANG_GUARD:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    drop(stdin);
    Run {
        status,
        stdout: stdout.join().unwrap(),
        stderr: String::from_utf8(stderr.join().unwrap()).unwrap(),
    }
}

/// `wsx serve` on `port`, once it accepts connections.
fn serve_on(port: u16) -> Child {
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(WSX)
        .args(["serve", "--listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        if started.elapsed() > HANG_GUARD || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("wsx serve did not listen on {listen}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("wsx did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `len` bytes from a xorshift generator seeded with `seed`.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            pipe.read_to_end(&mut out).unwrap();
        }
        out
    })
}

/// The lines of `pipe`, as they arrive.
fn line_reader(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Checks the error contract: a non-empty stderr of exactly one `wsx: error:` line that
/// contains `needle`.
fn assert_one_error_line(run: &Run, needle: &str) {
    let lines: Vec<_> = run.stderr.lines().filter(|l| !l.contains("warning")).collect();
    assert_eq!(lines.len(), 1, "one line expected: {run:?}");
    assert!(lines[0].starts_with("wsx: error: "), "{run:?}");
    assert!(lines[0].contains(needle), "{needle:?} expected: {run:?}");
}

/// A WebSocket server for one connection, running `script` on it in its own thread. Returns
/// the URL and the script's result: the close code the client sent, if the script reports it.
fn mock_server<F, Fut>(script: F) -> (String, JoinHandle<Option<CloseCode>>)
where
    F: FnOnce(WebSocket<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = Option<CloseCode>>,
{
    mock_server_raw(|tcp| async move { script(wsx::accept(tcp).await.unwrap()).await })
}

/// Like [`mock_server`], but the script gets the TCP connection before the handshake, and
/// returns what it likes.
fn mock_server_raw<F, Fut, T>(script: F) -> (String, JoinHandle<T>)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            script(tcp).await
        })
    });
    (format!("ws://{addr}/"), handle)
}

/// Waits for the client's close and returns its code (data messages before it are ignored).
async fn client_close(ws: &mut WebSocket<tokio::net::TcpStream>) -> Option<CloseCode> {
    let mut code = None;
    while let Some(msg) = ws.recv().await {
        if let Ok(Message::Close(frame)) = msg {
            code = frame.map(|f| f.code);
        }
    }
    code
}
