//! The HTTP/2 client (`ClientBuilder::http2`, `Http2Pool`, `Http2Connection`) against real
//! loopback servers: TLS with ALPN (a test CA made at test time) and plain h2c with prior
//! knowledge. One TCP connection carries every WebSocket of a pool to an origin; a server that
//! picks `http/1.1` by ALPN gets the WebSocket over HTTP/1.1 on that same TLS connection; a
//! server whose SETTINGS lack `ENABLE_CONNECT_PROTOCOL` gets HTTP/1.1 and the pool remembers
//! it; a refusal is an error with its status; a redirect over HTTP/2 is followed.
#![cfg(feature = "tls")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::guard;
use common::pki::Pki;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wsx::h2::{Http2Connection, Http2Pool};
use wsx::proto::handshake::ServerPolicy;
use wsx::{ClientBuilder, Config, Error, MaybeTlsStream, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_carries_ten_concurrent_websockets_on_one_tcp_connection() {
    let pki = Pki::generate();
    let server = Server::start(&pki, Options::default()).await;
    let pool = Http2Pool::new();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let builder = server.client(&pki, &format!("/ws{i}")).http2_pool(pool.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ws, response) = guard("connect", builder.connect()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "an HTTP/2 WebSocket is a 200");
            assert!(matches!(ws.get_ref(), MaybeTlsStream::Http2(_)), "not over HTTP/2");
            let msg = Message::text(format!("hello {i}"));
            ws.send(msg.clone()).await.unwrap();
            assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), msg);
            ws
        }));
    }
    let mut sockets = Vec::new();
    for task in tasks {
        sockets.push(task.await.unwrap());
    }
    // All ten open at once, as streams of one connection.
    let ids: std::collections::HashSet<u32> = sockets
        .iter()
        .map(|ws| match ws.get_ref() {
            MaybeTlsStream::Http2(s) => u32::from(s.stream_id()),
            _ => unreachable!("checked above"),
        })
        .collect();
    assert_eq!(ids.len(), 10, "each WebSocket is a stream of its own");
    assert_eq!(pool.connections(), 1);
    let seen = server.seen();
    eprintln!("10 concurrent WebSockets: {} TCP connection(s) accepted", seen.tcp);
    assert_eq!(seen.tcp, 1, "one TCP connection for the whole pool: {seen:?}");
    assert_eq!(seen.alpn, ["h2"]);
    assert_eq!(seen.websockets.iter().filter(|w| w.starts_with("h2 /ws")).count(), 10, "{seen:?}");
    for mut ws in sockets {
        common::echo_and_close(&mut ws, &[Message::binary(vec![7u8; 100_000])]).await;
    }
    // A WebSocket opened after the others closed still reuses the connection.
    let (mut ws, _) =
        guard("connect", server.client(&pki, "/again").http2_pool(pool.clone()).connect())
            .await
            .unwrap();
    common::echo_and_close(&mut ws, &[Message::text("again")]).await;
    assert_eq!(server.seen().tcp, 1);
}

#[tokio::test]
async fn h2c_with_prior_knowledge_carries_ten_websockets_on_one_tcp_connection() {
    // `ClientBuilder` keeps `ws://` on HTTP/1.1; `Http2Connection` speaks h2c on any transport.
    let server = Server::start_plain().await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let conn =
        guard("h2c handshake", Http2Connection::handshake(tcp, "127.0.0.1", false)).await.unwrap();
    assert!(conn.supports_websockets());
    let opens = (0..10).map(|i| {
        let conn = conn.clone();
        async move {
            let path = format!("/c{i}");
            conn.websocket(&path, Config::default(), &[], &Default::default()).await
        }
    });
    let opened = guard("opening 10", futures_util::future::join_all(opens)).await;
    for (i, result) in opened.into_iter().enumerate() {
        let (mut ws, response) = result.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        common::echo_and_close(&mut ws, &[Message::text(format!("plain {i}"))]).await;
    }
    let seen = server.seen();
    assert_eq!(seen.tcp, 1, "{seen:?}");
    assert_eq!(seen.websockets.len(), 10, "{seen:?}");
    assert!(seen.websockets.iter().all(|w| w.starts_with("h2 /c")), "{seen:?}");
}

#[tokio::test]
async fn alpn_http11_gets_the_websocket_over_http11_on_the_same_tls_connection() {
    let pki = Pki::generate();
    let options = Options { alpn: vec![b"http/1.1".to_vec()], ..Options::default() };
    let server = Server::start(&pki, options).await;
    let pool = Http2Pool::new();
    let (mut ws, response) =
        guard("connect", server.client(&pki, "/one").http2_pool(pool.clone()).connect())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)), "HTTP/1.1 over TLS expected");
    common::echo_and_close(&mut ws, &[Message::text("over http/1.1")]).await;
    let seen = server.seen();
    assert_eq!(seen.tcp, 1, "the TLS connection that chose http/1.1 is used, not a second one");
    assert_eq!(seen.alpn, ["http/1.1"]);
    assert_eq!(seen.websockets, ["h1 /one"]);
    assert_eq!(pool.connections(), 0, "no HTTP/2 connection to keep");

    let (mut ws, _) =
        guard("connect", server.client(&pki, "/two").http2_pool(pool.clone()).connect())
            .await
            .unwrap();
    common::echo_and_close(&mut ws, &[Message::text("again")]).await;
    let seen = server.seen();
    assert_eq!(seen.tcp, 2, "one connection per HTTP/1.1 WebSocket: {seen:?}");
    assert_eq!(seen.websockets, ["h1 /one", "h1 /two"]);
}

#[tokio::test]
async fn settings_without_extended_connect_fall_back_to_http11_and_the_pool_remembers() {
    let pki = Pki::generate();
    let options = Options { extended_connect: false, ..Options::default() };
    let server = Server::start(&pki, options).await;
    let pool = Http2Pool::new();
    let (mut ws, response) =
        guard("connect", server.client(&pki, "/first").http2_pool(pool.clone()).connect())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)), "HTTP/1.1 over TLS expected");
    common::echo_and_close(&mut ws, &[Message::text("fell back")]).await;
    let seen = server.seen();
    // The h2 connection told the client no; a new TLS connection, offering only http/1.1.
    assert_eq!(seen.alpn, ["h2", "http/1.1"], "{seen:?}");
    assert_eq!(seen.websockets, ["h1 /first"]);
    assert_eq!(seen.h2_requests, 0, "no request was sent over HTTP/2");

    let (mut ws, _) =
        guard("connect", server.client(&pki, "/second").http2_pool(pool.clone()).connect())
            .await
            .unwrap();
    common::echo_and_close(&mut ws, &[Message::text("remembered")]).await;
    let seen = server.seen();
    assert_eq!(seen.alpn, ["h2", "http/1.1", "http/1.1"], "straight to HTTP/1.1: {seen:?}");
    assert_eq!(seen.websockets, ["h1 /first", "h1 /second"]);
    assert_eq!(pool.connections(), 0);

    // Another pool knows nothing yet and asks again.
    let (mut ws, _) =
        guard("connect", server.client(&pki, "/third").http2(true).connect()).await.unwrap();
    common::echo_and_close(&mut ws, &[Message::text("new pool")]).await;
    assert_eq!(server.seen().alpn, ["h2", "http/1.1", "http/1.1", "h2", "http/1.1"]);
}

#[tokio::test]
async fn a_403_to_the_connect_is_an_error_with_the_status_and_body() {
    let pki = Pki::generate();
    let options = Options { behaviour: Behaviour::Forbid, ..Options::default() };
    let server = Server::start(&pki, options).await;
    let err = common::connect_error(server.client(&pki, "/private").http2(true)).await;
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN), "{err:?}");
    let Error::Rejected(response) = &err else { panic!("expected Rejected, got {err:?}") };
    assert_eq!(response.body().as_ref(), b"not for you\n");
    assert_eq!(
        err.to_string(),
        "server refused the WebSocket upgrade: 403 Forbidden (not for you)"
    );
    let seen = server.seen();
    assert_eq!(seen.websockets, ["h2 /private"], "refused over HTTP/2, not retried: {seen:?}");
    assert_eq!(seen.tcp, 1);
}

#[tokio::test]
async fn a_307_over_h2_is_followed_on_the_same_connection() {
    let pki = Pki::generate();
    let options = Options { behaviour: Behaviour::RedirectOld, ..Options::default() };
    let server = Server::start(&pki, options).await;
    let hops = Arc::new(Mutex::new(Vec::new()));
    let hops_ = hops.clone();
    let builder = server
        .client(&pki, "/old?x=1")
        .http2(true)
        .on_redirect(move |r| hops_.lock().unwrap().push((r.status.as_u16(), r.to.clone())));
    let (mut ws, response) = guard("connect", builder.connect()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Http2(_)));
    common::echo_and_close(&mut ws, &[Message::text("moved")]).await;
    let to = format!("wss://localhost:{}/new", server.addr.port());
    assert_eq!(*hops.lock().unwrap(), [(307, to)]);
    let seen = server.seen();
    assert_eq!(seen.websockets, ["h2 /old?x=1", "h2 /new"], "{seen:?}");
    assert_eq!(seen.tcp, 1, "the redirect to the same origin reuses the h2 connection");

    // With redirects off it is an error naming the status and the location.
    let err = common::connect_error(server.client(&pki, "/old").http2(true).max_redirects(0)).await;
    assert_eq!(err.status(), Some(StatusCode::TEMPORARY_REDIRECT), "{err:?}");
    assert!(
        matches!(&err, Error::Redirect { location, .. } if location.ends_with("/new")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The server

/// How the server answers WebSocket requests over HTTP/2 (over HTTP/1.1 it always echoes).
#[derive(Debug, Clone, Copy, Default)]
enum Behaviour {
    #[default]
    Echo,
    /// 403 with a short body.
    Forbid,
    /// 307 from `/old` to `/new`; echo elsewhere.
    RedirectOld,
}

#[derive(Debug, Clone)]
struct Options {
    /// What the server's ALPN offers, in its preference order.
    alpn: Vec<Vec<u8>>,
    /// Whether its HTTP/2 SETTINGS enable extended CONNECT.
    extended_connect: bool,
    behaviour: Behaviour,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            extended_connect: true,
            behaviour: Behaviour::Echo,
        }
    }
}

/// What the server saw.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// TCP connections accepted.
    tcp: usize,
    /// The ALPN protocol of each TLS connection, in order.
    alpn: Vec<String>,
    /// Each WebSocket request: `h2 PATH` or `h1 PATH`.
    websockets: Vec<String>,
    /// Requests of any kind received over HTTP/2.
    h2_requests: usize,
}

/// A loopback server: TLS with ALPN (HTTP/2 with `wsx::h2`, HTTP/1.1 with `wsx::accept_with`),
/// or h2c with prior knowledge on plain TCP.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(pki: &Pki, options: Options) -> Self {
        let config =
            wsx::tls::server_config(pki.leaf_pem.as_bytes(), pki.leaf_key_pem.as_bytes()).unwrap();
        let mut config = (*config).clone();
        config.alpn_protocols = options.alpn.clone();
        let acceptor = wsx::tls::TlsAcceptor::from(Arc::new(config));
        Self::listen(move |tcp, seen| {
            let (acceptor, options) = (acceptor.clone(), options.clone());
            async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
                seen.lock().unwrap().alpn.push(String::from_utf8(alpn.clone()).unwrap());
                if alpn == b"h2" {
                    serve_h2(tls, &options, &seen).await;
                } else {
                    serve_h1(tls, &seen).await;
                }
            }
        })
        .await
    }

    async fn start_plain() -> Self {
        Self::listen(|tcp, seen| async move { serve_h2(tcp, &Options::default(), &seen).await })
            .await
    }

    async fn listen<F, Fut>(on_connection: F) -> Self
    where
        F: Fn(tokio::net::TcpStream, Arc<Mutex<Seen>>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let seen_ = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                seen_.lock().unwrap().tcp += 1;
                tokio::spawn(on_connection(tcp, seen_.clone()));
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// A client of `path` on this server that trusts the test CA.
    fn client(&self, pki: &Pki, path: &str) -> ClientBuilder {
        ClientBuilder::new(format!("wss://localhost:{}{path}", self.addr.port()))
            .add_root_certificates_pem(pki.ca_pem.as_bytes())
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_h2<S>(io: S, options: &Options, seen: &Arc<Mutex<Seen>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = if options.extended_connect {
        wsx::h2::server_builder()
    } else {
        h2::server::Builder::new()
    };
    let Ok(mut conn) = builder.handshake::<_, bytes::Bytes>(io).await else { return };
    let policy = ServerPolicy::new(Config::default());
    while let Some(Ok((request, respond))) = conn.accept().await {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        {
            let mut seen = seen.lock().unwrap();
            seen.h2_requests += 1;
            if wsx::h2::is_websocket_request(&request) {
                seen.websockets.push(format!("h2 {path}"));
            }
        }
        let answer = |status: StatusCode, location: Option<&str>, body: &'static str| {
            let mut response = http::Response::new(bytes::Bytes::from_static(body.as_bytes()));
            *response.status_mut() = status;
            if let Some(location) = location {
                response.headers_mut().insert(http::header::LOCATION, location.parse().unwrap());
            }
            response
        };
        match options.behaviour {
            Behaviour::Forbid => {
                wsx::h2::respond_with(respond, answer(StatusCode::FORBIDDEN, None, "not for you\n"))
            }
            Behaviour::RedirectOld if path.starts_with("/old") => wsx::h2::respond_with(
                respond,
                answer(StatusCode::TEMPORARY_REDIRECT, Some("/new"), "moved\n"),
            ),
            _ => match wsx::h2::accept(request, respond, &policy) {
                Ok(ws) => {
                    tokio::spawn(echo(ws));
                }
                Err(e) => panic!("the test client's CONNECT was refused: {e}"),
            },
        }
    }
}

async fn serve_h1<S>(io: S, seen: &Arc<Mutex<Seen>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let accepted = wsx::accept_with(io, Config::default(), |req| {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        seen.lock().unwrap().websockets.push(format!("h1 {path}"));
        Ok(wsx::Accept::default())
    })
    .await;
    if let Ok(ws) = accepted {
        echo(ws).await;
    }
}

async fn echo<S>(mut ws: wsx::WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.recv().await {
        if msg.is_data() && ws.send(msg).await.is_err() {
            break;
        }
    }
}
