//! `wsx bench`: a WebSocket load generator.
//!
//! Closed loop (default): every connection keeps `--in-flight` messages outstanding and sends
//! the next as soon as an echo returns. Open loop (`--rate`): messages leave on a fixed schedule
//! whatever the server does, and latency is measured from the scheduled time, so a stalled
//! server shows up as latency instead of hiding as fewer samples (coordinated omission).
//!
//! One thread by default, no allocation per message: the payload is one shared buffer and send
//! timestamps live in a fixed ring per connection.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use wsx::{ClientBuilder, Config, Event, Message, Utf8Bytes};

/// Options of `wsx bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// The echo server's URL (ws:// or wss://).
    url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 20)]
    size: usize,
    /// Seconds to measure.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Send binary messages instead of text.
    #[arg(long)]
    binary: bool,
    /// Messages outstanding per connection (closed loop).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    in_flight: u64,
    /// Open loop: send this many messages per second in total, spread over the connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Offer permessage-deflate (off by default: it measures zlib, not the transport).
    #[arg(long)]
    deflate: bool,
    /// Also trust the PEM certificates in FILE for wss://.
    #[arg(long, value_name = "FILE")]
    cacert: Option<std::path::PathBuf>,
    /// Worker threads of the generator (default 1).
    #[arg(long, default_value_t = 1)]
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
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(bench(args, warmup, duration))
}

async fn bench(args: BenchArgs, warmup: Duration, duration: Duration) -> anyhow::Result<ExitCode> {
    let payload = payload(args.size, args.binary);
    // Room for every message in flight: the receive loop then keeps reading echoes while a
    // large message is still going out, instead of pausing reads until it has drained (the
    // backpressure a server wants, but here it would serialise sending and receiving).
    let in_flight_bytes = args.size.saturating_mul(args.in_flight as usize);
    let mut config = Config::default()
        .ping_interval(None)
        .write_buffer_high_water(in_flight_bytes.saturating_add(128 << 10));
    if args.deflate {
        config = config.deflate(Some(Default::default()));
    }
    let mut builder = ClientBuilder::new(args.url.clone()).config(config);
    if let Some(path) = &args.cacert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        builder = builder.add_root_certificates_pem(&pem)?;
    }

    // Connect everyone first, a few at a time, so the measurement sees a steady state.
    let mut sockets = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        let (ws, _) = builder
            .clone()
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", args.url))?;
        sockets.push(ws);
    }

    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + warmup;
    let measure_until = measure_from + duration;
    let live = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let per_conn_rate = args.rate.map(|r| r / args.connections as f64);

    let mut tasks = tokio::task::JoinSet::new();
    for ws in sockets {
        let job = Job {
            payload: payload.clone(),
            in_flight: args.in_flight as usize,
            rate: per_conn_rate,
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
    let secs = duration.as_secs_f64();
    let report = Report {
        url: &args.url,
        connections: args.connections,
        size: args.size,
        secs,
        messages,
        msgs_per_sec: messages as f64 / secs,
        mb_per_sec: (messages as f64 * args.size as f64) / secs / 1e6,
        latency: &latency,
        errors,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One connection's schedule.
struct Job {
    payload: Message,
    in_flight: usize,
    rate: Option<f64>,
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
        match self.rate {
            None => {
                for _ in 0..self.in_flight {
                    ws.feed(self.payload.clone()).await?;
                    sent.push_back(Instant::now());
                }
                // Not flushed: the receive loop writes while it reads.
                while Instant::now() < self.measure_until {
                    self.receive(&mut ws, &mut sent, &mut tally).await?;
                    ws.feed(self.payload.clone()).await?;
                    sent.push_back(Instant::now());
                }
            }
            Some(rate) => {
                let period = Duration::from_secs_f64(1.0 / rate);
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
                        r = self.receive(&mut ws, &mut sent, &mut tally), if !sent.is_empty() => r?,
                    }
                }
            }
        }
        // Stragglers are not counted; the close is best effort.
        let _ = ws.close(None).await;
        Ok(tally)
    }

    /// Waits for one echo and records it.
    async fn receive(
        &self,
        ws: &mut wsx::WebSocket<wsx::MaybeTlsStream>,
        sent: &mut VecDeque<Instant>,
        tally: &mut Tally,
    ) -> Result<(), wsx::Error> {
        // Large echoes are taken as chunks and only counted: the generator never holds or
        // reassembles a whole message, so it stays light at 1 MiB whatever the server's framing.
        let mut received = 0;
        loop {
            match ws.recv_event().await {
                Some(Ok(Event::Message(msg))) if msg.is_data() => {
                    received += msg.len();
                    break;
                }
                Some(Ok(Event::Chunk(chunk))) => {
                    received += chunk.len();
                    if chunk.is_last() {
                        break;
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Err(wsx::Error::Closed),
            }
        }
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
    secs: f64,
    messages: u64,
    msgs_per_sec: f64,
    mb_per_sec: f64,
    latency: &'a Histogram<u64>,
    errors: u64,
}

impl Report<'_> {
    /// p50, p90, p99, p99.9 and max latency in microseconds.
    fn percentiles(&self) -> [f64; 5] {
        if self.latency.is_empty() {
            return [0.0; 5];
        }
        let at = |q| self.latency.value_at_quantile(q) as f64 / 1000.0;
        [at(0.5), at(0.9), at(0.99), at(0.999), self.latency.max() as f64 / 1000.0]
    }

    fn json(&self) -> String {
        let Self {
            url, connections, size, secs, messages, msgs_per_sec, mb_per_sec, errors, ..
        } = self;
        let [p50, p90, p99, p999, max] = self.percentiles();
        format!(
            "{{\"url\":{url:?},\"connections\":{connections},\"size\":{size},\
             \"duration_secs\":{secs},\"messages\":{messages},\"msgs_per_sec\":{msgs_per_sec:.1},\
             \"mb_per_sec\":{mb_per_sec:.3},\"latency_us\":{{\"p50\":{p50:.1},\"p90\":{p90:.1},\
             \"p99\":{p99:.1},\"p999\":{p999:.1},\"max\":{max:.1}}},\"errors\":{errors}}}"
        )
    }

    fn text(&self) -> String {
        let Self {
            url, connections, size, secs, messages, msgs_per_sec, mb_per_sec, errors, ..
        } = self;
        let [p50, p90, p99, p999, max] = self.percentiles();
        format!(
            "{url} — {connections} connections × {size} B for {secs:.1} s\n\
             messages   {messages} ({msgs_per_sec:.0} msg/s, {mb_per_sec:.2} MB/s)\n\
             latency    p50 {p50:.1} µs · p90 {p90:.1} µs · p99 {p99:.1} µs · p99.9 {p999:.1} µs \
             · max {max:.1} µs\n\
             errors     {errors}\n"
        )
    }
}
