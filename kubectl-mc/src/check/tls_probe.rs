//! Connecting to a gateway from here to see which certificate it presents.
//! The laptop has no client certificate, so the gateway ends the handshake;
//! the certificate it sent first is all this needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

/// What a TLS connection to a gateway showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayTls {
    /// No TCP connection from here (often expected: the gateway is only
    /// reachable from the other cluster).
    Unreachable(String),
    /// The gateway presented no certificate.
    NoCertificate(String),
    /// The chain the gateway presented, leaf first (DER).
    Presented(Vec<Vec<u8>>),
}

/// Records the server's chain and lets the handshake go on: the checks run
/// on the recorded chain afterwards.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        if let Ok(mut slot) = self.chain.lock() {
            *slot = chain;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `address:port` and returns the chain the server presents.
pub async fn probe(address: &str, port: u16, timeout: Duration) -> GatewayTls {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((address, port))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return GatewayTls::Unreachable(format!("{address}:{port}: {e}")),
        Err(_) => {
            return GatewayTls::Unreachable(format!(
                "{address}:{port}: no connection within {}s",
                timeout.as_secs()
            ));
        }
    };
    let provider = mc_identity::crypto_provider();
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
    {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth(),
        Err(e) => return GatewayTls::NoCertificate(format!("building a TLS config: {e}")),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("mc-gateway").map(|n| n.to_owned());
    let handshake_error = match name {
        Ok(name) => match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no TLS handshake within {}s", timeout.as_secs())),
        },
        Err(e) => Some(e.to_string()),
    };
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    if chain.is_empty() {
        return GatewayTls::NoCertificate(
            handshake_error.unwrap_or_else(|| "empty certificate chain".to_string()),
        );
    }
    GatewayTls::Presented(chain)
}

/// Verifies that `chain` (leaf first) reaches one of the anchors in
/// `anchors_pem` for server use now.
pub fn chains_to(chain: &[Vec<u8>], anchors_pem: &str) -> Result<(), String> {
    let anchors_der = mc_identity::files::parse_certs(anchors_pem, "trust anchor")
        .map_err(|e| format!("{e:#}"))?;
    let anchors = anchors_der
        .iter()
        .map(|der| {
            webpki::anchor_from_trusted_cert(der)
                .map(|a| a.to_owned())
                .map_err(|e| format!("unusable trust anchor: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (leaf, rest) = chain.split_first().ok_or("empty chain")?;
    let leaf = CertificateDer::from(leaf.as_slice());
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let cert = webpki::EndEntityCert::try_from(&leaf).map_err(|e| e.to_string())?;
    let provider = mc_identity::crypto_provider();
    cert.verify_for_usage(
        provider.signature_verification_algorithms.all,
        &anchors,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}
