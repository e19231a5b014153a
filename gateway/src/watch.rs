//! Keeps the [`Targets`] snapshot in step with the cluster: reflectors on
//! exported Services and on EndpointSlices, and a rebuild after each burst of
//! changes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
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
/// `readiness` is set once both caches have been listed.
pub async fn run(client: Client, targets: SharedTargets, readiness: Readiness) -> Result<()> {
    let changed = Arc::new(Notify::new());

    let services_api: Api<Service> = Api::all(client.clone());
    let exported = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::EXPORTED,
        labels::EXPORTED_VALUE
    ));
    let (services, services_writer) = reflector::store();
    let services_stream = reflector(services_writer, watcher(services_api, exported))
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

    services.wait_until_ready().await?;
    slices.wait_until_ready().await?;
    rebuild(&targets, &services, &slices);
    readiness.set(true);
    tracing::info!(exported = targets.load().exported_count(), "caches synced");

    loop {
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        rebuild(&targets, &services, &slices);
        if services_task.is_finished() || slices_task.is_finished() {
            anyhow::bail!("a watch stream ended");
        }
    }
}

fn rebuild(
    targets: &SharedTargets,
    services: &reflector::Store<Service>,
    slices: &reflector::Store<EndpointSlice>,
) {
    let next = Targets::build(&services.state(), &slices.state(), &targets.load());
    tracing::debug!(exported = next.exported_count(), "targets rebuilt");
    targets.store(Arc::new(next));
}
