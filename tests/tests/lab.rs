//! Lab tests: the pod network, EndpointSlices, DNS and teardown, driven
//! through the real `mc-lab` binary. Need root; run `cargo build -p mc-lab`
//! first.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{ListParams, PostParams};
use mc_e2e::{Lab, eventually};

#[tokio::test(flavor = "multi_thread")]
async fn pods_reach_pods_of_their_cluster_across_nodes_but_never_the_other_cluster() -> Result<()> {
    let lab = Lab::up(&["east", "west"], 2)?;
    let _a_ip = lab.run_echo("east/default/a", "app=echo", Some("east-node-0"))?;
    let b_ip = lab.run_echo("east/default/b", "app=echo", Some("east-node-1"))?;
    let c_ip = lab.run_echo("west/default/c", "app=echo", Some("west-node-0"))?;

    let answer = lab.http_from("east/default/a", &format!("{b_ip}:8080"))?;
    ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "unexpected answer {answer:?}"
    );
    ensure!(
        answer.contains("pod=b namespace=default cluster=east"),
        "answer from the wrong pod: {answer:?}"
    );
    // Raw TCP echoes and half-closes: the answer ends after our EOF.
    let echoed = lab.tcp_from(
        "east/default/a",
        &format!("{b_ip}:9000"),
        "ping across nodes",
    )?;
    ensure!(echoed == "ping across nodes", "echo returned {echoed:?}");
    // Same node, the other way round.
    let _ = lab.http_from("east/default/b", &format!("{}:8080", _a_ip))?;

    let blocked = lab.http_from("east/default/a", &format!("{c_ip}:8080"));
    ensure!(
        blocked.is_err(),
        "east reached west's pod {c_ip}: {blocked:?}"
    );
    let blocked = lab.http_from("west/default/c", &format!("{b_ip}:8080"));
    ensure!(
        blocked.is_err(),
        "west reached east's pod {b_ip}: {blocked:?}"
    );

    // Every cluster's API server answers from pods of both clusters (WAN).
    for cluster in ["east", "west"] {
        let state = lab.state()?;
        let slot = state["slot"].as_u64().context("slot")?;
        let index = state["clusters"]
            .as_array()
            .context("clusters")?
            .iter()
            .position(|c| c["name"] == cluster)
            .context("cluster")?;
        let api = format!("198.18.{slot}.{}:6443", 2 + index);
        lab.tcp_from("west/default/c", &api, "")
            .with_context(|| format!("west pod -> {cluster} API"))?;
        lab.tcp_from("east/default/a", &api, "")
            .with_context(|| format!("east pod -> {cluster} API"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_slices_of_a_service_follow_its_pods() -> Result<()> {
    let lab = Lab::up(&["east"], 2)?;
    let client = lab.client("east").await?;
    let services = Api::<Service>::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    services
        .create(&PostParams::default(), &service)
        .await
        .context("creating Service web")?;
    let w1 = lab.run_echo("east/default/w1", "app=web", Some("east-node-0"))?;
    let w2 = lab.run_echo("east/default/w2", "app=web", Some("east-node-1"))?;
    let _other = lab.run_echo("east/default/other", "app=other", None)?;

    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default");
    let ready_ips = || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?;
        let mut ips: Vec<String> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        ips.sort();
        Ok::<_, anyhow::Error>(ips)
    };
    let mut both = vec![w1.clone(), w2.clone()];
    both.sort();
    eventually(Duration::from_secs(15), || async {
        let ips = ready_ips().await?;
        if ips != both {
            bail!("ready endpoints {ips:?}, want {both:?}");
        }
        Ok(())
    })
    .await?;

    lab.delete_pod("east/default/w1")?;
    eventually(Duration::from_secs(15), || async {
        let ips = ready_ips().await?;
        if ips != vec![w2.clone()] {
            bail!("ready endpoints {ips:?}, want only {w2}");
        }
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_dns_resolves_service_names_in_pods() -> Result<()> {
    let lab = Lab::up(&["east"], 1)?;
    let client = lab.client("east").await?;
    let services = Api::<Service>::namespaced(client, "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .context("creating Service backend")?;
    let cluster_ip = created
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP allocated")?;
    lab.run_echo("east/default/client", "app=client", None)?;
    for name in [
        "backend.default.svc.cluster.local",
        "backend.default",
        "backend",
    ] {
        eventually(Duration::from_secs(15), || async {
            let out = lab.exec("east/default/client", &["getent", "hosts", name])?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !text.split_whitespace().any(|w| w == cluster_ip) {
                bail!(
                    "{name} resolved to {text:?} (exit {}), want {cluster_ip}",
                    out.status
                );
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn down_leaves_nothing_behind_even_after_a_daemon_crash() -> Result<()> {
    let mut lab = Lab::up(&["east", "west"], 2)?;
    lab.run_echo("east/default/a", "app=a", None)?;
    lab.run_echo("west/default/b", "app=b", None)?;
    let state = lab.state()?;
    let slot = state["slot"].as_u64().context("slot")?;
    let daemons: Vec<u64> = state["clusters"]
        .as_array()
        .context("clusters")?
        .iter()
        .filter_map(|c| c["daemon_pid"].as_u64())
        .collect();
    ensure!(daemons.len() == 2, "state records daemons {daemons:?}");
    // Each cluster runs CoreDNS beside the test's pod.
    let pod_pids = pod_processes(&lab.name);
    ensure!(pod_pids.len() == 4, "found pod processes {pod_pids:?}");
    // etcd, kube-apiserver, kube-controller-manager, kube-scheduler per
    // cluster and kube-proxy per node: 4 * 2 + 2 * 2.
    let components = component_processes(&lab.name);
    ensure!(
        components.len() == 12,
        "found control plane and kube-proxy processes {components:?}"
    );
    // A crashed daemon leaves its pods running; down must still stop them.
    let status = std::process::Command::new("kill")
        .args(["-9", &daemons[0].to_string()])
        .status()?;
    ensure!(status.success(), "could not kill the daemon");

    lab.down()?;

    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    let prefix = format!("mc-{}-", lab.name);
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(String::from)
        .collect();
    ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    let link = std::process::Command::new("ip")
        .args(["link", "show", "dev", &format!("mc{slot}w")])
        .output()?;
    ensure!(
        !link.status.success(),
        "the user's veth mc{slot}w is left behind"
    );
    for pid in daemons.iter().chain(&pod_pids).chain(&components) {
        ensure!(!running(*pid), "process {pid} is still running");
    }
    ensure!(
        !std::path::Path::new("/run/mc-lab").join(&lab.name).exists(),
        "the state directory is left behind"
    );
    let etc = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0);
    ensure!(etc == 0, "{etc} /etc/netns entries left behind");
    Ok(())
}

/// PIDs of live processes whose pod-init namespace belongs to lab `lab`:
/// the kubelet records each pod's PID in clusters/<c>/pods/<uid>/pid.
fn pod_processes(lab: &str) -> Vec<u64> {
    let root = std::path::Path::new("/run/mc-lab")
        .join(lab)
        .join("clusters");
    let mut pids = Vec::new();
    for cluster in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for pod in std::fs::read_dir(cluster.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(pod.path().join("pid"))
                && let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok())
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// PIDs of the processes the cluster daemons supervise (control plane,
/// kube-proxy): their arguments name files in the lab's state directory.
fn component_processes(lab: &str) -> Vec<u64> {
    let needle = format!("/run/mc-lab/{lab}/");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let component = args.first().is_some_and(|exe| {
            [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
            ]
            .iter()
            .any(|name| exe.ends_with(&format!("/{name}")))
        });
        if component && args.iter().any(|a| a.contains(&needle)) && running(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
