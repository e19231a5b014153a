//! The DaemonSet controller: one pod of the set's template on every node
//! its nodeSelector admits, bound directly (`spec.nodeName`), named
//! `<ds>-<5 chars>` and labelled `controller-revision-hash`. A template
//! change replaces pods node by node, at most `maxUnavailable` nodes
//! without a ready pod at a time (RollingUpdate), or only when a pod is
//! deleted (OnDelete). A new pod is started on a node only once the
//! previous one is gone, so host-network ports never clash.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::common::{
    controller_ref, created, is_active, is_finished, is_ready, is_terminating, node_of, owned_by,
    pod_from_template, scaled, template_hash,
};
use super::writer::Writer;

/// Label carrying the template hash on a DaemonSet's pods.
pub const REVISION_HASH: &str = "controller-revision-hash";

fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let selector = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.node_selector.as_ref());
    super::common::node_selector_matches(selector, node.metadata.labels.as_ref())
}

/// Brings one DaemonSet's pods and status in line with its spec and the nodes.
pub async fn reconcile(
    writer: &Writer,
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
) -> Result<()> {
    let (Some(uid), Some(name), Some(spec)) = (
        ds.metadata.uid.as_deref(),
        ds.metadata.name.as_deref(),
        ds.spec.as_ref(),
    ) else {
        return Ok(());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let hash = template_hash(&spec.template);
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("OnDelete");
    let owned: Vec<&Pod> = owned_by(pods, uid);
    let targets: Vec<&str> = nodes
        .iter()
        .filter(|n| eligible(ds, n))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in &owned {
        if let Some(node) = node_of(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    let updated = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH))
            == Some(&hash)
    };
    // Pods on nodes that should not run one, and finished ones, go.
    for pod in &owned {
        let misplaced = node_of(pod).is_none_or(|n| !targets.contains(&n));
        if !is_terminating(pod) && (misplaced || is_finished(pod)) {
            writer.delete_pod(pod, name).await;
        }
    }
    let max_unavailable = scaled(
        spec.update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref()),
        i32::try_from(targets.len()).unwrap_or(i32::MAX),
        1,
        true,
    )
    .max(1);
    let unavailable = targets
        .iter()
        .filter(|n| {
            !by_node
                .get(*n)
                .is_some_and(|ps| ps.iter().any(|p| is_active(p) && is_ready(p)))
        })
        .count();
    let mut budget = usize::try_from(max_unavailable)
        .unwrap_or(1)
        .saturating_sub(unavailable);
    let owner = controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let extra = BTreeMap::from([(REVISION_HASH.to_string(), hash.clone())]);
    for node in &targets {
        let here = by_node.get(node).cloned().unwrap_or_default();
        let mut active: Vec<&Pod> = here.iter().copied().filter(|p| is_active(p)).collect();
        if active.is_empty() {
            if !here.iter().any(|p| is_terminating(p)) {
                let pod = pod_from_template(
                    &spec.template,
                    &format!("{name}-"),
                    &namespace,
                    &extra,
                    owner.clone(),
                    Some(node),
                );
                writer.create_pod(&namespace, &pod, name).await;
            }
            continue;
        }
        // One pod per node: keep the updated, then the oldest.
        active.sort_by_key(|p| (!updated(p), created(&p.metadata)));
        for pod in &active[1..] {
            writer.delete_pod(pod, name).await;
        }
        let kept = active[0];
        if !on_delete && !updated(kept) {
            if !is_ready(kept) {
                writer.delete_pod(kept, name).await;
            } else if budget > 0 {
                budget -= 1;
                writer.delete_pod(kept, name).await;
            }
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let running_on = |node: &str| -> Option<&Pod> {
        by_node
            .get(node)
            .and_then(|ps| ps.iter().copied().find(|p| is_active(p)))
    };
    let scheduled = targets.iter().filter(|n| running_on(n).is_some()).count();
    let ready = targets
        .iter()
        .filter(|n| running_on(n).is_some_and(is_ready))
        .count();
    let updated_count = targets
        .iter()
        .filter(|n| running_on(n).is_some_and(updated))
        .count();
    let misscheduled = by_node
        .iter()
        .filter(|(n, ps)| !targets.contains(n) && ps.iter().any(|p| is_active(p)))
        .count();
    let status = DaemonSetStatus {
        current_number_scheduled: count(scheduled),
        desired_number_scheduled: count(targets.len()),
        number_misscheduled: count(misscheduled),
        number_ready: count(ready),
        number_available: Some(count(ready)),
        number_unavailable: Some(count(targets.len().saturating_sub(ready))),
        updated_number_scheduled: Some(count(updated_count)),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if ds.status.as_ref() != Some(&status) {
        writer
            .patch_status::<DaemonSet>(&namespace, name, &status)
            .await;
    }
    Ok(())
}
