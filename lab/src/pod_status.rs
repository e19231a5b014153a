//! The status a kubelet reports for a pod, as JSON merge patches of
//! `pods/status`.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// The container's state at the moment of a report.
#[derive(Clone, Debug)]
pub enum ContainerState {
    /// Running since `started_at`, with process id `pid`.
    Running { started_at: String, pid: u32 },
    /// Exited with `exit_code` (signal deaths map to 128 + signal);
    /// `reason` defaults to Completed or Error.
    Terminated {
        exit_code: i32,
        started_at: String,
        finished_at: String,
        reason: Option<String>,
        message: Option<String>,
    },
    /// Waiting to be (re)started, with the reason.
    Waiting { reason: String, message: String },
}

/// Everything one status report says.
#[derive(Clone, Debug)]
pub struct Report {
    /// Pod phase: Pending, Running, Succeeded, Failed.
    pub phase: &'static str,
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
    /// The node's IP.
    pub host_ip: Ipv4Addr,
    /// When the kubelet took the pod.
    pub start_time: String,
    /// Container name.
    pub container: String,
    /// Container image (informational).
    pub image: String,
    /// Whether the container is ready.
    pub ready: bool,
    /// Restart count.
    pub restarts: u32,
    /// The container's state.
    pub state: ContainerState,
}

/// Now, RFC 3339 with seconds, as the API writes times.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Report {
    /// The merge patch for `pods/status`.
    pub fn patch(&self) -> Value {
        let now = now();
        let flag = |b: bool| if b { "True" } else { "False" };
        let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        let (state, container_id) = match &self.state {
            ContainerState::Running { started_at, pid } => (
                json!({"running": {"startedAt": started_at}}),
                Some(format!("mc-lab://{pid}")),
            ),
            ContainerState::Terminated {
                exit_code,
                started_at,
                finished_at,
                reason,
                message,
            } => {
                let default = if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                let mut terminated = json!({
                    "exitCode": exit_code,
                    "reason": reason.as_deref().unwrap_or(default),
                    "startedAt": started_at, "finishedAt": finished_at,
                });
                if let Some(message) = message {
                    terminated["message"] = json!(message);
                }
                (json!({ "terminated": terminated }), None)
            }
            ContainerState::Waiting { reason, message } => (
                json!({"waiting": {"reason": reason, "message": message}}),
                None,
            ),
        };
        let mut container = json!({
            "name": self.container,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": matches!(self.state, ContainerState::Running { .. }),
            "restartCount": self.restarts,
            "state": state,
        });
        if let Some(id) = container_id {
            container["containerID"] = json!(id);
        }
        json!({"status": {
            "phase": self.phase,
            "podIP": self.pod_ip.to_string(),
            "podIPs": [{"ip": self.pod_ip.to_string()}],
            "hostIP": self.host_ip.to_string(),
            "hostIPs": [{"ip": self.host_ip.to_string()}],
            "startTime": self.start_time,
            "conditions": [
                condition("PodReadyToStartContainers", "True"),
                condition("Initialized", "True"),
                condition("Ready", flag(self.ready)),
                condition("ContainersReady", flag(self.ready)),
                condition("PodScheduled", "True"),
            ],
            "containerStatuses": [container],
        }})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_the_container() {
        let report = Report {
            phase: "Running",
            pod_ip: Ipv4Addr::new(10, 10, 1, 2),
            host_ip: Ipv4Addr::new(198, 18, 0, 10),
            start_time: now(),
            container: "main".into(),
            image: "x".into(),
            ready: false,
            restarts: 0,
            state: ContainerState::Running {
                started_at: now(),
                pid: 42,
            },
        };
        let patch = report.patch();
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(patch["status"]["podIP"], "10.10.1.2");
        assert_eq!(
            patch["status"]["containerStatuses"][0]["containerID"],
            "mc-lab://42"
        );
    }
}
