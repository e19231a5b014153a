//! [`ClusterCa`]: verifies the API server's certificate against the
//! cluster CA file of the ServiceAccount volume, re-read every minute so a
//! rotated cluster CA is picked up without a restart (as kube-rs and
//! client-go do).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Server certificate verification against a CA bundle file.
#[derive(Debug)]
pub struct ClusterCa {
    path: PathBuf,
    reload: Duration,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Arc<WebPkiServerVerifier>, Instant)>,
}

impl ClusterCa {
    /// Reads the PEM bundle at `path` now (failing if it holds no usable
    /// CA) and again at most every `reload` afterwards.
    pub fn load(path: PathBuf, reload: Duration, provider: Arc<CryptoProvider>) -> Result<Self> {
        let verifier = verifier_from(&path, &provider)?;
        Ok(ClusterCa {
            path,
            reload,
            provider,
            current: Mutex::new((verifier, Instant::now())),
        })
    }

    /// The verifier for the bundle as last read. A bundle that cannot be
    /// read or parsed any more keeps the previous one in use.
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.1.elapsed() >= self.reload {
            current.1 = Instant::now();
            match verifier_from(&self.path, &self.provider) {
                Ok(verifier) => current.0 = verifier,
                Err(error) => tracing::warn!(path = %self.path.display(),
                    error = format!("{error:#}"), "re-reading the cluster CA failed; keeping the previous one"),
            }
        }
        current.0.clone()
    }
}

fn verifier_from(path: &Path, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("reading a certificate of {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate of {} is not a CA", path.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no CA certificate",
        path.display()
    );
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .with_context(|| format!("building a verifier from {}", path.display()))
}

impl ServerCertVerifier for ClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A CA (PEM) and a server certificate for `127.0.0.1` it signed.
    fn ca_and_server() -> (String, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        (ca.pem(), server.der().clone())
    }

    fn verifies(ca: &ClusterCa, server: &CertificateDer<'_>) -> bool {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        ca.verify_server_cert(server, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn a_rotated_ca_is_picked_up_and_a_broken_file_keeps_the_last_one() {
        let dir = std::env::temp_dir().join(format!("mc-admin-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.crt");
        let (old_ca, old_server) = ca_and_server();
        let (new_ca, new_server) = ca_and_server();
        std::fs::write(&path, &old_ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = ClusterCa::load(path.clone(), Duration::from_millis(50), provider).unwrap();
        assert!(verifies(&ca, &old_server));
        assert!(!verifies(&ca, &new_server), "a certificate of another CA");

        std::fs::write(&path, &new_ca).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(verifies(&ca, &new_server), "the rotated CA is used");
        assert!(!verifies(&ca, &old_server));

        std::fs::write(&path, "not a certificate").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            verifies(&ca, &new_server),
            "a broken file keeps the last CA"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_without_a_ca_is_refused_at_start() {
        let dir = std::env::temp_dir().join(format!("mc-admin-noca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(&path, "").unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let error = ClusterCa::load(path, Duration::from_secs(60), provider).unwrap_err();
        assert!(error.to_string().contains("no CA certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
