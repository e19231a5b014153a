//! Keeps the agent's views in step with its cluster: mirror Services, Links
//! and this node's Pods. After each burst of changes it rebuilds the views,
//! publishes them, and hands the kernel the new mirror set in one batch.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use mc_api::{Link, labels};
use tokio::sync::{Notify, watch};

use crate::kernel::MirrorSet;
use crate::mirrors::{Gateways, Mirrors, Workloads, gateway_target};
use crate::outbound::resolve_addresses;
use crate::pod::PodView;

/// How long to wait for more changes before rebuilding.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often Link hostnames are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// The views a connection reads, each swapped whole.
#[derive(Default)]
pub struct Views {
    pub mirrors: ArcSwap<Mirrors>,
    pub workloads: ArcSwap<Workloads>,
}

/// What the watch loop needs to know about where it runs.
pub struct WatchConfig {
    /// Namespace that holds the Links.
    pub links_namespace: String,
    /// This node's name (to select its Pods), if known.
    pub node_name: Option<String>,
}

/// Watches the cluster until a stream ends for good. Publishes views into
/// `views`, the gateways into `gateways_tx` and the mirror set into
/// `kernel_tx` (the kernel programmer applies each value atomically).
pub async fn run(
    client: Client,
    cfg: WatchConfig,
    views: Arc<Views>,
    gateways_tx: watch::Sender<Gateways>,
    kernel_tx: watch::Sender<Option<MirrorSet>>,
) -> Result<()> {
    let changed = Arc::new(Notify::new());

    let mirrors_cfg = watcher::Config::default().labels(labels::MIRROR_SELECTOR);
    let (services, w) = reflector::store::<Service>();
    spawn_feed(
        reflector(w, watcher(Api::all(client.clone()), mirrors_cfg)),
        "mirror services",
        &changed,
    );

    let (links, w) = reflector::store::<Link>();
    let links_api: Api<Link> = Api::namespaced(client.clone(), &cfg.links_namespace);
    spawn_feed(
        reflector(w, watcher(links_api, watcher::Config::default())),
        "links",
        &changed,
    );

    let pods_cfg = match &cfg.node_name {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        None => watcher::Config::default(),
    };
    let (pods, w) = reflector::store::<PodView>();
    spawn_feed(
        reflector(w, watcher(Api::all(client), pods_cfg)),
        "pods",
        &changed,
    );

    services.wait_until_ready().await?;
    links.wait_until_ready().await?;
    pods.wait_until_ready().await?;
    tracing::info!("caches synced");

    let mut resolve_tick = tokio::time::interval(RESOLVE_EVERY);
    loop {
        let mirrors = Mirrors::build(&services.state());
        // Only a changed set reaches the kernel: Pod and Link churn must not
        // cost a netlink and nftables transaction each.
        let wanted = Some(mirrors.set());
        kernel_tx.send_if_modified(|current| {
            let differs = *current != wanted;
            if differs {
                *current = wanted;
            }
            differs
        });
        views.mirrors.store(Arc::new(mirrors));
        views
            .workloads
            .store(Arc::new(Workloads::build(&pods.state())));

        let mut gateways = Gateways::new();
        for link in links.state() {
            let resolved =
                resolve_addresses(&link.spec.gateway_addresses, link.spec.gateway_port).await;
            gateways.insert(
                Arc::from(link.spec.target_cluster_name.as_str()),
                gateway_target(&link, resolved),
            );
        }
        gateways_tx.send_if_modified(|current| {
            let differs = *current != gateways;
            if differs {
                *current = gateways;
            }
            differs
        });

        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = resolve_tick.tick() => {}
        }
    }
}

fn spawn_feed<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    what: &'static str,
    changed: &Arc<Notify>,
) where
    K: Send + 'static,
{
    let changed = changed.clone();
    let mut stream: BoxStream<'static, Result<(), watcher::Error>> =
        stream.default_backoff().map(|r| r.map(|_| ())).boxed();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            match event {
                Ok(()) => changed.notify_one(),
                Err(error) => tracing::warn!(%error, what, "watch failed; retrying"),
            }
        }
        tracing::error!(what, "watch stream ended");
    });
}
