//! A Link's status: the conditions the loops report, one shared copy per
//! Link ([`StatusHub`]), and the writer that merge-patches `links/status`
//! only when the content changes.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use mc_api::Link;
use mc_api::link::LinkStatus;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

/// The remote kubeconfig authenticates (and is allowed to list Services).
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
/// The remote API answers.
pub const REMOTE_API_REACHABLE: &str = "RemoteAPIReachable";
/// At least one remote gateway answers its readiness probe.
pub const GATEWAY_ALIVE: &str = "GatewayAlive";

/// Status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl Truth {
    fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Truth {
    fn from(value: bool) -> Self {
        if value { Truth::True } else { Truth::False }
    }
}

/// Sets condition `type_` in `conditions`; the transition time changes only
/// when the status does. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Truth,
    reason: &str,
    message: &str,
) -> bool {
    let status = status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status && c.reason == reason && c.message == message => false,
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(Timestamp::now());
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            true
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: Time(Timestamp::now()),
                observed_generation: None,
            });
            conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            true
        }
    }
}

/// The status of one Link as its loops see it. Clones share it.
#[derive(Debug, Clone)]
pub struct StatusHub {
    tx: watch::Sender<LinkStatus>,
}

impl StatusHub {
    /// Starts from `initial` (the status found on the Link, so restarts keep
    /// transition times).
    pub fn new(initial: LinkStatus) -> StatusHub {
        StatusHub {
            tx: watch::Sender::new(initial),
        }
    }

    /// Changes the status; `change` returns whether it changed anything,
    /// and so does this.
    pub fn update(&self, change: impl FnOnce(&mut LinkStatus) -> bool) -> bool {
        self.tx.send_if_modified(change)
    }

    /// Sets one condition; returns whether it changed.
    pub fn condition(&self, type_: &str, status: Truth, reason: &str, message: &str) -> bool {
        self.update(|s| set_condition(&mut s.conditions, type_, status, reason, message))
    }

    /// A copy of the current status.
    pub fn current(&self) -> LinkStatus {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<LinkStatus> {
        self.tx.subscribe()
    }
}

/// The status without what changes on every probe (latency, probe time,
/// address): a difference here is written at once, anything else at most
/// once per refresh interval.
fn significant(status: &LinkStatus) -> LinkStatus {
    let mut s = status.clone();
    if let Some(g) = s.gateway.as_mut() {
        g.latency_ms = None;
        g.last_probe_time = None;
        g.address = None;
    }
    s
}

/// The merge patch that makes the stored status equal `status`: absent
/// optional fields are sent as `null` so stale values are removed.
pub fn patch_body(status: &LinkStatus) -> serde_json::Value {
    let gateway = status.gateway.as_ref().map(|g| {
        json!({
            "alive": g.alive,
            "latencyMs": g.latency_ms,
            "address": g.address,
            "lastProbeTime": g.last_probe_time,
        })
    });
    json!({
        "status": {
            "conditions": status.conditions,
            "gateway": gateway,
            "mirroredServices": status.mirrored_services,
            "mirrors": status.mirrors,
            "createdNamespaces": status.created_namespaces,
            "observedGeneration": status.observed_generation,
        }
    })
}

/// Writes the hub's status to `links/<name>/status` whenever it changes:
/// significant changes at once, probe-only changes at most once per
/// `refresh`. `written` is what the Link already carries. Runs until the
/// hub is dropped.
pub async fn write_status(
    api: Api<Link>,
    name: String,
    mut rx: watch::Receiver<LinkStatus>,
    mut written: LinkStatus,
    refresh: Duration,
) {
    let mut last_write = Instant::now();
    loop {
        let current = rx.borrow_and_update().clone();
        let mut wake = None;
        if current != written {
            let due = last_write + refresh;
            if significant(&current) != significant(&written) || Instant::now() >= due {
                let patch = patch_body(&current);
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        written = current;
                        last_write = Instant::now();
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        tracing::debug!(link = %name, "link gone, status not written");
                        written = current;
                    }
                    Err(error) => {
                        tracing::warn!(link = %name, %error, "writing link status failed, retrying");
                        wake = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            } else {
                wake = Some(due);
            }
        }
        match wake {
            Some(at) => {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mc_api::link::{GatewayStatus, MirrorStatus};

    #[test]
    fn transition_time_moves_only_when_the_status_does() {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            REMOTE_API_REACHABLE,
            Truth::True,
            "Listed",
            ""
        ));
        let first = conditions[0].last_transition_time.clone();
        assert!(!set_condition(
            &mut conditions,
            REMOTE_API_REACHABLE,
            Truth::True,
            "Listed",
            ""
        ));
        assert!(set_condition(
            &mut conditions,
            REMOTE_API_REACHABLE,
            Truth::True,
            "Watching",
            "x"
        ));
        assert_eq!(conditions[0].last_transition_time, first);
        std::thread::sleep(Duration::from_millis(2));
        assert!(set_condition(
            &mut conditions,
            REMOTE_API_REACHABLE,
            Truth::False,
            "Unreachable",
            "down"
        ));
        assert_ne!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].status, "False");
        set_condition(
            &mut conditions,
            CREDENTIALS_VALID,
            Truth::Unknown,
            "Pending",
            "",
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].type_, CREDENTIALS_VALID, "sorted by type");
    }

    #[test]
    fn probe_details_are_not_significant_but_liveness_is() {
        let mut a = LinkStatus {
            gateway: Some(GatewayStatus {
                alive: true,
                latency_ms: Some(3),
                address: Some("198.18.0.1".into()),
                last_probe_time: Some("t1".into()),
            }),
            ..LinkStatus::default()
        };
        let mut b = a.clone();
        b.gateway.as_mut().expect("gateway").latency_ms = Some(5);
        assert_eq!(significant(&a), significant(&b));
        b.gateway.as_mut().expect("gateway").alive = false;
        assert_ne!(significant(&a), significant(&b));
        a.mirrors.push(MirrorStatus {
            namespace: "shop".into(),
            service: "backend".into(),
            mirror: "backend-east".into(),
            state: "Mirrored".into(),
            message: String::new(),
        });
        assert_ne!(significant(&a), significant(&LinkStatus::default()));
    }

    #[test]
    fn the_patch_clears_what_is_absent() {
        let patch = patch_body(&LinkStatus {
            gateway: Some(GatewayStatus {
                alive: false,
                ..GatewayStatus::default()
            }),
            ..LinkStatus::default()
        });
        let status = &patch["status"];
        assert_eq!(status["gateway"]["latencyMs"], serde_json::Value::Null);
        assert!(
            status["gateway"]
                .as_object()
                .expect("object")
                .contains_key("latencyMs")
        );
        assert_eq!(status["mirrors"], json!([]));
        // Every field GatewayStatus and LinkStatus serialize is in the patch.
        let full = serde_json::to_value(GatewayStatus {
            alive: true,
            latency_ms: Some(1),
            address: Some("a".into()),
            last_probe_time: Some("t".into()),
        })
        .expect("serializes");
        for key in full.as_object().expect("object").keys() {
            assert!(
                status["gateway"]
                    .as_object()
                    .expect("object")
                    .contains_key(key),
                "{key}"
            );
        }
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            GATEWAY_ALIVE,
            Truth::True,
            "ProbeSucceeded",
            "",
        );
        let full = serde_json::to_value(LinkStatus {
            conditions,
            gateway: Some(GatewayStatus::default()),
            mirrored_services: 1,
            mirrors: vec![],
            created_namespaces: vec!["x".into()],
            observed_generation: Some(1),
        })
        .expect("serializes");
        for key in full.as_object().expect("object").keys() {
            assert!(
                status.as_object().expect("object").contains_key(key),
                "{key}"
            );
        }
    }
}
