//! The ReplicaSet controller: keeps `spec.replicas` active pods of the
//! set's template (creating with `<rs>-<5 chars>` names, deleting the
//! least useful first) and reports them in the set's status.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::common::{
    active_pods_of, controller_ref, controller_uid, created, is_active, is_ready, node_of, phase,
    pod_from_template, selects,
};
use super::writer::Writer;

/// Brings one ReplicaSet's pods and status in line with its spec.
pub async fn reconcile(writer: &Writer, rs: &ReplicaSet, pods: &[Pod]) -> Result<()> {
    let (Some(_), Some(name), Some(spec)) = (
        rs.metadata.uid.as_deref(),
        rs.metadata.name.as_deref(),
        rs.spec.as_ref(),
    ) else {
        return Ok(());
    };
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = rs.metadata.namespace.clone().unwrap_or_default();
    let mut active: Vec<&Pod> = active_pods_of(pods, &rs.metadata);
    // Orphans the selector matches are adopted, as the real controller does.
    let orphans = pods.iter().filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && controller_uid(&p.metadata).is_none()
            && is_active(p)
            && selects(&spec.selector, p.metadata.labels.as_ref())
    });
    for orphan in orphans {
        let mut owners = orphan.metadata.owner_references.clone().unwrap_or_default();
        owners.push(controller_ref("apps/v1", "ReplicaSet", &rs.metadata));
        let patch = json!({"metadata": {"ownerReferences": owners, "uid": orphan.metadata.uid}});
        if let Some(pod_name) = orphan.metadata.name.as_deref() {
            tracing::info!(%namespace, pod = %pod_name, replica_set = %name, "adopting pod");
            writer.patch::<Pod>(&namespace, pod_name, patch).await;
            active.push(orphan);
        }
    }
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let owner = controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
        for _ in active.len()..want {
            let pod = pod_from_template(
                &template,
                &format!("{name}-"),
                &namespace,
                &BTreeMap::new(),
                owner.clone(),
                None,
            );
            writer.create_pod(&namespace, &pod, name).await;
        }
    } else if active.len() > want {
        // The least useful go first: unscheduled, then not running, then
        // not ready, then the newest.
        active.sort_by_key(|p| {
            (
                node_of(p).is_some(),
                phase(p) == "Running",
                is_ready(p),
                std::cmp::Reverse(created(&p.metadata)),
            )
        });
        for pod in &active[..active.len() - want] {
            writer.delete_pod(pod, name).await;
        }
    }
    let owned: Vec<&Pod> = active_pods_of(pods, &rs.metadata);
    let ready = i32::try_from(owned.iter().filter(|p| is_ready(p)).count()).unwrap_or(i32::MAX);
    let replicas = i32::try_from(owned.len()).unwrap_or(i32::MAX);
    let status = ReplicaSetStatus {
        replicas,
        fully_labeled_replicas: Some(replicas),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        writer
            .patch_status::<ReplicaSet>(&namespace, name, &status)
            .await;
    }
    Ok(())
}
