//! TCP over WebSocket with the real binary: `wsx serve --to tcp://…` in front of TCP services
//! written here, and `wsx connect --listen tcp://…` in front of it, with plain TCP clients.

mod common;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{free_port, rss, Server, HANG_GUARD, WSX};
use wsx::{CloseCode, MaybeTlsStream, Message, WebSocket};

/// A `wsx` process may hold this much while a reader is stalled (its RSS, from VmRSS).
const RSS_BOUND: u64 = 64 << 20;

/// `wsx serve --to tcp://127.0.0.1:PORT` with one worker thread.
fn bridge_server(target_port: u16) -> Server {
    Server::start(&["--threads", "1", "--to", &format!("tcp://127.0.0.1:{target_port}")])
}

/// `wsx connect --listen tcp://127.0.0.1:0 URL`, killed when dropped.
struct Forwarder {
    child: Child,
    port: u16,
    /// What it printed on stderr after the first line.
    stderr: Arc<Mutex<String>>,
}

impl Forwarder {
    fn start(url: &str) -> Self {
        let mut child = Command::new(WSX)
            .args(["connect", "--listen", "tcp://127.0.0.1:0", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        // The first line names the address: "wsx: listening on tcp://127.0.0.1:PORT, …".
        let mut first = String::new();
        stderr.read_line(&mut first).unwrap();
        let port = first
            .strip_prefix("wsx: listening on tcp://127.0.0.1:")
            .and_then(|rest| rest.split(',').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {first:?}"));
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, port, stderr: log }
    }

    fn connect(&self) -> TcpStream {
        let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).unwrap();
        guard_socket(&tcp);
        tcp
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read and write timeouts at the hang guard: a stuck test fails instead of hanging.
fn guard_socket(tcp: &TcpStream) {
    tcp.set_read_timeout(Some(HANG_GUARD)).unwrap();
    tcp.set_write_timeout(Some(HANG_GUARD)).unwrap();
}

/// A loopback listener for a TCP service.
fn service() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Accepts one connection (within the hang guard).
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let started = Instant::now();
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                tcp.set_nonblocking(false).unwrap();
                guard_socket(&tcp);
                return tcp;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(started.elapsed() < HANG_GUARD, "no connection reached the service");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The test stream: byte `i` is byte `i % 8` of a hash of `i / 8`, so a lost, repeated or
/// reordered piece anywhere shows.
fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        *byte = splitmix(at / 8).to_le_bytes()[(at % 8) as usize];
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes `total` bytes of the pattern to `tcp`, counting them in `written` as they go.
fn write_pattern(mut tcp: TcpStream, total: u64, written: Arc<AtomicU64>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0; 256 << 10];
        let mut offset = 0;
        while offset < total {
            let n = (total - offset).min(buf.len() as u64) as usize;
            pattern(offset, &mut buf[..n]);
            tcp.write_all(&buf[..n]).unwrap();
            offset += n as u64;
            written.store(offset, Ordering::Relaxed);
        }
    })
}

/// Reads `total` bytes from `tcp` and checks each against the pattern; returns the first
/// offset that differs, if any.
fn check_pattern(tcp: &mut TcpStream, total: u64) -> Option<u64> {
    let mut buf = vec![0; 256 << 10];
    let mut expected = vec![0; 256 << 10];
    let mut offset = 0;
    while offset < total {
        let want = (total - offset).min(buf.len() as u64) as usize;
        let n = tcp.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "end of stream after {offset} of {total} bytes");
        pattern(offset, &mut expected[..n]);
        if buf[..n] != expected[..n] {
            let at = buf[..n].iter().zip(&expected[..n]).position(|(a, b)| a != b).unwrap();
            return Some(offset + at as u64);
        }
        offset += n as u64;
    }
    None
}

/// Waits until `written` stops growing for a second; returns its value then.
fn stalled(written: &AtomicU64) -> u64 {
    let started = Instant::now();
    let mut last = written.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(started.elapsed() < HANG_GUARD, "the writer never stalled");
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

async fn guard<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f).await.expect("no progress within the hang guard")
}

/// The data of every message until the close, and the close code.
async fn until_close(ws: &mut WebSocket<MaybeTlsStream>) -> (Vec<u8>, Option<CloseCode>) {
    let mut data = Vec::new();
    loop {
        match guard(ws.recv()).await {
            Some(Ok(Message::Binary(b))) => data.extend_from_slice(&b),
            Some(Ok(Message::Close(frame))) => return (data, frame.map(|f| f.code)),
            Some(Ok(other)) => assert!(!other.is_data(), "a text message from the bridge"),
            Some(Err(e)) => panic!("client error: {e}"),
            None => return (data, None),
        }
    }
}

#[test]
fn a_hundred_megabytes_cross_both_bridges_unchanged_both_ways() {
    const TOTAL: u64 = 100 << 20;
    let (listener, port) = service();
    // The echo service checks what arrives (client to service) before sending it back.
    let echo = thread::spawn(move || {
        let mut tcp = accept(&listener);
        let mut buf = vec![0; 256 << 10];
        let mut expected = vec![0; 256 << 10];
        let mut offset = 0u64;
        let mut first_difference = None;
        loop {
            let n = tcp.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            pattern(offset, &mut expected[..n]);
            if first_difference.is_none() && buf[..n] != expected[..n] {
                first_difference = Some(offset);
            }
            tcp.write_all(&buf[..n]).unwrap();
            offset += n as u64;
        }
        (offset, first_difference)
    });
    let server = bridge_server(port);
    let forwarder = Forwarder::start(&server.url());
    let mut client = forwarder.connect();
    let started = Instant::now();
    let writer = write_pattern(client.try_clone().unwrap(), TOTAL, Arc::default());
    // And back (service to client).
    assert_eq!(check_pattern(&mut client, TOTAL), None, "{}", forwarder.stderr());
    let secs = started.elapsed().as_secs_f64();
    writer.join().unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    // The client's end travels as a 1000 close and the service's TCP sees the end.
    let (received, first_difference) = echo.join().unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(first_difference, None);
    // The bridges then end the client's connection too.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    eprintln!("100 MiB each way in {secs:.2} s: {:.0} MB/s each way", TOTAL as f64 / 1e6 / secs);
}

#[test]
fn a_tcp_service_that_stops_reading_stalls_the_client_in_bounded_memory() {
    const OFFERED: u64 = 64 << 20;
    let (listener, port) = service();
    let server = bridge_server(port);
    let forwarder = Forwarder::start(&server.url());
    let client = forwarder.connect();
    let (tx, rx) = mpsc::channel::<()>();
    // The service takes the connection and reads nothing until told.
    let sink = thread::spawn(move || {
        let mut tcp = accept(&listener);
        rx.recv().unwrap();
        check_pattern(&mut tcp, OFFERED)
    });
    let written = Arc::new(AtomicU64::new(0));
    let writer = write_pattern(client, OFFERED, written.clone());
    let at_stall = stalled(&written);
    let (server_rss, forwarder_rss) = (rss(server.child.id()), rss(forwarder.child.id()));
    eprintln!(
        "stalled after {} MiB; RSS serve {} MiB, connect {} MiB",
        at_stall >> 20,
        server_rss >> 20,
        forwarder_rss >> 20
    );
    assert!(at_stall < OFFERED, "all {OFFERED} bytes were taken: nothing held the writer back");
    assert!(server_rss < RSS_BOUND, "wsx serve holds {server_rss} bytes");
    assert!(forwarder_rss < RSS_BOUND, "wsx connect holds {forwarder_rss} bytes");
    // Once the service reads, everything arrives, in order.
    tx.send(()).unwrap();
    assert_eq!(sink.join().unwrap(), None, "{}", forwarder.stderr());
    writer.join().unwrap();
}

#[test]
fn a_tcp_client_that_stops_reading_stalls_the_service_in_bounded_memory() {
    const OFFERED: u64 = 64 << 20;
    let (listener, port) = service();
    let written = Arc::new(AtomicU64::new(0));
    let source = {
        let written = written.clone();
        thread::spawn(move || {
            let tcp = accept(&listener);
            write_pattern(tcp, OFFERED, written).join().unwrap();
        })
    };
    let server = bridge_server(port);
    let forwarder = Forwarder::start(&server.url());
    let mut client = forwarder.connect();
    let at_stall = stalled(&written);
    let (server_rss, forwarder_rss) = (rss(server.child.id()), rss(forwarder.child.id()));
    eprintln!(
        "stalled after {} MiB; RSS serve {} MiB, connect {} MiB",
        at_stall >> 20,
        server_rss >> 20,
        forwarder_rss >> 20
    );
    assert!(at_stall < OFFERED, "all {OFFERED} bytes were taken: nothing held the writer back");
    assert!(server_rss < RSS_BOUND, "wsx serve holds {server_rss} bytes");
    assert!(forwarder_rss < RSS_BOUND, "wsx connect holds {forwarder_rss} bytes");
    assert_eq!(check_pattern(&mut client, OFFERED), None);
    source.join().unwrap();
}

/// A service that takes one connection and reads nothing until told; then reads to the end
/// and returns how many bytes came and how the stream ended (`Ok`: a clean end of stream).
fn deaf_service(
    listener: TcpListener,
    read: mpsc::Receiver<()>,
) -> JoinHandle<(u64, io::Result<()>)> {
    thread::spawn(move || {
        let mut tcp = accept(&listener);
        read.recv().unwrap();
        let mut buf = vec![0; 256 << 10];
        let mut total = 0u64;
        loop {
            match tcp.read(&mut buf) {
                Ok(0) => return (total, Ok(())),
                Ok(n) => total += n as u64,
                Err(e) => return (total, Err(e)),
            }
        }
    })
}

#[test]
fn a_websocket_peer_stuck_behind_a_tcp_service_that_does_not_read_is_dropped_by_keepalive() {
    let (listener, port) = service();
    let (tx, rx) = mpsc::channel::<()>();
    let sink = deaf_service(listener, rx);
    let target = format!("tcp://127.0.0.1:{port}");
    let server = Server::start(&[
        "--threads",
        "1",
        "--ping-interval",
        "1",
        "--ping-timeout",
        "1",
        "--close-timeout",
        "1",
        "--to",
        &target,
    ]);
    block_on(async {
        // No keepalive of the client's own: the server is the one to notice.
        let quiet = wsx::Config::default().ping_interval(None);
        let (ws, _) =
            guard(wsx::ClientBuilder::new(server.url()).config(quiet).connect()).await.unwrap();
        // 50 MiB for a service that reads none of it: the writer ends up stuck in `send` and
        // the server hears nothing from the client (its pongs sit behind the data). The
        // reader sees what the server sends meanwhile: pings, then its close.
        let (mut reader, mut writer) = ws.split();
        let started = Instant::now();
        let flood = async {
            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
            for i in 0..50u64 {
                if let Err(e) = writer.send(Message::Binary(chunk.clone())).await {
                    return (i, e.to_string());
                }
            }
            panic!("all 50 MiB went to a service that reads nothing");
        };
        let closed = async {
            loop {
                match reader.recv().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("no close frame from the server: {e}"),
                    None => return None,
                }
            }
        };
        let measure = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            rss(server.child.id())
        };
        let ((sent, error), code, held) =
            guard(async { tokio::join!(flood, closed, measure) }).await;
        let dropped = started.elapsed();
        eprintln!(
            "closed with {code:?}, dropped after {dropped:?} ({sent} MiB sent: {error}); server \
             RSS {} MiB while stuck",
            held >> 20
        );
        assert_eq!(code, Some(CloseCode::INTERNAL_ERROR), "keepalive's close code");
        assert!(sent < 50);
        assert!(held < RSS_BOUND, "wsx serve holds {held} bytes");
    });
    // The service's connection was reset, not ended cleanly: its data was cut short.
    tx.send(()).unwrap();
    let (received, end) = sink.join().unwrap();
    let err = end.expect_err("a clean end of stream after a keepalive failure");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "after {received} bytes: {err}");
}

/// Bytes the kernel holds on the loopback connections to `port`: the send queues of the
/// sockets connected to it and the receive queues of the sockets it accepted (from
/// /proc/net/tcp).
fn kernel_queued(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    let mut total = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields[1], fields[2], fields[4]);
        let (tx, rx) = queues.split_once(':').unwrap();
        if port_of(remote) == port {
            total += u64::from_str_radix(tx, 16).unwrap();
        }
        if port_of(local) == port {
            total += u64::from_str_radix(rx, 16).unwrap();
        }
    }
    total
}

#[test]
fn pings_and_the_close_get_through_while_the_tcp_service_does_not_read() {
    let (listener, port) = service();
    let (tx, rx) = mpsc::channel::<()>();
    let sink = deaf_service(listener, rx);
    let server = bridge_server(port);
    let sent = block_on(async {
        let (mut ws, _) = guard(wsx::connect(&server.url())).await.unwrap();
        // Data for a service that reads none of it, 64 KiB at a time, until at least 512 KiB
        // of it waits in the bridge's backlog (1 MiB) rather than in the kernel's buffers
        // toward the service (which take a few MiB first). After each piece a ping: answered
        // only once the bridge has received everything before it.
        let mut sent = 0u64;
        loop {
            ws.send(Message::binary(vec![b'y'; 64 << 10])).await.unwrap();
            sent += 64 << 10;
            ws.send(Message::Ping(b"ping"[..].into())).await.unwrap();
            match tokio::time::timeout(Duration::from_secs(5), ws.recv()).await {
                Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"ping"),
                other => panic!("expected the pong within 5 s, got {other:?} ({sent} sent)"),
            }
            let in_kernel = kernel_queued(port);
            if sent.saturating_sub(in_kernel) >= 512 << 10 {
                eprintln!("{} KiB sent, {} KiB of it in the kernel", sent >> 10, in_kernel >> 10);
                break;
            }
            assert!(sent < 64 << 20, "the kernel took {in_kernel} of {sent} bytes");
        }
        ws.close(None).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), until_close(&mut ws)).await {
            Ok((data, code)) => {
                assert!(data.is_empty());
                assert_eq!(code, Some(CloseCode::NORMAL));
            }
            Err(_) => panic!("no close reply within 5 s"),
        }
        sent
    });
    // The service then gets all of it, and the end of the stream after it.
    tx.send(()).unwrap();
    let (received, end) = sink.join().unwrap();
    end.unwrap();
    assert_eq!(received, sent);
}

#[test]
fn a_tcp_end_while_the_backlog_is_full_delivers_everything_before_the_close() {
    // The service ends its side (a FIN) while the bridge holds a full backlog for it, then
    // reads nothing for longer than the close timeout, then all of it.
    let (listener, port) = service();
    let (end_tx, end_rx) = mpsc::channel::<()>();
    let sink = thread::spawn(move || {
        let mut tcp = accept(&listener);
        end_rx.recv().unwrap();
        tcp.shutdown(Shutdown::Write).unwrap();
        thread::sleep(Duration::from_secs(3));
        let mut buf = vec![0; 256 << 10];
        let mut total = 0u64;
        loop {
            match tcp.read(&mut buf) {
                Ok(0) => return (total, Ok(())),
                Ok(n) => total += n as u64,
                Err(e) => return (total, Err(e)),
            }
        }
    });
    let target = format!("tcp://127.0.0.1:{port}");
    let server = Server::start(&["--threads", "1", "--close-timeout", "2", "--to", &target]);
    let (sent, code) = block_on(async {
        let (ws, _) = guard(wsx::connect(&server.url())).await.unwrap();
        // A client that reads while it writes: it sees the bridge's close as soon as it comes,
        // and its writer stops there (its close reply goes after the data it sent).
        let (mut reader, mut writer) = ws.split();
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let writing = tokio::spawn(async move {
            let chunk = bytes::Bytes::from(vec![b'w'; 64 << 10]);
            for _ in 0..(32 << 4) {
                if writer.send(Message::Binary(chunk.clone())).await.is_err() {
                    break;
                }
                counter.fetch_add(64 << 10, Ordering::Relaxed);
            }
        });
        let closed = tokio::spawn(async move {
            loop {
                match reader.recv().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                    Some(Ok(m)) => assert!(!m.is_data(), "data from a service that sent none"),
                    Some(Err(e)) => panic!("client error: {e}"),
                    None => return None,
                }
            }
        });
        // Once the writer is held back the bridge's backlog is full: now TCP ends.
        let at_stall = async_stalled(&written).await;
        assert!(at_stall < 32 << 20, "the writer was never held back");
        end_tx.send(()).unwrap();
        let code = guard(closed).await.unwrap();
        guard(writing).await.unwrap();
        (written.load(Ordering::Relaxed), code)
    });
    let (received, end) = sink.join().unwrap();
    eprintln!("{} MiB sent, {} MiB received, then {end:?}", sent >> 20, received >> 20);
    assert_eq!(code, Some(CloseCode::NORMAL));
    end.expect("the service's connection was not ended cleanly");
    assert_eq!(received, sent, "what the client sent before the close reached the service");
}

/// Waits until `written` stops growing for a second; returns its value then.
async fn async_stalled(written: &AtomicU64) -> u64 {
    let started = Instant::now();
    let mut last = written.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(started.elapsed() < HANG_GUARD, "the writer never stalled");
    }
}

#[test]
fn an_unreachable_target_refuses_the_upgrade_with_502() {
    let server = bridge_server(free_port());
    block_on(async {
        match guard(wsx::connect(&server.url())).await {
            Err(wsx::Error::Rejected(response)) => assert_eq!(response.status(), 502),
            Err(e) => panic!("expected a 502, got {e}"),
            Ok(_) => panic!("the upgrade was accepted"),
        }
    });
    // Through `wsx connect --listen`: the TCP client's connection ends, and stderr says why.
    let forwarder = Forwarder::start(&server.url());
    let mut client = forwarder.connect();
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty());
    let started = Instant::now();
    while !forwarder.stderr().contains("502") {
        assert!(started.elapsed() < HANG_GUARD, "stderr: {}", forwarder.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let stderr = forwarder.stderr();
    assert!(stderr.contains("refused the WebSocket upgrade with 502 Bad Gateway"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn the_tcp_side_ending_closes_the_websocket_with_1000() {
    let (listener, port) = service();
    let service = thread::spawn(move || {
        let mut tcp = accept(&listener);
        tcp.write_all(b"hello from TCP").unwrap();
        // Gone: a FIN, after the bytes.
    });
    let server = bridge_server(port);
    block_on(async {
        let (mut ws, _) = guard(wsx::connect(&server.url())).await.unwrap();
        let (data, code) = until_close(&mut ws).await;
        assert_eq!(data, b"hello from TCP");
        assert_eq!(code, Some(CloseCode::NORMAL));
    });
    service.join().unwrap();
}

#[test]
fn a_tcp_reset_closes_the_websocket_with_1011() {
    let (listener, port) = service();
    let (tx, rx) = mpsc::channel::<()>();
    let service = thread::spawn(move || {
        let tcp = accept(&listener);
        rx.recv().unwrap();
        // SO_LINGER 0: closing sends a reset.
        tcp.set_nonblocking(true).unwrap();
        block_on(async {
            let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
            tcp.set_zero_linger().unwrap();
        });
    });
    let server = bridge_server(port);
    block_on(async {
        let (mut ws, _) = guard(wsx::connect(&server.url())).await.unwrap();
        tx.send(()).unwrap();
        let (data, code) = until_close(&mut ws).await;
        assert!(data.is_empty());
        assert_eq!(code, Some(CloseCode::INTERNAL_ERROR));
    });
    service.join().unwrap();
}

#[test]
fn a_websocket_close_reaches_tcp_as_its_end_after_the_data() {
    let (listener, port) = service();
    let service = thread::spawn(move || {
        let mut tcp = accept(&listener);
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).unwrap();
        got
    });
    let server = bridge_server(port);
    block_on(async {
        let (mut ws, _) = guard(wsx::connect(&server.url())).await.unwrap();
        // A text message's UTF-8 goes to TCP as it is, like a binary one's bytes.
        ws.send(Message::text("héllo ")).await.unwrap();
        ws.send(Message::binary(&b"\x00\xffbytes"[..])).await.unwrap();
        ws.close(None).await.unwrap();
        let (data, code) = until_close(&mut ws).await;
        assert!(data.is_empty());
        assert_eq!(code, Some(CloseCode::NORMAL));
    });
    assert_eq!(service.join().unwrap(), b"h\xc3\xa9llo \x00\xffbytes");
}

#[test]
fn bridge_options_are_checked_before_anything_starts() {
    let run = |args: &[&str]| {
        let output = Command::new(WSX).args(args).stdin(Stdio::null()).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // Another mode as well.
    for other in [&["--pubsub"][..], &["--exec", "cat"], &["--sh", "cat"]] {
        let mut args = vec!["serve", "--to", "tcp://127.0.0.1:9"];
        args.extend_from_slice(other);
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("cannot be used with"), "{args:?}: {stderr}");
    }
    for bad in ["127.0.0.1:9", "tcp://127.0.0.1", "http://127.0.0.1:9"] {
        let (code, stderr) = run(&["serve", "--to", bad]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("tcp://HOST:PORT") || stderr.contains("no port"), "{stderr}");
        let (code, stderr) = run(&["connect", "--listen", bad, "ws://127.0.0.1:9/"]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
    }
    // stdin and stdout options make no sense for a forwarder.
    let (code, stderr) =
        run(&["connect", "--listen", "tcp://127.0.0.1:0", "--count", "1", "ws://127.0.0.1:9/"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn server_shutdown_closes_bridges_with_1001_and_ends_their_tcp() {
    let (listener, port) = service();
    let service = thread::spawn(move || {
        let mut tcp = accept(&listener);
        tcp.write_all(b"up").unwrap();
        // The server's shutdown reaches TCP as its end.
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).unwrap();
        got
    });
    let server = bridge_server(port);
    block_on(async {
        let (mut ws, _) = guard(wsx::connect(&server.url())).await.unwrap();
        ws.send(Message::binary(&b"before"[..])).await.unwrap();
        match guard(ws.recv()).await {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"up"),
            other => panic!("expected the service's bytes, got {other:?}"),
        }
        let pid = rustix::process::Pid::from_raw(server.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let (data, code) = until_close(&mut ws).await;
        assert!(data.is_empty());
        assert_eq!(code, Some(CloseCode::GOING_AWAY));
    });
    assert_eq!(service.join().unwrap(), b"before");
}
