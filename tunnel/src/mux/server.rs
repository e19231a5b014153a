//! The gateway's side: serve one accepted tunnel connection, handing each
//! proxied connection (HTTP/2 stream) to a handler task.

use std::future::Future;

use bytes::Bytes;
use h2::server::Builder;

use super::stream::MuxStream;
use super::{MuxConfig, keepalive};

/// Serves one handshaken TLS connection until the agent closes it, it
/// fails, or it has drained after `shutdown` completed. Each proxied
/// connection is spawned as `handler(stream)`; read the request with
/// [`crate::read_request`] first. The response head leaves with the
/// handler's first write (the status), in the same TLS record.
///
/// When `shutdown` completes (pass `std::future::pending()` for never), the
/// agent is told to open no new streams here (HTTP/2 GOAWAY) while the
/// streams already open run to their end; the agent opens new ones on a
/// fresh connection, so a rolling restart drops no proxied connection.
pub async fn serve_connection<IO, H, F, S>(
    io: IO,
    config: &MuxConfig,
    handler: H,
    shutdown: S,
) -> Result<(), h2::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    H: Fn(MuxStream) -> F,
    F: Future<Output = ()> + Send + 'static,
    S: Future<Output = ()>,
{
    let mut builder = Builder::new();
    config.apply_server(&mut builder);
    let mut connection = builder.handshake::<_, Bytes>(io).await?;
    let ping = connection.ping_pong();
    let keepalive = keepalive(ping, config);
    let mut keepalive = std::pin::pin!(keepalive);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = connection.accept() => {
                let Some(accepted) = accepted else {
                    return Ok(());
                };
                let (request, mut respond) = accepted?;
                if request.method() != http::Method::CONNECT {
                    respond.send_reset(h2::Reason::PROTOCOL_ERROR);
                    continue;
                }
                tokio::spawn(handler(MuxStream::server(respond, request.into_body())));
            }
            () = &mut shutdown, if !draining => {
                draining = true;
                connection.graceful_shutdown();
            }
            failure = &mut keepalive => {
                tracing::info!(error = %failure, "closing silent tunnel connection");
                return Ok(());
            }
        }
    }
}
