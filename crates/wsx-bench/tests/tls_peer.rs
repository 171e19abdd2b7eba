//! The TLS peer (`Impl::TungsteniteTls`) and the wss:// idle client (`idle::open_tls`): the
//! peer echoes over TLS, idle connections upgrade through it, and TLS settings that do not fit
//! the implementation are refused.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wsx::proto::{Config, Connection, Message, Role};
use wsx_bench::idle::{self, TlsClient};
use wsx_bench::Impl;

/// Turns a hang into a failure; not a statement about speed.
const GUARD: Duration = Duration::from_secs(30);

async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress in {GUARD:?}"))
}

/// A self-signed end-entity certificate for 127.0.0.1 and its key, in PEM.
fn certificate() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The TLS peer on a free loopback port, serving on a task of the test's runtime.
async fn tls_peer(cert: &str, key: &str) -> SocketAddr {
    let tls = wsx_bench::tls_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(wsx_bench::serve(Impl::TungsteniteTls, listener, Some(tls)));
    addr
}

#[tokio::test]
async fn the_tls_peer_echoes_over_wss() {
    let (cert, key) = certificate();
    let addr = tls_peer(&cert, &key).await;
    let tls = TlsClient::new(cert.as_bytes(), "127.0.0.1").unwrap();
    let mut streams = guard("upgrade", idle::open_tls(addr, "/", 1, 1, &tls)).await.unwrap();
    let mut stream = streams.pop().unwrap();

    let mut conn = Connection::new(Role::Client, Config::default());
    let sent = Message::text("hello over TLS");
    conn.send(sent.clone()).unwrap();
    let out = conn.transmit();
    while out.has_remaining() {
        let n = stream.write(out.chunk()).await.unwrap();
        out.advance(n);
    }
    stream.flush().await.unwrap();
    let mut buf = vec![0; 4096];
    let echo = guard("echo", async {
        loop {
            if let Some(m) = conn.poll_message() {
                break m.unwrap();
            }
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the peer closed before echoing");
            conn.handle_input(&buf[..n]);
        }
    })
    .await;
    assert_eq!(echo, sent);
}

#[tokio::test]
async fn idle_wss_connections_upgrade_and_stay_open() {
    let (cert, key) = certificate();
    let addr = tls_peer(&cert, &key).await;
    let tls = TlsClient::new(cert.as_bytes(), "127.0.0.1").unwrap();
    let streams = guard("upgrades", idle::open_tls(addr, "/", 20, 8, &tls)).await.unwrap();
    assert_eq!(streams.len(), 20);
}

#[tokio::test]
async fn the_idle_client_checks_the_certificate_name() {
    let (cert, key) = certificate();
    let addr = tls_peer(&cert, &key).await;
    let tls = TlsClient::new(cert.as_bytes(), "localhost").unwrap();
    let err = guard("refusal", idle::open_tls(addr, "/", 1, 1, &tls)).await.err();
    let err = err.expect("a certificate for 127.0.0.1 accepted for localhost");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn tls_settings_must_fit_the_implementation() {
    let (cert, key) = certificate();
    let tls = wsx_bench::tls_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = wsx_bench::serve(Impl::Tungstenite, listener, Some(tls)).await.unwrap_err();
    assert!(err.to_string().contains("takes no TLS"), "{err}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = wsx_bench::serve(Impl::TungsteniteTls, listener, None).await.unwrap_err();
    assert!(err.to_string().contains("needs a TLS"), "{err}");
}
