//! The emulator's PKI: a cluster CA, a serving certificate, an admin client
//! certificate and the ServiceAccount token signing key, all kept in one
//! directory and reused across restarts.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File names inside the PKI directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const ADMIN_CERT: &str = "admin.crt";
pub const ADMIN_KEY: &str = "admin.key";
pub const SERVING_CERT: &str = "apiserver.crt";
pub const SERVING_KEY: &str = "apiserver.key";
pub const SA_SIGNING_KEY: &str = "sa-signing.key";
pub const KUBECONFIG: &str = "kubeconfig";

/// The X.520 organizationName attribute.
const ORGANIZATION_OID: &[u64] = &[2, 5, 4, 10];

/// The loaded or created PKI material.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// HMAC key for ServiceAccount tokens.
    pub sa_signing_key: Vec<u8>,
}

fn read_pair(dir: &Path, cert: &str, key: &str) -> Option<(String, String)> {
    let c = fs::read_to_string(dir.join(cert)).ok()?;
    let k = fs::read_to_string(dir.join(key)).ok()?;
    Some((c, k))
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", tmp.display()))?;
    }
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

fn create_ca(cluster_name: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster_name}-ca"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).context("self-signing CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Signs a leaf certificate with the CA; returns (cert PEM, key PEM).
fn sign_leaf(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    cn: &str,
    orgs: &[&str],
    sans: Vec<String>,
    server: bool,
) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("parsing CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).context("parsing CA certificate")?;
    let key = KeyPair::generate().context("generating leaf key")?;
    let mut params = CertificateParams::new(sans).context("leaf params (bad SAN?)")?;
    params.distinguished_name.push(DnType::CommonName, cn);
    // rcgen keeps one value per attribute type; a second organization goes
    // in under the same OID spelled as a custom type.
    match orgs {
        [] => {}
        [o] => params.distinguished_name.push(DnType::OrganizationName, *o),
        [a, b] => {
            params.distinguished_name.push(DnType::OrganizationName, *a);
            params
                .distinguished_name
                .push(DnType::CustomDnType(ORGANIZATION_OID.to_vec()), *b);
        }
        _ => anyhow::bail!(
            "at most two organizations (groups) per client certificate, got {}",
            orgs.len()
        ),
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
        .signed_by(&key, &issuer)
        .context("signing leaf certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Pki {
    /// Loads the CA, admin certificate and signing key from `dir`, creating
    /// what is missing; the serving certificate is issued afresh for `sans`.
    pub fn load_or_create(dir: &Path, cluster_name: &str, sans: &[String]) -> Result<Pki> {
        fs::create_dir_all(dir).with_context(|| format!("creating PKI dir {}", dir.display()))?;
        let (ca_cert_pem, ca_key_pem) = match read_pair(dir, CA_CERT, CA_KEY) {
            Some(p) => p,
            None => {
                let (c, k) = create_ca(cluster_name)?;
                write(dir, CA_KEY, k.as_bytes())?;
                write(dir, CA_CERT, c.as_bytes())?;
                (c, k)
            }
        };
        let (admin_cert_pem, admin_key_pem) = match read_pair(dir, ADMIN_CERT, ADMIN_KEY) {
            Some(p) => p,
            None => {
                let (c, k) = sign_leaf(
                    &ca_cert_pem,
                    &ca_key_pem,
                    "kubernetes-admin",
                    &["system:masters"],
                    vec![],
                    false,
                )?;
                write(dir, ADMIN_KEY, k.as_bytes())?;
                write(dir, ADMIN_CERT, c.as_bytes())?;
                (c, k)
            }
        };
        let (serving_cert_pem, serving_key_pem) = sign_leaf(
            &ca_cert_pem,
            &ca_key_pem,
            "kube-apiserver",
            &[],
            sans.to_vec(),
            true,
        )?;
        write(dir, SERVING_KEY, serving_key_pem.as_bytes())?;
        write(dir, SERVING_CERT, serving_cert_pem.as_bytes())?;
        let sa_signing_key = match fs::read_to_string(dir.join(SA_SIGNING_KEY)) {
            Ok(hexed) => {
                hex::decode(hexed.trim()).context("decoding the ServiceAccount signing key")?
            }
            Err(_) => {
                let key: [u8; 32] = rand::random();
                write(dir, SA_SIGNING_KEY, hex::encode(key).as_bytes())?;
                key.to_vec()
            }
        };
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_cert_pem,
            ca_key_pem,
            admin_cert_pem,
            admin_key_pem,
            serving_cert_pem,
            serving_key_pem,
            sa_signing_key,
        })
    }

    /// The TLS server configuration: serving certificate, optional client
    /// certificates verified against the CA, ALPN h2 and http/1.1.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_cert_pem.as_bytes()) {
            roots
                .add(c.context("parsing CA PEM")?)
                .context("adding CA root")?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow!("building client verifier: {e}"))?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.serving_cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("parsing serving certificate")?;
        let key = PrivateKeyDer::from_pem_slice(self.serving_key_pem.as_bytes())
            .context("parsing serving key")?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("serving certificate")?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// Issues a client certificate signed by the cluster CA (user = `cn`,
    /// groups = `orgs`, at most two); returns (cert PEM, key PEM). Useful to the lab and tests.
    pub fn issue_client_cert(&self, cn: &str, orgs: &[&str]) -> Result<(String, String)> {
        sign_leaf(&self.ca_cert_pem, &self.ca_key_pem, cn, orgs, vec![], false)
    }
}
