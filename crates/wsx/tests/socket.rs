//! The tokio layer end to end: wsx against wsx, and wsx against mock peers that speak raw bytes,
//! over `tokio::io::duplex` and loopback TCP.
//!
//! Mock peers build and parse frames by hand (see the helpers at the bottom) so that the bytes on
//! the wire are checked independently of `wsx-proto`'s own encoder. `tokio::time::timeout` only
//! guards against hangs; no test asserts how fast anything is.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::raw::{
    frame, header, raw_client_handshake, read_frame, read_frame_unguarded, read_head,
    upgrade_request, ACCEPT, FIN, KEY, MASK, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING,
    OP_PONG, OP_TEXT, RSV2,
};
use common::{guard, GUARD};
use futures_util::{FutureExt, SinkExt, StreamExt, TryStreamExt};
use http::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS, WWW_AUTHENTICATE};
use http::StatusCode;
use tokio::io::{
    duplex, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use wsx::proto::connection::State;
use wsx::{
    Accept, ClientBuilder, CloseCode, CloseFrame, Config, Error, HandshakeError, Incoming,
    MaybeTlsStream, Message, ProtocolError, Reject, SendError, WebSocket,
};

// ---------------------------------------------------------------------------------------------
// Echo, feed, Sink/Stream
// ---------------------------------------------------------------------------------------------

/// Sizes around every frame-length encoding boundary, up to 1 MiB.
const SIZES: &[usize] = &[0, 1, 125, 126, 127, 1000, 65535, 65536, 65537, 1 << 20];

#[tokio::test]
async fn echo_text_and_binary_over_duplex() {
    // A small duplex buffer forces partial reads and writes of the large messages.
    let (mut client, server) = duplex_pair(Config::default(), client_builder(), 4096).await;
    let echo = tokio::spawn(echo(server));
    guard("echo over duplex", echo_all_sizes(&mut client)).await;
    close_and_drain(&mut client).await;
    assert_eq!(echo.await.unwrap().unwrap(), 2 * SIZES.len());
}

#[tokio::test]
async fn echo_text_and_binary_over_tcp() {
    let (mut client, server) = tcp_pair(Config::default(), ClientBuilder::new).await;
    let echo = tokio::spawn(echo(server));
    guard("echo over TCP", echo_all_sizes(&mut client)).await;
    close_and_drain(&mut client).await;
    assert_eq!(echo.await.unwrap().unwrap(), 2 * SIZES.len());
}

async fn echo_all_sizes<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    for &len in SIZES {
        let text = Message::text(text_payload(len));
        ws.send(text.clone()).await.unwrap();
        assert_eq!(next_data(ws).await, text, "text echo of {len} bytes");

        let binary = Message::binary(common::noise(len, len as u32));
        ws.send(binary.clone()).await.unwrap();
        assert_eq!(next_data(ws).await, binary, "binary echo of {len} bytes");
    }
}

#[tokio::test]
async fn fed_messages_arrive_complete_and_in_order() {
    let (client_io, server_io) = duplex(64 << 10);
    let writes = Arc::new(AtomicUsize::new(0));
    let client_io = Counting::new(client_io, writes.clone(), Arc::default());
    let (server, client) =
        tokio::join!(wsx::accept(server_io), client_builder().connect_on(client_io));
    let (mut server, mut client) = (server.unwrap(), client.unwrap().0);

    let before = writes.load(Ordering::SeqCst);
    for i in 0..1000 {
        client.feed(Message::text(format!("message {i}"))).await.unwrap();
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        before,
        "feed() below the high-water mark must queue without writing"
    );
    client.flush().await.unwrap();
    let flush_writes = writes.load(Ordering::SeqCst) - before;
    assert!(
        (1..=4).contains(&flush_writes),
        "1,000 fed messages should go out coalesced, took {flush_writes} writes"
    );

    for i in 0..1000 {
        let msg = guard("fed message", server.recv()).await.expect("stream ended").unwrap();
        assert_eq!(msg, Message::text(format!("message {i}")));
    }
    client.close(None).await.unwrap();
    assert_eq!(
        server.recv().await.unwrap().unwrap(),
        Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
    );
    assert!(server.recv().await.is_none());
    close_and_drain(&mut client).await;
}

#[tokio::test]
async fn sink_and_stream_interfaces() {
    let (mut client, server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    // The echo server is the split halves forwarded into each other: ReadHalf as a Stream,
    // WriteHalf as a Sink.
    let echo = tokio::spawn(async move {
        let (read, write) = server.split();
        read.try_filter(|m| std::future::ready(m.is_data())).forward(write).await
    });

    SinkExt::send(&mut client, Message::text("one")).await.unwrap();
    let got = StreamExt::next(&mut client).await.unwrap().unwrap();
    assert_eq!(got, Message::text("one"));

    SinkExt::feed(&mut client, Message::binary(vec![1, 2, 3])).await.unwrap();
    SinkExt::feed(&mut client, Message::text("three")).await.unwrap();
    SinkExt::flush(&mut client).await.unwrap();
    let mut batch =
        futures_util::stream::iter((0..100).map(|i| Ok(Message::text(format!("batch {i}")))));
    SinkExt::send_all(&mut client, &mut batch).await.unwrap();

    let mut expected = vec![Message::binary(vec![1, 2, 3]), Message::text("three")];
    expected.extend((0..100).map(|i| Message::text(format!("batch {i}"))));
    for want in expected {
        let got = guard("stream next", StreamExt::next(&mut client)).await.unwrap().unwrap();
        assert_eq!(got, want);
    }

    // Sink::close starts a normal close; the stream then yields the reply and ends.
    SinkExt::close(&mut client).await.unwrap();
    assert_eq!(client.state(), State::Closing);
    let reply = guard("close reply", StreamExt::next(&mut client)).await.unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    assert!(StreamExt::next(&mut client).await.is_none());
    assert!(matches!(SinkExt::send(&mut client, Message::text("late")).await, Err(Error::Closed)));
    guard("echo task", echo).await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// split()
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_send_and_receive_concurrently_over_duplex() {
    // A tiny buffer keeps both directions full, so both halves wait on the transport often.
    let (client, server) = duplex_pair(Config::default(), client_builder(), 1024).await;
    let echo = tokio::spawn(echo(server));
    split_round_trip(client).await;
    assert_eq!(guard("echo task", echo).await.unwrap().unwrap(), SPLIT_MESSAGES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_send_and_receive_concurrently_over_tcp() {
    let (client, server) = tcp_pair(Config::default(), ClientBuilder::new).await;
    let echo = tokio::spawn(echo(server));
    split_round_trip(client).await;
    assert_eq!(guard("echo task", echo).await.unwrap().unwrap(), SPLIT_MESSAGES);
}

const SPLIT_MESSAGES: usize = 10_000;

async fn split_round_trip<S>(client: WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut read, mut write) = client.split();
    let writer = tokio::spawn(async move {
        for i in 0..SPLIT_MESSAGES {
            let msg = if i % 2 == 0 {
                Message::text(format!("split {i}"))
            } else {
                Message::binary(common::noise(i % 700, i as u32))
            };
            write.send(msg).await.unwrap();
        }
        write
    });
    let reader = tokio::spawn(async move {
        for i in 0..SPLIT_MESSAGES {
            let msg = read.recv().await.expect("stream ended early").unwrap();
            let want = if i % 2 == 0 {
                Message::text(format!("split {i}"))
            } else {
                Message::binary(common::noise(i % 700, i as u32))
            };
            assert_eq!(msg, want, "echo {i}");
        }
        read
    });
    let mut write = guard("split writer", writer).await.unwrap();
    let mut read = guard("split reader", reader).await.unwrap();

    write.close(None).await.unwrap();
    let reply = guard("close reply", read.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    assert!(guard("end of stream", read.recv()).await.is_none());
    assert!(matches!(write.send(Message::text("late")).await, Err(Error::Closed)));
}

// ---------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn send_after_close_is_closed() {
    let (mut client, server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    let echo = tokio::spawn(echo(server));

    // A close code that may not be sent is refused without closing anything.
    let bad = client.close(Some(CloseFrame::new(CloseCode::NO_STATUS, ""))).await;
    assert!(matches!(bad, Err(Error::Send(SendError::InvalidCloseCode(1005)))), "{bad:?}");
    assert_eq!(client.state(), State::Open);

    client.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "bye"))).await.unwrap();
    assert_eq!(client.state(), State::Closing);
    assert!(matches!(client.send(Message::text("after")).await, Err(Error::Closed)));
    assert!(matches!(client.feed(Message::binary(vec![1])).await, Err(Error::Closed)));
    assert!(matches!(client.send(Message::Ping(Bytes::new())).await, Err(Error::Closed)));
    assert!(matches!(client.send(Message::Close(None)).await, Err(Error::Closed)));
    // A second close is a no-op, not an error.
    client.close(None).await.unwrap();

    let reply = guard("close reply", client.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, ""))));
    assert!(guard("end", client.recv()).await.is_none());
    assert_eq!(client.state(), State::Closed);
    assert!(matches!(client.send(Message::text("after the end")).await, Err(Error::Closed)));
    assert_eq!(echo.await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn send_after_peer_close_is_closed() {
    let (mut client, mut server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    server.close(None).await.unwrap();
    let got = guard("peer close", client.recv()).await.unwrap().unwrap();
    assert_eq!(got, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    // The close reply has been queued: nothing may follow it.
    assert!(matches!(client.send(Message::text("too late")).await, Err(Error::Closed)));
    let (c, s) = tokio::join!(drain(&mut client), drain(&mut server));
    assert_eq!(c, Vec::<Message>::new());
    assert_eq!(s, vec![Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]);
}

#[tokio::test]
async fn recv_after_close_is_none() {
    let (mut client, mut server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    client.close(None).await.unwrap();
    let (c, s) = tokio::join!(drain(&mut client), drain(&mut server));
    assert_eq!(c.len(), 1);
    assert_eq!(s.len(), 1);
    for _ in 0..3 {
        assert!(guard("client recv after end", client.recv()).await.is_none());
        assert!(guard("server recv after end", server.recv()).await.is_none());
    }
}

#[tokio::test]
async fn peer_close_frame_is_yielded_then_none() {
    let (mut client, mut server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    client.send(Message::text("before close")).await.unwrap();
    client.close(Some(CloseFrame::new(CloseCode(4000), "custom reason"))).await.unwrap();

    // The server sees the data sent before the close, then the close itself, then the end.
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("before close"));
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::Close(Some(CloseFrame::new(CloseCode(4000), "custom reason"))));
    assert!(matches!(server.send(Message::text("x")).await, Err(Error::Closed)));
    assert!(guard("server end", server.recv()).await.is_none());

    // The client sees the echoed code.
    let reply = guard("client reply", client.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Close(Some(CloseFrame::new(CloseCode(4000), ""))));
    assert!(guard("client end", client.recv()).await.is_none());
}

#[tokio::test]
async fn close_without_status_is_echoed_without_status() {
    let (mut client, mut server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    // `Message::Close(None)` sends an empty close frame (no status code).
    client.send(Message::Close(None)).await.unwrap();
    let (c, s) = tokio::join!(drain(&mut client), drain(&mut server));
    assert_eq!(s, vec![Message::Close(None)]);
    assert_eq!(c, vec![Message::Close(None)]);
}

#[tokio::test]
async fn close_handshake_client_initiated() {
    let (mut client, mut server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    client.close(None).await.unwrap();
    let (c, s) = tokio::join!(drain(&mut client), drain(&mut server));
    let normal = Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")));
    assert_eq!(c, vec![normal.clone()]);
    assert_eq!(s, vec![normal]);
    assert_eq!((client.state(), server.state()), (State::Closed, State::Closed));
}

#[tokio::test]
async fn close_handshake_server_initiated_over_tcp() {
    let (mut client, mut server) = tcp_pair(Config::default(), ClientBuilder::new).await;
    server.close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart"))).await.unwrap();
    let (c, s) = tokio::join!(drain(&mut client), drain(&mut server));
    assert_eq!(c, vec![Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "restart")))]);
    assert_eq!(s, vec![Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "")))]);
    assert_eq!((client.state(), server.state()), (State::Closed, State::Closed));
}

#[tokio::test]
async fn close_handshake_simultaneous() {
    let (mut client, mut server) = duplex_pair(Config::default(), client_builder(), 8192).await;
    client.close(Some(CloseFrame::new(CloseCode::NORMAL, "client"))).await.unwrap();
    server.close(Some(CloseFrame::new(CloseCode::NORMAL, "server"))).await.unwrap();
    let (c, s) = tokio::join!(drain(&mut client), drain(&mut server));
    assert_eq!(c, vec![Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "server")))]);
    assert_eq!(s, vec![Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "client")))]);
}

// Close timeouts run on tokio's paused clock: the runtime jumps straight to the next timer, so
// the assertions on elapsed (virtual) time are exact, not timing-dependent.

const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default config (keepalive on) with a 5 s close timeout.
fn close_timeout_config() -> Config {
    Config::default().close_timeout(Some(CLOSE_TIMEOUT))
}

#[tokio::test(start_paused = true)]
async fn close_timeout_client_when_server_never_answers() {
    client_close_timeout_no_reply(close_timeout_config()).await;
}

#[tokio::test(start_paused = true)]
async fn close_timeout_client_when_server_never_answers_without_keepalive() {
    client_close_timeout_no_reply(close_timeout_config().ping_interval(None)).await;
}

#[tokio::test(start_paused = true)]
async fn close_timeout_client_when_server_never_closes_tcp() {
    client_close_timeout_no_tcp_close(close_timeout_config()).await;
}

#[tokio::test(start_paused = true)]
async fn close_timeout_client_when_server_never_closes_tcp_without_keepalive() {
    client_close_timeout_no_tcp_close(close_timeout_config().ping_interval(None)).await;
}

#[tokio::test(start_paused = true)]
async fn close_timeout_server_when_client_never_answers() {
    server_close_timeout_no_reply(close_timeout_config()).await;
}

#[tokio::test(start_paused = true)]
async fn close_timeout_server_when_client_never_answers_without_keepalive() {
    server_close_timeout_no_reply(close_timeout_config().ping_interval(None)).await;
}

/// The client closes; the raw server reads the close and then stays open and silent.
async fn client_close_timeout_no_reply(config: Config) {
    let (client_io, mut raw) = duplex(8192);
    let (client, ()) = tokio::join!(client_builder().config(config).connect_on(client_io), async {
        raw_server_handshake(&mut raw).await;
    });
    let mut client = client.unwrap().0;

    let start = Instant::now();
    client.close(None).await.unwrap();
    let close = read_frame(&mut raw).await;
    assert_eq!((close.opcode(), close.masked), (OP_CLOSE, true));
    assert_eq!(close.payload, 1000u16.to_be_bytes());

    // `raw` stays open and silent: only the close timeout can end this.
    let end = timeout(GUARD, client.recv()).await;
    assert!(matches!(end, Ok(None)), "expected the end of the stream, got {end:?}");
    assert_waited_close_timeout(start);
    assert_eq!(client.state(), State::Closed);
    drop(raw);
}

/// The raw server starts the close and reads the client's echo, but never closes TCP (which
/// RFC 6455 §7.1.1 says it should); the client must not wait forever.
async fn client_close_timeout_no_tcp_close(config: Config) {
    let (client_io, mut raw) = duplex(8192);
    let (client, ()) = tokio::join!(client_builder().config(config).connect_on(client_io), async {
        raw_server_handshake(&mut raw).await;
    });
    let mut client = client.unwrap().0;

    raw.write_all(&frame(FIN | OP_CLOSE, None, &1000u16.to_be_bytes())).await.unwrap();
    let start = Instant::now();
    let got = client.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))));
    let echo = read_frame(&mut raw).await;
    assert_eq!((echo.opcode(), echo.payload.as_slice()), (OP_CLOSE, &1000u16.to_be_bytes()[..]));

    let end = timeout(GUARD, client.recv()).await;
    assert!(matches!(end, Ok(None)), "expected the end of the stream, got {end:?}");
    assert_waited_close_timeout(start);
    drop(raw);
}

/// The server closes; the raw client reads the close and never answers.
async fn server_close_timeout_no_reply(config: Config) {
    let (server_io, mut raw) = duplex(8192);
    let (server, ()) = tokio::join!(
        wsx::accept_with(server_io, config, |_| Ok(Accept::default())),
        raw_client_handshake(&mut raw)
    );
    let mut server = server.unwrap();

    let start = Instant::now();
    server.close(None).await.unwrap();
    let close = read_frame(&mut raw).await;
    assert_eq!((close.opcode(), close.masked), (OP_CLOSE, false));

    let end = timeout(GUARD, server.recv()).await;
    assert!(matches!(end, Ok(None)), "expected the end of the stream, got {end:?}");
    assert_waited_close_timeout(start);
    // Having given up, the server closed the transport.
    assert_eq!(raw.read(&mut [0u8; 16]).await.unwrap(), 0);
}

fn assert_waited_close_timeout(start: Instant) {
    let waited = start.elapsed();
    assert!(
        waited >= CLOSE_TIMEOUT && waited < CLOSE_TIMEOUT + Duration::from_secs(1),
        "gave up after {waited:?} on the paused clock; the close timeout is {CLOSE_TIMEOUT:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Protocol errors from raw peers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn protocol_error_from_raw_client_over_duplex() {
    let (server_io, raw) = duplex(8192);
    protocol_error_from_raw_client(server_io, raw).await;
}

#[tokio::test]
async fn protocol_error_from_raw_client_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, raw) = tokio::join!(listener.accept(), TcpStream::connect(addr));
    protocol_error_from_raw_client(accepted.unwrap().0, raw.unwrap()).await;
}

async fn protocol_error_from_raw_client<S, R>(server_io: S, mut raw: R)
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();

    // A valid message first, then a frame with RSV2 set (no extension defines it).
    raw.write_all(&frame(FIN | OP_TEXT, Some(MASK), b"fine")).await.unwrap();
    raw.write_all(&frame(FIN | RSV2 | OP_TEXT, Some(MASK), b"bad")).await.unwrap();

    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("fine"));
    let err = guard("protocol error", server.recv()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::ReservedBits(0b010))),
        "expected ReservedBits, got {err:?}"
    );

    // The 1002 close frame reached the peer before the caller called recv again.
    let close = guard("close frame", read_frame(&mut raw)).await;
    assert_eq!((close.opcode(), close.masked), (OP_CLOSE, false));
    assert_eq!(close.payload[..2], 1002u16.to_be_bytes());
    assert!(std::str::from_utf8(&close.payload[2..]).is_ok());

    // The server shuts its side down, and ends once the peer has hung up too.
    let (end, ()) =
        tokio::join!(guard("after the error", server.recv()), hang_up_after_eof(&mut raw));
    assert!(end.is_none());
    assert!(guard("still the end", server.recv()).await.is_none());
    assert!(matches!(server.send(Message::text("x")).await, Err(Error::Closed)));
}

/// A well-behaved peer after a close: reads to the end of the stream, then closes its side.
async fn hang_up_after_eof<R: AsyncRead + AsyncWrite + Unpin>(raw: &mut R) {
    let mut rest = Vec::new();
    guard("EOF", raw.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty(), "{} bytes after the close frame", rest.len());
    raw.shutdown().await.unwrap();
}

#[tokio::test]
async fn protocol_error_from_raw_server() {
    let (client_io, mut raw) = duplex(8192);
    let (client, ()) = tokio::join!(client_builder().connect_on(client_io), async {
        raw_server_handshake(&mut raw).await;
    });
    let mut client = client.unwrap().0;

    raw.write_all(&frame(FIN | RSV2 | OP_BINARY, None, b"bad")).await.unwrap();
    let err = guard("protocol error", client.recv()).await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::ReservedBits(0b010))),
        "expected ReservedBits, got {err:?}"
    );
    let close = guard("close frame", read_frame(&mut raw)).await;
    assert_eq!((close.opcode(), close.masked), (OP_CLOSE, true));
    assert_eq!(close.payload[..2], 1002u16.to_be_bytes());

    let (end, ()) =
        tokio::join!(guard("after the error", client.recv()), hang_up_after_eof(&mut raw));
    assert!(end.is_none());
}

#[tokio::test]
async fn unmasked_frame_from_raw_client_is_1002() {
    let (server_io, mut raw) = duplex(8192);
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_TEXT, None, b"unmasked")).await.unwrap();
    let err = guard("protocol error", server.recv()).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::UnmaskedFrame)), "{err:?}");
    let close = read_frame(&mut raw).await;
    assert_eq!((close.opcode(), &close.payload[..2]), (OP_CLOSE, &1002u16.to_be_bytes()[..]));
    let (end, ()) = tokio::join!(guard("end", server.recv()), hang_up_after_eof(&mut raw));
    assert!(end.is_none());
}

#[tokio::test]
async fn invalid_utf8_from_raw_client_is_1007() {
    let (server_io, mut raw) = duplex(8192);
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_TEXT, Some(MASK), b"ok \xff\xfe")).await.unwrap();
    let err = guard("protocol error", server.recv()).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::InvalidUtf8)), "{err:?}");
    let close = read_frame(&mut raw).await;
    assert_eq!((close.opcode(), &close.payload[..2]), (OP_CLOSE, &1007u16.to_be_bytes()[..]));
    let (end, ()) = tokio::join!(guard("end", server.recv()), hang_up_after_eof(&mut raw));
    assert!(end.is_none());
}

/// After a protocol error the server reads and discards what the peer still sends (so the
/// kernel does not reset the connection under the close frame), but only until the close
/// timeout: a peer that never hangs up cannot keep it.
#[tokio::test(start_paused = true)]
async fn lingering_after_a_protocol_error_ends_at_the_close_timeout() {
    let (server_io, mut raw) = duplex(8192);
    let config = close_timeout_config().ping_interval(None);
    let (server, ()) = tokio::join!(
        wsx::accept_with(server_io, config, |_| Ok(Accept::default())),
        raw_client_handshake(&mut raw)
    );
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_TEXT, None, b"unmasked")).await.unwrap();
    let start = Instant::now();
    assert!(guard("error", server.recv()).await.unwrap().is_err());
    let close = read_frame(&mut raw).await;
    assert_eq!(close.opcode(), OP_CLOSE);
    // The peer keeps sending after the close, a frame every 10 ms until the server is done: all
    // of it is read and dropped, and the socket being readable all along does not keep the
    // server past the deadline.
    let mut sent = 0u32;
    let end = {
        let keep_sending = async {
            loop {
                raw.write_all(&frame(FIN | OP_TEXT, Some(MASK), &[b'x'; 1000])).await.unwrap();
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            end = timeout(GUARD, server.recv()) => end,
            () = keep_sending => unreachable!("the sender never stops"),
        }
    };
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert_waited_close_timeout(start);
    // Had the server stopped reading, the 8 KiB duplex would have held the peer up after 8.
    let every_10_ms = (CLOSE_TIMEOUT.as_millis() / 10) as u32;
    assert!(sent >= every_10_ms * 9 / 10, "the peer sent only {sent} frames after the close");
    assert_eq!(raw.read(&mut [0u8; 16]).await.unwrap(), 0, "the server shut down its side");
}

#[tokio::test]
async fn peer_hanging_up_without_close_is_reported_once() {
    let (server_io, mut raw) = duplex(8192);
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_TEXT, Some(MASK), b"last words")).await.unwrap();
    drop(raw);
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("last words"));
    let err = guard("reset", server.recv()).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)), "{err:?}");
    assert!(guard("end", server.recv()).await.is_none());
}

#[tokio::test]
async fn pong_is_written_before_the_ping_is_returned() {
    let (server_io, mut raw) = duplex(8192);
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_PING, Some(MASK), b"are you there")).await.unwrap();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::Ping(Bytes::from_static(b"are you there")));
    // Reading implies writing: the pong is on the wire already, with no further call on
    // `server`, so reading it completes at the first poll (no clock: waiting for it to turn up
    // within some time would also pass if a later call wrote it).
    let pong = read_frame_unguarded(&mut raw).now_or_never();
    let pong = pong.expect("the pong was not written while receiving the ping");
    assert_eq!((pong.opcode(), pong.masked), (OP_PONG, false));
    assert_eq!(pong.payload, b"are you there");
}

#[tokio::test]
async fn pong_goes_out_while_the_application_keeps_receiving() {
    let (server_io, mut raw) = duplex(8192);
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_PING, Some(MASK), b"are you there")).await.unwrap();
    let got = server.recv().await.unwrap().unwrap();
    assert_eq!(got, Message::Ping(Bytes::from_static(b"are you there")));
    // The application never sends anything itself; it just keeps receiving.
    let pong = tokio::select! {
        msg = server.recv() => panic!("nothing else was sent, got {msg:?}"),
        pong = read_frame(&mut raw) => pong,
    };
    assert_eq!((pong.opcode(), pong.masked), (OP_PONG, false));
    assert_eq!(pong.payload, b"are you there");
}

#[tokio::test]
async fn auto_pong_off_leaves_pings_to_the_application() {
    let (server_io, mut raw) = duplex(8192);
    let config = Config::default().auto_pong(false);
    let (server, ()) = tokio::join!(
        wsx::accept_with(server_io, config, |_| Ok(Accept::default())),
        raw_client_handshake(&mut raw)
    );
    let mut server = server.unwrap();
    raw.write_all(&frame(FIN | OP_PING, Some(MASK), b"1")).await.unwrap();
    raw.write_all(&frame(FIN | OP_TEXT, Some(MASK), b"after")).await.unwrap();
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::Ping(Bytes::from_static(b"1")));
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("after"));
    server.send(Message::Pong(Bytes::from_static(b"mine"))).await.unwrap();
    // The first frame on the wire is the application's pong, not an automatic one.
    let pong = read_frame(&mut raw).await;
    assert_eq!((pong.opcode(), pong.payload.as_slice()), (OP_PONG, &b"mine"[..]));
}

// ---------------------------------------------------------------------------------------------
// Cancellation safety
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn recv_is_cancel_safe_with_a_byte_at_a_time_peer() {
    let (server_io, mut raw) = duplex(64 << 10);
    let (server, ()) = tokio::join!(wsx::accept(server_io), raw_client_handshake(&mut raw));
    let mut server = server.unwrap();

    let fragmented = "héllo wörld".as_bytes();
    let long_text = "ü".repeat(33_000); // 66,000 bytes: a 64-bit length, multi-byte chars
    let mut wire = Vec::new();
    wire.extend(frame(FIN | OP_TEXT, Some(MASK), b"hello"));
    wire.extend(frame(FIN | OP_BINARY, Some(MASK), &common::noise(300, 7)));
    wire.extend(frame(FIN | OP_TEXT, Some(MASK), long_text.as_bytes()));
    wire.extend(frame(FIN | OP_PING, Some(MASK), b"p"));
    // "é" is split across the first two fragments.
    wire.extend(frame(OP_TEXT, Some(MASK), &fragmented[..2]));
    wire.extend(frame(OP_CONTINUATION, Some(MASK), &fragmented[2..9]));
    wire.extend(frame(FIN | OP_CONTINUATION, Some(MASK), &fragmented[9..]));
    wire.extend(frame(FIN | OP_BINARY, Some(MASK), b""));
    wire.extend(frame(FIN | OP_TEXT, Some(MASK), "ünïcödé".as_bytes()));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    wire.extend(frame(FIN | OP_CLOSE, Some(MASK), &close));

    let peer = tokio::spawn(async move {
        for byte in wire {
            raw.write_all(&[byte]).await.unwrap();
            tokio::task::yield_now().await;
        }
        let pong = read_frame(&mut raw).await;
        let close = read_frame(&mut raw).await;
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.unwrap();
        (pong, close, rest)
    });

    let mut got = Vec::new();
    let mut cancelled = 0usize;
    let mut round = 0usize;
    let deadline = Instant::now() + GUARD;
    loop {
        assert!(Instant::now() < deadline, "byte-at-a-time receive hung");
        round += 1;
        // A competing branch that usually wins while recv waits for the next byte; when it
        // wins, the recv future is dropped mid-frame.
        let competitor = async {
            if round % 64 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            msg = server.recv() => match msg {
                Some(msg) => got.push(msg.unwrap()),
                None => break,
            },
            () = competitor => cancelled += 1,
        }
    }

    let expected = vec![
        Message::text("hello"),
        Message::binary(common::noise(300, 7)),
        Message::text(long_text),
        Message::Ping(Bytes::from_static(b"p")),
        Message::text("héllo wörld"),
        Message::binary(Vec::new()),
        Message::text("ünïcödé"),
        Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "done"))),
    ];
    assert_eq!(got, expected);
    assert!(cancelled > 0, "the competing branch never won; nothing was cancelled");

    let (pong, close, rest) = guard("peer", peer).await.unwrap();
    assert_eq!((pong.opcode(), pong.payload.as_slice()), (OP_PONG, &b"p"[..]));
    assert_eq!((close.opcode(), close.payload.as_slice()), (OP_CLOSE, &1000u16.to_be_bytes()[..]));
    assert!(rest.is_empty(), "nothing may follow the close frame: {rest:?}");
}

// ---------------------------------------------------------------------------------------------
// Opening handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn frames_right_behind_the_request_are_kept() {
    let (server_io, mut raw) = duplex(8192);
    let mut bytes = upgrade_request("").into_bytes();
    bytes.extend(frame(FIN | OP_TEXT, Some(MASK), b"early bird"));
    bytes.extend(frame(FIN | OP_BINARY, Some(MASK), &[9, 8, 7]));
    raw.write_all(&bytes).await.unwrap();

    let mut server = wsx::accept(server_io).await.unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("early bird"));
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::binary(vec![9, 8, 7]));
}

#[tokio::test]
async fn frames_right_behind_the_101_are_kept() {
    let (client_io, mut raw) = duplex(8192);
    let peer = async {
        let head = read_head(&mut raw).await;
        let key = header(&head, "sec-websocket-key").unwrap();
        let mut bytes = response_101(key).into_bytes();
        bytes.extend(frame(FIN | OP_TEXT, None, b"welcome"));
        bytes.extend(frame(FIN | OP_BINARY, None, &[1, 2, 3]));
        raw.write_all(&bytes).await.unwrap();
    };
    let (client, ()) = tokio::join!(client_builder().connect_on(client_io), peer);
    let (mut client, response) = client.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(client.recv().await.unwrap().unwrap(), Message::text("welcome"));
    assert_eq!(client.recv().await.unwrap().unwrap(), Message::binary(vec![1, 2, 3]));
}

#[tokio::test]
async fn incoming_read_and_respond_to_a_plain_get() {
    let (server_io, mut raw) = duplex(8192);
    raw.write_all(b"GET /index.html?x=1 HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n")
        .await
        .unwrap();
    let incoming = Incoming::read(server_io, Config::default()).await.unwrap();
    assert!(!incoming.is_upgrade());
    assert_eq!(incoming.request().method(), http::Method::GET);
    assert_eq!(incoming.request().uri().path(), "/index.html");
    assert_eq!(incoming.request().uri().query(), Some("x=1"));
    assert_eq!(incoming.request().headers()["accept"], "text/html");
    incoming.respond(StatusCode::OK, "text/html; charset=utf-8", b"<h1>hello</h1>").await.unwrap();

    let mut response = String::new();
    guard("response", raw.read_to_string(&mut response)).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(header(head, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(head, "content-length"), Some("14"));
    assert_eq!(body, "<h1>hello</h1>");
}

#[tokio::test]
async fn incoming_read_then_accept_an_upgrade() {
    let (server_io, mut raw) = duplex(8192);
    let (incoming, ()) = tokio::join!(Incoming::read(server_io, Config::default()), async {
        raw.write_all(upgrade_request("").as_bytes()).await.unwrap();
    });
    let incoming = incoming.unwrap();
    assert!(incoming.is_upgrade());
    assert_eq!(incoming.request().uri().path(), "/chat");
    let mut server = incoming.accept(Accept::default()).await.unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(header(&head, "sec-websocket-accept"), Some(ACCEPT));
    raw.write_all(&frame(FIN | OP_TEXT, Some(MASK), b"upgraded")).await.unwrap();
    assert_eq!(server.recv().await.unwrap().unwrap(), Message::text("upgraded"));
}

#[tokio::test]
async fn rejected_upgrade_reaches_the_client_with_status_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}/private", listener.local_addr().unwrap().port());
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        wsx::accept_with(tcp, Config::default(), |req| {
            assert_eq!(req.uri().path(), "/private");
            Err(Reject {
                status: StatusCode::UNAUTHORIZED,
                headers: vec![(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                body: "a token is required\n".to_owned(),
            })
        })
        .await
    };
    let (server, client) = tokio::join!(server, wsx::connect(&url));

    let server_err = server.unwrap_err();
    assert!(matches!(server_err, Error::Rejected(_)), "{server_err:?}");
    assert_eq!(server_err.status(), Some(StatusCode::UNAUTHORIZED));

    let err = client.unwrap_err();
    let Error::Rejected(response) = &err else { panic!("expected Rejected, got {err:?}") };
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    let body = String::from_utf8_lossy(response.body());
    assert!(body.contains("a token is required"), "body: {body:?}");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let shown = err.to_string();
    assert!(shown.contains("401") && shown.contains("a token is required"), "{shown}");
}

#[tokio::test]
async fn wrong_websocket_version_is_answered_426() {
    let (server_io, mut raw) = duplex(8192);
    let request =
        upgrade_request("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    raw.write_all(request.as_bytes()).await.unwrap();
    let err = wsx::accept(server_io).await.unwrap_err();
    assert!(matches!(err, Error::Handshake(HandshakeError::UnsupportedVersion)), "{err:?}");
    assert_eq!(err.status(), Some(StatusCode::UPGRADE_REQUIRED));

    let mut response = String::new();
    guard("response", raw.read_to_string(&mut response)).await.unwrap();
    let head = response.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("HTTP/1.1 426 "), "{response}");
    assert_eq!(header(head, "sec-websocket-version"), Some("13"), "{response}");
}

#[tokio::test]
async fn bad_requests_are_answered_with_their_status() {
    let cases = [
        ("POST", upgrade_request("").replacen("GET", "POST", 1), "405"),
        (
            "no key",
            upgrade_request("").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            "400",
        ),
        ("short key", upgrade_request("").replace(KEY, "c2hvcnQ="), "400"),
    ];
    for (name, request, status) in cases {
        let (server_io, mut raw) = duplex(8192);
        raw.write_all(request.as_bytes()).await.unwrap();
        let err = wsx::accept(server_io).await.unwrap_err();
        assert!(matches!(err, Error::Handshake(_)), "{name}: {err:?}");
        assert_eq!(err.status().map(|s| s.as_str().to_owned()), Some(status.to_owned()), "{name}");
        let mut response = String::new();
        raw.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {response}");
        assert_eq!(header(&response, "connection"), Some("close"), "{name}");
    }
}

#[tokio::test]
async fn plain_http_404_is_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}/missing", listener.local_addr().unwrap().port());
    let server = async {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await;
        tcp.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\
              Connection: close\r\n\r\nno such place\n",
        )
        .await
        .unwrap();
        tcp.shutdown().await.unwrap();
        head
    };
    let (head, client) = tokio::join!(server, wsx::connect(&url));
    assert!(head.starts_with("GET /missing HTTP/1.1\r\n"), "{head}");

    let err = client.unwrap_err();
    let Error::Rejected(response) = &err else { panic!("expected Rejected, got {err:?}") };
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.body().as_ref(), b"no such place\n");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn plain_http_404_without_content_length_is_rejected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    let server = async {
        let (mut tcp, _) = listener.accept().await.unwrap();
        read_head(&mut tcp).await;
        tcp.write_all(b"HTTP/1.1 404 Not Found\r\n\r\nnothing here").await.unwrap();
        tcp.shutdown().await.unwrap();
    };
    let ((), client) = tokio::join!(server, wsx::connect(&url));
    let err = client.unwrap_err();
    let Error::Rejected(response) = &err else { panic!("expected Rejected, got {err:?}") };
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.body().as_ref(), b"nothing here");
}

#[tokio::test]
async fn subprotocol_negotiation_picks_the_servers_choice() {
    let (server_io, client_io) = duplex(8192);
    let server = wsx::accept_with(server_io, Config::default(), |req| {
        let offered = wsx::proto::handshake::offered_protocols(req);
        assert_eq!(offered, ["chat.v1", "chat.v2"]);
        Ok(Accept { protocol: Some(offered[1].clone()), ..Accept::default() })
    });
    let client = client_builder().protocol("chat.v1").protocol("chat.v2").connect_on(client_io);
    let (server, client) = tokio::join!(server, client);
    let (server, (client, response)) = (server.unwrap(), client.unwrap());
    assert_eq!(server.protocol(), Some("chat.v2"));
    assert_eq!(client.protocol(), Some("chat.v2"));
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");
}

#[tokio::test]
async fn no_subprotocol_when_none_is_picked() {
    let (server, client) =
        duplex_pair(Config::default(), client_builder().protocol("chat.v1"), 8192).await;
    assert_eq!(server.protocol(), None);
    assert_eq!(client.protocol(), None);
}

#[tokio::test]
async fn server_picking_an_unoffered_subprotocol_is_refused() {
    let (server_io, client_io) = duplex(8192);
    let server = wsx::accept_with(server_io, Config::default(), |_| {
        Ok(Accept { protocol: Some("other".to_owned()), ..Accept::default() })
    });
    let client = client_builder().protocol("chat.v1").connect_on(client_io);
    let (server, client) = tokio::join!(server, client);
    let server_err = server.unwrap_err();
    assert!(
        matches!(&server_err, Error::Handshake(HandshakeError::UnofferedProtocol(p)) if p == "other"),
        "{server_err:?}"
    );
    assert!(client.is_err(), "the client must not connect: {:?}", client.map(|(_, r)| r));
}

// ---------------------------------------------------------------------------------------------
// permessage-deflate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deflate_echo_of_one_mib_text_and_binary() {
    let deflate = || Config::default().deflate(Some(Default::default()));
    let (mut client, server, response, read) =
        counted_pair(deflate(), client_builder().config(deflate())).await;
    let extensions = response.headers()[SEC_WEBSOCKET_EXTENSIONS].to_str().unwrap();
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    let echo = tokio::spawn(echo(server));

    let text = Message::text(text_payload(1 << 20));
    let before = read.load(Ordering::SeqCst);
    client.send(text.clone()).await.unwrap();
    assert_eq!(guard("text echo", next_data(&mut client)).await, text);
    let text_wire = read.load(Ordering::SeqCst) - before;
    assert!(
        text_wire < (1 << 20) / 4,
        "a repetitive 1 MiB text came back in {text_wire} bytes: not compressed?"
    );

    let binary = Message::binary(common::noise(1 << 20, 42));
    client.send(binary.clone()).await.unwrap();
    assert_eq!(guard("binary echo", next_data(&mut client)).await, binary);

    // Many messages reuse the compression context; all must round-trip.
    for i in 0..200 {
        let msg = Message::text(format!("{{\"seq\":{i},\"payload\":\"{}\"}}", "x".repeat(i)));
        client.send(msg.clone()).await.unwrap();
        assert_eq!(next_data(&mut client).await, msg);
    }
    close_and_drain(&mut client).await;
    assert_eq!(echo.await.unwrap().unwrap(), 202);
}

#[tokio::test]
async fn deflate_server_with_plain_client_works_uncompressed() {
    let (mut client, server, response, read) =
        counted_pair(Config::default().deflate(Some(Default::default())), client_builder()).await;
    assert!(response.headers().get(SEC_WEBSOCKET_EXTENSIONS).is_none());
    let echo = tokio::spawn(echo(server));

    let text = Message::text(text_payload(1 << 20));
    let before = read.load(Ordering::SeqCst);
    client.send(text.clone()).await.unwrap();
    assert_eq!(guard("text echo", next_data(&mut client)).await, text);
    let text_wire = read.load(Ordering::SeqCst) - before;
    assert!(text_wire >= 1 << 20, "{text_wire} bytes on the wire without compression");

    let binary = Message::binary(common::noise(1 << 20, 43));
    client.send(binary.clone()).await.unwrap();
    assert_eq!(guard("binary echo", next_data(&mut client)).await, binary);
    close_and_drain(&mut client).await;
    assert_eq!(echo.await.unwrap().unwrap(), 2);
}

#[tokio::test]
async fn deflate_client_with_plain_server_works_uncompressed() {
    let (mut client, server, response, _) = counted_pair(
        Config::default(),
        client_builder().config(Config::default().deflate(Some(Default::default()))),
    )
    .await;
    assert!(response.headers().get(SEC_WEBSOCKET_EXTENSIONS).is_none());
    let echo = tokio::spawn(echo(server));
    let text = Message::text(text_payload(1 << 20));
    client.send(text.clone()).await.unwrap();
    assert_eq!(guard("text echo", next_data(&mut client)).await, text);
    close_and_drain(&mut client).await;
    assert_eq!(echo.await.unwrap().unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Helpers: pairs, echo, payloads
// ---------------------------------------------------------------------------------------------

fn client_builder() -> ClientBuilder {
    ClientBuilder::new("ws://localhost/chat")
}

/// A server with `server_config` and a client from `client`, handshaken over an in-memory
/// duplex with `buffer` bytes each way. Returns (client, server).
async fn duplex_pair(
    server_config: Config,
    client: ClientBuilder,
    buffer: usize,
) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (client_io, server_io) = duplex(buffer);
    let (server, client) = tokio::join!(
        wsx::accept_with(server_io, server_config, |_| Ok(Accept::default())),
        client.connect_on(client_io)
    );
    (client.unwrap().0, server.unwrap())
}

/// Like [`duplex_pair`], with the client's transport counting the bytes it reads.
async fn counted_pair(
    server_config: Config,
    client: ClientBuilder,
) -> (
    WebSocket<Counting<DuplexStream>>,
    WebSocket<DuplexStream>,
    http::Response<()>,
    Arc<AtomicUsize>,
) {
    let (client_io, server_io) = duplex(64 << 10);
    let read = Arc::new(AtomicUsize::new(0));
    let client_io = Counting::new(client_io, Arc::default(), read.clone());
    let (server, client) = tokio::join!(
        wsx::accept_with(server_io, server_config, |_| Ok(Accept::default())),
        client.connect_on(client_io)
    );
    let (client, response) = client.unwrap();
    (client, server.unwrap(), response, read)
}

/// A wsx server and a wsx client over loopback TCP. Returns (client, server).
async fn tcp_pair(
    server_config: Config,
    client: impl FnOnce(String) -> ClientBuilder,
) -> (WebSocket<MaybeTlsStream>, WebSocket<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    let server = async {
        let (tcp, _) = listener.accept().await.unwrap();
        wsx::accept_with(tcp, server_config, |_| Ok(Accept::default())).await
    };
    let (server, client) = tokio::join!(server, client(url).connect());
    (client.unwrap().0, server.unwrap())
}

/// Echoes data messages until the stream ends; returns how many it echoed.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> Result<usize, Error> {
    let mut n = 0;
    while let Some(msg) = ws.recv().await {
        let msg = msg?;
        if msg.is_data() {
            ws.send(msg).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// The next data message, skipping control frames.
async fn next_data<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Message {
    loop {
        let msg = ws.recv().await.expect("stream ended").unwrap();
        if msg.is_data() {
            return msg;
        }
    }
}

/// Everything received until the end of the stream; panics on an error.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(msg) = guard("drain", ws.recv()).await {
        got.push(msg.unwrap());
    }
    got
}

/// Closes normally and checks that the peer's reply arrives and the stream ends.
async fn close_and_drain<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    ws.close(None).await.unwrap();
    assert_eq!(drain(ws).await, vec![Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))]);
}

/// `len` bytes of compressible ASCII text.
fn text_payload(len: usize) -> String {
    (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

/// A transport wrapper counting write calls and bytes read.
struct Counting<S> {
    inner: S,
    writes: Arc<AtomicUsize>,
    read: Arc<AtomicUsize>,
}

impl<S> Counting<S> {
    fn new(inner: S, writes: Arc<AtomicUsize>, read: Arc<AtomicUsize>) -> Self {
        Self { inner, writes, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read.fetch_add(buf.filled().len() - before, Ordering::SeqCst);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: raw peers (RFC 6455 bytes written and parsed by hand)
// ---------------------------------------------------------------------------------------------

fn response_101(key: &str) -> String {
    let accept = wsx::proto::handshake::accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}

/// Reads an upgrade request and answers 101.
async fn raw_server_handshake<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let head = read_head(io).await;
    let key = header(&head, "sec-websocket-key").expect("no key");
    io.write_all(response_101(key).as_bytes()).await.unwrap();
}
