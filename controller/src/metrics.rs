//! The controller's metrics, served on the admin port's `/metrics`.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `mc_gateway_alive` | gauge (0/1) | `target_cluster` |
//! | `mc_gateway_probe_latency_seconds` | histogram | `target_cluster` |
//! | `mc_remote_api_reachable` | gauge (0/1) | `target_cluster` |
//! | `mc_mirrored_services` | gauge | `target_cluster` |
//! | `mc_mirror_changes_total` | counter | `target_cluster`, `op` (create, update, delete) |
//! | `mc_mirror_conflicts` | gauge | `target_cluster` |
//! | `mc_controller_leader` | gauge (0/1) | |
//! | `mc_signer_requests_total` | counter | `decision` (signed, denied, failed), `reason` |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-Link series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClusterLabels {
    /// The remote cluster a Link points at.
    pub target_cluster: String,
}

/// Labels of mirror change counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ChangeLabels {
    /// The remote cluster a Link points at.
    pub target_cluster: String,
    /// `create`, `update` or `delete`.
    pub op: String,
}

/// Labels of the signer's decisions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SignerLabels {
    /// `signed`, `denied` or `failed`.
    pub decision: String,
    /// Why it was denied or failed (empty when signed).
    pub reason: String,
}

/// Probe latency buckets: 500 µs to about 16 s.
#[derive(Debug, Clone, Copy)]
pub struct ProbeBuckets;

impl MetricConstructor<Histogram> for ProbeBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 16))
    }
}

/// Every metric family of the controller. Clones share the series.
#[derive(Debug, Clone)]
pub struct Metrics {
    gateway_alive: Family<ClusterLabels, Gauge>,
    probe_latency: Family<ClusterLabels, Histogram, ProbeBuckets>,
    remote_reachable: Family<ClusterLabels, Gauge>,
    mirrored: Family<ClusterLabels, Gauge>,
    conflicts: Family<ClusterLabels, Gauge>,
    changes: Family<ChangeLabels, Counter>,
    leader: Gauge,
    signer: Family<SignerLabels, Counter>,
}

fn cluster(target: &str) -> ClusterLabels {
    ClusterLabels {
        target_cluster: target.to_string(),
    }
}

impl Metrics {
    /// Creates the families and registers them in `registry` with the `mc_` prefix.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            gateway_alive: Family::default(),
            probe_latency: Family::new_with_constructor(ProbeBuckets),
            remote_reachable: Family::default(),
            mirrored: Family::default(),
            conflicts: Family::default(),
            changes: Family::default(),
            leader: Gauge::default(),
            signer: Family::default(),
        };
        let mc = registry.sub_registry_with_prefix("mc");
        mc.register(
            "gateway_alive",
            "Whether a remote cluster's gateways answer their readiness probe",
            metrics.gateway_alive.clone(),
        );
        mc.register(
            "gateway_probe_latency_seconds",
            "Latency of successful gateway probes",
            metrics.probe_latency.clone(),
        );
        mc.register(
            "remote_api_reachable",
            "Whether a remote cluster's API answers the mirror loop",
            metrics.remote_reachable.clone(),
        );
        mc.register(
            "mirrored_services",
            "Remote Services mirrored in this cluster",
            metrics.mirrored.clone(),
        );
        mc.register(
            "mirror_conflicts",
            "Mirrors blocked by a Service mc does not own",
            metrics.conflicts.clone(),
        );
        mc.register(
            "mirror_changes",
            "Mirror Services created, updated or deleted",
            metrics.changes.clone(),
        );
        mc.register(
            "controller_leader",
            "Whether this controller instance holds the leader Lease",
            metrics.leader.clone(),
        );
        mc.register(
            "signer_requests",
            "Certificate signing requests decided by the signer",
            metrics.signer.clone(),
        );
        metrics
    }

    /// Counts one signer decision.
    pub fn signer_decision(&self, decision: &str, reason: &str) {
        self.signer
            .get_or_create(&SignerLabels {
                decision: decision.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records one probe round: alive or not, and the latency when it succeeded.
    pub fn probe(&self, target: &str, alive: bool, latency: Option<std::time::Duration>) {
        let labels = cluster(target);
        self.gateway_alive
            .get_or_create(&labels)
            .set(i64::from(alive));
        if let Some(latency) = latency {
            self.probe_latency
                .get_or_create(&labels)
                .observe(latency.as_secs_f64());
        }
    }

    /// Records whether the remote API answers.
    pub fn remote_reachable(&self, target: &str, reachable: bool) {
        self.remote_reachable
            .get_or_create(&cluster(target))
            .set(i64::from(reachable));
    }

    /// Records how many Services are mirrored and how many are in conflict.
    pub fn mirrors(&self, target: &str, mirrored: usize, conflicts: usize) {
        let labels = cluster(target);
        self.mirrored
            .get_or_create(&labels)
            .set(i64::try_from(mirrored).unwrap_or(i64::MAX));
        self.conflicts
            .get_or_create(&labels)
            .set(i64::try_from(conflicts).unwrap_or(i64::MAX));
    }

    /// Counts one mirror change (`create`, `update`, `delete`).
    pub fn change(&self, target: &str, op: &str) {
        self.changes
            .get_or_create(&ChangeLabels {
                target_cluster: target.to_string(),
                op: op.to_string(),
            })
            .inc();
    }

    /// Records whether this instance leads.
    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Whether this instance leads, as last recorded.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// Drops the per-Link gauges of `target` (the Link is gone). Counters
    /// and histograms stay: they only ever grow.
    pub fn forget(&self, target: &str) {
        let labels = cluster(target);
        self.gateway_alive.remove(&labels);
        self.remote_reachable.remove(&labels);
        self.mirrored.remove(&labels);
        self.conflicts.remove(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_families_carry_the_agreed_names_and_labels() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.probe("east", true, Some(std::time::Duration::from_millis(3)));
        metrics.mirrors("east", 2, 1);
        metrics.change("east", "create");
        metrics.leader(true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "mc_gateway_alive{target_cluster=\"east\"} 1",
            "mc_gateway_probe_latency_seconds_count{target_cluster=\"east\"} 1",
            "mc_mirrored_services{target_cluster=\"east\"} 2",
            "mc_mirror_conflicts{target_cluster=\"east\"} 1",
            "mc_mirror_changes_total{target_cluster=\"east\",op=\"create\"} 1",
            "mc_controller_leader 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        metrics.forget("east");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(!text.contains("mc_gateway_alive{"), "{text}");
    }
}
