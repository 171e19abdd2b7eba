//! Streaming receive (`poll_event`, chunks of large messages) and streaming send (`send_chunk`):
//! nothing lost or reordered whatever the framing and the reads, limits and UTF-8 still
//! enforced, and chunks sent back out as a valid fragmented message.

#[allow(dead_code)]
mod common;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use wsx_proto::deflate::{self, DeflateConfig};
use wsx_proto::frame::OpCode;
use wsx_proto::{
    Chunk, Config, Connection, Event, Message, ProtocolError, Role, SendError, Utf8Bytes,
};

use common::{masked, parse_frames, take_transmit, unmasked, BINARY, CONT, PING, TEXT};

/// Everything `poll_event` reports until it returns `None`.
fn poll_events(conn: &mut Connection) -> Vec<Result<Event, ProtocolError>> {
    let mut out = Vec::new();
    while let Some(e) = conn.poll_event() {
        out.push(e);
        assert!(out.len() < 1_000_000, "poll_event never returns None");
    }
    out
}

fn server(threshold: usize) -> Connection {
    Connection::new(Role::Server, Config::default().stream_threshold(threshold))
}

/// `frames` (opcode, payload) of one message as a client sends them, FIN on the last.
fn message_frames(opcode: u8, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let op = if i == 0 { opcode } else { CONT };
        out.extend(masked(i + 1 == pieces.len(), op, p));
    }
    out
}

/// Feeds `input` in reads of the given sizes (cycled), polling after each.
fn feed_in_reads(
    conn: &mut Connection,
    input: &[u8],
    reads: &[usize],
) -> Vec<Result<Event, ProtocolError>> {
    let mut events = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let n = reads[i % reads.len()].max(1).min(input.len() - at);
        conn.handle_input(&input[at..at + n]);
        at += n;
        i += 1;
        events.extend(poll_events(conn));
    }
    events
}

/// Checks the chunk sequence of one message and returns its bytes.
fn assemble(events: &[Result<Event, ProtocolError>], threshold: usize) -> (bool, Vec<u8>) {
    let mut data = Vec::new();
    let mut text = None;
    for (i, e) in events.iter().enumerate() {
        match e {
            Ok(Event::Message(m)) => {
                assert_eq!(events.len(), 1, "a whole message and chunks: {events:?}");
                return (matches!(m, Message::Text(_)), m.payload().to_vec());
            }
            Ok(Event::Chunk(c)) => {
                assert_eq!(c.is_first(), i == 0, "first flag of chunk {i}");
                assert_eq!(c.is_last(), i + 1 == events.len(), "last flag of chunk {i}");
                if !c.is_last() {
                    assert!(c.len() >= threshold, "chunk {i} of {} < {threshold}", c.len());
                }
                assert_eq!(*text.get_or_insert(c.is_text()), c.is_text());
                if c.is_text() {
                    assert!(c.as_text().is_some(), "text chunk {i} is not whole UTF-8");
                }
                data.extend_from_slice(c.data());
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    (text.unwrap_or(false), data)
}

#[test]
fn large_single_frame_streams_in_pieces_as_it_arrives() {
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let input = masked(true, BINARY, &payload);
    let mut conn = server(64 << 10);
    // Header plus 10 KiB: not enough to hand anything out yet.
    conn.handle_input(&input[..10_000]);
    assert!(poll_events(&mut conn).is_empty());
    // Another 100 KiB: one chunk with all of it, before the frame is complete.
    conn.handle_input(&input[10_000..110_000]);
    let events = poll_events(&mut conn);
    assert_eq!(events.len(), 1);
    let Ok(Event::Chunk(c)) = &events[0] else { panic!("{events:?}") };
    assert!(c.is_first() && !c.is_last() && !c.is_text());
    // The header is 14 bytes: 2, an 8-byte length and the masking key.
    assert!(c.data().as_ref() == &payload[..110_000 - 14], "first chunk: {} bytes", c.len());
    // The rest.
    conn.handle_input(&input[110_000..]);
    let events = poll_events(&mut conn);
    let Ok(Event::Chunk(c)) = &events[0] else { panic!("{events:?}") };
    assert!(!c.is_first() && c.is_last());
    assert!(c.data().as_ref() == &payload[110_000 - 14..], "last chunk: {} bytes", c.len());
    // While streaming, nothing was held whole: the next small message arrives whole.
    conn.handle_input(&masked(true, TEXT, b"after"));
    assert_eq!(poll_events(&mut conn), vec![Ok(Event::Message(Message::text("after")))]);
}

#[test]
fn small_messages_arrive_whole_even_in_small_reads() {
    let payload = vec![b'x'; 60_000];
    let input = masked(true, TEXT, &payload);
    let mut conn = server(64 << 10);
    let events = feed_in_reads(&mut conn, &input, &[1000]);
    assert_eq!(events.len(), 1);
    assert_eq!(assemble(&events, 64 << 10), (true, payload));
}

#[test]
fn text_chunks_never_split_a_code_point() {
    // Three-byte code points, cut by reads of 7 bytes and a threshold of 10 bytes.
    let text = "€".repeat(1000);
    let input = message_frames(TEXT, &[&text.as_bytes()[..1001], &text.as_bytes()[1001..]]);
    let mut conn = server(10);
    let events = feed_in_reads(&mut conn, &input, &[7]);
    assert!(events.len() > 10, "{} events", events.len());
    let (is_text, data) = assemble(&events, 10);
    assert!(is_text);
    assert_eq!(data, text.as_bytes());
}

#[test]
fn invalid_utf8_fails_the_stream_with_1007() {
    let mut payload = vec![b'a'; 200];
    payload[150] = 0xff;
    let mut conn = server(64);
    let events = feed_in_reads(&mut conn, &masked(true, TEXT, &payload), &[100]);
    assert!(matches!(&events[0], Ok(Event::Chunk(c)) if c.len() >= 64), "{events:?}");
    assert_eq!(events.last(), Some(&Err(ProtocolError::InvalidUtf8)));
    let frames = parse_frames(&take_transmit(&mut conn));
    assert_eq!(frames.last().map(|f| f.close_code()), Some(Some(1007)));
}

#[test]
fn unfinished_code_point_at_the_end_fails_with_1007() {
    // Valid until the last byte, which starts a code point the message never finishes.
    let mut payload = vec![b'a'; 200];
    payload.push(0xe2);
    let mut conn = server(64);
    let events = feed_in_reads(&mut conn, &masked(true, TEXT, &payload), &[50]);
    assert!(events.iter().any(|e| matches!(e, Ok(Event::Chunk(_)))));
    assert_eq!(events.last(), Some(&Err(ProtocolError::InvalidUtf8)));
}

#[test]
fn the_message_size_limit_counts_streamed_bytes() {
    let config = Config::default().stream_threshold(100).max_message_size(1000);
    let mut conn = Connection::new(Role::Server, config);
    let frame = vec![b'a'; 600];
    let mut input = masked(false, BINARY, &frame);
    input.extend(masked(true, CONT, &frame));
    let events = feed_in_reads(&mut conn, &input, &[200]);
    assert!(events.iter().any(|e| matches!(e, Ok(Event::Chunk(_)))));
    assert!(
        matches!(events.last(), Some(Err(ProtocolError::MessageTooLarge { size: 1200, .. }))),
        "{events:?}"
    );
}

#[test]
fn compressed_messages_arrive_whole() {
    let config = Config::default().deflate(Some(DeflateConfig::default())).stream_threshold(1000);
    let params = deflate::negotiate([deflate::NAME], &DeflateConfig::default()).unwrap();
    let mut client = Connection::new(Role::Client, config.clone()).with_deflate(params);
    let mut server = Connection::new(Role::Server, config).with_deflate(params);
    // Random-looking bytes barely compress, so the frame stays well above the threshold.
    let payload: Vec<u8> =
        (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    client.send(Message::binary(payload.clone())).unwrap();
    let wire = take_transmit(&mut client);
    assert_eq!(parse_frames(&wire)[0].header.rsv, 0b100, "the message was not compressed");
    let events = feed_in_reads(&mut server, &wire, &[3000]);
    assert_eq!(events, vec![Ok(Event::Message(Message::binary(payload)))]);
}

#[test]
fn control_frames_between_chunks_come_out_in_order() {
    let payload = vec![7u8; 5000];
    let mut input = masked(false, BINARY, &payload[..3000]);
    input.extend(masked(true, PING, b"hi"));
    input.extend(masked(true, CONT, &payload[3000..]));
    let mut conn = server(1000);
    let events = feed_in_reads(&mut conn, &input, &[4000]);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Ok(Event::Chunk(_)) => "chunk",
            Ok(Event::Message(Message::Ping(_))) => "ping",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["chunk", "ping", "chunk"]);
}

#[test]
fn poll_message_after_chunks_returns_the_rest_as_messages() {
    let payload = vec![b'z'; 3000];
    let input = masked(true, TEXT, &payload);
    let mut conn = server(1000);
    conn.handle_input(&input[..1500]);
    let Some(Ok(Event::Chunk(first))) = conn.poll_event() else { panic!() };
    conn.handle_input(&input[1500..]);
    let rest = conn.poll_message();
    let Some(Ok(Message::Text(rest))) = rest else { panic!("{rest:?}") };
    assert_eq!(first.len() + rest.len(), 3000);
    assert!(conn.poll_message().is_none());
}

#[test]
fn chunks_go_out_as_one_fragmented_message() {
    let mut conn = Connection::new(Role::Server, Config::default());
    conn.send_chunk(Chunk::text("hello ", true, false)).unwrap();
    // A control frame may go out between the fragments, a data message may not.
    conn.send(Message::Ping(Bytes::from_static(b"p"))).unwrap();
    assert_eq!(conn.send(Message::text("x")), Err(SendError::ChunkedMessageInProgress));
    assert_eq!(
        conn.send_chunk(Chunk::text("again", true, false)),
        Err(SendError::ChunkedMessageInProgress)
    );
    conn.send_chunk(Chunk::text("big ", false, false)).unwrap();
    conn.send_chunk(Chunk::text("world", false, true)).unwrap();
    assert_eq!(conn.send_chunk(Chunk::text("x", false, true)), Err(SendError::NoChunkedMessage));
    conn.send(Message::binary(vec![1, 2])).unwrap();
    let frames = parse_frames(&take_transmit(&mut conn));
    let shape: Vec<(OpCode, bool, &[u8])> =
        frames.iter().map(|f| (f.header.opcode, f.header.fin, &f.payload[..])).collect();
    assert_eq!(
        shape,
        [
            (OpCode::Text, false, &b"hello "[..]),
            (OpCode::Ping, true, &b"p"[..]),
            (OpCode::Continuation, false, &b"big "[..]),
            (OpCode::Continuation, true, &b"world"[..]),
            (OpCode::Binary, true, &[1, 2][..]),
        ]
    );
}

#[test]
fn a_client_receiving_a_streamed_echo_reassembles_it() {
    let text = "ünïcødé ".repeat(20_000);
    let mut server = server(16 << 10);
    let mut client = Connection::new(Role::Client, Config::default());
    client.send(Message::text(text.as_str())).unwrap();
    let wire = take_transmit(&mut client);
    for piece in wire.chunks(50_000) {
        server.handle_input(piece);
        for e in poll_events(&mut server) {
            match e.unwrap() {
                Event::Chunk(c) => server.send_chunk(c).unwrap(),
                Event::Message(m) => server.send(m).unwrap(),
            }
        }
    }
    let echo = take_transmit(&mut server);
    assert!(parse_frames(&echo).len() > 1, "the echo was not fragmented");
    client.handle_input(&echo);
    assert_eq!(client.poll_message(), Some(Ok(Message::Text(Utf8Bytes::from(text)))));
}

#[test]
fn unmasked_frames_from_a_server_stream_too() {
    let payload = vec![3u8; 10_000];
    let mut client = Connection::new(Role::Client, Config::default().stream_threshold(4096));
    let events = feed_in_reads(&mut client, &unmasked(true, BINARY, &payload), &[5000]);
    assert_eq!(assemble(&events, 4096), (false, payload));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any message, cut into any frames and any reads, with any threshold: the chunks (or the
    /// whole message) carry exactly the bytes sent, in order, flagged and sized as promised.
    #[test]
    fn chunks_reassemble_to_the_message(
        text in any::<bool>(),
        chars in vec(prop_oneof![Just('a'), Just('é'), Just('€'), Just('𝄞')], 0..3000),
        frame_cuts in vec(0usize..12_000, 0..5),
        reads in vec(1usize..5000, 1..6),
        threshold in 1usize..3000,
    ) {
        let s: String = chars.into_iter().collect();
        let bytes = s.as_bytes();
        let mut cuts: Vec<usize> = frame_cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts {
            pieces.push(&bytes[at..c]);
            at = c;
        }
        pieces.push(&bytes[at..]);
        let opcode = if text { TEXT } else { BINARY };
        let mut input = message_frames(opcode, &pieces);
        input.extend(masked(true, BINARY, b"next"));
        let mut conn = server(threshold);
        let mut events = feed_in_reads(&mut conn, &input, &reads);
        prop_assert_eq!(
            events.pop(),
            Some(Ok(Event::Message(Message::binary(Bytes::from_static(b"next")))))
        );
        if bytes.len() < threshold {
            prop_assert_eq!(events.len(), 1, "a small message came in pieces");
        }
        let (is_text, data) = assemble(&events, threshold);
        prop_assert_eq!(is_text, text);
        prop_assert_eq!(data, bytes);
    }
}

/// Streaming a message in does not raise the send limit: a peer that streams a large message
/// and never reads its echo meets a full send queue (and TCP flow control) after the
/// high-water mark plus one chunk, not after the whole message.
#[test]
fn the_send_buffer_mark_holds_while_a_message_streams_in() {
    let config = Config::default()
        .stream_threshold(1000)
        .write_buffer_high_water(2000)
        .max_message_size(1 << 20);
    let mut conn = Connection::new(Role::Server, config);
    let input = masked(true, BINARY, &vec![1u8; 100_000]);
    let mut fed = 0;
    // A driver that stops reading while the send queue is full: feed input only then.
    while fed < input.len() && !conn.is_send_buffer_full() {
        let n = 1500.min(input.len() - fed);
        conn.handle_input(&input[fed..fed + n]);
        fed += n;
        for e in poll_events(&mut conn) {
            let Ok(Event::Chunk(c)) = e else { panic!("{e:?}") };
            conn.send_chunk(c).unwrap();
        }
    }
    assert!(fed < 10_000, "stopped reading after {fed} of {} bytes", input.len());
    assert!(conn.is_send_buffer_full(), "mid-message, the usual mark applies");
    assert!(conn.buffered_amount() < 2000 + 1500 + 14, "{} bytes queued", conn.buffered_amount());
}

/// A zero threshold set on the public field (the setter clamps it) streams like a threshold of
/// one byte: no empty chunks handed out forever.
#[test]
fn a_zero_threshold_on_the_field_streams_like_one_byte() {
    let mut config = Config::default();
    config.stream_threshold = 0;
    let mut conn = Connection::new(Role::Server, config);
    let wire = masked(true, BINARY, b"hello, streaming");
    // The header and part of the payload: the frame is unfinished.
    conn.handle_input(&wire[..wire.len() - 4]);
    let events = poll_events(&mut conn);
    assert_eq!(events.len(), 1, "{events:?}");
    let Ok(Event::Chunk(first)) = &events[0] else { panic!("{events:?}") };
    assert!(first.is_first() && !first.is_last() && !first.is_empty());
    conn.handle_input(&wire[wire.len() - 4..]);
    let events = poll_events(&mut conn);
    let Ok(Event::Chunk(last)) = &events[0] else { panic!("{events:?}") };
    assert!(last.is_last());
    let mut whole = first.data().to_vec();
    whole.extend_from_slice(last.data());
    assert_eq!(whole, b"hello, streaming");
}
