//! A `Connection` in the server role on the streaming path: `poll_event`, `send_chunk` and
//! `handle_input_buf`, with arbitrary chunking of the peer's bytes interleaved with sends,
//! closes and timer ticks, checked against the same bytes reassembled by `poll_message`. See
//! `wsx_fuzz::streaming` for the input layout and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsx_proto::Role;

fuzz_target!(|data: &[u8]| wsx_fuzz::streaming(Role::Server, data));
