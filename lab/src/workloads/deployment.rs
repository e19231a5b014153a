//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), the current one scaled to
//! `spec.replicas`, older ones scaled down as the new pods become
//! available (RollingUpdate: no pod is taken away before its replacement
//! is available) or first of all (Recreate), old sets beyond
//! `revisionHistoryLimit` deleted, and the Deployment's status.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use serde_json::json;

use super::common::{
    active_pods_of, controller_ref, controller_uid, is_ready, scaled, template_hash,
};
use super::writer::Writer;

/// Label carrying the template hash on ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation with a ReplicaSet's revision within its Deployment.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Brings one Deployment's ReplicaSets and status in line with its spec.
pub async fn reconcile(
    writer: &Writer,
    deployment: &Deployment,
    sets: &[ReplicaSet],
    pods: &[Pod],
) -> Result<()> {
    let (Some(uid), Some(name), Some(spec)) = (
        deployment.metadata.uid.as_deref(),
        deployment.metadata.name.as_deref(),
        deployment.spec.as_ref(),
    ) else {
        return Ok(());
    };
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(&spec.template);
    let owned: Vec<&ReplicaSet> = sets
        .iter()
        .filter(|rs| controller_uid(&rs.metadata) == Some(uid))
        .collect();
    let current = owned.iter().copied().find(|rs| {
        rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            == Some(&hash)
    });
    let old: Vec<&ReplicaSet> = owned
        .iter()
        .copied()
        .filter(|rs| current.is_none_or(|c| c.metadata.uid != rs.metadata.uid))
        .collect();
    let pods_of = |rs: &ReplicaSet| active_pods_of(pods, &rs.metadata);
    let old_pods: usize = old.iter().map(|rs| pods_of(rs).len()).sum();
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    // Recreate starts new pods only once every old one is gone.
    let new_target = if recreate && old_pods > 0 { 0 } else { desired };
    let max_revision = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    match current {
        None => {
            let rs = new_replica_set(deployment, &hash, new_target, max_revision + 1);
            writer.create(&namespace, &rs).await;
        }
        Some(rs) => {
            let mut patch = serde_json::Map::new();
            if replicas_of(rs) != new_target {
                patch.insert("spec".into(), json!({"replicas": new_target}));
            }
            if revision(rs) < max_revision {
                // A rollback makes an old template the newest revision again.
                patch.insert(
                    "metadata".into(),
                    json!({"annotations": {REVISION: (max_revision + 1).to_string()}}),
                );
            }
            if let Some(rs_name) = rs.metadata.name.as_deref().filter(|_| !patch.is_empty()) {
                writer
                    .patch::<ReplicaSet>(&namespace, rs_name, patch.into())
                    .await;
            }
        }
    }
    // Old sets keep only what the new pods do not replace yet.
    let new_available = current.map_or(0, |rs| pods_of(rs).iter().filter(|p| is_ready(p)).count());
    let mut budget = if recreate {
        0
    } else {
        (desired - i32::try_from(new_available).unwrap_or(i32::MAX)).max(0)
    };
    let mut by_revision = old.clone();
    by_revision.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    for rs in &by_revision {
        let keep = replicas_of(rs).min(budget);
        budget -= keep;
        if keep != replicas_of(rs)
            && let Some(rs_name) = rs.metadata.name.as_deref()
        {
            writer
                .patch::<ReplicaSet>(&namespace, rs_name, json!({"spec": {"replicas": keep}}))
                .await;
        }
    }
    // History beyond revisionHistoryLimit: empty old sets, oldest first.
    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(0);
    let mut empty: Vec<&ReplicaSet> = by_revision
        .iter()
        .copied()
        .filter(|rs| replicas_of(rs) == 0 && pods_of(rs).is_empty())
        .collect();
    empty.reverse();
    if empty.len() > limit {
        for rs in &empty[..empty.len() - limit] {
            if let Some(rs_name) = rs.metadata.name.as_deref() {
                writer.delete::<ReplicaSet>(&namespace, rs_name).await;
            }
        }
    }
    let status = status(deployment, current, &owned, pods, desired);
    if deployment.status.as_ref() != Some(&status) {
        writer
            .patch_status::<Deployment>(&namespace, name, &status)
            .await;
    }
    Ok(())
}

fn new_replica_set(
    deployment: &Deployment,
    hash: &str,
    replicas: i32,
    revision: i64,
) -> ReplicaSet {
    let spec = deployment.spec.clone().unwrap_or_default();
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut template_meta = template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.clone().unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    template_meta.labels = Some(labels.clone());
    template.metadata = Some(template_meta);
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    let annotations = BTreeMap::from([
        (REVISION.to_string(), revision.to_string()),
        (
            "deployment.kubernetes.io/desired-replicas".to_string(),
            spec.replicas.unwrap_or(1).to_string(),
        ),
    ]);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "Deployment",
                &deployment.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn status(
    deployment: &Deployment,
    current: Option<&ReplicaSet>,
    owned: &[&ReplicaSet],
    pods: &[Pod],
    desired: i32,
) -> DeploymentStatus {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let active_of = |rs: &ReplicaSet| active_pods_of(pods, &rs.metadata);
    let all: Vec<&Pod> = owned.iter().flat_map(|rs| active_of(rs)).collect();
    let replicas = count(all.len());
    let available = count(all.iter().filter(|p| is_ready(p)).count());
    let updated_pods = current.map(active_of).unwrap_or_default();
    let updated = count(updated_pods.len());
    let updated_available = count(updated_pods.iter().filter(|p| is_ready(p)).count());
    let spec = deployment.spec.as_ref();
    let max_unavailable = scaled(
        spec.and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref()),
        desired,
        desired / 4,
        false,
    );
    let recreate = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate");
    let min_available = if recreate {
        desired
    } else {
        desired - max_unavailable
    };
    let rs_name = current
        .and_then(|rs| rs.metadata.name.clone())
        .unwrap_or_default();
    let complete = updated == desired && replicas == desired && updated_available == desired;
    let previous = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let kept = previous.iter().find(|c| {
            c.type_ == type_ && c.status == status && c.reason.as_deref() == Some(reason)
        });
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: kept
                .and_then(|c| c.last_transition_time.clone())
                .or_else(|| Some(now.clone())),
            last_update_time: kept.and_then(|c| c.last_update_time.clone()).or(Some(now)),
        }
    };
    let available_condition = if available >= min_available {
        condition(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = if complete {
        condition(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else {
        condition(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    DeploymentStatus {
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(available),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        observed_generation: deployment.metadata.generation,
        conditions: Some(vec![available_condition, progressing]),
        collision_count: deployment.status.as_ref().and_then(|s| s.collision_count),
        terminating_replicas: None,
    }
}
