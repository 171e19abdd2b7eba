//! Interop: the wsx HTTP/2 client (`wsx::h2::Http2Connection`, RFC 8441 extended CONNECT)
//! against axum 0.8's own WebSocket (`axum::extract::ws`, tungstenite underneath), served by
//! `axum::serve` with axum's `http2` feature, which enables extended CONNECT; h2c with prior
//! knowledge on loopback. (The other direction needs an HTTP/2 WebSocket client in axum,
//! which it does not have.)

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message as AxumMessage, WebSocket as AxumWebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use wsx::h2::Http2Connection;
use wsx::proto::deflate::DeflateConfig;
use wsx::{CloseCode, CloseFrame, Config, Message};

/// Turns a hang into a failure; not a statement about speed.
const GUARD: Duration = Duration::from_secs(30);

async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress in {GUARD:?}"))
}

async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.protocols(["chat"]).on_upgrade(|mut socket: AxumWebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let data = matches!(msg, AxumMessage::Text(_) | AxumMessage::Binary(_));
            if data && socket.send(msg).await.is_err() {
                break;
            }
        }
    })
}

/// axum on a free loopback port; the task is aborted by the caller.
async fn serve() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new().route("/echo", any(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wsx_h2_client_echoes_through_axums_own_websocket() {
    let (addr, server) = serve().await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn =
        guard("h2c", Http2Connection::handshake(tcp, &addr.to_string(), false)).await.unwrap();
    assert!(conn.supports_websockets(), "axum::serve advertises ENABLE_CONNECT_PROTOCOL");

    // Deflate offered: axum's WebSocket has none, so the answer names no extension.
    let config = Config::default().deflate(Some(DeflateConfig::default()));
    let protocols = ["chat".to_owned()];
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (ws, response) =
            guard("open", conn.websocket("/echo", config.clone(), &protocols, &Default::default()))
                .await
                .unwrap();
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        assert!(response.headers().get("sec-websocket-extensions").is_none());
        assert!(response.headers().get("content-length").is_none(), "{response:?}");
        assert_eq!(ws.protocol(), Some("chat"));
        sockets.push(ws);
    }
    let big: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    for (i, ws) in sockets.iter_mut().enumerate() {
        for msg in [
            Message::text(format!("hello axum {i}")),
            Message::binary(vec![0u8, 255, 1, 254]),
            Message::binary(big.clone()),
            Message::text("é ✓ 🦀"),
        ] {
            ws.send(msg.clone()).await.unwrap();
            let got = guard("echo", ws.recv()).await.expect("ended").unwrap();
            assert_eq!(got, msg);
        }
    }
    for mut ws in sockets {
        ws.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))).await.unwrap();
        let reply = guard("close reply", ws.recv()).await.expect("ended").unwrap();
        assert!(
            matches!(reply, Message::Close(Some(ref f)) if f.code == CloseCode::NORMAL),
            "{reply:?}"
        );
        assert!(guard("end", ws.recv()).await.is_none());
    }
    server.abort();
}
