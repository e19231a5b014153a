//! The `Link` custom resource: how this cluster reaches one remote cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A link from this cluster to one remote cluster: where its API and gateways
/// are, who its gateways are, and which of its Services to mirror.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "mc.dev",
    version = "v1alpha1",
    kind = "Link",
    namespaced,
    status = "LinkStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.targetClusterName"}"#,
    printcolumn = r#"{"name":"Gateways","type":"string","jsonPath":".spec.gatewayAddresses"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// Name of the remote cluster; mirrors are named `<service>-<targetClusterName>`.
    pub target_cluster_name: String,
    /// DNS domain of the remote cluster.
    #[serde(default = "default_cluster_domain")]
    pub target_cluster_domain: String,
    /// Gateway addresses of the remote cluster: IPs or DNS names.
    pub gateway_addresses: Vec<String>,
    /// Tunnel port of the remote gateways.
    #[serde(default = "default_gateway_port")]
    pub gateway_port: u16,
    /// SPIFFE ID the remote gateways must present.
    pub gateway_identity: String,
}

/// What the controller observed about a Link.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {}

fn default_cluster_domain() -> String {
    crate::DEFAULT_CLUSTER_DOMAIN.to_string()
}

fn default_gateway_port() -> u16 {
    crate::GATEWAY_TUNNEL_PORT
}
