//! Microbenchmarks of the hot paths: masking, header decoding, UTF-8 validation, deflate, and
//! parsing whole messages out of a read buffer. `cargo bench -p wsx-proto`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsx_proto::deflate::{self, Deflate, DeflateConfig};
use wsx_proto::frame::FrameHeader;
use wsx_proto::mask::apply_mask;
use wsx_proto::utf8::Utf8Validator;
use wsx_proto::{Config, Connection, Message, Role};

const SIZES: [usize; 4] = [16, 1024, 64 << 10, 1 << 20];

fn masking(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for size in SIZES {
        let mut buf = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("wsx", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1))
        });
        g.bench_with_input(BenchmarkId::new("byte_loop", size), &size, |b, _| {
            b.iter(|| {
                let key = [1u8, 2, 3, 4];
                for (i, x) in black_box(&mut buf).iter_mut().enumerate() {
                    *x ^= key[(i + 1) & 3];
                }
            })
        });
    }
    g.finish();
}

fn header_decode(c: &mut Criterion) {
    let frames: [&[u8]; 3] = [
        &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d],
        &[0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4],
        &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
    ];
    c.bench_function("frame_header_decode", |b| {
        b.iter(|| {
            for f in frames {
                black_box(FrameHeader::decode(black_box(f)).ok());
            }
        })
    });
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε ".repeat(64 << 10 >> 5);
    let bytes = text.as_bytes();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("validator_feed_4k_pieces", |b| {
        b.iter(|| {
            let mut v = Utf8Validator::new();
            for piece in bytes.chunks(4093) {
                v.feed(black_box(piece)).unwrap();
            }
            v.finish().unwrap();
        })
    });
    g.bench_function("std_from_utf8", |b| b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok()));
    g.finish();
}

fn json_like(len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{i},\"user\":\"user{}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b{}\"]}},",
            i % 97,
            i * 7 % 1000,
            i % 100,
            i % 13
        ));
        i += 1;
    }
    out.truncate(len);
    out.into_bytes()
}

fn deflate_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("deflate_64k_json");
    let data = json_like(64 << 10);
    // As measured before no context takeover became the default: the compressor kept.
    let config = DeflateConfig::default().context_takeover(true);
    let params = deflate::negotiate(["permessage-deflate"], &config).expect("accepted");
    g.throughput(Throughput::Bytes(data.len() as u64));
    let mut tx = Deflate::new(Role::Server, &params, &config);
    g.bench_function("compress", |b| b.iter(|| tx.compress(black_box(&data))));
    // Each inflate needs the matching context, so compress without context takeover.
    let no_takeover = config.clone().server_no_context_takeover(true);
    let p2 = deflate::negotiate(["permessage-deflate; server_no_context_takeover"], &no_takeover)
        .expect("accepted");
    let compressed = Deflate::new(Role::Server, &p2, &no_takeover).compress(&data).expect("big");
    let mut rx = Deflate::new(Role::Client, &p2, &no_takeover);
    g.bench_function("decompress", |b| {
        b.iter(|| rx.decompress(black_box(&compressed), 1 << 20).expect("valid"))
    });
    g.finish();
    eprintln!("64 KiB JSON-like compresses to {} bytes", compressed.len());
}

/// Parses a read buffer full of small masked messages, as a server does under load.
fn parse_messages(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for size in [20usize, 1024, 16 << 10] {
        let mut client = Connection::new(Role::Client, Config::default());
        let count = (256 << 10) / (size + 6);
        for _ in 0..count {
            client.send(Message::binary(vec![7u8; size])).unwrap();
        }
        let out = client.transmit();
        let wire = bytes::Buf::copy_to_bytes(out, bytes::Buf::remaining(out));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::new("server_messages", size), &size, |b, _| {
            b.iter(|| {
                let mut server = Connection::new(Role::Server, Config::default());
                server.handle_input(&wire);
                let mut n = 0;
                while let Some(m) = server.poll_message() {
                    black_box(m.unwrap());
                    n += 1;
                }
                assert_eq!(n, count);
            })
        });
    }
    g.finish();
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, masking, header_decode, utf8, deflate_codec, parse_messages);
}
criterion_main!(group::benches);
