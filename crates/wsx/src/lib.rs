//! # wsx: WebSocket client and server for tokio
//!
//! `wsx` drives the sans-I/O [`wsx_proto`] core over any `AsyncRead + AsyncWrite` transport.
//! A [`WebSocket`] is a [`futures_core::Stream`] of incoming [`Message`]s and a
//! [`futures_sink::Sink`] of outgoing ones, with `recv`/`send` conveniences and [`WebSocket::split`].
//!
//! Server:
//! ```no_run
//! # async fn run() -> Result<(), wsx::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     tokio::spawn(async move {
//!         let mut ws = wsx::accept(tcp).await?;
//!         while let Some(msg) = ws.recv().await {
//!             let msg = msg?;
//!             if msg.is_data() {
//!                 ws.send(msg).await?;
//!             }
//!         }
//!         Ok::<_, wsx::Error>(())
//!     });
//! }
//! # }
//! ```
//!
//! Client:
//! ```no_run
//! # async fn run() -> Result<(), wsx::Error> {
//! let (mut ws, _response) = wsx::connect("ws://127.0.0.1:8080/").await?;
//! ws.send(wsx::Message::text("hello")).await?;
//! if let Some(reply) = ws.recv().await {
//!     println!("{:?}", reply?);
//! }
//! ws.close(None).await?;
//! # Ok(()) }
//! ```
//!
//! Protocol decisions (framing, control frames, the close handshake, limits) all live in
//! `wsx-proto`; this crate only moves bytes and time in and out of it.

#[cfg(feature = "axum")]
pub mod axum;
pub mod client;
mod error;
#[cfg(feature = "http2")]
pub mod h2;
#[cfg(feature = "hyper")]
pub mod hyper;
pub mod proxy;
pub mod pubsub;
pub mod server;
mod socket;
mod split;
#[cfg(feature = "tls")]
pub mod tls;

pub use client::{connect, ClientBuilder, MaybeTlsStream, Redirect};
pub use error::Error;
pub use proxy::Proxy;
pub use server::{accept, accept_with, Accept, Incoming, Reject, RequestBody};
pub use socket::WebSocket;
pub use split::{ReadHalf, WriteHalf};
pub use wsx_proto::{
    Chunk, CloseCode, CloseFrame, Config, Event, HandshakeError, Message, ProtocolError, Role,
    SendError, SharedFrame, Utf8Bytes,
};

/// The `bytes` crate, whose [`bytes::Bytes`] messages carry.
pub use bytes;
/// The `http` crate, whose types the handshake uses.
pub use http;

/// The sans-I/O protocol core this crate drives.
pub use wsx_proto as proto;

/// The README's examples, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
