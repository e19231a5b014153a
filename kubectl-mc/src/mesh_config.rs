//! Reading what install wrote into a cluster: `mc-system/mc-config`.

use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::kube_ctx::KubeContext;
use crate::manifests::meta::CONFIG_MAP;

/// The data of `mc-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// The cluster's name.
    pub cluster_name: String,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Cluster DNS domain.
    pub cluster_domain: String,
}

impl MeshConfig {
    /// Parses the ConfigMap's data; missing optional keys get their defaults.
    pub fn from_config_map(cm: &ConfigMap) -> Option<MeshConfig> {
        let data = cm.data.as_ref()?;
        Some(MeshConfig {
            cluster_name: data.get("clusterName")?.clone(),
            trust_domain: data
                .get("trustDomain")
                .cloned()
                .unwrap_or_else(|| mc_api::DEFAULT_TRUST_DOMAIN.to_string()),
            cluster_domain: data
                .get("clusterDomain")
                .cloned()
                .unwrap_or_else(|| mc_api::DEFAULT_CLUSTER_DOMAIN.to_string()),
        })
    }
}

/// Reads `mc-config`, failing with an install hint when mc is not installed.
pub async fn read(ctx: &KubeContext) -> Result<MeshConfig> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let cm = api
        .get_opt(CONFIG_MAP)
        .await
        .map_err(|e| ctx.error(format!("reading ConfigMap {}/{CONFIG_MAP}", mc_api::NAMESPACE), &e))?
        .ok_or_else(|| {
            anyhow!(
                "mc is not installed in context {:?} (no ConfigMap {}/{CONFIG_MAP}): run `kubectl mc --context {} install --cluster-name NAME --apply` first",
                ctx.name,
                mc_api::NAMESPACE,
                ctx.name
            )
        })?;
    MeshConfig::from_config_map(&cm).ok_or_else(|| {
        anyhow!(
            "ConfigMap {}/{CONFIG_MAP} in context {:?} has no clusterName: re-run install",
            mc_api::NAMESPACE,
            ctx.name
        )
    })
}
