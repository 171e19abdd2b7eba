//! `wsx bench`: a WebSocket load generator.
//!
//! Closed loop (default): every connection keeps `--in-flight` messages outstanding and sends
//! the next as soon as an echo returns. Open loop (`--rate`): messages leave on a fixed schedule
//! whatever the server does, and latency is measured from the scheduled time, so a stalled
//! server shows up as latency instead of hiding as fewer samples (coordinated omission).
//!
//! Handshakes (`--handshakes`): every connection opens, completes the upgrade, closes and
//! starts again, as fast as the server allows; the report is handshakes per second and the
//! latency of each upgrade (TCP connect to the 101 checked).
//!
//! Connections are opened [`CONNECT_CONCURRENCY`] at a time before a run starts.
//!
//! One thread by default, no allocation per message: the payload is one shared buffer and send
//! timestamps live in a fixed ring per connection.
//!
//! Pub/sub (`--pubsub`): uWebSockets' `broadcast_test` protocol. Every connection subscribes
//! to the URL's topic (the server's business: `wsx serve --pubsub` subscribes a connection to
//! its path); in each round every connection publishes one binary message and every
//! connection must receive all N of the round before the next one starts, so a round is N
//! publishes and N² deliveries. Each payload carries its send time, its sender and its round,
//! so every delivery's publish-to-delivery latency is measured and the run checks that each
//! connection got exactly one message from every sender in every round. With `--rate`,
//! publishers instead send on a fixed schedule (open loop) and deliveries are counted as they
//! come.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::poll_fn;
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{watch, Notify};
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};
use wsx::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use wsx::proto::mask::apply_mask;
use wsx::{ClientBuilder, Config, Event, Message, Utf8Bytes};

/// `wsx bench --help`: one line per mode.
pub(crate) const EXAMPLES: &str = "\
Examples:
  wsx bench -c 100 -s 20 -d 10 ws://127.0.0.1:8080/   closed loop: msg/s, MB/s, latency
  wsx bench -c 10 --rate 20000 ws://127.0.0.1:8080/   open loop at 20,000 msg/s in total
  wsx bench -c 10 -s 1024 --json ws://127.0.0.1:8080/ one JSON object for scripts
  wsx bench --handshakes -c 32 ws://127.0.0.1:8080/   connections per second
  wsx bench --pubsub -c 1000 ws://127.0.0.1:8080/room against wsx serve --pubsub
  wsx bench --http2 -c 100 wss://localhost:8443/      100 WebSockets as streams of one
                                                      HTTP/2 connection";

/// Options of `wsx bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The echo server's URL (ws:// or wss://); with --pubsub, the topic's.
    url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Message size in bytes (at least 16 with --pubsub: the stamp).
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 20)]
    size: usize,
    /// Seconds to measure.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    warmup: f64,
    /// Send binary messages instead of text.
    #[arg(long)]
    binary: bool,
    /// Messages outstanding per connection (closed loop).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u64).range(1..=4096)
    )]
    in_flight: u64,
    /// Open loop: send this many messages per second in total, spread over the connections
    /// (with --pubsub: publishes per second), at most 1,000,000 per connection [default:
    /// closed loop, as fast as the echoes come back].
    #[arg(long, value_name = "MSG_PER_SEC", conflicts_with = "handshakes")]
    rate: Option<f64>,
    /// Measure opening handshakes instead of messages: each connection opens, upgrades,
    /// closes (a clean close handshake) and starts over, for the duration; reports handshakes
    /// per second and the latency of each upgrade.
    #[arg(long, conflicts_with = "pubsub")]
    handshakes: bool,
    /// Memory measurement aid: open -c connections, print `ready N` on stdout, then hold them
    /// idle (reading, so pings are answered) for --duration seconds. With --http2, 250
    /// WebSockets share each HTTP/2 connection (below servers' usual stream limits).
    #[arg(long, conflicts_with_all = ["pubsub", "handshakes", "rate"])]
    idle: bool,
    /// Pub/sub instead of echo (uWebSockets' broadcast_test): in each round every connection
    /// publishes one binary message to the URL's topic and waits until it has received the
    /// round's message of every connection, its own included.
    #[arg(long)]
    pubsub: bool,
    /// With --pubsub: seconds a round may take before the run is given up as failed (a server
    /// that drops deliveries never completes one).
    #[arg(long, value_name = "SECS", default_value_t = 60.0, requires = "pubsub")]
    round_timeout: f64,
    /// With --pubsub: another node's URL of the same topic (repeatable); the connections are
    /// spread over URL and these in turn, so every delivery to the others crosses the broker
    /// between `wsx serve --pubsub --broker` nodes. ws:// without --deflate only.
    #[arg(long, value_name = "URL", requires = "pubsub")]
    also: Vec<String>,
    /// Offer permessage-deflate (off by default: it measures zlib, not the transport).
    #[arg(long)]
    deflate: bool,
    /// wss:// over HTTP/2 (RFC 8441): every connection is a stream of one HTTP/2 connection
    /// (the run fails if the server does not offer WebSockets over HTTP/2).
    #[arg(long)]
    http2: bool,
    /// Also trust the PEM certificates in FILE for wss://.
    #[arg(long, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// wss://: a full TLS handshake on every connection, never resuming an earlier session
    /// (by default the client keeps rustls's session cache, so with --handshakes most
    /// connections after the first resume one). Trusts only the certificates of --cacert,
    /// checked by rustls's own verifier: the server's certificate must not be marked as a CA.
    #[arg(long, requires = "cacert")]
    no_tls_resumption: bool,
    /// Worker threads of the generator.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
}

/// What one connection measured.
struct Tally {
    messages: u64,
    latency: Histogram<u64>,
}

/// Runs the benchmark and prints the report.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let duration = Duration::try_from_secs_f64(args.duration).context("--duration")?;
    let warmup = Duration::try_from_secs_f64(args.warmup).context("--warmup")?;
    if duration.is_zero() {
        bail!("--duration must be positive");
    }
    if let Some(rate) = args.rate {
        // Checked here, once: the schedules below divide by it.
        period(rate, args.connections)?;
    }
    if !args.also.is_empty() && (args.deflate || !args.url.starts_with("ws://")) {
        bail!("--also takes ws:// URLs without --deflate");
    }
    if let Some(url) = args.also.iter().find(|u| !u.starts_with("ws://")) {
        bail!("--also {url}: a ws:// URL is required");
    }
    if args.pubsub && args.size < STAMP_LEN {
        bail!("--size must be at least {STAMP_LEN} with --pubsub: each message carries a stamp");
    }
    let round_timeout =
        Duration::try_from_secs_f64(args.round_timeout).context("--round-timeout")?;
    if round_timeout.is_zero() {
        bail!("--round-timeout must be positive");
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    if args.pubsub {
        runtime.block_on(pubsub_bench(args, warmup, duration, round_timeout))
    } else if args.handshakes {
        runtime.block_on(handshake_bench(args, warmup, duration))
    } else if args.idle {
        runtime.block_on(idle(args, duration))
    } else {
        runtime.block_on(bench(args, warmup, duration))
    }
}

/// The most connections opened at once while a run sets up: enough to hide the round trips
/// of a thousand handshakes, few enough not to overflow a server's accept backlog.
const CONNECT_CONCURRENCY: usize = 64;

/// The most messages per second one connection is scheduled to send: beyond it a period is
/// under a microsecond, which neither the generator nor a timer can keep.
const MAX_RATE_PER_CONNECTION: f64 = 1e6;

/// The interval between two messages of one connection when `rate` messages per second are
/// spread over `connections`; a rate that gives no usable interval is refused with a message.
fn period(rate: f64, connections: u64) -> anyhow::Result<Duration> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate must be a positive number of messages per second");
    }
    let per_connection = rate / connections as f64;
    if per_connection > MAX_RATE_PER_CONNECTION {
        bail!(
            "--rate {rate:e} is {per_connection:e} messages per second per connection, above the \
             {MAX_RATE_PER_CONNECTION:e} a schedule can keep: use more connections (-c), or no \
             --rate for the closed loop (as fast as the server answers)"
        );
    }
    Duration::try_from_secs_f64(1.0 / per_connection)
        .ok()
        .filter(|p| !p.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--rate {rate:e} is too low to schedule"))
}

/// The client configuration and builder of a run.
fn client(args: &BenchArgs, high_water: usize) -> anyhow::Result<ClientBuilder> {
    let mut config = Config::default().ping_interval(None).write_buffer_high_water(high_water);
    if args.deflate {
        config = config.deflate(Some(Default::default()));
    }
    let mut builder = ClientBuilder::new(args.url.clone()).config(config).http2(args.http2);
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        builder = if args.no_tls_resumption {
            builder.tls_config(no_resumption_config(&pem)?)
        } else {
            builder.add_root_certificates_pem(&pem)?
        };
    }
    Ok(builder)
}

/// A rustls client configuration for `--no-tls-resumption`: the certificates in `ca_pem` as
/// the only roots, ring (as wsx uses), ALPN `http/1.1` (wsx adds `h2` itself with --http2),
/// and no session cache, so every connection makes a full handshake.
fn no_resumption_config(ca_pem: &[u8]) -> anyhow::Result<Arc<wsx::tls::rustls::ClientConfig>> {
    use wsx::tls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in wsx::tls::certificates_from_pem(ca_pem)? {
        roots.add(cert).context("--cacert")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// WebSockets per HTTP/2 connection with `--idle --http2`.
const IDLE_STREAMS_PER_CONNECTION: u64 = 250;

/// `--idle`: opens the connections, says `ready N`, holds them for `duration`.
async fn idle(args: BenchArgs, duration: Duration) -> anyhow::Result<ExitCode> {
    let builder = client(&args, 128 << 10)?;
    let mut pool = wsx::h2::Http2Pool::new();
    let builders: Vec<ClientBuilder> = (0..args.connections)
        .map(|i| {
            if args.http2 && i > 0 && i % IDLE_STREAMS_PER_CONNECTION == 0 {
                pool = wsx::h2::Http2Pool::new();
            }
            if args.http2 {
                builder.clone().http2_pool(pool.clone())
            } else {
                builder.clone()
            }
        })
        .collect();
    // The pool's lock per origin makes a pool's WebSockets wait for the one connection the
    // first of them opens.
    let args = &args;
    let sockets: Vec<_> = stream::iter(builders)
        .map(|b| async move {
            let (ws, _) =
                b.connect().await.with_context(|| format!("cannot connect to {}", args.url))?;
            if args.http2 && !matches!(ws.get_ref(), wsx::MaybeTlsStream::Http2(_)) {
                anyhow::bail!("{} did not accept a WebSocket over HTTP/2 (--http2)", args.url);
            }
            anyhow::Ok(ws)
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    println!("ready {}", sockets.len());
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in sockets {
        tasks.spawn(async move { while let Some(Ok(_)) = ws.recv().await {} });
    }
    tokio::time::sleep(duration).await;
    tasks.abort_all();
    Ok(ExitCode::SUCCESS)
}

/// Connects everyone first, [`CONNECT_CONCURRENCY`] at a time, so the measurement sees a
/// steady state.
async fn connect_all(
    args: &BenchArgs,
    builder: &ClientBuilder,
) -> anyhow::Result<Vec<wsx::WebSocket<wsx::MaybeTlsStream>>> {
    stream::iter(0..args.connections)
        .map(|_| {
            let connecting = builder.clone().connect();
            async move {
                let (ws, _) =
                    connecting.await.with_context(|| format!("cannot connect to {}", args.url))?;
                if args.http2 && !matches!(ws.get_ref(), wsx::MaybeTlsStream::Http2(_)) {
                    anyhow::bail!("{} did not accept a WebSocket over HTTP/2 (--http2)", args.url);
                }
                anyhow::Ok(ws)
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
}

async fn bench(args: BenchArgs, warmup: Duration, duration: Duration) -> anyhow::Result<ExitCode> {
    let payload = payload(args.size, args.binary);
    // Room for every message in flight: the receive loop then keeps reading echoes while a
    // large message is still going out, instead of pausing reads until it has drained (the
    // backpressure a server wants, but here it would serialise sending and receiving).
    let in_flight_bytes = args.size.saturating_mul(args.in_flight as usize);
    let builder = client(&args, in_flight_bytes.saturating_add(128 << 10))?;
    let sockets = connect_all(&args, &builder).await?;

    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let measure_until = measure_from + duration;
    let live = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_conn_period = args.rate.map(|r| period(r, args.connections)).transpose()?;

    let mut tasks = tokio::task::JoinSet::new();
    for ws in sockets {
        let job = Job {
            payload: payload.clone(),
            in_flight: args.in_flight as usize,
            period: per_conn_period,
            start,
            measure_from,
            measure_until,
            live: live.clone(),
        };
        let errors = errors.clone();
        tasks.spawn(async move {
            match job.run(ws).await {
                Ok(tally) => Some(tally),
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("connection failed: {e}");
                    None
                }
            }
        });
    }

    let progress = progress_bar(!args.json, warmup + duration);
    let ticker = {
        let live = live.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = live.load(Ordering::Relaxed);
                progress.set_position(start.elapsed().as_millis() as u64);
                progress.set_message(format!("{:.0} msg/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    };

    let mut messages = 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    while let Some(done) = tasks.join_next().await {
        if let Some(tally) = done? {
            messages += tally.messages;
            latency.add(&tally.latency)?;
        }
    }
    ticker.abort();
    progress.finish_and_clear();

    let errors = errors.load(Ordering::Relaxed);
    if errors == args.connections {
        bail!("every connection failed; see RUST_LOG=debug");
    }
    let report = Report {
        url: &args.url,
        connections: args.connections,
        size: args.size,
        secs: duration.as_secs_f64(),
        messages,
        latency: &latency,
        errors,
        pubsub: None,
        handshakes: false,
    };
    Ok(report.print(args.json))
}

/// `--handshakes`: `-c` loops, each opening a connection, closing it cleanly and starting
/// over until the measurement ends. A handshake counts when its close completes inside the
/// measured window; its latency is from the TCP connect to the checked 101.
async fn handshake_bench(
    args: BenchArgs,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<ExitCode> {
    let builder = client(&args, 128 << 10)?;
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let measure_until = measure_from + duration;
    let live = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let builder = builder.clone();
        let live = live.clone();
        tasks.spawn(async move {
            let mut tally =
                HandshakeTally { done: 0, errors: 0, attempts: 0, latency: histogram() };
            sleep_until(start).await;
            while Instant::now() < measure_until {
                tally.attempts += 1;
                let began = Instant::now();
                let mut ws = match builder.clone().connect().await {
                    Ok((ws, _)) => ws,
                    Err(e) => {
                        tally.errors += 1;
                        tracing::debug!("handshake failed: {e}");
                        // A refused connection fails at once: do not spin on it.
                        sleep_until(Instant::now() + Duration::from_millis(1)).await;
                        continue;
                    }
                };
                let upgraded = Instant::now();
                // A clean close: ours, the server's reply, the server ending TCP (so the
                // TIME_WAIT is the server's, and the generator's ports are not used up).
                let closed = async {
                    ws.close(None).await?;
                    while ws.recv().await.transpose()?.is_some() {}
                    Ok::<_, wsx::Error>(())
                };
                if let Err(e) = closed.await {
                    tally.errors += 1;
                    tracing::debug!("close failed: {e}");
                    continue;
                }
                live.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if began >= measure_from && now < measure_until {
                    tally.done += 1;
                    let nanos = upgraded.duration_since(began).as_nanos().max(1) as u64;
                    tally.latency.saturating_record(nanos);
                }
            }
            tally
        });
    }

    let progress = progress_bar(!args.json, warmup + duration);
    let ticker = {
        let live = live.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = live.load(Ordering::Relaxed);
                progress.set_position(start.elapsed().as_millis() as u64);
                progress.set_message(format!("{:.0} handshakes/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    };
    let mut total = HandshakeTally { done: 0, errors: 0, attempts: 0, latency: histogram() };
    while let Some(joined) = tasks.join_next().await {
        let tally = joined?;
        total.done += tally.done;
        total.errors += tally.errors;
        total.attempts += tally.attempts;
        total.latency.add(&tally.latency)?;
    }
    ticker.abort();
    progress.finish_and_clear();
    if total.errors == total.attempts {
        bail!("every handshake failed ({} attempts); see RUST_LOG=debug", total.attempts);
    }
    let report = Report {
        url: &args.url,
        connections: args.connections,
        size: 0,
        secs: duration.as_secs_f64(),
        messages: total.done,
        latency: &total.latency,
        errors: total.errors,
        pubsub: None,
        handshakes: true,
    };
    Ok(report.print(args.json))
}

/// What one `--handshakes` loop counted.
struct HandshakeTally {
    /// Handshakes (and closes) completed in the measured window.
    done: u64,
    /// Attempts that failed, to connect or to close.
    errors: u64,
    attempts: u64,
    /// Of each counted upgrade, in nanoseconds.
    latency: Histogram<u64>,
}

/// One connection's schedule.
struct Job {
    payload: Message,
    in_flight: usize,
    /// Open loop: the interval between two messages.
    period: Option<Duration>,
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
    live: Arc<AtomicU64>,
}

impl Job {
    async fn run(self, mut ws: wsx::WebSocket<wsx::MaybeTlsStream>) -> Result<Tally, wsx::Error> {
        let mut tally = Tally {
            messages: 0,
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .map_err(|e| wsx::Error::Io(std::io::Error::other(e.to_string())))?,
        };
        tokio::time::sleep_until(self.start).await;
        // Send times of the messages in flight, oldest first: echoes come back in order.
        let mut sent: VecDeque<Instant> = VecDeque::with_capacity(self.in_flight.max(64));
        // Bytes of the echo being received: kept out here, across calls, since the open loop
        // drops a `receive` that a tick interrupts mid-message.
        let mut received = 0;
        match self.period {
            None => {
                for _ in 0..self.in_flight {
                    ws.feed(self.payload.clone()).await?;
                    sent.push_back(Instant::now());
                }
                // Not flushed: the receive loop writes while it reads.
                while Instant::now() < self.measure_until {
                    self.receive(&mut ws, &mut sent, &mut received, &mut tally).await?;
                    ws.feed(self.payload.clone()).await?;
                    sent.push_back(Instant::now());
                }
            }
            Some(period) => {
                let mut tick = interval_at(self.start, period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
                loop {
                    tokio::select! {
                        at = tick.tick() => {
                            if at >= self.measure_until {
                                break;
                            }
                            ws.send(self.payload.clone()).await?;
                            sent.push_back(at);
                        }
                        r = self.receive(&mut ws, &mut sent, &mut received, &mut tally),
                            if !sent.is_empty() => r?,
                    }
                }
            }
        }
        // Stragglers are not counted; the close is best effort.
        let _ = ws.close(None).await;
        Ok(tally)
    }

    /// Waits for one echo and records it. Cancel-safe: `received` counts the bytes of the
    /// echo in progress across calls (0 between echoes), and `recv_event` loses nothing.
    async fn receive(
        &self,
        ws: &mut wsx::WebSocket<wsx::MaybeTlsStream>,
        sent: &mut VecDeque<Instant>,
        received: &mut usize,
        tally: &mut Tally,
    ) -> Result<(), wsx::Error> {
        // Large echoes are taken as chunks and only counted: the generator never holds or
        // reassembles a whole message, so it stays light at 1 MiB whatever the server's framing.
        loop {
            match ws.recv_event().await {
                Some(Ok(Event::Message(msg))) if msg.is_data() => {
                    *received += msg.len();
                    break;
                }
                Some(Ok(Event::Chunk(chunk))) => {
                    *received += chunk.len();
                    if chunk.is_last() {
                        break;
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Err(wsx::Error::Closed),
            }
        }
        let received = std::mem::take(received);
        if received != self.payload.len() {
            return Err(wsx::Error::Io(std::io::Error::other(format!(
                "an echo of {received} bytes for a message of {}",
                self.payload.len()
            ))));
        }
        let now = Instant::now();
        let Some(at) = sent.pop_front() else { return Ok(()) };
        self.live.fetch_add(1, Ordering::Relaxed);
        if now >= self.measure_from && now < self.measure_until {
            tally.messages += 1;
            let nanos = now.duration_since(at).as_nanos().max(1) as u64;
            tally.latency.saturating_record(nanos);
        }
        Ok(())
    }
}

/// Bytes at the start of every pub/sub payload: the send time (nanoseconds since the run's
/// epoch), the sender's index and the round (all little-endian).
const STAMP_LEN: usize = 16;

/// Latencies a connection collects before adding them to the shared histogram.
const SAMPLE_BATCH: usize = 1024;

/// Deliveries that may share one reading of the clock when they arrive without a wait.
const CLOCK_REUSE: u32 = 8;

/// What the coordinator tells the pub/sub connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Go {
    /// Round `number` (from 1) starts; its deliveries count if `counted` (it began after the
    /// warm-up).
    Round { number: u32, counted: bool },
    /// No more rounds: close.
    Stop,
}

/// What the pub/sub connections share.
struct Shared {
    /// Send times are nanoseconds since this instant.
    epoch: Instant,
    /// Connections done with the current round.
    done: AtomicU64,
    /// Notified by the last connection done with a round.
    all_done: Notify,
    /// Deliveries so far, for the progress bar.
    live: AtomicU64,
    /// Every connection's latencies, in batches: one histogram stays in cache where one per
    /// connection (a thousand of them) would not.
    latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// What one pub/sub connection counted.
#[derive(Default)]
struct PubsubTally {
    /// Deliveries counted.
    messages: u64,
    /// Publishes counted.
    published: u64,
}

/// The pub/sub benchmark: closed loop (rounds) without `--rate`, open loop with it.
async fn pubsub_bench(
    args: BenchArgs,
    warmup: Duration,
    duration: Duration,
    round_timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let n = args.connections;
    let Ok(n32) = u32::try_from(n) else {
        bail!("--pubsub takes at most {} connections", u32::MAX)
    };
    // Room for a whole round of deliveries: N messages per connection and round.
    let round_bytes = (args.size + 14).saturating_mul(n as usize);
    let sockets = connect_links(&args, round_bytes).await?;

    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let measure_until = measure_from + duration;
    let shared = Arc::new(Shared {
        epoch: start,
        done: AtomicU64::new(0),
        all_done: Notify::new(),
        live: AtomicU64::new(0),
        latency: Mutex::new(histogram()),
    });
    let (go, go_rx) = watch::channel(Go::Round { number: 0, counted: false });
    let period = args.rate.map(|r| period(r, n)).transpose()?;
    let mut tasks = tokio::task::JoinSet::new();
    for (id, ws) in (0..n32).zip(sockets) {
        let mut publisher = Publisher {
            id,
            n: n32,
            size: args.size,
            shared: shared.clone(),
            start,
            measure_from,
            measure_until,
            tally: PubsubTally::default(),
            samples: Vec::with_capacity(SAMPLE_BATCH.min(n as usize)),
        };
        let go = go_rx.clone();
        tasks.spawn(async move {
            let result = match period {
                None => publisher.rounds(ws, go).await,
                Some(period) => publisher.at_rate(ws, period).await,
            };
            publisher.flush_samples();
            if let Err(e) = &result {
                tracing::debug!("connection {id} failed: {e}");
            }
            (publisher.tally, result.is_err())
        });
    }
    drop(go_rx);

    let progress = progress_bar(!args.json, warmup + duration);
    let ticker = {
        let shared = shared.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = shared.live.load(Ordering::Relaxed);
                progress.set_position(start.elapsed().as_millis() as u64);
                progress.set_message(format!("{:.0} deliveries/s", (now - last) as f64 * 2.0));
                last = now;
            }
        })
    };

    let mut total = PubsubTally::default();
    let mut errors = 0;
    // Closed loop: each round starts once every connection is done with the last one. The
    // rates are over the counted rounds' own time, first start to last end.
    let (mut rounds, mut span) = (0u64, duration);
    // The generator's own CPU time over the measurement, to show it kept up.
    let (mut cpu_from, mut cpu_until) = (None, None);
    if period.is_none() {
        let mut number = 0;
        let mut first: Option<Instant> = None;
        let mut last_end = start;
        sleep_until(start).await;
        loop {
            let now = Instant::now();
            // At least one counted round, however slow the server.
            if now >= measure_until && rounds > 0 {
                cpu_until = process_cpu();
                break;
            }
            let counted = now >= measure_from;
            number += 1;
            shared.done.store(0, Ordering::Release);
            if counted && first.is_none() {
                first = Some(now);
                cpu_from = process_cpu();
            }
            go.send_replace(Go::Round { number, counted });
            tokio::select! {
                () = shared.all_done.notified() => {
                    if counted {
                        rounds += 1;
                        last_end = Instant::now();
                    }
                }
                Some(joined) = tasks.join_next() => {
                    // A connection gave up mid-run: the round cannot complete.
                    merge(&mut total, &mut errors, joined);
                    break;
                }
                () = sleep_until(now + round_timeout) => {
                    let done = shared.done.load(Ordering::Acquire);
                    tracing::warn!(
                        "round {number} did not complete in {round_timeout:?}: {} of {n} \
                         connections are still waiting for deliveries",
                        n - done
                    );
                    break;
                }
            }
        }
        span = first.map_or(Duration::ZERO, |f| last_end.saturating_duration_since(f));
    } else {
        sleep_until(measure_from).await;
        cpu_from = process_cpu();
        sleep_until(measure_until).await;
        cpu_until = process_cpu();
    }
    go.send_replace(Go::Stop);
    // Connections done with their round close at once; any still waiting in one are stuck.
    let grace = sleep_until(Instant::now().max(measure_until) + Duration::from_secs(2));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => merge(&mut total, &mut errors, joined),
                None => break,
            },
            () = &mut grace => tasks.abort_all(),
        }
    }
    ticker.abort();
    progress.finish_and_clear();
    // Everyone connected: even a run where every connection failed has a report to give.
    let latency = std::mem::replace(&mut *lock(&shared.latency), histogram());
    let report = Report {
        url: &args.url,
        connections: n,
        size: args.size,
        secs: span.as_secs_f64(),
        messages: total.messages,
        latency: &latency,
        errors,
        handshakes: false,
        pubsub: Some(PubsubFigures {
            rounds,
            published: total.published,
            open_loop: period.is_some(),
            generator_cpu: match (cpu_from, cpu_until) {
                (Some(from), Some(until)) if !span.is_zero() => {
                    Some(until.saturating_sub(from).as_secs_f64() / span.as_secs_f64())
                }
                _ => None,
            },
        }),
    };
    Ok(report.print(args.json))
}

/// Adds a finished connection's counts, or counts it as failed.
fn merge(
    total: &mut PubsubTally,
    errors: &mut u64,
    joined: Result<(PubsubTally, bool), tokio::task::JoinError>,
) {
    match joined {
        Ok((tally, failed)) => {
            total.messages += tally.messages;
            total.published += tally.published;
            *errors += u64::from(failed);
        }
        // Aborted: stuck in a round that never completed (its latencies so far are in).
        Err(_) => *errors += 1,
    }
}

/// The CPU time of this process's threads so far, from `/proc/self/task/*/schedstat` (Linux;
/// `None` elsewhere).
fn process_cpu() -> Option<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One pub/sub connection.
struct Publisher {
    /// Its index, 0..n.
    id: u32,
    n: u32,
    size: usize,
    shared: Arc<Shared>,
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
    tally: PubsubTally,
    /// Latencies in nanoseconds not yet in the shared histogram.
    samples: Vec<u64>,
}

type Ws = wsx::WebSocket<wsx::MaybeTlsStream>;

impl Publisher {
    /// A payload stamped with `at`, this sender and `round`.
    fn payload(&self, at: Instant, round: u32) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.size);
        buf.put_u64_le(self.shared.nanos(at));
        buf.put_u32_le(self.id);
        buf.put_u32_le(round);
        buf.resize(self.size, 0x5a);
        buf.freeze()
    }

    fn record(&mut self, delivery: &Delivery) {
        self.tally.messages += 1;
        let nanos = self.shared.nanos(delivery.at).saturating_sub(delivery.sent).max(1);
        self.samples.push(nanos);
        if self.samples.len() >= SAMPLE_BATCH {
            self.flush_samples();
        }
    }

    fn flush_samples(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let mut latency = lock(&self.shared.latency);
        for &nanos in &self.samples {
            latency.saturating_record(nanos);
        }
        drop(latency);
        self.samples.clear();
    }

    /// Closed loop: each round, publish one message, then take the round's N deliveries.
    async fn rounds(
        &mut self,
        mut ws: Link,
        mut go: watch::Receiver<Go>,
    ) -> Result<(), wsx::Error> {
        let n = self.n;
        let mut seen = 0;
        loop {
            let next = *go
                .wait_for(|g| !matches!(g, Go::Round { number, .. } if *number <= seen))
                .await
                .map_err(|_| wsx::Error::Closed)?;
            let Go::Round { number, counted } = next else { break };
            seen = number;
            ws.stale();
            ws.send(self.payload(Instant::now(), number)).await?;
            if counted {
                self.tally.published += 1;
            }
            // Every sender once: a count and a sum of indices catch a drop or a duplicate.
            let mut senders = 0u64;
            ws.receive(self.size, n, |delivery| {
                if delivery.round != number || delivery.sender >= n {
                    return Err(bad(&format!(
                        "round {number}: a message of round {} from connection {}",
                        delivery.round, delivery.sender
                    )));
                }
                senders += u64::from(delivery.sender);
                if counted {
                    self.record(&delivery);
                }
                Ok(())
            })
            .await?;
            if senders != u64::from(n) * u64::from(n - 1) / 2 {
                return Err(bad(&format!("round {number}: a sender missing, another twice")));
            }
            self.flush_samples();
            self.shared.live.fetch_add(u64::from(n), Ordering::Relaxed);
            if self.shared.done.fetch_add(1, Ordering::AcqRel) + 1 == u64::from(n) {
                self.shared.all_done.notify_one();
            }
        }
        ws.close().await;
        Ok(())
    }

    /// Open loop: publish every `period` whatever arrives, latency from the scheduled time;
    /// deliveries count while the measurement runs.
    async fn at_rate(&mut self, mut ws: Link, period: Duration) -> Result<(), wsx::Error> {
        // Publishers spread over the period instead of all at once.
        let offset = period.mul_f64(f64::from(self.id) / f64::from(self.n));
        let mut tick = interval_at(self.start + offset, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut sequence = 0u32;
        loop {
            tokio::select! {
                at = tick.tick() => {
                    if at >= self.measure_until {
                        break;
                    }
                    sequence = sequence.wrapping_add(1);
                    ws.send(self.payload(at, sequence)).await?;
                    if at >= self.measure_from {
                        self.tally.published += 1;
                    }
                }
                received = ws.receive(self.size, 1, |delivery| {
                    self.shared.live.fetch_add(1, Ordering::Relaxed);
                    if delivery.at >= self.measure_from && delivery.at < self.measure_until {
                        self.record(&delivery);
                    }
                    Ok(())
                }) => received?,
            }
        }
        ws.close().await;
        Ok(())
    }
}

/// One pub/sub connection's transport, as the generator sees it.
enum Link {
    /// ws:// without compression: the handshake and the framing done here with wsx-proto's
    /// pieces (request, response check, frame header), a few nanoseconds per delivery, so
    /// that one generator core outpaces the server core it measures. A `wsx::WebSocket`
    /// costs the generator about as much per delivery as the server spends making it.
    Lean(Lean),
    /// wss:// or --deflate: a `wsx::WebSocket`.
    Full(Box<Full>),
}

/// Opens the pub/sub connections, [`CONNECT_CONCURRENCY`] at a time.
async fn connect_links(args: &BenchArgs, round_bytes: usize) -> anyhow::Result<Vec<Link>> {
    let lean = args.url.starts_with("ws://") && !args.deflate;
    let builder = client(args, round_bytes.saturating_add(128 << 10))?;
    let builder = &builder;
    stream::iter(0..args.connections)
        .map(|id| async move {
            let link = if lean {
                // Spread over the nodes in turn (--also).
                let node = (id % (1 + args.also.len() as u64)) as usize;
                let url = if node == 0 { &args.url } else { &args.also[node - 1] };
                Link::Lean(Lean::connect(url, id).await?)
            } else {
                let (ws, _) = builder.clone().connect().await?;
                Link::Full(Box::new(Full { ws, now: Instant::now(), clock_uses: CLOCK_REUSE }))
            };
            anyhow::Ok(link)
        })
        .buffered(CONNECT_CONCURRENCY)
        .map(|link| link.with_context(|| format!("cannot connect to {}", args.url)))
        .try_collect()
        .await
}

/// What a delivery carries, and when it arrived.
struct Delivery {
    sent: u64,
    sender: u32,
    round: u32,
    at: Instant,
}

impl Delivery {
    /// Reads the stamp of a payload of the expected `size`.
    fn parse(data: &[u8], size: usize, at: Instant) -> Result<Self, wsx::Error> {
        if data.len() != size {
            return Err(bad(&format!("{} bytes for messages of {size}", data.len())));
        }
        let word = |from: usize, len: usize| {
            data[from..from + len].iter().rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b))
        };
        Ok(Self { sent: word(0, 8), sender: word(8, 4) as u32, round: word(12, 4) as u32, at })
    }
}

impl Link {
    async fn send(&mut self, payload: Bytes) -> Result<(), wsx::Error> {
        match self {
            Self::Lean(lean) => lean.send(OpCode::Binary, &payload).await,
            Self::Full(full) => {
                full.ws.send(Message::Binary(payload)).await?;
                // Whatever is read next was read after this.
                full.clock_uses = CLOCK_REUSE;
                Ok(())
            }
        }
    }

    /// Receives `count` deliveries of `size` bytes and hands each to `each`. Cancel safe
    /// when `count` is 1.
    async fn receive(
        &mut self,
        size: usize,
        count: u32,
        mut each: impl FnMut(Delivery) -> Result<(), wsx::Error>,
    ) -> Result<(), wsx::Error> {
        match self {
            Self::Lean(lean) => lean.receive(size, count, each).await,
            Self::Full(full) => {
                for _ in 0..count {
                    each(full.next(size).await?)?;
                }
                Ok(())
            }
        }
    }

    /// Marks the time of what is read next as unknown (after waiting for something else).
    fn stale(&mut self) {
        if let Self::Full(full) = self {
            full.clock_uses = CLOCK_REUSE;
        }
    }

    /// Closes, best effort.
    async fn close(self) {
        match self {
            Self::Lean(mut lean) => {
                let _ = lean.send(OpCode::Close, &1000u16.to_be_bytes()).await;
                let _ = lean.tcp.shutdown().await;
            }
            Self::Full(mut full) => {
                let _ = full.ws.close(None).await;
            }
        }
    }
}

/// A `wsx::WebSocket` with the clock reading it shares between deliveries.
struct Full {
    ws: Ws,
    /// When the last delivery arrived, as far as the clock was read.
    now: Instant,
    /// Deliveries stamped with `now` since it was read.
    clock_uses: u32,
}

impl Full {
    /// The clock is read when the delivery had to be waited for (it just arrived) and
    /// otherwise once every [`CLOCK_REUSE`] deliveries: deliveries taken from one read share
    /// its time to within the few hundred nanoseconds it takes to parse them, and reading
    /// the clock for each would cost the generator a tenth of its time.
    async fn next(&mut self, size: usize) -> Result<Delivery, wsx::Error> {
        loop {
            let mut waited = false;
            let ws = &mut self.ws;
            let next = poll_fn(|cx| {
                let poll = ws.poll_next_unpin(cx);
                waited |= poll.is_pending();
                poll
            })
            .await;
            let data = match next {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Text(_))) => return Err(bad("a text message")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Err(wsx::Error::Closed),
            };
            if waited || self.clock_uses >= CLOCK_REUSE {
                self.now = Instant::now();
                self.clock_uses = 0;
            }
            self.clock_uses += 1;
            return Delivery::parse(&data, size, self.now);
        }
    }
}

/// A WebSocket client that does only what the benchmark needs: binary messages out (masked),
/// unfragmented binary messages in, pings answered, anything else an error.
struct Lean {
    tcp: tokio::net::TcpStream,
    /// Bytes read and not yet parsed, from `pos` on.
    buf: Vec<u8>,
    pos: usize,
    /// When the bytes in `buf` were read.
    at: Instant,
    /// The state of the masking keys' generator (xorshift: the keys only need to vary).
    rng: u64,
}

/// What the lean client reads at once, at most.
const LEAN_READ: usize = 64 << 10;

impl Lean {
    async fn connect(url: &str, id: u64) -> anyhow::Result<Self> {
        use wsx::proto::handshake;
        let uri: http::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
        let authority = uri.authority().context("the URL has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        // An IPv6 literal without its brackets.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let key = handshake::generate_key();
        let request =
            handshake::request(authority.as_str(), path, &key, &[], &http::HeaderMap::new())?;
        let mut lean = Self {
            tcp,
            buf: Vec::with_capacity(LEAN_READ),
            pos: 0,
            at: Instant::now(),
            rng: (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        };
        lean.tcp.write_all(&request).await?;
        let mut scanner = handshake::HeadScanner::new(16 << 10);
        let end = loop {
            if lean.tcp.read_buf(&mut lean.buf).await? == 0 {
                bail!("the server closed the connection during the handshake");
            }
            if let Some(end) = scanner.scan(&lean.buf)? {
                break end;
            }
        };
        let response = handshake::parse_response(&lean.buf[..end], 64)?;
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            bail!("the server answered {} to the upgrade", response.status());
        }
        handshake::validate_response(&response, &key, &[])?;
        lean.pos = end;
        Ok(lean)
    }

    fn mask_key(&mut self) -> [u8; 4] {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_le_bytes()
    }

    async fn send(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), wsx::Error> {
        let mask = self.mask_key();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(mask),
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        let mut frame = Vec::with_capacity(head_len + payload.len());
        frame.extend_from_slice(&head[..head_len]);
        frame.extend_from_slice(payload);
        apply_mask(&mut frame[head_len..], mask, 0);
        self.tcp.write_all(&frame).await?;
        Ok(())
    }

    /// Receives `count` deliveries: parses everything complete in the buffer without
    /// awaiting (one call of `each` per delivery), and reads when it runs out.
    async fn receive(
        &mut self,
        size: usize,
        mut count: u32,
        mut each: impl FnMut(Delivery) -> Result<(), wsx::Error>,
    ) -> Result<(), wsx::Error> {
        while count > 0 {
            let mut ping = None;
            while count > 0 {
                let rest = &self.buf[self.pos..];
                // The usual frame first, without the general decoder: FIN and binary,
                // unmasked, a length under 126.
                if let [0x82, len @ 0..=125, ..] = *rest {
                    let end = 2 + usize::from(len);
                    if rest.len() < end {
                        break;
                    }
                    let delivery = Delivery::parse(&rest[2..end], size, self.at)?;
                    self.pos += end;
                    each(delivery)?;
                    count -= 1;
                    continue;
                }
                let Some((header, head_len)) = FrameHeader::decode(rest)? else { break };
                if header.payload_len > (size.max(125) as u64) {
                    return Err(bad(&format!("a frame of {} bytes", header.payload_len)));
                }
                let end = head_len + header.payload_len as usize;
                if rest.len() < end {
                    break;
                }
                if header.mask.is_some() || header.rsv != 0 {
                    return Err(bad("a masked or compressed frame"));
                }
                let payload = &rest[head_len..end];
                match header.opcode {
                    OpCode::Binary if header.fin => {
                        let delivery = Delivery::parse(payload, size, self.at)?;
                        self.pos += end;
                        each(delivery)?;
                        count -= 1;
                    }
                    OpCode::Ping => {
                        ping = Some(payload.to_vec());
                        self.pos += end;
                        break;
                    }
                    OpCode::Pong => self.pos += end,
                    OpCode::Close => return Err(wsx::Error::Closed),
                    OpCode::Text => return Err(bad("a text message")),
                    _ => return Err(bad("a fragmented message")),
                }
            }
            if let Some(payload) = ping {
                self.send(OpCode::Pong, &payload).await?;
                continue;
            }
            if count == 0 {
                break;
            }
            // Keep the unparsed tail, then read more after it.
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.buf.capacity() - self.buf.len() < LEAN_READ / 4 {
                self.buf.reserve(LEAN_READ);
            }
            if self.tcp.read_buf(&mut self.buf).await? == 0 {
                return Err(wsx::Error::Closed);
            }
            self.at = Instant::now();
        }
        Ok(())
    }
}

fn bad(what: &str) -> wsx::Error {
    wsx::Error::Io(std::io::Error::other(format!("unexpected delivery: {what}")))
}

fn payload(size: usize, binary: bool) -> Message {
    if binary {
        Message::Binary(Bytes::from(vec![0x5a; size]))
    } else {
        Message::Text(Utf8Bytes::from("x".repeat(size)))
    }
}

fn progress_bar(enabled: bool, total: Duration) -> indicatif::ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar
}

struct Report<'a> {
    url: &'a str,
    connections: u64,
    size: usize,
    /// The time the counted messages took.
    secs: f64,
    /// Messages received (echoes, or deliveries).
    messages: u64,
    latency: &'a Histogram<u64>,
    errors: u64,
    /// What only pub/sub runs have.
    pubsub: Option<PubsubFigures>,
    /// A `--handshakes` run: `messages` counts handshakes.
    handshakes: bool,
}

struct PubsubFigures {
    /// Rounds completed (closed loop; 0 in open loop).
    rounds: u64,
    /// Messages published.
    published: u64,
    open_loop: bool,
    /// The generator's CPU time over the measurement, as a share of one core.
    generator_cpu: Option<f64>,
}

impl Report<'_> {
    /// Prints the report or its JSON and says how the run went.
    fn print(&self, json: bool) -> ExitCode {
        if json {
            println!("{}", self.json());
        } else {
            print!("{}", self.text());
        }
        if self.errors == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// p50, p90, p99, p99.9 and max latency in microseconds.
    fn percentiles(&self) -> [f64; 5] {
        if self.latency.is_empty() {
            return [0.0; 5];
        }
        let at = |q| self.latency.value_at_quantile(q) as f64 / 1000.0;
        [at(0.5), at(0.9), at(0.99), at(0.999), self.latency.max() as f64 / 1000.0]
    }

    fn per_sec(&self, n: u64) -> f64 {
        if self.secs > 0.0 {
            n as f64 / self.secs
        } else {
            0.0
        }
    }

    fn json(&self) -> String {
        let Self { url, connections, size, secs, messages, errors, .. } = self;
        if self.handshakes {
            let per_sec = self.per_sec(*messages);
            let [p50, p90, p99, p999, max] = self.percentiles();
            return format!(
                "{{\"url\":{url:?},\"mode\":\"handshakes\",\"connections\":{connections},\
                 \"duration_secs\":{secs},\"handshakes\":{messages},\
                 \"handshakes_per_sec\":{per_sec:.1},\"latency_us\":{{\"p50\":{p50:.1},\
                 \"p90\":{p90:.1},\"p99\":{p99:.1},\"p999\":{p999:.1},\"max\":{max:.1}}},\
                 \"errors\":{errors}}}"
            );
        }
        let msgs_per_sec = self.per_sec(*messages);
        let mb_per_sec = msgs_per_sec * *size as f64 / 1e6;
        let [p50, p90, p99, p999, max] = self.percentiles();
        let mode = if self.pubsub.is_some() { "pubsub" } else { "echo" };
        let mut out = format!(
            "{{\"url\":{url:?},\"mode\":\"{mode}\",\"connections\":{connections},\"size\":{size},\
             \"duration_secs\":{secs},\"messages\":{messages},\"msgs_per_sec\":{msgs_per_sec:.1},\
             \"mb_per_sec\":{mb_per_sec:.3},\"deliveries\":{messages},\
             \"deliveries_per_sec\":{msgs_per_sec:.1},\"latency_us\":{{\"p50\":{p50:.1},\
             \"p90\":{p90:.1},\"p99\":{p99:.1},\"p999\":{p999:.1},\"max\":{max:.1}}},\
             \"errors\":{errors}"
        );
        if let Some(PubsubFigures { rounds, published, open_loop, generator_cpu }) = &self.pubsub {
            let rounds_per_sec = self.per_sec(*rounds);
            let pacing = if *open_loop { "open" } else { "closed" };
            out += &format!(
                ",\"loop\":\"{pacing}\",\"rounds\":{rounds},\"rounds_per_sec\":{rounds_per_sec:.2},\
                 \"published\":{published}"
            );
            if let Some(cpu) = generator_cpu {
                out += &format!(",\"generator_cpu\":{cpu:.3}");
            }
        }
        out + "}"
    }

    fn text(&self) -> String {
        let Self { url, connections, size, secs, messages, errors, .. } = self;
        let msgs_per_sec = self.per_sec(*messages);
        let mb_per_sec = msgs_per_sec * *size as f64 / 1e6;
        let [p50, p90, p99, p999, max] = self.percentiles();
        let latency = format!(
            "p50 {p50:.1} µs · p90 {p90:.1} µs · p99 {p99:.1} µs · p99.9 {p999:.1} µs \
             · max {max:.1} µs"
        );
        if self.handshakes {
            return format!(
                "{url} — handshakes, {connections} connections at a time for {secs:.1} s\n\
                 handshakes {messages} ({msgs_per_sec:.0} connections/s, each opened, upgraded \
                 and closed)\n\
                 latency    {latency} (connect to 101)\n\
                 errors     {errors}\n"
            );
        }
        let Some(PubsubFigures { rounds, published, open_loop, generator_cpu }) = &self.pubsub
        else {
            return format!(
                "{url} — {connections} connections × {size} B for {secs:.1} s\n\
                 messages   {messages} ({msgs_per_sec:.0} msg/s, {mb_per_sec:.2} MB/s)\n\
                 latency    {latency}\n\
                 errors     {errors}\n"
            );
        };
        let pacing = if *open_loop {
            format!("open loop, {:.0} publishes/s", self.per_sec(*published))
        } else {
            format!("{rounds} rounds, {:.1} rounds/s", self.per_sec(*rounds))
        };
        let generator = generator_cpu
            .map(|cpu| format!("generator  {:.0} % of a core\n", cpu * 100.0))
            .unwrap_or_default();
        format!(
            "{url} — pub/sub, {connections} connections × {size} B for {secs:.2} s\n\
             published  {published} ({pacing})\n\
             deliveries {messages} ({msgs_per_sec:.0} deliveries/s, {mb_per_sec:.2} MB/s)\n\
             latency    {latency} (publish to delivery)\n\
             errors     {errors}\n{generator}"
        )
    }
}
