//! The cluster's workload controllers, in the daemon like
//! kube-controller-manager and kube-scheduler: Deployments through
//! ReplicaSets to Pods, DaemonSets to one Pod per node, and the scheduler
//! binding unscheduled Pods. Watches only wake them up; every pass reads
//! the whole state fresh from the API (a consistent list), so a pass never
//! acts on a stale cache and needs no bookkeeping of its own writes.

mod common;
mod daemonset;
mod deployment;
mod replicaset;
mod scheduler;
mod writer;

use std::time::Duration;

use anyhow::{Context, Result};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use self::writer::Writer;

/// A full pass at least this often, even without a watch event.
const RESYNC: Duration = Duration::from_secs(10);
/// Events arriving within this time are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// What one pass works from.
struct Cluster {
    deployments: Vec<Deployment>,
    replica_sets: Vec<ReplicaSet>,
    daemon_sets: Vec<DaemonSet>,
    pods: Vec<Pod>,
    nodes: Vec<Node>,
}

async fn list<K>(client: &Client) -> Result<Vec<K>>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned,
    <K as Resource>::DynamicType: Default,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {}", K::plural(&Default::default())))?;
    Ok(list.items)
}

impl Cluster {
    async fn read(client: &Client) -> Result<Self> {
        Ok(Cluster {
            deployments: list(client).await?,
            replica_sets: list(client).await?,
            daemon_sets: list(client).await?,
            pods: list(client).await?,
            nodes: list(client).await?,
        })
    }
}

fn wake_on<K>(client: &Client) -> futures::stream::BoxStream<'static, ()>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
    <K as Resource>::DynamicType: Default,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|_| ())
        .boxed()
}

/// Runs the controllers until the watches end.
pub async fn run(client: Client) -> Result<()> {
    let writer = Writer::new(client.clone());
    let mut wake = futures::stream::select_all([
        wake_on::<Deployment>(&client),
        wake_on::<ReplicaSet>(&client),
        wake_on::<DaemonSet>(&client),
        wake_on::<Pod>(&client),
        wake_on::<Node>(&client),
    ]);
    loop {
        tokio::select! {
            woke = wake.next() => if woke.is_none() { anyhow::bail!("the workload watches ended") },
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
        while let Some(Some(())) = wake.next().now_or_never() {}
        if let Err(error) = pass(&client, &writer).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "workload pass failed; retrying"
            );
        }
    }
}

/// One pass of every controller over a fresh read of the cluster. Each
/// controller acts on the read; objects the pass writes are seen by the
/// next pass, which the writes' watch events trigger.
async fn pass(client: &Client, writer: &Writer) -> Result<()> {
    let cluster = Cluster::read(client).await?;
    for d in &cluster.deployments {
        deployment::reconcile(writer, d, &cluster.replica_sets, &cluster.pods).await?;
    }
    for rs in &cluster.replica_sets {
        replicaset::reconcile(writer, rs, &cluster.pods).await?;
    }
    for ds in &cluster.daemon_sets {
        daemonset::reconcile(writer, ds, &cluster.nodes, &cluster.pods).await?;
    }
    scheduler::schedule(writer, &cluster.nodes, &cluster.pods).await;
    Ok(())
}
