//! [`CsrCertSource`]: an identity obtained through the Kubernetes
//! CertificateSigningRequest API and renewed before it expires.
//!
//! The private key is generated in memory and never leaves the process:
//! only the CSR (public key and requested SPIFFE ID) goes to the API. The
//! controller's signer (signer name [`SIGNER_NAME`]) approves it and puts
//! the chain (leaf, issuer) in `status.certificate`. The trust anchors come
//! from a file (the mounted `mc-trust-anchor` Secret), re-read at every
//! renewal.
//!
//! Renewal starts two thirds into the leaf's lifetime. Until a new
//! certificate is issued, the old one stays in use (the signer may be
//! briefly down); the new one is swapped in with
//! [`SharedIdentity::replace`], so TLS configs pick it up at their next
//! handshake and open connections are untouched.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::csr::{LeafRequest, SIGNER_NAME};
use crate::files::read_text;
use crate::material::Identity;
use crate::source::{CertSource, SharedIdentity};
use crate::spiffe::SpiffeId;

/// How a [`CsrCertSource`] asks for certificates.
#[derive(Debug, Clone)]
pub struct CsrConfig {
    /// The identity to request (the ServiceAccount's own SPIFFE ID).
    pub id: SpiffeId,
    /// The trust anchors bundle (PEM file), read at every request.
    pub anchors_path: PathBuf,
    /// Prefix of the CSR names (a random suffix is added), e.g.
    /// `mc-node-agent-<node>`.
    pub name_prefix: String,
    /// Lifetime to ask for (`spec.expirationSeconds`); the signer may
    /// shorten it. `None` takes the signer's default.
    pub requested_lifetime: Option<Duration>,
    /// How long to wait for one CSR to be signed before asking again.
    pub issue_timeout: Duration,
    /// First retry delay after a failure; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
}

impl CsrConfig {
    /// Defaults: 30 s per request, retries from 1 s to 30 s.
    pub fn new(id: SpiffeId, anchors_path: PathBuf, name_prefix: &str) -> CsrConfig {
        CsrConfig {
            id,
            anchors_path,
            name_prefix: name_prefix.to_string(),
            requested_lifetime: None,
            issue_timeout: Duration::from_secs(30),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// An identity issued through CSRs and renewed in the background; see the
/// module docs. The renewal task ends when the source is dropped.
#[derive(Debug)]
pub struct CsrCertSource {
    shared: SharedIdentity,
}

impl CertSource for CsrCertSource {
    fn current(&self) -> Arc<Identity> {
        self.shared.current()
    }
}

impl CsrCertSource {
    /// Requests the first certificate, retrying until one is issued (a
    /// denial is retried too: RBAC or the signer may be fixed meanwhile),
    /// then renews in the background.
    pub async fn start(client: Client, cfg: CsrConfig) -> Arc<CsrCertSource> {
        let api: Api<CertificateSigningRequest> = Api::all(client);
        let first = obtain_with_retries(&api, &cfg).await;
        let source = Arc::new(CsrCertSource {
            shared: SharedIdentity::new(first),
        });
        tokio::spawn(renew(api, cfg, Arc::downgrade(&source)));
        source
    }
}

async fn obtain_with_retries(api: &Api<CertificateSigningRequest>, cfg: &CsrConfig) -> Identity {
    let mut delay = cfg.retry_min;
    loop {
        match obtain(api, cfg).await {
            Ok(identity) => return identity,
            Err(error) => {
                tracing::warn!(id = %cfg.id, error = format!("{error:#}"), retry_in = ?delay,
                    "certificate request failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(cfg.retry_max);
            }
        }
    }
}

/// Renews at two thirds of each leaf's lifetime until the source is gone.
async fn renew(api: Api<CertificateSigningRequest>, cfg: CsrConfig, source: Weak<CsrCertSource>) {
    loop {
        let renew_at = match source.upgrade() {
            Some(source) => source.current().renew_at(),
            None => return,
        };
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let identity = obtain_with_retries(&api, &cfg).await;
        match source.upgrade() {
            Some(source) => source.shared.replace(identity),
            None => return,
        }
    }
}

fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Creates one CSR and waits for its certificate.
async fn obtain(api: &Api<CertificateSigningRequest>, cfg: &CsrConfig) -> Result<Identity> {
    let anchors_pem = read_text(&cfg.anchors_path).context("reading the trust anchors")?;
    let request = LeafRequest::generate(&cfg.id)?;
    let name = format!("{}-{}", cfg.name_prefix, random_suffix());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [("app.kubernetes.io/part-of".to_string(), "mc".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: SIGNER_NAME.to_string(),
            request: ByteString(request.csr_pem().as_bytes().to_vec()),
            usages: Some(
                ["digital signature", "client auth", "server auth"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ),
            expiration_seconds: cfg
                .requested_lifetime
                .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &csr)
        .await
        .with_context(|| format!("creating CertificateSigningRequest {name}"))?;
    tracing::debug!(csr = %name, id = %cfg.id, "certificate requested");
    let chain = tokio::time::timeout(cfg.issue_timeout, wait_for_certificate(api, &name))
        .await
        .with_context(|| {
            format!(
                "CertificateSigningRequest {name} was not signed within {:?}",
                cfg.issue_timeout
            )
        })??;
    let identity = request
        .into_identity(&chain, &anchors_pem)
        .with_context(|| format!("the certificate of {name}"))?;
    tracing::info!(csr = %name, id = %identity.id(), not_after = ?identity.not_after(), "certificate issued");
    Ok(identity)
}

/// Polls the CSR until it carries a certificate or is denied or failed.
async fn wait_for_certificate(api: &Api<CertificateSigningRequest>, name: &str) -> Result<String> {
    let mut delay = Duration::from_millis(100);
    loop {
        match api.get(name).await {
            Ok(csr) => {
                let status = csr.status.unwrap_or_default();
                for cond in status.conditions.iter().flatten() {
                    if (cond.type_ == "Denied" || cond.type_ == "Failed") && cond.status == "True" {
                        bail!(
                            "CertificateSigningRequest {name} {}: {}: {}",
                            cond.type_.to_lowercase(),
                            cond.reason.as_deref().unwrap_or_default(),
                            cond.message.as_deref().unwrap_or_default()
                        );
                    }
                }
                if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                    return String::from_utf8(cert.0).context("the certificate is not PEM text");
                }
            }
            Err(error) => tracing::debug!(csr = %name, %error, "reading the CSR failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Where a component's identity comes from (`--identity-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `tls.crt`, `tls.key` and `ca.crt` files.
    Files,
    /// A key in memory and certificates through CSRs; only `ca.crt` is read
    /// from the identity directory.
    Csr,
}

impl std::str::FromStr for SourceKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "files" => Ok(SourceKind::Files),
            "csr" => Ok(SourceKind::Csr),
            other => Err(format!("unknown identity source {other:?} (csr or files)")),
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Files => "files",
            SourceKind::Csr => "csr",
        })
    }
}

/// What a component says about where its identity comes from: its flags.
#[derive(Debug, Clone)]
pub struct IdentityFlags {
    /// `--identity-source`.
    pub source: SourceKind,
    /// `--identity-dir`: all three files with `files`, only `ca.crt` with `csr`.
    pub dir: std::path::PathBuf,
    /// The SPIFFE ID to request with `csr`: trust domain, the pod's
    /// namespace and its ServiceAccount.
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
    /// Prefix of the CSR objects' names (e.g. the pod or node name).
    pub request_prefix: String,
}

impl IdentityFlags {
    /// Opens the identity source the flags describe; with `csr`, waits until
    /// the first certificate is issued. `what` names the component in errors
    /// and logs.
    pub async fn open(&self, client: Client, what: &str) -> Result<Arc<dyn CertSource>> {
        let paths = crate::IdentityPaths::in_dir(&self.dir);
        match self.source {
            SourceKind::Files => {
                let source = crate::FileCertSource::load(paths).with_context(|| {
                    format!("loading the {what} identity from {}", self.dir.display())
                })?;
                Ok(Arc::new(source))
            }
            SourceKind::Csr => {
                let id = SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)
                    .with_context(|| format!("the {what}'s SPIFFE ID"))?;
                let cfg = CsrConfig::new(id, paths.anchors, &self.request_prefix);
                tracing::info!(id = %cfg.id, "requesting the {what} certificate");
                Ok(CsrCertSource::start(client, cfg).await)
            }
        }
    }
}
