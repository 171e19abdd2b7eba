//! The session core end to end: a client and a server `Connection` wired in memory, hand-built
//! frames for everything a peer may get wrong, and properties that must hold for any input cut
//! into any reads.

mod common;

use std::collections::HashSet;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use proptest::collection::vec;
use proptest::prelude::*;
use wsx_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use wsx_proto::mask::apply_mask;
use wsx_proto::{
    CloseCode, CloseFrame, Config, Connection, Message, ProtocolError, Role, SendError, State,
};

use common::{
    close_payload, masked, parse_frames, poll_all, raw_frame, raw_header, sent_closes, sent_frames,
    take_transmit, unmasked, Event, Pair, BINARY, CLOSE, CONT, KEY, PING, PONG, TEXT,
};

// ---------------------------------------------------------------------------------------------
// Round trips through a pair

/// Payload sizes at every length-encoding boundary (RFC 6455 §5.2), plus a large one.
const SIZES: [usize; 7] = [0, 1, 125, 126, 65535, 65536, 1 << 20];

#[test]
fn data_round_trips_in_both_directions() {
    for size in SIZES {
        let data: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        for text in [true, false] {
            let (msg, opcode) = if text {
                (Message::text(String::from_utf8(data.clone()).unwrap()), OpCode::Text)
            } else {
                (Message::binary(data.clone()), OpCode::Binary)
            };
            for from_client in [true, false] {
                let ctx = format!("size {size}, text {text}, from client {from_client}");
                let mut pair = Pair::new();
                let Pair { client, server } = &mut pair;
                let (tx, rx) = if from_client { (client, server) } else { (server, client) };
                tx.send(msg.clone()).unwrap();
                let wire = take_transmit(tx);

                let frames = parse_frames(&wire);
                assert_eq!(frames.len(), 1, "{ctx}");
                let h = frames[0].header;
                assert!(h.fin, "{ctx}");
                assert_eq!(h.rsv, 0, "{ctx}");
                assert_eq!(h.opcode, opcode, "{ctx}");
                // RFC 6455 §5.1: clients mask every frame, servers never do.
                assert_eq!(h.mask.is_some(), from_client, "{ctx}");
                assert_eq!(h.payload_len, size as u64, "{ctx}");
                // The shortest length form (RFC 6455 §5.2).
                let header_len = match size {
                    0..=125 => 2,
                    126..=0xffff => 4,
                    _ => 10,
                } + if from_client { 4 } else { 0 };
                assert_eq!(wire.len(), header_len + size, "{ctx}");
                assert!(frames[0].payload == data, "{ctx}: payload differs after unmasking");
                if from_client && size >= 4 && h.mask != Some([0; 4]) {
                    assert!(wire[header_len..] != data[..], "{ctx}: payload not masked");
                }

                rx.handle_input(&wire);
                let events = poll_all(rx);
                assert_eq!(events.len(), 1, "{ctx}");
                assert!(events[0] == Ok(msg.clone()), "{ctx}: message differs");
                assert_eq!(rx.state(), State::Open, "{ctx}");
                assert_eq!(take_transmit(rx), b"", "{ctx}: nothing to answer");
            }
        }
    }
}

#[test]
fn client_masking_keys_are_fresh_per_frame() {
    let mut client = Connection::new(Role::Client, Config::default());
    for _ in 0..16 {
        client.send(Message::binary(vec![0u8; 8])).unwrap();
    }
    let keys: HashSet<[u8; 4]> =
        sent_frames(&mut client).iter().map(|f| f.header.mask.unwrap()).collect();
    // RFC 6455 §5.3: keys must be unpredictable; sixteen equal keys in a row are not.
    assert!(keys.len() > 1, "every frame used the key {keys:?}");
}

#[test]
fn transmit_is_vectored_and_in_order() {
    // A server does not copy payloads above the inline limit: the queue holds several chunks.
    let mut server = Connection::new(Role::Server, Config::default());
    let big = vec![7u8; 10_000];
    let sends = [
        Message::text("first"),
        Message::binary(big.clone()),
        Message::Ping(Bytes::from_static(b"p")),
        Message::binary(big.clone()),
        Message::text("last"),
    ];
    let mut expected = Vec::new();
    for m in &sends {
        server.send(m.clone()).unwrap();
    }
    for (opcode, payload) in [
        (TEXT, &b"first"[..]),
        (BINARY, &big[..]),
        (PING, b"p"),
        (BINARY, &big[..]),
        (TEXT, b"last"),
    ] {
        expected.extend(unmasked(true, opcode, payload));
    }
    assert_eq!(server.buffered_amount(), expected.len());

    let out = server.transmit();
    let mut slices = [IoSlice::new(&[]); 16];
    let n = out.chunks_vectored(&mut slices);
    assert!(n > 1, "large payloads are queued as their own chunks");
    let vectored: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
    assert_eq!(vectored, expected);

    // Partial writes: advance by odd amounts and the rest still comes out in order.
    let mut written = Vec::new();
    let mut step = 1;
    while out.has_remaining() {
        let chunk = out.chunk();
        let n = step.min(chunk.len());
        written.extend_from_slice(&chunk[..n]);
        out.advance(n);
        step = step * 3 + 1;
    }
    assert_eq!(written, expected);
    assert_eq!(server.buffered_amount(), 0);

    // The emptied queue is reused.
    server.send(Message::text("again")).unwrap();
    assert_eq!(take_transmit(&mut server), unmasked(true, TEXT, b"again"));
}

#[test]
fn pings_are_answered_with_pongs() {
    for payload in [&b""[..], b"are you there?", &[0xff; 125]] {
        let ping = Message::Ping(Bytes::copy_from_slice(payload));
        let pong = Message::Pong(Bytes::copy_from_slice(payload));
        let mut pair = Pair::new();

        pair.client.send(ping.clone()).unwrap();
        assert_eq!(pair.deliver_to_server(), vec![Ok(ping.clone())]);
        let wire = take_transmit(&mut pair.server);
        let frames = parse_frames(&wire);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.opcode, OpCode::Pong);
        assert_eq!(frames[0].header.mask, None);
        assert_eq!(frames[0].payload, payload);
        pair.client.handle_input(&wire);
        assert_eq!(poll_all(&mut pair.client), vec![Ok(pong.clone())]);

        pair.server.send(ping.clone()).unwrap();
        assert_eq!(pair.deliver_to_client(), vec![Ok(ping.clone())]);
        let frames = sent_frames(&mut pair.client);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.opcode, OpCode::Pong);
        assert!(frames[0].header.mask.is_some(), "a client's pong is masked");
        assert_eq!(frames[0].payload, payload);
    }
}

#[test]
fn auto_pong_can_be_turned_off() {
    let mut server = Connection::new(Role::Server, Config::default().auto_pong(false));
    server.handle_input(&masked(true, PING, b"x"));
    assert_eq!(poll_all(&mut server), vec![Ok(Message::Ping(Bytes::from_static(b"x")))]);
    assert_eq!(take_transmit(&mut server), b"");
}

#[test]
fn control_payload_limits_on_send() {
    let mut client = Connection::new(Role::Client, Config::default());
    assert_eq!(
        client.send(Message::Ping(vec![0; 126].into())),
        Err(SendError::ControlFrameTooLong(126))
    );
    assert_eq!(
        client.send(Message::Pong(vec![0; 126].into())),
        Err(SendError::ControlFrameTooLong(126))
    );
    assert_eq!(client.send(Message::Ping(vec![0; 125].into())), Ok(()));
    let reason = "r".repeat(124);
    assert_eq!(
        client.close(Some(CloseFrame::new(CloseCode::NORMAL, reason))),
        Err(SendError::ControlFrameTooLong(126))
    );
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        assert_eq!(
            client.close(Some(CloseFrame::new(CloseCode(code), ""))),
            Err(SendError::InvalidCloseCode(code))
        );
    }
    // Refused closes did not close anything.
    assert_eq!(client.state(), State::Open);
    let frames = sent_frames(&mut client);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header.opcode, OpCode::Ping);
    let reason = "r".repeat(123);
    assert_eq!(client.close(Some(CloseFrame::new(CloseCode::NORMAL, reason))), Ok(()));
    assert_eq!(client.state(), State::Closing);
}

// ---------------------------------------------------------------------------------------------
// Hand-built frames: reassembly

#[test]
fn fragmented_text_with_control_frames_interleaved() {
    // "Hello, wörld" cut inside the two bytes of 'ö', with a ping, a pong and an empty fragment
    // between the pieces (RFC 6455 §5.4: control frames may be injected mid-message).
    let pieces: [(bool, u8, &[u8]); 6] = [
        (false, TEXT, b"Hel"),
        (true, PING, b"1"),
        (false, CONT, b"lo, w\xc3"),
        (true, PONG, b"2"),
        (false, CONT, b""),
        (true, CONT, b"\xb6rld"),
    ];
    let expected = vec![
        Ok(Message::Ping(Bytes::from_static(b"1"))),
        Ok(Message::Pong(Bytes::from_static(b"2"))),
        Ok(Message::text("Hello, wörld")),
    ];
    let to_server: Vec<u8> = pieces.iter().flat_map(|&(f, op, p)| masked(f, op, p)).collect();
    let to_client: Vec<u8> = pieces.iter().flat_map(|&(f, op, p)| unmasked(f, op, p)).collect();
    for (role, input) in [(Role::Server, &to_server), (Role::Client, &to_client)] {
        check_every_split(role, input, &expected);
        let mut conn = Connection::new(role, Config::default());
        conn.handle_input(input);
        assert_eq!(poll_all(&mut conn), expected);
        // Only the ping is answered.
        let frames = sent_frames(&mut conn);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].header.opcode, OpCode::Pong);
        assert_eq!(frames[0].payload, b"1");
    }
}

#[test]
fn fragmented_binary_and_empty_messages() {
    let input = [
        masked(false, BINARY, &[0, 1]),
        masked(false, CONT, &[]),
        masked(true, CONT, &[2, 0xff]),
        masked(true, TEXT, b""),
        masked(true, BINARY, b""),
        masked(false, TEXT, b""),
        masked(true, CONT, b""),
    ]
    .concat();
    let expected = vec![
        Ok(Message::binary(vec![0, 1, 2, 0xff])),
        Ok(Message::text("")),
        Ok(Message::binary(Vec::new())),
        Ok(Message::text("")),
    ];
    check_every_split(Role::Server, &input, &expected);
}

/// Feeds `input` to a fresh connection split at every point, and byte by byte: the events must
/// be `expected` every time.
fn check_every_split(role: Role, input: &[u8], expected: &[Event]) {
    for cut in 0..=input.len() {
        let mut conn = Connection::new(role, Config::default());
        conn.handle_input(&input[..cut]);
        let mut events = poll_all(&mut conn);
        conn.handle_input(&input[cut..]);
        events.extend(poll_all(&mut conn));
        assert_eq!(events, expected, "split at {cut}");
    }
    let mut conn = Connection::new(role, Config::default());
    let mut events = Vec::new();
    for b in input {
        conn.handle_input(std::slice::from_ref(b));
        events.extend(poll_all(&mut conn));
    }
    assert_eq!(events, expected, "byte by byte");
}

// ---------------------------------------------------------------------------------------------
// Hand-built frames: protocol violations

/// Feeds `input` to a fresh connection, whole and byte by byte. It must report the messages in
/// `before`, then `expected` once, queue exactly one close frame with `code` as its last frame,
/// and stop reading.
fn check_violation(
    role: Role,
    config: &Config,
    input: &[u8],
    before: &[Message],
    expected: &ProtocolError,
    code: u16,
) {
    assert_eq!(expected.close_code().0, code, "close code for {expected:?}");
    for byte_by_byte in [false, true] {
        let ctx = format!("{expected:?}, byte by byte: {byte_by_byte}");
        let mut conn = Connection::new(role, config.clone());
        let mut events = Vec::new();
        if byte_by_byte {
            for b in input {
                conn.handle_input(std::slice::from_ref(b));
                events.extend(poll_all(&mut conn));
            }
        } else {
            conn.handle_input(input);
            events = poll_all(&mut conn);
        }
        let mut want: Vec<Event> = before.iter().cloned().map(Ok).collect();
        want.push(Err(expected.clone()));
        assert_eq!(events, want, "{ctx}");

        // Reported once: later input and the end of the stream add nothing.
        conn.handle_input(input);
        assert_eq!(conn.poll_message(), None, "{ctx}");
        conn.handle_eof();
        assert_eq!(conn.poll_message(), None, "{ctx}");
        assert_eq!(conn.state(), State::Closed, "{ctx}");
        assert!(conn.should_close_transport(), "{ctx}");

        let frames = sent_frames(&mut conn);
        let last = frames.last().expect("a close frame is queued");
        assert_eq!(last.header.opcode, OpCode::Close, "{ctx}");
        assert_eq!(last.close_code(), Some(code), "{ctx}");
        assert!(std::str::from_utf8(&last.payload[2..]).is_ok(), "{ctx}: reason is UTF-8");
        let closes = frames.iter().filter(|f| f.header.opcode == OpCode::Close).count();
        assert_eq!(closes, 1, "{ctx}");
        assert_eq!(conn.send(Message::text("after")), Err(SendError::Closed), "{ctx}");
    }
}

fn check_server(input: &[u8], expected: ProtocolError, code: u16) {
    check_violation(Role::Server, &Config::default(), input, &[], &expected, code);
}

fn check_client(input: &[u8], expected: ProtocolError, code: u16) {
    check_violation(Role::Client, &Config::default(), input, &[], &expected, code);
}

#[test]
fn continuation_without_a_message_is_a_protocol_error() {
    check_server(&masked(true, CONT, b"x"), ProtocolError::UnexpectedContinuation, 1002);
    check_server(&masked(false, CONT, b""), ProtocolError::UnexpectedContinuation, 1002);
    check_client(&unmasked(true, CONT, b"x"), ProtocolError::UnexpectedContinuation, 1002);
    // A finished message leaves nothing to continue.
    let input = [masked(false, TEXT, b"a"), masked(true, CONT, b"b"), masked(true, CONT, b"c")];
    check_violation(
        Role::Server,
        &Config::default(),
        &input.concat(),
        &[Message::text("ab")],
        &ProtocolError::UnexpectedContinuation,
        1002,
    );
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_a_protocol_error() {
    for (first, second) in [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)] {
        for fin in [true, false] {
            let input = [masked(false, first, b"a"), masked(fin, second, b"b")].concat();
            check_server(&input, ProtocolError::ExpectedContinuation, 1002);
        }
    }
    // A control frame in between does not end the message.
    let input = [masked(false, TEXT, b"a"), masked(true, PING, b""), masked(true, TEXT, b"b")];
    check_violation(
        Role::Server,
        &Config::default(),
        &input.concat(),
        &[Message::Ping(Bytes::new())],
        &ProtocolError::ExpectedContinuation,
        1002,
    );
}

#[test]
fn reserved_bits_are_a_protocol_error() {
    // RFC 6455 §5.2: RSV1-3 must be 0 unless an extension defines them; none is negotiated.
    for rsv in 1..=7u8 {
        for opcode in [TEXT, BINARY, PING, CLOSE] {
            let input = raw_frame(0x80 | rsv << 4 | opcode, Some(KEY), b"ab");
            check_server(&input, ProtocolError::ReservedBits(rsv), 1002);
        }
        let input = raw_frame(0x80 | rsv << 4 | TEXT, None, b"ab");
        check_client(&input, ProtocolError::ReservedBits(rsv), 1002);
    }
}

#[test]
fn reserved_opcodes_are_a_protocol_error() {
    for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        check_server(
            &raw_frame(0x80 | op, Some(KEY), b""),
            ProtocolError::ReservedOpcode(op),
            1002,
        );
        check_client(&raw_frame(op, None, b"xy"), ProtocolError::ReservedOpcode(op), 1002);
    }
}

#[test]
fn wrong_masking_is_a_protocol_error() {
    // RFC 6455 §5.1: a server must close on an unmasked frame, a client on a masked one.
    check_server(&unmasked(true, TEXT, b"hi"), ProtocolError::UnmaskedFrame, 1002);
    check_server(&unmasked(true, PING, b""), ProtocolError::UnmaskedFrame, 1002);
    check_client(&masked(true, TEXT, b"hi"), ProtocolError::MaskedFrame, 1002);
}

#[test]
fn fragmented_control_frames_are_a_protocol_error() {
    for opcode in [PING, PONG, CLOSE] {
        check_server(&masked(false, opcode, b""), ProtocolError::FragmentedControlFrame, 1002);
        check_client(&unmasked(false, opcode, b"x"), ProtocolError::FragmentedControlFrame, 1002);
    }
}

#[test]
fn control_frames_over_125_bytes_are_a_protocol_error() {
    for opcode in [PING, PONG, CLOSE] {
        let input = masked(true, opcode, &[b'x'; 126]);
        check_server(&input, ProtocolError::ControlFrameTooLong(126), 1002);
        // Refused from the header alone.
        check_server(&input[..8], ProtocolError::ControlFrameTooLong(126), 1002);
    }
    let input = raw_header(0x80 | PING, None, 1 << 32);
    check_client(&input, ProtocolError::ControlFrameTooLong(1 << 32), 1002);
}

#[test]
fn length_with_the_top_bit_set_is_a_protocol_error() {
    // RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
    let mut input = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
    input.extend_from_slice(&KEY);
    check_server(&input, ProtocolError::InvalidLength, 1002);
    check_client(
        &[0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ProtocolError::InvalidLength,
        1002,
    );
}

#[test]
fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let bad: [&[u8]; 8] = [
        b"\xff",
        b"\x80",
        b"\xc0\xaf",             // overlong '/'
        b"\xed\xa0\x80",         // a UTF-16 surrogate
        b"\xf4\x90\x80\x80",     // above U+10FFFF
        b"\xf8\x88\x80\x80\x80", // a five-byte form
        b"ok \xe2\x82",          // truncated at the end of the message
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    ];
    for payload in bad {
        check_server(&masked(true, TEXT, payload), ProtocolError::InvalidUtf8, 1007);
        check_client(&unmasked(true, TEXT, payload), ProtocolError::InvalidUtf8, 1007);
        // The same bytes as one fragment of a longer message.
        let fragmented = [masked(false, TEXT, b"x"), masked(true, CONT, payload)].concat();
        check_server(&fragmented, ProtocolError::InvalidUtf8, 1007);
    }
    // A code point begun in one fragment and never finished.
    let input = [masked(false, TEXT, b"a\xe2"), masked(true, CONT, b"\x82")].concat();
    check_server(&input, ProtocolError::InvalidUtf8, 1007);
    // Binary payloads are not checked.
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_input(&masked(true, BINARY, b"\xff\xfe"));
    assert_eq!(poll_all(&mut server), vec![Ok(Message::binary(&b"\xff\xfe"[..]))]);
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    // RFC 6455 §8.1 and Autobahn 6.4: fail fast when text can never become valid.
    // One 100-byte text frame of which only the first bytes arrive.
    let mut payload = b"hello \xff".to_vec();
    payload.resize(100, b'x');
    let frame = masked(true, TEXT, &payload);
    let header_len = 2 + 4;
    check_server(&frame[..header_len + 7], ProtocolError::InvalidUtf8, 1007);
    let frame = unmasked(true, TEXT, &payload);
    check_client(&frame[..2 + 7], ProtocolError::InvalidUtf8, 1007);

    // Inside a code point: 0xf4 may still start one, 0xf4 0x90 cannot.
    let mut payload = b"ab\xf4\x90".to_vec();
    payload.resize(100, b'x');
    let frame = masked(true, TEXT, &payload);
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_input(&frame[..header_len + 3]);
    assert_eq!(poll_all(&mut server), vec![]);
    server.handle_input(&frame[header_len + 3..header_len + 4]);
    assert_eq!(poll_all(&mut server), vec![Err(ProtocolError::InvalidUtf8)]);
    assert_eq!(sent_closes(&mut server)[0].close_code(), Some(1007));

    // In an unfinished continuation frame of a fragmented message.
    let mut rest = b"\xc0".to_vec();
    rest.resize(50, b'x');
    let cont = masked(true, CONT, &rest);
    let input = [masked(false, TEXT, b"ok"), cont[..header_len + 1].to_vec()].concat();
    check_server(&input, ProtocolError::InvalidUtf8, 1007);
}

#[test]
fn valid_text_in_unfinished_frames_waits_for_the_rest() {
    // Multi-byte code points cut at every byte must not be taken for errors.
    let text = "κόσμε 𝄞 € ö";
    let input =
        [masked(false, TEXT, &text.as_bytes()[..5]), masked(true, CONT, &text.as_bytes()[5..])];
    check_every_split(Role::Server, &input.concat(), &[Ok(Message::text(text))]);
    check_every_split(
        Role::Server,
        &masked(true, TEXT, text.as_bytes()),
        &[Ok(Message::text(text))],
    );
}

/// Sequences no UTF-8 text may hold, for the store-and-forward checks below.
const NOT_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"\xc0\xaf",         // overlong '/'
    b"\xed\xa0\x80",     // a UTF-16 surrogate
    b"\xf4\x90\x80\x80", // above U+10FFFF
    b"\xe2\x82(",        // a code point cut short by ASCII
    b"\xe2\x82",         // unfinished at the end of the message
];

/// A text message whose payload is `payload` as the fragments that cutting it at `cuts` makes
/// (one frame without cuts), with a ping between fragments when `ping` is set.
fn text_in_fragments(payload: &[u8], cuts: &[usize], ping: bool) -> Vec<u8> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(payload.len());
    let mut input = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let last = i + 2 == bounds.len();
        input.extend(masked(last, if i == 0 { TEXT } else { CONT }, &payload[w[0]..w[1]]));
        if ping && !last {
            input.extend(masked(true, PING, b"p"));
        }
    }
    input
}

/// Feeds `input` to a fresh server in two reads cut at every point, and byte by byte, through
/// `poll_message` (store-and-forward) with `config`. Pings aside, it must report `Ok(text)`
/// when `text` is given; otherwise `InvalidUtf8` once, with a 1007 close queued.
fn check_stored_text(config: &Config, input: &[u8], text: Option<&str>, ctx: &str) {
    let mut reads: Vec<Vec<&[u8]>> =
        (0..=input.len()).map(|cut| vec![&input[..cut], &input[cut..]]).collect();
    reads.push(input.chunks(1).collect());
    for pieces in reads {
        let mut conn = Connection::new(Role::Server, config.clone());
        let mut events = Vec::new();
        for piece in &pieces {
            conn.handle_input(piece);
            events.extend(poll_all(&mut conn));
        }
        events.retain(|e| !matches!(e, Ok(Message::Ping(_))));
        let ctx =
            format!("{ctx}, reads of {:?}", pieces.iter().map(|p| p.len()).collect::<Vec<_>>());
        match text {
            Some(text) => assert_eq!(events, vec![Ok(Message::text(text))], "{ctx}"),
            None => {
                assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)], "{ctx}");
                let closes = sent_closes(&mut conn);
                assert_eq!(closes.len(), 1, "{ctx}");
                assert_eq!(closes[0].close_code(), Some(1007), "{ctx}");
            }
        }
    }
}

#[test]
fn stored_text_with_invalid_utf8_split_across_reads_and_fragments_closes_with_1007() {
    // The receive path builds a reassembled message's text without a second UTF-8 pass when the
    // incremental validator saw all of it: every framing and every cut of the reads must still
    // end in 1007, and the same text made valid must come through whole.
    let store = Config::default().stream_threshold(usize::MAX);
    for config in [Config::default(), store] {
        for bad in NOT_UTF8 {
            let payload = [b"\xce\xbab ", bad, b" z"].concat();
            let good = "κb € z";
            for cut in 0..=payload.len() {
                for ping in [false, true] {
                    let ctx = format!("{bad:x?}, fragments cut at {cut}, ping {ping}");
                    let input = text_in_fragments(&payload, &[cut], ping);
                    check_stored_text(&config, &input, None, &ctx);
                    // Fragments cut inside a code point or not, the message is the same text.
                    let input = text_in_fragments(good.as_bytes(), &[cut.min(good.len())], ping);
                    check_stored_text(&config, &input, Some(good), &ctx);
                }
            }
            check_stored_text(&config, &masked(true, TEXT, &payload), None, &format!("{bad:x?}"));
            let three = text_in_fragments(&payload, &[3, 4], true);
            check_stored_text(&config, &three, None, &format!("{bad:x?} in three fragments"));
            // At the very end of the message, in one frame and in two.
            let at_end = [b"\xce\xbab ", bad].concat();
            check_stored_text(&config, &masked(true, TEXT, &at_end), None, &format!("{bad:x?}"));
            let two = text_in_fragments(&at_end, &[at_end.len() - 1], false);
            check_stored_text(&config, &two, None, &format!("{bad:x?} at the end, two fragments"));
        }
    }
}

#[test]
fn large_stored_text_with_invalid_utf8_closes_with_1007_in_any_reads() {
    // 300 KiB of mixed UTF-8 (beyond the copy-out size and the default stream threshold),
    // through poll_message in 64 KiB reads, one bad sequence placed across a read boundary.
    let alphabet = ['a', 'µ', '€', '𝄞', '"'];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 300 << 10 {
        text.push(alphabet[i % alphabet.len()]);
        i += 1;
    }
    let store = Config::default().stream_threshold(usize::MAX);
    for config in [Config::default(), store] {
        for fragments in [1usize, 3] {
            let len = text.len();
            let cuts: Vec<usize> = (1..fragments).map(|k| k * len / fragments).collect();
            let wire = |payload: &[u8]| {
                let mut bounds = vec![0];
                bounds.extend(cuts.iter().copied());
                bounds.push(payload.len());
                let mut input = Vec::new();
                for (k, w) in bounds.windows(2).enumerate() {
                    let last = k + 2 == bounds.len();
                    let opcode = if k == 0 { TEXT } else { CONT };
                    input.extend(masked(last, opcode, &payload[w[0]..w[1]]));
                }
                input
            };
            let run = |input: &[u8], at: usize| {
                // Reads of 64 KiB, except that one ends at `at`.
                let mut conn = Connection::new(Role::Server, config.clone());
                let mut events = Vec::new();
                let (head, tail) = input.split_at(at);
                for piece in head.chunks(64 << 10).chain(tail.chunks(64 << 10)) {
                    conn.handle_input(piece);
                    events.extend(poll_all(&mut conn));
                }
                (events, sent_closes(&mut conn))
            };
            let (events, closes) = run(&wire(text.as_bytes()), 100_001);
            assert_eq!(events, vec![Ok(Message::text(text.clone()))], "{fragments} fragments");
            assert!(closes.is_empty());
            for bad in NOT_UTF8 {
                for at in [100_000, len / 2, len - bad.len()] {
                    let mut payload = text.clone().into_bytes();
                    payload[at..at + bad.len()].copy_from_slice(bad);
                    let input = wire(&payload);
                    // The read boundary falls inside the bad sequence (after its first byte),
                    // counted on the wire: each earlier frame adds a 14-byte header.
                    let headers = 14 * (1 + cuts.iter().filter(|&&c| c <= at).count());
                    let (events, closes) = run(&input, headers + at + 1);
                    let ctx = format!("{bad:x?} at {at}, {fragments} fragments");
                    assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)], "{ctx}");
                    assert_eq!(closes.len(), 1, "{ctx}");
                    assert_eq!(closes[0].close_code(), Some(1007), "{ctx}");
                }
            }
        }
    }
}

#[test]
fn invalid_close_codes_are_a_protocol_error() {
    // RFC 6455 §7.4: 1005, 1006 and 1015 are never sent; 0-999, 1016-2999 and 5000+ are not
    // defined for use; 1004 is reserved.
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let input = masked(true, CLOSE, &close_payload(code, b"bye"));
        check_server(&input, ProtocolError::InvalidCloseCode(code), 1002);
        let input = unmasked(true, CLOSE, &close_payload(code, b""));
        check_client(&input, ProtocolError::InvalidCloseCode(code), 1002);
    }
}

#[test]
fn close_payload_of_one_byte_is_a_protocol_error() {
    check_server(&masked(true, CLOSE, &[0x03]), ProtocolError::InvalidClosePayload, 1002);
    check_client(&unmasked(true, CLOSE, &[0xe8]), ProtocolError::InvalidClosePayload, 1002);
}

#[test]
fn close_reason_must_be_utf8() {
    let input = masked(true, CLOSE, &close_payload(1000, b"bad \xff reason"));
    check_server(&input, ProtocolError::InvalidUtf8, 1007);
    let input = unmasked(true, CLOSE, &close_payload(1001, b"\xe2\x82"));
    check_client(&input, ProtocolError::InvalidUtf8, 1007);
}

#[test]
fn valid_close_codes_are_echoed() {
    let codes = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ];
    for code in codes {
        for reason in ["", "bye ✓", &"r".repeat(123)] {
            let mut server = Connection::new(Role::Server, Config::default());
            server.handle_input(&masked(true, CLOSE, &close_payload(code, reason.as_bytes())));
            assert_eq!(
                poll_all(&mut server),
                vec![Ok(Message::Close(Some(CloseFrame::new(CloseCode(code), reason))))]
            );
            let closes = sent_closes(&mut server);
            assert_eq!(closes.len(), 1);
            assert_eq!(closes[0].close_code(), Some(code), "echo of {code}");
            assert_eq!(server.state(), State::Closed);
            assert!(server.should_close_transport());
        }
    }
    // An empty close is answered with an empty close.
    let mut client = Connection::new(Role::Client, Config::default());
    client.handle_input(&unmasked(true, CLOSE, b""));
    assert_eq!(poll_all(&mut client), vec![Ok(Message::Close(None))]);
    let closes = sent_closes(&mut client);
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].close_code(), None);
}

#[test]
fn frame_over_the_frame_limit_closes_with_1009() {
    let config = Config::default().max_frame_size(1000);
    for (role, mask) in [(Role::Server, Some(KEY)), (Role::Client, None)] {
        // Refused from the header alone, before any payload is buffered.
        let input = raw_header(0x82, mask, 1001);
        let expected = ProtocolError::FrameTooLarge { size: 1001, max: 1000 };
        check_violation(role, &config, &input, &[], &expected, 1009);
        let input = raw_header(0x01, mask, 1 << 40);
        let expected = ProtocolError::FrameTooLarge { size: 1 << 40, max: 1000 };
        check_violation(role, &config, &input, &[], &expected, 1009);
        // A frame at the limit is fine.
        let mut conn = Connection::new(role, config.clone());
        conn.handle_input(&raw_frame(0x82, mask, &[1; 1000]));
        assert_eq!(poll_all(&mut conn), vec![Ok(Message::binary(vec![1; 1000]))]);
    }
}

#[test]
fn fragmented_message_over_the_message_limit_closes_with_1009() {
    let config = Config::default().max_message_size(100);
    // 60 bytes, then a ping, then the header of 41 more: refused at the header, before the
    // payload arrives (the input stops there).
    let mut input = [masked(false, TEXT, &[b'a'; 60]), masked(true, PING, b"")].concat();
    input.extend(raw_header(CONT, Some(KEY), 41));
    let expected = ProtocolError::MessageTooLarge { size: 101, max: 100 };
    check_violation(Role::Server, &config, &input, &[Message::Ping(Bytes::new())], &expected, 1009);
    // A single frame over the message limit, too.
    let input = raw_header(0x82, None, 101);
    let expected = ProtocolError::MessageTooLarge { size: 101, max: 100 };
    check_violation(Role::Client, &config, &input, &[], &expected, 1009);
    // Exactly at the limit is fine.
    let input = [
        masked(false, BINARY, &[1; 60]),
        masked(false, CONT, &[2; 20]),
        masked(true, CONT, &[3; 20]),
    ]
    .concat();
    let mut server = Connection::new(Role::Server, config);
    server.handle_input(&input);
    let mut want = vec![1; 60];
    want.extend([2; 20]);
    want.extend([3; 20]);
    assert_eq!(poll_all(&mut server), vec![Ok(Message::binary(want))]);
}

#[test]
fn messages_before_an_error_are_delivered_first() {
    let input = [
        masked(true, TEXT, b"one"),
        masked(true, PING, b"p"),
        masked(false, BINARY, b"t"),
        masked(true, CONT, b"wo"),
        masked(true, PONG, b""),
        masked(true, 0x3, b""),
        masked(true, TEXT, b"never"),
    ]
    .concat();
    let before = [
        Message::text("one"),
        Message::Ping(Bytes::from_static(b"p")),
        Message::binary(&b"two"[..]),
        Message::Pong(Bytes::new()),
    ];
    check_violation(
        Role::Server,
        &Config::default(),
        &input,
        &before,
        &ProtocolError::ReservedOpcode(3),
        1002,
    );
    // The pong for the ping goes out before the close frame.
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_input(&input);
    poll_all(&mut server);
    let opcodes: Vec<OpCode> = sent_frames(&mut server).iter().map(|f| f.header.opcode).collect();
    assert_eq!(opcodes, [OpCode::Pong, OpCode::Close]);
}

#[test]
fn eof_without_a_close_is_a_reset() {
    let frame = masked(true, TEXT, b"hello");
    // Cut 0 is a clean frame boundary, the others fall inside the header or the payload.
    for cut in 0..frame.len() {
        let mut server = Connection::new(Role::Server, Config::default());
        server.handle_input(&frame[..cut]);
        assert_eq!(poll_all(&mut server), vec![], "cut {cut}");
        assert_eq!(server.state(), State::Open);
        server.handle_eof();
        assert_eq!(
            poll_all(&mut server),
            vec![Err(ProtocolError::ResetWithoutClosingHandshake)],
            "cut {cut}"
        );
        assert_eq!(server.poll_message(), None);
        assert_eq!(server.state(), State::Closed);
        assert!(server.should_close_transport());
        // RFC 6455 §7.4.1: 1006 is never sent in a close frame.
        for close in sent_closes(&mut server) {
            assert_ne!(close.close_code(), Some(1006));
        }
    }
    assert_eq!(ProtocolError::ResetWithoutClosingHandshake.close_code(), CloseCode::ABNORMAL);

    // Whole messages before the end are still delivered, then the reset; also mid-message.
    let input = [unmasked(true, TEXT, b"a"), unmasked(false, BINARY, b"b")].concat();
    let mut client = Connection::new(Role::Client, Config::default());
    client.handle_input(&input);
    client.handle_eof();
    assert_eq!(
        poll_all(&mut client),
        vec![Ok(Message::text("a")), Err(ProtocolError::ResetWithoutClosingHandshake)]
    );
    assert!(client.should_close_transport());
}

// ---------------------------------------------------------------------------------------------
// The closing handshake

#[test]
fn close_handshake_client_first() {
    let mut pair = Pair::new();
    pair.client.send(Message::text("last words")).unwrap();
    pair.client.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))).unwrap();
    assert_eq!(pair.client.state(), State::Closing);
    assert!(!pair.client.should_close_transport());

    assert_eq!(
        pair.deliver_to_server(),
        vec![
            Ok(Message::text("last words")),
            Ok(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))))
        ]
    );
    assert_eq!(pair.server.state(), State::Closed);
    // RFC 6455 §7.1.1: the server closes the TCP connection first.
    assert!(pair.server.should_close_transport());
    assert_eq!(pair.server.send(Message::text("x")), Err(SendError::Closed));

    let echo = take_transmit(&mut pair.server);
    let frames = parse_frames(&echo);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].close_code(), Some(1000));
    pair.client.handle_input(&echo);
    assert_eq!(
        poll_all(&mut pair.client),
        vec![Ok(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))))]
    );
    assert_eq!(pair.client.state(), State::Closed);
    // The client waits for the server to close the transport ...
    assert!(!pair.client.should_close_transport());
    assert_eq!(take_transmit(&mut pair.client), b"", "no second close");
    // ... which then is the end of the stream, not an error.
    pair.client.handle_eof();
    assert_eq!(poll_all(&mut pair.client), vec![]);
    assert_eq!(pair.client.state(), State::Closed);
    assert!(pair.client.should_close_transport());
}

#[test]
fn close_handshake_server_first() {
    let mut pair = Pair::new();
    pair.server
        .send(Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart"))))
        .unwrap();
    assert_eq!(pair.server.state(), State::Closing);
    assert!(!pair.server.should_close_transport());
    // The client may still send until it sees the close.
    pair.client.send(Message::binary(&b"in flight"[..])).unwrap();

    assert_eq!(
        pair.deliver_to_client(),
        vec![Ok(Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart"))))]
    );
    assert_eq!(pair.client.state(), State::Closed);
    assert!(!pair.client.should_close_transport());
    assert_eq!(pair.client.send(Message::text("x")), Err(SendError::Closed));

    // Messages the client sent before its reply are still delivered to the closing server.
    assert_eq!(
        pair.deliver_to_server(),
        vec![
            Ok(Message::binary(&b"in flight"[..])),
            Ok(Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, ""))))
        ]
    );
    assert_eq!(pair.server.state(), State::Closed);
    assert!(pair.server.should_close_transport());
    assert_eq!(take_transmit(&mut pair.server), b"", "no second close");

    pair.client.handle_eof();
    assert_eq!(poll_all(&mut pair.client), vec![]);
    assert!(pair.client.should_close_transport());
}

#[test]
fn close_handshake_simultaneous() {
    for (client_frame, server_frame) in [
        (
            Some(CloseFrame::new(CloseCode::NORMAL, "c")),
            Some(CloseFrame::new(CloseCode(4000), "s")),
        ),
        (None, None),
    ] {
        let mut pair = Pair::new();
        pair.client.close(client_frame.clone()).unwrap();
        pair.server.close(server_frame.clone()).unwrap();
        assert_eq!(pair.client.state(), State::Closing);
        assert_eq!(pair.server.state(), State::Closing);
        let c2s = take_transmit(&mut pair.client);
        let s2c = take_transmit(&mut pair.server);
        pair.server.handle_input(&c2s);
        pair.client.handle_input(&s2c);
        assert_eq!(poll_all(&mut pair.server), vec![Ok(Message::Close(client_frame.clone()))]);
        assert_eq!(poll_all(&mut pair.client), vec![Ok(Message::Close(server_frame.clone()))]);
        // Each already sent its close frame: neither answers again.
        assert_eq!(take_transmit(&mut pair.client), b"");
        assert_eq!(take_transmit(&mut pair.server), b"");
        assert_eq!(pair.client.state(), State::Closed);
        assert_eq!(pair.server.state(), State::Closed);
        assert!(pair.server.should_close_transport());
        pair.client.handle_eof();
        assert_eq!(poll_all(&mut pair.client), vec![]);
        assert!(pair.client.should_close_transport());
    }
}

#[test]
fn send_after_close_is_refused() {
    let mut client = Connection::new(Role::Client, Config::default());
    client.close(None).unwrap();
    let queued = client.buffered_amount();
    assert_eq!(client.send(Message::text("late")), Err(SendError::Closed));
    assert_eq!(client.send(Message::binary(vec![1])), Err(SendError::Closed));
    assert_eq!(client.send(Message::Ping(Bytes::new())), Err(SendError::Closed));
    assert_eq!(client.send(Message::Close(None)), Err(SendError::Closed));
    assert_eq!(client.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))), Err(SendError::Closed));
    assert_eq!(client.buffered_amount(), queued, "nothing queued after the close");

    // A ping arriving while closing is reported but not answered (RFC 6455 §5.5.1).
    client.handle_input(&unmasked(true, PING, b"p"));
    assert_eq!(poll_all(&mut client), vec![Ok(Message::Ping(Bytes::from_static(b"p")))]);
    let frames = sent_frames(&mut client);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].header.opcode, OpCode::Close);
}

#[test]
fn close_times_out_without_a_reply() {
    let timeout = Duration::from_secs(5);
    let t0 = Instant::now();
    for role in [Role::Client, Role::Server] {
        let config = Config::default().close_timeout(Some(timeout)).ping_interval(None);
        let mut conn = Connection::new(role, config);
        conn.handle_timeout(t0);
        assert_eq!(conn.poll_timeout(), None, "no timer while open without keepalive");
        conn.close(None).unwrap();
        conn.handle_timeout(t0);
        assert_eq!(conn.poll_timeout(), Some(t0 + timeout));
        conn.handle_timeout(t0 + timeout - Duration::from_millis(1));
        assert_eq!(conn.state(), State::Closing);
        assert!(!conn.should_close_transport());
        conn.handle_timeout(t0 + timeout);
        assert_eq!(conn.state(), State::Closed);
        assert!(conn.should_close_transport());
        assert_eq!(conn.poll_message(), None);
        // A reply arriving too late is ignored.
        let reply = match role {
            Role::Client => unmasked(true, CLOSE, b""),
            Role::Server => masked(true, CLOSE, b""),
        };
        conn.handle_input(&reply);
        assert_eq!(poll_all(&mut conn), vec![]);
    }
}

#[test]
fn client_times_out_waiting_for_the_server_to_hang_up() {
    let timeout = Duration::from_secs(2);
    let t0 = Instant::now();
    let mut pair = Pair::with_config(Config::default().close_timeout(Some(timeout)));
    pair.server.close(Some(CloseFrame::new(CloseCode::NORMAL, ""))).unwrap();
    pair.deliver_to_client();
    assert_eq!(pair.client.state(), State::Closed);
    assert!(!pair.client.should_close_transport());
    pair.client.handle_timeout(t0);
    assert_eq!(pair.client.poll_timeout(), Some(t0 + timeout));
    pair.client.handle_timeout(t0 + timeout / 2);
    assert!(!pair.client.should_close_transport());
    pair.client.handle_timeout(t0 + timeout);
    assert!(pair.client.should_close_transport());
}

#[test]
fn close_without_a_timeout_waits_forever() {
    let t0 = Instant::now();
    let mut client = Connection::new(Role::Client, Config::default().close_timeout(None));
    client.close(None).unwrap();
    client.handle_timeout(t0);
    assert_eq!(client.poll_timeout(), None);
    client.handle_timeout(t0 + Duration::from_secs(365 * 24 * 3600));
    assert_eq!(client.state(), State::Closing);
    // The reply still completes the handshake.
    client.handle_input(&unmasked(true, CLOSE, b""));
    assert_eq!(poll_all(&mut client), vec![Ok(Message::Close(None))]);
    assert_eq!(client.state(), State::Closed);
}

#[test]
fn no_timer_once_the_closing_handshake_is_over() {
    let timeout = Duration::from_secs(5);
    let t0 = Instant::now();
    let mut pair = Pair::with_config(Config::default().close_timeout(Some(timeout)));
    pair.server.close(None).unwrap();
    pair.server.handle_timeout(t0);
    assert_eq!(pair.server.poll_timeout(), Some(t0 + timeout));
    pair.deliver_to_client();
    pair.deliver_to_server();
    pair.server.handle_timeout(t0 + Duration::from_millis(1));
    assert!(pair.server.should_close_transport());
    // Nothing is left to wait for, so no deadline (the driver would wake up for nothing).
    assert_eq!(pair.server.poll_timeout(), None);
}

#[test]
fn eof_after_our_close_ends_quietly() {
    // We asked to close and the peer hung up without a reply: over, not an error.
    let mut server = Connection::new(Role::Server, Config::default());
    server.close(None).unwrap();
    server.handle_input(&masked(true, TEXT, b"still"));
    server.handle_eof();
    assert_eq!(poll_all(&mut server), vec![Ok(Message::text("still"))]);
    assert_eq!(server.state(), State::Closed);
    assert!(server.should_close_transport());
}

#[test]
fn violation_while_closing_sends_no_second_close() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, ""))).unwrap();
    server.handle_input(&masked(true, TEXT, b"\xff"));
    assert_eq!(poll_all(&mut server), vec![Err(ProtocolError::InvalidUtf8)]);
    let closes = sent_closes(&mut server);
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].close_code(), Some(1001));
    assert_eq!(server.state(), State::Closed);
    assert!(server.should_close_transport());
}

#[test]
fn close_inside_a_fragmented_message_drops_the_fragments() {
    let input = [
        masked(false, TEXT, b"never "),
        masked(true, CLOSE, &close_payload(1000, b"")),
        masked(true, CONT, b"finished"),
    ]
    .concat();
    let mut server = Connection::new(Role::Server, Config::default());
    server.handle_input(&input);
    assert_eq!(
        poll_all(&mut server),
        vec![Ok(Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))))]
    );
    assert_eq!(server.state(), State::Closed);
}

#[test]
fn send_buffer_reports_the_high_water_mark() {
    let mut server =
        Connection::new(Role::Server, Config::default().write_buffer_high_water(100_000));
    server.send(Message::binary(vec![0; 60_000])).unwrap();
    assert!(!server.is_send_buffer_full());
    server.send(Message::binary(vec![0; 60_000])).unwrap();
    assert!(server.is_send_buffer_full());
    assert_eq!(server.buffered_amount(), 2 * (60_000 + 4));
    take_transmit(&mut server);
    assert!(!server.is_send_buffer_full());
}

// ---------------------------------------------------------------------------------------------
// Properties

/// How a byte stream is cut into reads.
#[derive(Debug, Clone)]
enum Chunking {
    ByteByByte,
    /// Reads of these sizes, repeated.
    Sizes(Vec<usize>),
}

fn chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        1 => Just(Chunking::ByteByByte),
        4 => vec(1usize..300, 1..8).prop_map(Chunking::Sizes),
    ]
}

/// Feeds `input` in the reads `chunking` describes, polling after each as a driver would;
/// `via_recv_buf` writes straight into the read buffer instead of calling `handle_input`.
fn feed(
    conn: &mut Connection,
    input: &[u8],
    chunking: &Chunking,
    via_recv_buf: bool,
) -> Vec<Event> {
    let sizes = match chunking {
        Chunking::ByteByByte => vec![1],
        Chunking::Sizes(s) => s.clone(),
    };
    let mut events = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        if via_recv_buf {
            conn.recv_buf().extend_from_slice(piece);
        } else {
            conn.handle_input(piece);
        }
        events.extend(poll_all(conn));
    }
    events
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        3 => ".{0,40}".prop_map(Message::text),
        3 => vec(any::<u8>(), 0..300).prop_map(Message::binary),
        1 => vec(any::<u8>(), 0..=125).prop_map(|p| Message::Ping(p.into())),
        1 => vec(any::<u8>(), 0..=125).prop_map(|p| Message::Pong(p.into())),
        1 => vec(any::<u8>(), 126..3000).prop_map(Message::binary),
    ]
}

/// A data message as a peer may fragment it: cut anywhere (inside code points too), with pings
/// between the fragments.
#[derive(Debug, Clone)]
struct Fragmented {
    text: bool,
    payload: Vec<u8>,
    cuts: Vec<usize>,
    pings: [bool; 5],
}

impl Fragmented {
    /// Appends the frames to `out` (masked with `mask` if given) and the events a receiver must
    /// report to `expected`.
    fn write(&self, mask: Option<[u8; 4]>, out: &mut Vec<u8>, expected: &mut Vec<Event>) {
        let mut bounds = vec![0];
        bounds.extend(&self.cuts);
        bounds.push(self.payload.len());
        let n = bounds.len() - 1;
        for i in 0..n {
            let first = if self.text { TEXT } else { BINARY };
            let opcode = if i == 0 { first } else { CONT };
            let fin = i == n - 1;
            let piece = &self.payload[bounds[i]..bounds[i + 1]];
            out.extend(raw_frame(u8::from(fin) << 7 | opcode, mask, piece));
            if !fin && self.pings[i] {
                let p = format!("ping {i}");
                out.extend(raw_frame(0x80 | PING, mask, p.as_bytes()));
                expected.push(Ok(Message::Ping(Bytes::from(p))));
            }
        }
        expected.push(Ok(if self.text {
            Message::text(String::from_utf8(self.payload.clone()).unwrap())
        } else {
            Message::binary(self.payload.clone())
        }));
    }
}

fn fragmented() -> impl Strategy<Value = Fragmented> {
    (
        any::<bool>(),
        ".{0,30}",
        vec(any::<u8>(), 0..100),
        vec(any::<usize>(), 0..5),
        any::<[bool; 5]>(),
    )
        .prop_map(|(text, s, bin, cuts, pings)| {
            let payload = if text { s.into_bytes() } else { bin };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (payload.len() + 1)).collect();
            cuts.sort_unstable();
            Fragmented { text, payload, cuts, pings }
        })
}

fn opcode() -> impl Strategy<Value = OpCode> {
    prop::sample::select(vec![
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ])
}

fn payload_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=125,
        126u64..=0xffff,
        0x1_0000u64..(1 << 63),
        prop::sample::select(vec![125u64, 126, 0xffff, 0x1_0000, (1 << 63) - 1]),
    ]
}

/// Frames a peer might send, valid or not, with a bias towards valid first bytes and the
/// masking `server` expects, so the connection gets past the first header.
fn soup(server: bool) -> impl Strategy<Value = Vec<u8>> {
    let b0 = prop_oneof![
        4 => prop::sample::select(vec![0x81u8, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8a]),
        1 => any::<u8>(),
    ];
    let mask = prop::option::weighted(if server { 0.95 } else { 0.05 }, any::<[u8; 4]>());
    let payload = prop_oneof![
        vec(any::<u8>(), 0..140),
        "[a-z ]{0,140}".prop_map(String::into_bytes),
        (1000u16..1016, ".{0,10}").prop_map(|(c, r)| close_payload(c, r.as_bytes())),
    ];
    let frame = (b0, mask, payload).prop_map(|(b0, mask, p)| raw_frame(b0, mask, &p));
    prop_oneof![vec(frame, 0..12).prop_map(|frames| frames.concat()), vec(any::<u8>(), 0..600),]
}

/// Bytes that are often almost UTF-8: lead and continuation bytes at the edges of the valid
/// ranges, or valid text with one byte changed.
fn nearly_utf8() -> impl Strategy<Value = Vec<u8>> {
    let edgy = prop::sample::select(vec![
        b'a', 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed,
        0xee, 0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff,
    ]);
    prop_oneof![
        vec(edgy, 1..24),
        (".{1,12}", any::<prop::sample::Index>(), any::<u8>()).prop_map(|(s, i, b)| {
            let mut v = s.into_bytes();
            let i = i.index(v.len());
            v[i] = b;
            v
        }),
    ]
}

/// Whether some continuation could still make `prefix` valid UTF-8.
fn may_become_utf8(prefix: &[u8]) -> bool {
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

// 256 cases each by default; set PROPTEST_CASES for a longer run.
proptest! {
    #[test]
    fn messages_arrive_intact_in_any_chunking(
        msgs in vec(message(), 0..10),
        chunking in chunking(),
        from_client: bool,
        via_recv_buf: bool,
    ) {
        let mut pair = Pair::new();
        let Pair { client, server } = &mut pair;
        let (tx, rx) = if from_client { (client, server) } else { (server, client) };
        for m in &msgs {
            tx.send(m.clone()).unwrap();
        }
        let wire = take_transmit(tx);
        let events = feed(rx, &wire, &chunking, via_recv_buf);
        let expected: Vec<Event> = msgs.iter().cloned().map(Ok).collect();
        prop_assert_eq!(events, expected);
        prop_assert_eq!(rx.state(), State::Open);

        // Every ping was answered, in order, and nothing else was sent.
        let pings: Vec<Vec<u8>> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::Ping(p) => Some(p.to_vec()),
                _ => None,
            })
            .collect();
        let frames = sent_frames(rx);
        prop_assert!(frames.iter().all(|f| f.header.opcode == OpCode::Pong));
        let pongs: Vec<Vec<u8>> = frames.into_iter().map(|f| f.payload).collect();
        prop_assert_eq!(pongs, pings);
    }

    #[test]
    fn fragmented_messages_reassemble_in_any_chunking(
        msgs in vec(fragmented(), 0..6),
        key: [u8; 4],
        chunking in chunking(),
        to_server: bool,
        via_recv_buf: bool,
    ) {
        let (role, mask) = if to_server { (Role::Server, Some(key)) } else { (Role::Client, None) };
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for m in &msgs {
            m.write(mask, &mut input, &mut expected);
        }
        let mut conn = Connection::new(role, Config::default());
        let events = feed(&mut conn, &input, &chunking, via_recv_buf);
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn text_fails_at_the_first_byte_that_cannot_be_utf8(
        payload in nearly_utf8(),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
        fragmented: bool,
    ) {
        // RFC 6455 §8.1: fail fast. One text frame (or a fragmented message whose continuation
        // carries the bytes) arrives in pieces; the error must come with the piece holding the
        // first byte that can never be valid, and not before.
        let mut server = Connection::new(Role::Server, Config::default());
        let head = if fragmented {
            let mut v = masked(false, TEXT, b"");
            v.extend(raw_header(0x80 | CONT, Some(KEY), payload.len() as u64));
            v
        } else {
            raw_header(0x80 | TEXT, Some(KEY), payload.len() as u64)
        };
        server.handle_input(&head);
        prop_assert_eq!(poll_all(&mut server), vec![]);
        let wire = common::xor(&payload, KEY);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(payload.len() + 1)).collect();
        cuts.push(payload.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut from = 0;
        for to in cuts {
            server.handle_input(&wire[from..to]);
            let events = poll_all(&mut server);
            from = to;
            let prefix = &payload[..to];
            if !may_become_utf8(prefix) {
                prop_assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)], "at {}", to);
                return Ok(());
            }
            if to < payload.len() {
                prop_assert_eq!(events, vec![], "at {}", to);
            } else {
                let expected = match String::from_utf8(payload.clone()) {
                    Ok(text) => Ok(Message::text(text)),
                    Err(_) => Err(ProtocolError::InvalidUtf8),
                };
                prop_assert_eq!(events, vec![expected]);
            }
        }
    }

    #[test]
    fn stored_text_is_exactly_the_valid_utf8_in_any_framing_and_chunking(
        pieces in vec(nearly_utf8(), 1..4),
        ping: bool,
        chunking in chunking(),
        via_recv_buf: bool,
        store: bool,
    ) {
        // Each piece is one fragment; whole messages through poll_message. Text must come out
        // exactly when the concatenation is UTF-8, whichever check (incremental or whole) ran.
        let payload = pieces.concat();
        let mut cuts = Vec::new();
        let mut at = 0;
        for p in &pieces[..pieces.len() - 1] {
            at += p.len();
            cuts.push(at);
        }
        let input = text_in_fragments(&payload, &cuts, ping);
        let config = if store {
            Config::default().stream_threshold(usize::MAX)
        } else {
            Config::default()
        };
        let mut conn = Connection::new(Role::Server, config);
        let mut events = feed(&mut conn, &input, &chunking, via_recv_buf);
        events.retain(|e| !matches!(e, Ok(Message::Ping(_))));
        match String::from_utf8(payload) {
            Ok(text) => prop_assert_eq!(events, vec![Ok(Message::text(text))]),
            Err(_) => {
                prop_assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)]);
                prop_assert_eq!(sent_closes(&mut conn)[0].close_code(), Some(1007));
            }
        }
    }

    #[test]
    fn frame_header_round_trips(
        fin: bool,
        rsv in 0u8..8,
        opcode in opcode(),
        mask: Option<[u8; 4]>,
        payload_len in payload_len(),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let header = FrameHeader { fin, rsv, opcode, mask, payload_len };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        prop_assert_eq!(n, header.encoded_len());
        // The same bytes as the test's own encoder: shortest length form, mask key last.
        let b0 = u8::from(fin) << 7 | rsv << 4 | opcode.as_u8();
        prop_assert_eq!(&buf[..n], &raw_header(b0, mask, payload_len)[..]);

        let mut bytes = buf[..n].to_vec();
        bytes.extend(&trailing);
        prop_assert_eq!(FrameHeader::decode(&bytes), Ok(Some((header, n))));
        for cut in 0..n {
            prop_assert_eq!(FrameHeader::decode(&bytes[..cut]), Ok(None), "cut {}", cut);
        }
    }

    #[test]
    fn apply_mask_equals_naive_xor(
        data in vec(any::<u8>(), 0..600),
        key: [u8; 4],
        offset: usize,
        start in 0usize..16,
        split: usize,
    ) {
        let start = start.min(data.len());
        let mut naive = data.clone();
        for (i, b) in naive[start..].iter_mut().enumerate() {
            *b ^= key[(i % 4 + offset % 4) % 4];
        }
        // Whole, from an unaligned start.
        let mut fast = data.clone();
        apply_mask(&mut fast[start..], key, offset);
        prop_assert_eq!(&fast, &naive);
        // In two pieces, the second continuing at its offset.
        let mut pieces = data.clone();
        let (a, b) = pieces[start..].split_at_mut(split % (data.len() - start + 1));
        let a_len = a.len();
        apply_mask(a, key, offset);
        apply_mask(b, key, offset.wrapping_add(a_len));
        prop_assert_eq!(&pieces, &naive);
        // Masking twice is the identity.
        apply_mask(&mut fast[start..], key, offset);
        prop_assert_eq!(fast, data);
    }

    #[test]
    fn arbitrary_input_ends_in_exactly_one_close_or_error(
        (server, input) in any::<bool>().prop_flat_map(|s| (Just(s), soup(s))),
        chunking in chunking(),
        small_limits: bool,
        via_recv_buf: bool,
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let config = if small_limits {
            Config::default().max_frame_size(100).max_message_size(250)
        } else {
            Config::default()
        };
        let mut conn = Connection::new(role, config.clone());
        let mut events = feed(&mut conn, &input, &chunking, via_recv_buf);
        conn.handle_eof();
        events.extend(poll_all(&mut conn));

        // The same events as when everything arrives in one read.
        let mut whole = Connection::new(role, config);
        whole.handle_input(&input);
        whole.handle_eof();
        prop_assert_eq!(&poll_all(&mut whole), &events);
        prop_assert_eq!(conn.poll_message(), None);
        prop_assert_eq!(conn.state(), State::Closed);
        prop_assert!(conn.should_close_transport());

        // Messages, then exactly one end: the peer's close or one error.
        let (last, before) = events.split_last().expect("the end is reported");
        prop_assert!(
            matches!(last, Err(_) | Ok(Message::Close(_))),
            "ends with {:?}", last
        );
        prop_assert!(
            before.iter().all(|e| matches!(e, Ok(m) if !matches!(m, Message::Close(_)))),
            "{:?}", events
        );

        // What the connection queued: well-formed frames, pongs for the pings, then at most one
        // close, carrying the error's code.
        let frames = sent_frames(&mut conn);
        let closes: Vec<_> = frames.iter().filter(|f| f.header.opcode == OpCode::Close).collect();
        match last {
            Err(ProtocolError::ResetWithoutClosingHandshake) => {
                prop_assert!(closes.iter().all(|c| c.close_code() != Some(1006)));
                prop_assert!(closes.len() <= 1);
            }
            Err(e) => {
                prop_assert_eq!(closes.len(), 1);
                prop_assert_eq!(closes[0].close_code(), Some(e.close_code().0));
                prop_assert_eq!(frames.last().map(|f| f.header.opcode), Some(OpCode::Close));
            }
            Ok(Message::Close(frame)) => {
                prop_assert_eq!(closes.len(), 1);
                prop_assert_eq!(closes[0].close_code(), frame.as_ref().map(|f| f.code.0));
            }
            Ok(_) => unreachable!(),
        }
        let pings: Vec<Vec<u8>> = before
            .iter()
            .filter_map(|e| match e {
                Ok(Message::Ping(p)) => Some(p.to_vec()),
                _ => None,
            })
            .collect();
        let pongs: Vec<Vec<u8>> = frames
            .iter()
            .filter(|f| f.header.opcode == OpCode::Pong)
            .map(|f| f.payload.clone())
            .collect();
        prop_assert_eq!(pongs, pings);
    }
}
