//! The benchmark's lab: the mesh of the end-to-end tests (gateway in east
//! behind a LoadBalancer, an agent on every west node, a Link), servers in
//! east, and one client pod per path.
//!
//! - direct: `east/default/bench-client` on the gateway's node -> the server
//!   pod's IP on the other east node (pod -> node -> WAN -> node -> pod).
//! - mesh: `west/default/bench-client` on west-node-0 -> the mirror's
//!   ClusterIP -> agent on west-node-0 -> WAN -> gateway LoadBalancer
//!   address (east-node-0) -> gateway pod -> the same server pod.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use mc_e2e::eventually;
use mc_e2e::mesh::{Mesh, MeshOptions, NS, east_service};

use crate::files::{Files, HTTP_PORT, IPERF_PORT};

/// Client pod of the direct path.
pub const DIRECT_CLIENT: &str = "east/default/bench-client";
/// Client pod of the mesh path.
pub const MESH_CLIENT: &str = "west/default/bench-client";
/// The west node whose agent carries the mesh path.
const MESH_CLIENT_NODE: &str = "west-node-0";

/// Where one path's client sends its load.
#[derive(Clone, Debug)]
pub struct Path {
    /// `direct` or `mesh`.
    pub name: &'static str,
    /// The client pod (`cluster/ns/name`).
    pub client: &'static str,
    /// Address of the HTTP server as this client reaches it.
    pub web_ip: String,
    /// Address of the iperf3 server as this client reaches it.
    pub iperf_ip: String,
}

/// Processes whose CPU and memory the benchmark follows.
#[derive(Clone, Debug)]
pub struct Processes {
    /// mc-node-agent on the mesh client's node.
    pub agent: u32,
    /// mc-gateway.
    pub gateway: u32,
    /// nginx's master and workers.
    pub nginx: Vec<u32>,
    /// `iperf3 -s`.
    pub iperf: u32,
}

/// The running benchmark lab.
pub struct Lab {
    /// The mesh (dropping it removes the lab).
    pub mesh: Mesh,
    /// The direct path.
    pub direct: Path,
    /// The mesh path.
    pub meshed: Path,
    /// Followed processes.
    pub procs: Processes,
    /// Node of the gateway and the direct client.
    pub gateway_node: String,
    /// Node of the servers.
    pub server_node: String,
}

impl Lab {
    /// Brings everything up and checks both paths answer.
    /// `proxy_env` is extra environment of the agents and the gateway.
    pub async fn start(files: &Files, proxy_env: Vec<(String, String)>) -> Result<Lab> {
        let options = MeshOptions {
            proxy_env,
            ..MeshOptions::default()
        };
        let mesh = Mesh::start_with(options)
            .await
            .context("starting the mesh")?;
        crate::cleanup::remember_lab(&mesh.lab.name);
        let gateway_pod = pod(&mesh.east, NS, "mc-gateway-0").await?;
        let gateway_node = node_of(&gateway_pod)?;
        let server_node = ["east-node-0", "east-node-1"]
            .into_iter()
            .find(|n| *n != gateway_node)
            .context("no east node without the gateway")?
            .to_string();

        let nginx = files.nginx_command();
        let nginx: Vec<&str> = nginx.iter().map(String::as_str).collect();
        let web_ip = mesh
            .lab
            .run_pod(
                "east/default/web-0",
                "app=web",
                Some(&server_node),
                Some(HTTP_PORT),
                &nginx,
            )
            .context("starting nginx")?;
        let port = IPERF_PORT.to_string();
        // No readiness port: a probe's bare connection would disturb iperf3.
        let iperf_ip = mesh
            .lab
            .run_pod(
                "east/default/iperf-0",
                "app=iperf",
                Some(&server_node),
                None,
                &["iperf3", "-s", "-p", &port],
            )
            .context("starting iperf3 -s")?;
        mesh.lab
            .run_pod(
                DIRECT_CLIENT,
                "app=bench-client",
                Some(&gateway_node),
                None,
                &["sleep", "1000000"],
            )
            .context("starting the direct client")?;
        mesh.lab
            .run_pod(
                MESH_CLIENT,
                "app=bench-client",
                Some(MESH_CLIENT_NODE),
                None,
                &["sleep", "1000000"],
            )
            .context("starting the mesh client")?;

        east_service(&mesh.east, "web", true, &[("http", HTTP_PORT)]).await?;
        east_service(&mesh.east, "iperf", true, &[("iperf", IPERF_PORT)]).await?;
        let web_mirror = mesh
            .mirror("default", "web", &[("http", HTTP_PORT)])
            .await?;
        let iperf_mirror = mesh
            .mirror("default", "iperf", &[("iperf", IPERF_PORT)])
            .await?;

        let lab_dir = PathBuf::from("/run/mc-lab").join(&mesh.lab.name);
        let agent = pid_of(
            &lab_dir,
            "west",
            &pod(&mesh.west, NS, &format!("mc-node-agent-{MESH_CLIENT_NODE}")).await?,
        )?;
        let gateway = pid_of(&lab_dir, "east", &gateway_pod)?;
        let nginx_master = pid_of(
            &lab_dir,
            "east",
            &pod(&mesh.east, "default", "web-0").await?,
        )?;
        let iperf = pid_of(
            &lab_dir,
            "east",
            &pod(&mesh.east, "default", "iperf-0").await?,
        )?;

        let mut lab = Lab {
            direct: Path {
                name: "direct",
                client: DIRECT_CLIENT,
                web_ip,
                iperf_ip,
            },
            meshed: Path {
                name: "mesh",
                client: MESH_CLIENT,
                web_ip: web_mirror,
                iperf_ip: iperf_mirror,
            },
            procs: Processes {
                agent,
                gateway,
                nginx: vec![nginx_master],
                iperf,
            },
            gateway_node,
            server_node,
            mesh,
        };
        for path in [&lab.direct, &lab.meshed] {
            lab.wait_for_http(path).await?;
        }
        // The workers exist once a request was served.
        let workers = crate::procstat::children(nginx_master)?;
        lab.procs.nginx.extend(workers);
        Ok(lab)
    }

    /// Waits until `path`'s client gets nginx's page.
    async fn wait_for_http(&self, path: &Path) -> Result<()> {
        let addr = format!("{}:{HTTP_PORT}", path.web_ip);
        eventually(Duration::from_secs(30), || async {
            let answer = self.mesh.lab.http_from(path.client, &addr)?;
            if answer.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                bail!("{} -> {addr}: {answer:?}", path.client)
            }
        })
        .await
        .with_context(|| format!("the {} path never answered", path.name))
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.mesh.lab.name
    }
}

async fn pod(client: &Client, namespace: &str, name: &str) -> Result<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("getting pod {namespace}/{name}"))
}

fn node_of(pod: &Pod) -> Result<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("the pod is not bound to a node")
}

/// The PID the lab's kubelet recorded for `pod` (`<pid> <start time>`).
fn pid_of(lab_dir: &std::path::Path, cluster: &str, pod: &Pod) -> Result<u32> {
    let uid = pod.metadata.uid.as_deref().context("the pod has no uid")?;
    let path = lab_dir
        .join("clusters")
        .join(cluster)
        .join("pods")
        .join(uid)
        .join("pid");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.split_whitespace()
        .next()
        .context("empty pid file")?
        .parse()
        .with_context(|| format!("pid in {}", path.display()))
}
