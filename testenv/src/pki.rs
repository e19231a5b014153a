//! The PKI of one test cluster, generated with rcgen and written once into
//! its directory: a CA (which also signs `kubernetes.io/*` CSRs), the API
//! server's serving certificate, the ServiceAccount token key pair, and the
//! client certificates of the administrator and of
//! kube-controller-manager.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mc_kubeparts::{Ca, CertPair, write_private};

/// The files and PEMs of one cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA certificate.
    pub ca_pem: String,
    /// `system:masters` (CN `kubernetes-admin`).
    pub admin: CertPair,
    /// `system:kube-controller-manager`.
    pub controller_manager: CertPair,
}

impl Pki {
    /// Generates everything into `dir`. `kubernetes_ip` is the `kubernetes`
    /// Service's address (the first of the Service range).
    pub fn generate(dir: &Path, kubernetes_ip: Ipv4Addr) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = Ca::generate("mc-testenv-ca")?;
        write_private(&dir.join("ca.crt"), ca.cert_pem())?;
        write_private(&dir.join("ca.key"), &ca.key_pem())?;
        let ips = [IpAddr::from([127, 0, 0, 1]), IpAddr::from(kubernetes_ip)];
        let serving = ca.apiserver(&ips, "cluster.local")?;
        write_private(&dir.join("apiserver.crt"), &serving.cert_pem)?;
        write_private(&dir.join("apiserver.key"), &serving.key_pem)?;
        let (private, public) = mc_kubeparts::service_account_key()?;
        write_private(&dir.join("sa.key"), &private)?;
        write_private(&dir.join("sa.pub"), &public)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_pem: ca.cert_pem().to_string(),
            admin: ca.client("kubernetes-admin", Some("system:masters"))?,
            controller_manager: ca.client("system:kube-controller-manager", None)?,
        })
    }

    /// The path of PKI file `name` (`ca.crt`, `sa.key`, ...).
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}
