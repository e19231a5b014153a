//! The lab's LoadBalancer controller (what a cloud provider does): gives
//! every `type: LoadBalancer` Service of the cluster an address from the
//! cluster's share of the lab's pool, writes it to
//! `status.loadBalancer.ingress`, and puts it as a /32 on node 0's `eth0` so
//! hosts on the WAN reach it there; kube-proxy on that node DNATs it to the
//! endpoints. Addresses are released when the Service is deleted or changes
//! type. All state is derived from the Services, so a restart reconciles.

mod pool;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::netns;
use crate::plan::{ClusterPlan, LabPlan};
use crate::reflect;
use pool::{Claim, Refusal};

/// Quiet time after a change before a pass.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// First and longest wait before retrying a failed pass.
const RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// The node interface that carries LoadBalancer addresses.
const INTERFACE: &str = "eth0";

/// Runs the LoadBalancer controller of `cluster` (in `lab`) until the task
/// is dropped.
pub async fn run(client: Client, cluster: ClusterPlan, lab: LabPlan) -> anyhow::Result<()> {
    let share = pool::share(&lab, cluster.index);
    let node_netns = cluster.node(0).netns();
    let changed = Arc::new(Notify::new());
    let services = reflect::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
        "Service",
    );
    services.wait_until_ready().await.context("Service cache")?;
    tracing::info!(
        cluster = %cluster.name,
        first = %share.first().map(ToString::to_string).unwrap_or_default(),
        last = %share.last().map(ToString::to_string).unwrap_or_default(),
        node_netns,
        "LoadBalancer controller started"
    );

    let mut refusals: BTreeMap<(String, String), Refusal> = BTreeMap::new();
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
        let snapshot: Vec<Arc<Service>> = services.state();
        let failures = reconcile(&client, &snapshot, &share, &node_netns, &mut refusals).await;
        failing = failures > 0;
        if failing {
            tracing::warn!(cluster = %cluster.name, failures, retry_in = ?retry, "LoadBalancer pass incomplete");
            retry = (retry * 2).min(RETRY.1);
        } else {
            retry = RETRY.0;
        }
    }
}

/// Whether `service` is ours to serve: type LoadBalancer, no foreign class.
fn is_load_balancer(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

/// IPv4 addresses in `status.loadBalancer.ingress`.
fn ingress_ips(service: &Service) -> Vec<Ipv4Addr> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    ingress
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn key(service: &Service) -> (String, String) {
    (service.namespace().unwrap_or_default(), service.name_any())
}

/// One pass: assign, write statuses, sync node 0's addresses. Returns how
/// many steps failed.
async fn reconcile(
    client: &Client,
    services: &[Arc<Service>],
    share: &[Ipv4Addr],
    node_netns: &str,
    refusals: &mut BTreeMap<(String, String), Refusal>,
) -> usize {
    let in_share = |ip: &Ipv4Addr| share.contains(ip);
    let claims: Vec<Claim> = services
        .iter()
        .filter(|s| is_load_balancer(s))
        .map(|s| Claim {
            key: key(s),
            created: s
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            requested: s
                .spec
                .as_ref()
                .and_then(|spec| spec.load_balancer_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            current: ingress_ips(s).into_iter().find(in_share),
        })
        .collect();
    let assignment = pool::assign(&claims, share);

    let mut failures = 0;
    // Node addresses first, so an address is reachable once it is published.
    let wanted: BTreeSet<Ipv4Addr> = assignment
        .values()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    if let Err(error) = sync_addresses(node_netns, &wanted, share).await {
        tracing::warn!(
            netns = node_netns,
            error = format!("{error:#}"),
            "syncing LoadBalancer addresses failed"
        );
        failures += 1;
    }

    refusals.retain(|k, _| assignment.get(k).is_some_and(Result::is_err));
    for service in services {
        let key = key(service);
        let current = ingress_ips(service);
        let wanted: Vec<Ipv4Addr> = match assignment.get(&key) {
            Some(Ok(ip)) => vec![*ip],
            Some(Err(refusal)) => {
                if refusals.get(&key) != Some(refusal) {
                    tracing::warn!(namespace = %key.0, service = %key.1, reason = %refusal, "no LoadBalancer address");
                    refusals.insert(key.clone(), refusal.clone());
                }
                Vec::new()
            }
            // Not (or no longer) a LoadBalancer: release what we gave it.
            None if current.iter().any(in_share) => Vec::new(),
            None => continue,
        };
        if current != wanted
            && let Err(error) = write_status(client, &key, &wanted).await
        {
            tracing::warn!(namespace = %key.0, service = %key.1, error = format!("{error:#}"), "writing LoadBalancer status failed");
            failures += 1;
        }
    }
    failures
}

/// Sets `status.loadBalancer.ingress` of Service `key` to `ips` (empty
/// clears it) through the status subresource.
async fn write_status(
    client: &Client,
    key: &(String, String),
    ips: &[Ipv4Addr],
) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(client.clone(), &key.0);
    let ingress = if ips.is_empty() {
        serde_json::Value::Null
    } else {
        ips.iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
            .collect()
    };
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching status of Service {}/{}", key.0, key.1))?;
    tracing::info!(namespace = %key.0, service = %key.1, ingress = ?ips, "LoadBalancer status written");
    Ok(())
}

/// Makes the /32 addresses from `share` on node 0's interface exactly
/// `wanted`, leaving every other address alone.
async fn sync_addresses(
    netns: &str,
    wanted: &BTreeSet<Ipv4Addr>,
    share: &[Ipv4Addr],
) -> anyhow::Result<()> {
    let listing = netns::exec(
        netns,
        "ip",
        &["-o", "-4", "addr", "show", "dev", INTERFACE],
        None,
    )
    .await?;
    let present = lb_addresses(&listing, share);
    for ip in wanted.difference(&present) {
        netns::exec(
            netns,
            "ip",
            &["addr", "add", &format!("{ip}/32"), "dev", INTERFACE],
            None,
        )
        .await?;
        tracing::info!(netns, %ip, "LoadBalancer address added");
    }
    for ip in present.difference(wanted) {
        netns::exec(
            netns,
            "ip",
            &["addr", "del", &format!("{ip}/32"), "dev", INTERFACE],
            None,
        )
        .await?;
        tracing::info!(netns, %ip, "LoadBalancer address removed");
    }
    Ok(())
}

/// The /32 addresses of `share` in `ip -o -4 addr show` output.
fn lb_addresses(listing: &str, share: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    listing
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let (ip, prefix) = words.next()?.split_once('/')?;
            let ip: Ipv4Addr = ip.parse().ok()?;
            (prefix == "32" && share.contains(&ip)).then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pool_host_addresses_are_ours() {
        let share = [
            Ipv4Addr::new(198, 18, 0, 160),
            Ipv4Addr::new(198, 18, 0, 161),
        ];
        let listing = "2: eth0    inet 198.18.0.10/24 brd 198.18.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                       2: eth0    inet 198.18.0.160/32 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                       2: eth0    inet 198.18.0.170/32 scope global eth0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            lb_addresses(listing, &share),
            BTreeSet::from([Ipv4Addr::new(198, 18, 0, 160)])
        );
    }

    /// Adds and removes pool addresses on a real interface in a throwaway
    /// netns, leaving the node's own address alone.
    #[tokio::test]
    async fn node_addresses_follow_the_assignment() -> anyhow::Result<()> {
        let ns = netns::TempNetns::new("lb")?;
        let ns = ns.0.as_str();
        netns::exec(
            ns,
            "ip",
            &[
                "link", "add", INTERFACE, "type", "veth", "peer", "name", "peer0",
            ],
            None,
        )
        .await?;
        netns::exec(
            ns,
            "ip",
            &["addr", "add", "198.18.0.10/24", "dev", INTERFACE],
            None,
        )
        .await?;
        let share = pool::share(
            &LabPlan {
                name: "t".into(),
                slot: 0,
            },
            0,
        );
        let listing = || async {
            netns::exec(
                ns,
                "ip",
                &["-o", "-4", "addr", "show", "dev", INTERFACE],
                None,
            )
            .await
        };

        sync_addresses(ns, &BTreeSet::from([share[0], share[2]]), &share).await?;
        assert_eq!(
            lb_addresses(&listing().await?, &share),
            BTreeSet::from([share[0], share[2]])
        );
        sync_addresses(ns, &BTreeSet::from([share[2]]), &share).await?;
        let now = listing().await?;
        assert_eq!(lb_addresses(&now, &share), BTreeSet::from([share[2]]));
        assert!(
            now.contains("198.18.0.10/24"),
            "the node's own address stays: {now}"
        );
        Ok(())
    }
}
