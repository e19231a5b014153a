//! The gateway's side: serve one accepted tunnel connection, handing each
//! proxied connection (HTTP/2 stream) to a handler task.

use std::future::Future;

use bytes::Bytes;
use h2::server::Builder;

use super::stream::MuxStream;
use super::{MuxConfig, keepalive};

/// Serves one handshaken TLS connection until the agent closes it or it
/// fails. Each proxied connection is spawned as `handler(stream)`; read the
/// request with [`crate::read_request`] first. The response head is sent at
/// once, before the handler runs, so the agent never waits for it.
pub async fn serve_connection<IO, H, F>(
    io: IO,
    config: &MuxConfig,
    handler: H,
) -> Result<(), h2::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    H: Fn(MuxStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut builder = Builder::new();
    config.apply_server(&mut builder);
    let mut connection = builder.handshake::<_, Bytes>(io).await?;
    let ping = connection.ping_pong();
    let accept_loop = async {
        while let Some(accepted) = connection.accept().await {
            let (request, mut respond) = accepted?;
            if request.method() != http::Method::CONNECT {
                respond.send_reset(h2::Reason::PROTOCOL_ERROR);
                continue;
            }
            let send = respond.send_response(http::Response::new(()), false)?;
            tokio::spawn(handler(MuxStream::server(send, request.into_body())));
        }
        Ok(())
    };
    tokio::select! {
        result = accept_loop => result,
        failure = keepalive(ping, config) => {
            tracing::info!(error = %failure, "closing silent tunnel connection");
            Ok(())
        }
    }
}
