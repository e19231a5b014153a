//! Certificate verifiers for both ends of the tunnel. Both read the trust
//! anchors from the [`CertSource`] on every handshake, so rotating anchors
//! needs no new TLS config.
//!
//! * [`GatewayVerifier`] (agent side): the gateway's chain must reach an
//!   anchor and its single URI SAN must be exactly the expected SPIFFE ID;
//!   with [`GatewayVerifier::in_cluster`], the issuer on the path must also
//!   be that cluster's (a gateway of another linked cluster, or a leaf the
//!   anchor signed directly, is refused). The TLS server name is ignored:
//!   SPIFFE IDs are URI SANs, not DNS names.
//! * [`AgentVerifier`] (gateway side): the client certificate is mandatory,
//!   must reach an anchor and must carry a SPIFFE ID in the gateway's own
//!   trust domain. Which IDs may reach which service is the gateway's
//!   authorization decision, made after the handshake with
//!   [`crate::peer_spiffe_id`].

use std::sync::{Arc, LazyLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use crate::issuer::{ClusterError, issuing_cluster_of};
use crate::peer::spiffe_id_of;
use crate::source::CertSource;
use crate::spiffe::SpiffeId;

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// The crypto provider of every mc TLS config: ring, built once.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::clone(&PROVIDER)
}

pub(crate) fn algorithms() -> &'static WebPkiSupportedAlgorithms {
    &PROVIDER.signature_verification_algorithms
}

/// Verifies that `chain` (leaf first, then intermediates) chains to one of
/// `anchors` for `usage` at `now`. Returns the certificate that signed the
/// leaf on the verified path (`None` when an anchor signed it directly):
/// certificates the peer sent but the path does not use are ignored.
pub(crate) fn verify_chain(
    anchors: &[TrustAnchor<'_>],
    chain: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<Option<CertificateDer<'static>>, webpki::Error> {
    let (end_entity, intermediates) = chain.split_first().ok_or(webpki::Error::BadDer)?;
    let cert = webpki::EndEntityCert::try_from(end_entity)?;
    let path = cert.verify_for_usage(
        algorithms().all,
        anchors,
        intermediates,
        now,
        usage,
        None,
        None,
    )?;
    Ok(path
        .intermediate_certificates()
        .next()
        .map(|issuer| issuer.der().into_owned()))
}

fn chain_of(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Vec<CertificateDer<'static>> {
    std::iter::once(end_entity)
        .chain(intermediates)
        .map(|c| c.clone().into_owned())
        .collect()
}

/// Maps a webpki failure to the rustls error (and TLS alert) that fits it.
fn to_rustls(error: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let reason = match error {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(reason)
}

fn identity_error(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// The peer's certificate carries a valid SPIFFE ID, but not an accepted one.
#[derive(Debug, thiserror::Error)]
#[error("peer identity {found} is not the expected {expected}")]
pub struct UnexpectedIdentity {
    /// What the certificate says.
    pub found: String,
    /// What was required.
    pub expected: String,
}

fn signature_schemes() -> Vec<SignatureScheme> {
    algorithms().supported_schemes()
}

/// The gateway's certificate was not issued by the expected cluster.
#[derive(Debug, thiserror::Error)]
#[error("gateway certificate is not from cluster {expected}'s issuer: {found}")]
pub struct UnexpectedCluster {
    /// What the chain shows (a cluster, or why none).
    pub found: String,
    /// The cluster the Link names.
    pub expected: String,
}

/// Agent side: verifies the gateway. See the module docs.
#[derive(Debug)]
pub struct GatewayVerifier {
    source: Arc<dyn CertSource>,
    expected: SpiffeId,
    cluster: Option<String>,
}

impl GatewayVerifier {
    /// Accepts only a gateway proving `expected`.
    pub fn new(source: Arc<dyn CertSource>, expected: SpiffeId) -> GatewayVerifier {
        GatewayVerifier {
            source,
            expected,
            cluster: None,
        }
    }

    /// Also requires the gateway's certificate to come from `cluster`'s
    /// issuer.
    pub fn in_cluster(mut self, cluster: &str) -> GatewayVerifier {
        self.cluster = Some(cluster.to_owned());
        self
    }
}

impl ServerCertVerifier for GatewayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = self.source.current();
        let chain = chain_of(end_entity, intermediates);
        let issuer = verify_chain(
            identity.anchors(),
            &chain,
            now,
            webpki::KeyUsage::server_auth(),
        )
        .map_err(to_rustls)?;
        let found = spiffe_id_of(end_entity).map_err(identity_error)?;
        if found != self.expected {
            return Err(identity_error(UnexpectedIdentity {
                found: found.to_string(),
                expected: self.expected.to_string(),
            }));
        }
        if let Some(expected) = &self.cluster {
            let issuing = issuer
                .ok_or(ClusterError::NoIssuer)
                .and_then(|issuer| issuing_cluster_of(&issuer));
            let found = match issuing {
                Ok(issuing) if issuing.cluster == *expected => None,
                Ok(issuing) => Some(format!("cluster {}", issuing.cluster)),
                Err(error) => Some(error.to_string()),
            };
            if let Some(found) = found {
                return Err(identity_error(UnexpectedCluster {
                    found,
                    expected: expected.clone(),
                }));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_schemes()
    }
}

/// Gateway side: verifies agents. See the module docs.
#[derive(Debug)]
pub struct AgentVerifier {
    source: Arc<dyn CertSource>,
}

impl AgentVerifier {
    /// Requires a client certificate chaining to the source's anchors, with
    /// a SPIFFE ID in the source identity's trust domain.
    pub fn new(source: Arc<dyn CertSource>) -> AgentVerifier {
        AgentVerifier { source }
    }
}

impl ClientCertVerifier for AgentVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The anchors can rotate, so no fixed list can be returned here;
        // mc clients have exactly one certificate and ignore hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let identity = self.source.current();
        let chain = chain_of(end_entity, intermediates);
        verify_chain(
            identity.anchors(),
            &chain,
            now,
            webpki::KeyUsage::client_auth(),
        )
        .map_err(to_rustls)?;
        let found = spiffe_id_of(end_entity).map_err(identity_error)?;
        let own_domain = identity.id().trust_domain();
        if found.trust_domain() != own_domain {
            return Err(identity_error(UnexpectedIdentity {
                found: found.to_string(),
                expected: format!("an identity in trust domain {own_domain}"),
            }));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_schemes()
    }
}
