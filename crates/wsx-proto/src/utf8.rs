//! Incremental UTF-8 validation for text that arrives in pieces (RFC 6455 §8.1).
//!
//! A text message may be split across frames and reads at any byte, even inside a code point.
//! [`Utf8Validator`] carries at most three bytes of an unfinished code point between pieces and
//! reports an error at the first byte that can never become valid, so a connection fails fast
//! instead of waiting for the end of the message.

use simdutf8::compat::from_utf8;

/// Validates a stream of bytes as UTF-8, piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

/// The stream can never be valid UTF-8, whatever follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece of the stream.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), Utf8Error> {
        if self.carry_len > 0 {
            let have = self.carry_len as usize;
            let need = char_width(self.carry[0]) - have;
            let take = need.min(input.len());
            let mut tmp = self.carry;
            tmp[have..have + take].copy_from_slice(&input[..take]);
            let tmp = &tmp[..have + take];
            match from_utf8(tmp) {
                Ok(_) => {}
                Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => {
                    // Still a valid prefix of one code point, and the input is used up.
                    self.carry[..tmp.len()].copy_from_slice(tmp);
                    self.carry_len = tmp.len() as u8;
                    return Ok(());
                }
                Err(_) => return Err(Utf8Error),
            }
            self.carry_len = 0;
            input = &input[take..];
        }
        match from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Utf8Error),
        }
    }

    /// How many bytes at the end of what was fed so far belong to a code point that is not
    /// finished yet (0 to 3).
    pub fn pending(&self) -> usize {
        self.carry_len as usize
    }

    /// Ends the stream: an unfinished code point is an error.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }
}

/// The length of the code point a lead byte announces (1 for bytes that cannot lead; the
/// validator then rejects them).
fn char_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_in_every_split(bytes: &[u8]) -> bool {
        let whole = std::str::from_utf8(bytes).is_ok();
        for cut1 in 0..=bytes.len() {
            for cut2 in cut1..=bytes.len() {
                let mut v = Utf8Validator::new();
                let r = v
                    .feed(&bytes[..cut1])
                    .and_then(|_| v.feed(&bytes[cut1..cut2]))
                    .and_then(|_| v.feed(&bytes[cut2..]))
                    .and_then(|_| v.finish());
                assert_eq!(r.is_ok(), whole, "{bytes:x?} split at {cut1},{cut2}");
            }
        }
        whole
    }

    #[test]
    fn agrees_with_std_in_every_split() {
        assert!(valid_in_every_split("Hello-µ@ßöäüàá-UTF-8!!".as_bytes()));
        assert!(valid_in_every_split("κόσμε 𝄞 €".as_bytes()));
        assert!(!valid_in_every_split(&[
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
            0x65
        ]));
        assert!(!valid_in_every_split(&[0xf4, 0x90, 0x80, 0x80]));
        assert!(!valid_in_every_split(&[0xc0, 0xaf]));
        assert!(!valid_in_every_split(&[0xe2, 0x82]));
        assert!(!valid_in_every_split(&[0xff]));
    }

    #[test]
    fn fails_fast_inside_an_unfinished_piece() {
        // 0xf4 0x90 can never start a valid code point (it would exceed U+10FFFF).
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xce, 0xba, 0xf4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(Utf8Error));
    }

    #[test]
    fn incomplete_end_is_an_error() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(Utf8Error));
    }
}
