//! The lab's kube-proxy, in the style of kube-proxy's nftables mode: one
//! table, `ip lab-kube-proxy`, in every node's netns, replaced atomically
//! whenever Services or EndpointSlices change (debounced and batched).
//!
//! It DNATs ClusterIP, NodePort and LoadBalancer/external-IP traffic to a
//! random ready endpoint, rejects new connections to Services without
//! endpoints, and masquerades traffic that arrived for a NodePort or
//! LoadBalancer address. It touches nothing outside its table.

mod model;
pub(crate) mod netns;
mod render;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::endpointslices::watch;
use crate::plan::{ClusterPlan, NodePlan};
use render::ProxyConfig;

/// Quiet time after a change before the rules are rendered and applied.
const DEBOUNCE: Duration = Duration::from_millis(80);
/// First and longest wait before retrying nodes whose update failed.
const RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(15));

/// Runs kube-proxy for `cluster` on `nodes` until the task is dropped.
pub async fn run(client: Client, cluster: ClusterPlan, nodes: Vec<NodePlan>) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let services = watch::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
        "Service",
    );
    let slices = watch::reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
        "EndpointSlice",
    );
    services.wait_until_ready().await.context("Service cache")?;
    slices
        .wait_until_ready()
        .await
        .context("EndpointSlice cache")?;
    let config = ProxyConfig {
        cluster_cidr: cluster.pod_cidr(),
        service_cidr: cluster.service_cidr(),
    };
    tracing::info!(cluster = %cluster.name, nodes = nodes.len(), "kube-proxy started");

    // What each node's table holds now, as far as we know.
    let mut applied: BTreeMap<String, String> = BTreeMap::new();
    let mut retry = RETRY.0;
    let mut failing = false;
    changed.notify_one();
    loop {
        if failing {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(retry) => {}
            }
        } else {
            changed.notified().await;
        }
        tokio::time::sleep(DEBOUNCE).await;

        let services_now = services.state();
        let slices_now = slices.state();
        let rules = model::service_ports(
            services_now.iter().map(|s| s.as_ref()),
            slices_now.iter().map(|s| s.as_ref()),
        );
        let ruleset = render::ruleset(&config, &rules);
        failing = false;
        for node in &nodes {
            let netns = node.netns();
            if applied.get(&netns) == Some(&ruleset) {
                continue;
            }
            match netns::exec(&netns, "nft", &["-f", "-"], Some(&ruleset)).await {
                Ok(_) => {
                    tracing::info!(node = %node.name(), service_ports = rules.len(), "nftables rules applied");
                    applied.insert(netns, ruleset.clone());
                }
                Err(error) => {
                    tracing::warn!(node = %node.name(), error = format!("{error:#}"), retry_in = ?retry, "applying nftables rules failed");
                    applied.remove(&netns);
                    failing = true;
                }
            }
        }
        retry = if failing {
            (retry * 2).min(RETRY.1)
        } else {
            RETRY.0
        };
    }
}
