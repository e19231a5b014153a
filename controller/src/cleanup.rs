//! Removing what mc made for a remote cluster: its mirrors and the
//! namespaces mc created for them. Runs when a Link is deleted (before its
//! finalizer is removed) and for mirrors whose Link is gone altogether.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Resource, ResourceExt};
use mc_api::Link;
use mc_api::labels::MIRROR_OF_CLUSTER;
use serde_json::json;

use crate::context::Context;
use crate::mirror::{PART_OF, PART_OF_VALUE};

/// The finalizer that makes Link deletion remove the Link's mirrors first.
pub const FINALIZER: &str = "mc.dev/link-cleanup";

/// What [`remove_cluster`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Mirror Services deleted.
    pub mirrors: usize,
    /// Namespaces deleted.
    pub namespaces: usize,
}

fn owned_by(cluster: &str) -> String {
    format!("{MIRROR_OF_CLUSTER}={cluster},{PART_OF}={PART_OF_VALUE}")
}

fn uid_precondition(meta_uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta_uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Deletes every mirror of `cluster`, then every namespace mc created for
/// them that holds no Service any more (a namespace whose mc label a user
/// removed is theirs and stays).
pub async fn remove_cluster(ctx: &Context, cluster: &str) -> Result<Removed> {
    let mut removed = Removed::default();
    let services: Api<Service> = Api::all(ctx.client.clone());
    let selector = ListParams::default().labels(&owned_by(cluster));
    let mirrors = services
        .list(&selector)
        .await
        .with_context(|| format!("listing mirrors of cluster {cluster}"))?;
    for mirror in mirrors {
        let (Some(namespace), name) = (mirror.namespace(), mirror.name_any()) else {
            continue;
        };
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        match api
            .delete(&name, &uid_precondition(mirror.meta().uid.clone()))
            .await
        {
            Ok(_) => {
                tracing::info!(%cluster, %namespace, mirror = %name, "mirror deleted with its link");
                ctx.metrics.change(cluster, "delete");
                removed.mirrors += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => {
                return Err(error).with_context(|| format!("deleting mirror {namespace}/{name}"));
            }
        }
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let created = namespaces
        .list(&selector)
        .await
        .with_context(|| format!("listing namespaces created for cluster {cluster}"))?;
    for ns in created {
        let name = ns.name_any();
        if ns.meta().deletion_timestamp.is_some() {
            continue;
        }
        let inside: Api<Service> = Api::namespaced(ctx.client.clone(), &name);
        let left = inside
            .list(&ListParams::default().limit(1))
            .await
            .with_context(|| format!("listing Services in namespace {name}"))?;
        if !left.items.is_empty() {
            tracing::info!(%cluster, namespace = %name, "namespace mc created still holds Services, kept");
            continue;
        }
        match namespaces
            .delete(&name, &uid_precondition(ns.meta().uid.clone()))
            .await
        {
            Ok(_) => {
                tracing::info!(%cluster, namespace = %name, "namespace created for mirrors deleted");
                removed.namespaces += 1;
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(error) => return Err(error).with_context(|| format!("deleting namespace {name}")),
        }
    }
    Ok(removed)
}

/// Finishes the deletion of `link`: removes what mc made for its cluster,
/// then its finalizer (guarded by its resourceVersion).
pub async fn finish_link_deletion(ctx: &Context, link: &Link) -> Result<()> {
    let cluster = &link.spec.target_cluster_name;
    let removed = remove_cluster(ctx, cluster).await?;
    tracing::info!(link = %link.name_any(), %cluster, mirrors = removed.mirrors,
        namespaces = removed.namespaces, "link cleanup done, removing finalizer");
    set_finalizer(ctx, link, false).await
}

/// Adds (`present`) or removes the controller's finalizer on `link`.
pub async fn set_finalizer(ctx: &Context, link: &Link, present: bool) -> Result<()> {
    let mut finalizers: Vec<String> = link
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": link.resource_version(),
        }
    });
    let api: Api<Link> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    match api
        .patch(
            &link.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => Err(error).with_context(|| {
            format!(
                "{} finalizer {FINALIZER} on Link {}",
                if present { "adding" } else { "removing" },
                link.name_any()
            )
        }),
    }
}

/// Removes mirrors (and created namespaces) of clusters no Link names any
/// more: left by a Link deleted while no controller ran, or by a Link whose
/// target cluster changed.
pub async fn sweep_orphans(ctx: &Context, linked: &BTreeSet<String>) -> Result<()> {
    let services: Api<Service> = Api::all(ctx.client.clone());
    let mirrors = services
        .list(
            &ListParams::default()
                .labels(&format!("{MIRROR_OF_CLUSTER},{PART_OF}={PART_OF_VALUE}")),
        )
        .await
        .context("listing mirrors")?;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let created = namespaces
        .list(
            &ListParams::default()
                .labels(&format!("{MIRROR_OF_CLUSTER},{PART_OF}={PART_OF_VALUE}")),
        )
        .await
        .context("listing namespaces mc created")?;
    let orphaned: BTreeSet<String> = mirrors
        .iter()
        .map(|s| s.labels())
        .chain(created.iter().map(|n| n.labels()))
        .filter_map(|labels| labels.get(MIRROR_OF_CLUSTER).cloned())
        .filter(|cluster| !linked.contains(cluster))
        .collect();
    for cluster in orphaned {
        tracing::info!(%cluster, "no Link names this cluster any more, removing its mirrors");
        remove_cluster(ctx, &cluster).await?;
    }
    Ok(())
}
