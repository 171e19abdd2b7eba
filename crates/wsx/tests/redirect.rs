//! Redirects on the client: in-process servers on 127.0.0.1 answer upgrades with 301, 302,
//! 303, 307 or 308 and a `Location` (through wsx's own `Reject`, or raw bytes), and the final
//! hop is a real wsx upgrade. Each server records the requests it got, headers included.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect_error, echo_and_close, guard};
use http::header::{AUTHORIZATION, COOKIE, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wsx::{Accept, ClientBuilder, Config, Error, Message, Redirect, Reject};

#[tokio::test]
async fn relative_and_absolute_redirects_of_every_status_are_followed() {
    let b = HopServer::start(|path| match path {
        "/third" => Answer::Redirect(307, "http://127.0.0.1:{self}/fourth?x=1".into()),
        "/fourth?x=1" => Answer::Redirect(308, "fifth".into()),
        "/fifth" => Answer::Upgrade,
        _ => Answer::Redirect(404, String::new()),
    })
    .await;
    let b_port = b.addr.port();
    let a = HopServer::start(move |path| match path {
        "/start" => Answer::Redirect(301, "/second".into()),
        "/second" => Answer::Redirect(302, "//127.0.0.1:{self}/2b".into()),
        "/2b" => Answer::Redirect(303, format!("ws://127.0.0.1:{b_port}/third")),
        _ => Answer::Redirect(404, String::new()),
    })
    .await;
    let hops = Arc::new(Mutex::new(Vec::new()));
    let log = hops.clone();
    let builder = ClientBuilder::new(a.url("/start")).on_redirect(move |r: &Redirect| {
        log.lock().unwrap().push((r.status.as_u16(), r.to.clone()))
    });
    let (mut ws, response) = guard("connecting", builder.connect()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo(&mut ws).await;

    let expected = [
        (301, a.url("/second")),
        (302, a.url("/2b")),
        (303, b.url("/third")),
        (307, b.url("/fourth?x=1")),
        (308, b.url("/fifth")),
    ];
    assert_eq!(*hops.lock().unwrap(), expected);
    assert_eq!(a.paths(), ["/start", "/second", "/2b"]);
    assert_eq!(b.paths(), ["/third", "/fourth?x=1", "/fifth"]);
    // Each hop's Host header names the hop.
    assert_eq!(b.seen()[0].1[http::header::HOST], format!("127.0.0.1:{b_port}"));
}

#[tokio::test]
async fn a_redirect_loop_ends_at_the_limit_with_an_error_naming_status_and_location() {
    let server = HopServer::start(|_| Answer::Redirect(302, "/loop".into())).await;
    let location = server.url("/loop");
    for (limit, requests) in [(None, 11), (Some(3), 4), (Some(0), 1)] {
        let mut builder = ClientBuilder::new(server.url("/start"));
        if let Some(n) = limit {
            builder = builder.max_redirects(n);
        }
        let e = connect_error(builder).await;
        let reason = match limit {
            Some(0) => "redirects are off".to_owned(),
            n => format!("more than {} redirects", n.unwrap_or(10)),
        };
        assert_eq!(
            e.to_string(),
            format!("redirect 302 Found to {location} not followed: {reason}")
        );
        assert_eq!(e.status(), Some(StatusCode::FOUND));
        assert_eq!(server.take_seen().len(), requests, "limit {limit:?}");
    }
}

#[tokio::test]
async fn locations_that_are_not_websocket_urls_are_connect_error() {
    let server = HopServer::start(|path| match path {
        "/ftp" => Answer::Redirect(301, "ftp://127.0.0.1/file".into()),
        _ => Answer::Redirect(301, "http://[::1".into()),
    })
    .await;
    let e = connect_error(ClientBuilder::new(server.url("/ftp"))).await;
    assert!(
        e.to_string().ends_with("not followed: scheme ftp is not ws, wss, http or https"),
        "{e}"
    );
    let e = connect_error(ClientBuilder::new(server.url("/bad"))).await;
    assert!(e.to_string().contains("not followed: Location is not a valid URL"), "{e}");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_never_redirects_to_ws_but_https_locations_stay_on_tls() {
    let pki = common::pki::Pki::generate();
    let plain = HopServer::start(|_| Answer::Upgrade).await;
    let plain_url = plain.url("/plain");
    let tls = HopServer::start_tls(&pki, move |path| match path {
        "/down" => Answer::Redirect(301, plain_url.clone()),
        "/down-http" => Answer::Redirect(308, plain_url.replace("ws://", "http://")),
        "/up" => Answer::Redirect(302, "https://localhost:{self}/final".into()),
        _ => Answer::Upgrade,
    })
    .await;
    let port = tls.addr.port();
    let client = |path: &str| {
        ClientBuilder::new(format!("wss://localhost:{port}{path}"))
            .add_root_certificates_pem(pki.ca_pem.as_bytes())
            .unwrap()
    };
    for path in ["/down", "/down-http"] {
        let e = connect_error(client(path)).await;
        assert!(e.to_string().ends_with("not followed: it leaves TLS (wss:// to ws://)"), "{e}");
    }
    assert!(plain.paths().is_empty(), "the plain server was reached: {:?}", plain.paths());

    let (mut ws, _) = guard("connecting", client("/up").connect()).await.unwrap();
    echo(&mut ws).await;
    assert_eq!(tls.paths(), ["/down", "/down-http", "/up", "/final"]);
}

#[tokio::test]
async fn credentials_stay_on_their_origin() {
    let other = HopServer::start(|_| Answer::Upgrade).await;
    let other_url = other.url("/other");
    let first = HopServer::start(move |path| match path {
        "/start" => Answer::Redirect(301, "/same".into()),
        _ => Answer::Redirect(307, other_url.clone()),
    })
    .await;
    let mut secret = HeaderValue::from_static("k");
    secret.set_sensitive(true);
    let builder = ClientBuilder::new(first.url("/start"))
        .header(AUTHORIZATION, HeaderValue::from_static("Bearer token"))
        .header(COOKIE, HeaderValue::from_static("session=1"))
        .header("x-api-key".parse().unwrap(), secret)
        .header("x-trace".parse().unwrap(), HeaderValue::from_static("t1"));
    let (mut ws, _) = guard("connecting", builder.connect()).await.unwrap();
    echo(&mut ws).await;

    let seen = first.seen();
    assert_eq!(seen.len(), 2);
    for (path, headers) in &seen {
        assert_eq!(headers[AUTHORIZATION], "Bearer token", "{path}");
        assert_eq!(headers[COOKIE], "session=1", "{path}");
        assert_eq!(headers["x-api-key"], "k", "{path}");
    }
    let (_, headers) = &other.seen()[0];
    for dropped in [AUTHORIZATION.as_str(), COOKIE.as_str(), "x-api-key"] {
        assert!(!headers.contains_key(dropped), "{dropped} reached another origin: {headers:?}");
    }
    assert_eq!(headers["x-trace"], "t1");
}

#[tokio::test]
async fn userinfo_is_basic_auth_on_its_origin_only() {
    let other = HopServer::start(|_| Answer::Upgrade).await;
    let other_url = other.url("/other");
    let first = HopServer::start(move |path| match path {
        "/start" => Answer::Redirect(302, "/same".into()),
        _ => Answer::Redirect(302, other_url.clone()),
    })
    .await;
    let url = format!("ws://alice:open%20sesame@{}/start", first.addr);
    let (mut ws, _) = guard("connecting", ClientBuilder::new(url).connect()).await.unwrap();
    echo(&mut ws).await;
    // base64("alice:open sesame")
    let basic = "Basic YWxpY2U6b3BlbiBzZXNhbWU=";
    let seen = first.seen();
    assert_eq!(seen.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["/start", "/same"]);
    for (path, headers) in &seen {
        assert_eq!(headers[AUTHORIZATION], basic, "{path}");
    }
    assert!(!other.seen()[0].1.contains_key(AUTHORIZATION));
}

#[tokio::test]
async fn a_redirect_body_is_not_waited_for() {
    let target = HopServer::start(|_| Answer::Upgrade).await;
    // Announces a huge body, sends a little of it and keeps the connection open.
    let head = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: {}\r\nContent-Length: 1000000000\r\n\r\nmoved",
        target.url("/final")
    );
    let redirector = raw_server(head, Duration::ZERO).await;
    let url = format!("ws://{}/", redirector.0);
    let (mut ws, _) = guard("connecting", ClientBuilder::new(url).connect()).await.unwrap();
    echo(&mut ws).await;
    assert_eq!(target.paths(), ["/final"]);
}

#[tokio::test]
async fn the_handshake_timeout_bounds_the_whole_chain() {
    // Each hop answers after 200 ms; 100 hops would take 20 s.
    let head = "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n".to_owned();
    let slow = raw_server(head, Duration::from_millis(200)).await;
    let builder = ClientBuilder::new(format!("ws://{}/", slow.0))
        .max_redirects(100)
        .config(Config::default().handshake_timeout(Some(Duration::from_secs(1))));
    let e = connect_error(builder).await;
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
}

#[tokio::test]
async fn connect_on_reports_a_redirect_it_cannot_follow() {
    let server = HopServer::start(|_| Answer::Redirect(301, "/elsewhere".into())).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let result = guard("connecting", ClientBuilder::new(server.url("/")).connect_on(tcp)).await;
    let Err(Error::Redirect { status, location, .. }) = result else {
        panic!("not a redirect error")
    };
    assert_eq!((status.as_u16(), location), (301, server.url("/elsewhere")));
}

// ---------------------------------------------------------------------------------------------

/// Sends two messages, checks their echoes, closes.
async fn echo<S>(ws: &mut wsx::WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let msgs = [Message::text("after the redirects"), Message::binary(vec![1u8; 70_000])];
    echo_and_close(ws, &msgs).await;
}

/// What a hop server answers a path (with its query) with. `{self}` in a location is replaced
/// by the server's own port.
enum Answer {
    Redirect(u16, String),
    Upgrade,
}

type Route = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// A wsx server that answers each upgrade as its route says and echoes on upgraded ones.
struct HopServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    task: JoinHandle<()>,
}

impl HopServer {
    async fn start(route: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        Self::serve(Arc::new(route), None).await
    }

    #[cfg(feature = "tls")]
    async fn start_tls(
        pki: &common::pki::Pki,
        route: impl Fn(&str) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let config =
            wsx::tls::server_config(pki.leaf_pem.as_bytes(), pki.leaf_key_pem.as_bytes()).unwrap();
        Self::serve(Arc::new(route), Some(wsx::tls::TlsAcceptor::from(config))).await
    }

    #[cfg(feature = "tls")]
    async fn serve(route: Route, tls: Option<wsx::tls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (route, log, tls) = (route.clone(), log.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, addr.port(), &route, &log).await;
                            }
                        }
                        None => answer(tcp, addr.port(), &route, &log).await,
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    #[cfg(not(feature = "tls"))]
    async fn serve(route: Route, _tls: Option<()>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (route, log) = (route.clone(), log.clone());
                tokio::spawn(async move { answer(tcp, addr.port(), &route, &log).await });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The requests so far: path with query, and headers.
    fn seen(&self) -> Vec<(String, HeaderMap)> {
        self.seen.lock().unwrap().clone()
    }

    fn take_seen(&self) -> Vec<(String, HeaderMap)> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|(p, _)| p).collect()
    }
}

impl Drop for HopServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer<S>(stream: S, port: u16, route: &Route, log: &Mutex<Vec<(String, HeaderMap)>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let accepted = wsx::accept_with(stream, Config::default(), |req| {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        log.lock().unwrap().push((path.clone(), req.headers().clone()));
        match route(&path) {
            Answer::Upgrade => Ok(Accept::default()),
            Answer::Redirect(code, location) => {
                let location = location.replace("{self}", &port.to_string());
                let mut reject = Reject::status(StatusCode::from_u16(code).unwrap());
                if !location.is_empty() {
                    reject.headers.push((LOCATION, HeaderValue::from_str(&location).unwrap()));
                }
                Err(reject)
            }
        }
    })
    .await;
    let Ok(mut ws) = accepted else { return };
    while let Some(Ok(msg)) = ws.recv().await {
        if msg.is_data() && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// A server that answers every request, `delay` after its head arrived, with `response` and
/// keeps the connection open. Stopped when the result is dropped.
async fn raw_server(response: String, delay: Duration) -> (SocketAddr, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                tokio::time::sleep(delay).await;
                let _ = tcp.write_all(response.as_bytes()).await;
                // Hold the connection until the client drops it.
                let _ = tcp.read(&mut byte).await;
            });
        }
    });
    (addr, AbortOnDrop(task))
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
