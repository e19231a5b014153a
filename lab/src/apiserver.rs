//! The cluster's API server: the Kubernetes API emulator, listening on the
//! cluster's API address in the WAN netns, with its PKI and storage in the
//! lab's state directory.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mc_emulator::{Emulator, EmulatorConfig};

use crate::plan::{API_PORT, CLUSTER_DOMAIN, ClusterPlan};
use crate::state::LabDir;

/// Starts the emulator of `cluster` and writes its admin kubeconfig (all
/// names = the cluster's) to [`LabDir::admin_kubeconfig`].
pub async fn start(dir: &LabDir, cluster: &ClusterPlan) -> Result<Emulator> {
    let addr = SocketAddr::new(cluster.api_addr().into(), API_PORT);
    let cluster_dir = dir.cluster_dir(&cluster.name);
    let mut config = EmulatorConfig::new(addr, cluster_dir.join("pki"));
    config.advertise = addr;
    config.service_cidr = cluster.service_cidr();
    config.cluster_name = cluster.name.clone();
    config.cluster_domain = CLUSTER_DOMAIN.to_string();
    config.data_dir = Some(cluster_dir.join("data"));
    config.extra_sans = vec![
        cluster.kubernetes_service_ip().to_string(),
        cluster.api_addr().to_string(),
    ];
    for sub in ["pki", "data"] {
        let path = cluster_dir.join(sub);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    let emulator = Emulator::start(config).await.with_context(|| {
        format!(
            "starting the API emulator of cluster {} on {addr}",
            cluster.name
        )
    })?;
    let path = dir.admin_kubeconfig(&cluster.name);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, emulator.admin_kubeconfig(&cluster.name))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(emulator)
}
