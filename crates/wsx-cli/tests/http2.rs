//! WebSockets over HTTP/2 (RFC 8441) against the real `wsx serve --tls-cert/--tls-key`: `wsx
//! connect --http2` echoes as an h2 stream, `GET /stats` counts WebSockets per HTTP version,
//! HTTP/1.1 clients still work on the same port, 50 WebSockets share one h2 connection, and
//! CONNECTs that are not valid WebSocket requests get their status.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Server, HANG_GUARD, WSX};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wsx::h2::Http2Connection;
use wsx::tls::rustls;
use wsx::{ClientBuilder, Config, MaybeTlsStream, Message};

/// `wsx serve` with TLS and the CA that signed its certificate.
struct TlsServer {
    server: Server,
    ca: PathBuf,
}

fn serve_tls() -> TlsServer {
    let dir = common::tls_fixtures();
    let (cert, key) = (dir.join("leaf.pem"), dir.join("leaf.key"));
    let server = Server::start(&["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    TlsServer { server, ca: dir.join("ca.pem") }
}

impl TlsServer {
    fn port(&self) -> u16 {
        self.server.port
    }

    fn url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.port())
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).unwrap()
    }

    /// TLS to the server offering `alpn`, and the protocol the server chose.
    async fn tls(
        &self,
        alpn: &[&[u8]],
    ) -> (impl AsyncRead + AsyncWrite + Unpin + Send + 'static, Option<Vec<u8>>) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in wsx::tls::certificates_from_pem(&self.ca_pem()).unwrap() {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port())).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = wsx::tls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        (tls, chosen)
    }

    /// `GET /stats` over HTTP/1.1 (TLS, ALPN http/1.1).
    async fn stats(&self) -> Stats {
        let (mut tls, _) = self.tls(&[b"http/1.1"]).await;
        tls.write_all(b"GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut bytes = Vec::new();
        // Up to the end of the connection (`Connection: close`), however TLS ends.
        let _ = guard("stats", tls.read_to_end(&mut bytes)).await;
        let response = common::Response::parse(&bytes);
        assert_eq!(response.status, 200, "{response:?}");
        Stats::parse(&String::from_utf8(response.body).unwrap())
    }

    /// An HTTP/2 connection (TLS, ALPN h2) with a raw `h2` client, after the server's
    /// SETTINGS arrived (a PING round trip), so that extended CONNECT may be sent.
    async fn raw_h2(&self) -> h2::client::SendRequest<Bytes> {
        let (tls, alpn) = self.tls(&[b"h2"]).await;
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "the server offers h2");
        let (send, mut conn) = h2::client::handshake(tls).await.unwrap();
        let mut ping = conn.ping_pong().unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        guard("ping", ping.ping(h2::Ping::opaque())).await.unwrap();
        assert!(send.is_extended_connect_protocol_enabled());
        send
    }
}

/// The figures of `GET /stats` this file checks.
#[derive(Debug, PartialEq, Eq)]
struct Stats {
    http1_active: u64,
    http1_total: u64,
    http2_active: u64,
    http2_total: u64,
    http2_connections: u64,
}

impl Stats {
    fn parse(json: &str) -> Self {
        // `"http1":{"active":A,"total":T}`: the figure after `"key":` inside the section.
        let field = |section: &str, key: &str| -> u64 {
            let start = json.find(&format!("\"{section}\":")).unwrap_or_else(|| panic!("{json}"));
            let rest = &json[start + section.len() + 3..];
            let rest = if key.is_empty() {
                rest
            } else {
                &rest[rest.find(key).unwrap() + key.len() + 1..]
            };
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
            rest[..end].parse().unwrap_or_else(|_| panic!("{json}"))
        };
        Self {
            http1_active: field("http1", "\"active\""),
            http1_total: field("http1", "\"total\""),
            http2_active: field("http2", "\"active\""),
            http2_total: field("http2", "\"total\""),
            http2_connections: field("http2_connections", ""),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f).await.unwrap_or_else(|_| panic!("{what}: hung"))
}

#[test]
fn wsx_connect_http2_echoes_and_stats_count_it_as_http2() {
    let server = serve_tls();
    let run = connect(&["--http2", "-v", "--cacert", path_str(&server.ca), &server.url("/")]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "hello\nworld\n", "{run:?}");
    assert!(run.stderr.starts_with("HTTP/2.0 200"), "-v shows the HTTP/2 answer: {run:?}");

    let rt = runtime();
    let stats = rt.block_on(server.stats());
    assert_eq!(stats.http2_total, 1, "{stats:?}");
    assert_eq!(stats.http1_total, 0, "{stats:?}");

    // Without --http2: HTTP/1.1 on the same port, counted as such.
    let run = connect(&["-v", "--cacert", path_str(&server.ca), &server.url("/")]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "hello\nworld\n", "{run:?}");
    assert!(run.stderr.starts_with("HTTP/1.1 101"), "{run:?}");
    let stats = rt.block_on(server.stats());
    assert_eq!((stats.http1_total, stats.http2_total), (1, 1), "{stats:?}");
}

#[test]
fn http11_and_http2_websockets_share_the_port() {
    let server = serve_tls();
    runtime().block_on(async {
        let ca = server.ca_pem();
        let h1 = ClientBuilder::new(server.url("/h1")).add_root_certificates_pem(&ca).unwrap();
        let (mut ws1, response) = guard("h1", h1.connect()).await.unwrap();
        assert_eq!(response.status(), 101);
        assert!(matches!(ws1.get_ref(), MaybeTlsStream::Tls(_)));
        let h2 = ClientBuilder::new(server.url("/h2"))
            .add_root_certificates_pem(&ca)
            .unwrap()
            .http2(true);
        let (mut ws2, response) = guard("h2", h2.connect()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(matches!(ws2.get_ref(), MaybeTlsStream::Http2(_)));

        let stats = server.stats().await;
        assert_eq!(
            stats,
            Stats {
                http1_active: 1,
                http1_total: 1,
                http2_active: 1,
                http2_total: 1,
                http2_connections: 1
            }
        );
        echo_and_close(&mut ws1, &[Message::text("one"), Message::binary(vec![1u8; 300_000])])
            .await;
        echo_and_close(&mut ws2, &[Message::text("two"), Message::binary(vec![2u8; 300_000])])
            .await;
        // The page over HTTP/2 too.
        let send = server.raw_h2().await;
        let request =
            http::Request::get(format!("https://localhost:{}/", server.port())).body(()).unwrap();
        let (response, _) =
            send.clone().ready().await.unwrap().send_request(request, true).unwrap();
        let response = guard("page", response).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    });
}

#[test]
fn fifty_websockets_echo_on_one_http2_connection() {
    let server = serve_tls();
    runtime().block_on(async {
        let (tls, _) = server.tls(&[b"h2", b"http/1.1"]).await;
        let authority = format!("localhost:{}", server.port());
        let conn = guard("h2", Http2Connection::handshake(tls, &authority, true)).await.unwrap();
        assert!(conn.supports_websockets(), "wsx serve advertises extended CONNECT");
        let opens = (0..50).map(|i| {
            let conn = conn.clone();
            async move {
                let path = format!("/s{i}");
                conn.websocket(&path, Config::default(), &[], &Default::default()).await
            }
        });
        let mut sockets = Vec::new();
        for opened in guard("opening 50", futures_util::future::join_all(opens)).await {
            sockets.push(opened.unwrap().0);
        }
        let stats = server.stats().await;
        assert_eq!((stats.http2_active, stats.http2_connections), (50, 1), "{stats:?}");
        // All 50 at once: send everything, then read every echo.
        for (i, ws) in sockets.iter_mut().enumerate() {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
            ws.send(Message::binary(vec![i as u8; 20_000])).await.unwrap();
        }
        for (i, ws) in sockets.iter_mut().enumerate() {
            let text = guard("echo", ws.recv()).await.unwrap().unwrap();
            assert_eq!(text, Message::text(format!("m{i}")));
            let binary = guard("echo", ws.recv()).await.unwrap().unwrap();
            assert_eq!(binary, Message::binary(vec![i as u8; 20_000]));
        }
        for ws in &mut sockets {
            echo_and_close(ws, &[]).await;
        }
        let mut stats = server.stats().await;
        for _ in 0..100 {
            if stats.http2_active == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            stats = server.stats().await;
        }
        assert_eq!((stats.http2_active, stats.http2_total), (0, 50), "{stats:?}");
    });
}

#[test]
fn connects_that_are_not_websocket_requests_get_their_status() {
    let server = serve_tls();
    runtime().block_on(async {
        let send = server.raw_h2().await;
        let port = server.port();
        let status = |protocol: &'static str, version: Option<&'static str>, path: &'static str| {
            let send = send.clone();
            async move {
                let mut request = http::Request::builder()
                    .method(http::Method::CONNECT)
                    .uri(format!("https://localhost:{port}{path}"));
                if let Some(version) = version {
                    request = request.header("sec-websocket-version", version);
                }
                let mut request = request.body(()).unwrap();
                request.extensions_mut().insert(h2::ext::Protocol::from_static(protocol));
                let mut send = guard("ready", send.ready()).await.unwrap();
                let (response, _stream) = send.send_request(request, false).unwrap();
                let response = guard("answer", response).await.unwrap();
                (response.status().as_u16(), response.headers().clone())
            }
        };
        // A protocol other than websocket is not served on any resource: the page's 405.
        let (code, headers) = status("chat", Some("13"), "/").await;
        assert_eq!(code, 405, "{headers:?}");
        assert_eq!(headers["allow"], "GET, HEAD");
        let (code, _) = status("not-websocket", Some("13"), "/nowhere").await;
        assert_eq!(code, 404);
        // :protocol websocket with the wrong version: 426 naming the version spoken.
        let (code, headers) = status("websocket", Some("8"), "/").await;
        assert_eq!(code, 426, "{headers:?}");
        assert_eq!(headers["sec-websocket-version"], "13");
        let (code, headers) = status("websocket", None, "/").await;
        assert_eq!(code, 426, "{headers:?}");
        // The connection still serves WebSockets afterwards.
        let (code, _) = status("websocket", Some("13"), "/").await;
        assert_eq!(code, 200);
    });
}

// ---------------------------------------------------------------------------------------------

async fn echo_and_close<S>(ws: &mut wsx::WebSocket<S>, msgs: &[Message])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for msg in msgs {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(&guard("echo", ws.recv()).await.unwrap().unwrap(), msg);
    }
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = guard("close", ws.recv()).await {}
}

#[derive(Debug)]
struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// `wsx connect ARGS` with two lines on stdin, to completion (killed after [`HANG_GUARD`]).
fn connect(args: &[&str]) -> Run {
    let mut child = Command::new(WSX)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"hello\nworld\n");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(HANG_GUARD) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("wsx connect {args:?} hung");
        }
    };
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("the target directory's path is UTF-8")
}
