//! permessage-deflate (RFC 7692) end to end: every negotiable parameter combination goes through
//! `deflate::client_offer` → `negotiate` → `Params::to_response_header` → `accept_response`, then
//! two `Connection`s exchange messages in both directions, fed in arbitrary chunks, while the
//! frames on the wire are checked bit by bit. Then the peer's mistakes (bombs, misplaced RSV1,
//! garbage) and the RFC 7692 §7.2.3 vectors.

// Each test crate uses its own subset of the shared helpers.
#[allow(dead_code)]
mod common;

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use proptest::collection::vec;
use proptest::prelude::*;
use wsx_proto::deflate::{self, DeflateConfig, Params};
use wsx_proto::frame::OpCode;
use wsx_proto::{CloseCode, CloseFrame, Config, Connection, Message, ProtocolError, Role, State};

use common::{
    parse_frames, poll_all, raw_frame, sent_closes, take_transmit, Event, Pair, WireFrame, BINARY,
    CLOSE, CONT, KEY, PING, PONG, TEXT,
};

/// FIN and RSV1 as they sit in a frame's first byte.
const FIN: u8 = 0x80;
const RSV1_BIT: u8 = 0x40;
/// RSV1 as `FrameHeader::rsv` reports it.
const RSV1: u8 = 0b100;

/// The window sizes every test goes through: the smallest (which zlib cannot compress with),
/// the smallest zlib can, a middle one and the default.
const BITS: [u8; 4] = [8, 9, 12, 15];

// ---------------------------------------------------------------------------------------------
// Every parameter combination

/// How the client writes its offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferStyle {
    /// `deflate::client_offer`, as wsx clients send it.
    Library,
    /// Every window size written out with a value, even 15, quoted, with odd spacing.
    Explicit,
    /// Without `client_max_window_bits` at all: the client cannot limit its window, so the
    /// server may not ask it to (RFC 7692 §7.1.2.2).
    NoClientBits,
}

/// One negotiation: what the client asks for and what the server insists on.
#[derive(Debug, Clone)]
struct Case {
    client: DeflateConfig,
    server: DeflateConfig,
    style: OfferStyle,
}

impl Case {
    /// `flags`: bit 0 the client asks for server_no_context_takeover, bit 1 for
    /// client_no_context_takeover, bits 2 and 3 the same in the server's configuration.
    /// `bits`: server_max_window_bits as asked by the client, then as configured on the server,
    /// then client_max_window_bits likewise.
    fn new(flags: u8, bits: [u8; 4], style: OfferStyle) -> Self {
        let mut client = DeflateConfig::default();
        client.server_no_context_takeover = flags & 1 != 0;
        client.client_no_context_takeover = flags & 2 != 0;
        client.server_max_window_bits = bits[0];
        client.client_max_window_bits = bits[2];
        let mut server = DeflateConfig::default();
        server.server_no_context_takeover = flags & 4 != 0;
        server.client_no_context_takeover = flags & 8 != 0;
        server.server_max_window_bits = bits[1];
        server.client_max_window_bits = bits[3];
        // A client that limits its own window must say so in its offer.
        let style = if style == OfferStyle::NoClientBits && bits[2] != 15 {
            OfferStyle::Library
        } else {
            style
        };
        Self { client, server, style }
    }

    /// The client's `Sec-WebSocket-Extensions` offer.
    fn offer(&self) -> String {
        let c = &self.client;
        let mut out = String::from(deflate::NAME);
        match self.style {
            OfferStyle::Library => return deflate::client_offer(c),
            OfferStyle::Explicit => {
                if c.client_no_context_takeover {
                    out.push_str(" ;client_no_context_takeover");
                }
                out.push_str(&format!(
                    " ; server_max_window_bits=\"{}\"",
                    c.server_max_window_bits
                ));
                if c.server_no_context_takeover {
                    out.push_str(";server_no_context_takeover ");
                }
                out.push_str(&format!("; client_max_window_bits={}", c.client_max_window_bits));
            }
            OfferStyle::NoClientBits => {
                if c.server_no_context_takeover {
                    out.push_str("; server_no_context_takeover");
                }
                if c.client_no_context_takeover {
                    out.push_str("; client_no_context_takeover");
                }
                if c.server_max_window_bits < 15 {
                    out.push_str(&format!("; server_max_window_bits={}", c.server_max_window_bits));
                }
            }
        }
        out
    }

    /// What both ends must agree on: (server_no_context_takeover, client_no_context_takeover,
    /// server_max_window_bits, client_max_window_bits).
    fn expected(&self) -> (bool, bool, u8, u8) {
        let (c, s) = (&self.client, &self.server);
        let client_bits = match self.style {
            OfferStyle::NoClientBits => 15,
            _ => c.client_max_window_bits.min(s.client_max_window_bits),
        };
        (
            c.server_no_context_takeover || s.server_no_context_takeover,
            c.client_no_context_takeover || s.client_no_context_takeover,
            c.server_max_window_bits.min(s.server_max_window_bits),
            client_bits,
        )
    }
}

/// Every combination: 16 flag sets × 4⁴ window sizes × 3 offer styles (fewer where a style does
/// not apply).
fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for flags in 0..16 {
        for a in BITS {
            for b in BITS {
                for c in BITS {
                    for d in BITS {
                        for style in
                            [OfferStyle::Library, OfferStyle::Explicit, OfferStyle::NoClientBits]
                        {
                            if style == OfferStyle::NoClientBits && c != 15 {
                                continue;
                            }
                            cases.push(Case::new(flags, [a, b, c, d], style));
                        }
                    }
                }
            }
        }
    }
    cases
}

/// A negotiated client/server pair with deflate on.
struct Session {
    pair: Pair,
    client_params: Params,
    /// Whether each end compresses (a window of 8 bits means it sends uncompressed).
    client_compresses: bool,
    server_compresses: bool,
}

impl Session {
    fn open(case: &Case) -> Self {
        // The exchange never drains the send queues while it feeds input, so the high-water
        // mark is off: under it every ping gets its own pong (above it the core answers only
        // the latest, as RFC 6455 §5.5.3 allows).
        Self::open_with(case, Config::default().write_buffer_high_water(usize::MAX))
    }

    fn open_with(case: &Case, base: Config) -> Self {
        let offer = case.offer();
        let ctx = format!("{case:?}, offer {offer:?}");
        let server_params = deflate::negotiate([offer.as_str()], &case.server)
            .unwrap_or_else(|| panic!("{ctx}: the server declined"));
        let response = server_params.to_response_header();
        let client_params = deflate::accept_response([response.as_str()], &case.client)
            .unwrap_or_else(|e| panic!("{ctx}: the client refused {response:?}: {e}"))
            .unwrap_or_else(|| panic!("{ctx}: the client saw no extension in {response:?}"));
        let expected = case.expected();
        for (who, p) in [("server", &server_params), ("client", &client_params)] {
            let got = (
                p.server_no_context_takeover(),
                p.client_no_context_takeover(),
                p.server_max_window_bits(),
                p.client_max_window_bits(),
            );
            assert_eq!(got, expected, "{ctx}: the {who}'s parameters (response {response:?})");
        }
        let client = Connection::new(Role::Client, base.clone().deflate(Some(case.client.clone())))
            .with_deflate(client_params);
        let server = Connection::new(Role::Server, base.deflate(Some(case.server.clone())))
            .with_deflate(server_params);
        assert!(client.is_deflate_enabled() && server.is_deflate_enabled());
        let (_, _, sbits, cbits) = expected;
        Self {
            pair: Pair { client, server },
            client_params,
            client_compresses: cbits >= 9,
            server_compresses: sbits >= 9,
        }
    }
}

#[test]
fn the_offer_always_gets_a_response_the_client_accepts() {
    // The response a server builds names exactly what was agreed; parsing it back gives the
    // same parameters (checked inside `Session::open_with`).
    let cases = all_cases();
    assert_eq!(cases.len(), 16 * 256 * 2 + 16 * 64);
    for case in &cases {
        let s = Session::open(case);
        let (_, _, _, cbits) = case.expected();
        assert_eq!(s.client_params.client_max_window_bits(), cbits);
    }
}

/// What one test sends, described compactly (proptest prints it on failure); the content is
/// generated from `seed`.
#[derive(Debug, Clone)]
enum Item {
    Data { from_client: bool, text: bool, shape: Shape, len: usize, seed: u64 },
    Ping { from_client: bool, len: usize, seed: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Empty,
    /// At most 8 bytes.
    Tiny,
    /// A unit of at most 48 bytes repeated (JSON-like for text): compresses at least 4:1
    /// in any window zlib can use.
    Repetitive,
    /// Random bytes, or random code points of every UTF-8 length for text.
    Random,
    /// Random lowercase letters: compresses a little on its own, a lot against its own copy.
    Letters,
}

/// One message to send and what to expect of it on the wire.
struct Sent {
    msg: Message,
    /// Must shrink at least 4:1 when compressed.
    compressible: bool,
}

impl Item {
    fn sent_by_client(&self) -> bool {
        match self {
            Self::Data { from_client, .. } | Self::Ping { from_client, .. } => *from_client,
        }
    }

    fn build(&self) -> Sent {
        match *self {
            Self::Ping { len, seed, .. } => Sent {
                msg: Message::Ping(Rng(seed).bytes(len.min(125)).into()),
                compressible: false,
            },
            Self::Data { text, shape, len, seed, .. } => {
                let mut rng = Rng(seed);
                let len = match shape {
                    Shape::Empty => 0,
                    Shape::Tiny => len % 9,
                    _ => len,
                };
                let compressible = shape == Shape::Repetitive && len >= 1024;
                let msg = if text {
                    Message::text(text_of(shape, len, &mut rng))
                } else {
                    Message::binary(bytes_of(shape, len, &mut rng))
                };
                Sent { msg, compressible }
            }
        }
    }
}

fn bytes_of(shape: Shape, len: usize, rng: &mut Rng) -> Vec<u8> {
    match shape {
        Shape::Empty => Vec::new(),
        Shape::Tiny | Shape::Random => rng.bytes(len),
        Shape::Letters => (0..len).map(|_| b'a' + rng.below(26) as u8).collect(),
        Shape::Repetitive => {
            let unit_len = 1 + rng.below(48);
            let unit = rng.bytes(unit_len);
            unit.iter().copied().cycle().take(len).collect()
        }
    }
}

/// Text of about `len` bytes (within 3 bytes: code points are not cut).
fn text_of(shape: Shape, len: usize, rng: &mut Rng) -> String {
    let mut s = String::with_capacity(len + 4);
    match shape {
        Shape::Empty => {}
        Shape::Letters => s.extend((0..len).map(|_| char::from(b'a' + rng.below(26) as u8))),
        Shape::Tiny | Shape::Random => {
            while s.len() < len {
                s.push(rng.char());
            }
        }
        Shape::Repetitive => {
            let mut i = 0;
            while s.len() < len {
                s.push_str(&format!(
                    "{{\"id\":{},\"name\":\"h\u{e9}llo \u{20ac}\u{1f600}\"}},",
                    i % 3
                ));
                i += 1;
            }
        }
    }
    s
}

/// A small deterministic generator (splitmix64), so that megabytes of content come from one
/// seed in the failure report.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A code point of a random UTF-8 length (1 to 4 bytes).
    fn char(&mut self) -> char {
        loop {
            let range = match self.below(4) {
                0 => 0x20..0x80,
                1 => 0x80..0x800,
                2 => 0x800..0x1_0000,
                _ => 0x1_0000..0x11_0000,
            };
            let cp = range.start + self.below((range.end - range.start) as usize) as u32;
            if let Some(c) = char::from_u32(cp) {
                return c;
            }
        }
    }
}

/// Feeds `wire` to `rx` in chunks of 1..=`max_chunk` bytes chosen by `rng`, alternating between
/// `handle_input` and writing into `recv_buf`; returns every event in order.
fn feed_chunked(rx: &mut Connection, wire: &[u8], rng: &mut Rng, max_chunk: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut pos = 0;
    let mut via_recv_buf = false;
    while pos < wire.len() {
        let n = (1 + rng.below(max_chunk)).min(wire.len() - pos);
        let chunk = &wire[pos..pos + n];
        if via_recv_buf {
            rx.recv_buf().extend_from_slice(chunk);
        } else {
            rx.handle_input(chunk);
        }
        via_recv_buf = !via_recv_buf;
        pos += n;
        events.extend(poll_all(rx));
    }
    events.extend(poll_all(rx));
    events
}

/// Checks the frames one end queued against the messages it sent (pings and pongs included),
/// in order. Returns the data frames.
fn check_wire(
    who: &str,
    frames: &[WireFrame],
    expected: &[&Sent],
    role: Role,
    compresses: bool,
) -> Vec<WireFrame> {
    assert_eq!(frames.len(), expected.len(), "{who}: frames queued");
    let mut data = Vec::new();
    for (i, (f, sent)) in frames.iter().zip(expected).enumerate() {
        let h = &f.header;
        let ctx = format!("{who}: frame {i} ({:?}, {} bytes)", h.opcode, h.payload_len);
        assert!(h.fin, "{ctx}: a message goes out as one frame");
        assert_eq!(h.mask.is_some(), role == Role::Client, "{ctx}: masking");
        let (opcode, payload) = match &sent.msg {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, &b[..]),
            Message::Ping(p) => (OpCode::Ping, &p[..]),
            Message::Pong(p) => (OpCode::Pong, &p[..]),
            other => unreachable!("closes are checked separately: {other:?}"),
        };
        assert_eq!(h.opcode, opcode, "{ctx}");
        if opcode.is_control() {
            // RFC 7692 §6: RSV1 belongs to data messages only.
            assert_eq!(h.rsv, 0, "{ctx}: RSV bits on a control frame");
            assert!(f.payload == payload, "{ctx}: control payload differs");
            continue;
        }
        if compresses {
            assert_eq!(h.rsv, RSV1, "{ctx}: compressed data frame without RSV1 alone");
            if sent.compressible {
                assert!(
                    h.payload_len as usize <= payload.len() / 4,
                    "{ctx}: {} bytes of repetitive data compressed to only {}",
                    payload.len(),
                    h.payload_len
                );
            }
        } else {
            // An 8-bit window: zlib cannot compress with it, so the message goes out as is.
            assert_eq!(h.rsv, 0, "{ctx}: RSV1 set although this end cannot compress");
            assert!(f.payload == payload, "{ctx}: an uncompressed payload was changed");
        }
        data.push(f.clone());
    }
    data
}

/// Compares what a receiver reported with what was sent, without printing megabytes.
fn check_events(who: &str, events: &[Event], expected: &[Message]) {
    let describe = |m: &Message| match m {
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    };
    let got: Vec<String> = events
        .iter()
        .map(|e| match e {
            Ok(m) => describe(m),
            Err(e) => format!("error {e:?}"),
        })
        .collect();
    let want: Vec<String> = expected.iter().map(describe).collect();
    assert_eq!(got, want, "{who}: the sequence of events");
    for (i, (event, msg)) in events.iter().zip(expected).enumerate() {
        if event.as_ref().ok() != Some(msg) {
            let (a, b) = (event.as_ref().map(Message::payload).unwrap_or_default(), msg.payload());
            let first = a.iter().zip(b).position(|(x, y)| x != y);
            panic!("{who}: message {i} ({}) differs, first at byte {first:?}", describe(msg));
        }
    }
}

/// Sends `items` both ways at once and checks every frame and every event, then closes.
/// Returns the data frames each end sent (client's, server's).
fn exchange(
    case: &Case,
    items: &[Item],
    chunk_seed: u64,
    max_chunk: usize,
) -> (Vec<WireFrame>, Vec<WireFrame>) {
    let mut s = Session::open(case);
    let mut rng = Rng(chunk_seed);
    let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
    for item in items {
        let sent = item.build();
        let (tx, list) = if item.sent_by_client() {
            (&mut s.pair.client, &mut from_client)
        } else {
            (&mut s.pair.server, &mut from_server)
        };
        tx.send(sent.msg.clone()).unwrap();
        list.push(sent);
    }
    let pongs = |sent: &[Sent]| -> Vec<Sent> {
        sent.iter()
            .filter_map(|s| match &s.msg {
                Message::Ping(p) => {
                    Some(Sent { msg: Message::Pong(p.clone()), compressible: false })
                }
                _ => None,
            })
            .collect()
    };
    let (answers_to_client, answers_to_server) = (pongs(&from_client), pongs(&from_server));

    // Client → server: the client's messages.
    let wire = take_transmit(&mut s.pair.client);
    let expected: Vec<&Sent> = from_client.iter().collect();
    let client_data =
        check_wire("client", &parse_frames(&wire), &expected, Role::Client, s.client_compresses);
    let events = feed_chunked(&mut s.pair.server, &wire, &mut rng, max_chunk);
    let msgs: Vec<Message> = expected.iter().map(|s| s.msg.clone()).collect();
    check_events("server", &events, &msgs);

    // Server → client: the server's messages, then its pongs to the client's pings.
    let wire = take_transmit(&mut s.pair.server);
    let expected: Vec<&Sent> = from_server.iter().chain(&answers_to_client).collect();
    let server_data =
        check_wire("server", &parse_frames(&wire), &expected, Role::Server, s.server_compresses);
    let events = feed_chunked(&mut s.pair.client, &wire, &mut rng, max_chunk);
    let msgs: Vec<Message> = expected.iter().map(|s| s.msg.clone()).collect();
    check_events("client", &events, &msgs);

    // Client → server: its pongs to the server's pings.
    let wire = take_transmit(&mut s.pair.client);
    let expected: Vec<&Sent> = answers_to_server.iter().collect();
    check_wire("client pongs", &parse_frames(&wire), &expected, Role::Client, s.client_compresses);
    let events = feed_chunked(&mut s.pair.server, &wire, &mut rng, max_chunk);
    let msgs: Vec<Message> = expected.iter().map(|s| s.msg.clone()).collect();
    check_events("server", &events, &msgs);

    // The closing handshake: close frames never carry RSV1 either.
    let bye = CloseFrame::new(CloseCode::NORMAL, "bye");
    s.pair.client.close(Some(bye.clone())).unwrap();
    let wire = take_transmit(&mut s.pair.client);
    let closes = parse_frames(&wire);
    assert!(matches!(&closes[..], [f] if f.header.opcode == OpCode::Close && f.header.rsv == 0));
    s.pair.server.handle_input(&wire);
    assert_eq!(poll_all(&mut s.pair.server), vec![Ok(Message::Close(Some(bye)))]);
    let wire = take_transmit(&mut s.pair.server);
    let reply = parse_frames(&wire);
    assert!(matches!(&reply[..], [f] if f.header.opcode == OpCode::Close && f.header.rsv == 0));
    assert_eq!(reply[0].close_code(), Some(1000));
    s.pair.client.handle_input(&wire);
    let events = poll_all(&mut s.pair.client);
    assert!(matches!(&events[..], [Ok(Message::Close(Some(f)))] if f.code == CloseCode::NORMAL));
    assert_eq!(s.pair.client.state(), State::Closed);
    assert_eq!(s.pair.server.state(), State::Closed);
    (client_data, server_data)
}

#[test]
fn every_parameter_combination_round_trips_and_honours_context_takeover() {
    // A fixed mix per combination: empty, tiny, compressible, random, multi-byte text, a ping,
    // and the same letters twice in a row to see whether each end keeps its context.
    let mut items = Vec::new();
    for from_client in [true, false] {
        let data = |text, shape, len, seed| Item::Data { from_client, text, shape, len, seed };
        items.extend([
            data(true, Shape::Empty, 0, 1),
            data(false, Shape::Tiny, 3, 2),
            data(true, Shape::Repetitive, 3000, 3),
            data(false, Shape::Random, 700, 4),
            data(true, Shape::Random, 500, 5),
            Item::Ping { from_client, len: 9, seed: 6 },
            data(false, Shape::Letters, 120, 7),
            data(false, Shape::Letters, 120, 7),
            data(false, Shape::Empty, 0, 8),
            data(false, Shape::Repetitive, 2000, 9),
        ]);
    }
    // Data frame indices (per end) of the repeated letters.
    let (first, second) = (5, 6);
    for (i, case) in all_cases().iter().enumerate() {
        let max_chunk = [1, 7, 300, usize::MAX][i % 4];
        let (client_data, server_data) = exchange(case, &items, i as u64, max_chunk);
        let (server_resets, client_resets, server_bits, client_bits) = case.expected();
        for (who, data, bits, resets) in [
            ("client", &client_data, client_bits, client_resets),
            ("server", &server_data, server_bits, server_resets),
        ] {
            if bits < 9 {
                // Sent uncompressed, which `exchange` checked.
                continue;
            }
            let (a, b) = (&data[first], &data[second]);
            if resets {
                // No context takeover: every message starts from an empty window, so the same
                // message compresses to the same bytes (RFC 7692 §7.1.1).
                assert!(a.payload == b.payload, "{case:?}: {who} kept its context");
            } else {
                // Context takeover: the copy refers back to the first one.
                assert!(
                    b.payload.len() * 2 < a.payload.len(),
                    "{case:?}: {who} did not use its context ({} then {} bytes)",
                    a.payload.len(),
                    b.payload.len()
                );
            }
        }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let bits = || prop::sample::select(BITS.to_vec());
    let style = prop::sample::select(vec![
        OfferStyle::Library,
        OfferStyle::Explicit,
        OfferStyle::NoClientBits,
    ]);
    (0u8..16, [bits(), bits(), bits(), bits()], style)
        .prop_map(|(flags, bits, style)| Case::new(flags, bits, style))
}

fn item_strategy() -> impl Strategy<Value = Item> {
    let len = prop_oneof![4 => 0usize..64, 3 => 64usize..8192, 1 => 8192usize..=200 << 10];
    let shape = prop::sample::select(vec![
        Shape::Empty,
        Shape::Tiny,
        Shape::Repetitive,
        Shape::Random,
        Shape::Letters,
    ]);
    prop_oneof![
        8 => (any::<bool>(), any::<bool>(), shape, len, any::<u64>()).prop_map(
            |(from_client, text, shape, len, seed)| Item::Data { from_client, text, shape, len, seed }
        ),
        1 => (any::<bool>(), 0usize..=125, any::<u64>())
            .prop_map(|(from_client, len, seed)| Item::Ping { from_client, len, seed }),
    ]
}

// 256 cases by default; set PROPTEST_CASES for a longer run.
proptest! {
    #[test]
    fn messages_arrive_intact_under_any_parameters_and_chunking(
        case in case_strategy(),
        items in vec(item_strategy(), 0..12),
        chunk_seed: u64,
        max_chunk in prop_oneof![1usize..=16, 1usize..=4096, 1usize..=256 << 10],
    ) {
        exchange(&case, &items, chunk_seed, max_chunk);
    }
}

// ---------------------------------------------------------------------------------------------
// What a peer may get wrong

/// The parameters a plain offer (`permessage-deflate`) negotiates with context takeover (so
/// the codec kept on the connection is what these tests exercise; the borrowed one of the
/// default has its own tests in `deflate.rs` and below).
fn default_params() -> Params {
    deflate::negotiate([deflate::NAME], &takeover()).unwrap()
}

/// Context takeover both ways.
fn takeover() -> DeflateConfig {
    DeflateConfig::default().context_takeover(true)
}

fn deflate_conn(role: Role, config: Config) -> Connection {
    Connection::new(role, config.deflate(Some(takeover()))).with_deflate(default_params())
}

/// Raw DEFLATE of `data`, sync-flushed with the 4-byte tail removed (RFC 7692 §7.2.1), by
/// flate2 directly rather than by the code under test.
fn compress(data: &[u8]) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(data).unwrap();
    enc.flush().unwrap();
    let mut out = enc.get_ref().clone();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "a sync flush ends with the empty stored block");
    out.truncate(out.len() - 4);
    out
}

/// Feeds `input` to `conn` and expects exactly one error, `expected`, with a close frame of
/// `code` queued and nothing reported afterwards.
fn expect_failure(conn: &mut Connection, input: &[u8], expected: &ProtocolError, code: u16) {
    conn.handle_input(input);
    let events = poll_all(conn);
    assert_eq!(events, vec![Err(expected.clone())]);
    assert_eq!(expected.close_code().0, code);
    let closes = sent_closes(conn);
    assert_eq!(closes.len(), 1, "one close frame queued");
    assert_eq!(closes[0].close_code(), Some(code));
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.poll_message(), None, "the error is reported once");
}

#[test]
fn compression_bomb_stops_at_max_message_size() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = compress(&zeros);
    assert!(bomb.len() < 128 << 10, "64 MiB of zeros compress to {} bytes", bomb.len());
    let config = Config::default().max_message_size(1 << 20);

    // In one frame, and spread over three, binary and text: the limit counts the inflated whole.
    let third = bomb.len() / 3;
    for opcode in [BINARY, TEXT] {
        for fragmented in [false, true] {
            let mut input = Vec::new();
            if fragmented {
                input.extend(raw_frame(RSV1_BIT | opcode, Some(KEY), &bomb[..third]));
                input.extend(raw_frame(CONT, Some(KEY), &bomb[third..2 * third]));
                input.extend(raw_frame(FIN | CONT, Some(KEY), &bomb[2 * third..]));
            } else {
                input.extend(raw_frame(FIN | RSV1_BIT | opcode, Some(KEY), &bomb));
            }
            let mut server = deflate_conn(Role::Server, config.clone());
            server.handle_input(&input);
            let events = poll_all(&mut server);
            assert!(
                matches!(
                    &events[..],
                    [Err(ProtocolError::MessageTooLarge { max, .. })] if *max == 1 << 20
                ),
                "opcode {opcode}, fragmented {fragmented}: {events:?}"
            );
            let closes = sent_closes(&mut server);
            assert_eq!(closes.len(), 1);
            assert_eq!(closes[0].close_code(), Some(1009));
            assert_eq!(server.state(), State::Closed);
        }
    }
}

#[test]
fn inflated_size_limit_is_exact() {
    // A message that inflates to exactly the limit is delivered; one byte more closes with 1009.
    let limit = 64 << 10;
    for (len, ok) in [(limit - 1, true), (limit, true), (limit + 1, false), (4 * limit, false)] {
        let data = vec![b'x'; len];
        let mut client = deflate_conn(Role::Client, Config::default().max_message_size(limit));
        client.handle_input(&raw_frame(FIN | RSV1_BIT | BINARY, None, &compress(&data)));
        let events = poll_all(&mut client);
        if ok {
            assert_eq!(events, vec![Ok(Message::binary(data))], "{len} bytes");
            assert_eq!(client.state(), State::Open);
        } else {
            assert!(
                matches!(&events[..], [Err(ProtocolError::MessageTooLarge { max, .. })] if *max == limit),
                "{len} bytes: {events:?}"
            );
            assert_eq!(sent_closes(&mut client)[0].close_code(), Some(1009));
        }
    }
}

#[test]
fn rsv1_on_a_continuation_frame_is_a_protocol_error() {
    // RFC 7692 §6.1: RSV1 is set on the first frame of a message only.
    let hello = compress(b"Hello, continuation");
    for first_compressed in [true, false] {
        let first_b0 = if first_compressed { RSV1_BIT | TEXT } else { TEXT };
        let first = if first_compressed { &hello[..4] } else { &b"Hello"[..] };
        let mut input = raw_frame(first_b0, Some(KEY), first);
        input.extend(raw_frame(FIN | RSV1_BIT | CONT, Some(KEY), &hello[4..]));
        let mut server = deflate_conn(Role::Server, Config::default());
        expect_failure(&mut server, &input, &ProtocolError::ReservedBits(RSV1), 1002);
    }
}

#[test]
fn rsv1_on_a_control_frame_is_a_protocol_error() {
    // RFC 7692 §6: the extension defines RSV1 for data frames only.
    for opcode in [PING, PONG, CLOSE] {
        let payload: &[u8] = if opcode == CLOSE { &[0x03, 0xe8] } else { b"ping" };
        for role in [Role::Server, Role::Client] {
            let mask = (role == Role::Server).then_some(KEY);
            let mut conn = deflate_conn(role, Config::default());
            let input = raw_frame(FIN | RSV1_BIT | opcode, mask, payload);
            expect_failure(&mut conn, &input, &ProtocolError::ReservedBits(RSV1), 1002);
        }
    }
}

#[test]
fn rsv1_without_the_extension_is_a_protocol_error() {
    let payload = compress(b"Hello");
    // Not configured at all, and configured but not negotiated (the client did not offer it).
    let configs = [Config::default(), Config::default().deflate(Some(DeflateConfig::default()))];
    for config in configs {
        for opcode in [TEXT, BINARY] {
            let mut server = Connection::new(Role::Server, config.clone());
            assert!(!server.is_deflate_enabled());
            let input = raw_frame(FIN | RSV1_BIT | opcode, Some(KEY), &payload);
            expect_failure(&mut server, &input, &ProtocolError::ReservedBits(RSV1), 1002);
        }
    }
    // RSV2 and RSV3 stay reserved with the extension on.
    for (bit, rsv) in [(0x20, 0b010), (0x10, 0b001)] {
        let mut server = deflate_conn(Role::Server, Config::default());
        let input = raw_frame(FIN | bit | TEXT, Some(KEY), b"Hello");
        expect_failure(&mut server, &input, &ProtocolError::ReservedBits(rsv), 1002);
    }
}

#[test]
fn undecodable_compressed_data_closes_with_1007() {
    let garbage: [(&str, &[u8]); 4] = [
        // BFINAL with the reserved block type 11.
        ("reserved block type", &[0xff, 0xff, 0xff, 0xff]),
        // A stored block whose LEN and NLEN disagree.
        ("stored length mismatch", &[0x00, 0x05, 0x00, 0x00, 0x00, b'H']),
        // §7.2.3.2's second "Hello" without the first: a distance back into nothing.
        ("distance too far back", &[0xf2, 0x00, 0x11, 0x00, 0x00]),
        ("random bytes", &[0x1b, 0x7e, 0xa4, 0x55, 0x00, 0x31, 0xc9, 0xee, 0x02, 0x9a]),
    ];
    for (what, payload) in garbage {
        for opcode in [TEXT, BINARY] {
            let mut server = deflate_conn(Role::Server, Config::default());
            let input = raw_frame(FIN | RSV1_BIT | opcode, Some(KEY), payload);
            server.handle_input(&input);
            let events = poll_all(&mut server);
            assert_eq!(events.len(), 1, "{what}: {events:?}");
            let err = events[0].as_ref().expect_err(what);
            assert_eq!(err.close_code().0, 1007, "{what}: {err:?}");
            assert_eq!(sent_closes(&mut server)[0].close_code(), Some(1007), "{what}");
        }
    }
}

#[test]
fn data_after_the_final_block_closes_with_1007() {
    // RFC 7692 §7.2.2: the payload, with the tail appended, is decompressed as DEFLATE; a block
    // with BFINAL set ends that stream (RFC 1951 §3.2.3), so whatever the sender put after it
    // would never be decompressed: the message is malformed, not silently shortened.
    // §7.2.3.4's "Hello" in a block with BFINAL set, without its closing 0x00.
    let hello_final: &[u8] = &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let stored_world: &[u8] = &[0x00, 0x05, 0x00, 0xfa, 0xff, b'W', b'o', b'r', b'l', b'd', 0x00];
    let after: [(&str, Vec<u8>); 5] = [
        ("a stored block", [hello_final, stored_world].concat()),
        ("a compressed block", [hello_final, &compress(b" world")].concat()),
        ("another final block", [hello_final, hello_final].concat()),
        ("a stray byte", [hello_final, &[0x01]].concat()),
        ("two empty-block headers", [hello_final, &[0x00, 0x00]].concat()),
    ];
    for (what, payload) in after {
        for fragmented in [false, true] {
            let mut input = Vec::new();
            if fragmented {
                input.extend(raw_frame(RSV1_BIT | TEXT, Some(KEY), &payload[..hello_final.len()]));
                input.extend(raw_frame(FIN | CONT, Some(KEY), &payload[hello_final.len()..]));
            } else {
                input.extend(raw_frame(FIN | RSV1_BIT | TEXT, Some(KEY), &payload));
            }
            let mut server = deflate_conn(Role::Server, Config::default());
            server.handle_input(&input);
            let events = poll_all(&mut server);
            assert_eq!(
                events,
                vec![Err(ProtocolError::InvalidCompressedData)],
                "{what}, fragmented {fragmented}"
            );
            assert_eq!(sent_closes(&mut server)[0].close_code(), Some(1007), "{what}");
        }
    }
}

#[test]
fn a_final_block_may_end_the_message_with_or_without_the_empty_block_header() {
    // §7.2.3.4: after a BFINAL block, a sender adds one 0x00 (the header bits of the empty
    // stored block that the receiver's tail completes); a final block alone, or a final empty
    // stored block completed by the tail itself, leaves nothing of the sender's undecoded.
    let hello_final: &[u8] = &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let valid: [(&str, Vec<u8>, &str); 3] = [
        ("§7.2.3.4 as printed", [hello_final, &[0x00]].concat(), "Hello"),
        ("without the 0x00", hello_final.to_vec(), "Hello"),
        ("a final empty stored block", vec![0x01], ""),
    ];
    for (what, payload, text) in valid {
        let input = [
            raw_frame(FIN | RSV1_BIT | TEXT, Some(KEY), &payload),
            // The next message starts a fresh stream.
            raw_frame(FIN | RSV1_BIT | TEXT, Some(KEY), &compress(b"next")),
        ]
        .concat();
        for split in [1, input.len()] {
            let mut server = deflate_conn(Role::Server, Config::default());
            let mut events = Vec::new();
            for chunk in input.chunks(split) {
                server.handle_input(chunk);
                events.extend(poll_all(&mut server));
            }
            assert_eq!(
                events,
                vec![Ok(Message::text(text)), Ok(Message::text("next"))],
                "{what}, split {split}"
            );
        }
    }
}

#[test]
fn compressed_text_that_inflates_to_invalid_utf8_closes_with_1007() {
    let payload = compress(b"caf\xc3\xa9 \xff\xfe done");
    let mut server = deflate_conn(Role::Server, Config::default());
    let input = raw_frame(FIN | RSV1_BIT | TEXT, Some(KEY), &payload);
    expect_failure(&mut server, &input, &ProtocolError::InvalidUtf8, 1007);
    // The same bytes as binary are fine.
    let mut server = deflate_conn(Role::Server, Config::default());
    server.handle_input(&raw_frame(FIN | RSV1_BIT | BINARY, Some(KEY), &payload));
    assert_eq!(poll_all(&mut server), vec![Ok(Message::binary(&b"caf\xc3\xa9 \xff\xfe done"[..]))]);
}

#[test]
fn compressed_text_inflating_to_invalid_utf8_closes_with_1007_in_any_framing_and_reads() {
    // Inflated text is checked whole after inflation (the incremental validator sees only the
    // compressed bytes, which it skips): whatever the fragments and the reads, invalid text
    // must close with 1007, and the same text made valid must come through.
    let bad: [&[u8]; 4] = [b"\xff", b"\xed\xa0\x80", b"\xe2\x82(", b"\xe2\x82"];
    for seq in bad {
        for at_end in [false, true] {
            let tail: &[u8] = if at_end { b"" } else { b" done" };
            let text = [b"caf\xc3\xa9 ", seq, tail].concat();
            let valid = [b"caf\xc3\xa9 \xe2\x82\xac", tail].concat();
            for (plain, expected) in [(&text, None), (&valid, std::str::from_utf8(&valid).ok())] {
                let payload = compress(plain);
                // One frame, then two fragments cut at every byte of the compressed payload.
                let mut framings = vec![raw_frame(FIN | RSV1_BIT | TEXT, Some(KEY), &payload)];
                for cut in 0..=payload.len() {
                    let mut input = raw_frame(RSV1_BIT | TEXT, Some(KEY), &payload[..cut]);
                    input.extend(raw_frame(FIN | CONT, Some(KEY), &payload[cut..]));
                    framings.push(input);
                }
                for input in &framings {
                    for cut in 0..=input.len() {
                        let ctx = format!("{seq:x?}, at end {at_end}, read cut at {cut}");
                        let mut server = deflate_conn(Role::Server, Config::default());
                        server.handle_input(&input[..cut]);
                        let mut events = poll_all(&mut server);
                        server.handle_input(&input[cut..]);
                        events.extend(poll_all(&mut server));
                        match expected {
                            Some(t) => assert_eq!(events, vec![Ok(Message::text(t))], "{ctx}"),
                            None => {
                                assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)], "{ctx}");
                                let closes = sent_closes(&mut server);
                                assert_eq!(closes[0].close_code(), Some(1007), "{ctx}");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn large_compressed_text_with_invalid_utf8_closes_with_1007() {
    // 256 KiB of mixed UTF-8, compressed, in three fragments and 16 KiB reads: the inflated
    // bytes hold one bad sequence near the end.
    let alphabet = ['a', 'µ', '€', '𝄞', '"'];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 256 << 10 {
        text.push(alphabet[i % alphabet.len()]);
        i += 1;
    }
    for bad in [&b"\xff"[..], b"\xed\xa0\x80"] {
        for plain in [text.clone().into_bytes(), {
            let mut b = text.clone().into_bytes();
            let at = b.len() - 100;
            b[at..at + bad.len()].copy_from_slice(bad);
            b
        }] {
            let payload = compress(&plain);
            let (a, b) = (payload.len() / 3, 2 * payload.len() / 3);
            let mut input = raw_frame(RSV1_BIT | TEXT, Some(KEY), &payload[..a]);
            input.extend(raw_frame(CONT, Some(KEY), &payload[a..b]));
            input.extend(raw_frame(FIN | CONT, Some(KEY), &payload[b..]));
            let mut server = deflate_conn(Role::Server, Config::default());
            let mut events = Vec::new();
            for piece in input.chunks(16 << 10) {
                server.handle_input(piece);
                events.extend(poll_all(&mut server));
            }
            match String::from_utf8(plain) {
                Ok(t) => assert_eq!(events, vec![Ok(Message::text(t))]),
                Err(_) => {
                    assert_eq!(events, vec![Err(ProtocolError::InvalidUtf8)], "{bad:x?}");
                    assert_eq!(sent_closes(&mut server)[0].close_code(), Some(1007));
                }
            }
        }
    }
}

#[test]
fn fragmented_compressed_message_reassembles() {
    // RFC 7692 §6.1: RSV1 on the first frame only; the payloads concatenate to one DEFLATE
    // stream. Cuts fall anywhere, including inside a multi-byte character's compressed bits,
    // and a ping may come between fragments.
    let text = "fragments: h\u{e9}llo w\u{f6}rld \u{20ac}\u{1f600} ".repeat(40);
    let payload = compress(text.as_bytes());
    let n = payload.len();
    for cuts in [[0, 0], [1, 2], [n / 3, 2 * n / 3], [n - 1, n - 1], [0, n]] {
        let mut input = raw_frame(RSV1_BIT | TEXT, Some(KEY), &payload[..cuts[0]]);
        input.extend(raw_frame(CONT, Some(KEY), &payload[cuts[0]..cuts[1]]));
        input.extend(raw_frame(FIN | PING, Some(KEY), b"between"));
        input.extend(raw_frame(FIN | CONT, Some(KEY), &payload[cuts[1]..]));
        for split in [1, 5, input.len()] {
            let mut server = deflate_conn(Role::Server, Config::default());
            let mut events = Vec::new();
            for chunk in input.chunks(split) {
                server.handle_input(chunk);
                events.extend(poll_all(&mut server));
            }
            assert_eq!(
                events,
                vec![Ok(Message::Ping("between".into())), Ok(Message::text(text.as_str()))],
                "cuts {cuts:?}, split {split}"
            );
        }
    }
}

#[test]
fn rfc_7692_hello_vectors() {
    // Frames a server sends (unmasked) to a client, from RFC 7692 §7.2.3; each is "Hello".
    let vectors: [(&str, &[&[u8]]); 4] = [
        // §7.2.3.1: one compressed message in one frame...
        ("7.2.3.1", &[&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]]),
        // ... and in two fragments.
        (
            "7.2.3.1 fragmented",
            &[&[0x41, 0x03, 0xf2, 0x48, 0xcd], &[0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00]],
        ),
        // §7.2.3.3: a stored (uncompressed) DEFLATE block.
        (
            "7.2.3.3",
            &[&[0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]],
        ),
        // §7.2.3.5: two DEFLATE blocks in one message.
        (
            "7.2.3.5",
            &[&[
                0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
                0x00,
            ]],
        ),
    ];
    for (section, frames) in vectors {
        let input = frames.concat();
        for split in 1..=input.len() {
            let mut client = deflate_conn(Role::Client, Config::default());
            let mut events = Vec::new();
            for chunk in input.chunks(split) {
                client.handle_input(chunk);
                events.extend(poll_all(&mut client));
            }
            assert_eq!(events, vec![Ok(Message::text("Hello"))], "§{section}, split {split}");
        }
    }

    // §7.2.3.4: a block with BFINAL set ends the stream; the next message starts a new one.
    let mut client = deflate_conn(Role::Client, Config::default());
    client.handle_input(&[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]);
    client.handle_input(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(poll_all(&mut client), vec![Ok(Message::text("Hello")), Ok(Message::text("Hello"))]);

    // §7.2.3.2: with context takeover, a second "Hello" refers back to the first.
    let mut client = deflate_conn(Role::Client, Config::default());
    client.handle_input(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    client.handle_input(&[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
    assert_eq!(poll_all(&mut client), vec![Ok(Message::text("Hello")), Ok(Message::text("Hello"))]);
    assert_eq!(take_transmit(&mut client), b"", "nothing to answer");
}

#[test]
fn unlimited_message_size_inflates() {
    // `usize::MAX` as the limit: nothing is too large, and nothing overflows.
    let data = vec![7u8; 1 << 20];
    let mut client = deflate_conn(Role::Client, Config::default().max_message_size(usize::MAX));
    client.handle_input(&raw_frame(FIN | RSV1_BIT | BINARY, None, &compress(&data)));
    assert_eq!(poll_all(&mut client), vec![Ok(Message::binary(data))]);
}

#[test]
fn min_size_and_level_decide_what_is_compressed() {
    // Below `min_size` a message goes out as is (RSV1 clear); at and above it, compressed. Every
    // level, including 0 (stored blocks, larger than the input), is understood by the peer.
    for level in [0, 1, 6, 9] {
        let mut config = DeflateConfig::default();
        config.min_size = 100;
        config.level = level;
        let case = Case { client: config.clone(), server: config, style: OfferStyle::Library };
        let mut s = Session::open(&case);
        for (len, compressed) in [(0, false), (99, false), (100, true), (5000, true)] {
            let msg = Message::text("ab".repeat(len / 2) + &"c".repeat(len % 2));
            for from_client in [true, false] {
                let ctx = format!("level {level}, {len} bytes, from client {from_client}");
                let Pair { client, server } = &mut s.pair;
                let (tx, rx) = if from_client { (client, server) } else { (server, client) };
                tx.send(msg.clone()).unwrap();
                let wire = take_transmit(tx);
                let frames = parse_frames(&wire);
                assert_eq!(frames.len(), 1, "{ctx}");
                assert_eq!(frames[0].header.rsv, if compressed { RSV1 } else { 0 }, "{ctx}");
                if level > 0 && len >= 5000 {
                    assert!(frames[0].payload.len() < len / 10, "{ctx}: barely compressed");
                }
                rx.handle_input(&wire);
                assert_eq!(poll_all(rx), vec![Ok(msg.clone())], "{ctx}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The default: no context takeover both ways, against the offers real clients send

/// Chromium's offer, which Firefox and Python `websockets` (17.4) send byte for byte too.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A chat message of about 200 bytes with the keys every message repeats.
fn chat(i: usize) -> String {
    format!(
        "{{\"type\":\"message\",\"room\":\"general\",\"user\":{{\"id\":{},\"name\":\"user-{}\"}},\
         \"text\":\"hello everyone, this is message number {i} of the day\",\"ts\":{}}}",
        i % 97,
        i % 97,
        1_700_000_000_000u64 + i as u64
    )
}

/// A server with `server` config negotiating with a client that offered `offer` and runs with
/// `client` config (the browser's own behaviour: context takeover unless told otherwise).
fn negotiated_pair(offer: &str, server: &DeflateConfig, client: &DeflateConfig) -> (Pair, Params) {
    let server_params = deflate::negotiate([offer], server).expect("the server accepts");
    let response = server_params.to_response_header();
    let client_params = deflate::accept_response([response.as_str()], client)
        .expect("the client accepts the answer")
        .expect("an answer");
    let base = Config::default().write_buffer_high_water(usize::MAX);
    let pair = Pair {
        client: Connection::new(Role::Client, base.clone().deflate(Some(client.clone())))
            .with_deflate(client_params),
        server: Connection::new(Role::Server, base.deflate(Some(server.clone())))
            .with_deflate(server_params),
    };
    (pair, server_params)
}

/// Sends `messages` from `tx` to `rx`, delivered in reads of the sizes in `reads` (cycled),
/// and returns the payloads of the data frames on the wire.
fn send_split(
    tx: &mut Connection,
    rx: &mut Connection,
    messages: &[Message],
    reads: &[usize],
) -> Vec<Vec<u8>> {
    for m in messages {
        tx.send(m.clone()).unwrap();
    }
    let wire = take_transmit(tx);
    let frames = parse_frames(&wire);
    let mut events = Vec::new();
    let (mut pos, mut i) = (0, 0);
    while pos < wire.len() {
        let n = reads[i % reads.len()].min(wire.len() - pos);
        rx.handle_input(&wire[pos..pos + n]);
        events.extend(poll_all(rx));
        pos += n;
        i += 1;
    }
    let expected: Vec<Event> = messages.iter().cloned().map(Ok).collect();
    assert_eq!(events, expected);
    for f in &frames {
        assert_eq!(f.header.rsv, RSV1, "every message here is compressed");
    }
    frames.into_iter().map(|f| f.payload).collect()
}

#[test]
fn default_server_answers_browser_and_python_offers_without_context_takeover() {
    let server = DeflateConfig::default();
    // What a browser does: context takeover of its own unless the server says otherwise.
    let browser = DeflateConfig::default().context_takeover(true);
    let (mut pair, params) = negotiated_pair(BROWSER_OFFER, &server, &browser);
    assert_eq!(
        params.to_response_header(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    // The same small message twice each way, read in 1 to 13 bytes at a time: without context
    // takeover both copies compress to the same bytes (each starts from an empty window).
    let msgs = [Message::text(chat(1)), Message::text(chat(1)), Message::binary(vec![9u8; 70_000])];
    let reads = [1, 2, 3, 5, 8, 13];
    let Pair { client, server } = &mut pair;
    let up = send_split(client, server, &msgs, &reads);
    let down = send_split(server, client, &msgs, &reads);
    for wire in [&up, &down] {
        assert_eq!(wire[0], wire[1], "a second copy referred back to the first");
        assert!(wire[2].len() < 1000, "70,000 equal bytes compressed to {}", wire[2].len());
    }
}

#[test]
fn small_json_messages_round_trip_in_both_modes_and_takeover_compresses_better() {
    let msgs: Vec<Message> = (0..200).map(|i| Message::text(chat(i))).collect();
    let plain: usize = msgs.iter().map(|m| m.payload().len()).sum();
    let mut sizes = Vec::new();
    for takeover in [false, true] {
        let config = DeflateConfig::default().context_takeover(takeover);
        let (mut pair, params) = negotiated_pair(BROWSER_OFFER, &config, &config);
        assert_eq!(params.server_no_context_takeover(), !takeover);
        assert_eq!(params.client_no_context_takeover(), !takeover);
        let Pair { client, server } = &mut pair;
        let up: usize = send_split(client, server, &msgs, &[4096]).iter().map(Vec::len).sum();
        let down: usize = send_split(server, client, &msgs, &[4096]).iter().map(Vec::len).sum();
        assert!(up < plain && down < plain, "{takeover}: {up} {down} of {plain}");
        sizes.push(down);
    }
    // Context takeover is what makes small messages small (keys repeated across messages).
    assert!(sizes[1] * 2 < sizes[0], "with takeover {} bytes, without {}", sizes[1], sizes[0]);
}

#[test]
fn fragmented_compressed_message_split_across_reads_inflates_without_context_takeover() {
    // A compressed message in three frames (RSV1 on the first only, RFC 7692 §6.1), each read
    // a few bytes at a time, with a ping between the fragments and an uncompressed message
    // streamed the other way (chunks are never compressed) while it is in flight.
    let config = DeflateConfig::default();
    let (mut pair, _) = negotiated_pair(BROWSER_OFFER, &config, &config);
    let text = chat(7).repeat(30);
    let mut compressed = compress(text.as_bytes());
    assert!(compressed.len() > 30);
    let third = compressed.len() / 3;
    let rest = compressed.split_off(third);
    let (middle, last) = rest.split_at(third);
    let mut wire = raw_frame(RSV1_BIT | TEXT, Some(KEY), &compressed);
    wire.extend(raw_frame(PING | FIN, Some(KEY), b"between"));
    wire.extend(raw_frame(CONT, Some(KEY), middle));
    wire.extend(raw_frame(FIN | CONT, Some(KEY), last));
    let server = &mut pair.server;
    let mut events = Vec::new();
    for (i, piece) in wire.chunks(5).enumerate() {
        server.handle_input(piece);
        events.extend(poll_all(server));
        if i == 3 {
            server.send_chunk(wsx_proto::Chunk::binary(vec![1u8; 100], true, false)).unwrap();
        }
    }
    server.send_chunk(wsx_proto::Chunk::binary(vec![2u8; 100], false, true)).unwrap();
    assert_eq!(
        events,
        vec![Ok(Message::Ping(b"between"[..].into())), Ok(Message::text(text.clone()))]
    );
    let sent = parse_frames(&take_transmit(server));
    let data: Vec<_> = sent.iter().filter(|f| f.header.opcode != OpCode::Pong).collect();
    assert_eq!(data.len(), 2);
    assert!(data.iter().all(|f| f.header.rsv == 0), "a streamed message went out compressed");
    // The same message again inflates the same: nothing was kept from the first.
    server.handle_input(&raw_frame(
        FIN | RSV1_BIT | TEXT,
        Some(KEY),
        &[&compressed[..], middle, last].concat(),
    ));
    assert_eq!(poll_all(server), vec![Ok(Message::text(text))]);
}
