//! Cluster DNS: the real CoreDNS, deployed the way kubeadm deploys it (a
//! `kube-system/coredns` Deployment behind the `kube-dns` Service at the
//! plan's DNS ClusterIP, with its RBAC and Corefile), run by the lab's
//! kubelet like any other pod. It is authoritative for `cluster.local` and
//! forwards nothing: the lab has no upstream resolver.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::nodes::FIELD_MANAGER;
use crate::plan::{CLUSTER_DOMAIN, ClusterPlan};

/// Namespace, and name of the Deployment, ServiceAccount and ConfigMap.
const NAMESPACE: &str = "kube-system";
const NAME: &str = "coredns";

/// The Corefile: the `kubernetes` plugin answers for the cluster domain and
/// reverse zones; `ready` reports when its caches synced.
fn corefile() -> String {
    format!(
        ".:53 {{\n    errors\n    health :8080\n    ready :8181\n    \
         kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n        pods insecure\n        \
         fallthrough in-addr.arpa ip6.arpa\n        ttl 5\n    }}\n    loadbalance\n    reload\n}}\n"
    )
}

/// Creates or updates CoreDNS's objects in `cluster` (server-side apply).
pub async fn deploy(client: &kube::Client, cluster: &ClusterPlan) -> Result<()> {
    let labels = json!({"k8s-app": "kube-dns"});
    apply::<ServiceAccount>(
        Api::namespaced(client.clone(), NAMESPACE),
        NAME,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": NAME, "namespace": NAMESPACE}}),
    )
    .await?;
    apply::<ClusterRole>(
        Api::all(client.clone()),
        "system:coredns",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        }),
    )
    .await?;
    apply::<ClusterRoleBinding>(
        Api::all(client.clone()),
        "system:coredns",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        }),
    )
    .await?;
    apply::<ConfigMap>(
        Api::namespaced(client.clone(), NAMESPACE),
        NAME,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": NAME, "namespace": NAMESPACE},
               "data": {"Corefile": corefile()}}),
    )
    .await?;
    apply::<Deployment>(
        Api::namespaced(client.clone(), NAMESPACE),
        NAME,
        deployment(&labels),
    )
    .await?;
    apply::<Service>(
        Api::namespaced(client.clone(), NAMESPACE),
        "kube-dns",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": NAMESPACE,
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "selector": labels,
                "clusterIP": cluster.dns_service_ip().to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        }),
    )
    .await?;
    tracing::info!(cluster_ip = %cluster.dns_service_ip(), "deployed CoreDNS");
    Ok(())
}

fn deployment(labels: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "dnsPolicy": "Default",
                    "priorityClassName": "system-cluster-critical",
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "containers": [{
                        "name": NAME,
                        "image": "mc-lab/coredns",
                        "command": ["coredns", "-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                        ],
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": true}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                           "periodSeconds": 1},
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                },
            },
        },
    })
}

async fn apply<K>(api: Api<K>, name: &str, object: Value) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("applying {NAMESPACE}/{name} for CoreDNS"))?;
    Ok(())
}
