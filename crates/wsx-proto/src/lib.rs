//! # wsx-proto: the sans-I/O WebSocket core
//!
//! This crate implements RFC 6455 without doing any I/O: no sockets, no async runtime, no clock.
//! Bytes go in, messages and bytes come out; time enters only as [`std::time::Instant`]
//! arguments. The `wsx` crate drives it over tokio; any other runtime can drive it the same way.
//!
//! ## The integration contract
//! A driver owns one [`Connection`] per WebSocket and runs one loop:
//! 1. read transport bytes into [`Connection::recv_buf`] (or pass them to
//!    [`Connection::handle_input`]); on end of stream call [`Connection::handle_eof`];
//! 2. drain [`Connection::poll_message`] until it returns `None`;
//! 3. write out everything in [`Connection::transmit`] (a vectored [`bytes::Buf`]): reading
//!    implies writing, because the core queues pongs and close replies while it parses;
//! 4. call [`Connection::handle_timeout`] with the current time when the instant from
//!    [`Connection::poll_timeout`] is reached, and after input or a send while
//!    [`Connection::wants_clock`] is true (only after a quiet spell: a busy connection needs
//!    no clock per message), and re-arm a timer from [`Connection::poll_timeout`];
//! 5. once [`Connection::should_close_transport`] is true and the transmit buffer is empty,
//!    close the transport.
//!
//! Peer violations never poison the connection: the core queues the right close frame
//! (1002, 1007, 1009…), reports the [`ProtocolError`] once, and then reports the end of the stream.
//!
//! The opening handshake lives in [`handshake`]: pure functions that parse requests and responses
//! and build the bytes to send.

pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
// The one module where `unsafe` may appear (the workspace denies it everywhere else); each
// block there carries a `// SAFETY:` comment and a measurement in the module doc.
#[allow(unsafe_code)]
pub mod mask;
pub mod message;
pub mod shared;
pub mod utf8;

pub use config::Config;
pub use connection::{Connection, Role, State};
pub use error::{HandshakeError, ProtocolError, SendError};
pub use message::{Chunk, CloseCode, CloseFrame, Event, Message, Utf8Bytes};
pub use shared::{SharedCompressor, SharedFrame};
