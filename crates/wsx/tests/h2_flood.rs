//! Hostile HTTP/2 peers against a WebSocket server built as `wsx serve` builds its h2
//! connections (`wsx::h2::server_builder`, `accept`, a task per WebSocket), on loopback h2c:
//!
//! - a client opening 10,000 extended CONNECT streams on one connection: at most
//!   `MAX_CONCURRENT_STREAMS` (256) are open at once, the rest are refused with
//!   RST_STREAM(REFUSED_STREAM), and past `h2`'s budget of 1,024 refusals the connection ends
//!   with GOAWAY(ENHANCE_YOUR_CALM), which ends its open WebSockets too, so the peer never
//!   gets to send the rest of its 10,000 (measured: 1,281 streams processed, 256 + 1,024 + 1);
//!   memory stays bounded (measured: under 1 MiB of RSS growth);
//! - rapid reset (CVE-2023-44487): CONNECT then RST_STREAM, again and again, ends in
//!   GOAWAY(ENHANCE_YOUR_CALM) after `h2`'s budget of resets before accept;
//! - meanwhile WebSockets on another connection keep echoing.
//!
//! The hostile peer writes raw frames: `h2`'s own client keeps to the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (it queues extra streams locally), so it cannot exceed
//! them, and a raw writer puts a HEADERS and its RST_STREAM in one segment, as an attacker does.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::guard;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use wsx::h2::{Http2Connection, MAX_CONCURRENT_STREAMS};
use wsx::proto::handshake::ServerPolicy;
use wsx::{Config, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connects_are_refused_past_the_limit_then_goaway() {
    let server = Server::start().await;
    let bystander = Bystander::start(server.addr).await;
    let rss_before = rss_kib();

    let (mut peer, mut frames) = Hostile::connect(server.addr).await;
    let mut sent = 0u32;
    // In batches, reading the answers meanwhile, until the server gives up on the connection.
    let mut report = Report::default();
    let mut rss_peak = rss_before;
    while sent < 10_000 && report.goaway.is_none() {
        let mut out = Vec::new();
        for _ in 0..200 {
            sent += 1;
            out.extend(connect_frame(2 * sent - 1));
        }
        if peer.write_all(&out).await.is_err() {
            break; // the server closed the connection after its GOAWAY
        }
        frames.drain_now(&mut report).await;
        rss_peak = rss_peak.max(rss_kib());
    }
    frames.until_goaway(&mut report).await;
    rss_peak = rss_peak.max(rss_kib());
    let (reason, last_stream) = report.goaway.expect("GOAWAY");
    eprintln!(
        "10,000 CONNECT flood: {sent} HEADERS sent, {} answered 200, {} RST_STREAM(REFUSED_STREAM), \
         {} other resets, GOAWAY({}) last stream {last_stream}; at most {} WebSockets open at \
         once on the connection; RSS {} KiB before, peak {} KiB (+{} KiB)",
        report.ok,
        report.refused,
        report.other_resets,
        reason_name(reason),
        server.max_open_per_connection(),
        rss_before,
        rss_peak,
        rss_peak.saturating_sub(rss_before),
    );
    assert_eq!(reason, ENHANCE_YOUR_CALM, "{report:?}");
    // h2 0.4.20, measured: the first 256 streams are opened (the GOAWAY names the 256th as
    // the last one processed), the next 1,024 are refused, and the 1,025th excess stream ends
    // the connection. Streams whose 200 was not written yet when GOAWAY came are not answered.
    let limit = MAX_CONCURRENT_STREAMS as usize;
    assert_eq!(last_stream, 2 * MAX_CONCURRENT_STREAMS - 1, "{report:?}");
    assert!(report.ok >= 1 && report.ok <= limit, "{report:?}");
    assert_eq!(report.refused, 1024, "{report:?}");
    assert_eq!(report.other_resets, 0, "{report:?}");
    assert!(server.max_open_per_connection() <= limit, "{}", server.max_open_per_connection());
    assert!(
        rss_peak.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew by {} KiB",
        rss_peak - rss_before
    );
    // GOAWAY ended the flood's WebSockets too; nothing is left behind on the server.
    guard("the flood's WebSockets to end", server.until_open(BYSTANDERS)).await;
    drop(peer);
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway() {
    let server = Server::start().await;
    let bystander = Bystander::start(server.addr).await;
    let rss_before = rss_kib();

    let (mut peer, mut frames) = Hostile::connect(server.addr).await;
    let mut report = Report::default();
    let mut pairs = 0u32;
    while pairs < 100_000 && report.goaway.is_none() {
        let mut out = Vec::new();
        // A HEADERS and its RST_STREAM(CANCEL) in one write: the server reads both before
        // its accept loop could take the stream.
        for _ in 0..10 {
            pairs += 1;
            let id = 2 * pairs - 1;
            out.extend(connect_frame(id));
            out.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
        }
        if peer.write_all(&out).await.is_err() {
            break;
        }
        frames.drain_now(&mut report).await;
    }
    frames.until_goaway(&mut report).await;
    let (reason, last_stream) = report.goaway.expect("GOAWAY");
    let rss_after = rss_kib();
    eprintln!(
        "rapid reset: {pairs} CONNECT+RST_STREAM pairs sent before GOAWAY({}) (last stream \
         {last_stream}), {} answered 200; RSS {rss_before} KiB -> {rss_after} KiB",
        reason_name(reason),
        report.ok,
    );
    assert_eq!(reason, ENHANCE_YOUR_CALM, "{report:?}");
    // h2's budget is 20 streams reset before the server accepted them; the accept loop runs
    // on another thread and takes most streams before their resets are read, so how many
    // pairs it takes varies (measured: a few thousand). The loop would stop at 100,000.
    assert!(pairs < 100_000, "no GOAWAY after {pairs} resets");
    assert_eq!(report.ok, 0, "no reset stream was answered: {report:?}");
    assert!(rss_after.saturating_sub(rss_before) < 64 * 1024, "{rss_before} -> {rss_after}");
    guard("the reset streams to end", server.until_open(BYSTANDERS)).await;
    drop(peer);
    bystander.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The server: as `wsx serve` serves an h2 connection (a task per WebSocket, echo).

struct Server {
    addr: SocketAddr,
    /// WebSockets open on the server, all connections.
    open: Arc<AtomicUsize>,
    /// The most open at once on one connection.
    max_per_connection: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let max_per_connection = Arc::new(AtomicUsize::new(0));
        let (open_, max_open_) = (open.clone(), max_per_connection.clone());
        let task = tokio::spawn(async move {
            let policy = ServerPolicy::new(Config::default());
            while let Ok((tcp, _)) = listener.accept().await {
                let (open, max_open, policy) = (open_.clone(), max_open_.clone(), policy.clone());
                tokio::spawn(async move {
                    let here = Arc::new(AtomicUsize::new(0));
                    let builder = wsx::h2::server_builder();
                    let Ok(mut conn) = builder.handshake::<_, bytes::Bytes>(tcp).await else {
                        return;
                    };
                    while let Some(Ok((request, respond))) = conn.accept().await {
                        let Ok(mut ws) = wsx::h2::accept(request, respond, &policy) else {
                            continue;
                        };
                        open.fetch_add(1, Ordering::SeqCst);
                        let now = here.fetch_add(1, Ordering::SeqCst) + 1;
                        max_open.fetch_max(now, Ordering::SeqCst);
                        let (open, here) = (open.clone(), here.clone());
                        tokio::spawn(async move {
                            while let Some(Ok(msg)) = ws.recv().await {
                                if msg.is_data() && ws.send(msg).await.is_err() {
                                    break;
                                }
                            }
                            open.fetch_sub(1, Ordering::SeqCst);
                            here.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                });
            }
        });
        Self { addr, open, max_per_connection, task }
    }

    fn max_open_per_connection(&self) -> usize {
        self.max_per_connection.load(Ordering::SeqCst)
    }

    /// Waits until `n` WebSockets are open on the server.
    async fn until_open(&self, n: usize) {
        while self.open.load(Ordering::SeqCst) != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// The bystander: honest WebSockets on another connection, echoing through the attack.

/// WebSockets of the bystander.
const BYSTANDERS: usize = 4;

struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn =
            guard("h2c", Http2Connection::handshake(tcp, &addr.to_string(), false)).await.unwrap();
        let mut sockets = Vec::new();
        for _ in 0..BYSTANDERS {
            let (ws, _) =
                guard("open", conn.websocket("/", Config::default(), &[], &Default::default()))
                    .await
                    .unwrap();
            sockets.push(ws);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop_ = stop.clone();
        let task = tokio::spawn(async move {
            let mut echoes = 0;
            loop {
                for (i, ws) in sockets.iter_mut().enumerate() {
                    let msg = Message::text(format!("bystander {i} {echoes}"));
                    ws.send(msg.clone()).await.expect("bystander send");
                    let got = guard("bystander echo", ws.recv()).await.expect("ended").unwrap();
                    assert_eq!(got, msg);
                    echoes += 1;
                }
                if stop_.load(Ordering::SeqCst) {
                    break;
                }
            }
            for ws in &mut sockets {
                common::echo_and_close(ws, &[Message::text("after the attack")]).await;
            }
            echoes
        });
        Self { stop, task }
    }

    /// Stops echoing (after one more round) and checks every echo came back.
    async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let echoes = guard("the bystander", self.task).await.expect("bystander failed");
        eprintln!("bystander: {echoes} echoes on another connection during the attack");
        assert!(echoes >= BYSTANDERS);
    }
}

// ---------------------------------------------------------------------------------------------
// The hostile peer: raw HTTP/2 frames (RFC 9113 §4.1) with a literal HPACK block.

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn reason_name(code: u32) -> String {
    match code {
        0 => "NO_ERROR".into(),
        1 => "PROTOCOL_ERROR".into(),
        REFUSED_STREAM => "REFUSED_STREAM".into(),
        ENHANCE_YOUR_CALM => "ENHANCE_YOUR_CALM".into(),
        other => format!("0x{other:x}"),
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An extended CONNECT for a WebSocket (RFC 8441 §4) on stream `id`, without END_STREAM.
fn connect_frame(id: u32) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
    ] {
        // RFC 7541 §6.2.2: literal without indexing, new name, no Huffman (lengths < 127).
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    frame(HEADERS, END_HEADERS, id, &block)
}

struct Hostile;

impl Hostile {
    /// Connects, exchanges SETTINGS (so the server's limits apply to what follows) and returns
    /// the write half and the frame reader.
    async fn connect(addr: SocketAddr) -> (tokio::net::tcp::OwnedWriteHalf, Frames) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (read, mut write) = tcp.into_split();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        write.write_all(&hello).await.unwrap();
        let mut frames = Frames { read, buf: Vec::new() };
        loop {
            let (kind, flags, _, _) = guard("the server's SETTINGS", frames.next()).await.unwrap();
            if kind == SETTINGS && flags & ACK == 0 {
                break;
            }
        }
        write.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        (write, frames)
    }
}

/// What the server answered.
#[derive(Debug, Default)]
struct Report {
    /// HEADERS answers starting with `:status 200` (HPACK static index 8).
    ok: usize,
    refused: usize,
    other_resets: usize,
    /// The GOAWAY's error code and last stream id.
    goaway: Option<(u32, u32)>,
}

impl Report {
    fn add(&mut self, (kind, _flags, _stream, payload): (u8, u8, u32, Vec<u8>)) {
        let code = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        match kind {
            HEADERS if payload.first() == Some(&0x88) => self.ok += 1,
            RST_STREAM if code(0) == REFUSED_STREAM => self.refused += 1,
            RST_STREAM => self.other_resets += 1,
            GOAWAY => self.goaway = Some((code(4), code(0) & 0x7fff_ffff)),
            _ => {}
        }
    }
}

/// The server's frames, read from the other half of the connection.
struct Frames {
    read: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame (kind, flags, stream, payload); `None` at the end of the connection.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn parse(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if self.buf.len() < 9 + len {
            return None;
        }
        let kind = self.buf[3];
        let flags = self.buf[4];
        let stream = u32::from_be_bytes(self.buf[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let payload = self.buf[9..9 + len].to_vec();
        self.buf.drain(..9 + len);
        Some((kind, flags, stream, payload))
    }

    /// Takes in what has arrived so far (a PING would need an answer: none is sent by `h2`'s
    /// server unless asked).
    async fn drain_now(&mut self, report: &mut Report) {
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(1), self.next()).await
        {
            assert_ne!(frame.0, PING, "the server pinged");
            report.add(frame);
        }
    }

    /// Reads until GOAWAY (or the end of the connection).
    async fn until_goaway(&mut self, report: &mut Report) {
        while report.goaway.is_none() {
            match guard("GOAWAY", self.next()).await {
                Some(frame) => report.add(frame),
                None => break,
            }
        }
    }
}

/// This process's resident set, in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}
