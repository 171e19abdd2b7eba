//! Masking and unmasking of payloads (RFC 6455 §5.3).
//!
//! The XOR is done eight bytes at a time with `u64` arithmetic on safe slices; the compiler turns
//! the 32-byte inner loop into vector instructions. The masking itself uses no `unsafe`: a
//! benchmark has to show that an explicit SIMD path pays before one is added here.
//!
//! Measured (`cargo bench -p wsx-proto -- mask`, 2-core Xeon with AVX2/AVX-512, quiet machine):
//! 61.7 GiB/s (66 GB/s) at 64 KiB and 1 MiB, 50.8 GiB/s at 1 KiB, against 4.7 GiB/s for a byte
//! loop. The same loop compiled for AVX2 behind run-time detection, and a 128-byte-pattern AVX2
//! variant, both measured 59-61 GiB/s: the loop is bound by memory, not by instruction width,
//! so neither earned its `unsafe` call.
//!
//! Payloads under 32 bytes go four bytes at a time with the key rotated by integer shifts:
//! 3.0 ns at 16 B against 6.5 ns for the byte loop (and 13.4 ns for the byte loop with the key
//! rotated by `<[u8]>::rotate_left`, an out-of-line call). Re-measured on a busier day of the
//! same machine: 57.7 GB/s at 64 KiB, 58.5 GB/s at 1 KiB.
//!
//! This module is also the crate's one place for `unsafe` (see `docs/ARCHITECTURE.md`), and it
//! holds one block: `validated_text`, which wraps text the receive path has already validated
//! piece by piece as a `ByteString` without a second UTF-8 pass. Measured (callgrind,
//! `examples/recv_text`, one 1 MiB text message in 64 KiB reads through `poll_message`):
//! 1.66 M → 1.45 M instructions for ASCII, 12.85 M → 2.19 M for mixed one- to four-byte UTF-8
//! (the second pass was `std::str::from_utf8`, which `ByteString::try_from` uses); streaming
//! the same message costs 1.45 M and 2.46 M.
#![deny(clippy::undocumented_unsafe_blocks)]

use bytes::Bytes;
use bytestring::ByteString;

/// XORs `buf` in place with the 4-byte masking `key`, as if `buf` started at byte `offset` of
/// the masked payload. Masking and unmasking are the same operation.
///
/// `offset` lets a payload be unmasked piecewise as it arrives.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // The key as seen from byte `offset` on: rotated by `offset % 4` bytes, as integer shifts
    // (a slice rotation is an out-of-line call that costs more than masking 20 bytes).
    let k = u32::from_le_bytes(key).rotate_right(8 * (offset % 4) as u32).to_le_bytes();
    if buf.len() < 32 {
        // Short payloads (the common small message): four bytes at a time, no wide key.
        let key32 = u32::from_ne_bytes(k);
        let mut quads = buf.chunks_exact_mut(4);
        for quad in &mut quads {
            let mut w = [0u8; 4];
            w.copy_from_slice(quad);
            quad.copy_from_slice(&(u32::from_ne_bytes(w) ^ key32).to_ne_bytes());
        }
        for (b, m) in quads.into_remainder().iter_mut().zip(k) {
            *b ^= m;
        }
        return;
    }
    let key64 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);

    let mut wide = buf.chunks_exact_mut(32);
    for chunk in &mut wide {
        for word in chunk.chunks_exact_mut(8) {
            xor_word(word, key64);
        }
    }
    let rest = wide.into_remainder();
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        xor_word(word, key64);
    }
    // Every chunk above was a multiple of 4 bytes long, so the tail starts at key index 0.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// Copies the masked `src` into `dst` (of the same length) unmasked with `key`, from byte 0 of
/// the payload, and says whether the result is ASCII: one pass instead of a copy, an unmasking
/// pass and an ASCII check, for the short frames the in-place echo handles (callgrind, 20 B:
/// about 40 instructions against about 110).
pub(crate) fn copy_unmasked(dst: &mut [u8], src: &[u8], key: [u8; 4]) -> bool {
    let n = src.len().min(dst.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    let key32 = u32::from_ne_bytes(key);
    let key64 = u64::from(key32) | u64::from(key32) << 32;
    let key64 = if cfg!(target_endian = "little") { key64 } else { key64.rotate_left(32) };
    let mut high = 0u64;
    let mut i = 0;
    while i + 8 <= n {
        let mut w = [0u8; 8];
        w.copy_from_slice(&src[i..i + 8]);
        let v = u64::from_ne_bytes(w) ^ key64;
        high |= v;
        dst[i..i + 8].copy_from_slice(&v.to_ne_bytes());
        i += 8;
    }
    if i + 4 <= n {
        let mut w = [0u8; 4];
        w.copy_from_slice(&src[i..i + 4]);
        let v = u32::from_ne_bytes(w) ^ key32;
        high |= u64::from(v);
        dst[i..i + 4].copy_from_slice(&v.to_ne_bytes());
        i += 4;
    }
    // `i` is a multiple of 4 here: the rest starts at key index 0.
    for (j, k) in (i..n).zip(key) {
        let b = src[j] ^ k;
        high |= u64::from(b);
        dst[j] = b;
    }
    high & 0x8080_8080_8080_8080 == 0
}

/// Wraps `bytes` as a `ByteString` without validating them again.
///
/// Only for text that went through [`crate::utf8::Utf8Validator`] in full: every byte of it
/// fed in order, from a fresh validator, and [`crate::utf8::Utf8Validator::finish`] returned
/// `Ok`. Anything else (a text frame that arrived whole, inflated text, close reasons) takes
/// the checked `Utf8Bytes::try_from`.
pub(crate) fn validated_text(bytes: Bytes) -> ByteString {
    // Tests and debug builds check the promise that release builds rely on.
    debug_assert!(std::str::from_utf8(&bytes).is_ok(), "unvalidated text reached validated_text");
    // SAFETY: `ByteString` requires valid UTF-8. The only caller, the receive path's `finish`
    // (connection/recv.rs), calls this only for an uncompressed text message all of whose
    // frames were validated incrementally (`Partial::validated`): the validator is reset when
    // the message's first frame header is read, each payload byte is fed to it exactly once,
    // in order, as it is unmasked, and `finish` has just returned `Ok` (no code point left
    // unfinished). `Utf8Validator` accepts a sequence of pieces only if their concatenation is
    // valid UTF-8 (its tests check this against `std` for every two-cut split), and `bytes` is
    // exactly that concatenation: the frames' payloads appended in arrival order.
    unsafe { ByteString::from_bytes_unchecked(bytes) }
}

#[inline(always)]
fn xor_word(word: &mut [u8], key64: u64) {
    let mut w = [0u8; 8];
    w.copy_from_slice(word);
    word.copy_from_slice(&(u64::from_ne_bytes(w) ^ key64).to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn matches_naive_for_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..=300usize {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let mut fast = data.clone();
                let mut slow = data.clone();
                apply_mask(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn matches_naive_for_unaligned_starts() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..400).map(|i| i as u8).collect();
        for start in 0..16 {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast[start..], key, 0);
            naive(&mut slow[start..], key, 0);
            assert_eq!(fast, slow, "start {start}");
        }
    }

    #[test]
    fn piecewise_equals_whole() {
        let key = [9, 8, 7, 6];
        let data: Vec<u8> = (0..100).map(|i| i as u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let (a, b) = pieces.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 13);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn copy_unmasked_matches_naive_and_finds_non_ascii() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..=125 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 % 128) as u8).collect();
            let mut masked = plain.clone();
            naive(&mut masked, key, 0);
            let mut out = vec![0u8; len];
            assert!(copy_unmasked(&mut out, &masked, key), "len {len}");
            assert_eq!(out, plain, "len {len}");
            // A byte with the high bit set, at every position, is seen.
            for at in 0..len {
                let mut odd = plain.clone();
                odd[at] = 0xc3;
                let mut masked = odd.clone();
                naive(&mut masked, key, 0);
                assert!(!copy_unmasked(&mut out, &masked, key), "len {len} at {at}");
                assert_eq!(out, odd);
            }
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}
