//! WebSockets over HTTP/2 (RFC 8441) with `wsx::h2` on both ends of an in-memory connection:
//! echo, permessage-deflate, many WebSockets as streams of one connection, refusals, resets, a
//! stream that stops reading, the limit of concurrent streams, and the property that messages
//! arrive intact in any write chunking and close handshakes finish in every order.

mod common;

use std::time::Duration;

use common::guard;
use proptest::prelude::*;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use wsx::h2::{H2Stream, Http2Connection};
use wsx::proto::deflate::DeflateConfig;
use wsx::proto::handshake::ServerPolicy;
use wsx::{CloseCode, CloseFrame, Config, Error, HandshakeError, Message, WebSocket};

fn deflate_config() -> Config {
    Config::default().deflate(Some(DeflateConfig::default()))
}

/// A server on one end of an in-memory HTTP/2 connection: every WebSocket it accepts goes to
/// the returned channel; plain requests are answered 404.
fn server(
    io: DuplexStream,
    policy: ServerPolicy,
    builder: h2::server::Builder,
) -> mpsc::UnboundedReceiver<WebSocket<H2Stream>> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok(mut conn) = builder.handshake::<_, bytes::Bytes>(io).await else { return };
        while let Some(Ok((request, respond))) = conn.accept().await {
            if wsx::h2::is_websocket_request(&request) {
                if let Ok(ws) = wsx::h2::accept(request, respond, &policy) {
                    let _ = tx.send(ws);
                }
            } else {
                let mut response = http::Response::new(bytes::Bytes::from_static(b"no page\n"));
                *response.status_mut() = http::StatusCode::NOT_FOUND;
                wsx::h2::respond_with(respond, response);
            }
        }
    });
    rx
}

/// An echo task for each WebSocket the server accepts.
fn echo_all(mut accepted: mpsc::UnboundedReceiver<WebSocket<H2Stream>>) {
    tokio::spawn(async move {
        while let Some(mut ws) = accepted.recv().await {
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.recv().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

async fn pair_with(
    policy: ServerPolicy,
    builder: h2::server::Builder,
    buffer: usize,
) -> (Http2Connection, mpsc::UnboundedReceiver<WebSocket<H2Stream>>) {
    let (client_io, server_io) = tokio::io::duplex(buffer);
    let accepted = server(server_io, policy, builder);
    let client = guard("h2 handshake", Http2Connection::handshake(client_io, "example.com", true))
        .await
        .expect("h2 handshake");
    (client, accepted)
}

async fn pair(
    policy: ServerPolicy,
) -> (Http2Connection, mpsc::UnboundedReceiver<WebSocket<H2Stream>>) {
    pair_with(policy, wsx::h2::server_builder(), 64 * 1024).await
}

#[tokio::test]
async fn echo_over_one_stream_with_deflate_and_a_subprotocol() {
    let policy = ServerPolicy::new(deflate_config()).protocols(["chat"]);
    let (client, accepted) = pair(policy).await;
    assert!(client.supports_websockets());
    echo_all(accepted);
    let (mut ws, response) = guard(
        "open",
        client.websocket("/room?x=1", deflate_config(), &["chat".into()], &Default::default()),
    )
    .await
    .expect("open");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none(), "a 2xx CONNECT has no length");
    assert_eq!(ws.protocol(), Some("chat"));
    let ext = response.headers()["sec-websocket-extensions"].to_str().unwrap();
    assert!(ext.starts_with("permessage-deflate"), "{ext}");

    ws.send(Message::text("hello over h2")).await.unwrap();
    assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::text("hello over h2"));
    // 1 MiB, compressible and not: larger than every window, so flow control must move it.
    let big: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(guard("1 MiB echo", ws.recv()).await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    let reply = guard("close reply", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    assert!(guard("end", ws.recv()).await.is_none());
}

#[tokio::test]
async fn many_websockets_share_one_connection() {
    let (client, accepted) = pair(ServerPolicy::new(Config::default())).await;
    echo_all(accepted);
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let (ws, _) =
            guard("open", client.websocket("/", Config::default(), &[], &Default::default()))
                .await
                .unwrap();
        sockets.push(ws);
    }
    let ids: std::collections::HashSet<u32> =
        sockets.iter().map(|ws| u32::from(ws.get_ref().stream_id())).collect();
    assert_eq!(ids.len(), 50, "each WebSocket is a stream of its own");
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        assert_eq!(
            guard("echo", ws.recv()).await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
}

#[tokio::test]
async fn a_server_without_extended_connect_is_refused_before_sending() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    // A plain HTTP/2 server: extended CONNECT not enabled.
    let _accepted =
        server(server_io, ServerPolicy::new(Config::default()), h2::server::Builder::new());
    let client = guard("handshake", Http2Connection::handshake(client_io, "example.com", true))
        .await
        .unwrap();
    assert!(!client.supports_websockets());
    let err = client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap_err();
    assert!(matches!(err, Error::Handshake(HandshakeError::ExtendedConnectNotEnabled)), "{err:?}");
}

#[tokio::test]
async fn refusals_carry_their_status() {
    // The policy requires an Origin: a request without is refused 403, with a body.
    let (client, _accepted) = pair(ServerPolicy::new(Config::default()).require_origin(true)).await;
    let err = client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap_err();
    let Error::Rejected(response) = err else { panic!("{err:?}") };
    assert_eq!(response.status(), 403);
    assert!(String::from_utf8_lossy(response.body()).contains("Origin"));

    // The server's answer checked by the client: an unoffered subprotocol.
    let (client, _accepted) =
        pair(ServerPolicy::new(Config::default()).select_protocol(|_| Some("chat".into()))).await;
    let mut headers = http::HeaderMap::new();
    headers.insert("sec-websocket-protocol", "chat".parse().unwrap());
    // Offered through `headers` only, so the offer itself has none: the server's choice must be
    // refused by the client.
    let err = client.websocket("/", Config::default(), &[], &headers).await;
    assert!(err.is_err(), "a subprotocol the offer did not make is refused");
}

#[tokio::test]
async fn a_reset_stream_is_an_error_and_spares_the_others() {
    let (client, mut accepted) = pair(ServerPolicy::new(Config::default())).await;
    let (mut a, _) =
        client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap();
    let (mut b, _) =
        client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap();
    let server_a = guard("accept a", accepted.recv()).await.unwrap();
    let mut server_b = guard("accept b", accepted.recv()).await.unwrap();
    // Dropping a server WebSocket before any close resets its stream.
    drop(server_a);
    match guard("reset seen", a.recv()).await {
        Some(Err(Error::Io(e))) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        other => panic!("expected a reset, got {other:?}"),
    }
    b.send(Message::text("still here")).await.unwrap();
    assert_eq!(guard("b", server_b.recv()).await.unwrap().unwrap(), Message::text("still here"));
}

#[tokio::test]
async fn a_stream_that_stops_reading_is_dropped_by_its_keepalive() {
    let config = Config::default()
        .ping_interval(Some(Duration::from_millis(200)))
        .ping_timeout(Some(Duration::from_millis(400)));
    let (client, mut accepted) = pair(ServerPolicy::new(config)).await;
    // The client opens two WebSockets and never reads the first one again.
    let (stalled, _) =
        client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap();
    let (mut live, _) =
        client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap();
    let mut server_stalled = guard("accept", accepted.recv()).await.unwrap();
    let mut server_live = guard("accept", accepted.recv()).await.unwrap();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = server_live.recv().await {
            if msg.is_data() && server_live.send(msg).await.is_err() {
                break;
            }
        }
    });
    let live_task = tokio::spawn(async move {
        // Keeps reading (and so answering pings) the whole time.
        for i in 0..20 {
            live.send(Message::text(format!("{i}"))).await.unwrap();
            assert_eq!(live.recv().await.unwrap().unwrap(), Message::text(format!("{i}")));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // The server writes to the stalled one until the stream window is full and it blocks: the
    // keepalive must still run in that wait and give up on the peer.
    let writer = async {
        let chunk = Message::binary(vec![7u8; 16 * 1024]);
        loop {
            if let Err(e) = server_stalled.send(chunk.clone()).await {
                return e;
            }
        }
    };
    let err = guard("the stalled stream is given up", writer).await;
    assert!(
        matches!(
            err,
            Error::Protocol(wsx::ProtocolError::KeepaliveTimeout)
                | Error::Timeout(_)
                | Error::Closed
        ),
        "{err:?}"
    );
    guard("the live one kept working", live_task).await.unwrap();
    drop(stalled);
}

#[tokio::test]
async fn streams_past_the_concurrency_limit_wait_and_the_others_keep_working() {
    let mut builder = wsx::h2::server_builder();
    builder.max_concurrent_streams(4);
    let (client, accepted) =
        pair_with(ServerPolicy::new(Config::default()), builder, 64 * 1024).await;
    echo_all(accepted);
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(
            client.websocket("/", Config::default(), &[], &Default::default()).await.unwrap().0,
        );
    }
    // A fifth waits for a free stream instead of being sent past the server's limit.
    let no_headers = http::HeaderMap::new();
    let fifth = client.websocket("/", Config::default(), &[], &no_headers);
    tokio::pin!(fifth);
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut fifth).await.is_err());
    for ws in &mut open {
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(guard("echo", ws.recv()).await.unwrap().unwrap(), Message::text("x"));
    }
    // Closing one frees its stream for the fifth.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while guard("close", first.recv()).await.is_some() {}
    drop(first);
    let (mut fifth, _) = guard("the fifth opens", fifth).await.unwrap();
    fifth.send(Message::text("fifth")).await.unwrap();
    assert_eq!(guard("echo", fifth.recv()).await.unwrap().unwrap(), Message::text("fifth"));
}

// ---------------------------------------------------------------------------------------------
// Properties: any chunking, close in every order

#[derive(Debug, Clone, Copy)]
enum CloseOrder {
    ClientFirst,
    ServerFirst,
    Simultaneous,
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        "[ -~é€😀]{0,200}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Message::binary),
        (0usize..200_000).prop_map(|n| Message::binary(vec![0xa5u8; n])),
    ]
}

fn close_order() -> impl Strategy<Value = CloseOrder> {
    prop_oneof![
        Just(CloseOrder::ClientFirst),
        Just(CloseOrder::ServerFirst),
        Just(CloseOrder::Simultaneous)
    ]
}

async fn round(msgs: Vec<Message>, buffer: usize, deflate: bool, order: CloseOrder) {
    let config = if deflate { deflate_config() } else { Config::default() };
    let (client, mut accepted) =
        pair_with(ServerPolicy::new(config.clone()), wsx::h2::server_builder(), buffer).await;
    let (mut ws, _) = client.websocket("/", config, &[], &Default::default()).await.unwrap();
    let mut server_ws = guard("accept", accepted.recv()).await.unwrap();
    let expected = msgs.clone();
    let sender = tokio::spawn(async move {
        for m in msgs {
            ws.feed(m).await.unwrap();
        }
        ws.flush().await.unwrap();
        ws
    });
    for want in &expected {
        let got = guard("message", server_ws.recv()).await.unwrap().unwrap();
        assert_eq!(&got, want);
    }
    let mut ws = sender.await.unwrap();
    let frame = CloseFrame::new(CloseCode::NORMAL, "bye");
    // Both ends read concurrently from here, as real peers do: each side's close completes only
    // once the other has read the close frame and answered.
    let (first, second) = match order {
        CloseOrder::ClientFirst => {
            ws.close(Some(frame.clone())).await.unwrap();
            tokio::join!(drain(&mut server_ws), drain(&mut ws))
        }
        CloseOrder::ServerFirst => {
            server_ws.close(Some(frame.clone())).await.unwrap();
            let (c, s) = tokio::join!(drain(&mut ws), drain(&mut server_ws));
            (s, c)
        }
        CloseOrder::Simultaneous => {
            let (a, b) =
                tokio::join!(ws.close(Some(frame.clone())), server_ws.close(Some(frame.clone())));
            a.unwrap();
            b.unwrap();
            tokio::join!(drain(&mut server_ws), drain(&mut ws))
        }
    };
    // What each side received: the other's close frame, then the end of the stream, and for
    // the side that closed first the echo of its own code.
    let close = |m: &[Message]| match m {
        [Message::Close(Some(f))] => f.code,
        other => panic!("expected one close frame, got {other:?}"),
    };
    assert_eq!(close(&first), CloseCode::NORMAL);
    assert_eq!(close(&second), CloseCode::NORMAL);
    if let CloseOrder::ClientFirst = order {
        assert_eq!(first, vec![Message::Close(Some(frame))]);
    }
}

/// Everything `ws` receives until its stream ends.
async fn drain(ws: &mut WebSocket<H2Stream>) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(m) = guard("drain", ws.recv()).await {
        got.push(m.expect("no error while closing"));
    }
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn messages_arrive_intact_and_close_in_every_order(
        msgs in proptest::collection::vec(message(), 0..8),
        // The in-memory pipe's capacity, so every write is cut at a different place. At least
        // 128 bytes: both ends of `h2` write their preface before reading, so a pipe that
        // cannot hold one SETTINGS frame deadlocks them (a TCP socket buffers kilobytes).
        buffer in prop_oneof![128usize..1024, 1024usize..70_000],
        deflate: bool,
        order in close_order(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(round(msgs, buffer, deflate, order));
    }
}
