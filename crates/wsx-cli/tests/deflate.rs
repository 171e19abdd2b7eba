//! `wsx serve`'s permessage-deflate negotiation: by default no context takeover either way
//! (so a connection keeps no codec between messages), `--deflate-context-takeover` for the
//! ratio; both against Chromium's offer (which Python `websockets` sends byte for byte too),
//! with compressed messages echoed.

mod common;

use std::process::Command;

use common::{Server, HANG_GUARD, WSX};
use wsx::proto::deflate::DeflateConfig;
use wsx::{ClientBuilder, Config, Message};

/// Connects with Chromium's offer (the library's config with context takeover offers exactly
/// `permessage-deflate; client_max_window_bits`), echoes small JSON-like messages and a large
/// one, and returns the response's `Sec-WebSocket-Extensions`.
fn browser_round_trip(server: &Server) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        tokio::time::timeout(HANG_GUARD, async {
            let browser = DeflateConfig::default().context_takeover(true);
            assert_eq!(
                wsx::proto::deflate::client_offer(&browser),
                "permessage-deflate; client_max_window_bits"
            );
            let (mut ws, response) = ClientBuilder::new(server.url())
                .config(Config::default().deflate(Some(browser)))
                .connect()
                .await
                .expect("connect");
            let mut messages: Vec<Message> = (0..50)
                .map(|i| {
                    Message::text(format!(
                        "{{\"type\":\"message\",\"room\":\"general\",\"seq\":{i},\
                         \"text\":\"hello hello hello\"}}"
                    ))
                })
                .collect();
            messages.push(Message::binary(vec![7u8; 300_000]));
            for m in &messages {
                ws.send(m.clone()).await.expect("send");
                let echo = loop {
                    match ws.recv().await.expect("an echo").expect("valid") {
                        m if m.is_data() => break m,
                        _ => {}
                    }
                };
                assert_eq!(&echo, m);
            }
            ws.close(None).await.expect("close");
            response
                .headers()
                .get("sec-websocket-extensions")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        })
        .await
        .expect("the exchange finished in time")
    })
}

#[test]
fn serve_answers_without_context_takeover_by_default() {
    let server = Server::start(&["--threads", "1"]);
    assert_eq!(
        browser_round_trip(&server),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
}

#[test]
fn serve_keeps_context_with_deflate_context_takeover() {
    let server = Server::start(&["--threads", "1", "--deflate-context-takeover"]);
    assert_eq!(browser_round_trip(&server), "permessage-deflate");
}

#[test]
fn pubsub_with_context_takeover_still_compresses_its_own_side_without() {
    // One compression of a publish serves every subscriber only without server takeover.
    let server = Server::start(&["--threads", "1", "--pubsub", "--deflate-context-takeover"]);
    assert_eq!(browser_round_trip(&server), "permessage-deflate; server_no_context_takeover");
}

#[test]
fn deflate_context_takeover_without_deflate_is_a_usage_error() {
    let out = Command::new(WSX)
        .args(["serve", "--no-deflate", "--deflate-context-takeover"])
        .output()
        .expect("run wsx");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
