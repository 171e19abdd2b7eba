//! Pub/sub on tokio-tungstenite and `tokio::sync::broadcast`, as chat examples write it: one
//! broadcast channel for the topic; per connection, a task that reads and publishes into the
//! channel and a writer task that sends what the channel carries.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};

/// How each connection's writer sends what the channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// `send` (write and flush) per message: the usual code.
    SendEach,
    /// Everything queued in the channel is fed (`try_recv` until empty), then flushed once.
    Batch,
}

/// The channel's capacity. A round of uWebSockets' broadcast_test has one message per
/// connection in flight, so 1,000 connections need 1,000 slots; a receiver that falls further
/// behind loses messages (`RecvError::Lagged`), as broadcast channels do.
pub(crate) const CAPACITY: usize = 4096;

/// The topic every connection subscribes to.
pub(crate) fn channel() -> broadcast::Sender<Message> {
    broadcast::channel(CAPACITY).0
}

/// Accepts the upgrade, subscribes, and publishes every data message the peer sends (the
/// sender gets its own too) until the peer closes.
pub(crate) async fn serve(
    tcp: TcpStream,
    topic: broadcast::Sender<Message>,
    writer: Writer,
) -> Result<(), Error> {
    let ws =
        tokio_tungstenite::accept_async_with_config(tcp, Some(WebSocketConfig::default())).await?;
    let (sink, mut stream) = ws.split();
    let inbox = topic.subscribe();
    let write = tokio::spawn(write(sink, inbox, writer));
    let result = async {
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if msg.is_binary() || msg.is_text() {
                // No receivers is not an error: nobody is subscribed.
                let _ = topic.send(msg);
            }
        }
        Ok(())
    }
    .await;
    write.abort();
    result
}

/// The writer task: sends what the channel carries until it closes or the peer goes away.
async fn write<S>(
    mut sink: S,
    mut inbox: broadcast::Receiver<Message>,
    writer: Writer,
) -> Result<(), Error>
where
    S: futures_util::Sink<Message, Error = Error> + Unpin,
{
    loop {
        let first = match inbox.recv().await {
            Ok(msg) => msg,
            Err(RecvError::Lagged(n)) => {
                lagged(n);
                continue;
            }
            Err(RecvError::Closed) => return Ok(()),
        };
        if writer == Writer::SendEach {
            sink.send(first).await?;
            continue;
        }
        sink.feed(first).await?;
        loop {
            match inbox.try_recv() {
                Ok(msg) => sink.feed(msg).await?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(n)) => lagged(n),
                Err(TryRecvError::Closed) => return Ok(()),
            }
        }
        sink.flush().await?;
    }
}

fn lagged(n: u64) {
    eprintln!("wsx-bench-server: a subscriber fell behind and lost {n} messages");
}
