//! The per-Link supervisor: watches Links and their credentials Secrets in
//! the controller's namespace and keeps, for each Link, a status writer, a
//! mirror loop and a gateway prober running; a loop restarts when what it
//! depends on changes (a new token takes effect without a restart). Adds the
//! cleanup finalizer and, on deletion, removes the Link's mirrors before
//! letting it go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use mc_api::Link;
use mc_api::labels::EXPORTED_SELECTOR;
use tokio::time::Instant;

use crate::cache::{Cache, Change};
use crate::cleanup::{self, FINALIZER};
use crate::context::Context;
use crate::probe::{self, ProbeTarget};
use crate::remote;
use crate::status::{self, CREDENTIALS_VALID, StatusHub, Truth};
use crate::sync::{self, LoopSpec};
use crate::task::Task;

/// How often failed finalizer work is retried.
const TICK: Duration = Duration::from_secs(2);

/// What a mirror loop depends on: a change restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MirrorKey {
    target_cluster: String,
    selector: String,
    create_namespaces: bool,
    secret: String,
    fingerprint: String,
}

/// The running loops of one Link.
struct LinkTasks {
    target_cluster: String,
    hub: StatusHub,
    _writer: Task<()>,
    mirror: Option<(MirrorKey, Task<()>)>,
    probe: Option<(ProbeTarget, Task<()>)>,
    /// The selector error last reported as an Event.
    selector_error: Option<String>,
}

/// The label selector string of a Link (`mc.dev/exported=true` by default).
pub fn selector_of(link: &Link) -> Result<String, String> {
    match &link.spec.selector {
        None => Ok(EXPORTED_SELECTOR.to_string()),
        Some(selector) => kube::core::Selector::try_from(selector.clone())
            .map(|s| s.to_string())
            .map_err(|e| e.to_string()),
    }
}

/// Supervises every Link until the task is dropped (leadership lost):
/// dropping it stops every loop and leaves every mirror in place.
pub async fn supervise(ctx: Context) {
    let namespace = ctx.config.namespace.clone();
    let links = watcher(
        Api::<Link>::namespaced(ctx.client.clone(), &namespace),
        watcher::Config::default(),
    )
    .default_backoff();
    let secrets = watcher(
        Api::<Secret>::namespaced(ctx.client.clone(), &namespace),
        watcher::Config::default(),
    )
    .default_backoff();
    futures::pin_mut!(links, secrets);
    let mut supervisor = Supervisor {
        ctx,
        links: Cache::default(),
        secrets: Cache::default(),
        running: BTreeMap::new(),
        cleanups: BTreeMap::new(),
        next_sweep: None,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let affected: BTreeSet<String> = tokio::select! {
            Some(event) = links.next() => supervisor.on_link(event),
            Some(event) = secrets.next() => supervisor.on_secret(event),
            _ = tick.tick() => supervisor.all_names(),
        };
        if !(supervisor.links.synced() && supervisor.secrets.synced()) {
            continue;
        }
        for name in affected {
            supervisor.ensure(&name).await;
        }
        supervisor.sweep_when_due().await;
    }
}

struct Supervisor {
    ctx: Context,
    links: Cache<Link>,
    secrets: Cache<Secret>,
    running: BTreeMap<String, LinkTasks>,
    cleanups: BTreeMap<String, Task<()>>,
    next_sweep: Option<Instant>,
}

impl Supervisor {
    fn all_names(&self) -> BTreeSet<String> {
        self.links
            .iter()
            .map(|((_, name), _)| name.clone())
            .chain(self.running.keys().cloned())
            .collect()
    }

    fn on_link(&mut self, event: Result<watcher::Event<Link>, watcher::Error>) -> BTreeSet<String> {
        match event {
            Ok(event) => match self.links.apply(event) {
                Change::Nothing => BTreeSet::new(),
                Change::Everything => self.all_names(),
                Change::Object(link) => BTreeSet::from([link.name_any()]),
            },
            Err(error) => {
                tracing::warn!(%error, "link watch failing");
                BTreeSet::new()
            }
        }
    }

    fn on_secret(
        &mut self,
        event: Result<watcher::Event<Secret>, watcher::Error>,
    ) -> BTreeSet<String> {
        match event {
            Ok(event) => match self.secrets.apply(event) {
                Change::Nothing => BTreeSet::new(),
                Change::Everything => self.all_names(),
                Change::Object(secret) => {
                    let name = secret.name_any();
                    self.links
                        .iter()
                        .filter(|(_, link)| link.spec.credentials_secret == name)
                        .map(|((_, link), _)| link.clone())
                        .collect()
                }
            },
            Err(error) => {
                tracing::warn!(%error, "secret watch failing");
                BTreeSet::new()
            }
        }
    }

    /// Brings the loops of Link `name` in line with the Link and its Secret.
    async fn ensure(&mut self, name: &str) {
        let key = (self.ctx.config.namespace.clone(), name.to_string());
        let Some(link) = self.links.get(&key).cloned() else {
            if let Some(tasks) = self.running.remove(name) {
                self.ctx.metrics.forget(&tasks.target_cluster);
                tracing::info!(link = %name, "link gone, loops stopped");
            }
            return;
        };
        if link.meta().deletion_timestamp.is_some() {
            self.deleting(&link).await;
            return;
        }
        if !link.finalizers().iter().any(|f| f == FINALIZER) {
            // The watch brings the patched Link back; loops start then.
            if let Err(error) = cleanup::set_finalizer(&self.ctx, &link, true).await {
                tracing::warn!(link = %name, error = format!("{error:#}"), "adding finalizer failed, retrying");
            }
            return;
        }
        self.run_loops(&link).await;
    }

    async fn deleting(&mut self, link: &Link) {
        let name = link.name_any();
        // Stop first, so no loop recreates what the cleanup deletes.
        if let Some(tasks) = self.running.remove(&name) {
            self.ctx.metrics.forget(&tasks.target_cluster);
        }
        if !link.finalizers().iter().any(|f| f == FINALIZER) {
            return;
        }
        if self
            .cleanups
            .get(&name)
            .is_some_and(|task| !task.is_finished())
        {
            return;
        }
        tracing::info!(link = %name, cluster = %link.spec.target_cluster_name, "link deleted, removing its mirrors");
        let ctx = self.ctx.clone();
        let link = link.clone();
        let task = Task::spawn(async move {
            if let Err(error) = cleanup::finish_link_deletion(&ctx, &link).await {
                tracing::warn!(link = %link.name_any(), error = format!("{error:#}"), "link cleanup failed, retrying");
            }
        });
        self.cleanups.insert(name, task);
    }

    async fn run_loops(&mut self, link: &Link) {
        let name = link.name_any();
        self.cleanups.remove(&name);
        let target = link.spec.target_cluster_name.clone();
        if self
            .running
            .get(&name)
            .is_some_and(|t| t.target_cluster != target)
        {
            // Retargeted: start over (the old cluster's mirrors are swept as orphans).
            if let Some(old) = self.running.remove(&name) {
                self.ctx.metrics.forget(&old.target_cluster);
            }
        }
        let tasks = self.running.entry(name.clone()).or_insert_with(|| {
            let initial = link.status.clone().unwrap_or_default();
            let hub = StatusHub::new(initial.clone());
            let api: Api<Link> =
                Api::namespaced(self.ctx.client.clone(), &self.ctx.config.namespace);
            let writer = Task::spawn(status::write_status(
                api,
                name.clone(),
                hub.subscribe(),
                initial,
                self.ctx.config.status_refresh,
            ));
            LinkTasks {
                target_cluster: target.clone(),
                hub,
                _writer: writer,
                mirror: None,
                probe: None,
                selector_error: None,
            }
        });
        let generation = link.meta().generation;
        tasks.hub.update(|s| {
            let changed = s.observed_generation != generation;
            s.observed_generation = generation;
            changed
        });

        // The mirror loop.
        let secret_key = (
            self.ctx.config.namespace.clone(),
            link.spec.credentials_secret.clone(),
        );
        let secret = self.secrets.get(&secret_key).cloned();
        let selector = selector_of(link);
        let wanted = match (&secret, &selector) {
            (None, _) => {
                tasks.hub.condition(
                    CREDENTIALS_VALID,
                    Truth::False,
                    "SecretNotFound",
                    &format!(
                        "Secret {}/{} does not exist",
                        self.ctx.config.namespace, link.spec.credentials_secret
                    ),
                );
                None
            }
            (Some(secret), Ok(selector)) => match remote::fingerprint(secret) {
                Some(fingerprint) => Some(MirrorKey {
                    target_cluster: target.clone(),
                    selector: selector.clone(),
                    create_namespaces: link.spec.create_namespaces,
                    secret: link.spec.credentials_secret.clone(),
                    fingerprint,
                }),
                None => {
                    tasks.hub.condition(
                        CREDENTIALS_VALID,
                        Truth::False,
                        "MissingKubeconfig",
                        &format!(
                            "Secret {} has no {:?} key",
                            link.spec.credentials_secret,
                            remote::KUBECONFIG_KEY
                        ),
                    );
                    None
                }
            },
            (Some(_), Err(error)) => {
                if tasks.selector_error.as_ref() != Some(error) {
                    tasks.selector_error = Some(error.clone());
                    tracing::warn!(link = %name, %error, "invalid selector, not mirroring");
                    let note = format!("spec.selector is invalid: {error}");
                    self.ctx
                        .event(
                            &link.object_ref(&()),
                            None,
                            EventType::Warning,
                            "InvalidSelector",
                            "Mirror",
                            note,
                        )
                        .await;
                }
                None
            }
        };
        if selector.is_ok() {
            tasks.selector_error = None;
        }
        let current = tasks.mirror.as_ref().map(|(k, _)| k);
        if current != wanted.as_ref() {
            let restart = current.is_some();
            tasks.mirror = None;
            if let (Some(key), Some(secret)) = (wanted, secret) {
                tracing::info!(link = %name, cluster = %target, restart, "starting mirror loop");
                let spec = LoopSpec {
                    link: name.clone(),
                    link_ref: link.object_ref(&()),
                    target_cluster: target.clone(),
                    selector: key.selector.clone(),
                    create_namespaces: key.create_namespaces,
                    credentials: secret,
                };
                let task = Task::spawn(sync::run(spec, self.ctx.clone(), tasks.hub.clone()));
                tasks.mirror = Some((key, task));
            } else if restart {
                tracing::info!(link = %name, "mirror loop stopped (no usable credentials); mirrors kept");
            }
        }

        // The gateway prober.
        let probe_target = ProbeTarget {
            target_cluster: target.clone(),
            addresses: link.spec.gateway_addresses.clone(),
            spec: link.spec.probe.clone(),
        };
        if tasks.probe.as_ref().map(|(t, _)| t) != Some(&probe_target) {
            let task = Task::spawn(probe::run(
                probe_target.clone(),
                tasks.hub.clone(),
                self.ctx.metrics.clone(),
            ));
            tasks.probe = Some((probe_target, task));
        }
    }

    /// At start and every resync: removes mirrors of clusters no Link names.
    async fn sweep_when_due(&mut self) {
        if self.next_sweep.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let linked: BTreeSet<String> = self
            .links
            .iter()
            .map(|(_, link)| link.spec.target_cluster_name.clone())
            .collect();
        match cleanup::sweep_orphans(&self.ctx, &linked).await {
            Ok(()) => self.next_sweep = Some(Instant::now() + self.ctx.config.resync),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "orphan sweep failed, retrying"
                );
                self.next_sweep = Some(Instant::now() + TICK * 5);
            }
        }
    }
}
