//! The `Link` custom resource: how this cluster reaches one remote cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A link from this cluster to one remote cluster: where its API and gateways
/// are, who its gateways are, and which of its Services to mirror. One per
/// remote cluster, in `mc-system`, named after the remote cluster.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "mc.dev",
    version = "v1alpha1",
    kind = "Link",
    namespaced,
    status = "LinkStatus",
    shortname = "lk",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.targetClusterName"}"#,
    printcolumn = r#"{"name":"Gateways","type":"string","jsonPath":".spec.gatewayAddresses"}"#,
    printcolumn = r#"{"name":"Alive","type":"boolean","jsonPath":".status.gateway.alive"}"#,
    printcolumn = r#"{"name":"Mirrors","type":"integer","jsonPath":".status.mirroredServices"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// Name of the remote cluster; mirrors are named `<service>-<targetClusterName>`.
    pub target_cluster_name: String,
    /// DNS domain of the remote cluster.
    #[serde(default = "default_cluster_domain")]
    pub target_cluster_domain: String,
    /// Secret, in the Link's namespace, whose `kubeconfig` key reaches the
    /// remote API as a read-only ServiceAccount.
    pub credentials_secret: String,
    /// Gateway addresses of the remote cluster: IPs or DNS names (names are
    /// resolved again periodically).
    pub gateway_addresses: Vec<String>,
    /// Tunnel port of the remote gateways (4143, or a NodePort).
    #[serde(default = "default_gateway_port")]
    pub gateway_port: u16,
    /// SPIFFE ID every remote gateway must present.
    pub gateway_identity: String,
    /// How the remote gateways are probed.
    #[serde(default)]
    pub probe: ProbeSpec,
    /// Which remote Services to mirror; `mc.dev/exported=true` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Create a missing local namespace for a mirror (and remove it with the
    /// Link when mc created it). Off by default: the mirror is reported as
    /// `MissingNamespace` instead.
    #[serde(default)]
    pub create_namespaces: bool,
}

/// Gateway probe settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// HTTP path on the gateway's admin port.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// The gateway's admin port (4191, or a NodePort).
    #[serde(default = "default_probe_port")]
    pub port: u16,
    /// Seconds between probes.
    #[serde(default = "default_probe_period")]
    pub period_seconds: u32,
    /// Seconds before one probe counts as failed.
    #[serde(default = "default_probe_timeout")]
    pub timeout_seconds: u32,
    /// Consecutive failures before the gateway is marked dead.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            path: default_probe_path(),
            port: default_probe_port(),
            period_seconds: default_probe_period(),
            timeout_seconds: default_probe_timeout(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

/// What the controller observed about a Link.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// `CredentialsValid`, `RemoteAPIReachable`, `GatewayAlive`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last gateway probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayStatus>,
    /// Number of remote Services mirrored right now.
    #[serde(default)]
    pub mirrored_services: u32,
    /// One entry per remote Service the selector matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorStatus>,
    /// Namespaces the controller created for this Link (removed with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_namespaces: Vec<String>,
    /// The Link generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Gateway liveness as the probes see it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub alive: bool,
    /// Latency of the last successful probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The address the last probe went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// RFC 3339 time of the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
}

/// The state of one remote Service's mirror.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    /// Namespace of the remote Service (and of its mirror).
    pub namespace: String,
    /// Name of the remote Service.
    pub service: String,
    /// Name of the local mirror (shortened when `<service>-<cluster>` is too long).
    pub mirror: String,
    /// `Mirrored`, `Conflict` (a Service mc does not own has the name),
    /// `MissingNamespace` or `Error`.
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn default_cluster_domain() -> String {
    crate::DEFAULT_CLUSTER_DOMAIN.to_string()
}

fn default_gateway_port() -> u16 {
    crate::GATEWAY_TUNNEL_PORT
}

fn default_probe_path() -> String {
    "/ready".to_string()
}

fn default_probe_port() -> u16 {
    crate::ADMIN_PORT
}

fn default_probe_period() -> u32 {
    3
}

fn default_probe_timeout() -> u32 {
    2
}

fn default_failure_threshold() -> u32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_minimal_link_gets_every_default() {
        let spec: LinkSpec = serde_json::from_value(serde_json::json!({
            "targetClusterName": "east",
            "credentialsSecret": "mc-link-east",
            "gatewayAddresses": ["198.18.0.160"],
            "gatewayIdentity": "spiffe://mc.local/ns/mc-system/sa/mc-gateway"
        }))
        .expect("minimal spec parses");
        assert_eq!(spec.gateway_port, 4143);
        assert_eq!(spec.target_cluster_domain, "cluster.local");
        assert_eq!(spec.probe, ProbeSpec::default());
        assert_eq!(spec.probe.port, 4191);
        assert!(!spec.create_namespaces);
    }

    #[test]
    fn the_crd_is_namespaced_with_a_status_subresource() {
        let crd = serde_json::to_value(Link::crd()).expect("CRD serializes");
        assert_eq!(crd["metadata"]["name"], "links.mc.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
        let required = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["required"];
        for field in [
            "targetClusterName",
            "credentialsSecret",
            "gatewayAddresses",
            "gatewayIdentity",
        ] {
            assert!(
                required.as_array().unwrap().iter().any(|f| f == field),
                "{field} required"
            );
        }
    }
}
