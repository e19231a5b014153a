//! The scheduler: binds every pending Pod without a node (and meant for
//! the default scheduler) to a Ready node its nodeSelector admits, where
//! none of its host ports is taken, preferring the node with the fewest
//! pods. A Pod that fits nowhere gets `PodScheduled=False/Unschedulable`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodStatus};

use super::common::{is_active, node_of, node_selector_matches};
use super::writer::Writer;

const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Host ports a pod occupies on its node: `hostPort`s, and with
/// `hostNetwork` every container port.
fn host_ports(pod: &Pod) -> BTreeSet<(String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return BTreeSet::new();
    };
    let host_network = spec.host_network == Some(true);
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.or(host_network.then_some(p.container_port))?;
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
        })
        .collect()
}

fn node_ready(node: &Node) -> bool {
    crate::nodes::is_ready(node) && node.spec.as_ref().and_then(|s| s.unschedulable) != Some(true)
}

/// Whether the scheduler should place `pod`.
fn wants_scheduling(pod: &Pod) -> bool {
    let scheduler = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER);
    node_of(pod).is_none() && is_active(pod) && scheduler == DEFAULT_SCHEDULER
}

/// Places every unscheduled pod of `pods` on one of `nodes`.
pub async fn schedule(writer: &Writer, nodes: &[Node], pods: &[Pod]) {
    let mut load: BTreeMap<&str, usize> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .map(|n| (n, 0))
        .collect();
    let mut ports: BTreeMap<&str, BTreeSet<(String, i32)>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| !super::common::is_finished(p)) {
        if let Some(node) = node_of(pod) {
            *load.entry(node).or_default() += 1;
            ports.entry(node).or_default().extend(host_ports(pod));
        }
    }
    let mut pending: Vec<&Pod> = pods.iter().filter(|p| wants_scheduling(p)).collect();
    pending.sort_by_key(|p| super::common::created(&p.metadata));
    for pod in pending {
        let wanted = host_ports(pod);
        let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        let mut best: Option<(&str, usize)> = None;
        for node in nodes {
            let Some(name) = node.metadata.name.as_deref() else {
                continue;
            };
            let reason = if !node_ready(node) {
                Some("node(s) were not ready or unschedulable")
            } else if !node_selector_matches(selector, node.metadata.labels.as_ref()) {
                Some("node(s) didn't match Pod's node affinity/selector")
            } else if ports
                .get(name)
                .is_some_and(|used| !used.is_disjoint(&wanted))
            {
                Some("node(s) didn't have free ports for the requested pod ports")
            } else {
                None
            };
            if let Some(reason) = reason {
                *reasons.entry(reason).or_default() += 1;
                continue;
            }
            let pods_here = load.get(name).copied().unwrap_or(0);
            if best.is_none_or(|(_, fewest)| pods_here < fewest) {
                best = Some((name, pods_here));
            }
        }
        match best {
            Some((node, _)) => {
                if writer.bind(pod, node).await {
                    *load.entry(node).or_default() += 1;
                    ports.entry(node).or_default().extend(wanted);
                }
            }
            None => {
                let detail: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                let message = format!(
                    "0/{} nodes are available: {}.",
                    nodes.len(),
                    detail.join(", ")
                );
                mark_unschedulable(writer, pod, message).await;
            }
        }
    }
}

async fn mark_unschedulable(writer: &Writer, pod: &Pod, message: String) {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&message)) {
        return;
    }
    let condition = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message),
        last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        ..Default::default()
    };
    let status = PodStatus {
        phase: Some("Pending".into()),
        conditions: Some(vec![condition]),
        ..Default::default()
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    tracing::info!(%namespace, pod = %name, "unschedulable");
    writer.patch_status::<Pod>(&namespace, &name, &status).await;
}
