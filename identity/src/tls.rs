//! rustls configs for both ends of the tunnel: TLS 1.3 only, ring, mutual
//! authentication, certificates and anchors read from a [`CertSource`] on
//! every handshake, and no session resumption.
//!
//! Why no resumption: a resumed session keeps the identity of its original
//! handshake, so after a renewal an agent would keep reconnecting with the
//! certificate it replaced, and the gateway would see a certificate that
//! may have expired. Tunnel connections are few and long-lived (a couple
//! per gateway address, many proxied connections each), so a full
//! handshake per tunnel connection costs next to nothing.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::source::CertSource;
use crate::spiffe::SpiffeId;
use crate::verify::{AgentVerifier, GatewayVerifier, crypto_provider};

/// Hands rustls the source's current certified key, on either end.
#[derive(Debug)]
pub struct SourceResolver {
    source: Arc<dyn CertSource>,
}

impl SourceResolver {
    /// Resolves to whatever `source` holds at handshake time.
    pub fn new(source: Arc<dyn CertSource>) -> SourceResolver {
        SourceResolver { source }
    }

    fn current_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(self.source.current().certified_key())
    }
}

impl ResolvesServerCert for SourceResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }
}

impl ResolvesClientCert for SourceResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The gateway's server config: requires a client certificate chaining to
/// the anchors (see [`AgentVerifier`]), presents the source's certificate,
/// and neither issues tickets nor caches sessions (see the module docs).
pub fn server_config(source: Arc<dyn CertSource>) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .with_client_cert_verifier(Arc::new(AgentVerifier::new(Arc::clone(&source))))
        .with_cert_resolver(Arc::new(SourceResolver::new(source)));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The agent's client config for one Link: presents the source's
/// certificate and accepts only a gateway proving `gateway` (see
/// [`GatewayVerifier`]). The TLS server name given to `connect` is not
/// checked. Every connection is a full handshake (see the module docs).
pub fn client_config(source: Arc<dyn CertSource>, gateway: SpiffeId) -> Result<Arc<ClientConfig>> {
    let verifier = GatewayVerifier::new(Arc::clone(&source), gateway);
    config_with(source, verifier)
}

/// [`client_config`] for the gateways of `cluster`: their certificates must
/// also come from that cluster's issuer.
pub fn cluster_client_config(
    source: Arc<dyn CertSource>,
    gateway: SpiffeId,
    cluster: &str,
) -> Result<Arc<ClientConfig>> {
    let verifier = GatewayVerifier::new(Arc::clone(&source), gateway).in_cluster(cluster);
    config_with(source, verifier)
}

fn config_with(
    source: Arc<dyn CertSource>,
    verifier: GatewayVerifier,
) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with the ring provider")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SourceResolver::new(source)));
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}
