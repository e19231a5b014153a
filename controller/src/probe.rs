//! Gateway probes: every period, an HTTP/1.1 GET of the probe path on each
//! gateway address's admin port; the gateway is alive while any address
//! answers 2xx, and dead after `failureThreshold` failed rounds in a row.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use mc_api::link::{GatewayStatus, ProbeSpec};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::status::{GATEWAY_ALIVE, StatusHub, Truth};

/// What is probed for one Link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// The remote cluster (metrics label).
    pub target_cluster: String,
    /// Gateway addresses (IPs or DNS names).
    pub addresses: Vec<String>,
    /// Port, path, period, timeout and threshold.
    pub spec: ProbeSpec,
}

/// Why one probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting failed.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad path).
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The gateway answered, but not ready.
    #[error("answered {0}")]
    Status(hyper::StatusCode),
}

/// One probe: `GET http://<host>:<port><path>`; the latency when it answers 2xx.
pub async fn probe_once(
    host: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let started = Instant::now();
    tokio::time::timeout(timeout, exchange(host, port, path))
        .await
        .map_err(|_| ProbeError::Timeout(timeout))??;
    Ok(started.elapsed())
}

async fn exchange(host: &str, port: u16, path: &str) -> Result<(), ProbeError> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(ProbeError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(connection);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = Request::get(path)
        .header(HOST, authority)
        .header(USER_AGENT, "mc-controller-probe")
        .body(Empty::<Bytes>::new())?;
    let result = sender.send_request(request).await;
    driver.abort();
    let response = result?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status(response.status()))
    }
}

/// Liveness from consecutive probe rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    alive: Option<bool>,
    failures: u32,
    threshold: u32,
}

impl Liveness {
    /// Unknown until the first success or `threshold` failures.
    pub fn new(threshold: u32) -> Liveness {
        Liveness {
            alive: None,
            failures: 0,
            threshold: threshold.max(1),
        }
    }

    /// Records one round; returns the liveness after it (`None`: unknown).
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if success {
            self.failures = 0;
            self.alive = Some(true);
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.threshold {
                self.alive = Some(false);
            }
        }
        self.alive
    }
}

/// Probes `target` until the task is dropped, reporting into `hub` and `metrics`.
pub async fn run(target: ProbeTarget, hub: StatusHub, metrics: Metrics) {
    let period = Duration::from_secs(u64::from(target.spec.period_seconds.max(1)));
    let timeout = Duration::from_secs(u64::from(target.spec.timeout_seconds.max(1)));
    let mut liveness = Liveness::new(target.spec.failure_threshold);
    let mut last_success: Option<(Duration, String)> = None;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let round = futures::future::join_all(target.addresses.iter().map(|address| async {
            let result = probe_once(address, target.spec.port, &target.spec.path, timeout).await;
            (address.clone(), result)
        }))
        .await;
        let best = round
            .iter()
            .filter_map(|(address, r)| r.as_ref().ok().map(|l| (*l, address.clone())))
            .min();
        let failure = round
            .iter()
            .find_map(|(address, r)| r.as_ref().err().map(|e| format!("{address}: {e}")))
            .unwrap_or_else(|| "the Link has no gateway addresses".to_string());
        let was = liveness.alive;
        let alive = liveness.record(best.is_some());
        if alive != was {
            tracing::info!(cluster = %target.target_cluster, ?alive, "gateway liveness changed");
        }
        if let Some(success) = &best {
            last_success = Some(success.clone());
        }
        metrics.probe(
            &target.target_cluster,
            alive == Some(true),
            best.as_ref().map(|(latency, _)| *latency),
        );
        let gateway = GatewayStatus {
            alive: alive == Some(true),
            latency_ms: last_success
                .as_ref()
                .map(|(l, _)| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
            address: best
                .as_ref()
                .map(|(_, a)| a.clone())
                .or_else(|| target.addresses.first().cloned()),
            last_probe_time: Some(Timestamp::now().to_string()),
        };
        let (truth, reason, message) = match (alive, &best) {
            (Some(true), Some((latency, address))) => (
                Truth::True,
                "ProbeSucceeded",
                format!("{address} answered in {} ms", latency.as_millis()),
            ),
            (Some(true), None) => (
                Truth::True,
                "ProbeFailing",
                format!("last probe failed ({failure}), below the failure threshold"),
            ),
            (Some(false), _) => (Truth::False, "ProbeFailed", failure),
            (None, _) => (Truth::Unknown, "Probing", failure),
        };
        hub.update(|status| {
            let changed = status.gateway.as_ref() != Some(&gateway);
            status.gateway = Some(gateway);
            let cond = crate::status::set_condition(
                &mut status.conditions,
                GATEWAY_ALIVE,
                truth,
                reason,
                &stable(&message),
            );
            changed || cond
        });
    }
}

/// A condition message without the latency digits, so a steady state does
/// not rewrite the status on every probe.
fn stable(message: &str) -> String {
    match message.split_once(" answered in ") {
        Some((address, _)) => format!("{address} answers"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_needs_threshold_failures_in_a_row() {
        let mut l = Liveness::new(3);
        assert_eq!(l.record(false), None);
        assert_eq!(l.record(true), Some(true));
        assert_eq!(l.record(false), Some(true));
        assert_eq!(l.record(false), Some(true));
        assert_eq!(l.record(true), Some(true));
        assert_eq!(l.record(false), Some(true));
        assert_eq!(l.record(false), Some(true));
        assert_eq!(l.record(false), Some(false));
        assert_eq!(l.record(true), Some(true));
    }

    #[tokio::test]
    async fn a_closed_port_fails_fast_and_a_silent_one_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        assert!(matches!(
            probe_once("127.0.0.1", port, "/ready", Duration::from_secs(1)).await,
            Err(ProbeError::Connect(_))
        ));
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        assert!(matches!(
            probe_once("127.0.0.1", port, "/ready", Duration::from_millis(200)).await,
            Err(ProbeError::Timeout(_))
        ));
    }

    #[test]
    fn steady_messages_do_not_carry_latency() {
        assert_eq!(stable("10.0.0.1 answered in 3 ms"), "10.0.0.1 answers");
        assert_eq!(stable("10.0.0.1: refused"), "10.0.0.1: refused");
    }
}
