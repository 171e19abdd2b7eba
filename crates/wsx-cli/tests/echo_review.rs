//! Review of the echo loop's shape (`serve::echo`: room in the send queue first, then receive,
//! except while a streamed message arrives): how it meets a client that does not read its
//! echoes (timers, shutdown), a close of ours followed by messages from the peer, and control
//! frames between the chunks of a streamed message. Frames are written by hand.
//!
//! Timeouts here are hang guards, never assertions about speed.
#![cfg(target_os = "linux")]

mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::raw::*;
use common::{free_port, Response, Server, HANG_GUARD, WSX};

/// Without keepalive, the only way out for an echo that waits for room in front of a client
/// that never reads is the server's shutdown. The wait is now inside `next_or_stop`, so the
/// echo sees the shutdown, sends its 1001 and gives up on it after the close timeout: the
/// server exits on its own, without dropping the connection at the shutdown timeout. (Before
/// 181dfd1 the echo awaited `poll_ready` outside `next_or_stop`, so with no timer the
/// connection sat there until the shutdown timeout dropped it.)
#[test]
fn sigterm_reaches_an_echo_waiting_for_room_with_no_keepalive() {
    let (mut child, port, log) =
        serve_logged(&["--close-timeout", "1", "--shutdown-timeout", "30"]);

    let mut ws = Raw::upgrade_with_recv_buffer(port, 4096);
    let stall = write_messages_until_stalled(&mut ws, Duration::from_secs(1));
    assert!(!stall.reset, "the server reset the connection before the signal");
    terminate(child.id());

    let status = wait_exit(&mut child);
    let log = log.join().unwrap();
    assert!(status.success(), "wsx serve exited with {status}: {log}");
    assert!(
        !log.contains("did not close in time"),
        "the echo waiting for room never saw the shutdown; it was dropped: {log}"
    );
    drop(ws);
}

/// A client that floods and never reads, with no keepalive: the idle timeout still runs while
/// the echo waits for room, closes, and the connection ends (the close timeout, since the
/// client never answers).
#[test]
fn the_idle_timeout_ends_a_client_that_never_reads() {
    let server = Server::start(&[
        "--no-deflate",
        "--ping-interval",
        "0",
        "--idle-timeout",
        "3",
        "--close-timeout",
        "1",
    ]);
    let mut ws = Raw::upgrade_with_recv_buffer(server.port, 4096);
    wait_for_connections(server.port, 1);
    // Stalled well within the idle timeout: after it the server reads (and discards) again,
    // waiting for a close reply, so a stall detected later would never come.
    let stall = write_messages_until_stalled(&mut ws, Duration::from_millis(200));
    eprintln!("writes stalled after {} bytes (reset: {})", stall.written, stall.reset);
    wait_for_connections(server.port, 0);
    // The end of the stream comes after what the server managed to write.
    let _ = read_to_end(&mut ws.reader);
}

/// Our close (the idle timeout) then data from the peer, sent before it saw that close: the
/// data is not echoed (RFC 6455 §5.5.1), the connection does not fail, and the peer's close
/// reply completes the handshake. With room-first, `poll_ready`'s `Closed` is the turn that
/// stops the echo (`Turn::SendClosed`).
#[test]
fn messages_after_our_idle_close_are_not_echoed_and_the_handshake_completes() {
    let server = Server::start(&["--ping-interval", "0", "--idle-timeout", "1"]);
    let mut ws = Raw::upgrade(server.port, &[]);
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1001);
    ws.send(&frame(true, OP_TEXT, b"late", MASK));
    ws.send(&frame(true, OP_BINARY, &[1; 70_000], MASK));
    ws.send(&frame(true, OP_CLOSE, &1000u16.to_be_bytes(), MASK));
    ws.expect_end();
}

/// A streamed message (past the 64 KiB threshold) with a ping between its fragments: the echo
/// comes back whole, the ping is answered, and the echo loop leaves streaming: the next small
/// message is echoed as usual.
#[test]
fn a_ping_between_the_chunks_of_a_streamed_message_is_answered_and_echoing_goes_on() {
    let server = Server::start(&["--no-deflate"]);
    let mut ws = Raw::upgrade(server.port, &[]);
    let piece = |i: u8| vec![i; 100_000];
    ws.send(&frame(false, OP_BINARY, &piece(1), MASK));
    ws.send(&frame(true, OP_PING, b"between", MASK));
    ws.send(&frame(false, OP_CONTINUATION, &piece(2), MASK));
    ws.send(&frame(true, OP_CONTINUATION, &piece(3), MASK));
    ws.send(&frame(true, OP_TEXT, b"after", MASK));

    let mut message = Vec::new();
    let mut pong = false;
    let mut first = true;
    loop {
        let f = ws.read_frame().unwrap().expect("ended within the streamed echo");
        match f.opcode {
            OP_PONG => {
                assert_eq!(f.payload, b"between");
                pong = true;
            }
            op => {
                assert_eq!(op, if first { OP_BINARY } else { OP_CONTINUATION });
                first = false;
                message.extend_from_slice(&f.payload);
                if f.fin {
                    break;
                }
            }
        }
    }
    let expected: Vec<u8> = [piece(1), piece(2), piece(3)].concat();
    assert!(message == expected, "the streamed echo differs ({} bytes)", message.len());
    let next = loop {
        let f = ws.read_frame().unwrap().expect("no echo of the small message");
        if f.opcode == OP_PONG {
            pong = true;
            continue;
        }
        break f;
    };
    assert!(pong, "the ping between the chunks was not answered");
    assert_eq!((next.opcode, next.fin, next.payload.as_slice()), (OP_TEXT, true, &b"after"[..]));
    ws.send(&frame(true, OP_CLOSE, &1000u16.to_be_bytes(), MASK));
    assert_eq!(ws.expect_close().0, 1000);
    ws.expect_end();
}

// --- helpers ---------------------------------------------------------------------------------

fn terminate(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

fn connections(port: u16) -> usize {
    let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    tcp.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let response = Response::parse(&read_to_end(&mut tcp));
    assert_eq!(response.status, 200, "{response:?}");
    let body = String::from_utf8(response.body).unwrap();
    let rest = body.trim().strip_prefix("{\"connections\":");
    let count = rest.map(|r| r.split([',', '}']).next().unwrap_or(""));
    count.and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("unexpected /stats: {body}"))
}

fn wait_for_connections(port: u16, n: usize) {
    let started = Instant::now();
    loop {
        let now = connections(port);
        if now == n {
            return;
        }
        assert!(started.elapsed() < HANG_GUARD, "/stats stuck at {now} connections, not {n}");
        thread::sleep(Duration::from_millis(25));
    }
}

/// Writes 1 KiB binary messages, never reading, until a write makes no progress for a while
/// (`stalled`) or the server resets the connection.
fn write_messages_until_stalled(ws: &mut Raw, stalled: Duration) -> Stall {
    ws.tcp.set_write_timeout(Some(stalled)).unwrap();
    let one = frame(true, OP_BINARY, &[0x5a; 1024], MASK);
    let pending: Vec<u8> = one.iter().copied().cycle().take(one.len() * 64).collect();
    let mut offset = 0;
    let mut written = 0u64;
    let started = Instant::now();
    loop {
        assert!(written < 256 << 20, "{written} bytes were taken in without pushback");
        assert!(started.elapsed() < HANG_GUARD, "{written} bytes written");
        if offset == pending.len() {
            offset = 0;
        }
        match ws.tcp.write(&pending[offset..]) {
            Ok(n) => {
                offset += n;
                written += n as u64;
            }
            Err(e) => {
                ws.tcp.set_write_timeout(Some(HANG_GUARD)).unwrap();
                let reset = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => false,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => true,
                    _ => panic!("write failed after {written} bytes: {e}"),
                };
                return Stall { written, reset };
            }
        }
    }
}

struct Stall {
    written: u64,
    reset: bool,
}

/// The same shutdown, but while the echo of a streamed message waits for room (in
/// `echo_chunk`'s `feed_chunk`): the chunk's future is awaited through `next_or_stop` too, so
/// the shutdown reaches it and the client gets its 1001 instead of the connection being
/// dropped at the shutdown timeout (as it was before: found in review).
#[test]
fn sigterm_reaches_an_echo_of_a_streamed_message_waiting_for_room() {
    let (mut child, port, log) = serve_logged(&[
        "--close-timeout",
        "1",
        "--shutdown-timeout",
        "3",
        "--echo-backlog",
        "65536",
    ]);

    let mut ws = Raw::upgrade_with_recv_buffer(port, 4096);
    // A 60 MiB binary message in four 15 MiB fragments (masking key 0: the payload goes as it
    // is), written until stalled: far more than the kernel buffers on both sides hold.
    let fragment: u64 = 15 << 20;
    ws.tcp.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let zeros = vec![0u8; 64 << 10];
    let mut written = 0u64;
    'message: for i in 0..4u8 {
        let opcode = if i == 0 { OP_BINARY } else { OP_CONTINUATION };
        let head = frame_header(i == 3, opcode, fragment, [0; 4]);
        ws.tcp.set_write_timeout(Some(HANG_GUARD)).unwrap();
        ws.send(&head);
        ws.tcp.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut left = fragment;
        while left > 0 {
            match ws.tcp.write(&zeros[..zeros.len().min(left as usize)]) {
                Ok(n) => {
                    written += n as u64;
                    left -= n as u64;
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    break 'message
                }
                Err(e) => panic!("write failed after {written} bytes: {e}"),
            }
        }
        assert!(i < 3, "the whole message was taken in without pushback");
    }
    eprintln!("streamed message stalled after {written} bytes");
    terminate(child.id());

    let status = wait_exit(&mut child);
    let log = log.join().unwrap();
    assert!(status.success(), "wsx serve exited with {status}: {log}");
    assert!(
        !log.contains("did not close in time"),
        "the streamed echo waiting for room never saw the shutdown; it was dropped: {log}"
    );
    drop(ws);
}

/// `wsx serve --no-deflate --ping-interval 0 EXTRA…` on a free port, its stderr (at `info`)
/// collected by a thread until it exits: the child, the port, and the log to come.
fn serve_logged(extra: &[&str]) -> (Child, u16, thread::JoinHandle<String>) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(WSX)
        .args(["serve", "--listen", &listen, "--no-deflate", "--ping-interval", "0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(&listen).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "wsx serve exited");
        assert!(started.elapsed() < HANG_GUARD, "wsx serve never listened");
        thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = child.stderr.take().unwrap();
    let log = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (child, port, log)
}

/// Waits for `child` to exit (within the hang guard).
fn wait_exit(child: &mut Child) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < HANG_GUARD, "wsx serve did not exit");
        thread::sleep(Duration::from_millis(20));
    }
}
