//! `wsx::axum::WebSocketUpgrade` in a real axum server on loopback: refusals with their statuses
//! and headers, subprotocol, permessage-deflate and Origin negotiation, optional extraction, and
//! the `axum_echo` example's routes, with wsx and Python `websockets` as clients.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use common::{example_binary, guard, header, python, raw_http, run_logged, start_on_free_port};
use wsx::axum::{WebSocket, WebSocketUpgrade, WebSocketUpgradeRejection};
use wsx::proto::deflate::DeflateConfig;
use wsx::{ClientBuilder, Config, Message};

async fn echo(mut ws: WebSocket) {
    while let Some(Ok(msg)) = ws.recv().await {
        if msg.is_data() && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// Answers an upgrade with the echo and names the selected subprotocol in `x-selected`.
fn answer(upgrade: WebSocketUpgrade) -> Response {
    let selected = upgrade.selected_protocol().unwrap_or("").to_owned();
    let mut response = upgrade.on_upgrade(echo);
    response.headers_mut().insert("x-selected", HeaderValue::from_str(&selected).unwrap());
    response
}

/// A server on a free loopback port with routes for every test here.
async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/ws", any(|u: WebSocketUpgrade| async move { answer(u) }))
        .route("/chat", get(|u: WebSocketUpgrade| async move { answer(u.protocols(["v2", "v1"])) }))
        .route("/plain", get(|u: WebSocketUpgrade| async move { answer(u.deflate(None)) }))
        .route(
            "/origin",
            get(|u: WebSocketUpgrade| async move {
                answer(u.allowed_origins(["https://good.example"]))
            }),
        )
        .route(
            "/",
            get(|u: Option<WebSocketUpgrade>| async move {
                match u {
                    Some(u) => answer(u),
                    None => "a page\n".into_response(),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(method: &str, path: &str, fields: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n")
}

/// What a case checks, the request, and the status and header fields expected.
type Case = (&'static str, String, u16, &'static [(&'static str, &'static str)]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_their_status_and_headers() {
    let addr = server().await;
    let good = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n"
    );
    let cases: &[Case] = &[
        (
            "POST is refused with Allow: GET",
            upgrade_request("POST", "/ws", &good),
            405,
            &[("allow", "GET")],
        ),
        (
            "no version is 426 naming 13",
            upgrade_request("GET", "/ws", &good.replace("Sec-WebSocket-Version: 13\r\n", "")),
            426,
            &[("sec-websocket-version", "13")],
        ),
        (
            "version 8 is 426 naming 13",
            upgrade_request("GET", "/ws", &good.replace("Version: 13", "Version: 8")),
            426,
            &[("sec-websocket-version", "13")],
        ),
        (
            "no key is 400",
            upgrade_request(
                "GET",
                "/ws",
                &good.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            ),
            400,
            &[],
        ),
        (
            "a short key is 400",
            upgrade_request("GET", "/ws", &good.replace(KEY, "c2hvcnQ=")),
            400,
            &[],
        ),
        (
            "no Connection: Upgrade is 400",
            upgrade_request(
                "GET",
                "/ws",
                &good.replace("Connection: Upgrade", "Connection: keep-alive"),
            ),
            400,
            &[],
        ),
        ("a plain GET is 400", upgrade_request("GET", "/ws", ""), 400, &[]),
        (
            "another site's Origin is 403",
            upgrade_request("GET", "/origin", &format!("{good}Origin: https://evil.example\r\n")),
            403,
            &[],
        ),
        (
            "the good upgrade is 101",
            upgrade_request("GET", "/ws", &good),
            101,
            &[("upgrade", "websocket")],
        ),
    ];
    for (what, request, status, fields) in cases {
        let request = request.clone();
        let (got, headers) =
            tokio::task::spawn_blocking(move || raw_http(addr, &request)).await.unwrap();
        assert_eq!(got, *status, "{what}: {headers:?}");
        for (name, value) in *fields {
            assert_eq!(header(&headers, name), Some(*value), "{what}: {headers:?}");
        }
    }
}

#[tokio::test]
async fn a_request_whose_connection_cannot_be_upgraded_is_426() {
    // Built by hand: no hyper connection behind it, so no `OnUpgrade`.
    let request = axum::http::Request::get("/")
        .header("Host", "localhost")
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", KEY)
        .body(())
        .unwrap();
    let (mut parts, ()) = request.into_parts();
    let rejection = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.unwrap_err();
    assert_eq!(rejection, WebSocketUpgradeRejection::NotUpgradable);
    let response = rejection.into_response();
    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["upgrade"], "websocket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subprotocol_is_our_first_preference_among_the_offered() {
    let addr = server().await;
    let url = format!("ws://{addr}/chat");
    let (ws, response) =
        guard("connect", ClientBuilder::new(&url).protocol("v1").protocol("v2").connect())
            .await
            .unwrap();
    assert_eq!(ws.protocol(), Some("v2"));
    assert_eq!(response.headers()["sec-websocket-protocol"], "v2");
    assert_eq!(response.headers()["x-selected"], "v2");

    let (ws, response) =
        guard("connect", ClientBuilder::new(&url).protocol("v3").connect()).await.unwrap();
    assert_eq!(ws.protocol(), None);
    assert!(!response.headers().contains_key("sec-websocket-protocol"));
    assert_eq!(response.headers()["x-selected"], "");
}

fn deflate_client(url: &str) -> ClientBuilder {
    ClientBuilder::new(url).config(Config::default().deflate(Some(DeflateConfig::default())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_is_negotiated_when_offered_and_round_trips() {
    let addr = server().await;
    let (mut ws, response) =
        guard("connect", deflate_client(&format!("ws://{addr}/ws")).connect()).await.unwrap();
    let extensions = response.headers()["sec-websocket-extensions"].to_str().unwrap();
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    let text = "compressible ".repeat(100_000);
    guard("send", ws.send(Message::text(text.clone()))).await.unwrap();
    let echo = guard("echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text(text));

    // A client that does not offer it gets none.
    let (_, response) =
        guard("connect", ClientBuilder::new(format!("ws://{addr}/ws")).connect()).await.unwrap();
    assert!(!response.headers().contains_key("sec-websocket-extensions"));
    // A server configured without it declines the offer.
    let (mut ws, response) =
        guard("connect", deflate_client(&format!("ws://{addr}/plain")).connect()).await.unwrap();
    assert!(!response.headers().contains_key("sec-websocket-extensions"));
    guard("send", ws.send(Message::text("plain"))).await.unwrap();
    assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::text("plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_are_upgraded() {
    let addr = server().await;
    let url = format!("ws://{addr}/origin");
    let ok = ClientBuilder::new(&url).origin(HeaderValue::from_static("https://good.example"));
    guard("good origin", ok.connect()).await.expect("an allowed Origin is upgraded");
    guard("no origin", ClientBuilder::new(&url).connect()).await.expect("no Origin is upgraded");
    let bad = ClientBuilder::new(&url).origin(HeaderValue::from_static("https://evil.example"));
    let err = guard("bad origin", bad.connect()).await.expect_err("another Origin is refused");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_extraction_serves_a_page_and_upgrades_on_one_route() {
    let addr = server().await;
    let (status, _) = tokio::task::spawn_blocking(move || {
        raw_http(addr, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    let (mut ws, _) =
        guard("connect", ClientBuilder::new(format!("ws://{addr}/")).connect()).await.unwrap();
    guard("send", ws.send(Message::binary(vec![1, 2, 3]))).await.unwrap();
    assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::binary(vec![1, 2, 3]));
    // Asking for an upgrade and getting it wrong is still a rejection, not the page.
    let (status, _) = tokio::task::spawn_blocking(move || {
        raw_http(
            addr,
            &upgrade_request("GET", "/", "Upgrade: websocket\r\nConnection: Upgrade\r\n"),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 426);
}

// ---------------------------------------------------------------------------------------------
// The example

fn start_example() -> (common::ChildGuard, SocketAddr) {
    start_on_free_port("axum_echo", Command::new(example_binary("axum_echo")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_routes_answer_as_documented() {
    let (_child, addr) = start_example();
    let get = |path: &'static str, extra: &'static str| {
        tokio::task::spawn_blocking(move || {
            raw_http(
                addr,
                &format!(
                    "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
                ),
            )
        })
    };
    let (status, headers) = get("/", "").await.unwrap();
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/html; charset=utf-8")));
    let (status, _) = get("/hello", "").await.unwrap();
    assert_eq!(status, 200);
    let (status, headers) = get("/private/ws", "").await.unwrap();
    assert_eq!((status, header(&headers, "www-authenticate")), (401, Some("Bearer")));
    let (status, _) = get("/private/ws", "Authorization: Bearer wrong\r\n").await.unwrap();
    assert_eq!(status, 401);

    for path in ["/", "/ws"] {
        let (mut ws, response) =
            guard("connect", deflate_client(&format!("ws://{addr}{path}")).connect())
                .await
                .unwrap();
        assert!(response.headers().contains_key("sec-websocket-extensions"), "{path}");
        // Larger than the streaming threshold: it comes back through feed_chunk.
        let big = "streamed ".repeat(200_000);
        guard("send", ws.send(Message::text(big.clone()))).await.unwrap();
        assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::text(big));
        guard("close", ws.close(None)).await.unwrap();
        while guard("close reply", ws.recv()).await.is_some() {}
    }
    let private = ClientBuilder::new(format!("ws://{addr}/private/ws"))
        .header(axum::http::header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
    let (mut ws, _) = guard("connect", private.connect()).await.unwrap();
    guard("send", ws.send(Message::text("secret"))).await.unwrap();
    assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::text("secret"));
    let err =
        guard("unauthorized", ClientBuilder::new(format!("ws://{addr}/private/ws")).connect())
            .await
            .expect_err("no token, no upgrade");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
}

/// Python `websockets` against the example, with and without compression: a small and a large
/// message each way, and the negotiated extension checked.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys, websockets
async def main(url):
    for compression, expected in (("deflate", "permessage-deflate"), (None, None)):
        async with websockets.connect(url, compression=compression, max_size=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions")
            assert (ext or "").split(";")[0] == (expected or ""), ext
            for msg in ("hello", "x" * 300_000, b"\x00\xff" * 100_000):
                await ws.send(msg)
                assert await ws.recv() == msg
    print("python ok")
asyncio.run(main(sys.argv[1]))
"#;

#[test]
fn python_websockets_echoes_through_the_example_with_and_without_compression() {
    let (_child, addr) = start_example();
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(PYTHON_CLIENT).arg(format!("ws://{addr}/ws"));
    let log = common::log_path("axum-python", addr.port());
    let (status, out) = run_logged(cmd, &log, Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()) && out.contains("python ok"), "{out}");
}

/// `on_failed_upgrade` gets the error when the upgrade cannot complete: the handler holds the
/// `101` back past the handshake timeout (axum's server does not notice a client that leaves
/// while a handler is pending, so the timeout is what ends such an upgrade). The `on_upgrade`
/// callback does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failed_upgrade_gets_the_error_of_an_upgrade_that_cannot_complete() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::sync::mpsc;

    let (tx, mut rx) = mpsc::unbounded_channel::<wsx::Error>();
    let upgraded = Arc::new(AtomicBool::new(false));
    let flag = upgraded.clone();
    let never = any(move |u: WebSocketUpgrade| async move {
        let config = Config::default().handshake_timeout(Some(Duration::from_millis(300)));
        let _response = u
            .config(config)
            .on_failed_upgrade(move |e| tx.send(e).unwrap())
            .on_upgrade(move |_ws| async move { flag.store(true, Ordering::SeqCst) });
        // The handler never returns its response.
        std::future::pending::<Response>().await
    });
    let app = Router::new().route("/never", never);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let fields = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {KEY}\r\n"
    );
    // The client stays connected until the timeout has fired.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = upgrade_request("GET", "/never", &fields);
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.unwrap();
    let error = guard("on_failed_upgrade", rx.recv()).await.unwrap();
    assert!(matches!(error, wsx::Error::Timeout(_)), "{error:?}");
    assert!(!upgraded.load(Ordering::SeqCst), "on_upgrade ran for a failed upgrade");
    drop(tcp);
}
