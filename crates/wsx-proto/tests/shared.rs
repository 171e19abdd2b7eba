//! `SharedFrame` and `Connection::send_shared`: a message encoded once goes out byte for byte
//! on server connections, in order with the connection's own frames, and is refused where
//! the protocol forbids it.

use bytes::{Buf, Bytes};
use wsx_proto::deflate::{self, DeflateConfig, Params};
use wsx_proto::{Chunk, Config, Connection, Message, Role, SendError, SharedFrame};

/// Everything the connection queued, as the transport would take it.
fn drain(conn: &mut Connection) -> Vec<u8> {
    let out = conn.transmit();
    let bytes = out.copy_to_bytes(out.remaining());
    bytes.to_vec()
}

/// permessage-deflate with context takeover, as a bare offer negotiates it.
fn params() -> Params {
    deflate::negotiate([deflate::NAME], &DeflateConfig::default()).unwrap()
}

/// What a plain offer negotiates with a server that keeps its context.
fn takeover_params() -> Params {
    deflate::negotiate([deflate::NAME], &DeflateConfig::default().context_takeover(true)).unwrap()
}

/// The messages a client reads from `wire`.
fn read_as_client(wire: &[u8], deflate: bool) -> Vec<Message> {
    let mut client = Connection::new(Role::Client, Config::default());
    if deflate {
        client = client.with_deflate(params());
    }
    client.handle_input(wire);
    let mut got = Vec::new();
    while let Some(msg) = client.poll_message() {
        got.push(msg.expect("a valid server stream"));
    }
    got
}

#[test]
fn a_shared_frame_is_the_frame_the_connection_would_encode() {
    for message in [
        Message::text(""),
        Message::text("héllo"),
        Message::binary(vec![1u8; 125]),
        Message::binary(vec![2u8; 126]),
        Message::binary(vec![3u8; 70_000]),
    ] {
        let frame = SharedFrame::new(&message).unwrap();
        let mut conn = Connection::new(Role::Server, Config::default());
        conn.send(message.clone()).unwrap();
        assert_eq!(frame.as_bytes(), drain(&mut conn), "{message:?}");
        assert_eq!(frame.wire_len(), frame.as_bytes().len());
        assert_eq!(frame.is_text(), matches!(message, Message::Text(_)));
    }
    assert!(SharedFrame::new(&Message::Ping(Bytes::new())).is_none());
    assert!(SharedFrame::new(&Message::Close(None)).is_none());
}

#[test]
fn shared_frames_keep_their_place_among_the_connections_own() {
    let small = SharedFrame::text("shared small");
    let large = SharedFrame::binary(&vec![9u8; 100_000]);
    let mid = SharedFrame::binary(&vec![7u8; 3_000]);
    for deflate in [false, true] {
        let mut conn = Connection::new(Role::Server, Config::default());
        if deflate {
            conn = conn.with_deflate(params());
        }
        conn.send_shared(&small).unwrap();
        conn.send(Message::text("own ".repeat(100))).unwrap();
        conn.send_shared(&large).unwrap();
        conn.send_shared(&mid).unwrap();
        conn.send_shared(&small).unwrap();
        conn.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
        let got = read_as_client(&drain(&mut conn), deflate);
        let expected = vec![
            Message::text("shared small"),
            Message::text("own ".repeat(100)),
            Message::binary(vec![9u8; 100_000]),
            Message::binary(vec![7u8; 3_000]),
            Message::text("shared small"),
            Message::Ping(Bytes::from_static(b"p")),
        ];
        assert_eq!(got, expected, "deflate {deflate}");
    }
}

#[test]
fn shared_frames_are_refused_where_the_protocol_forbids_them() {
    let frame = SharedFrame::text("x");
    let mut client = Connection::new(Role::Client, Config::default());
    assert_eq!(client.send_shared(&frame), Err(SendError::SharedFrameFromClient));

    let mut server = Connection::new(Role::Server, Config::default());
    server.send_chunk(Chunk::text("part", true, false)).unwrap();
    assert_eq!(server.send_shared(&frame), Err(SendError::ChunkedMessageInProgress));
    server.send_chunk(Chunk::text(" two", false, true)).unwrap();
    server.send_shared(&frame).unwrap();
    server.close(None).unwrap();
    assert_eq!(server.send_shared(&frame), Err(SendError::Closed));
    let got = read_as_client(&drain(&mut server), false);
    assert_eq!(got[..2], [Message::text("part two"), Message::text("x")]);
}

#[test]
fn a_compressed_shared_frame_goes_only_where_no_server_context_takeover_was_negotiated() {
    use wsx_proto::SharedCompressor;
    let negotiated = |offer: &str| deflate::negotiate([offer], &DeflateConfig::default()).unwrap();
    let message = Message::text("compress me, compress me, compress me");
    let mut compressor = SharedCompressor::new(&DeflateConfig::default());
    let frame = SharedFrame::compressed(&message, &mut compressor).unwrap();
    assert!(
        frame.is_compressed() && frame.wire_len() < SharedFrame::new(&message).unwrap().wire_len()
    );
    // Without context: the same bytes again for the next publish of the same message.
    assert_eq!(SharedFrame::compressed(&message, &mut compressor).unwrap(), frame);

    let no_takeover = negotiated("permessage-deflate; server_no_context_takeover");
    let mut server = Connection::new(Role::Server, Config::default()).with_deflate(no_takeover);
    assert!(server.takes_shared_compressed());
    server.send_shared(&frame).unwrap();
    server.send_shared(&frame).unwrap();
    let mut client = Connection::new(Role::Client, Config::default()).with_deflate(no_takeover);
    client.handle_input(&drain(&mut server));
    for _ in 0..2 {
        assert_eq!(client.poll_message().unwrap().unwrap(), message);
    }

    for conn in [
        Connection::new(Role::Server, Config::default()).with_deflate(takeover_params()),
        Connection::new(Role::Server, Config::default()),
        Connection::new(Role::Server, Config::default()).with_deflate(negotiated(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
        )),
    ] {
        let mut conn = conn;
        assert!(!conn.takes_shared_compressed());
        assert_eq!(conn.send_shared(&frame), Err(SendError::CompressionNotNegotiated));
    }
}
