//! One axum app, two WebSocket extractors: axum's own (`axum::extract::ws`, tokio-tungstenite
//! underneath) and wsx's (`wsx::axum`), each as its documentation shows it.

use axum::extract::ws;
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;

/// Serves the app with axum's own `WebSocketUpgrade` until the listener fails.
pub(crate) async fn serve_axum(listener: TcpListener) -> std::io::Result<()> {
    serve(listener, Router::new().route("/", get(axum_upgrade))).await
}

/// Serves the app with `wsx::axum::WebSocketUpgrade` until the listener fails.
pub(crate) async fn serve_wsx(listener: TcpListener) -> std::io::Result<()> {
    serve(listener, Router::new().route("/", get(wsx_upgrade))).await
}

/// `axum::serve`, which spawns a task per connection (hyper-util's HTTP/1.1 server, upgrades
/// on). `TCP_NODELAY` is set the way axum 0.8 documents it, with `ListenerExt::tap_io`.
async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("wsx-bench-server: TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app).await
}

/// axum's `WebSocketUpgrade` with its defaults (tungstenite's `WebSocketConfig`: 128 KiB write
/// buffer, 64 MiB messages, no compression).
async fn axum_upgrade(upgrade: ws::WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        // tungstenite answers pings and the peer's close itself; the stream then ends.
        // Peers going away mid-benchmark is normal; errors stay quiet.
        let _ = crate::echo(&mut socket, |m: &ws::Message| {
            matches!(m, ws::Message::Text(_) | ws::Message::Binary(_))
        })
        .await;
    })
}

/// wsx's `WebSocketUpgrade` with its defaults: permessage-deflate accepted when offered (the
/// benchmark client does not offer it), keepalive pings after 20 s of silence, 64 MiB
/// messages received whole.
async fn wsx_upgrade(upgrade: wsx::axum::WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        let _ = crate::echo(&mut socket, wsx::Message::is_data).await;
    })
}
