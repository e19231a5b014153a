//! The PKI of one test cluster, generated with rcgen and written once into
//! its directory: a CA (which also signs `kubernetes.io/*` CSRs), the API
//! server's serving certificate, the ServiceAccount token key pair, and the
//! client certificates of the administrator and of
//! kube-controller-manager.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A client certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// The files and PEMs of one cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca_pem: String,
    /// `system:masters` (CN `kubernetes-admin`).
    pub admin: ClientCert,
    /// `system:kube-controller-manager`.
    pub controller_manager: ClientCert,
}

impl Pki {
    /// Generates everything into `dir`. `kubernetes_ip` is the `kubernetes`
    /// Service's address (the first of the Service range).
    pub fn generate(dir: &Path, kubernetes_ip: Ipv4Addr) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "mc-testenv-ca");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).context("self-signing the CA")?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca, ca_key);
        write(&dir.join("ca.crt"), &ca_pem)?;
        write(&dir.join("ca.key"), &issuer.key().serialize_pem())?;

        let mut names: Vec<SanType> = [IpAddr::from([127, 0, 0, 1]), IpAddr::from(kubernetes_ip)]
            .into_iter()
            .map(SanType::IpAddress)
            .collect();
        for dns in [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ] {
            names.push(SanType::DnsName(dns.try_into().context("a DNS name")?));
        }
        let serving = leaf(&issuer, "kube-apiserver", None, names, true)?;
        write(&dir.join("apiserver.crt"), &serving.cert_pem)?;
        write(&dir.join("apiserver.key"), &serving.key_pem)?;

        let sa = KeyPair::generate().context("generating the ServiceAccount key")?;
        write(&dir.join("sa.key"), &sa.serialize_pem())?;
        write(&dir.join("sa.pub"), &sa.public_key_pem())?;

        let admin = leaf(
            &issuer,
            "kubernetes-admin",
            Some("system:masters"),
            Vec::new(),
            false,
        )?;
        let controller_manager = leaf(
            &issuer,
            "system:kube-controller-manager",
            None,
            Vec::new(),
            false,
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            admin,
            controller_manager,
        })
    }

    /// The path of PKI file `name` (`ca.crt`, `sa.key`, ...).
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    group: Option<&str>,
    sans: Vec<SanType>,
    server: bool,
) -> Result<ClientCert> {
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
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the certificate of {cn}"))?;
    Ok(ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Writes `text` to `path`, readable by its owner only.
pub fn write(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}
