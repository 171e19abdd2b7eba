//! # wsx-bench: the peers wsx is measured against
//!
//! Echo servers built on other Rust WebSocket crates, each set up the way its own README and
//! benchmark examples recommend for speed (no compression anywhere), plus a raw TCP baseline,
//! and wsx itself inside hyper and axum.
//! `scripts/bench.sh` runs them one at a time on a single-threaded tokio runtime pinned to one
//! core, next to `wsx serve --threads 1 --no-deflate`, and drives them all with `wsx bench`.
//!
//! - [`Impl::Raw`]: the floor. A WebSocket client will not accept a byte-for-byte TCP echo
//!   (it would get its own upgrade request back, and masked frames, which RFC 6455 §5.1 forbids
//!   from a server), so this one does the least a client accepts: it answers the upgrade, then
//!   copies frames back with the mask bit cleared and the payload unmasked. No UTF-8 checks, no
//!   control frames, no limits, no message reassembly; 256 KiB reads, payloads unmasked where
//!   they were read.
//! - [`Impl::Tungstenite`]: `tokio-tungstenite` with its default `WebSocketConfig`.
//! - [`Impl::TungsteniteTls`]: the same over TLS: tokio-rustls's `TlsAcceptor` with a rustls
//!   `ServerConfig` built as tokio-rustls's `server` example does (rustls's defaults, the ring
//!   provider as in wsx), the upgrade and the echo on the TLS stream, and `close_notify` once
//!   the WebSocket is closed. tokio-tungstenite's own TLS features are client connectors only.
//! - [`Impl::Fastwebsockets`]: `fastwebsockets` behind a hyper 1 upgrade with
//!   `FragmentCollector`, in `tokio::task::unconstrained`, as its `echo_server` example does.
//! - [`Impl::TokioWebsockets`]: `tokio-websockets` with `frame_size(usize::MAX)`, in
//!   `tokio::task::unconstrained`, as its `echo_server` example does.
//! - [`Impl::Axum`]: axum 0.8's own WebSocket (`axum::extract::ws::WebSocketUpgrade`, which is
//!   tokio-tungstenite underneath) with its default config, on `Router::new().route("/",
//!   get(..))` served by `axum::serve`, as axum's documentation writes it. `TCP_NODELAY` comes
//!   from `ListenerExt::tap_io`, axum 0.8's documented way.
//! - [`Impl::WsxAxum`]: the same app with `wsx::axum::WebSocketUpgrade` in place of axum's, and
//!   its defaults: permessage-deflate accepted when offered (the benchmark client does not
//!   offer it), keepalive pings on, messages received whole. Against [`Impl::Axum`] it
//!   measures the import swap; against `wsx serve` (defaults) what hyper and axum cost.
//! - [`Impl::WsxHyper`]: a hyper 1 HTTP/1.1 server (`serve_connection(..).with_upgrades()`)
//!   answering with `wsx::hyper::upgrade` under one shared `ServerPolicy::new(Config::default())`
//!   (keepalive on, no compression), the echo spawned per upgrade: the hyper layer alone,
//!   without axum's router.
//!
//! tokio-tungstenite, tokio-websockets, axum and both wsx integrations are `Stream + Sink`, and
//! share one echo loop ([`echo`]) that behaves like `wsx serve`:
//! a message is fed to the sink, and the sink is flushed only when no further message is ready,
//! so a burst goes back in few writes.
//!
//! Every server sets `TCP_NODELAY`, as `wsx serve` does, and keeps the default 64 MiB message
//! limit.
//!
//! Pub/sub peers, for the pub/sub stage of `scripts/bench.sh` (uWebSockets' broadcast_test:
//! every data message any connection sends goes to every connection, the sender included), to
//! compare with `wsx serve --pubsub`:
//!
//! - [`Impl::TungsteniteBroadcast`]: tokio-tungstenite and one `tokio::sync::broadcast`
//!   channel; per connection a task that reads and publishes, and a writer task that `send`s
//!   (writes and flushes) each message the channel carries: the code chat examples show, one
//!   write per delivery.
//! - [`Impl::TungsteniteBatch`]: the same with a writer that feeds everything queued in the
//!   channel (`try_recv` until empty) and flushes once.
//! - `peers/ws_broadcast.mjs`: Node's `ws` (pinned in `peers/package-lock.json`),
//!   `wss.clients.forEach(c => c.send(data))` on each message.
//! - `peers/python_broadcast.py`: Python websockets' asyncio server with `broadcast()`.
//!
//! The crate also holds the idle-connection client used to measure memory per connection
//! ([`idle`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};

mod axum_echo;
mod fastwebsockets_echo;
pub mod idle;
mod raw;
mod tokio_websockets_echo;
mod tungstenite_broadcast;
mod tungstenite_echo;
mod wsx_hyper_echo;

/// An echo server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Impl {
    /// The raw TCP baseline: handshake and frame header rewrite, nothing else.
    Raw,
    /// `tokio-tungstenite`.
    Tungstenite,
    /// `tokio-tungstenite` over `tokio-rustls` (needs a certificate and key: [`Tls`]).
    TungsteniteTls,
    /// `fastwebsockets` with hyper's upgrade.
    Fastwebsockets,
    /// `tokio-websockets`.
    TokioWebsockets,
    /// axum's own WebSocket extractor (tokio-tungstenite), under `axum::serve`.
    Axum,
    /// `wsx::axum::WebSocketUpgrade`, under `axum::serve`.
    WsxAxum,
    /// `wsx::hyper::upgrade` behind a hyper 1 HTTP/1.1 server.
    WsxHyper,
    /// Pub/sub: `tokio-tungstenite` and a `tokio::sync::broadcast` channel, each connection's
    /// writer sending (and flushing) one message at a time.
    TungsteniteBroadcast,
    /// Pub/sub: the same, each writer feeding everything queued in the channel, then flushing
    /// once.
    TungsteniteBatch,
}

impl Impl {
    /// The name used on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Tungstenite => "tungstenite",
            Self::TungsteniteTls => "tungstenite-tls",
            Self::Fastwebsockets => "fastwebsockets",
            Self::TokioWebsockets => "tokio-websockets",
            Self::Axum => "axum",
            Self::WsxAxum => "wsx-axum",
            Self::WsxHyper => "wsx-hyper",
            Self::TungsteniteBroadcast => "tungstenite-broadcast",
            Self::TungsteniteBatch => "tungstenite-batch",
        }
    }
}

/// Whether `implementation` is a pub/sub server (uWebSockets' broadcast_test: every data
/// message a connection sends goes to every connection, the sender included) rather than an
/// echo server.
pub fn is_pubsub(implementation: Impl) -> bool {
    matches!(implementation, Impl::TungsteniteBroadcast | Impl::TungsteniteBatch)
}

/// Whether `implementation` serves wss:// and so needs a [`Tls`] configuration.
pub fn is_tls(implementation: Impl) -> bool {
    implementation == Impl::TungsteniteTls
}

/// The TLS configuration of the TLS peers: a rustls `ServerConfig`.
pub type Tls = Arc<tokio_rustls::rustls::ServerConfig>;

/// A TLS server configuration for the TLS peers from a PEM certificate chain and a PEM key, as
/// tokio-rustls's `server` example builds one (see [`Impl::TungsteniteTls`]).
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Tls> {
    tungstenite_echo::tls_config(cert_pem, key_pem)
}

/// Serves connections forever with `implementation` on the current runtime; `tls` is required
/// by the TLS peers ([`is_tls`]) and refused by the others.
///
/// Accept errors (such as running out of file descriptors) are reported and survived, so one
/// failed connection never ends a benchmark run. The axum servers run `axum::serve`'s own
/// accept loop, which does the same.
pub async fn serve(
    implementation: Impl,
    listener: TcpListener,
    tls: Option<Tls>,
) -> io::Result<()> {
    let tls_mismatch = |needs: &str| {
        let what = format!("{} {needs} TLS certificate and key", implementation.name());
        Err(io::Error::new(io::ErrorKind::InvalidInput, what))
    };
    if tls.is_some() && !is_tls(implementation) {
        return tls_mismatch("takes no");
    }
    match implementation {
        Impl::Axum => axum_echo::serve_axum(listener).await,
        Impl::WsxAxum => axum_echo::serve_wsx(listener).await,
        Impl::Raw => accept_loop(listener, |tcp| spawn(raw::serve(tcp))).await,
        Impl::Tungstenite => accept_loop(listener, |tcp| spawn(tungstenite_echo::serve(tcp))).await,
        Impl::TungsteniteTls => {
            let Some(config) = tls else { return tls_mismatch("needs a") };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            accept_loop(listener, |tcp| spawn(tungstenite_echo::serve_tls(tcp, acceptor.clone())))
                .await
        }
        Impl::Fastwebsockets => {
            accept_loop(listener, |tcp| spawn(fastwebsockets_echo::serve(tcp))).await
        }
        // tokio-websockets' own benchmark server runs each connection unconstrained.
        Impl::TokioWebsockets => {
            accept_loop(listener, |tcp| {
                spawn(tokio::task::unconstrained(tokio_websockets_echo::serve(tcp)))
            })
            .await
        }
        Impl::WsxHyper => accept_loop(listener, |tcp| spawn(wsx_hyper_echo::serve(tcp))).await,
        Impl::TungsteniteBroadcast | Impl::TungsteniteBatch => {
            let writer = match implementation {
                Impl::TungsteniteBatch => tungstenite_broadcast::Writer::Batch,
                _ => tungstenite_broadcast::Writer::SendEach,
            };
            let topic = tungstenite_broadcast::channel();
            accept_loop(listener, |tcp| {
                spawn(tungstenite_broadcast::serve(tcp, topic.clone(), writer))
            })
            .await
        }
    }
}

/// Accepts forever, setting `TCP_NODELAY`, and hands each connection to `connection`.
async fn accept_loop(listener: TcpListener, connection: impl Fn(TcpStream)) -> io::Result<()> {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                eprintln!("wsx-bench-server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("wsx-bench-server: TCP_NODELAY: {e}");
        }
        connection(tcp);
    }
}

/// Echoes every message `is_data` accepts until the stream ends or fails.
///
/// Messages are fed, not sent: the sink is flushed only when the next message is not already
/// available, the same batching `wsx serve` does.
pub async fn echo<S, M, E>(ws: &mut S, is_data: impl Fn(&M) -> bool) -> Result<(), E>
where
    S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
{
    loop {
        let next = match futures_util::FutureExt::now_or_never(ws.next()) {
            Some(next) => next,
            None => {
                ws.flush().await?;
                ws.next().await
            }
        };
        match next {
            None => return ws.flush().await,
            Some(msg) => {
                let msg = msg?;
                if is_data(&msg) {
                    ws.feed(msg).await?;
                }
            }
        }
    }
}

/// Runs one connection's task; a connection's error ends only that connection.
fn spawn<F, E>(task: F)
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
{
    tokio::spawn(async move {
        // Peers going away mid-benchmark is normal; errors stay quiet.
        let _ = task.await;
    });
}
