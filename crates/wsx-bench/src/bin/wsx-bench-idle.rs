//! `wsx-bench-idle`: opens idle WebSocket connections and holds them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// Opens N upgraded WebSocket connections to a server, prints `ready N` on stdout, then holds
/// them without sending anything until killed or until --hold runs out. With --warm each first
/// exchanges one message with the (echo) server, compressed if --offer negotiated it, so the
/// server's compression codecs have been used once before the connection goes idle.
#[derive(Debug, Parser)]
#[command(name = "wsx-bench-idle", version, about)]
struct Args {
    /// The server's address (host:port).
    addr: SocketAddr,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 10_000)]
    connections: usize,
    /// The request path (with --pubsub, `wsx serve` subscribes each connection to its topic).
    #[arg(long, default_value = "/")]
    path: String,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Seconds to hold the connections before exiting.
    #[arg(long, default_value_t = 600)]
    hold: u64,
    /// `Sec-WebSocket-Extensions` of the upgrade request, e.g. Chromium's
    /// `permessage-deflate; client_max_window_bits`. Default: none.
    #[arg(long)]
    offer: Option<String>,
    /// Send one ~200 B JSON-like text message on each connection and wait for its echo before
    /// holding it idle (fails unless the server echoes it; with --offer, unless the server
    /// accepted compression).
    #[arg(long)]
    warm: bool,
    /// wss://: connect over TLS, trusting only the PEM certificates in FILE (the server's own
    /// self-signed certificate will do). Not with --offer or --warm.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["offer", "warm"])]
    cacert: Option<PathBuf>,
    /// With --cacert: the name the server's certificate must carry (default: the IP address
    /// of ADDR).
    #[arg(long, requires = "cacert")]
    server_name: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let what =
            || format!("opening {} connections to {}{}", args.connections, args.addr, args.path);
        if let Some(ca) = &args.cacert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let name = args.server_name.clone().unwrap_or_else(|| args.addr.ip().to_string());
            let tls = wsx_bench::idle::TlsClient::new(&pem, &name)?;
            let sockets = wsx_bench::idle::open_tls(
                args.addr,
                &args.path,
                args.connections,
                args.parallel,
                &tls,
            )
            .await
            .with_context(what)?;
            hold(sockets, args.hold).await;
            return Ok(());
        }
        let sockets = if args.warm || args.offer.is_some() {
            warm(&args).await.with_context(what)?
        } else {
            wsx_bench::idle::open(args.addr, &args.path, args.connections, args.parallel)
                .await
                .with_context(what)?
        };
        hold(sockets, args.hold).await;
        Ok(())
    })
}

/// Says `ready N`, then holds the connections for `secs` seconds.
async fn hold<T>(sockets: Vec<T>, secs: u64) {
    println!("ready {}", sockets.len());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(sockets);
}

/// Opens the connections with `--offer`, each exchanging one message first with `--warm`.
async fn warm(args: &Args) -> anyhow::Result<Vec<tokio::net::TcpStream>> {
    use futures_util::{StreamExt, TryStreamExt};
    let offer = args.offer.as_deref();
    futures_util::stream::iter(0..args.connections)
        .map(|i| async move {
            let mut peer = wsx_bench::idle::Peer::open(args.addr, &args.path, offer).await?;
            if offer.is_some() && !peer.compresses() {
                anyhow::bail!("the server declined {offer:?} (answer {:?})", peer.answer);
            }
            if args.warm {
                let message = wsx::Message::text(wsx_bench::idle::chat_message(i));
                let echo = peer.round_trip(message.clone()).await?;
                anyhow::ensure!(echo == message, "the echo differs from the message sent");
            }
            Ok(peer.into_tcp())
        })
        .buffer_unordered(args.parallel.max(1))
        .try_collect()
        .await
}
