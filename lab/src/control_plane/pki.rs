//! The PKI of one cluster's control plane, written once per cluster into
//! its state directory: a CA (which also signs `kubernetes.io/*` CSRs), the
//! API server's serving certificate, the ServiceAccount token key, and one
//! client certificate per component with the identity the default RBAC
//! policy expects of it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mc_kubeparts::{Ca, write_private};

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
        let ca = if self.ca_cert().exists() && self.ca_key().exists() {
            Ca::from_pem(&read(&self.ca_cert())?, &read(&self.ca_key())?)?
        } else {
            let ca = Ca::generate(&format!("{}-ca", cluster.name))?;
            write_private(&self.ca_key(), &ca.key_pem())?;
            write_private(&self.ca_cert(), ca.cert_pem())?;
            ca
        };
        if !self.apiserver_cert().exists() {
            let ips = [
                IpAddr::from(cluster.api_addr()),
                IpAddr::from(cluster.kubernetes_service_ip()),
                IpAddr::from([127, 0, 0, 1]),
            ];
            let serving = ca.apiserver(&ips, CLUSTER_DOMAIN)?;
            write_private(&self.apiserver_key(), &serving.key_pem)?;
            write_private(&self.apiserver_cert(), &serving.cert_pem)?;
        }
        if !(self.service_account_key().exists() && self.service_account_public_key().exists()) {
            let (private, public) = mc_kubeparts::service_account_key()?;
            write_private(&self.service_account_public_key(), &public)?;
            write_private(&self.service_account_key(), &private)?;
        }
        for who in IDENTITIES {
            if !self.cert(who).exists() {
                let pair = ca.client(who.user, who.group)?;
                write_private(&self.key(who), &pair.key_pem)?;
                write_private(&self.cert(who), &pair.cert_pem)?;
            }
            let kubeconfig = kubeconfig(
                cluster,
                ca.cert_pem(),
                &read(&self.cert(who))?,
                &read(&self.key(who))?,
            );
            write_private(&self.kubeconfig(who), &kubeconfig)?;
        }
        Ok(())
    }
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
