//! `wsx-bench-server`: one peer echo server on a single-threaded tokio runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use wsx_bench::Impl;

/// An echo server built on another WebSocket crate, for side-by-side benchmarks of wsx.
#[derive(Debug, Parser)]
#[command(name = "wsx-bench-server", version, about)]
struct Args {
    /// Which implementation serves.
    #[arg(long = "impl", value_enum)]
    implementation: Impl,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// PEM certificate chain, for the TLS peers (tungstenite-tls); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
            Some(wsx_bench::tls_config(&read(cert)?, &read(key)?).with_context(|| {
                format!("TLS setup from {} and {}", cert.display(), key.display())
            })?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    // One thread, like `wsx serve --threads 1`: the benchmark compares work per core.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "wsx-bench-server: {} listening on {scheme}://{}/",
            args.implementation.name(),
            listener.local_addr()?
        );
        wsx_bench::serve(args.implementation, listener, tls).await?;
        Ok(())
    })
}
