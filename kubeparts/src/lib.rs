//! The real Kubernetes components as the lab (`mc-lab`) and the tests
//! (`mc-testenv`) run them: where the binaries `lab/components/build.sh`
//! built are ([`components_dir`]), and the certificates a control plane
//! needs ([`Ca`]). Neither the product nor its data path uses this.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
pub use rcgen::SanType;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Default cache of `lab/components/build.sh`; `current/bin` is its last build.
const DEFAULT_CACHE: &str = "/var/cache/mc-lab/components";

/// The components directory: `MC_LAB_COMPONENTS`, else the last build in
/// `MC_LAB_COMPONENTS_CACHE` (default `/var/cache/mc-lab/components`),
/// resolved so that a later build does not change a running lab's
/// binaries. Fails, saying how to build them, when one of `required` is
/// missing.
pub fn components_dir(required: &[&str]) -> Result<PathBuf> {
    let dir = match std::env::var_os("MC_LAB_COMPONENTS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("MC_LAB_COMPONENTS_CACHE")
            .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
            .join("current")
            .join("bin"),
    };
    check_components(&dir, required)?;
    Ok(dir.canonicalize().unwrap_or(dir))
}

/// Fails unless every one of `required` is a file in `dir`.
pub fn check_components(dir: &Path, required: &[&str]) -> Result<()> {
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the Kubernetes components {} are not in {}: build them with \
             `lab/components/build.sh` (about 10 minutes the first time) or point \
             MC_LAB_COMPONENTS at a directory holding them",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A cluster CA: signs the API server's serving certificate and the
/// components' client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl Ca {
    /// A new self-signed CA named `cn`.
    pub fn generate(cn: &str) -> Result<Ca> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of `cert_pem` and `key_pem` (as [`Ca::cert_pem`] and
    /// [`Ca::key_pem`] wrote them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).context("parsing the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).context("parsing the CA")?;
        Ok(Ca {
            issuer,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The API server's serving certificate for `ips` (its own addresses
    /// and the `kubernetes` Service's) and the names of the `kubernetes`
    /// Service in `cluster_domain`, plus `localhost`.
    pub fn apiserver(&self, ips: &[IpAddr], cluster_domain: &str) -> Result<CertPair> {
        let mut names: Vec<SanType> = ips.iter().copied().map(SanType::IpAddress).collect();
        for dns in [
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!("kubernetes.default.svc.{cluster_domain}"),
        ] {
            names.push(SanType::DnsName(
                dns.try_into().context("a Service DNS name")?,
            ));
        }
        self.sign("kube-apiserver", None, names, true)
    }

    /// A client certificate for user `user` (CN) in group `group` (O).
    pub fn client(&self, user: &str, group: Option<&str>) -> Result<CertPair> {
        self.sign(user, group, Vec::new(), false)
    }

    fn sign(
        &self,
        cn: &str,
        group: Option<&str>,
        sans: Vec<SanType>,
        server: bool,
    ) -> Result<CertPair> {
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the certificate of {cn}"))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new ServiceAccount token key pair, PEM: (private, public).
pub fn service_account_key() -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the ServiceAccount key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// Writes `text` to `path` atomically, readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
