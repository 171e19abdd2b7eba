//! `wsx::hyper::upgrade` and the axum extractor over HTTP/2 (RFC 8441 extended CONNECT), on
//! loopback h2c with prior knowledge: a hyper server speaking only HTTP/2, hyper-util's auto
//! server serving HTTP/1.1 and HTTP/2 WebSockets on one listener, and axum, where an `any`
//! route upgrades over HTTP/2 and a `get` route answers the CONNECT with 405.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;
use common::guard;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wsx::bytes::Bytes;
use wsx::h2::Http2Connection;
use wsx::proto::deflate::DeflateConfig;
use wsx::proto::handshake::ServerPolicy;
use wsx::{ClientBuilder, Config, Error, Message};

type Body = Either<Empty<Bytes>, Full<Bytes>>;

fn deflate() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_http2_only_echoes_text_binary_and_deflate() {
    let server = Listener::start(|tcp| async move {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.enable_connect_protocol();
        let _ = builder.serve_connection(TokioIo::new(tcp), service_fn(echo_service)).await;
    })
    .await;
    let conn = server.h2c().await;
    assert!(conn.supports_websockets(), "hyper advertised ENABLE_CONNECT_PROTOCOL");

    let (mut ws, response) =
        guard("open", conn.websocket("/echo", deflate(), &["chat".into()], &Default::default()))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert!(response.headers().get("content-length").is_none(), "a 2xx CONNECT has no length");
    assert_eq!(ws.protocol(), Some("chat"));
    let ext = response.headers()["sec-websocket-extensions"].to_str().unwrap();
    assert!(ext.starts_with("permessage-deflate"), "{ext}");
    // 1 MiB: past every flow-control window; compressible, so deflate carries it too.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    common::echo_and_close(
        &mut ws,
        &[Message::text("over h2"), Message::binary(vec![0u8, 1, 2, 255]), Message::binary(big)],
    )
    .await;

    // Without the offer: no extension, still an echo, on the same connection.
    let (mut ws, response) =
        guard("open", conn.websocket("/plain", Config::default(), &[], &Default::default()))
            .await
            .unwrap();
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    assert_eq!(ws.protocol(), None);
    common::echo_and_close(&mut ws, &[Message::text("no deflate")]).await;

    assert_eq!(server.accepted(), 1, "both WebSockets on one connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_server_serves_http11_and_http2_websockets_on_one_listener() {
    let server = Listener::start(|tcp| async move {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http2().enable_connect_protocol();
        let _ = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(echo_service))
            .await;
    })
    .await;

    // HTTP/1.1 Upgrade.
    let url = format!("ws://{}/h1", server.addr);
    let (mut ws, response) =
        guard("h1", ClientBuilder::new(url).config(deflate()).connect()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    common::echo_and_close(&mut ws, &[Message::text("one"), Message::binary(vec![9; 70_000])])
        .await;

    // HTTP/2 extended CONNECT on the same port.
    let conn = server.h2c().await;
    assert!(conn.supports_websockets());
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let (ws, response) =
            guard("h2", conn.websocket("/h2", deflate(), &[], &Default::default())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sockets.push(ws);
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        common::echo_and_close(ws, &[Message::text(format!("two {i}"))]).await;
    }
    assert_eq!(server.accepted(), 2, "one HTTP/1.1 and one HTTP/2 connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_any_route_upgrades_over_h2_and_a_get_route_answers_405() {
    async fn ws(upgrade: wsx::axum::WebSocketUpgrade) -> axum::response::Response {
        upgrade.protocols(["chat"]).on_upgrade(|mut socket| async move {
            while let Some(Ok(msg)) = socket.recv().await {
                if msg.is_data() && socket.send(msg).await.is_err() {
                    break;
                }
            }
        })
    }
    let app = Router::new().route("/any", any(ws)).route("/get", get(ws));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn =
        guard("h2c", Http2Connection::handshake(tcp, &addr.to_string(), false)).await.unwrap();
    assert!(conn.supports_websockets(), "axum::serve enables extended CONNECT with `http2`");

    let (mut ws, response) =
        guard("any", conn.websocket("/any", deflate(), &["chat".into()], &Default::default()))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(ws.protocol(), Some("chat"));
    assert!(response.headers().contains_key("sec-websocket-extensions"), "deflate negotiated");
    common::echo_and_close(
        &mut ws,
        &[Message::text("axum over h2"), Message::binary(vec![3u8; 200_000])],
    )
    .await;

    // `get` does not route CONNECT: axum's method router answers 405 before the extractor runs.
    let err = guard("get", conn.websocket("/get", Config::default(), &[], &Default::default()))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::METHOD_NOT_ALLOWED), "{err:?}");
    let Error::Rejected(response) = &err else { panic!("expected Rejected: {err:?}") };
    let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    assert!(allow.as_deref().is_some_and(|a| a.contains("GET")), "{allow:?}");

    // The same `get` route serves HTTP/1.1 upgrades, which is why it is easy to miss.
    let url = format!("ws://{addr}/get");
    let (mut ws, _) = guard("h1 get", ClientBuilder::new(url).connect()).await.unwrap();
    common::echo_and_close(&mut ws, &[Message::text("h1 get")]).await;

    // A stream on the connection after the 405 still works.
    let (mut ws, _) =
        guard("any again", conn.websocket("/any", Config::default(), &[], &Default::default()))
            .await
            .unwrap();
    common::echo_and_close(&mut ws, &[Message::text("again")]).await;
    serving.abort();
}

// ---------------------------------------------------------------------------------------------

/// An echo service: upgrades what asks for it (deflate allowed, subprotocol `chat`), answers
/// anything else with a page.
async fn echo_service(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if !wsx::hyper::is_upgrade_request(&req) {
        return Ok(Response::new(Either::Right(Full::from("a page\n"))));
    }
    let policy = ServerPolicy::new(deflate()).protocols(["chat"]);
    match wsx::hyper::upgrade(&mut req, &policy) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = upgrade.await else { return };
                while let Some(Ok(msg)) = ws.recv().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            Ok(response.map(Either::Left))
        }
        Err(refusal) => Ok(refusal.response().map(Either::Right)),
    }
}

/// A loopback listener that hands each TCP connection to a server function and counts them.
struct Listener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accepted_ = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted_.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(tcp));
            }
        });
        Self { addr, accepted, task }
    }

    /// An h2c (prior knowledge) client connection to it.
    async fn h2c(&self) -> Http2Connection {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        guard("h2c handshake", Http2Connection::handshake(tcp, &self.addr.to_string(), false))
            .await
            .unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
