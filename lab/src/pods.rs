//! The user-facing pod commands: `pod run`, `pod delete`, `exec` and
//! `status`. They talk to the clusters' APIs like any client; the cluster
//! daemons' kubelets do the rest.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::names::PodRef;
use crate::podinit::PodInit;
use crate::state::{LabDir, LabState};

/// What `mc-lab pod run` creates.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Where and what.
    pub pod: PodRef,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Node name; the one with fewest pods when absent.
    pub node: Option<String>,
    /// Run in the node's network namespace.
    pub host_network: bool,
    /// The pod's ServiceAccount (created when missing).
    pub service_account: String,
    /// Port of a tcpSocket readiness probe.
    pub ready_port: Option<u16>,
    /// The command.
    pub command: Vec<String>,
    /// How long to wait for Running (and Ready).
    pub timeout: Duration,
}

/// Creates the pod, waits until it runs (and is ready) and returns its IP.
pub async fn run(lab: &str, req: &RunRequest) -> Result<String> {
    let dir = LabDir::new(lab);
    let state = LabState::load(&dir)?;
    let nodes = state.nodes(&req.pod.cluster)?;
    let client = crate::kubeconfig::client(&dir, &req.pod.cluster).await?;
    ensure_namespace(&client, &req.pod.namespace).await?;
    ensure_service_account(&client, &req.pod.namespace, &req.service_account).await?;
    let node = match &req.node {
        Some(node) => {
            if !nodes.iter().any(|n| &n.name() == node) {
                bail!("cluster {} has no node {node}", req.pod.cluster);
            }
            node.clone()
        }
        None => least_loaded(&client, nodes.iter().map(|n| n.name()).collect()).await?,
    };
    let mut container = json!({
        "name": "main",
        "image": "mc-lab/process",
        "command": req.command,
    });
    if let Some(port) = req.ready_port {
        container["ports"] = json!([{"containerPort": port, "protocol": "TCP"}]);
        container["readinessProbe"] =
            json!({"tcpSocket": {"port": port}, "periodSeconds": 1, "failureThreshold": 1});
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": req.pod.name, "namespace": req.pod.namespace, "labels": req.labels},
        "spec": {
            "nodeName": node,
            "hostNetwork": req.host_network,
            "serviceAccountName": req.service_account,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        },
    }))
    .context("building the Pod")?;
    let api = Api::<Pod>::namespaced(client.clone(), &req.pod.namespace);
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {}/{}", req.pod.namespace, req.pod.name))?;
    wait_running(&api, &req.pod, &dir, req.timeout).await
}

/// Waits until the pod is Running and Ready; returns its IP.
async fn wait_running(
    api: &Api<Pod>,
    pod: &PodRef,
    dir: &LabDir,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not created");
    while Instant::now() < deadline {
        if let Some(current) = api.get_opt(&pod.name).await.context("reading the pod")? {
            let status = current.status.unwrap_or_default();
            let phase = status.phase.unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            match (phase.as_str(), status.pod_ip) {
                ("Running", Some(ip)) if ready => return Ok(ip),
                ("Failed" | "Succeeded", _) => {
                    bail!(
                        "pod {}/{} ended ({phase}); its log: {}",
                        pod.namespace,
                        pod.name,
                        dir.pod_log(&pod.cluster, &pod.namespace, &pod.name)
                            .display()
                    )
                }
                _ => {
                    let waiting = status
                        .container_statuses
                        .iter()
                        .flatten()
                        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                        .map(|w| {
                            format!(
                                " ({}: {})",
                                w.reason.clone().unwrap_or_default(),
                                w.message.clone().unwrap_or_default()
                            )
                        })
                        .collect::<String>();
                    last = format!("phase {phase:?}, ready {ready}{waiting}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "pod {}/{} in cluster {} is not ready after {timeout:?}: {last}",
        pod.namespace,
        pod.name,
        pod.cluster
    )
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    ensure(&Api::<Namespace>::all(client.clone()), name, "namespace").await
}

async fn ensure_service_account(client: &kube::Client, namespace: &str, name: &str) -> Result<()> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    ensure(&api, name, "service account").await
}

/// Creates the object `name` (nothing but its name) unless it exists.
async fn ensure<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    if api
        .get_opt(name)
        .await
        .with_context(|| format!("reading {what} {name}"))?
        .is_some()
    {
        return Ok(());
    }
    let object: K = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating {what} {name}")),
    }
}

/// The node (of `nodes`) running the fewest pods.
async fn least_loaded(client: &kube::Client, nodes: Vec<String>) -> Result<String> {
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    let mut load: BTreeMap<&str, usize> = nodes.iter().map(|n| (n.as_str(), 0)).collect();
    for pod in &pods.items {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
            && let Some(count) = load.get_mut(node)
        {
            *count += 1;
        }
    }
    // Ties go to the lowest node index.
    nodes
        .iter()
        .min_by_key(|n| {
            (
                load.get(n.as_str()).copied().unwrap_or(0),
                n.len(),
                n.to_string(),
            )
        })
        .cloned()
        .context("the cluster has no nodes")
}

/// Deletes a pod and waits until the kubelet removed it.
pub async fn delete(lab: &str, pod: &PodRef, timeout: Duration) -> Result<()> {
    let dir = LabDir::new(lab);
    let client = crate::kubeconfig::client(&dir, &pod.cluster).await?;
    let state = LabState::load(&dir)?;
    let cluster = state.cluster(&pod.cluster)?;
    let api = Api::<Pod>::namespaced(client, &pod.namespace);
    let uid = api
        .get(&pod.name)
        .await
        .with_context(|| format!("reading pod {}/{}", pod.namespace, pod.name))?
        .metadata
        .uid
        .unwrap_or_default();
    api.delete(&pod.name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting pod {}/{}", pod.namespace, pod.name))?;
    // Gone means: the object is deleted and the kubelet removed the sandbox.
    let netns = std::path::Path::new("/run/netns").join(crate::podnet::pod_netns(&cluster, &uid));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let object = api.get_opt(&pod.name).await.context("reading the pod")?;
        if object.is_none_or(|p| p.metadata.uid.as_deref() != Some(uid.as_str())) && !netns.exists()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "pod {}/{} still exists after {timeout:?}",
        pod.namespace,
        pod.name
    )
}

/// How to enter pod `pod`: its netns, resolv.conf and ServiceAccount files.
pub async fn pod_init_for(lab: &str, pod: &PodRef) -> Result<PodInit> {
    let dir = LabDir::new(lab);
    let state = LabState::load(&dir)?;
    let cluster = state.cluster(&pod.cluster)?;
    let client = crate::kubeconfig::client(&dir, &pod.cluster).await?;
    let object = Api::<Pod>::namespaced(client, &pod.namespace)
        .get(&pod.name)
        .await
        .with_context(|| {
            format!(
                "reading pod {}/{} in cluster {}",
                pod.namespace, pod.name, pod.cluster
            )
        })?;
    let uid = object.metadata.uid.clone().context("pod has no uid")?;
    let spec = object.spec.as_ref().context("pod has no spec")?;
    let pod_dir = dir.pod_dir(&pod.cluster, &uid);
    let (netns, resolv) = if spec.host_network == Some(true) {
        let node_name = spec.node_name.clone().context("pod is not on a node")?;
        let node = state
            .nodes(&pod.cluster)?
            .into_iter()
            .find(|n| n.name() == node_name)
            .with_context(|| format!("node {node_name} is not in the lab"))?;
        (node.netns(), pod_dir.join("resolv.conf"))
    } else {
        let netns = crate::podnet::pod_netns(&cluster, &uid);
        let resolv = crate::podnet::resolv_conf_path(&netns);
        (netns, resolv)
    };
    if !std::path::Path::new("/run/netns").join(&netns).exists() {
        bail!(
            "pod {}/{} has no sandbox (netns {netns}) yet",
            pod.namespace,
            pod.name
        );
    }
    let mounts = crate::volumes::mounts(&object, &pod_dir).unwrap_or_default();
    Ok(PodInit {
        netns,
        resolv_conf: resolv.exists().then_some(resolv),
        mounts,
    })
}

/// Prints the lab: clusters, API URLs, daemons, nodes and pods.
pub async fn status(lab: &str) -> Result<()> {
    let dir = LabDir::new(lab);
    let state = LabState::load(&dir)?;
    println!(
        "lab {} (WAN {}), kubeconfig {}",
        state.name,
        state.plan().wan(),
        dir.kubeconfig().display()
    );
    for (cluster, plan) in state.clusters.iter().zip(state.cluster_plans()) {
        let daemon = match crate::lifecycle::check_daemon(&dir, cluster, lab) {
            Ok(()) => format!(
                "daemon pid {}",
                cluster.daemon_pid.map_or("-".into(), |p| p.to_string())
            ),
            Err(_) => "daemon NOT RUNNING".to_string(),
        };
        println!(
            "\ncluster {}: API {} ({daemon}), pods {}, services {}",
            plan.name,
            plan.api_url(),
            plan.pod_cidr(),
            plan.service_cidr()
        );
        let client = match crate::kubeconfig::client(&dir, &plan.name).await {
            Ok(client) => client,
            Err(error) => {
                println!("  cannot reach the API: {error:#}");
                continue;
            }
        };
        match Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(nodes) => {
                for node in nodes.items {
                    let ip = node
                        .status
                        .as_ref()
                        .and_then(|s| s.addresses.as_ref())
                        .and_then(|a| a.first())
                        .map(|a| a.address.clone())
                        .unwrap_or_default();
                    let cidr = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.pod_cidr.clone())
                        .unwrap_or_default();
                    let ready = if crate::nodes::is_ready(&node) {
                        "Ready"
                    } else {
                        "NotReady"
                    };
                    println!(
                        "  node {:<20} {:<15} {:<15} {ready}",
                        node.metadata.name.unwrap_or_default(),
                        ip,
                        cidr
                    );
                }
            }
            Err(error) => println!("  cannot list nodes: {error}"),
        }
        match Api::<Pod>::all(client).list(&ListParams::default()).await {
            Ok(pods) => {
                for pod in pods.items {
                    let status = pod.status.unwrap_or_default();
                    let ready = status
                        .conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    println!(
                        "  pod  {:<30} {:<18} {:<15} {:<9} {}",
                        format!(
                            "{}/{}",
                            pod.metadata.namespace.unwrap_or_default(),
                            pod.metadata.name.unwrap_or_default()
                        ),
                        pod.spec.and_then(|s| s.node_name).unwrap_or_default(),
                        status.pod_ip.unwrap_or_default(),
                        status.phase.unwrap_or_default(),
                        if ready { "ready" } else { "not ready" }
                    );
                }
            }
            Err(error) => println!("  cannot list pods: {error}"),
        }
    }
    Ok(())
}
