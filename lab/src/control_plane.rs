//! One cluster's real control plane: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, built from their Go modules
//! (see `lab/components/`), run as supervised children of the cluster
//! daemon in the lab's WAN netns.
//!
//! | component | listens on |
//! |---|---|
//! | etcd | `127.0.0.1:(2379 + 10k)` clients, `+1` peers (loopback of the WAN netns) |
//! | kube-apiserver | `<api_addr>:6443` (the cluster's WAN address) |
//! | kube-controller-manager | `<api_addr>:10257` |
//! | kube-scheduler | `<api_addr>:10259` |

pub mod pki;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::plan::{API_PORT, CLUSTER_DOMAIN, ClusterPlan};
use crate::state::LabDir;
use crate::supervise::{ProcessSpec, Supervised};
use pki::Pki;

/// How long the API server has to answer `/readyz` after it starts.
const API_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The running control plane of one cluster.
pub struct ControlPlane {
    /// Started components, in start order.
    components: Vec<Supervised>,
    /// Its PKI.
    pub pki: Pki,
}

impl ControlPlane {
    /// Writes the cluster's PKI (once), starts its components, waits until
    /// the API server is ready, then writes the admin kubeconfig to
    /// [`LabDir::admin_kubeconfig`] (what `mc-lab up` waits for).
    pub async fn start(dir: &LabDir, cluster: &ClusterPlan, bin: &Path) -> Result<Self> {
        let cluster_dir = dir.cluster_dir(&cluster.name);
        let pki = Pki::new(cluster_dir.join("pki"));
        pki.ensure(cluster)
            .with_context(|| format!("writing the PKI of cluster {}", cluster.name))?;
        let etcd_dir = cluster_dir.join("etcd");
        std::fs::create_dir_all(&etcd_dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&etcd_dir, std::fs::Permissions::from_mode(0o700))
            })
            .with_context(|| format!("cannot create {}", etcd_dir.display()))?;
        let spec = |name: &str, args: Vec<String>| ProcessSpec {
            name: format!("{}/{name}", cluster.name),
            program: bin.join(name),
            args,
            log: dir.logs().join(format!("{}-{name}.log", cluster.name)),
            netns: None,
        };
        let mut plane = ControlPlane {
            components: Vec::new(),
            pki: pki.clone(),
        };
        plane.components.push(Supervised::start(spec(
            "etcd",
            etcd_args(cluster, &etcd_dir),
        )));
        plane.components.push(Supervised::start(spec(
            "kube-apiserver",
            apiserver_args(cluster, &pki),
        )));
        let admin =
            crate::kubeconfig::client_from_file(&pki.kubeconfig(pki::ADMIN), &cluster.name).await?;
        wait_api_ready(cluster, &admin, Instant::now() + API_READY_TIMEOUT)
            .await
            .with_context(|| {
                format!(
                    "the API server of cluster {} did not become ready; see {}",
                    cluster.name,
                    dir.logs()
                        .join(format!("{}-kube-apiserver.log", cluster.name))
                        .display()
                )
            })?;
        plane.components.push(Supervised::start(spec(
            "kube-controller-manager",
            controller_manager_args(cluster, &pki),
        )));
        plane.components.push(Supervised::start(spec(
            "kube-scheduler",
            scheduler_args(cluster, &pki),
        )));
        let admin_kubeconfig = dir.admin_kubeconfig(&cluster.name);
        let tmp = admin_kubeconfig.with_extension("tmp");
        std::fs::copy(pki.kubeconfig(pki::ADMIN), &tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &admin_kubeconfig)
            .with_context(|| format!("cannot write {}", admin_kubeconfig.display()))?;
        tracing::info!(cluster = %cluster.name, api = %cluster.api_url(), "control plane ready");
        Ok(plane)
    }

    /// Stops the components, newest first.
    pub async fn stop(mut self) {
        while let Some(component) = self.components.pop() {
            component.stop().await;
        }
    }
}

/// The etcd client port of cluster `k` (loopback of the WAN netns, which
/// the lab's clusters share).
fn etcd_port(cluster: &ClusterPlan) -> u16 {
    2379 + 10 * cluster.index as u16
}

fn etcd_args(cluster: &ClusterPlan, data_dir: &Path) -> Vec<String> {
    let client = format!("http://127.0.0.1:{}", etcd_port(cluster));
    let peer = format!("http://127.0.0.1:{}", etcd_port(cluster) + 1);
    vec![
        format!("--name={}", cluster.name),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={}={peer}", cluster.name),
        // The lab's state lives in tmpfs; a machine crash loses it anyway.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(cluster: &ClusterPlan, pki: &Pki) -> Vec<String> {
    let path = |p: std::path::PathBuf| p.display().to_string();
    vec![
        format!("--etcd-servers=http://127.0.0.1:{}", etcd_port(cluster)),
        format!("--bind-address={}", cluster.api_addr()),
        format!("--advertise-address={}", cluster.api_addr()),
        format!("--secure-port={API_PORT}"),
        format!("--tls-cert-file={}", path(pki.apiserver_cert())),
        format!("--tls-private-key-file={}", path(pki.apiserver_key())),
        format!("--client-ca-file={}", path(pki.ca_cert())),
        format!("--service-cluster-ip-range={}", cluster.service_cidr()),
        format!("--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}"),
        format!(
            "--service-account-key-file={}",
            path(pki.service_account_public_key())
        ),
        format!(
            "--service-account-signing-key-file={}",
            path(pki.service_account_key())
        ),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

fn controller_manager_args(cluster: &ClusterPlan, pki: &Pki) -> Vec<String> {
    let path = |p: std::path::PathBuf| p.display().to_string();
    let kubeconfig = path(pki.kubeconfig(pki::CONTROLLER_MANAGER));
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--bind-address={}", cluster.api_addr()),
        format!("--cluster-name={}", cluster.name),
        "--leader-elect=false".into(),
        "--use-service-account-credentials=true".into(),
        format!(
            "--service-account-private-key-file={}",
            path(pki.service_account_key())
        ),
        format!("--root-ca-file={}", path(pki.ca_cert())),
        format!("--cluster-signing-cert-file={}", path(pki.ca_cert())),
        format!("--cluster-signing-key-file={}", path(pki.ca_key())),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

fn scheduler_args(cluster: &ClusterPlan, pki: &Pki) -> Vec<String> {
    let kubeconfig = pki.kubeconfig(pki::SCHEDULER).display().to_string();
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--bind-address={}", cluster.api_addr()),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// Waits until `/readyz` answers ok (first until the port accepts, so the
/// client does not log every refused connection).
async fn wait_api_ready(
    cluster: &ClusterPlan,
    client: &kube::Client,
    deadline: Instant,
) -> Result<()> {
    let addr = std::net::SocketAddr::from((cluster.api_addr(), API_PORT));
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {addr} to accept connections");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .context("building /readyz")?;
        let last = match client.request_text(request).await {
            Ok(_) => return Ok(()),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out waiting for /readyz: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
