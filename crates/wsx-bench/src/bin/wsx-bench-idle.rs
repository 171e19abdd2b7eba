//! `wsx-bench-idle`: opens idle WebSocket connections and holds them.

use std::net::SocketAddr;
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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let what =
            || format!("opening {} connections to {}{}", args.connections, args.addr, args.path);
        let sockets = if args.warm || args.offer.is_some() {
            warm(&args).await.with_context(what)?
        } else {
            wsx_bench::idle::open(args.addr, &args.path, args.connections, args.parallel)
                .await
                .with_context(what)?
        };
        println!("ready {}", sockets.len());
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
        drop(sockets);
        Ok(())
    })
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
