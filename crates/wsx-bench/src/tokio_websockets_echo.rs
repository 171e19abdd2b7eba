//! The `tokio-websockets` echo server.

use tokio::net::TcpStream;
use tokio_websockets::{Config, Error, Message, ServerBuilder};

/// Accepts the upgrade and echoes data messages until the peer closes.
pub(crate) async fn serve(tcp: TcpStream) -> Result<(), Error> {
    // As in tokio-websockets' own benchmark server: outgoing messages are never split into
    // frames. Limits stay at the default 64 MiB message, like every other server here.
    let (_request, mut ws) =
        ServerBuilder::new().config(Config::default().frame_size(usize::MAX)).accept(tcp).await?;
    crate::echo(&mut ws, |m: &Message| m.is_text() || m.is_binary()).await
}
