//! A `Connection` in the client role fed arbitrary peer bytes, interleaved with sends, closes,
//! timer ticks and partial flushes. See `wsx_fuzz::connection` for the input layout and the
//! invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_proto::Role;

fuzz_target!(|data: &[u8]| wsx_fuzz::connection(Role::Client, data));
