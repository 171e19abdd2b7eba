//! wsx behind a plain hyper 1 HTTP/1.1 server, through `wsx::hyper::upgrade`.

use std::convert::Infallible;
use std::sync::LazyLock;

use http_body_util::{Either, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wsx::proto::handshake::ServerPolicy;

/// Serves HTTP/1.1 on `tcp` until the upgrade; the echo then runs in a task of its own.
pub(crate) async fn serve(tcp: TcpStream) -> Result<(), hyper::Error> {
    http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service_fn(upgrade_request))
        .with_upgrades()
        .await
}

type Body = Either<Empty<Bytes>, Full<Bytes>>;

/// One policy for the whole server, as `wsx serve` has one configuration: every connection
/// shares its `Arc<Config>` (one made per request would cost each idle connection ~170 bytes).
/// `Config::default()`: keepalive on, 64 MiB messages, no compression.
static POLICY: LazyLock<ServerPolicy> = LazyLock::new(|| ServerPolicy::new(wsx::Config::default()));

/// Answers the upgrade with wsx's `101` (or its refusal) and spawns the echo.
async fn upgrade_request(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match wsx::hyper::upgrade(&mut req, &POLICY) {
        Ok((response, upgrade)) => {
            // The upgrade is awaited in the echo's task, as wsx's documentation shows it.
            tokio::spawn(async move {
                let Ok(mut ws) = upgrade.await else { return };
                // Peers going away mid-benchmark is normal; errors stay quiet.
                let _ = crate::echo(&mut ws, wsx::Message::is_data).await;
            });
            Ok(response.map(Either::Left))
        }
        Err(refusal) => Ok(refusal.response().map(Either::Right)),
    }
}
