//! [`PodView`]: the part of a Pod the agent reads, and nothing else.
//!
//! The agent watches the Pods of its node only to name the source of a
//! connection (namespace and ServiceAccount by pod IP). Deserializing the
//! full `k8s_openapi` Pod would cache every container, volume and probe of
//! every pod on the node and link their decoders, clones and destructors
//! into the agent (bench/README.md, "Memory"); unknown fields are skipped
//! instead.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A Pod as the agent sees it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodView {
    /// The Pod's metadata (namespace, deletion timestamp).
    pub metadata: ObjectMeta,
    /// What the agent reads of the spec.
    #[serde(default)]
    pub spec: PodViewSpec,
    /// What the agent reads of the status.
    #[serde(default)]
    pub status: PodViewStatus,
}

/// `spec.hostNetwork` and `spec.serviceAccountName`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodViewSpec {
    /// The pod shares the node's network (its address is the node's).
    #[serde(default)]
    pub host_network: bool,
    /// The ServiceAccount the pod runs as (`default` when unset).
    pub service_account_name: Option<String>,
}

/// `status.podIPs` and `status.phase`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodViewStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: Option<String>,
    /// The pod's addresses, one per IP family.
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodViewIp>,
}

/// One entry of `status.podIPs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodViewIp {
    /// The address.
    pub ip: String,
}

impl PodView {
    /// Whether the pod has finished for good (`Succeeded` or `Failed`): its
    /// sandbox is gone and its address may already be another pod's.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.phase.as_deref(),
            Some("Succeeded") | Some("Failed")
        )
    }
}

impl kube::Resource for PodView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn reads_a_full_pod_and_keeps_only_what_it_needs() {
        let pod: PodView = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {
                "serviceAccountName": "frontend", "nodeName": "node-1",
                "containers": [{"name": "web", "image": "nginx",
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}],
                "volumes": [{"name": "token", "projected": {"sources": []}}]
            },
            "status": {"phase": "Running", "podIP": "10.10.1.5",
                "podIPs": [{"ip": "10.10.1.5"}, {"ip": "fd00::5"}],
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("shop"));
        assert!(!pod.spec.host_network);
        assert_eq!(pod.spec.service_account_name.as_deref(), Some("frontend"));
        let ips: Vec<&str> = pod.status.pod_ips.iter().map(|p| p.ip.as_str()).collect();
        assert_eq!(ips, ["10.10.1.5", "fd00::5"]);
        assert_eq!(
            PodView::url_path(&(), Some("shop")),
            "/api/v1/namespaces/shop/pods"
        );
    }

    #[test]
    fn a_pending_pod_without_status_or_spec_fields_still_reads() {
        let pod: PodView =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}})).unwrap();
        assert!(pod.status.pod_ips.is_empty());
        assert!(pod.spec.service_account_name.is_none());
    }
}
