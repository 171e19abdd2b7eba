//! What a compressed connection keeps between messages. With the default `DeflateConfig` (no
//! context takeover either way) a connection that has received and sent compressed messages
//! holds no zlib state afterwards: the codecs were borrowed from the thread's pool for each
//! message. With context takeover it keeps both (about 300 KiB), which is the cost the default
//! avoids. Live heap bytes are counted by a global allocator that wraps the system one in this
//! test binary.

#[path = "common/live_heap.rs"]
mod live_heap;

use live_heap::{alone, live};
use wsx_proto::deflate::{self, DeflateConfig};
use wsx_proto::{Config, Connection, Message, Role};

/// Connections held at once while counting.
const CONNECTIONS: usize = 50;

/// Chromium's (and Python `websockets`') offer.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

#[test]
fn connections_without_context_takeover_keep_no_codec_after_their_messages() {
    let per_connection = bytes_per_connection(DeflateConfig::default());
    // The connection itself (its config is shared) and the codec's few fields: far below the
    // 40 KiB of the smallest zlib state.
    assert!(per_connection < 2048, "{per_connection} bytes per connection");
}

#[test]
fn connections_with_context_takeover_keep_their_codecs() {
    // The counterpart, so the figure above means something: each keeps its compressor and
    // decompressor (over 256 KiB at 15 bits).
    let per_connection = bytes_per_connection(DeflateConfig::default().context_takeover(true));
    assert!(per_connection > 200 << 10, "{per_connection} bytes per connection");
}

/// Live heap bytes per server connection with `server` deflate settings, after each received
/// a compressed message (delivered in pieces) and sent two, while all of them are still open.
fn bytes_per_connection(server: DeflateConfig) -> isize {
    let _alone = alone();
    // On a thread of its own, joined under the lock: its pool is freed before the other test
    // counts.
    std::thread::spawn(move || measure(server)).join().unwrap()
}

fn measure(server: DeflateConfig) -> isize {
    let config = std::sync::Arc::new(Config::default().deflate(Some(server.clone())));
    let params = deflate::negotiate([OFFER], &server).unwrap();
    let response = params.to_response_header();
    let message = Message::text(
        "{\"type\":\"message\",\"room\":\"general\",\"text\":\"hello hello hello\"}".repeat(20),
    );
    // One client frame serves every connection: a client that resets after each message
    // writes messages that any decompressor can read (and it takes either answer).
    let client_config = DeflateConfig::default().server_no_context_takeover(false);
    let client_params =
        deflate::accept_response([response.as_str()], &client_config).unwrap().unwrap();
    let mut client = Connection::new(Role::Client, Config::default().deflate(Some(client_config)))
        .with_deflate(client_params);
    client.send(message.clone()).unwrap();
    let wire = drain(&mut client);
    assert_eq!(wire[0] & 0x40, 0x40, "the client compressed its message");

    let serve = |conn: &mut Connection| {
        for piece in wire.chunks(wire.len() / 3 + 1) {
            conn.handle_input(piece);
        }
        assert_eq!(conn.poll_message().map(|r| r.unwrap()), Some(message.clone()));
        for _ in 0..2 {
            conn.send(message.clone()).unwrap();
        }
        let out = drain(conn);
        assert_eq!(out[0] & 0x40, 0x40, "the server compressed its echo");
    };
    // A first connection fills the thread's pool (and any lazily built statics).
    let mut warm = Connection::new(Role::Server, config.clone()).with_deflate(params);
    serve(&mut warm);

    let before = live();
    let mut held = Vec::with_capacity(CONNECTIONS);
    let reserved = live();
    for _ in 0..CONNECTIONS {
        let mut conn = Connection::new(Role::Server, config.clone()).with_deflate(params);
        serve(&mut conn);
        held.push(conn);
    }
    let per_connection = (live() - reserved) / CONNECTIONS as isize;
    eprintln!(
        "{per_connection} live heap bytes per connection ({} for the Vec)",
        reserved - before
    );
    drop(held);
    per_connection
}

/// Everything `conn` queued to send.
fn drain(conn: &mut Connection) -> Vec<u8> {
    use bytes::Buf;
    let mut out = Vec::new();
    loop {
        let t = conn.transmit();
        if !t.has_remaining() {
            break;
        }
        let n = t.chunk().len();
        out.extend_from_slice(t.chunk());
        t.advance(n);
    }
    out
}
