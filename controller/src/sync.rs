//! The mirror loop of one Link: watches the remote cluster's exported
//! Services through the Link's credentials and keeps the local mirrors in
//! step (create, update, delete), never touching a Service mc does not own.
//! Nothing is ever deleted before a complete remote list, and nothing at all
//! while the remote API is unreachable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use mc_api::labels::MIRROR_OF_CLUSTER;
use mc_api::link::MirrorStatus;
use tokio::time::Instant;

use crate::cache::{Cache, Change};
use crate::context::Context;
use crate::mirror::{
    self, COMPONENT, COMPONENT_VALUE, Ownership, PART_OF, PART_OF_VALUE, RemoteKey,
};
use crate::remote::{self, RemoteFailure};
use crate::status::{CREDENTIALS_VALID, REMOTE_API_REACHABLE, StatusHub, Truth};

/// `state` of a mirror that is in place.
pub const MIRRORED: &str = "Mirrored";
/// `state` of a mirror blocked by a Service mc does not own.
pub const CONFLICT: &str = "Conflict";
/// `state` of a mirror whose namespace does not exist here.
pub const MISSING_NAMESPACE: &str = "MissingNamespace";
/// `state` of a mirror that cannot be made (see its message).
pub const ERROR: &str = "Error";

/// Health-check period while the remote API fails.
const HEALTH_DOWN: Duration = Duration::from_secs(2);
/// Health-check period while it works.
const HEALTH_UP: Duration = Duration::from_secs(30);
/// How often a blocked mirror (conflict) is tried again.
const CONFLICT_RECHECK: Duration = Duration::from_secs(10);
/// First and longest retry delay after a failed write.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What one mirror loop mirrors.
#[derive(Debug, Clone)]
pub struct LoopSpec {
    /// The Link's name.
    pub link: String,
    /// The Link itself, for Events.
    pub link_ref: ObjectReference,
    /// The remote cluster's name (mirror suffix and labels).
    pub target_cluster: String,
    /// Label selector of exported remote Services.
    pub selector: String,
    /// Create missing namespaces.
    pub create_namespaces: bool,
    /// The credentials Secret (holds the remote kubeconfig).
    pub credentials: Secret,
}

/// Runs the mirror loop until the task is dropped.
pub async fn run(spec: LoopSpec, ctx: Context, hub: StatusHub) {
    let remote_client = match remote::client_from_secret(&spec.credentials).await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(link = %spec.link, %error, "link credentials unusable");
            let reason = match error {
                remote::CredentialsError::Refused(_) => "RefusedKubeconfig",
                _ => "InvalidKubeconfig",
            };
            hub.condition(
                CREDENTIALS_VALID,
                Truth::False,
                reason,
                &format!("Secret {}: {error}", spec.credentials.name_any()),
            );
            return;
        }
    };
    let remote_api = Api::<Service>::all(remote_client);
    let watch_remote = || {
        watcher(
            remote_api.clone(),
            watcher::Config::default().labels(&spec.selector),
        )
        .default_backoff()
        .boxed()
    };
    let mut remote = watch_remote();
    let local = watcher(
        Api::<Service>::all(ctx.client.clone()),
        watcher::Config::default().labels(&format!("{MIRROR_OF_CLUSTER}={}", spec.target_cluster)),
    )
    .default_backoff();
    let namespaces = watcher(
        Api::<Namespace>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    futures::pin_mut!(local, namespaces);

    let mut mirrorer = Mirrorer::new(spec.clone(), ctx, hub);
    let mut resync = tokio::time::interval(mirrorer.ctx.config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Health checks: a one-item list with the watch's own selector. They
    // notice a partition before the watch times out, and when the remote
    // comes back they restart the watch at once instead of waiting out its
    // backoff.
    let mut health = tokio::time::interval(HEALTH_DOWN);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_healthy = Instant::now();
    let mut check: Option<BoxFuture<'static, Result<(), kube::Error>>> = None;
    loop {
        let next_retry = mirrorer.next_retry();
        tokio::select! {
            Some(event) = remote.next() => mirrorer.on_remote(event),
            Some(event) = local.next() => mirrorer.on_local(event),
            Some(event) = namespaces.next() => mirrorer.on_namespace(event),
            _ = sleep_until_opt(next_retry) => mirrorer.take_due_retries(),
            _ = resync.tick() => mirrorer.full = true,
            _ = health.tick(), if check.is_none() => {
                if mirrorer.remote_down || last_healthy.elapsed() >= HEALTH_UP {
                    let api = remote_api.clone();
                    let params = ListParams::default().labels(&spec.selector).limit(1);
                    check = Some(async move { api.list(&params).await.map(|_| ()) }.boxed());
                }
            }
            result = pending_or(&mut check) => {
                check = None;
                match result {
                    Ok(()) => {
                        last_healthy = Instant::now();
                        if mirrorer.remote_down {
                            tracing::info!(link = %mirrorer.spec.link, "remote API answers again, restarting the watch");
                            remote = watch_remote();
                            mirrorer.remote_up();
                        }
                    }
                    Err(error) => mirrorer.remote_failed(remote::classify_client(&error)),
                }
            }
        }
        mirrorer.reconcile().await;
    }
}

/// Awaits the future in `slot`, or never when there is none.
async fn pending_or<T>(slot: &mut Option<BoxFuture<'static, T>>) -> T {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The state of one mirror loop.
struct Mirrorer {
    spec: LoopSpec,
    ctx: Context,
    hub: StatusHub,
    remote: Cache<Service>,
    local: Cache<Service>,
    namespaces: Cache<Namespace>,
    states: BTreeMap<RemoteKey, MirrorStatus>,
    dirty: BTreeSet<RemoteKey>,
    full: bool,
    retries: BTreeMap<RemoteKey, (Instant, u32)>,
    remote_down: bool,
}

/// What became of one key.
enum Outcome {
    /// Settled: no retry needed.
    Done,
    /// Try again after the delay (zero: exponential backoff after an error).
    Retry(Duration),
}

impl Mirrorer {
    fn new(spec: LoopSpec, ctx: Context, hub: StatusHub) -> Mirrorer {
        Mirrorer {
            spec,
            ctx,
            hub,
            remote: Cache::default(),
            local: Cache::default(),
            namespaces: Cache::default(),
            states: BTreeMap::new(),
            dirty: BTreeSet::new(),
            full: false,
            retries: BTreeMap::new(),
            remote_down: false,
        }
    }

    fn cluster(&self) -> &str {
        &self.spec.target_cluster
    }

    fn on_remote(&mut self, event: Result<watcher::Event<Service>, watcher::Error>) {
        match event {
            Ok(event) => {
                self.remote_up();
                match self.remote.apply(event) {
                    Change::Nothing => {}
                    Change::Everything => self.full = true,
                    Change::Object(service) => {
                        if let Some(key) = RemoteKey::of(&service) {
                            self.dirty.insert(key);
                        }
                    }
                }
            }
            Err(error) => self.remote_failed(remote::classify(&error)),
        }
    }

    /// The remote API answered the watch or a health check.
    fn remote_up(&mut self) {
        self.remote_down = false;
        if self
            .hub
            .condition(REMOTE_API_REACHABLE, Truth::True, "Watching", "")
        {
            tracing::info!(link = %self.spec.link, "remote API reachable");
        }
        self.hub
            .condition(CREDENTIALS_VALID, Truth::True, "Authenticated", "");
        self.ctx.metrics.remote_reachable(self.cluster(), true);
    }

    /// A remote request failed: the status says why; nothing is deleted.
    fn remote_failed(&mut self, failure: RemoteFailure) {
        self.remote_down = true;
        let changed = match &failure {
            RemoteFailure::Unauthorized(message) => {
                self.hub
                    .condition(REMOTE_API_REACHABLE, Truth::True, "Answering", "");
                self.hub.condition(
                    CREDENTIALS_VALID,
                    Truth::False,
                    "Unauthorized",
                    &format!("the remote API rejects the token: {message}"),
                )
            }
            RemoteFailure::Forbidden(message) => {
                self.hub
                    .condition(REMOTE_API_REACHABLE, Truth::True, "Answering", "");
                self.hub.condition(
                    CREDENTIALS_VALID,
                    Truth::False,
                    "Forbidden",
                    &format!("the remote ServiceAccount may not watch Services: {message}"),
                )
            }
            RemoteFailure::Unreachable(message) => self.hub.condition(
                REMOTE_API_REACHABLE,
                Truth::False,
                "Unreachable",
                &format!("{message}; mirrors are kept as they are"),
            ),
            RemoteFailure::Failed(message) => self.hub.condition(
                REMOTE_API_REACHABLE,
                Truth::False,
                "APIError",
                &format!("{message}; mirrors are kept as they are"),
            ),
        };
        let reachable = matches!(
            failure,
            RemoteFailure::Unauthorized(_) | RemoteFailure::Forbidden(_)
        );
        self.ctx.metrics.remote_reachable(self.cluster(), reachable);
        if changed {
            tracing::warn!(link = %self.spec.link, ?failure, "remote API failing, retrying with backoff; mirrors kept");
        }
    }

    fn on_local(&mut self, event: Result<watcher::Event<Service>, watcher::Error>) {
        match event {
            Ok(event) => match self.local.apply(event) {
                Change::Nothing => {}
                Change::Everything => self.full = true,
                Change::Object(service) => {
                    if let Some(key) = RemoteKey::of_mirror(&service) {
                        self.dirty.insert(key);
                    }
                }
            },
            Err(error) => {
                tracing::warn!(link = %self.spec.link, %error, "local mirror watch failing")
            }
        }
    }

    fn on_namespace(&mut self, event: Result<watcher::Event<Namespace>, watcher::Error>) {
        match event {
            Ok(event) => match self.namespaces.apply(event) {
                Change::Nothing => {}
                Change::Everything => self.full = true,
                Change::Object(ns) => {
                    let name = ns.name_any();
                    let keys: Vec<RemoteKey> = self
                        .remote
                        .iter()
                        .filter(|((namespace, _), _)| *namespace == name)
                        .filter_map(|(_, service)| RemoteKey::of(service))
                        .collect();
                    self.dirty.extend(keys);
                    // createdNamespaces may have changed.
                    self.publish();
                }
            },
            Err(error) => tracing::warn!(link = %self.spec.link, %error, "namespace watch failing"),
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        self.retries.values().map(|(at, _)| *at).min()
    }

    fn take_due_retries(&mut self) {
        let now = Instant::now();
        let due: Vec<RemoteKey> = self
            .retries
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        self.dirty.extend(due);
    }

    /// Reconciles what changed (or everything), once every cache has
    /// listed completely.
    async fn reconcile(&mut self) {
        if !(self.remote.synced() && self.local.synced() && self.namespaces.synced()) {
            return;
        }
        if !self.full && self.dirty.is_empty() {
            return;
        }
        let keys: BTreeSet<RemoteKey> = if std::mem::take(&mut self.full) {
            self.dirty.clear();
            self.remote
                .iter()
                .filter_map(|(_, s)| RemoteKey::of(s))
                .chain(
                    self.local
                        .iter()
                        .filter_map(|(_, s)| RemoteKey::of_mirror(s)),
                )
                .chain(self.states.keys().cloned())
                .collect()
        } else {
            std::mem::take(&mut self.dirty)
        };
        for key in keys {
            let attempts = self.retries.get(&key).map_or(0, |(_, n)| *n);
            match self.reconcile_key(&key).await {
                Outcome::Done => {
                    self.retries.remove(&key);
                }
                Outcome::Retry(after) => {
                    let delay = if after.is_zero() {
                        backoff(attempts)
                    } else {
                        after
                    };
                    self.retries
                        .insert(key, (Instant::now() + delay, attempts.saturating_add(1)));
                }
            }
        }
        self.publish();
    }

    /// Local mirrors (in our label-filtered cache) that say they mirror `key`.
    fn mirrors_of(&self, key: &RemoteKey) -> Vec<Service> {
        self.local
            .iter()
            .filter(|((namespace, _), _)| *namespace == key.namespace)
            .filter(|(_, s)| RemoteKey::of_mirror(s).as_ref() == Some(key))
            .filter(|(_, s)| {
                mirror::ownership(s, key, &self.spec.target_cluster) == Ownership::Ours
            })
            .map(|(_, s)| s.clone())
            .collect()
    }

    async fn reconcile_key(&mut self, key: &RemoteKey) -> Outcome {
        let existing = self.mirrors_of(key);
        let remote = self
            .remote
            .get(&(key.namespace.clone(), key.name.clone()))
            .cloned();
        let Some(remote) = remote else {
            // Unexported or deleted remotely (after a complete list): remove.
            self.states.remove(key);
            return self
                .delete_all(key, &existing, "the remote Service is no longer exported")
                .await;
        };
        let desired = match mirror::desired_mirror(&remote, &self.spec.target_cluster) {
            Ok(desired) => desired,
            Err(reason) => {
                self.set_state(key, "", ERROR, reason.to_string());
                return self
                    .delete_all(key, &existing, "the remote Service cannot be mirrored")
                    .await;
            }
        };
        let name = desired.name_any();
        // A mirror of this key under another name (an older naming): remove it.
        let strays: Vec<Service> = existing
            .iter()
            .filter(|s| s.name_any() != name)
            .cloned()
            .collect();
        if let Outcome::Retry(d) = self.delete_all(key, &strays, "renamed").await {
            return Outcome::Retry(d);
        }
        if !self.namespace_ready(key, &name).await {
            return Outcome::Done;
        }
        let current = existing.into_iter().find(|s| s.name_any() == name);
        match current {
            Some(current) => self.update(key, &current, &desired).await,
            None => self.create(key, &desired).await,
        }
    }

    /// Whether the mirror's namespace exists (creating it when the Link
    /// allows); records `MissingNamespace` otherwise.
    async fn namespace_ready(&mut self, key: &RemoteKey, name: &str) -> bool {
        let ns_key = (String::new(), key.namespace.clone());
        if self.namespaces.get(&ns_key).is_some() {
            return true;
        }
        if !self.spec.create_namespaces {
            self.set_state(
                key,
                name,
                MISSING_NAMESPACE,
                format!(
                    "namespace {:?} does not exist in this cluster (create it, or set spec.createNamespaces on the Link)",
                    key.namespace
                ),
            );
            return false;
        }
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(key.namespace.clone()),
                labels: Some(
                    [
                        (PART_OF, PART_OF_VALUE),
                        (COMPONENT, COMPONENT_VALUE),
                        (MIRROR_OF_CLUSTER, self.spec.target_cluster.as_str()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api: Api<Namespace> = Api::all(self.ctx.client.clone());
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => {
                tracing::info!(link = %self.spec.link, namespace = %key.namespace, "namespace created for mirrors");
                true
            }
            Err(kube::Error::Api(s)) if s.code == 409 => true,
            Err(error) => {
                self.set_state(
                    key,
                    name,
                    ERROR,
                    format!("creating namespace {:?}: {error}", key.namespace),
                );
                false
            }
        }
    }

    async fn create(&mut self, key: &RemoteKey, desired: &Service) -> Outcome {
        let name = desired.name_any();
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        match api.create(&PostParams::default(), desired).await {
            Ok(_) => {
                tracing::info!(link = %self.spec.link, remote = %key, mirror = %name, "mirror created");
                self.ctx.metrics.change(self.cluster(), "create");
                self.set_state(key, &name, MIRRORED, String::new());
                Outcome::Done
            }
            Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await {
                Ok(Some(found)) => {
                    match mirror::ownership(&found, key, &self.spec.target_cluster) {
                        // Ours, not yet in the cache: bring it in step.
                        Ownership::Ours => self.update(key, &found, desired).await,
                        Ownership::Foreign(what) => {
                            self.conflict(key, &found, &what).await;
                            Outcome::Retry(CONFLICT_RECHECK)
                        }
                    }
                }
                // Deleted in between: try again at once.
                Ok(None) => Outcome::Retry(RETRY_MIN),
                Err(error) => self.failed(key, &name, format!("reading {name}: {error}")),
            },
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // The namespace went away under us; its watch event follows.
                self.set_state(
                    key,
                    &name,
                    MISSING_NAMESPACE,
                    format!("namespace {:?} does not exist", key.namespace),
                );
                Outcome::Done
            }
            Err(error) => self.failed(key, &name, format!("creating {name}: {error}")),
        }
    }

    async fn update(&mut self, key: &RemoteKey, current: &Service, desired: &Service) -> Outcome {
        let name = desired.name_any();
        if !mirror::needs_update(current, desired) {
            self.set_state(key, &name, MIRRORED, String::new());
            return Outcome::Done;
        }
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
        // The resourceVersion carried over makes this an optimistic update.
        let next = mirror::updated(current, desired);
        match api.replace(&name, &PostParams::default(), &next).await {
            Ok(_) => {
                tracing::info!(link = %self.spec.link, remote = %key, mirror = %name, "mirror updated");
                self.ctx.metrics.change(self.cluster(), "update");
                self.set_state(key, &name, MIRRORED, String::new());
                Outcome::Done
            }
            // Changed since we read it: the watch brings the new version.
            Err(kube::Error::Api(s)) if s.code == 409 => Outcome::Retry(RETRY_MIN),
            Err(kube::Error::Api(s)) if s.code == 404 => Outcome::Retry(RETRY_MIN),
            Err(error) => self.failed(key, &name, format!("updating {name}: {error}")),
        }
    }

    async fn delete_all(&mut self, key: &RemoteKey, mirrors: &[Service], why: &str) -> Outcome {
        let mut outcome = Outcome::Done;
        for service in mirrors {
            let name = service.name_any();
            let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: service.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {
                    tracing::info!(link = %self.spec.link, remote = %key, mirror = %name, reason = why, "mirror deleted");
                    self.ctx.metrics.change(self.cluster(), "delete");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                // Replaced by another object of the same name: look again.
                Err(kube::Error::Api(s)) if s.code == 409 => outcome = Outcome::Retry(RETRY_MIN),
                Err(error) => {
                    tracing::warn!(link = %self.spec.link, mirror = %name, %error, "deleting mirror failed");
                    outcome = Outcome::Retry(Duration::ZERO);
                }
            }
        }
        outcome
    }

    async fn conflict(&mut self, key: &RemoteKey, found: &Service, what: &str) {
        let name = found.name_any();
        let message = format!(
            "Service {}/{name} already exists and is {what}; mc leaves it untouched and does not mirror {} from {}",
            key.namespace, key, self.spec.target_cluster
        );
        let was_conflict = self.states.get(key).is_some_and(|s| s.state == CONFLICT);
        self.set_state(key, &name, CONFLICT, message.clone());
        if !was_conflict {
            tracing::warn!(link = %self.spec.link, remote = %key, mirror = %name, "mirror conflict: {what}");
            let related = found.object_ref(&());
            self.ctx
                .event(
                    &self.spec.link_ref,
                    Some(related),
                    EventType::Warning,
                    "MirrorConflict",
                    "Mirror",
                    message,
                )
                .await;
        }
    }

    fn failed(&mut self, key: &RemoteKey, name: &str, message: String) -> Outcome {
        let first = self.states.get(key).is_none_or(|s| s.state != ERROR);
        if first {
            tracing::warn!(link = %self.spec.link, remote = %key, mirror = %name, error = %message, "mirror write failed, retrying");
        }
        self.set_state(key, name, ERROR, message);
        Outcome::Retry(Duration::ZERO)
    }

    fn set_state(&mut self, key: &RemoteKey, mirror: &str, state: &str, message: String) {
        let mirror = if mirror.is_empty() {
            mirror::mirror_name(&key.name, &self.spec.target_cluster).unwrap_or_default()
        } else {
            mirror.to_string()
        };
        self.states.insert(
            key.clone(),
            MirrorStatus {
                namespace: key.namespace.clone(),
                service: key.name.clone(),
                mirror,
                state: state.to_string(),
                message,
            },
        );
    }

    /// Puts the per-service states and created namespaces into the status.
    fn publish(&self) {
        let mirrors: Vec<MirrorStatus> = self.states.values().cloned().collect();
        let mirrored = mirrors.iter().filter(|m| m.state == MIRRORED).count();
        let conflicts = mirrors.iter().filter(|m| m.state == CONFLICT).count();
        self.ctx
            .metrics
            .mirrors(self.cluster(), mirrored, conflicts);
        let created: Vec<String> = self
            .namespaces
            .iter()
            .filter(|(_, ns)| created_by(ns, &self.spec.target_cluster))
            .map(|(_, ns)| ns.name_any())
            .collect();
        let mirrored = u32::try_from(mirrored).unwrap_or(u32::MAX);
        self.hub.update(|status| {
            let changed = status.mirrors != mirrors
                || status.mirrored_services != mirrored
                || status.created_namespaces != created;
            status.mirrors = mirrors;
            status.mirrored_services = mirrored;
            status.created_namespaces = created;
            changed
        });
    }
}

/// Whether mc created namespace `ns` for mirrors of `cluster`.
pub fn created_by(ns: &Namespace, cluster: &str) -> bool {
    let labels = ns.labels();
    labels.get(PART_OF).map(String::as_str) == Some(PART_OF_VALUE)
        && labels.get(MIRROR_OF_CLUSTER).map(String::as_str) == Some(cluster)
}

fn backoff(attempts: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32.checked_shl(attempts.min(16)).unwrap_or(u32::MAX))
        .min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_the_cap() {
        assert_eq!(backoff(0), RETRY_MIN);
        assert_eq!(backoff(1), RETRY_MIN * 2);
        assert_eq!(backoff(30), RETRY_MAX);
    }
}
