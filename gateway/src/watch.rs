//! Keeps the [`Targets`] snapshot in step with the cluster: reflectors on
//! exported Services, on EndpointSlices and on the linked clusters'
//! ServiceAccounts, and a rebuild after each burst of changes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use mc_admin::Readiness;
use mc_api::labels;
use tokio::sync::Notify;

use crate::targets::Targets;

/// How long to wait for more changes before rebuilding the index.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// The current index, readable without a lock.
pub type SharedTargets = Arc<ArcSwap<Targets>>;

/// Watches the cluster and keeps `targets` current. Returns only on a fatal
/// error; watch errors are retried with backoff by the watcher itself.
/// `readiness` is set once every cache has been listed. Linked clusters are
/// read from the ServiceAccounts `kubectl mc link` makes in `namespace`.
pub async fn run(
    client: Client,
    namespace: &str,
    targets: SharedTargets,
    readiness: Readiness,
) -> Result<()> {
    let changed = Arc::new(Notify::new());

    let services_api: Api<Service> = Api::all(client.clone());
    let exported = watcher::Config::default().labels(labels::EXPORTED_SELECTOR);
    let (services, services_writer) = reflector::store();
    let services_stream = reflector(services_writer, watcher(services_api, exported))
        .default_backoff()
        .touched_objects();

    let accounts_api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let (accounts, accounts_writer) = reflector::store();
    let accounts_stream = reflector(
        accounts_writer,
        watcher(
            accounts_api,
            watcher::Config::default().labels(labels::LINKED_CLUSTER),
        ),
    )
    .default_backoff()
    .touched_objects();

    let slices_api: Api<EndpointSlice> = Api::all(client);
    let (slices, slices_writer) = reflector::store();
    let slices_stream = reflector(
        slices_writer,
        watcher(slices_api, watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();

    let feed = |stream: futures::stream::BoxStream<'static, Result<(), watcher::Error>>,
                what: &'static str| {
        let changed = changed.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(()) => changed.notify_one(),
                    Err(error) => tracing::warn!(%error, what, "watch failed; retrying"),
                }
            }
        })
    };
    let services_task = feed(services_stream.map(|r| r.map(|_| ())).boxed(), "services");
    let slices_task = feed(
        slices_stream.map(|r| r.map(|_| ())).boxed(),
        "endpointslices",
    );

    let accounts_task = feed(
        accounts_stream.map(|r| r.map(|_| ())).boxed(),
        "serviceaccounts",
    );

    services.wait_until_ready().await?;
    slices.wait_until_ready().await?;
    accounts.wait_until_ready().await?;
    let caches = Caches {
        services,
        slices,
        accounts,
    };
    caches.rebuild(&targets);
    readiness.set(true);
    let snapshot = targets.load();
    tracing::info!(
        exported = snapshot.exported_count(),
        linked = ?snapshot.linked(),
        "caches synced"
    );

    loop {
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        caches.rebuild(&targets);
        if services_task.is_finished() || slices_task.is_finished() || accounts_task.is_finished() {
            anyhow::bail!("a watch stream ended");
        }
    }
}

struct Caches {
    services: reflector::Store<Service>,
    slices: reflector::Store<EndpointSlice>,
    accounts: reflector::Store<ServiceAccount>,
}

impl Caches {
    fn rebuild(&self, targets: &SharedTargets) {
        let linked: HashSet<String> = self
            .accounts
            .state()
            .iter()
            .filter_map(|sa| sa.metadata.labels.as_ref()?.get(labels::LINKED_CLUSTER))
            .filter(|name| mc_identity::valid_cluster_name(name))
            .cloned()
            .collect();
        let next = Targets::build(
            &self.services.state(),
            &self.slices.state(),
            linked,
            &targets.load(),
        );
        tracing::debug!(
            exported = next.exported_count(),
            linked = next.linked().len(),
            "targets rebuilt"
        );
        targets.store(Arc::new(next));
    }
}
