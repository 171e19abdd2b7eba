//! The client through real proxies: tinyproxy (HTTP `CONNECT`, Basic auth) and microsocks
//! (SOCKS5, username/password), against an in-process wsx echo server on 127.0.0.1. The
//! environment variables are given to `ClientBuilder` through a lookup function, so no test
//! changes the process environment.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::proxies::{microsocks, tinyproxy};
use common::{connect_error, echo_and_close, guard};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wsx::{ClientBuilder, Error, Message};

const USER: &str = "wsxuser";
const PASS: &str = "s3cret";

#[tokio::test]
async fn echo_through_tinyproxy() {
    let server = EchoServer::start().await;
    let Some(proxy) = tinyproxy(&[server.port()], None) else { return };
    let builder = ClientBuilder::new(server.url()).proxy_url(&proxy.url("http", None)).unwrap();
    echo(builder).await;
    let connect = format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port());
    assert!(proxy.log().contains(&connect), "tinyproxy saw no {connect:?}:\n{}", proxy.log());
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn wss_runs_tls_end_to_end_inside_the_tunnel() {
    let pki = common::pki::Pki::generate();
    let server = EchoServer::start_tls(&pki).await;
    let Some(proxy) = tinyproxy(&[server.port()], None) else { return };
    let url = format!("wss://localhost:{}/", server.port());
    let builder = ClientBuilder::new(url)
        .add_root_certificates_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .proxy_url(&proxy.url("http", None))
        .unwrap();
    echo(builder).await;
    let connect = format!("CONNECT localhost:{} HTTP/1.1", server.port());
    assert!(proxy.log().contains(&connect), "tinyproxy saw no {connect:?}:\n{}", proxy.log());
}

#[tokio::test]
async fn tinyproxy_basic_auth_accepted_and_connect_error() {
    let server = EchoServer::start().await;
    let Some(proxy) = tinyproxy(&[server.port()], Some((USER, PASS))) else { return };
    let with = |auth| ClientBuilder::new(server.url()).proxy_url(&proxy.url("http", auth)).unwrap();
    echo(with(Some((USER, PASS)))).await;

    let e = connect_error(with(None)).await;
    assert_eq!(
        e.to_string(),
        format!("proxy 127.0.0.1:{} requires authentication (407)", proxy.port)
    );
    assert!(matches!(e, Error::Proxy { status: Some(s), .. } if s.as_u16() == 407), "{e:?}");

    // tinyproxy answers wrong credentials with 401, not 407.
    let e = connect_error(with(Some((USER, "wrong")))).await;
    assert!(!e.to_string().contains("wrong") && !format!("{e:?}").contains("wrong"));
    let Error::Proxy { status: Some(status), .. } = e else { panic!("{e:?}") };
    assert!(matches!(status.as_u16(), 401 | 407), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "proxy 127.0.0.1:{} refused the credentials of user \"{USER}\" ({})",
            proxy.port,
            status.as_u16()
        )
    );
}

#[tokio::test]
async fn tinyproxy_refusing_the_port_is_a_clear_error() {
    let server = EchoServer::start().await;
    // Tunnels allowed to another port only.
    let Some(proxy) = tinyproxy(&[server.port().wrapping_add(1)], None) else { return };
    let builder = ClientBuilder::new(server.url()).proxy_url(&proxy.url("http", None)).unwrap();
    let e = connect_error(builder).await;
    let Error::Proxy { proxy: name, status, .. } = &e else { panic!("{e:?}") };
    assert_eq!(name, &format!("127.0.0.1:{}", proxy.port));
    assert_eq!(status.map(|s| s.as_u16()), Some(403), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "proxy 127.0.0.1:{} refused the tunnel to 127.0.0.1:{} (403 Forbidden)",
            proxy.port,
            server.port()
        )
    );
}

#[tokio::test]
async fn echo_through_microsocks_socks5_resolves_here_socks5h_at_the_proxy() {
    let server = EchoServer::start().await;
    let Some(proxy) = microsocks(None) else { return };
    let url = format!("ws://localhost:{}/", server.port());

    let builder = ClientBuilder::new(url.clone()).proxy_url(&proxy.url("socks5", None)).unwrap();
    echo(builder).await;
    let by_address = format!("connected to 127.0.0.1:{}", server.port());
    assert!(proxy.log().contains(&by_address), "microsocks log:\n{}", proxy.log());
    assert!(!proxy.log().contains("connected to localhost"), "{}", proxy.log());

    let builder = ClientBuilder::new(url).proxy_url(&proxy.url("socks5h", None)).unwrap();
    echo(builder).await;
    let by_name = format!("connected to localhost:{}", server.port());
    assert!(proxy.log().contains(&by_name), "microsocks log:\n{}", proxy.log());
}

#[tokio::test]
async fn microsocks_username_password_accepted_and_connect_error() {
    let server = EchoServer::start().await;
    let Some(proxy) = microsocks(Some((USER, PASS))) else { return };
    let with =
        |auth| ClientBuilder::new(server.url()).proxy_url(&proxy.url("socks5", auth)).unwrap();
    echo(with(Some((USER, PASS)))).await;

    let e = connect_error(with(None)).await;
    assert_eq!(
        e.to_string(),
        format!(
            "proxy 127.0.0.1:{} requires authentication (SOCKS5 username/password)",
            proxy.port
        )
    );
    let e = connect_error(with(Some((USER, "wrong")))).await;
    let expected = format!(
        "proxy 127.0.0.1:{} refused the username and password of user \"{USER}\"",
        proxy.port
    );
    assert!(e.to_string().starts_with(&expected), "{e}");
}

#[tokio::test]
async fn socks5_failure_to_reach_the_server_says_what_the_reply_means() {
    let Some(proxy) = microsocks(None) else { return };
    let closed = common::free_addr();
    let url = format!("ws://{closed}/");
    let e =
        connect_error(ClientBuilder::new(url).proxy_url(&proxy.url("socks5", None)).unwrap()).await;
    let text = e.to_string();
    let prefix = format!("proxy 127.0.0.1:{} could not connect to {closed}: ", proxy.port);
    assert!(text.starts_with(&prefix) && text.contains("(SOCKS5 reply "), "{text}");
}

#[tokio::test]
async fn an_unreachable_proxy_is_named() {
    let server = EchoServer::start().await;
    let nowhere = common::free_addr();
    for scheme in ["http", "socks5"] {
        let builder =
            ClientBuilder::new(server.url()).proxy_url(&format!("{scheme}://{nowhere}")).unwrap();
        let e = connect_error(builder).await;
        assert!(e.to_string().starts_with(&format!("proxy {nowhere} is unreachable: ")), "{e}");
    }
}

#[tokio::test]
async fn the_connect_timeout_covers_the_proxy_handshake() {
    // A "proxy" that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    for scheme in ["http", "socks5h"] {
        let builder = ClientBuilder::new("ws://example.invalid/")
            .proxy_url(&format!("{scheme}://{addr}"))
            .unwrap()
            .connect_timeout(Some(Duration::from_millis(300)));
        let e = connect_error(builder).await;
        assert!(matches!(e, Error::Timeout(_)), "{scheme}: {e:?}");
    }
}

#[tokio::test]
async fn the_environment_names_the_proxy_as_curl_reads_it() {
    let server = EchoServer::start().await;
    let Some(http) = tinyproxy(&[server.port()], None) else { return };
    let Some(socks) = microsocks(None) else { return };

    let ws_proxy = env(&[("ws_proxy", http.url("http", None))]);
    echo(ClientBuilder::new(server.url()).proxy_env(ws_proxy)).await;
    assert!(http.log().contains(&format!("CONNECT 127.0.0.1:{}", server.port())), "{}", http.log());

    let all_proxy = env(&[("ALL_PROXY", socks.url("socks5h", None))]);
    echo(ClientBuilder::new(server.url()).proxy_env(all_proxy)).await;
    let via_socks = format!("connected to 127.0.0.1:{}", server.port());
    assert!(socks.log().contains(&via_socks), "{}", socks.log());

    // wss_proxy and https_proxy are for wss:// only, and curl never reads HTTP_PROXY.
    let nowhere = format!("http://{}", common::free_addr());
    let other_schemes = env(&[
        ("wss_proxy", nowhere.clone()),
        ("https_proxy", nowhere.clone()),
        ("HTTP_PROXY", nowhere),
    ]);
    echo(ClientBuilder::new(server.url()).proxy_env(other_schemes)).await;
}

#[tokio::test]
async fn no_proxy_both_ways() {
    let server = EchoServer::start().await;
    let nowhere = common::free_addr();
    let proxied = |no_proxy: &str| {
        let vars = [("ws_proxy", format!("http://{nowhere}")), ("no_proxy", no_proxy.to_owned())];
        ClientBuilder::new(server.url()).proxy_env(env(&vars))
    };
    for direct in
        ["127.0.0.1", "example.com, 127.0.0.0/8", "*", &format!("127.0.0.1:{}", server.port())]
    {
        echo(proxied(direct)).await;
    }
    for through in ["example.com", "127.0.0.2", "127.0.0.1:1", ""] {
        let e = connect_error(proxied(through)).await;
        assert!(
            e.to_string().starts_with(&format!("proxy {nowhere} is unreachable")),
            "no_proxy={through:?}: {e}"
        );
    }
    // no_proxy() ignores the environment altogether.
    echo(proxied("").no_proxy()).await;
}

/// An environment of `vars` only.
fn env(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    let vars: Vec<(String, String)> =
        vars.iter().map(|(n, v)| ((*n).to_owned(), v.clone())).collect();
    move |name| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// Connects with `builder`, checks two echoes and closes.
async fn echo(builder: ClientBuilder) {
    let (mut ws, _) = guard("connecting", builder.connect()).await.unwrap();
    let msgs = [Message::text("through the proxy"), Message::binary(vec![7u8; 100_000])];
    echo_and_close(&mut ws, &msgs).await;
}

/// A wsx echo server on 127.0.0.1 (plain or TLS), stopped when dropped.
struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    async fn start() -> Self {
        Self::serve(None).await
    }

    #[cfg(feature = "tls")]
    async fn start_tls(pki: &common::pki::Pki) -> Self {
        let config =
            wsx::tls::server_config(pki.leaf_pem.as_bytes(), pki.leaf_key_pem.as_bytes()).unwrap();
        Self::serve(Some(wsx::tls::TlsAcceptor::from(config))).await
    }

    #[cfg(feature = "tls")]
    async fn serve(tls: Option<wsx::tls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                echo_one(stream).await;
                            }
                        }
                        None => echo_one(tcp).await,
                    }
                });
            }
        });
        Self { addr, task }
    }

    #[cfg(not(feature = "tls"))]
    async fn serve(_tls: Option<()>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(echo_one(tcp));
            }
        });
        Self { addr, task }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_one<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut ws) = wsx::accept(stream).await else { return };
    while let Some(Ok(msg)) = ws.recv().await {
        if msg.is_data() && ws.send(msg).await.is_err() {
            break;
        }
    }
}
