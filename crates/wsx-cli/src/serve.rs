//! `wsx serve`: the echo server and its demo page.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wsx::tls::{rustls::ServerConfig, TlsAcceptor};
use wsx::{Accept, CloseCode, CloseFrame, Config, Incoming};

/// The demo page, embedded in the binary.
const DEMO_PAGE: &str = include_str!("demo.html");

/// Settings of the echo server.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) listen: SocketAddr,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    /// Limits and compression of every connection.
    pub(crate) config: Config,
    /// Serve `wss://` and https with this configuration.
    pub(crate) tls: Option<Arc<ServerConfig>>,
}

/// Serves until Ctrl-C or SIGTERM, then closes every connection with 1001.
pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let (http, ws) = if options.tls.is_some() { ("https", "wss") } else { ("http", "ws") };
    info!("listening on {http}://{addr}/ (WebSocket echo on {ws}://{addr}/ at any path)");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tracker = TaskTracker::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let options = options.clone();
                    let shutdown = shutdown_rx.clone();
                    tracker.spawn(async move {
                        if let Err(e) = handle(tcp, &options, shutdown).await {
                            debug!(%peer, "connection ended: {e}");
                        }
                    });
                }
                // Running out of file descriptors and similar: keep serving the others.
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            signal = &mut stop => {
                info!("{signal}: closing connections");
                break;
            }
        }
    }
    drop(listener);
    tracker.close();
    // Receivers only fail if every connection already ended, which is fine.
    let _ = shutdown_tx.send(true);
    if tokio::time::timeout(options.shutdown_timeout, tracker.wait()).await.is_err() {
        warn!("{} connections did not close in time; dropping them", tracker.len());
    }
    info!("stopped");
    Ok(())
}

/// One connection: TLS if configured, then the demo page for plain HTTP or the echo for
/// WebSocket upgrades. The handshake timeout covers TLS and the HTTP request together.
async fn handle(
    tcp: TcpStream,
    options: &Options,
    shutdown: watch::Receiver<bool>,
) -> Result<(), wsx::Error> {
    tcp.set_nodelay(true)?;
    let deadline = Instant::now() + options.handshake_timeout;
    let timed_out = |_| wsx::Error::Timeout("handshake");
    match &options.tls {
        Some(config) => {
            let tls = timeout_at(deadline, TlsAcceptor::from(config.clone()).accept(tcp))
                .await
                .map_err(timed_out)??;
            let incoming = timeout_at(deadline, Incoming::read(tls, options.config.clone()))
                .await
                .map_err(timed_out)??;
            serve(incoming, shutdown).await
        }
        None => {
            let incoming = timeout_at(deadline, Incoming::read(tcp, options.config.clone()))
                .await
                .map_err(timed_out)??;
            serve(incoming, shutdown).await
        }
    }
}

async fn serve<S>(
    incoming: Incoming<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !incoming.is_upgrade() {
        return serve_page(incoming).await;
    }
    let mut ws = incoming.accept(Accept::default()).await?;
    loop {
        tokio::select! {
            msg = ws.recv() => match msg {
                None => return Ok(()),
                Some(Ok(msg)) if msg.is_data() => {
                    // Queued, not flushed: the next recv writes it, so a burst of messages
                    // goes back in few writes. A full send buffer stops reading here.
                    ws.feed(msg).await?;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => debug!("peer error: {e}"),
            },
            _ = shutdown.changed() => {
                ws.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down"))).await?;
                let drain = async { while ws.recv().await.is_some() {} };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
                return Ok(());
            }
        }
    }
}

async fn serve_page<S>(incoming: Incoming<S>) -> Result<(), wsx::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = incoming.request();
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/" | "/index.html") => {
            (StatusCode::OK, "text/html; charset=utf-8", DEMO_PAGE.as_bytes())
        }
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", &b"not found\n"[..]),
    };
    incoming.respond(status, content_type, body).await
}

/// Resolves on Ctrl-C or SIGTERM, naming the signal.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "terminated",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "interrupted"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}
