//! `wsx::hyper::upgrade` in a hyper 1.x HTTP/1.1 server on loopback: an upgrade with
//! permessage-deflate, refusals, hyper-util's auto server, and upgrades that never complete
//! (the upgrade future errors, or times out, instead of hanging).

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use common::{guard, header, raw_http};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use wsx::bytes::Bytes;
use wsx::hyper::{Refusal, UpgradeFut};
use wsx::proto::deflate::DeflateConfig;
use wsx::proto::handshake::ServerPolicy;
use wsx::{ClientBuilder, Config, Message};

type Body = Either<Empty<Bytes>, Full<Bytes>>;

/// A boxed service answer.
type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

fn policy() -> ServerPolicy {
    ServerPolicy::new(Config::default().deflate(Some(DeflateConfig::default()))).protocols(["chat"])
}

/// An echo service: upgrades what asks for it, answers anything else with a page.
async fn echo_service(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if !wsx::hyper::is_upgrade_request(&req) {
        return Ok(Response::new(Either::Right(Full::from("a page\n"))));
    }
    match wsx::hyper::upgrade(&mut req, &policy()) {
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

/// Serves `service` on one loopback connection after another, HTTP/1.1 with upgrades.
async fn serve<F, Fut>(service: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(service))
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_negotiates_deflate_and_a_subprotocol_and_echoes() {
    let addr = serve(echo_service).await;
    let client = ClientBuilder::new(format!("ws://{addr}/"))
        .protocol("chat")
        .config(Config::default().deflate(Some(DeflateConfig::default())));
    let (mut ws, response) = guard("connect", client.connect()).await.unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    let extensions = response.headers()["sec-websocket-extensions"].to_str().unwrap();
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    let text = "deflate me ".repeat(50_000);
    guard("send", ws.send(Message::text(text.clone()))).await.unwrap();
    assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::text(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_answered_with_their_status_and_a_plain_request_is_not_an_upgrade() {
    let addr = serve(echo_service).await;
    let (status, _) = tokio::task::spawn_blocking(move || {
        raw_http(addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "a request without Upgrade is the service's to answer");
    let (status, headers) = tokio::task::spawn_blocking(move || {
        raw_http(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 7\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert_eq!((status, header(&headers, "sec-websocket-version")), (426, Some("13")));
}

#[test]
fn a_request_without_a_hyper_connection_is_not_upgradable() {
    let mut req = Request::get("/")
        .header("Host", "x")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let refusal = wsx::hyper::upgrade(&mut req, &policy()).map(|_| ()).unwrap_err();
    assert_eq!(refusal, Refusal::NotUpgradable);
    let response = refusal.response();
    assert_eq!(response.status().as_u16(), 426);
    assert_eq!(response.headers()["upgrade"], "websocket");
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// A service that accepts the upgrade, hands the future to the test, and then never answers.
fn stuck_service(
    futures: mpsc::UnboundedSender<UpgradeFut>,
) -> impl Fn(Request<Incoming>) -> Answer + Clone + Send + Sync + 'static {
    move |mut req| {
        let futures = futures.clone();
        Box::pin(async move {
            let (_, upgrade) = wsx::hyper::upgrade(&mut req, &policy()).unwrap();
            futures.send(upgrade).unwrap();
            std::future::pending().await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_future_errors_when_the_client_leaves_before_the_response() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let addr = serve(stuck_service(tx)).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, UPGRADE.as_bytes()).await.unwrap();
    let upgrade = guard("the upgrade future", rx.recv()).await.unwrap();
    // The client goes away; hyper ends the connection, and with it the pending upgrade.
    drop(tcp);
    assert!(guard("the upgrade", upgrade).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_future_times_out_when_the_response_is_never_sent() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let futures = tx.clone();
    let service = move |mut req: Request<Incoming>| -> Answer {
        let futures = futures.clone();
        Box::pin(async move {
            let policy = ServerPolicy::new(
                Config::default().handshake_timeout(Some(std::time::Duration::from_millis(200))),
            );
            let (_, upgrade) = wsx::hyper::upgrade(&mut req, &policy).unwrap();
            futures.send(upgrade).unwrap();
            std::future::pending().await
        })
    };
    let addr = serve(service).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, UPGRADE.as_bytes()).await.unwrap();
    let upgrade = guard("the upgrade future", rx.recv()).await.unwrap();
    let started = std::time::Instant::now();
    // The client stays connected: only the handshake timeout can end the wait.
    let result = guard("the upgrade", upgrade).await;
    assert!(matches!(result, Err(wsx::Error::Timeout(_))), "{result:?}");
    let waited = started.elapsed();
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    drop(tcp);
}

/// hyper-util's auto server (HTTP/1.1 and HTTP/2 on one port, upgrades served): an HTTP/1.1
/// upgrade echoes, and a plain request is the service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_through_hyper_utils_auto_server_echoes() {
    use hyper_util::rt::TokioExecutor;
    use hyper_util::server::conn::auto;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(echo_service));
                let _ = conn.await;
            });
        }
    });
    let client = ClientBuilder::new(format!("ws://{addr}/"))
        .protocol("chat")
        .config(Config::default().deflate(Some(DeflateConfig::default())));
    let (mut ws, response) = guard("connect", client.connect()).await.unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    assert!(response.headers().contains_key("sec-websocket-extensions"));
    for size in [20, 70_000, 1 << 20] {
        let msg = Message::binary(vec![7u8; size]);
        guard("send", ws.send(msg.clone())).await.unwrap();
        assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), msg);
    }
    guard("close", ws.close(None)).await.unwrap();
    let (status, _) = tokio::task::spawn_blocking(move || {
        raw_http(addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
}
