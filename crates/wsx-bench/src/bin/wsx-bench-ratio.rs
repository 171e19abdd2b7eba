//! `wsx-bench-ratio`: how much permessage-deflate saves on small JSON-like messages.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;

/// Opens one connection to an echo server with --offer as its `Sec-WebSocket-Extensions`, sends
/// -n chat-like JSON text messages of about 200 B one at a time (each echo awaited and
/// checked), and prints one JSON line: the answer, the message bytes, and the bytes on the wire
/// each way (frames, headers included). The client compresses as a browser does: with its own
/// context kept unless the server's answer says `client_no_context_takeover`.
#[derive(Debug, Parser)]
#[command(name = "wsx-bench-ratio", version, about)]
struct Args {
    /// The server's address (host:port).
    addr: SocketAddr,
    /// `Sec-WebSocket-Extensions` of the upgrade request.
    #[arg(long, default_value = "permessage-deflate; client_max_window_bits")]
    offer: String,
    /// Messages to send.
    #[arg(short = 'n', long, default_value_t = 1000)]
    messages: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut peer = wsx_bench::idle::Peer::open(args.addr, "/", Some(&args.offer))
            .await
            .with_context(|| format!("connecting to {}", args.addr))?;
        anyhow::ensure!(peer.compresses(), "the server declined compression ({:?})", peer.answer);
        let mut bytes = 0;
        for i in 0..args.messages {
            let message = wsx::Message::text(wsx_bench::idle::chat_message(i));
            bytes += message.payload().len();
            let echo = peer.round_trip(message.clone()).await?;
            anyhow::ensure!(echo == message, "echo {i} differs from the message sent");
        }
        let answer = peer.answer.clone().unwrap_or_default();
        println!(
            "{{\"answer\":\"{answer}\",\"messages\":{},\"message_bytes\":{bytes},\
             \"client_wire_bytes\":{},\"server_wire_bytes\":{}}}",
            args.messages, peer.sent, peer.received
        );
        Ok(())
    })
}
