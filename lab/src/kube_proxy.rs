//! The real kube-proxy, one per node, run by the cluster daemon inside the
//! node's netns in the lab's proxy mode (nftables or iptables), as a
//! DaemonSet pod with host networking would run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::control_plane::pki::{self, Pki};
use crate::plan::{NodePlan, ProxyMode};
use crate::state::LabDir;
use crate::supervise::{ProcessSpec, Supervised};

/// Starts kube-proxy on every node of `nodes`.
pub fn start(
    dir: &LabDir,
    pki: &Pki,
    bin: &Path,
    mode: ProxyMode,
    nodes: &[NodePlan],
) -> Result<Vec<Supervised>> {
    let mut proxies = Vec::new();
    for node in nodes {
        let config = write_config(dir, pki, mode, node)?;
        proxies.push(Supervised::start(ProcessSpec {
            name: format!("{}/kube-proxy", node.name()),
            program: bin.join("kube-proxy"),
            args: vec![format!("--config={}", config.display())],
            log: dir.logs().join(format!(
                "{}-kube-proxy-{}.log",
                node.cluster.name,
                node.name()
            )),
            netns: Some(node.netns()),
        }));
    }
    tracing::info!(nodes = nodes.len(), mode = %mode, "kube-proxy started");
    Ok(proxies)
}

/// Writes the KubeProxyConfiguration of `node` and returns its path.
fn write_config(dir: &LabDir, pki: &Pki, mode: ProxyMode, node: &NodePlan) -> Result<PathBuf> {
    let config_dir = dir.cluster_dir(&node.cluster.name).join("kube-proxy");
    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("cannot create {}", config_dir.display()))?;
    let path = config_dir.join(format!("{}.yaml", node.name()));
    std::fs::write(&path, config(pki, mode, node))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// kube-proxy's configuration. Conntrack tuning is off: the nodes share
/// the host's kernel, whose conntrack table size is not the lab's to set.
fn config(pki: &Pki, mode: ProxyMode, node: &NodePlan) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         clientConnection:\n  kubeconfig: {kubeconfig}\n\
         hostnameOverride: {hostname}\n\
         mode: {mode}\n\
         clusterCIDR: {cluster_cidr}\n\
         healthzBindAddress: {node_ip}:10256\n\
         metricsBindAddress: 127.0.0.1:10249\n\
         conntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n  udpTimeout: 0s\n  udpStreamTimeout: 0s\n",
        kubeconfig = pki.kubeconfig(pki::PROXY).display(),
        hostname = node.name(),
        cluster_cidr = node.cluster.pod_cidr(),
        node_ip = node.wan_addr(),
    )
}
