//! `wsx`: a WebSocket echo server with a demo page, an interactive client, a load generator.

// The doc comments on the clap types are `--help` text, printed as written: URLs and brackets
// in them stay literal rather than becoming rustdoc links.
#![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod backlog;
mod bench;
mod bridge;
mod connect;
mod exec;
mod http2;
mod pubsub;
mod serve;

/// wsx: a WebSocket toolkit.
#[derive(Debug, Parser)]
#[command(
    name = "wsx",
    version,
    about = "wsx: a WebSocket server, client, TCP bridge and load generator.",
    after_help = "\
Examples:
  wsx serve                                    echo server, demo page at http://127.0.0.1:8080/
  wsx connect ws://127.0.0.1:8080/             stdin lines out, messages received on stdout
  wsx serve --exec ./script.sh                 a program per WebSocket (websocketd)
  wsx serve --to tcp://127.0.0.1:5900          a TCP connection per WebSocket (websockify)
  wsx connect --listen tcp://127.0.0.1:2222 wss://host/ssh
                                               each local TCP connection over its own WebSocket
  wsx bench -c 100 ws://127.0.0.1:8080/        msg/s, MB/s and latency of an echo server

`wsx help COMMAND` or `wsx COMMAND --help` for the options of each."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a WebSocket server: echo (the default), pub/sub (--pubsub), a program per
    /// connection (--exec, --sh) or a TCP bridge (--to); a demo page at `/`.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Connect to a WebSocket server: stdin is sent (lines, NUL-separated pieces or a byte
    /// stream), messages received are printed; or forward TCP connections (--listen).
    #[command(after_help = connect::EXAMPLES)]
    Connect(connect::ConnectArgs),
    /// Load-test a WebSocket echo or pub/sub server: msg/s, MB/s and latency percentiles, or
    /// handshakes per second.
    #[command(after_help = bench::EXAMPLES)]
    Bench(bench::BenchArgs),
}

/// `wsx serve --help`: one line per mode.
const SERVE_EXAMPLES: &str = "\
Examples:
  wsx serve                                  echo on ws://127.0.0.1:8080/, demo page at /
  wsx serve --listen 0.0.0.0:9000 --tls-cert cert.pem --tls-key key.pem
                                             wss:// and https://, HTTP/2 and HTTP/1.1
  wsx serve --pubsub --publish-token s3cret  ws://…/ROOM joins topic ROOM; POST /publish/ROOM
  wsx serve --exec ./count.py -- --from 10   a child per WebSocket, lines both ways, no shell
  wsx serve --sh 'grep --line-buffered err'  the same through `sh -c`
  wsx serve --exec cat --binary              raw chunks both ways as binary messages
  wsx serve --to tcp://127.0.0.1:5900        a TCP connection per WebSocket (websockify)
  wsx serve --ping-interval 5 --ping-timeout 5 --idle-timeout 300
                                             drop dead clients within 10 s, idle ones at 5 min";

/// Options of `wsx serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads (1 runs everything on the main thread) [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Seconds a client has to finish TLS and send its upgrade request.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// PEM certificate chain: serve `wss://` and the demo page over https, with HTTP/2 (ALPN
    /// h2) and HTTP/1.1. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Do not offer permessage-deflate compression (offered by default, except with --to).
    #[arg(long)]
    no_deflate: bool,
    /// Send messages shorter than this many bytes uncompressed (0: compress every message).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    deflate_min_size: usize,
    /// Keep each connection's compression context between messages (RFC 7692 context
    /// takeover): small similar messages compress far better, at about 300 KiB per connection
    /// that has exchanged a compressed message. Without it (the default) the answer carries
    /// server_no_context_takeover and client_no_context_takeover and a connection keeps no
    /// codec between messages. With --pubsub the server's own direction stays without takeover
    /// (one compression of a publish serves every subscriber).
    #[arg(long, conflicts_with = "no_deflate")]
    deflate_context_takeover: bool,
    /// Seconds to wait for clients to finish closing on shutdown (Ctrl-C, SIGTERM).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    shutdown_timeout: f64,
    /// Most WebSocket connections at once; further upgrades get 503.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    max_connections: usize,
    /// Accept browser upgrades only from this Origin (e.g. https://example.com). Repeatable.
    /// Without it any Origin is accepted; requests without Origin (non-browsers) always are.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// Seconds without hearing from a client before a keepalive ping (0: no keepalive).
    #[arg(long, value_name = "SECS", default_value_t = 20.0, help_heading = "Timers")]
    ping_interval: f64,
    /// Seconds to wait for any frame after a keepalive ping before closing with 1011.
    #[arg(long, value_name = "SECS", default_value_t = 20.0, help_heading = "Timers")]
    ping_timeout: f64,
    /// Seconds without a data message either way before closing with 1001 (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 0.0, help_heading = "Timers")]
    idle_timeout: f64,
    /// Seconds to wait for the client's reply to a close before dropping the connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, help_heading = "Timers")]
    close_timeout: f64,
    /// Largest message accepted, in bytes, after decompression (64 MiB); larger ones close
    /// with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, help_heading = "Limits")]
    max_message_size: usize,
    /// Largest frame accepted, in bytes (16 MiB); larger ones close with 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, help_heading = "Limits")]
    max_frame_size: usize,
    /// Echo a message piece by piece once this many of its bytes have arrived (64 KiB; a
    /// large value stores each message whole before echoing it).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 64 << 10,
        value_parser = clap::value_parser!(u64).range(1..),
        help_heading = "Limits"
    )]
    stream_threshold: u64,
    /// Most bytes of a streamed message the echo holds for a client that sends a whole message
    /// before reading its echo (16 MiB); beyond it the server stops reading until the client
    /// reads.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20, help_heading = "Limits")]
    echo_backlog: usize,
    /// Pub/sub instead of echo: a WebSocket to path /P subscribes to topic P, and every data
    /// message it sends is published to P (the sender included, unless --no-echo-self).
    #[arg(long, help_heading = "Pub/sub")]
    pubsub: bool,
    /// With --pubsub: a sender does not get its own messages back.
    #[arg(long, requires = "pubsub", help_heading = "Pub/sub")]
    no_echo_self: bool,
    /// With --pubsub: `POST /publish/P` publishes its body to topic P when the request carries
    /// `Authorization: Bearer TOKEN` (without this flag HTTP publishing is off).
    #[arg(long, value_name = "TOKEN", requires = "pubsub", help_heading = "Pub/sub")]
    publish_token: Option<String>,
    /// With --pubsub: how far behind (bytes of publishes not yet taken) a subscriber may fall
    /// before the oldest leave its topic's log (256 KiB); then --slow-subscriber decides.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 256 << 10,
        requires = "pubsub",
        help_heading = "Pub/sub"
    )]
    max_subscriber_queue: usize,
    /// With --pubsub: what happens to a subscriber that fell further behind: it `skip`s the
    /// oldest publishes (counted in /stats) or its connection is `close`d with 1013.
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        default_value_t = SlowSubscriber::Skip,
        requires = "pubsub",
        help_heading = "Pub/sub"
    )]
    slow_subscriber: SlowSubscriber,
    /// With --pubsub: join the other nodes on this broker, `redis://[user:pass@]HOST:PORT`
    /// (`rediss://` for TLS) or `nats://[user:pass@|token@]HOST:PORT` (`tls://` for TLS):
    /// publishes reach their subscribers too, and theirs reach this node's. Without it the hub
    /// is in this process only.
    #[arg(long, value_name = "URL", requires = "pubsub")]
    broker: Option<String>,
    /// With a TLS --broker (rediss://, tls://): check the broker's certificate against the CA
    /// certificates in this PEM file only, not the built-in roots (a broker with a private CA).
    #[arg(long, value_name = "FILE", requires = "broker")]
    broker_ca: Option<PathBuf>,
    /// With a TLS --broker: the client certificate chain (PEM) to present to a broker that
    /// asks for one (mutual TLS); with --broker-key.
    #[arg(long, value_name = "FILE", requires_all = ["broker", "broker_key"])]
    broker_cert: Option<PathBuf>,
    /// With --broker-cert: its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "broker_cert")]
    broker_key: Option<PathBuf>,
    /// Run PROGRAM for every WebSocket (as websocketd does), with the arguments after `--` and no
    /// shell: each text message is a line on its stdin, each line of its stdout a text message.
    /// CGI variables (REMOTE_ADDR, PATH_INFO, QUERY_STRING, HTTP_USER_AGENT…) describe the
    /// request. It gets SIGTERM when the connection ends; its exit closes the connection
    /// (1000 for status 0, 1011 otherwise). Its stderr goes to the log.
    #[arg(
        long,
        value_name = "PROGRAM",
        conflicts_with_all = ["pubsub", "sh"],
        help_heading = "Programs (websocketd)"
    )]
    exec: Option<std::ffi::OsString>,
    /// Like --exec, with `sh -c CMD`.
    #[arg(
        long,
        value_name = "CMD",
        conflicts_with = "pubsub",
        help_heading = "Programs (websocketd)"
    )]
    sh: Option<std::ffi::OsString>,
    /// With --exec or --sh: raw chunks both ways, as binary messages, instead of lines.
    #[arg(long, help_heading = "Programs (websocketd)")]
    binary: bool,
    /// With --exec or --sh: most child processes at once; further upgrades get 503.
    #[arg(long, value_name = "N", default_value_t = 256, help_heading = "Programs (websocketd)")]
    max_processes: usize,
    /// With --exec or --sh: seconds between SIGTERM and SIGKILL for a child whose connection
    /// ended; after a normal close, also the time the child gets first to take the input it was
    /// sent (then its stdin is closed).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 2.0,
        help_heading = "Programs (websocketd)"
    )]
    kill_grace: f64,
    /// Bridge to TCP (as websockify does): each WebSocket gets a TCP connection of its own to
    /// HOST:PORT, made before the upgrade is accepted (502 when it fails); binary messages carry
    /// the bytes both ways (a text message's UTF-8 goes to TCP too). TCP's end closes the
    /// WebSocket with 1000, a TCP error with 1011; the WebSocket's close ends TCP. Compression
    /// is not offered.
    #[arg(
        long,
        value_name = "tcp://HOST:PORT",
        value_parser = bridge::parse_target,
        conflicts_with_all = ["pubsub", "exec", "sh"],
        help_heading = "TCP bridge (websockify)"
    )]
    to: Option<bridge::Target>,
    /// The arguments of the --exec program (after `--`).
    #[arg(last = true, value_name = "ARGS", requires = "exec")]
    exec_args: Vec<std::ffi::OsString>,
}

/// `--slow-subscriber`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SlowSubscriber {
    Skip,
    Close,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // async-nats logs every failed reconnect attempt at info and error; the broker
                // link logs each outage once itself and /stats counts the attempts.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Bench(args) => match bench::run(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Connect(args) => match connect::run(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsx: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    // No context takeover either way unless asked for: then a connection keeps no zlib state
    // between messages (a few hundred KB each otherwise). In pub/sub mode the server's side is
    // always without it: one compression of a publish serves every subscriber that negotiated
    // compression (wsx::pubsub).
    // A bridge carries bytes that are mostly compressed or encrypted already (VNC, SSH, TLS):
    // deflate would cost a tenth of the throughput for nothing (measured: 26 MB/s instead of
    // 330 through both bridges).
    let deflate = (!args.no_deflate && args.to.is_none()).then(|| {
        wsx::proto::deflate::DeflateConfig::default()
            .min_size(args.deflate_min_size)
            .context_takeover(args.deflate_context_takeover)
            .server_no_context_takeover(args.pubsub || !args.deflate_context_takeover)
    });
    let options = serve::Options {
        listen: args.listen,
        handshake_timeout: secs(args.handshake_timeout, "--handshake-timeout")?,
        shutdown_timeout: secs(args.shutdown_timeout, "--shutdown-timeout")?,
        max_connections: args.max_connections,
        allowed_origins: args.allow_origins.clone(),
        echo_backlog: args.echo_backlog,
        config: std::sync::Arc::new(
            wsx::Config::default()
                .ping_interval(optional_secs(args.ping_interval, "--ping-interval")?)
                .ping_timeout(optional_secs(args.ping_timeout, "--ping-timeout")?)
                .idle_timeout(optional_secs(args.idle_timeout, "--idle-timeout")?)
                .close_timeout(Some(secs(args.close_timeout, "--close-timeout")?))
                .max_message_size(args.max_message_size)
                .max_frame_size(args.max_frame_size)
                .stream_threshold(usize::try_from(args.stream_threshold).unwrap_or(usize::MAX))
                // The server applies it to TLS, the request and the answer together (serve.rs).
                .handshake_timeout(None)
                .deflate(deflate.clone()),
        ),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key)?),
            _ => None,
        },
        pubsub: if !args.pubsub {
            None
        } else {
            let overflow = match args.slow_subscriber {
                SlowSubscriber::Skip => wsx::pubsub::Overflow::Skip,
                SlowSubscriber::Close => wsx::pubsub::Overflow::Close,
            };
            let config = wsx::pubsub::HubConfig::default()
                .max_queued_bytes(args.max_subscriber_queue)
                .overflow(overflow)
                .compression(deflate.clone());
            // The link's task runs on the server's runtime.
            let _runtime = runtime.enter();
            let (hub, link) = match &args.broker {
                None => (wsx::pubsub::Hub::with_config(config), None),
                Some(url) => {
                    // Nothing from the broker is larger than what a client may publish here.
                    let mut link_config =
                        wsx_broker::LinkConfig::default().max_message_size(args.max_message_size);
                    if let Some(ca) = &args.broker_ca {
                        link_config = link_config.tls_ca(ca);
                    }
                    if let (Some(cert), Some(key)) = (&args.broker_cert, &args.broker_key) {
                        link_config = link_config.tls_client_cert(cert, key);
                    }
                    let link = wsx_broker::Link::new(url, link_config).map_err(|e| {
                        anyhow::anyhow!("--broker {}: {e}", wsx_broker::public_url(url))
                    })?;
                    (wsx::pubsub::Hub::with_broker(config, link.clone()), Some(link))
                }
            };
            Some(pubsub::Options {
                hub,
                broker: link,
                echo_self: !args.no_echo_self,
                publish_token: args.publish_token.clone(),
            })
        },
        exec: exec_options(&args)?,
        to: args.to.clone(),
    };
    runtime.block_on(serve::run(options))
}

/// The settings of `--exec` or `--sh`, if given.
fn exec_options(args: &ServeArgs) -> anyhow::Result<Option<exec::Options>> {
    let (program, argv) = match (&args.exec, &args.sh) {
        (Some(program), _) => (program.clone(), args.exec_args.clone()),
        (None, Some(cmd)) => ("sh".into(), vec!["-c".into(), cmd.clone()]),
        (None, None) => {
            if args.binary {
                anyhow::bail!("--binary needs --exec or --sh");
            }
            return Ok(None);
        }
    };
    let grace = secs(args.kill_grace, "--kill-grace")?;
    Ok(Some(exec::Options::new(program, argv, args.binary, args.max_processes, grace)))
}

fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<wsx::tls::rustls::ServerConfig>> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let config = wsx::tls::server_config(&read(cert)?, &read(key)?)
        .with_context(|| format!("TLS setup from {} and {}", cert.display(), key.display()))?;
    // HTTP/2 first: browsers then open their WebSockets as streams of the connection that
    // loaded the page (RFC 8441), which `wsx serve` serves on every path.
    let mut config = std::sync::Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// Seconds where 0 means "off".
fn optional_secs(value: f64, flag: &str) -> anyhow::Result<Option<Duration>> {
    let d = secs(value, flag)?;
    Ok((!d.is_zero()).then_some(d))
}

fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} must be a non-negative number of seconds"))
}
