use std::io;

use bytes::Bytes;
use http::Response;
use wsx_proto::{HandshakeError, ProtocolError, SendError};

/// Everything that can go wrong on a wsx connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol or a limit; the matching close frame was sent.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed on this side's checks.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server refused the upgrade with an HTTP response (client side).
    /// The response carries the status, the headers and the start of the body (at most 4 KiB).
    #[error("server refused the WebSocket upgrade: {}{}", .0.status(), body_suffix(.0.body()))]
    Rejected(Box<Response<Bytes>>),
    /// A message could not be sent: the protocol forbids it.
    #[error("cannot send: {0}")]
    Send(SendError),
    /// The connection is closed; nothing more can be sent.
    #[error("the connection is closed")]
    Closed,
    /// The URL was not a valid `ws://` or `wss://` URL.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The TLS handshake for `wss://` failed. A server certificate that did not verify is
    /// described in one sentence that says what is wrong and how to fix it.
    #[cfg(feature = "tls")]
    #[error("{}", crate::tls::describe(.host, .error))]
    Tls {
        /// The server name that was verified (the URL's host).
        host: String,
        /// What rustls reported; [`rustls::Error::InvalidCertificate`] for a certificate
        /// problem.
        #[source]
        error: rustls::Error,
    },
    /// A proxy could not be reached, refused the tunnel or failed (client side). The message
    /// names the proxy (never its credentials) and says why: `proxy 127.0.0.1:8888 requires
    /// authentication (407)`, `proxy 127.0.0.1:1080 could not connect to 10.0.0.1:80:
    /// connection refused (SOCKS5 reply 5)`.
    #[error("proxy {proxy} {reason}")]
    Proxy {
        /// The proxy's `host:port`.
        proxy: String,
        /// What went wrong, as the end of a sentence that starts with the proxy's name.
        reason: String,
        /// The HTTP proxy's answer to `CONNECT`, when it refused with one.
        status: Option<http::StatusCode>,
    },
    /// The server answered with a redirect that was not followed: redirects are off, there were
    /// too many, the `Location` is not a WebSocket or HTTP URL, or it leaves TLS (`wss://` to
    /// `ws://`).
    #[error("redirect {status} to {location} not followed: {reason}")]
    Redirect {
        /// The redirect's status (301, 302, 303, 307 or 308).
        status: http::StatusCode,
        /// The `Location` header as sent (resolved against the request's URL when it could be).
        location: String,
        /// Why it was not followed.
        reason: String,
    },
    /// An operation did not finish in its configured time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

impl Error {
    /// The HTTP status of a refused upgrade ([`Error::Rejected`]), of a redirect not followed
    /// ([`Error::Redirect`]) or of a handshake this side refused ([`Error::Handshake`]).
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Self::Rejected(r) => Some(r.status()),
            Self::Redirect { status, .. } => Some(*status),
            Self::Handshake(e) => Some(e.status()),
            _ => None,
        }
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed => Self::Closed,
            other => Self::Send(other),
        }
    }
}

fn body_suffix(body: &Bytes) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}
