//! mc's interception beside the real kube-proxy, in both of its modes on
//! Linux (nftables and iptables): kube-proxy knows a mirror as a Service
//! without endpoints and would reject its connections, yet pod and
//! host-network callers of the mirror reach east, while kube-proxy keeps
//! serving the cluster's own Services. Needs root and the built binaries.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use mc_e2e::eventually;
use mc_e2e::mesh::{Mesh, MeshOptions, east_service};

const CLIENT: &str = "west/default/client";
const HOST: &str = "west/mc-system/mc-node-agent-west-node-0";

/// An answer from `addr` seen from `pod` that names `cluster`.
async fn answer_from(mesh: &Mesh, pod: &str, addr: &str, cluster: &str) -> Result<String> {
    let want = format!("cluster={cluster}");
    eventually(Duration::from_secs(15), || async {
        let answer = mesh.lab.http_from(pod, addr)?;
        if answer.contains(&want) {
            Ok(answer)
        } else {
            bail!("{pod} -> {addr}: expected {want}, got {answer}")
        }
    })
    .await
}

/// What `program args...` prints inside node 0 of west.
fn on_west_node(mesh: &Mesh, program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("mc-{}-west-n0", mesh.lab.name),
            program,
        ])
        .args(args)
        .output()
        .with_context(|| format!("running {program} on west-node-0"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until west-node-0's kube-proxy, in `mode`, rejects `ip` as a
/// Service without endpoints.
async fn kube_proxy_rejects(mesh: &Mesh, mode: &str, ip: &str) -> Result<()> {
    eventually(Duration::from_secs(15), || async {
        match mode {
            "nftables" => {
                let map = on_west_node(
                    mesh,
                    "nft",
                    &["list", "map", "ip", "kube-proxy", "no-endpoint-services"],
                )?;
                ensure!(map.contains(ip), "{ip} not in no-endpoint-services:\n{map}");
                let iptables = on_west_node(mesh, "iptables-save", &[])?;
                ensure!(
                    !iptables.contains("KUBE-SERVICES"),
                    "iptables rules in nftables mode"
                );
            }
            _ => {
                let rules = on_west_node(mesh, "iptables-save", &[])?;
                let reject = rules
                    .lines()
                    .any(|l| l.contains(&format!("-d {ip}/32")) && l.contains("-j REJECT"));
                ensure!(reject, "no REJECT rule for {ip}:\n{rules}");
                let tables = on_west_node(mesh, "nft", &["list", "tables"])?;
                ensure!(
                    !tables.contains("kube-proxy"),
                    "nftables mode's table in iptables mode"
                );
            }
        }
        Ok(())
    })
    .await
}

async fn data_path_beside_kube_proxy(mode: &'static str) -> Result<()> {
    let mesh = Mesh::start_with(MeshOptions {
        kube_proxy_mode: mode,
        ..MeshOptions::default()
    })
    .await?;
    let mirror = mesh.export_echo_backend(1).await?;
    mesh.lab.run_pod(
        CLIENT,
        "app=client",
        Some("west-node-0"),
        None,
        &["sleep", "3600"],
    )?;

    // The mirror has no endpoints in west: kube-proxy rejects its ClusterIP.
    let slices: Api<EndpointSlice> = Api::namespaced(mesh.west.clone(), "default");
    let of_mirror = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=backend-east"))
        .await?;
    ensure!(
        of_mirror.items.is_empty(),
        "the mirror has EndpointSlices: {:?}",
        of_mirror.items
    );
    kube_proxy_rejects(&mesh, mode, &mirror).await?;

    // Still, pod and host-network callers of the mirror reach east.
    answer_from(&mesh, CLIENT, &format!("{mirror}:8080"), "east").await?;
    answer_from(&mesh, CLIENT, "backend-east:8080", "east").await?;
    answer_from(&mesh, HOST, &format!("{mirror}:8080"), "east").await?;

    // kube-proxy's own Services keep working from both kinds of caller.
    mesh.lab
        .run_echo("west/default/local-0", "app=local", Some("west-node-1"))?;
    east_service(&mesh.west, "local", false, &[("http", 8080)]).await?;
    answer_from(&mesh, CLIENT, "local.default:8080", "west").await?;
    let local_ip = mesh.lab.exec(
        CLIENT,
        &["getent", "hosts", "local.default.svc.cluster.local"],
    )?;
    let local_ip = String::from_utf8_lossy(&local_ip.stdout)
        .split_whitespace()
        .next()
        .context("local has no address in cluster DNS")?
        .to_string();
    answer_from(&mesh, HOST, &format!("{local_ip}:8080"), "west").await?;
    mesh.lab
        .tcp_from(CLIENT, "kubernetes.default:443", "")
        .context("the kubernetes Service from a pod")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_intercepted_beside_kube_proxy_in_nftables_mode() -> Result<()> {
    data_path_beside_kube_proxy("nftables").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_intercepted_beside_kube_proxy_in_iptables_mode() -> Result<()> {
    data_path_beside_kube_proxy("iptables").await
}
