//! The lab's kubelet, one per cluster for all its nodes: watches Pods bound
//! to the cluster's nodes and runs one worker per pod (see
//! [`crate::pod_worker`]); a pod whose deletion starts (deletionTimestamp
//! set) or whose object disappears is stopped and cleaned up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{mpsc, watch};

use crate::plan::NodePlan;
use crate::pod_worker::{self, Shared};

struct Worker {
    stop: watch::Sender<Option<Duration>>,
}

/// Runs the kubelet until the watch fails for good.
pub async fn run(shared: Arc<Shared>, nodes: Vec<NodePlan>) -> Result<()> {
    let api = Api::<Pod>::all(shared.client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut listed: Option<HashSet<String>> = None;
    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => { workers.remove(&uid); }
            event = events.next() => {
                let Some(event) = event else { break };
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, "pod watch error; retrying");
                        continue;
                    }
                };
                match event {
                    Event::Init => listed = Some(HashSet::new()),
                    Event::InitApply(pod) => {
                        if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                            seen.insert(uid);
                        }
                        apply(&shared, &nodes, &mut workers, &done_tx, pod);
                    }
                    Event::InitDone => {
                        // Pods deleted while the watch was down.
                        if let Some(seen) = listed.take() {
                            for (uid, worker) in &workers {
                                if !seen.contains(uid) {
                                    let _ = worker.stop.send(Some(pod_worker::MIN_GRACE));
                                }
                            }
                        }
                    }
                    Event::Apply(pod) => apply(&shared, &nodes, &mut workers, &done_tx, pod),
                    Event::Delete(pod) => {
                        if let Some(worker) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                            let _ = worker.stop.send(Some(pod_worker::grace(&pod)));
                        }
                    }
                }
            }
        }
    }
    anyhow::bail!("the pod watch ended")
}

fn apply(
    shared: &Arc<Shared>,
    nodes: &[NodePlan],
    workers: &mut HashMap<String, Worker>,
    done: &mpsc::UnboundedSender<String>,
    pod: Pod,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return;
    };
    let Some(node) = nodes.iter().find(|n| n.name() == node_name).cloned() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if let Some(worker) = workers.get(&uid) {
        if deleting {
            // The deletion's grace period; a shorter one (a second delete)
            // applies to a stop not yet under way.
            let grace = pod_worker::grace(&pod);
            worker.stop.send_if_modified(|current| match current {
                Some(old) if *old <= grace => false,
                _ => {
                    *current = Some(grace);
                    true
                }
            });
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if !deleting && (phase == "Succeeded" || phase == "Failed") {
        // Finished before this kubelet started; nothing to run.
        return;
    }
    let (stop_tx, stop_rx) = watch::channel(deleting.then(|| pod_worker::grace(&pod)));
    let shared = shared.clone();
    let done = done.clone();
    let key = uid.clone();
    tokio::spawn(async move {
        pod_worker::run(shared, pod, node, stop_rx).await;
        let _ = done.send(key);
    });
    workers.insert(uid, Worker { stop: stop_tx });
}
