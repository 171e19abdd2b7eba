//! `wsx-bench-idle`: opens idle WebSocket connections and holds them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

/// Opens N upgraded WebSocket connections to a server, prints `ready N` on stdout, then holds
/// them without sending anything until killed or until --hold runs out.
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
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let sockets = wsx_bench::idle::open(args.addr, &args.path, args.connections, args.parallel)
            .await
            .with_context(|| {
                format!("opening {} connections to {}{}", args.connections, args.addr, args.path)
            })?;
        println!("ready {}", sockets.len());
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
        drop(sockets);
        Ok(())
    })
}
