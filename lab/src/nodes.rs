//! The nodes as the kubelet presents them to the API: the Node objects
//! (addresses, capacity, the Ready condition) and their Leases.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::plan::NodePlan;

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
pub async fn register_nodes(
    client: &kube::Client,
    nodes: &[NodePlan],
    kubernetes_version: &str,
) -> Result<()> {
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
                "kubeletVersion": kubernetes_version, "kubeProxyVersion": kubernetes_version,
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

/// How often each Node's Lease is renewed (what the kubelet does).
const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(10);
/// The Lease duration the nodes announce.
const LEASE_SECONDS: i32 = 40;

/// Renews the `kube-node-lease` Lease of every node in `nodes` every
/// [`LEASE_RENEW`], so the node lifecycle controller keeps them Ready;
/// runs until the task is dropped.
pub async fn renew_leases(client: kube::Client, nodes: Vec<NodePlan>) -> Result<()> {
    let leases = Api::<Lease>::namespaced(client, "kube-node-lease");
    let mut failing = false;
    loop {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut failed = 0;
        for node in &nodes {
            let name = node.name();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                         "renewTime": now},
            });
            if let Err(error) = leases
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&lease),
                )
                .await
            {
                failed += 1;
                tracing::warn!(node = %name, %error, "cannot renew the node's Lease");
            }
        }
        if failed == 0 && failing {
            tracing::info!("node Leases renewed again");
        }
        failing = failed > 0;
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

/// Creates `object` unless an object of that name exists (a daemon restart
/// finds its earlier objects in etcd).
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
