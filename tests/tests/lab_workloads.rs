//! Lab tests of the workload path a real cluster provides and mc relies
//! on: Deployments and DaemonSets become pods, Secret volumes reach them,
//! pod deletion is graceful. Driven through the real `mc-lab` binary and
//! the cluster API. Need root; run `cargo build -p mc-lab` first.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use mc_e2e::{Lab, eventually};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Pods of `selector`, including terminating ones.
async fn pods(api: &Api<Pod>, selector: &str) -> Result<Vec<Pod>> {
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await
        .context("listing pods")?
        .items)
}

/// Waits until exactly `n` pods of `selector` exist and all are ready;
/// returns them.
async fn ready_pods(api: &Api<Pod>, selector: &str, n: usize) -> Result<Vec<Pod>> {
    eventually(WAIT, || async {
        let all = pods(api, selector).await?;
        let ready_count = all.iter().filter(|p| ready(p)).count();
        if all.len() != n || ready_count != n {
            bail!(
                "{} pods of {selector} ({ready_count} ready), want {n} ready: {:?}",
                all.len(),
                all.iter().map(name).collect::<Vec<_>>()
            );
        }
        Ok(all)
    })
    .await
}

async fn deployment_ready(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<()> {
    eventually(WAIT, || async {
        let d = api.get(name).await?;
        let status = d.status.clone().unwrap_or_default();
        let available = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Available" && c.status == "True");
        if status.observed_generation != d.metadata.generation
            || status.replicas != Some(replicas)
            || status.ready_replicas != Some(replicas)
            || status.available_replicas != Some(replicas)
            || status.updated_replicas != Some(replicas)
            || !available
        {
            bail!("deployment {name} status {status:?}, want {replicas} ready");
        }
        Ok(())
    })
    .await
}

fn echo_deployment(replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                    "name": "echo", "image": "mc-lab", "command": ["mc-lab", "echo"],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                }]},
            },
        },
    }))?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_keeps_its_replicas_behind_a_service_through_scaling_deletion_and_rollout()
-> Result<()> {
    let lab = Lab::up(&["east"], 2)?;
    let client = lab.client("east").await?;
    let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
    let sets = Api::<ReplicaSet>::namespaced(client.clone(), "default");
    let pod_api = Api::<Pod>::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .context("creating Service web")?;
    let cluster_ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;
    deployments
        .create(&PostParams::default(), &echo_deployment(2)?)
        .await
        .context("creating Deployment web")?;

    let two = ready_pods(&pod_api, "app=web", 2).await?;
    deployment_ready(&deployments, "web", 2).await?;
    let rs_list = sets.list(&ListParams::default()).await?.items;
    ensure!(
        rs_list.len() == 1,
        "one ReplicaSet expected, got {}",
        rs_list.len()
    );
    let rs_name = rs_list[0].metadata.name.clone().context("rs name")?;
    ensure!(rs_name.starts_with("web-"), "ReplicaSet named {rs_name}");
    let nodes: BTreeSet<String> = two
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    ensure!(nodes.len() == 2, "the scheduler spread the pods: {nodes:?}");
    for pod in &two {
        let suffix = name(pod)
            .strip_prefix(&format!("{rs_name}-"))
            .map(str::to_string)
            .with_context(|| format!("pod {} is not named after {rs_name}", name(pod)))?;
        ensure!(suffix.len() == 5, "generated suffix {suffix:?}");
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .context("pod without a controller")?;
        ensure!(
            owner.kind == "ReplicaSet" && owner.name == rs_name,
            "owner {owner:?}"
        );
    }

    // The Service answers from the Deployment's pods.
    lab.run_echo("east/default/client", "app=client", None)?;
    let answer = eventually(WAIT, || async {
        let answer = lab.http_from("east/default/client", &format!("{cluster_ip}:80"))?;
        ensure!(answer.contains("pod=web-"), "answer {answer:?}");
        Ok(answer)
    })
    .await?;
    ensure!(answer.starts_with("HTTP/1.1 200"), "answer {answer:?}");

    // Scale up and down.
    let scale = |n: i32| json!({"spec": {"replicas": n}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(3)))
        .await?;
    ready_pods(&pod_api, "app=web", 3).await?;
    deployment_ready(&deployments, "web", 3).await?;
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(1)))
        .await?;
    let one = ready_pods(&pod_api, "app=web", 1).await?;
    deployment_ready(&deployments, "web", 1).await?;

    // A deleted pod is replaced.
    let victim = name(&one[0]);
    pod_api.delete(&victim, &DeleteParams::default()).await?;
    let replaced = eventually(WAIT, || async {
        let now = ready_pods(&pod_api, "app=web", 1).await?;
        ensure!(name(&now[0]) != victim, "still {victim}");
        Ok(now)
    })
    .await?;
    ensure!(name(&replaced[0]).starts_with(&format!("{rs_name}-")));

    // A template change rolls the pods onto a new ReplicaSet.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2, "template": {"metadata": {"labels": {"rev": "2"}}}}})),
        )
        .await?;
    eventually(WAIT, || async {
        let now = ready_pods(&pod_api, "app=web", 2).await?;
        ensure!(
            now.iter()
                .all(|p| !name(p).starts_with(&format!("{rs_name}-"))
                    && p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("rev"))
                        .map(String::as_str)
                        == Some("2")),
            "old pods remain: {:?}",
            now.iter().map(name).collect::<Vec<_>>()
        );
        Ok(())
    })
    .await?;
    deployment_ready(&deployments, "web", 2).await?;
    let old = sets.get(&rs_name).await?;
    ensure!(
        old.spec.and_then(|s| s.replicas) == Some(0),
        "the old ReplicaSet is scaled to zero"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_network_daemon_set_runs_on_every_node_and_sees_its_secret_volume() -> Result<()> {
    let lab = Lab::up(&["east"], 2)?;
    let client = lab.client("east").await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "agent-identity"},
        "stringData": {"tls.crt": "CERT-1", "tls.key": "KEY-1"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {},
                    "containers": [{
                        "name": "agent", "image": "x",
                        "command": ["sh", "-c"],
                        "args": ["echo \"node=$NODE_NAME ip=$POD_IP\"; exec sleep 600"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                        "volumeMounts": [{"name": "identity", "mountPath": "/var/run/mc/identity", "readOnly": true}],
                    }],
                    "volumes": [{"name": "identity", "secret": {"secretName": "agent-identity"}}],
                },
            },
        },
    }))?;
    let sets = Api::<DaemonSet>::namespaced(client.clone(), "default");
    sets.create(&PostParams::default(), &ds).await?;
    let pod_api = Api::<Pod>::namespaced(client.clone(), "default");
    let agents = ready_pods(&pod_api, "app=agent", 2).await?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let mut seen_nodes = BTreeSet::new();
    for pod in &agents {
        let pod_name = name(pod);
        ensure!(pod_name.starts_with("agent-") && pod_name.len() == "agent-".len() + 5);
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .context("unbound")?;
        let node_ip = nodes
            .items
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()))
            .and_then(|n| {
                n.status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .first()
                    .map(|a| a.address.clone())
            })
            .context("node address")?;
        let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        ensure!(
            pod_ip.as_deref() == Some(node_ip.as_str()),
            "pod IP {pod_ip:?} on node {node_ip}"
        );
        seen_nodes.insert(node_name.clone());
        let expected = format!("node={node_name} ip={node_ip}");
        eventually(WAIT, || async {
            let log = lab.pod_log("east", "default", &pod_name);
            ensure!(log.contains(&expected), "log {log:?}, want {expected:?}");
            Ok(())
        })
        .await?;
        // It lives in the node's network namespace.
        let target = format!("east/default/{pod_name}");
        let out = lab.exec(&target, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains(&format!("{node_ip}/")),
            "eth0 of {pod_name}: {text:?}"
        );
        let cert = lab.exec(&target, &["cat", "/var/run/mc/identity/tls.crt"])?;
        ensure!(
            String::from_utf8_lossy(&cert.stdout) == "CERT-1",
            "secret file: {:?} {:?}",
            String::from_utf8_lossy(&cert.stdout),
            String::from_utf8_lossy(&cert.stderr)
        );
        let write = lab.exec(
            &target,
            &["sh", "-c", "echo x > /var/run/mc/identity/tls.crt"],
        )?;
        ensure!(!write.status.success(), "the secret volume is writable");
    }
    ensure!(seen_nodes.len() == 2, "one agent per node: {seen_nodes:?}");
    let status = sets.get("agent").await?.status.context("no status")?;
    ensure!(
        status.desired_number_scheduled == 2 && status.number_ready == 2,
        "status {status:?}"
    );

    // An updated Secret reaches the running pods.
    secrets
        .patch(
            "agent-identity",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"tls.crt": "CERT-2"}})),
        )
        .await?;
    for pod in &agents {
        let target = format!("east/default/{}", name(pod));
        eventually(WAIT, || async {
            let cert = lab.exec(&target, &["cat", "/var/run/mc/identity/tls.crt"])?;
            let text = String::from_utf8_lossy(&cert.stdout).into_owned();
            ensure!(text == "CERT-2", "{target} still reads {text:?}");
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_pod_sends_sigterm_before_the_object_goes_and_bad_commands_fail_visibly()
-> Result<()> {
    let lab = Lab::up(&["east"], 1)?;
    let client = lab.client("east").await?;
    let pod_api = Api::<Pod>::namespaced(client.clone(), "default");
    let marker = std::env::temp_dir().join(format!("mc-lab-{}-sigterm", lab.name));
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        "trap 'echo bye > {}; exit 0' TERM; while true; do sleep 0.1; done",
        marker.display()
    );
    // No nodeName: the scheduler binds it.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "graceful"},
        "spec": {"terminationGracePeriodSeconds": 20,
                 "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", script]}]},
    }))?;
    pod_api.create(&PostParams::default(), &pod).await?;
    let running = eventually(WAIT, || async {
        let p = pod_api.get("graceful").await?;
        ensure!(ready(&p), "not ready yet: {:?}", p.status);
        Ok(p)
    })
    .await?;
    let uid = running.metadata.uid.clone();
    let started = std::time::Instant::now();
    let answer = pod_api.delete("graceful", &DeleteParams::default()).await?;
    let terminating = answer
        .left()
        .context("Api::delete returns the terminating pod")?;
    ensure!(
        terminating.metadata.deletion_timestamp.is_some()
            && terminating.metadata.deletion_grace_period_seconds == Some(20),
        "metadata {:?}",
        terminating.metadata
    );
    eventually(WAIT, || async {
        let left = pod_api.get_opt("graceful").await?;
        ensure!(
            left.is_none_or(|p| p.metadata.uid != uid),
            "the pod object is still there"
        );
        Ok(())
    })
    .await?;
    let said = std::fs::read_to_string(&marker).unwrap_or_default();
    let _ = std::fs::remove_file(&marker);
    ensure!(
        said == "bye\n",
        "the process did not handle SIGTERM: {said:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "the kubelet waited for the grace period instead of the process"
    );

    // A command that does not exist fails the container, in status and log.
    let bad: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["mc-no-such-command"]}]},
    }))?;
    pod_api.create(&PostParams::default(), &bad).await?;
    eventually(WAIT, || async {
        let p = pod_api.get("bad").await?;
        let waiting = p
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.state?.waiting)
            .context("no waiting state yet")?;
        let message = waiting.message.unwrap_or_default();
        ensure!(
            message.contains("executable file not found"),
            "waiting {:?}: {message}",
            waiting.reason
        );
        let log = lab.pod_log("east", "default", "bad");
        ensure!(log.contains("mc-no-such-command"), "log {log:?}");
        Ok(())
    })
    .await?;
    // The daemon keeps serving.
    lab.run_echo("east/default/after", "app=after", None)?;
    Ok(())
}
