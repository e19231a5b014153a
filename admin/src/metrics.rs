//! The metric families both proxies share, and a per-connection recorder
//! that keeps recording cheap: label lookups happen once when a connection
//! opens, bytes are recorded once when it ends.
//!
//! Families (all prefixed `mc_`; the cluster label is `dst_cluster` on the
//! agent and `src_cluster` on the gateway):
//!
//! | family | type | extra labels |
//! |---|---|---|
//! | `mc_connections_opened_total` | counter | |
//! | `mc_connections_closed_total` | counter | |
//! | `mc_connections_failed_total` | counter | `reason` |
//! | `mc_connections_active` | gauge | |
//! | `mc_bytes_in_total` | counter | (caller to target) |
//! | `mc_bytes_out_total` | counter | (target to caller) |
//! | `mc_connect_latency_seconds` | histogram | |

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which proxy records: decides the name of the cluster label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The node agent: connections go to a remote cluster (`dst_cluster`).
    Agent,
    /// The gateway: connections come from a remote cluster (`src_cluster`).
    Gateway,
}

impl Side {
    /// The cluster label's name.
    pub fn cluster_label(self) -> &'static str {
        match self {
            Side::Agent => "dst_cluster",
            Side::Gateway => "src_cluster",
        }
    }
}

/// Labels of every connection series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnLabels {
    side: Side,
    cluster: Arc<str>,
    namespace: Arc<str>,
    service: Arc<str>,
}

impl ConnLabels {
    /// Labels for a connection between this side and `cluster`, for the
    /// target Service `namespace/service` (in the gateway's cluster).
    pub fn new(side: Side, cluster: &str, namespace: &str, service: &str) -> ConnLabels {
        ConnLabels {
            side,
            cluster: cluster.into(),
            namespace: namespace.into(),
            service: service.into(),
        }
    }
}

impl EncodeLabelSet for ConnLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        (self.side.cluster_label(), &*self.cluster).encode(encoder.encode_label())?;
        ("target_namespace", &*self.namespace).encode(encoder.encode_label())?;
        ("target_service", &*self.service).encode(encoder.encode_label())
    }
}

/// Labels of the failure counter: the connection's labels and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailLabels {
    conn: ConnLabels,
    reason: &'static str,
}

impl EncodeLabelSet for FailLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        self.conn.encode(encoder)?;
        ("reason", self.reason).encode(encoder.encode_label())
    }
}

/// Builds connect-latency histograms: 100 µs to about 13 s.
#[derive(Debug, Clone, Copy)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0001, 2.0, 18))
    }
}

/// Reason recorded when a [`ConnectionRecord`] is dropped unfinished.
pub const REASON_ABANDONED: &str = "abandoned";

/// The connection metric families of one proxy.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    side: Side,
    opened: Family<ConnLabels, Counter>,
    closed: Family<ConnLabels, Counter>,
    failed: Family<FailLabels, Counter>,
    active: Family<ConnLabels, Gauge>,
    bytes_in: Family<ConnLabels, Counter>,
    bytes_out: Family<ConnLabels, Counter>,
    connect_latency: Family<ConnLabels, Histogram, LatencyBuckets>,
}

impl ProxyMetrics {
    /// Creates the families and registers them in `registry` with the `mc_`
    /// prefix.
    pub fn register(side: Side, registry: &mut Registry) -> ProxyMetrics {
        let metrics = ProxyMetrics {
            side,
            opened: Family::default(),
            closed: Family::default(),
            failed: Family::default(),
            active: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            connect_latency: Family::new_with_constructor(LatencyBuckets),
        };
        let mc = registry.sub_registry_with_prefix("mc");
        mc.register(
            "connections_opened",
            "Proxied connections accepted",
            metrics.opened.clone(),
        );
        mc.register(
            "connections_closed",
            "Proxied connections that ended normally",
            metrics.closed.clone(),
        );
        mc.register(
            "connections_failed",
            "Proxied connections that were refused or failed, by reason",
            metrics.failed.clone(),
        );
        mc.register(
            "connections_active",
            "Proxied connections open now",
            metrics.active.clone(),
        );
        mc.register(
            "bytes_in",
            "Bytes copied from the caller towards the target",
            metrics.bytes_in.clone(),
        );
        mc.register(
            "bytes_out",
            "Bytes copied from the target back to the caller",
            metrics.bytes_out.clone(),
        );
        mc.register(
            "connect_latency_seconds",
            "Time from accepting a connection to the target being connected",
            metrics.connect_latency.clone(),
        );
        metrics
    }

    /// Which side these metrics describe.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Records a new connection (opened, active) and returns the recorder
    /// for the rest of its life. `cluster` is the remote cluster.
    pub fn open(&self, cluster: &str, namespace: &str, service: &str) -> ConnectionRecord {
        let labels = ConnLabels::new(self.side, cluster, namespace, service);
        self.opened.get_or_create(&labels).inc();
        let active = self.active.get_or_create_owned(&labels);
        active.inc();
        ConnectionRecord {
            metrics: self.clone(),
            labels,
            active,
            finished: false,
        }
    }
}

/// One connection's metrics. Finish it with [`ConnectionRecord::close`] or
/// [`ConnectionRecord::fail`]; dropping it unfinished counts as a failure
/// with reason [`REASON_ABANDONED`]. The active gauge drops either way.
#[derive(Debug)]
pub struct ConnectionRecord {
    metrics: ProxyMetrics,
    labels: ConnLabels,
    active: Gauge,
    finished: bool,
}

impl ConnectionRecord {
    /// The target is connected, `latency` after the connection was accepted.
    pub fn connected(&self, latency: Duration) {
        self.metrics
            .connect_latency
            .get_or_create(&self.labels)
            .observe(latency.as_secs_f64());
    }

    /// The connection ended normally after moving these bytes.
    pub fn close(mut self, bytes_in: u64, bytes_out: u64) {
        self.record_bytes(bytes_in, bytes_out);
        self.metrics.closed.get_or_create(&self.labels).inc();
        self.finished = true;
    }

    /// The connection was refused or failed (`reason`, a short snake_case
    /// constant such as `mc_tunnel::Reason::as_str()`), after moving these
    /// bytes.
    pub fn fail(mut self, reason: &'static str, bytes_in: u64, bytes_out: u64) {
        self.record_bytes(bytes_in, bytes_out);
        self.record_failure(reason);
        self.finished = true;
    }

    fn record_bytes(&self, bytes_in: u64, bytes_out: u64) {
        if bytes_in > 0 {
            self.metrics
                .bytes_in
                .get_or_create(&self.labels)
                .inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.metrics
                .bytes_out
                .get_or_create(&self.labels)
                .inc_by(bytes_out);
        }
    }

    fn record_failure(&self, reason: &'static str) {
        let labels = FailLabels {
            conn: self.labels.clone(),
            reason,
        };
        self.metrics.failed.get_or_create(&labels).inc();
    }
}

impl Drop for ConnectionRecord {
    fn drop(&mut self) {
        self.active.dec();
        if !self.finished {
            self.record_failure(REASON_ABANDONED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn a_connection_lifecycle_shows_in_every_family() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(Side::Agent, &mut registry);
        let record = metrics.open("east", "shop", "backend");
        record.connected(Duration::from_millis(3));
        record.close(100, 2000);
        metrics
            .open("east", "shop", "backend")
            .fail("no_endpoints", 5, 0);
        drop(metrics.open("east", "shop", "backend"));

        let text = render(&registry);
        let labels = r#"dst_cluster="east",target_namespace="shop",target_service="backend""#;
        for line in [
            format!("mc_connections_opened_total{{{labels}}} 3"),
            format!("mc_connections_closed_total{{{labels}}} 1"),
            format!(r#"mc_connections_failed_total{{{labels},reason="no_endpoints"}} 1"#),
            format!(r#"mc_connections_failed_total{{{labels},reason="abandoned"}} 1"#),
            format!("mc_connections_active{{{labels}}} 0"),
            format!("mc_bytes_in_total{{{labels}}} 105"),
            format!("mc_bytes_out_total{{{labels}}} 2000"),
            format!("mc_connect_latency_seconds_count{{{labels}}} 1"),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn gateway_series_are_labelled_by_source_cluster() {
        let mut registry = Registry::default();
        let metrics = ProxyMetrics::register(Side::Gateway, &mut registry);
        let record = metrics.open("west", "shop", "backend");
        let text = render(&registry);
        assert!(text.contains(r#"mc_connections_active{src_cluster="west",target_namespace="shop",target_service="backend"} 1"#), "{text}");
        record.close(0, 0);
    }
}
