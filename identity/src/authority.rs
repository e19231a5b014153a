//! A small certificate authority for the lab and tests: a self-signed trust
//! anchor that issues ECDSA P-256 leaf certificates carrying one SPIFFE URI
//! SAN, and the per-cluster issuers (see [`crate::issuer`]) that sign the
//! leaves of production workloads.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use crate::files::{IdentityPaths, write_private, write_public};
use crate::spiffe::SpiffeId;

/// Lifetime of a generated trust anchor: ten years.
pub const ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How far back `not_before` is set, to tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A self-signed CA certificate and its key.
pub struct TrustAnchor {
    trust_domain: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and key, both PEM.
#[derive(Clone)]
pub struct IssuedLeaf {
    /// The identity the certificate carries.
    pub id: SpiffeId,
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// The leaf's PKCS#8 private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TrustAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustAnchor")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

fn anchor_params(trust_domain: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("mc trust anchor {trust_domain}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl TrustAnchor {
    /// Generates a new anchor (ECDSA P-256, ten years) for `trust_domain`.
    pub fn generate(trust_domain: &str) -> Result<TrustAnchor> {
        // Validates the trust domain the same way IDs are validated.
        SpiffeId::system(trust_domain, "mc-controller")
            .with_context(|| format!("invalid trust domain {trust_domain:?}"))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .context("generating trust anchor key")?;
        let mut params = anchor_params(trust_domain);
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ANCHOR_LIFETIME).into();
        let cert = params
            .self_signed(&key)
            .context("self-signing the trust anchor")?;
        Ok(TrustAnchor {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an anchor written by [`TrustAnchor::write`].
    pub fn from_pem(trust_domain: &str, cert_pem: &str, key_pem: &str) -> Result<TrustAnchor> {
        let key = KeyPair::from_pem(key_pem).context("parsing trust anchor key")?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).context("parsing trust anchor certificate")?;
        Ok(TrustAnchor {
            trust_domain: trust_domain.to_owned(),
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The trust domain leaf IDs are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The anchor certificate (PEM), what every peer trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The rcgen issuer (certificate parameters and key) of the anchor.
    pub(crate) fn rcgen_issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The anchor's private key (PKCS#8 PEM). Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Writes `ca.crt` and `ca.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_public(&dir.join("ca.crt"), &self.cert_pem)?;
        write_private(&dir.join("ca.key"), &self.key_pem())
    }

    /// Reads `ca.crt` and `ca.key` from `dir`.
    pub fn read(trust_domain: &str, dir: &Path) -> Result<TrustAnchor> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        TrustAnchor::from_pem(trust_domain, &read("ca.crt")?, &read("ca.key")?)
    }

    /// Issues a leaf for `service_account` in `namespace` signed by the
    /// anchor itself, with the same fields as a cluster issuer's leaves. mc's
    /// agents and gateways refuse such leaves (they prove no cluster): for
    /// tests and for bring-your-own-PKI experiments only.
    pub fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        lifetime: Duration,
    ) -> Result<IssuedLeaf> {
        let id = SpiffeId::new(&self.trust_domain, namespace, service_account)
            .context("building the leaf's SPIFFE ID")?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating leaf key")?;
        let params = crate::issuer::leaf_params(&id, lifetime)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the leaf for {id}"))?;
        Ok(IssuedLeaf {
            id,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a leaf and writes it with this anchor into an identity
    /// directory (`tls.crt`, `tls.key`, `ca.crt`), the layout
    /// [`crate::FileCertSource`] loads.
    pub fn issue_to_dir(
        &self,
        namespace: &str,
        service_account: &str,
        lifetime: Duration,
        dir: &Path,
    ) -> Result<IssuedLeaf> {
        let leaf = self.issue(namespace, service_account, lifetime)?;
        leaf.write(&IdentityPaths::in_dir(dir), &self.cert_pem)?;
        Ok(leaf)
    }
}

impl IssuedLeaf {
    /// Writes the leaf, its key (mode 0600) and the anchors bundle.
    pub fn write(&self, paths: &IdentityPaths, anchors_pem: &str) -> Result<()> {
        for path in [&paths.cert_chain, &paths.key, &paths.anchors] {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        write_public(&paths.cert_chain, &self.cert_pem)?;
        write_private(&paths.key, &self.key_pem)?;
        write_public(&paths.anchors, anchors_pem)
    }
}
