//! The lab's EndpointSlice controller: for every Service with a selector it
//! keeps EndpointSlices (discovery.k8s.io/v1) and the legacy Endpoints object
//! listing the matching pods, as Kubernetes' controllers do.
//!
//! Every change of a Service, Pod, slice or Endpoints wakes one debounced
//! pass over all Services that compares the wanted objects with the cached
//! ones and writes only the differences. Failed passes are retried with
//! backoff; a restart reconciles whatever exists.

mod desired;
pub(crate) mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

use crate::plan::ClusterPlan;
use desired::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL};

/// Quiet time after a change before a pass, so bursts become one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// First and longest wait before retrying a failed pass.
const RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Runs the EndpointSlice and Endpoints controller of `cluster` until the
/// task is dropped.
pub async fn run(client: Client, cluster: ClusterPlan) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let caches = Caches {
        services: watch::reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
            "Service",
        ),
        pods: watch::reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
            "Pod",
        ),
        slices: watch::reflect(
            Api::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
            changed.clone(),
            "EndpointSlice",
        ),
        endpoints: watch::reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
            "Endpoints",
        ),
    };
    caches.wait_until_ready().await?;
    tracing::info!(cluster = %cluster.name, "endpointslice controller started");

    let mut retry = RETRY.0;
    let mut failing = false;
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
        let failures = reconcile_all(&client, &caches).await;
        failing = failures > 0;
        if failing {
            tracing::warn!(cluster = %cluster.name, failures, retry_in = ?retry, "endpointslice pass incomplete");
            retry = (retry * 2).min(RETRY.1);
        } else {
            retry = RETRY.0;
        }
    }
}

/// The controller's view of the cluster.
struct Caches {
    services: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
}

impl Caches {
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.services
            .wait_until_ready()
            .await
            .context("Service cache")?;
        self.pods.wait_until_ready().await.context("Pod cache")?;
        self.slices
            .wait_until_ready()
            .await
            .context("EndpointSlice cache")?;
        self.endpoints
            .wait_until_ready()
            .await
            .context("Endpoints cache")?;
        Ok(())
    }
}

/// One pass over every Service; returns how many writes failed.
async fn reconcile_all(client: &Client, caches: &Caches) -> usize {
    let pods = caches.pods.state();
    let mut pods_by_namespace: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in &pods {
        pods_by_namespace
            .entry(pod.namespace().unwrap_or_default())
            .or_default()
            .push(pod);
    }
    let mut failures = 0;
    let mut wanted_slices = BTreeSet::new();
    let mut wanted_endpoints = BTreeSet::new();
    for service in caches.services.state() {
        let namespace = service.namespace().unwrap_or_default();
        let pods = pods_by_namespace
            .get(&namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(want) = desired::desired(&service, pods) else {
            continue;
        };
        for slice in want.slices {
            wanted_slices.insert((namespace.clone(), slice.name_any()));
            let existing = caches.slices.get(&object_ref(&slice));
            let result = write(client, existing.as_deref(), slice, |a, b| {
                a.metadata.labels == b.metadata.labels
                    && a.metadata.owner_references == b.metadata.owner_references
                    && a.address_type == b.address_type
                    && a.endpoints == b.endpoints
                    && a.ports == b.ports
            })
            .await;
            failures += count_failure(result, "EndpointSlice");
        }
        wanted_endpoints.insert((namespace.clone(), want.endpoints.name_any()));
        let existing = caches.endpoints.get(&object_ref(&want.endpoints));
        let result = write(client, existing.as_deref(), want.endpoints, |a, b| {
            a.metadata.labels == b.metadata.labels && a.subsets == b.subsets
        })
        .await;
        failures += count_failure(result, "Endpoints");
    }

    // Slices we manage that no pass wanted: delete those of deleted,
    // ExternalName or selector-managed Services (stale port groups, a
    // recreated Service's old uid); leave selectorless Services' alone.
    for slice in caches.slices.state() {
        let key = (slice.namespace().unwrap_or_default(), slice.name_any());
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
            continue;
        };
        let ours = slice.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
        if ours
            && !wanted_slices.contains(&key)
            && desired::unwanted_is_stale(service_of(caches, &key.0, service).as_deref())
        {
            failures += count_failure(
                delete::<EndpointSlice>(client, &key.0, &key.1).await,
                "EndpointSlice",
            );
        }
    }
    // Endpoints marked like the ones Kubernetes' Endpoints controller
    // writes, under the same rule.
    for endpoints in caches.endpoints.state() {
        let key = (
            endpoints.namespace().unwrap_or_default(),
            endpoints.name_any(),
        );
        let ours = endpoints
            .labels()
            .get(SKIP_MIRROR_LABEL)
            .map(String::as_str)
            == Some("true");
        if ours
            && !wanted_endpoints.contains(&key)
            && desired::unwanted_is_stale(service_of(caches, &key.0, &key.1).as_deref())
        {
            failures += count_failure(
                delete::<Endpoints>(client, &key.0, &key.1).await,
                "Endpoints",
            );
        }
    }
    failures
}

fn object_ref<K>(object: &K) -> ObjectRef<K>
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    ObjectRef::new(&object.name_any()).within(&object.namespace().unwrap_or_default())
}

fn service_of(caches: &Caches, namespace: &str, name: &str) -> Option<Arc<Service>> {
    caches.services.get(&ObjectRef::new(name).within(namespace))
}

fn count_failure(result: anyhow::Result<()>, kind: &'static str) -> usize {
    match result {
        Ok(()) => 0,
        Err(error) => {
            tracing::warn!(kind, error = format!("{error:#}"), "write failed");
            1
        }
    }
}

/// Creates `want`, or replaces `existing` with it when `same` says their
/// content differs. Metadata other than labels and owners is kept.
async fn write<K>(
    client: &Client,
    existing: Option<&K>,
    mut want: K,
    same: impl Fn(&K, &K) -> bool,
) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let namespace = want.namespace().unwrap_or_default();
    let name = want.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    match existing {
        None => {
            api.create(&PostParams::default(), &want)
                .await
                .with_context(|| format!("creating {namespace}/{name}"))?;
            tracing::info!(kind = K::kind(&Default::default()).as_ref(), %namespace, %name, "created");
        }
        Some(existing) if same(existing, &want) => {}
        Some(existing) => {
            let mut meta = existing.meta().clone();
            meta.labels = want.meta().labels.clone();
            meta.owner_references = want.meta().owner_references.clone();
            meta.managed_fields = None;
            *want.meta_mut() = meta;
            api.replace(&name, &PostParams::default(), &want)
                .await
                .with_context(|| format!("updating {namespace}/{name}"))?;
            tracing::info!(kind = K::kind(&Default::default()).as_ref(), %namespace, %name, "updated");
        }
    }
    Ok(())
}

async fn delete<K>(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(kind = K::kind(&Default::default()).as_ref(), %namespace, %name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error).with_context(|| format!("deleting {namespace}/{name}")),
    }
}
