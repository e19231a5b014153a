//! A hand-made tunnel caller: the agent's own tunnel client (TLS 1.3 and
//! HTTP/2 streams) presenting whatever certificate a test gives it, to see
//! what the gateway makes of callers the real agents never are.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use mc_identity::{CertSource, GatewayVerifier, SpiffeId};
use mc_tunnel::{
    MuxConfig, Request, Source, Status, Target, TunnelClient, read_status, write_request,
};

/// A TLS 1.3 client that verifies the gateway like the agent does (against
/// `verify_with`'s anchors, expecting `gateway`) and presents `cert` (PEM
/// chain and key), or nothing.
pub fn client_config(
    verify_with: &Arc<dyn CertSource>,
    gateway: &SpiffeId,
    cert: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(mc_identity::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(GatewayVerifier::new(
            verify_with.clone(),
            gateway.clone(),
        )));
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder.with_client_auth_cert(
            mc_identity::files::parse_certs(chain, "test chain")?,
            mc_identity::files::parse_key(key)?,
        )?,
    };
    Ok(Arc::new(config))
}

/// What a west pod with no known account looks like in a request.
pub fn west_source() -> Source {
    Source {
        cluster: "west".into(),
        namespace: None,
        service_account: None,
    }
}

/// Opens one tunnel stream to `default/backend:8080` on behalf of `source`
/// over a new tunnel connection and returns the gateway's status; an error
/// when the handshake or the stream fails (a rejected tunnel is closed
/// without a status).
pub async fn open_stream(
    gateway: &str,
    config: Arc<rustls::ClientConfig>,
    source: Source,
) -> Result<Status> {
    let addr: std::net::SocketAddr = gateway.parse()?;
    let mux = MuxConfig {
        connections: 1,
        connect_timeout: Duration::from_secs(2),
        ..MuxConfig::default()
    };
    let client = TunnelClient::new(config, addr, addr.ip().into(), mux);
    let mut stream = tokio::time::timeout(Duration::from_secs(3), client.open()).await??;
    let request = Request {
        target: Target {
            namespace: "default".into(),
            service: "backend".into(),
            port: 8080,
        },
        source,
    };
    write_request(&mut stream, &request, Duration::from_secs(2)).await?;
    Ok(read_status(&mut stream, Duration::from_secs(2)).await?)
}
