//! Every object `install` renders, as typed k8s-openapi values, in the order
//! they are applied: namespace and CRD first, workloads last.

pub mod identity;
pub mod meta;
pub mod rbac;
pub mod workloads;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::CustomResourceExt;
use mc_identity::ClusterIssuer;

use crate::cli::{GatewayServiceType, InstallArgs};
use crate::objects::{Object, object};
use meta::{CONFIG_MAP, cluster_meta, system_meta};

/// What shapes the rendered objects.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// This cluster's name.
    pub cluster_name: String,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Gateway Service type.
    pub gateway_service_type: GatewayServiceType,
    /// Gateway replicas.
    pub gateway_replicas: i32,
    /// Container image.
    pub image: String,
    /// Lifetime of the leaf certificates the controller signs.
    pub leaf_lifetime: std::time::Duration,
}

impl From<&InstallArgs> for InstallOptions {
    fn from(args: &InstallArgs) -> Self {
        InstallOptions {
            cluster_name: args.cluster_name.clone(),
            trust_domain: args.trust_domain.clone(),
            cluster_domain: args.cluster_domain.clone(),
            gateway_service_type: args.gateway_service_type,
            gateway_replicas: args.gateway_replicas,
            image: args.image.clone(),
            leaf_lifetime: args.identity_leaf_lifetime,
        }
    }
}

/// The `mc-system` namespace. The node agent needs host networking and
/// NET_ADMIN, so the namespace admits privileged pods.
pub fn namespace() -> Result<Object> {
    let mut metadata = cluster_meta(mc_api::NAMESPACE, None);
    if let Some(labels) = metadata.labels.as_mut() {
        labels.insert(
            "pod-security.kubernetes.io/enforce".to_string(),
            "privileged".to_string(),
        );
    }
    object(&Namespace {
        metadata,
        ..Namespace::default()
    })
}

/// The `links.mc.dev` CRD.
pub fn link_crd() -> Result<Object> {
    let mut crd = mc_api::Link::crd();
    crd.metadata
        .labels
        .get_or_insert_with(Default::default)
        .extend(meta::labels(None));
    object(&crd)
}

/// ConfigMap `mc-system/mc-config`.
pub fn config_map(opts: &InstallOptions) -> Result<Object> {
    object(&ConfigMap {
        metadata: system_meta(CONFIG_MAP, None),
        data: Some(
            [
                ("clusterName", &opts.cluster_name),
                ("trustDomain", &opts.trust_domain),
                ("clusterDomain", &opts.cluster_domain),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ),
        ..ConfigMap::default()
    })
}

/// The cluster name `deploy/mc.yaml` is rendered with.
pub const PLACEHOLDER_CLUSTER: &str = "CLUSTER";

/// Header of `deploy/mc.yaml`.
pub const DEPLOY_HEADER: &str = "# Rendered by `kubectl mc install --cluster-name CLUSTER --no-identity-secrets`.\n\
# Do not edit: regenerate with `MC_UPDATE_DEPLOY=1 cargo test -p kubectl-mc --test deploy`.\n\
# Replace CLUSTER with the cluster's name and provide the Secrets mc-trust-anchor and mc-identity-issuer (see deploy/README.md).\n";

/// The default options with the placeholder cluster name.
pub fn default_options(cluster_name: &str) -> InstallOptions {
    InstallOptions {
        cluster_name: cluster_name.to_string(),
        trust_domain: mc_api::DEFAULT_TRUST_DOMAIN.to_string(),
        cluster_domain: mc_api::DEFAULT_CLUSTER_DOMAIN.to_string(),
        gateway_service_type: GatewayServiceType::LoadBalancer,
        gateway_replicas: 1,
        image: crate::cli::default_image(),
        leaf_lifetime: crate::cli::DEFAULT_LEAF_LIFETIME,
    }
}

/// The content of `deploy/mc.yaml`.
pub fn deploy_yaml() -> Result<String> {
    let objects = render(&default_options(PLACEHOLDER_CLUSTER), None)?;
    Ok(format!(
        "{DEPLOY_HEADER}{}",
        crate::objects::to_yaml_stream(&objects)
    ))
}

/// Every install object; identity Secrets only when an issuer is given.
pub fn render(opts: &InstallOptions, issuer: Option<&ClusterIssuer>) -> Result<Vec<Object>> {
    let mut objects = vec![namespace()?, link_crd()?];
    objects.extend(rbac::components().context("rendering RBAC")?);
    objects.push(config_map(opts)?);
    if let Some(issuer) = issuer {
        objects.extend(identity::secrets(issuer).context("rendering identity Secrets")?);
    }
    objects.push(workloads::gateway_service(opts)?);
    objects.push(workloads::controller(opts)?);
    objects.push(workloads::gateway(opts)?);
    objects.push(workloads::node_agent(opts)?);
    Ok(objects)
}
