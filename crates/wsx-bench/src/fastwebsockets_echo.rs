//! The `fastwebsockets` echo server, behind hyper's HTTP/1.1 upgrade as its examples do.

use fastwebsockets::upgrade::{upgrade, UpgradeFut};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Serves HTTP/1.1 on `tcp` until the upgrade, then echoes on the upgraded connection.
pub(crate) async fn serve(tcp: TcpStream) -> Result<(), hyper::Error> {
    http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service_fn(upgrade_request))
        .with_upgrades()
        .await
}

/// Answers the upgrade and spawns the echo on the upgraded stream.
async fn upgrade_request(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade(&mut req)?;
    // As fastwebsockets' echo_server example: unconstrained by tokio's cooperative budget.
    tokio::spawn(tokio::task::unconstrained(async move {
        // Peers going away mid-benchmark is normal; errors stay quiet.
        let _ = echo(fut).await;
    }));
    Ok(response)
}

/// Echoes data messages until the peer closes (fastwebsockets answers the close itself).
async fn echo(fut: UpgradeFut) -> Result<(), WebSocketError> {
    // Whole messages, like every other server here, and the library defaults otherwise:
    // vectored writes above 1 KiB, auto pong, auto close, 64 MiB messages.
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
