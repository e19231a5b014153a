//! What the cluster daemon registers in its API at start: the Nodes and
//! the `kube-system/kube-dns` Service with endpoints at the DNS server.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::plan::{ClusterPlan, NodePlan};

/// Field manager of every write the lab's daemon makes.
pub const FIELD_MANAGER: &str = "mc-lab";

/// Whether a Node's `Ready` condition is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates (or updates) the Node objects of `nodes` and marks them Ready.
pub async fn register_nodes(client: &kube::Client, nodes: &[NodePlan]) -> Result<()> {
    let api = Api::<Node>::all(client.clone());
    for node in nodes {
        let name = node.name();
        let object: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH,
                    "topology.kubernetes.io/zone": node.cluster.name,
                },
            },
            "spec": {"podCIDR": node.pod_cidr().to_string(), "podCIDRs": [node.pod_cidr().to_string()]},
        }))
        .context("building a Node")?;
        create_or_keep(&api, &name, &object).await?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = json!({"status": {
            "addresses": [
                {"type": "InternalIP", "address": node.wan_addr().to_string()},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "mc-lab kubelet is posting ready status",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                "osImage": "mc-lab", "containerRuntimeVersion": "mc-lab://netns",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
            },
        }});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&status),
        )
        .await
        .with_context(|| format!("marking Node {name} Ready"))?;
        tracing::info!(node = %name, ip = %node.wan_addr(), pod_cidr = %node.pod_cidr(), "registered Node");
    }
    Ok(())
}

/// Creates `kube-system/kube-dns` (ClusterIP from the plan, ports 53/UDP
/// and 53/TCP, no selector) with Endpoints and an EndpointSlice pointing at
/// the cluster's DNS server.
pub async fn register_dns_service(client: &kube::Client, cluster: &ClusterPlan) -> Result<()> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "kube-system"}}))?;
    create_or_keep(&namespaces, "kube-system", &ns).await?;
    let dns_ip = cluster.api_addr().to_string();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster.dns_service_ip().to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    }))?;
    create_or_keep(
        &Api::<Service>::namespaced(client.clone(), "kube-system"),
        "kube-dns",
        &service,
    )
    .await?;
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "subsets": [{
            "addresses": [{"ip": dns_ip}],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        }],
    }))?;
    create_or_keep(
        &Api::<Endpoints>::namespaced(client.clone(), "kube-system"),
        "kube-dns",
        &endpoints,
    )
    .await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "kube-dns-lab", "namespace": "kube-system", "labels": {
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": "mc-lab",
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [dns_ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
    }))?;
    create_or_keep(
        &Api::<EndpointSlice>::namespaced(client.clone(), "kube-system"),
        "kube-dns-lab",
        &slice,
    )
    .await?;
    tracing::info!(cluster_ip = %cluster.dns_service_ip(), server = %dns_ip, "registered kube-dns");
    Ok(())
}

/// Creates `object` unless an object of that name exists (a daemon restart
/// finds its earlier objects in the emulator's storage).
async fn create_or_keep<K>(api: &Api<K>, name: &str, object: &K) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            object,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating {name}")),
    }
}

/// Labels as a map from `k=v,k2=v2`.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("label {pair:?} is not k=v"))?;
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}
