//! The `tokio-tungstenite` echo server, over plain TCP or over TLS with tokio-rustls.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::WebSocketStream;

/// Accepts the upgrade and echoes data messages until the peer closes.
pub(crate) async fn serve(tcp: TcpStream) -> Result<(), Error> {
    let mut ws = accept(tcp).await?;
    // tungstenite answers the peer's close itself; the stream then ends.
    crate::echo(&mut ws, is_data).await
}

/// The same over TLS: the TLS handshake with `acceptor`, then the upgrade and the echo on the
/// TLS stream; once the WebSocket is closed, the TLS session is closed too (`close_notify`).
pub(crate) async fn serve_tls(tcp: TcpStream, acceptor: TlsAcceptor) -> Result<(), Error> {
    let tls = acceptor.accept(tcp).await?;
    let mut ws = accept(tls).await?;
    let echoed = crate::echo(&mut ws, is_data).await;
    // tokio-tungstenite leaves the transport open after the close handshake; a TLS server
    // should end the session with close_notify (RFC 8446 §6.1) rather than just drop TCP.
    // Best effort: the client may have gone already.
    let _ = ws.get_mut().shutdown().await;
    echoed
}

/// A rustls server configuration as tokio-rustls's `server` example builds one: the
/// certificate chain and key from PEM files, no client authentication, rustls's defaults
/// otherwise (TLS 1.2 and 1.3, in-memory session cache, no ALPN), with the ring provider, the
/// one wsx uses.
pub(crate) fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<Arc<ServerConfig>> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("bad PEM certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid("bad PEM key", &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid("certificate and key", &e))?;
    Ok(Arc::new(config))
}

async fn accept<S>(stream: S) -> Result<WebSocketStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The defaults are tungstenite's tuned ones: 128 KiB read and write buffers, 64 MiB
    // messages, 16 MiB frames. tungstenite has no compression.
    let config = WebSocketConfig::default();
    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
}

fn is_data(m: &Message) -> bool {
    m.is_text() || m.is_binary()
}
