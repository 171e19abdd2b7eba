//! `FrameHeader::decode` on arbitrary bytes: never panics, and whatever it accepts encodes back
//! to a header that decodes to the same value (RFC 6455 §5.2).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_proto::frame::{FrameHeader, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let decoded = FrameHeader::decode(data);
    match decoded {
        Ok(Some((header, n))) => {
            assert!((2..=MAX_HEADER_LEN).contains(&n) && n <= data.len(), "length {n}");
            assert!(header.rsv <= 0b111);
            assert!(header.payload_len >> 63 == 0, "MSB of the length accepted");
            // Every strict prefix is "need more bytes", never an error or a different header.
            for cut in 0..n {
                assert_eq!(FrameHeader::decode(&data[..cut]), Ok(None), "prefix {cut}");
            }
            // Trailing bytes do not change the header.
            assert_eq!(FrameHeader::decode(&data[..n]), Ok(Some((header, n))));
            round_trip(&header);
            // The decoder accepts non-minimal length encodings; the encoder always uses the
            // shortest one, so bytes match exactly when the input was minimal.
            if n == header.encoded_len() {
                let mut out = [0u8; MAX_HEADER_LEN];
                let m = header.encode(&mut out);
                assert_eq!(&out[..m], &data[..n]);
            } else {
                assert!(n > header.encoded_len());
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEADER_LEN),
        Err(_) => {}
    }
});

fn round_trip(header: &FrameHeader) {
    let mut out = [0u8; MAX_HEADER_LEN];
    let m = header.encode(&mut out);
    assert_eq!(m, header.encoded_len());
    assert_eq!(FrameHeader::decode(&out[..m]), Ok(Some((*header, m))));
    for cut in 0..m {
        assert_eq!(FrameHeader::decode(&out[..cut]), Ok(None), "encoded prefix {cut}");
    }
}
