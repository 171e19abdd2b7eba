//! Receives masked text messages through a server `Connection`, for instruction counts under
//! callgrind (deterministic where wall-clock timings on a shared machine are not).
//!
//! `recv_text MODE SIZE READ ITERS [utf8]`: a client-masked text message of SIZE bytes ('x', or
//! mixed one- to four-byte UTF-8 with `utf8`) arrives in reads of READ bytes, ITERS times.
//! MODE is `stream` (chunks through `poll_event`, the default stream threshold), `store`
//! (whole messages through `poll_message`). Run it twice with different ITERS and divide the
//! difference in instructions by the difference in messages to leave start-up out:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/recv_text stream 1048576 65536 20
//! ```

use std::hint::black_box;

use wsx_proto::{Config, Connection, Event, Message, Role};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: recv_text stream|store SIZE READ ITERS [utf8]";
    let [_, mode, size, read, iters, rest @ ..] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let stream = match mode.as_str() {
        "stream" => true,
        "store" => false,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let size: usize = size.parse().expect("SIZE");
    let read: usize = read.parse().expect("READ");
    let iters: usize = iters.parse().expect("ITERS");
    let text = if rest.first().map(String::as_str) == Some("utf8") {
        let mut s = String::with_capacity(size + 4);
        let alphabet = ['a', 'µ', '€', '𝄞', '{', '"', 'é', '1'];
        let mut i = 0;
        while s.len() < size {
            s.push(alphabet[i % alphabet.len()]);
            i += 1;
        }
        while s.len() > size {
            s.pop();
        }
        while s.len() < size {
            s.push('x');
        }
        s
    } else {
        "x".repeat(size)
    };

    // Small messages: as many as fill one read, like a server under load; large ones: one.
    let per_wire = (read / (size + 14)).max(1);
    let mut client = Connection::new(Role::Client, Config::default());
    for _ in 0..per_wire {
        client.send(Message::text(text.clone())).expect("send");
    }
    let out = client.transmit();
    let wire = bytes::Buf::copy_to_bytes(out, bytes::Buf::remaining(out));

    let config =
        if stream { Config::default() } else { Config::default().stream_threshold(usize::MAX) };
    let mut server = Connection::new(Role::Server, config);
    let mut received = 0usize;
    for _ in 0..iters {
        for piece in wire.chunks(read) {
            // As a driver's read into the core's buffer.
            server.recv_buf().extend_from_slice(piece);
            if stream {
                while let Some(e) = server.poll_event() {
                    match e.expect("valid") {
                        Event::Chunk(c) => received += black_box(c.len()),
                        Event::Message(m) => received += black_box(m.len()),
                    }
                }
            } else {
                while let Some(m) = server.poll_message() {
                    received += black_box(m.expect("valid").len());
                }
            }
        }
    }
    assert_eq!(received, iters * per_wire * size);
    println!("{} messages of {size} B in reads of {read} B", iters * per_wire);
}
