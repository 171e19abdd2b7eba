//! An axum app with wsx WebSockets: `GET /` is a small page (and upgrades too), `/ws` echoes,
//! `/hello` is text, `/private/ws` upgrades only with `Authorization: Bearer secret`.
//! Compression is negotiated when the client offers it; large messages stream through.
//!
//! `cargo run --release -p wsx --features axum --example axum_echo -- 127.0.0.1:3000`

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use wsx::axum::{WebSocket, WebSocketUpgrade, WebSocketUpgradeRejection};

const PAGE: &str = "<!doctype html>\n<title>wsx axum echo</title>\n\
<p>WebSocket echo at <code>/</code> and <code>/ws</code>.</p>\n";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let app = Router::new()
        .route("/", get(index))
        .route("/ws", get(ws))
        .route("/hello", get(|| async { "hello from axum\n" }))
        .route("/private/ws", get(private));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}

/// The page for a plain request, the echo for an upgrade.
async fn index(upgrade: Option<WebSocketUpgrade>) -> Response {
    match upgrade {
        Some(upgrade) => upgrade.on_upgrade(echo),
        None => Html(PAGE).into_response(),
    }
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

/// Authorization is checked before the upgrade request is.
async fn private(
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let authorized = headers.get(header::AUTHORIZATION).is_some_and(|v| v == "Bearer secret");
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized\n",
        )
            .into_response();
    }
    match upgrade {
        Ok(upgrade) => upgrade.on_upgrade(echo),
        Err(rejection) => rejection.into_response(),
    }
}

/// Echoes every data message until the connection closes. Messages are received whole (up to
/// the message size limit) and then echoed: a client that writes a whole large message before
/// it reads its echo is served. (`wsx serve` streams large messages through instead; see
/// `WebSocket::recv_event` for that.)
async fn echo(mut ws: WebSocket) {
    // Cleared once this side's close is out (the idle timeout, or a close crossing an echo):
    // messages the peer sent before it saw the close still arrive, and are only received.
    let mut echoing = true;
    while let Some(msg) = ws.recv().await {
        let queued = match msg {
            Ok(msg) if msg.is_data() && echoing => ws.feed(msg).await,
            Ok(_) => Ok(()),
            // The core has queued the close for it; keep receiving until the close completes.
            Err(_) => Ok(()),
        };
        match queued {
            Ok(()) => {}
            Err(wsx::Error::Closed) => echoing = false,
            Err(_) => break,
        }
    }
}
