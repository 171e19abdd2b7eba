//! The in-place echo (`Connection::echo_input` / `Connection::echo_buffered`): small complete
//! data frames go straight from the input into the send queue, and everything else is left to
//! `poll_event`. Checked against the normal path (`handle_input` + `poll_event` + `send`), which
//! must produce exactly the same bytes.

use bytes::Buf;
use wsx_proto::deflate::{self, DeflateConfig};
use wsx_proto::{
    Chunk, CloseCode, CloseFrame, Config, Connection, Event, Message, ProtocolError, Role, State,
};

#[allow(dead_code)]
mod common;

// ---------------------------------------------------------------------------------------------
// Helpers

use common::KEY;

/// First header bytes (FIN and the opcode) of the frames these tests send and expect.
const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const PING: u8 = 0x89;
const CLOSE: u8 = 0x88;

/// A masked frame as a client sends it: `b0` as given (FIN, RSV, opcode), masked with `key`.
fn frame_with(b0: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
    common::raw_frame(b0, Some(key), payload)
}

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(b0, KEY, payload)
}

fn text(s: &str) -> Vec<u8> {
    frame(TEXT, s.as_bytes())
}

fn binary(b: &[u8]) -> Vec<u8> {
    frame(BINARY, b)
}

/// The unmasked frame a server sends for a short payload.
fn server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= 125);
    let mut out = vec![b0, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn server(config: Config) -> Connection {
    Connection::new(Role::Server, config)
}

/// Everything queued for the transport, drained.
fn drain(conn: &mut Connection) -> Vec<u8> {
    common::take_transmit(conn)
}

/// Server frames split out of `bytes`: (b0, payload). Every byte must belong to a whole,
/// unmasked frame.
fn parse(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    common::parse_frames(bytes)
        .into_iter()
        .map(|f| {
            let h = f.header;
            assert!(h.mask.is_none(), "a server frame is masked");
            (u8::from(h.fin) << 7 | h.rsv << 4 | h.opcode.as_u8(), f.payload)
        })
        .collect()
}

/// The close code in a close frame's payload.
fn close_code(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Polls every event and answers data messages as an echo server does (`send` back); returns
/// the non-data events (pings, pongs, closes, errors) in order.
fn poll_and_echo(conn: &mut Connection) -> Vec<Result<Message, ProtocolError>> {
    let mut other = Vec::new();
    while let Some(ev) = conn.poll_event() {
        match ev {
            Ok(Event::Message(m @ (Message::Text(_) | Message::Binary(_)))) => {
                conn.send(m).expect("send the echo");
            }
            Ok(Event::Message(m)) => other.push(Ok(m)),
            Ok(Event::Chunk(c)) => panic!("unexpected chunk {c:?}"),
            Err(e) => other.push(Err(e)),
        }
    }
    other
}

/// The normal path over a sequence of reads: `handle_input`, then poll and echo; returns all
/// bytes transmitted and the non-data events.
fn reference(
    config: Config,
    reads: &[&[u8]],
    drain_after: &[bool],
) -> (Vec<u8>, Vec<Result<Message, ProtocolError>>) {
    let mut conn = server(config);
    let mut out = Vec::new();
    let mut events = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        conn.handle_input(read);
        events.extend(poll_and_echo(&mut conn));
        if drain_after.get(i).copied().unwrap_or(false) {
            out.extend(drain(&mut conn));
        }
    }
    out.extend(drain(&mut conn));
    (out, events)
}

/// The fast path over the same reads, as a driver would use it: `echo_input` on what was read
/// while nothing is buffered, the rest to `handle_input_buf`, then `echo_buffered` and
/// `poll_event` in turn until neither makes progress.
fn fast(
    config: Config,
    reads: &[&[u8]],
    drain_after: &[bool],
) -> (Vec<u8>, Vec<Result<Message, ProtocolError>>) {
    let mut conn = server(config);
    let mut out = Vec::new();
    let mut events = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        let n = conn.echo_input(read);
        assert!(n <= read.len());
        conn.handle_input_buf(bytes::BytesMut::from(&read[n..]));
        loop {
            conn.echo_buffered();
            match conn.poll_event() {
                None => break,
                Some(Ok(Event::Message(m @ (Message::Text(_) | Message::Binary(_))))) => {
                    conn.send(m).expect("send the echo");
                }
                Some(Ok(Event::Message(m))) => events.push(Ok(m)),
                Some(Ok(Event::Chunk(c))) => panic!("unexpected chunk {c:?}"),
                Some(Err(e)) => events.push(Err(e)),
            }
        }
        if drain_after.get(i).copied().unwrap_or(false) {
            out.extend(drain(&mut conn));
        }
    }
    out.extend(drain(&mut conn));
    (out, events)
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn key(&mut self) -> [u8; 4] {
        (self.next() as u32).to_ne_bytes()
    }
}

/// Valid UTF-8 of exactly `len` bytes, mixing ASCII with 2-, 3- and 4-byte code points.
fn utf8_of_len(len: usize, rng: &mut Rng) -> String {
    let mut s = String::new();
    while s.len() < len {
        let room = len - s.len();
        let c = match rng.below(5) {
            0 if room >= 2 => 'é',
            1 if room >= 3 => '€',
            2 if room >= 4 => '😀',
            _ => char::from(b'a' + (rng.below(26) as u8)),
        };
        s.push(c);
    }
    assert_eq!(s.len(), len);
    s
}

// ---------------------------------------------------------------------------------------------
// 1. A burst of small frames

#[test]
fn a_burst_of_small_frames_is_echoed_in_place_exactly_as_the_normal_path_does() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut frames = Vec::new();
    let mut messages = Vec::new();
    for i in 0..40 {
        let len = (i * 7) % 126;
        let key = rng.key();
        if i % 2 == 0 {
            let s = utf8_of_len(len, &mut rng);
            frames.push(frame_with(TEXT, key, s.as_bytes()));
            messages.push((TEXT, s.into_bytes()));
        } else {
            let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            frames.push(frame_with(BINARY, key, &b));
            messages.push((BINARY, b));
        }
    }
    let input = concat(&frames);

    let mut conn = server(Config::default());
    assert!(!conn.has_buffered_input());
    assert_eq!(conn.echo_input(&input), input.len(), "every byte is taken");
    assert!(!conn.has_buffered_input());
    assert!(conn.poll_event().is_none(), "no events after an in-place echo");
    assert!(conn.poll_message().is_none());
    let fast_out = drain(&mut conn);

    let (normal_out, events) = reference(Config::default(), &[&input], &[]);
    assert!(events.is_empty());
    assert_eq!(fast_out, normal_out, "the in-place echo differs from send");
    let echoed = parse(&fast_out);
    assert_eq!(echoed, messages);
    assert_eq!(conn.state(), State::Open);
}

#[test]
fn echo_buffered_echoes_what_handle_input_buffered_and_counts_messages() {
    let input = concat(&[text("one"), binary(&[1, 2, 3]), text(""), binary(&[])]);
    let mut conn = server(Config::default());
    conn.handle_input(&input);
    assert!(conn.has_buffered_input());
    assert_eq!(conn.echo_input(&text("out of order")), 0, "input waits: no echo ahead of it");
    assert_eq!(conn.echo_buffered(), 4);
    assert!(!conn.has_buffered_input());
    assert_eq!(conn.echo_buffered(), 0);
    assert!(conn.poll_event().is_none());
    let (normal_out, _) = reference(Config::default(), &[&input], &[]);
    assert_eq!(drain(&mut conn), normal_out);
}

#[test]
fn an_echo_queued_after_a_partial_write_goes_after_it() {
    let mut conn = server(Config::default());
    let first = text("first message, echoed");
    assert_eq!(conn.echo_input(&first), first.len());
    // The transport takes part of it, then more arrives.
    let part = {
        let q = conn.transmit();
        let p = q.chunk()[..5].to_vec();
        q.advance(5);
        p
    };
    let second = concat(&[binary(&[9; 100]), text("third")]);
    assert_eq!(conn.echo_input(&second), second.len());
    let mut out = part;
    out.extend(drain(&mut conn));
    assert_eq!(
        out,
        concat(&[
            server_frame(TEXT, b"first message, echoed"),
            server_frame(BINARY, &[9; 100]),
            server_frame(TEXT, b"third"),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Control frames stop the fast path

#[test]
fn a_ping_stops_the_fast_path_and_the_pong_goes_out_in_order() {
    let before = concat(&[text("a"), binary(b"bb"), text("ccc")]);
    let ping = frame(PING, b"are you there");
    let after = concat(&[text("d"), binary(b"ee")]);
    let input = concat(&[before.clone(), ping.clone(), after.clone()]);

    let mut conn = server(Config::default());
    let n = conn.echo_input(&input);
    assert_eq!(n, before.len(), "consumed up to the ping only");
    conn.handle_input_buf(bytes::BytesMut::from(&input[n..]));
    match conn.poll_event() {
        Some(Ok(Event::Message(Message::Ping(p)))) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the ping, got {other:?}"),
    }
    assert!(conn.take_reply_queued(), "the pong is queued");
    assert_eq!(conn.echo_buffered(), 2, "the rest is echoed in place");
    assert!(conn.poll_event().is_none());
    let out = drain(&mut conn);

    let expected = concat(&[
        server_frame(TEXT, b"a"),
        server_frame(BINARY, b"bb"),
        server_frame(TEXT, b"ccc"),
        server_frame(0x8a, b"are you there"),
        server_frame(TEXT, b"d"),
        server_frame(BINARY, b"ee"),
    ]);
    assert_eq!(out, expected);
    let (normal_out, events) = reference(Config::default(), &[&input], &[]);
    assert_eq!(out, normal_out);
    assert_eq!(events.len(), 1);
}

#[test]
fn a_close_from_the_peer_stops_the_fast_path_and_is_answered() {
    let before = concat(&[text("bye soon"), binary(&[0; 10])]);
    let mut close_payload = 1000u16.to_be_bytes().to_vec();
    close_payload.extend_from_slice(b"done");
    let input = concat(&[before.clone(), frame(CLOSE, &close_payload), text("too late")]);
    let mut conn = server(Config::default());
    let n = conn.echo_input(&input);
    assert_eq!(n, before.len());
    conn.handle_input(&input[n..]);
    match conn.poll_event() {
        Some(Ok(Event::Message(Message::Close(Some(f))))) => assert_eq!(f.code, CloseCode::NORMAL),
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(conn.echo_buffered(), 0, "nothing after the close is echoed");
    assert!(conn.poll_event().is_none());
    let frames = parse(&drain(&mut conn));
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[2].0, CLOSE);
    assert_eq!(close_code(&frames[2].1), 1000);
    assert_eq!(conn.echo_input(&text("x")), 0);
}

// ---------------------------------------------------------------------------------------------
// 3. Invalid UTF-8

#[test]
fn invalid_utf8_text_is_not_echoed_and_fails_with_1007() {
    let good = concat(&[text("fine"), binary(&[0xff, 0xfe]), text("é€😀")]);
    // A truncated 2-byte sequence; then a frame that must never be echoed either.
    let bad = frame(TEXT, &[b'o', b'k', 0xc3]);
    let input = concat(&[good.clone(), bad, text("after")]);

    let mut conn = server(Config::default());
    let n = conn.echo_input(&input);
    assert_eq!(n, good.len(), "the bad frame is not consumed");
    conn.handle_input(&input[n..]);
    assert_eq!(conn.echo_buffered(), 0, "the bad frame stays in place");
    match conn.poll_event() {
        Some(Err(ProtocolError::InvalidUtf8)) => {}
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    assert!(conn.poll_event().is_none());
    let frames = parse(&drain(&mut conn));
    assert_eq!(
        frames[..3],
        [(TEXT, b"fine".to_vec()), (BINARY, vec![0xff, 0xfe]), (TEXT, "é€😀".as_bytes().to_vec())]
    );
    assert_eq!(frames.len(), 4, "only the close follows: {frames:?}");
    assert_eq!(frames[3].0, CLOSE);
    assert_eq!(close_code(&frames[3].1), 1007);
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.echo_input(&text("x")), 0);
}

#[test]
fn invalid_utf8_is_refused_at_every_length_with_an_empty_or_busy_queue() {
    let mut rng = Rng(77);
    for len in 1..=125usize {
        for at in [0, len / 2, len - 1] {
            // ASCII but for one byte that can never appear in UTF-8.
            let mut payload = vec![b'x'; len];
            payload[at] = 0xff;
            let bad = frame_with(TEXT, rng.key(), &payload);
            for busy in [false, true] {
                let mut conn = server(Config::default());
                let mut expected = Vec::new();
                if busy {
                    // Something queued already: the echo goes to the coalescing buffer.
                    let lead = text("lead");
                    assert_eq!(conn.echo_input(&lead), lead.len());
                    expected.extend(server_frame(TEXT, b"lead"));
                }
                let before = conn.buffered_amount();
                let input = concat(&[bad.clone(), text("next")]);
                let n = conn.echo_input(&input);
                assert_eq!(n, 0, "len {len} at {at} busy {busy}");
                assert_eq!(conn.buffered_amount(), before, "nothing queued for the bad frame");
                conn.handle_input(&input);
                assert!(matches!(conn.poll_event(), Some(Err(ProtocolError::InvalidUtf8))));
                let out = drain(&mut conn);
                assert_eq!(&out[..expected.len()], &expected[..]);
                let rest = parse(&out[expected.len()..]);
                assert_eq!(rest.len(), 1, "len {len}: {rest:?}");
                assert_eq!(rest[0].0, CLOSE);
                assert_eq!(close_code(&rest[0].1), 1007);
            }
        }
    }
}

#[test]
fn binary_frames_are_not_checked_for_utf8() {
    let payload: Vec<u8> = (0..125).map(|i| 0x80 | i as u8).collect();
    let input = binary(&payload);
    let mut conn = server(Config::default());
    assert_eq!(conn.echo_input(&input), input.len());
    assert_eq!(drain(&mut conn), server_frame(BINARY, &payload));
}

// ---------------------------------------------------------------------------------------------
// 4. Frames split across reads

#[test]
fn a_frame_split_in_its_header_is_received_normally() {
    let msg = text("split in the header");
    for cut in 1..6 {
        let mut conn = server(Config::default());
        assert_eq!(conn.echo_input(&msg[..cut]), 0, "cut {cut}: an incomplete header");
        conn.handle_input(&msg[..cut]);
        assert!(conn.poll_event().is_none());
        assert_eq!(conn.echo_input(&msg[cut..]), 0, "cut {cut}: bytes are buffered");
        conn.handle_input(&msg[cut..]);
        match conn.poll_event() {
            Some(Ok(Event::Message(Message::Text(t)))) => {
                assert_eq!(t.as_str(), "split in the header")
            }
            other => panic!("cut {cut}: {other:?}"),
        }
        assert_eq!(conn.buffered_amount(), 0, "nothing was echoed");
    }
}

#[test]
fn a_frame_split_in_its_payload_is_received_normally() {
    let first = text("whole");
    let msg = binary(&[5; 60]);
    let input = concat(&[first.clone(), msg.clone()]);
    for cut in first.len() + 6..input.len() {
        let mut conn = server(Config::default());
        let n = conn.echo_input(&input[..cut]);
        assert_eq!(n, first.len(), "cut {cut}: only the whole frame");
        conn.handle_input(&input[n..cut]);
        assert!(conn.poll_event().is_none());
        conn.handle_input(&input[cut..]);
        assert_eq!(conn.echo_buffered(), 0, "cut {cut}: the frame's header was already read");
        match conn.poll_event() {
            Some(Ok(Event::Message(Message::Binary(b)))) => assert_eq!(&b[..], &[5; 60]),
            other => panic!("cut {cut}: {other:?}"),
        }
        assert_eq!(drain(&mut conn), server_frame(TEXT, b"whole"));
    }
}

#[test]
fn a_frame_completed_before_poll_is_echoed_by_echo_buffered() {
    let msg = text("completed later");
    let mut conn = server(Config::default());
    assert_eq!(conn.echo_input(&msg[..10]), 0);
    conn.handle_input(&msg[..10]);
    conn.handle_input(&msg[10..]);
    assert_eq!(conn.echo_buffered(), 1);
    assert!(conn.poll_event().is_none());
    assert_eq!(drain(&mut conn), server_frame(TEXT, b"completed later"));
}

// ---------------------------------------------------------------------------------------------
// 5. Larger and fragmented messages

#[test]
fn a_126_byte_frame_is_left_to_poll_event() {
    let big = vec![b'z'; 126];
    let lead = text("small");
    let input = concat(&[lead.clone(), frame(TEXT, &big), text("tail")]);
    let mut conn = server(Config::default());
    let n = conn.echo_input(&input);
    assert_eq!(n, lead.len());
    conn.handle_input(&input[n..]);
    match conn.poll_event() {
        Some(Ok(Event::Message(Message::Text(t)))) => {
            assert_eq!(t.as_bytes(), &big[..]);
            conn.send(Message::Text(t)).unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.echo_buffered(), 1);
    let out = drain(&mut conn);
    let (normal_out, _) = reference(Config::default(), &[&input], &[]);
    assert_eq!(out, normal_out);
}

#[test]
fn a_fragmented_message_is_left_to_poll_event() {
    // FIN clear on the first frame, then a continuation with FIN.
    let input = concat(&[frame(0x01, b"Hel"), frame(0x80, b"lo"), text("next")]);
    let mut conn = server(Config::default());
    assert_eq!(conn.echo_input(&input), 0);
    conn.handle_input(&input);
    assert_eq!(conn.echo_buffered(), 0);
    match conn.poll_event() {
        Some(Ok(Event::Message(Message::Text(t)))) => assert_eq!(t.as_str(), "Hello"),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.echo_buffered(), 1);
    assert_eq!(drain(&mut conn), server_frame(TEXT, b"next"));
}

#[test]
fn a_data_frame_during_a_fragmented_message_is_still_a_protocol_error() {
    let mut conn = server(Config::default());
    let first = frame(0x02, b"part");
    conn.handle_input(&first);
    assert!(conn.poll_event().is_none());
    assert!(!conn.has_buffered_input(), "the fragment was read whole");
    // A new message where a continuation must come: not echoed, refused.
    let intruder = text("intruder");
    assert_eq!(conn.echo_input(&intruder), 0);
    conn.handle_input(&intruder);
    assert!(matches!(conn.poll_event(), Some(Err(ProtocolError::ExpectedContinuation))));
    let frames = parse(&drain(&mut conn));
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].0, CLOSE);
    assert_eq!(close_code(&frames[0].1), 1002);
}

/// Whether an error is the one expected.
type ErrorCheck = fn(&ProtocolError) -> bool;

#[test]
fn reserved_bits_unmasked_frames_and_reserved_opcodes_are_left_to_poll_event() {
    let unmasked = {
        let mut f = vec![TEXT, 2];
        f.extend_from_slice(b"hi");
        f
    };
    let cases: Vec<(Vec<u8>, ErrorCheck)> = vec![
        (frame(0xc1, b"rsv1"), |e| matches!(e, ProtocolError::ReservedBits(_))),
        (frame(0xa2, b"rsv2"), |e| matches!(e, ProtocolError::ReservedBits(_))),
        (frame(0x91, b"rsv3"), |e| matches!(e, ProtocolError::ReservedBits(_))),
        (unmasked, |e| matches!(e, ProtocolError::UnmaskedFrame)),
        (frame(0x83, b"reserved opcode"), |_| true),
        (frame(0x80, b"stray continuation"), |e| {
            matches!(e, ProtocolError::UnexpectedContinuation)
        }),
    ];
    for (bad, check) in cases {
        let lead = text("ok");
        let input = concat(&[lead.clone(), bad.clone(), text("never")]);
        let mut conn = server(Config::default());
        let n = conn.echo_input(&input);
        assert_eq!(n, lead.len(), "{bad:02x?}");
        conn.handle_input(&input[n..]);
        match conn.poll_event() {
            Some(Err(e)) => assert!(check(&e), "{bad:02x?}: {e:?}"),
            other => panic!("{bad:02x?}: {other:?}"),
        }
        let frames = parse(&drain(&mut conn));
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0], (TEXT, b"ok".to_vec()));
        assert_eq!(frames[1].0, CLOSE);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Backpressure

#[test]
fn echo_input_stops_when_the_send_queue_is_full() {
    // 22 bytes per echo (20-byte payloads): full after three (66 >= 50).
    let config = || Config::default().write_buffer_high_water(50);
    let one = binary(&[7; 20]);
    let input: Vec<u8> = one.iter().copied().cycle().take(one.len() * 10).collect();
    let mut conn = server(config());
    let n = conn.echo_input(&input);
    assert_eq!(n, 3 * one.len(), "stops once the queue reaches the mark");
    assert!(conn.is_send_buffer_full());
    assert_eq!(conn.buffered_amount(), 66);
    conn.handle_input(&input[n..]);
    assert_eq!(conn.echo_buffered(), 0, "still full");
    // The transport drains: the rest is echoed in place, again up to the mark.
    let mut out = drain(&mut conn);
    assert_eq!(conn.echo_buffered(), 3);
    assert!(conn.is_send_buffer_full());
    out.extend(drain(&mut conn));
    assert_eq!(conn.echo_buffered(), 3);
    out.extend(drain(&mut conn));
    assert_eq!(conn.echo_buffered(), 1);
    assert!(!conn.has_buffered_input());
    out.extend(drain(&mut conn));
    assert_eq!(parse(&out), vec![(BINARY, vec![7; 20]); 10]);
}

#[test]
fn a_full_queue_leaves_the_rest_to_poll_event_with_the_same_output() {
    let config = || Config::default().write_buffer_high_water(50);
    let frames: Vec<Vec<u8>> = (0..10).map(|i| text(&"x".repeat(10 + i))).collect();
    let input = concat(&frames);
    let (fast_out, fast_events) = fast(config(), &[&input], &[]);
    let (normal_out, normal_events) = reference(config(), &[&input], &[]);
    assert_eq!(fast_out, normal_out);
    assert_eq!(fast_events, normal_events);
}

#[test]
fn a_zero_high_water_mark_echoes_one_frame_at_a_time() {
    let mut conn = server(Config::default().write_buffer_high_water(0));
    let input = concat(&[text("a"), text("b")]);
    let n = conn.echo_input(&input);
    assert_eq!(n, text("a").len(), "an empty queue takes one, then is full");
    assert!(conn.is_send_buffer_full());
}

// ---------------------------------------------------------------------------------------------
// 7. When the fast path is off

#[test]
fn no_echo_after_the_server_closed() {
    let mut conn = server(Config::default());
    conn.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "bye"))).unwrap();
    assert_eq!(conn.state(), State::Closing);
    let input = concat(&[text("late"), binary(b"later")]);
    assert_eq!(conn.echo_input(&input), 0);
    conn.handle_input(&input);
    assert_eq!(conn.echo_buffered(), 0);
    // Still delivered while closing (RFC 6455 §7.1.2), but nothing may be sent back.
    match conn.poll_event() {
        Some(Ok(Event::Message(Message::Text(t)))) => assert_eq!(t.as_str(), "late"),
        other => panic!("{other:?}"),
    }
    let frames = parse(&drain(&mut conn));
    assert_eq!(frames.len(), 1, "only our close: {frames:?}");
    assert_eq!(frames[0].0, CLOSE);
    assert_eq!(close_code(&frames[0].1), 1001);
}

#[test]
fn a_client_never_echoes_in_place() {
    let mut client = Connection::new(Role::Client, Config::default());
    // What a server sends (unmasked), and what would be taken if it were a server (masked).
    let unmasked = {
        let mut f = vec![TEXT, 2];
        f.extend_from_slice(b"hi");
        f
    };
    assert_eq!(client.echo_input(&unmasked), 0);
    assert_eq!(client.echo_input(&text("masked")), 0);
    client.handle_input(&unmasked);
    assert_eq!(client.echo_buffered(), 0);
    assert_eq!(client.buffered_amount(), 0);
    match client.poll_event() {
        Some(Ok(Event::Message(Message::Text(t)))) => assert_eq!(t.as_str(), "hi"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_echo_while_a_chunked_send_is_unfinished() {
    let mut conn = server(Config::default());
    conn.send_chunk(Chunk::text("first half", true, false)).unwrap();
    let before = drain(&mut conn);
    let input = text("wait");
    assert_eq!(conn.echo_input(&input), 0, "an echo would land inside the fragmented message");
    conn.handle_input(&input);
    assert_eq!(conn.echo_buffered(), 0);
    assert!(conn.poll_event().is_some());
    conn.send_chunk(Chunk::text(" second half", false, true)).unwrap();
    assert_eq!(conn.echo_buffered(), 0);
    drain(&mut conn);
    // Once the chunked message is finished, the fast path is back.
    let again = text("now");
    assert_eq!(conn.echo_input(&again), again.len());
    assert_eq!(drain(&mut conn), server_frame(TEXT, b"now"));
    assert_eq!(before[0], 0x01, "the first chunk went out without FIN");
}

#[test]
fn no_echo_with_permessage_deflate() {
    let dc = DeflateConfig::default().context_takeover(true);
    let params = deflate::negotiate([deflate::NAME], &dc).unwrap();
    let mut conn =
        Connection::new(Role::Server, Config::default().deflate(Some(dc))).with_deflate(params);
    assert!(conn.is_deflate_enabled());
    let input = text("hello hello hello hello");
    assert_eq!(conn.echo_input(&input), 0);
    conn.handle_input(&input);
    assert_eq!(conn.echo_buffered(), 0);
    assert!(matches!(conn.poll_event(), Some(Ok(Event::Message(Message::Text(_))))));
}

#[test]
fn no_echo_after_a_protocol_error() {
    let mut conn = server(Config::default());
    conn.handle_input(&frame(0xc1, b"bad"));
    assert!(matches!(conn.poll_event(), Some(Err(_))));
    assert_eq!(conn.state(), State::Closed);
    drain(&mut conn);
    assert_eq!(conn.echo_input(&text("x")), 0);
    conn.handle_input(&text("x"));
    assert_eq!(conn.echo_buffered(), 0);
    assert_eq!(conn.buffered_amount(), 0);
}

#[test]
fn no_echo_while_a_pong_is_held_back() {
    // The queue is full when the ping is read: its pong waits. An echo must not overtake it.
    let mut conn = server(Config::default().write_buffer_high_water(30));
    let lead = binary(&[1; 40]);
    assert_eq!(conn.echo_input(&lead), lead.len());
    assert!(conn.is_send_buffer_full());
    conn.handle_input(&frame(PING, b"p"));
    assert!(matches!(conn.poll_event(), Some(Ok(Event::Message(Message::Ping(_))))));
    assert!(conn.has_output());
    // Written out, but the held pong is only queued by `transmit`/`poll_event`.
    {
        let q = conn.transmit();
        let n = q.remaining();
        q.advance(n);
    }
    let after = text("after the pong");
    let n = conn.echo_input(&after);
    assert_eq!(n, 0, "the held pong goes first");
    conn.handle_input(&after[n..]);
    poll_and_echo(&mut conn);
    conn.echo_buffered();
    let frames = parse(&drain(&mut conn));
    assert_eq!(frames, vec![(0x8a, b"p".to_vec()), (TEXT, b"after the pong".to_vec())]);
}

// ---------------------------------------------------------------------------------------------
// 8. Limits

#[test]
fn a_frame_over_max_message_size_is_refused_by_poll_event() {
    let config = || Config::default().max_message_size(10);
    let lead = text("0123456789"); // exactly the limit: taken
    let input = concat(&[lead.clone(), text("01234567890"), text("never")]);
    let mut conn = server(config());
    let n = conn.echo_input(&input);
    assert_eq!(n, lead.len());
    conn.handle_input(&input[n..]);
    assert_eq!(conn.echo_buffered(), 0);
    match conn.poll_event() {
        Some(Err(ProtocolError::MessageTooLarge { size: 11, max: 10 })) => {}
        other => panic!("{other:?}"),
    }
    let frames = parse(&drain(&mut conn));
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], (TEXT, b"0123456789".to_vec()));
    assert_eq!(close_code(&frames[1].1), 1009);
}

#[test]
fn a_frame_over_max_frame_size_is_refused_by_poll_event() {
    let mut conn = server(Config::default().max_frame_size(3));
    let input = concat(&[binary(b"abc"), binary(b"abcd")]);
    let n = conn.echo_input(&input);
    assert_eq!(n, binary(b"abc").len());
    conn.handle_input(&input[n..]);
    match conn.poll_event() {
        Some(Err(ProtocolError::FrameTooLarge { size: 4, max: 3 })) => {}
        other => panic!("{other:?}"),
    }
    let frames = parse(&drain(&mut conn));
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(close_code(&frames[1].1), 1009);
}

#[test]
fn a_zero_size_limit_still_echoes_empty_messages_only() {
    let mut conn = server(Config::default().max_message_size(0));
    let input = concat(&[text(""), binary(b""), text("a")]);
    let n = conn.echo_input(&input);
    assert_eq!(n, 12);
    conn.handle_input(&input[n..]);
    assert!(matches!(conn.poll_event(), Some(Err(ProtocolError::MessageTooLarge { .. }))));
}

// ---------------------------------------------------------------------------------------------
// 9. Every length

#[test]
fn every_length_roundtrips_with_any_mask_key() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for len in 0..=125usize {
        for _ in 0..4 {
            let key = rng.key();
            let plain_text = utf8_of_len(len, &mut rng);
            let ascii: String = (0..len).map(|i| char::from(b' ' + (i % 90) as u8)).collect();
            let bin: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let cases =
                [(TEXT, plain_text.as_bytes().to_vec()), (TEXT, ascii.into_bytes()), (BINARY, bin)];
            for (b0, plain) in cases {
                // Alone (an empty queue) and behind another echo (the coalescing buffer).
                for busy in [false, true] {
                    let mut conn = server(Config::default());
                    let mut expected = Vec::new();
                    if busy {
                        let lead = binary(&[0xaa; 3]);
                        assert_eq!(conn.echo_input(&lead), lead.len());
                        expected.extend(server_frame(BINARY, &[0xaa; 3]));
                    }
                    let input = frame_with(b0, key, &plain);
                    assert_eq!(conn.echo_input(&input), input.len(), "len {len} key {key:?}");
                    expected.extend(server_frame(b0, &plain));
                    let out = drain(&mut conn);
                    assert_eq!(out, expected, "len {len} key {key:?} b0 {b0:#x} busy {busy}");
                }
            }
        }
    }
}

#[test]
fn all_lengths_in_one_burst_match_the_normal_path() {
    let mut rng = Rng(42);
    let mut frames = Vec::new();
    for len in 0..=125usize {
        let key = rng.key();
        if len % 2 == 0 {
            frames.push(frame_with(TEXT, key, utf8_of_len(len, &mut rng).as_bytes()));
        } else {
            let bin: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            frames.push(frame_with(BINARY, key, &bin));
        }
    }
    let input = concat(&frames);
    let mut conn = server(Config::default());
    assert_eq!(conn.echo_input(&input), input.len());
    let (normal_out, _) = reference(Config::default(), &[&input], &[]);
    assert_eq!(drain(&mut conn), normal_out);
}

// ---------------------------------------------------------------------------------------------
// Randomized: any stream, cut into any reads, gives the normal path's bytes

#[test]
fn random_streams_cut_anywhere_give_the_same_bytes_as_the_normal_path() {
    let mut rng = Rng(0x0bad_5eed);
    for case in 0..400 {
        let mut stream = Vec::new();
        let frames = 1 + rng.below(30);
        for _ in 0..frames {
            let key = rng.key();
            let f = match rng.below(20) {
                0 => frame_with(PING, key, b"ping"),
                1 => frame_with(0x8a, key, b"pong"),
                2 => {
                    let n = 126 + rng.below(200) as usize;
                    frame_with(BINARY, key, &vec![3; n])
                }
                3 => concat(&[frame_with(0x01, key, b"frag"), frame_with(0x80, key, b"ment")]),
                4 if rng.below(4) == 0 => frame_with(TEXT, key, &[b'a', 0xe2, 0x82]),
                5 if rng.below(8) == 0 => frame_with(CLOSE, key, &1000u16.to_be_bytes()),
                6..=9 => {
                    let n = rng.below(126) as usize;
                    let b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                    frame_with(BINARY, key, &b)
                }
                _ => {
                    let n = rng.below(126) as usize;
                    frame_with(TEXT, key, utf8_of_len(n, &mut rng).as_bytes())
                }
            };
            stream.extend(f);
        }
        // Cut into reads.
        let mut cuts: Vec<usize> =
            (0..rng.below(6)).map(|_| rng.below(stream.len() as u64 + 1) as usize).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let reads: Vec<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
        let drains: Vec<bool> = reads.iter().map(|_| rng.below(2) == 0).collect();
        let high_water = [0usize, 40, 200, 128 << 10][rng.below(4) as usize];
        let config = || Config::default().write_buffer_high_water(high_water);
        let (fast_out, fast_events) = fast(config(), &reads, &drains);
        let (normal_out, normal_events) = reference(config(), &reads, &drains);
        assert_eq!(fast_events, normal_events, "case {case}");
        assert_eq!(fast_out, normal_out, "case {case}: {stream:02x?} cut at {cuts:?}");
    }
}
