//! The `tokio-tungstenite` echo server.

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};

/// Accepts the upgrade and echoes data messages until the peer closes.
pub(crate) async fn serve(tcp: TcpStream) -> Result<(), Error> {
    // The defaults are tungstenite's tuned ones: 128 KiB read and write buffers, 64 MiB
    // messages, 16 MiB frames. tungstenite has no compression.
    let config = WebSocketConfig::default();
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    // tungstenite answers the peer's close itself; the stream then ends.
    crate::echo(&mut ws, |m: &Message| m.is_text() || m.is_binary()).await
}
