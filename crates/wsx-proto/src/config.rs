//! Limits and behaviour of one connection.

use std::time::Duration;

use crate::deflate::DeflateConfig;

/// Settings for one WebSocket connection, with safe defaults.
///
/// A plain struct: build it with [`Config::default`] and the named setters, then hand it to a
/// connection. Settings cannot change on a live connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Largest frame payload accepted, in bytes. Default 16 MiB. Larger frames close with 1009.
    pub max_frame_size: usize,
    /// Largest message accepted, in bytes, counted across all fragments. Default 64 MiB. Larger
    /// messages close with 1009 as soon as a frame header shows the limit would be crossed.
    pub max_message_size: usize,
    /// Largest HTTP head accepted in the opening handshake, in bytes. Default 16 KiB; a larger
    /// request is refused with 431.
    pub max_handshake_size: usize,
    /// Most header fields accepted in the opening handshake. Default 100; more are refused with
    /// 431.
    pub max_headers: usize,
    /// Time allowed for the opening handshake (a server reading the request, a client reading
    /// the response). Default 10 s; `None` waits forever. Slow-dribbling clients (slowloris)
    /// are dropped when it passes.
    pub handshake_timeout: Option<Duration>,
    /// Answer pings with pongs automatically. Default `true`.
    pub auto_pong: bool,
    /// How long to wait for the peer's close reply (or, on a client, for the server to close the
    /// transport) before dropping the connection. Default 10 s; `None` waits forever.
    pub close_timeout: Option<Duration>,
    /// Send a ping after this long without hearing from the peer. Default 20 s; `None` turns
    /// keepalive off.
    pub ping_interval: Option<Duration>,
    /// Fail the connection (close 1011) when nothing at all arrives this long after a
    /// keepalive ping. Default 20 s. Any frame counts, not only the pong, so a peer busy
    /// sending a large message is not mistaken for a dead one.
    pub ping_timeout: Option<Duration>,
    /// Close (1001, "idle timeout") after this long without a data message in either
    /// direction. Default `None`. Pings and pongs do not count, so it also reaps connections
    /// that only keep themselves alive.
    pub idle_timeout: Option<Duration>,
    /// Bytes queued for sending above which a sender should wait for the transport to drain.
    /// Default 128 KiB. The core never refuses to queue; drivers apply this as backpressure.
    pub write_buffer_high_water: usize,
    /// permessage-deflate (RFC 7692): offered by clients and accepted by servers when `Some`.
    /// Default `None`: compression costs CPU; turn it on for text-heavy traffic.
    /// [`DeflateConfig::default`] keeps no codec state between messages (no context
    /// takeover); with context takeover it costs about 300 KiB per connection (see
    /// [`crate::deflate`]).
    pub deflate: Option<DeflateConfig>,
    /// Streaming receive ([`crate::Connection::poll_event`]): an uncompressed data message that
    /// has not fully arrived is delivered in chunks once this many of its bytes are waiting.
    /// Default 64 KiB. Smaller messages, and compressed ones, always arrive whole.
    pub stream_threshold: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_handshake_size: 16 << 10,
            max_headers: 100,
            handshake_timeout: Some(Duration::from_secs(10)),
            auto_pong: true,
            close_timeout: Some(Duration::from_secs(10)),
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            idle_timeout: None,
            write_buffer_high_water: 128 << 10,
            deflate: None,
            stream_threshold: 64 << 10,
        }
    }
}

impl Config {
    /// Sets [`Config::max_frame_size`].
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`Config::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Config::max_handshake_size`].
    pub fn max_handshake_size(mut self, bytes: usize) -> Self {
        self.max_handshake_size = bytes;
        self
    }

    /// Sets [`Config::max_headers`].
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`Config::auto_pong`].
    pub fn auto_pong(mut self, on: bool) -> Self {
        self.auto_pong = on;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`Config::deflate`].
    pub fn deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// Sets [`Config::ping_interval`].
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`Config::ping_timeout`].
    pub fn ping_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Config::write_buffer_high_water`].
    pub fn write_buffer_high_water(mut self, bytes: usize) -> Self {
        self.write_buffer_high_water = bytes;
        self
    }

    /// Sets [`Config::stream_threshold`] (at least 1 byte).
    pub fn stream_threshold(mut self, bytes: usize) -> Self {
        self.stream_threshold = bytes.max(1);
        self
    }
}
