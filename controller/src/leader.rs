//! Leader election on a `coordination.k8s.io/v1` Lease, the client-go way:
//! acquire a free or expired Lease, renew it periodically, every write
//! guarded by the Lease's resourceVersion. Expiry is judged by how long the
//! record has not changed on this instance's own clock, so clock skew
//! between instances does not matter. kube-runtime offers no elector, and
//! the small crates that do lag behind kube 5, hence this module.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::mirror::{COMPONENT, COMPONENT_VALUE, PART_OF, PART_OF_VALUE};

/// How to elect.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This instance's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal (15 s).
    pub lease_duration: Duration,
    /// How often the leader renews (5 s).
    pub renew_period: Duration,
    /// How often a follower tries to acquire (2 s).
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// A leader that has not renewed for this long stops leading, before any
    /// follower may consider the Lease expired.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// The part of a Lease whose change proves its holder alive.
type Record = (Option<String>, Option<MicroTime>, Option<i32>);

/// One instance's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// An elector for `config` through `client`.
    pub fn new(client: Client, config: LeaderConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Campaigns until `shutdown`, publishing on `leading` whether this
    /// instance leads; `on_contact` is called after the first successful
    /// exchange with the API. Releases the Lease on shutdown.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        shutdown: CancellationToken,
        on_contact: impl FnOnce(),
    ) {
        let mut on_contact = Some(on_contact);
        let mut last_held: Option<Instant> = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(held) => {
                    if let Some(f) = on_contact.take() {
                        f();
                    }
                    last_held = held.then(Instant::now);
                    set(&leading, held, &self.config.identity);
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.config.lease_name, "lease request failed");
                    let expired =
                        last_held.is_none_or(|at| at.elapsed() > self.config.renew_deadline());
                    if expired {
                        set(&leading, false, &self.config.identity);
                    }
                }
            }
            let pause = if *leading.borrow() {
                self.config.renew_period
            } else {
                self.config.retry_period
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if *leading.borrow() {
            set(&leading, false, &self.config.identity);
            if let Err(error) = self.release().await {
                tracing::warn!(%error, "releasing the lease failed; it expires on its own");
            }
        }
    }

    /// One round: `Ok(true)` when this instance holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    labels: Some(
                        [(PART_OF, PART_OF_VALUE), (COMPONENT, COMPONENT_VALUE)]
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record: Record = (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_transitions,
        );
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record)
        {
            self.observed = Some((record, Instant::now()));
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        if !ours && let Some(other) = &holder {
            let valid_for = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.lease_duration, Duration::from_secs);
            let unchanged_for = self.observed.as_ref().map(|(_, at)| at.elapsed());
            if unchanged_for.is_some_and(|d| d < valid_for) {
                tracing::trace!(holder = %other, "lease held by another instance");
                return Ok(false);
            }
            tracing::info!(previous = %other, "lease expired, taking over");
        }
        let mut next = spec;
        if !ours {
            next.holder_identity = Some(self.config.identity.clone());
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
        }
        next.renew_time = Some(now);
        next.lease_duration_seconds = Some(duration);
        lease.spec = Some(next);
        let name = lease.name_any();
        conflict_is_false(
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the Lease up so a follower takes over at once.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease_name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.config.lease_name, "lease released");
        Ok(())
    }
}

fn set(leading: &watch::Sender<bool>, value: bool, identity: &str) {
    leading.send_if_modified(|current| {
        if *current == value {
            return false;
        }
        *current = value;
        if value {
            tracing::info!(%identity, "became the leader");
        } else {
            tracing::info!(%identity, "stopped leading");
        }
        true
    });
}

/// A write that lost a race (409) means someone else holds the Lease.
fn conflict_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
