//! The PKI of one cluster's control plane, written once per cluster into
//! its state directory: a CA (which also signs `kubernetes.io/*` CSRs), the
//! API server's serving certificate, the ServiceAccount token key, and one
//! client certificate per component with the identity the default RBAC
//! policy expects of it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::plan::{CLUSTER_DOMAIN, ClusterPlan};

/// A client identity of the control plane: its file stem, user and group.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// Stem of its `.crt`, `.key` and `.kubeconfig` files.
    pub stem: &'static str,
    /// User name (the certificate's CN).
    pub user: &'static str,
    /// Group (the certificate's O), if any.
    pub group: Option<&'static str>,
}

/// The cluster's administrator (what the lab's kubeconfig holds, and what
/// the lab's kubelet uses).
pub const ADMIN: Identity = Identity {
    stem: "admin",
    user: "kubernetes-admin",
    group: Some("system:masters"),
};
/// kube-controller-manager (bound by the default `system:kube-controller-manager` role).
pub const CONTROLLER_MANAGER: Identity = Identity {
    stem: "kube-controller-manager",
    user: "system:kube-controller-manager",
    group: None,
};
/// kube-scheduler (bound by the default `system:kube-scheduler` role).
pub const SCHEDULER: Identity = Identity {
    stem: "kube-scheduler",
    user: "system:kube-scheduler",
    group: None,
};
/// kube-proxy (bound by the default `system:node-proxier` role).
pub const PROXY: Identity = Identity {
    stem: "kube-proxy",
    user: "system:kube-proxy",
    group: None,
};

const IDENTITIES: [Identity; 4] = [ADMIN, CONTROLLER_MANAGER, SCHEDULER, PROXY];

/// Paths of the PKI files of one cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The PKI in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Pki { dir }
    }
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The CA key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The API server's serving certificate.
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    /// The API server's serving key.
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    /// The ServiceAccount token signing key.
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    /// Its public half, which verifies tokens.
    pub fn service_account_public_key(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
    /// The client certificate of `who`.
    pub fn cert(&self, who: Identity) -> PathBuf {
        self.dir.join(format!("{}.crt", who.stem))
    }
    /// The client key of `who`.
    pub fn key(&self, who: Identity) -> PathBuf {
        self.dir.join(format!("{}.key", who.stem))
    }
    /// The kubeconfig of `who`.
    pub fn kubeconfig(&self, who: Identity) -> PathBuf {
        self.dir.join(format!("{}.kubeconfig", who.stem))
    }

    /// Creates whatever is missing (a restarted daemon keeps its CA, so
    /// tokens and kubeconfigs already handed out stay valid).
    pub fn ensure(&self, cluster: &ClusterPlan) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        if !(self.ca_cert().exists() && self.ca_key().exists()) {
            let (cert, key) = new_ca(&cluster.name)?;
            write(&self.ca_key(), &key)?;
            write(&self.ca_cert(), &cert)?;
        }
        let ca_cert = read(&self.ca_cert())?;
        let ca_key = read(&self.ca_key())?;
        let issuer = Issuer::from_ca_cert_pem(&ca_cert, KeyPair::from_pem(&ca_key)?)
            .context("parsing the cluster CA")?;
        if !self.apiserver_cert().exists() {
            let (cert, key) = leaf(
                &issuer,
                "kube-apiserver",
                None,
                serving_names(cluster),
                true,
            )?;
            write(&self.apiserver_key(), &key)?;
            write(&self.apiserver_cert(), &cert)?;
        }
        if !(self.service_account_key().exists() && self.service_account_public_key().exists()) {
            let key = KeyPair::generate().context("generating the ServiceAccount key")?;
            write(&self.service_account_public_key(), &key.public_key_pem())?;
            write(&self.service_account_key(), &key.serialize_pem())?;
        }
        for who in IDENTITIES {
            if !self.cert(who).exists() {
                let (cert, key) = leaf(&issuer, who.user, who.group, Vec::new(), false)?;
                write(&self.key(who), &key)?;
                write(&self.cert(who), &cert)?;
            }
            let kubeconfig = kubeconfig(
                cluster,
                &ca_cert,
                &read(&self.cert(who))?,
                &read(&self.key(who))?,
            );
            write(&self.kubeconfig(who), &kubeconfig)?;
        }
        Ok(())
    }
}

/// The names a client may reach the API server by: its WAN address, the
/// `kubernetes` Service, and loopback.
fn serving_names(cluster: &ClusterPlan) -> Vec<SanType> {
    let mut names: Vec<SanType> = [
        IpAddr::from(cluster.api_addr()),
        IpAddr::from(cluster.kubernetes_service_ip()),
        IpAddr::from([127, 0, 0, 1]),
    ]
    .into_iter()
    .map(SanType::IpAddress)
    .collect();
    for dns in [
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{CLUSTER_DOMAIN}"),
        "localhost".to_string(),
    ] {
        if let Ok(name) = dns.try_into() {
            names.push(SanType::DnsName(name));
        }
    }
    names
}

fn new_ca(cluster: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster}-ca"));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    group: Option<&str>,
    sans: Vec<SanType>,
    server: bool,
) -> Result<(String, String)> {
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
    Ok((cert.pem(), key.serialize_pem()))
}

/// A kubeconfig with the credentials inline, context named after the
/// cluster.
fn kubeconfig(cluster: &ClusterPlan, ca: &str, cert: &str, key: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let name = &cluster.name;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\n",
        server = cluster.api_url(),
        ca = b64(ca),
        cert = b64(cert),
        key = b64(key),
    )
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` atomically; keys and kubeconfigs readable by root only.
fn write(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
