//! `mc-lab serve` (hidden): the daemon of one cluster. It runs inside the
//! lab's WAN netns, starts the cluster's real control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler) and each
//! node's real kube-proxy as supervised children, deploys CoreDNS, and
//! itself plays the nodes: their Node objects and Leases, the kubelet that
//! runs their pods, and the LoadBalancer controller a cloud would run.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use nix::sched::{CloneFlags, setns};

use crate::control_plane::ControlPlane;
use crate::plan::{ClusterPlan, LabPlan, NodePlan};
use crate::pod_worker::Shared;
use crate::state::{LabDir, LabState};

/// Enters the WAN netns of the lab (on the calling thread, before any
/// other thread exists, so every later thread and child inherits it).
/// The mount namespace stays the host's, so the netns this process creates
/// for pods are visible to `ip netns` in the user's shell.
pub fn enter_wan(lab: &str) -> Result<()> {
    let state = LabState::load(&LabDir::new(lab))?;
    let path = std::path::Path::new("/run/netns").join(state.plan().wan_netns());
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter {}", path.display()))
}

/// Runs the daemon of cluster `cluster` of lab `lab` until a part fails or
/// the process is signalled.
pub async fn serve(lab: &str, cluster: &str) -> Result<()> {
    let dir = LabDir::new(lab);
    let state = LabState::load(&dir)?;
    let plan = state.cluster(cluster)?;
    let nodes = state.nodes(cluster)?;
    crate::components::check(&state.components)?;
    let control_plane = ControlPlane::start(&dir, &plan, &state.components).await?;
    let result = run_nodes(&dir, &state, &control_plane, plan, nodes).await;
    control_plane.stop().await;
    result
}

/// Registers the nodes, starts their kube-proxy, deploys CoreDNS and runs
/// the node parts until one fails or the daemon is signalled.
async fn run_nodes(
    dir: &LabDir,
    state: &LabState,
    control_plane: &ControlPlane,
    plan: ClusterPlan,
    nodes: Vec<NodePlan>,
) -> Result<()> {
    let client =
        crate::kubeconfig::client_from_file(&dir.admin_kubeconfig(&plan.name), &plan.name).await?;
    let version = crate::components::kubernetes_version(&state.components);
    crate::nodes::register_nodes(&client, &nodes, &version).await?;
    let proxies = crate::kube_proxy::start(
        dir,
        &control_plane.pki,
        &state.components,
        state.proxy_mode,
        &nodes,
    )?;
    crate::dns::deploy(&client, &plan).await?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        cluster: plan.clone(),
        dir: dir.clone(),
        exe: std::env::current_exe().context("cannot find mc-lab's own executable")?,
        components: state.components.clone(),
        ipam: Mutex::new(Default::default()),
    });
    tracing::info!(cluster = %plan.name, api = %plan.api_url(), "cluster daemon serving");
    let mut parts = tokio::task::JoinSet::new();
    spawn_parts(&mut parts, client, plan, nodes, state.plan(), shared);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let result = tokio::select! {
        done = parts.join_next() => match done {
            Some(Ok((name, Ok(())))) => Err(anyhow::anyhow!("{name} stopped")),
            Some(Ok((name, Err(error)))) => Err(error.context(format!("{name} failed"))),
            Some(Err(join)) => Err(anyhow::anyhow!("a part of the daemon panicked: {join}")),
            None => Ok(()),
        },
        _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); Ok(()) }
    };
    parts.abort_all();
    for proxy in proxies {
        proxy.stop().await;
    }
    result
}

type Part = (&'static str, Result<()>);

fn spawn_parts(
    parts: &mut tokio::task::JoinSet<Part>,
    client: kube::Client,
    cluster: ClusterPlan,
    nodes: Vec<NodePlan>,
    lab: LabPlan,
    shared: Arc<Shared>,
) {
    let kubelet_nodes = nodes.clone();
    parts.spawn(async move { ("kubelet", crate::kubelet::run(shared, kubelet_nodes).await) });
    let c = client.clone();
    parts.spawn(async move { ("node leases", crate::nodes::renew_leases(c, nodes).await) });
    parts.spawn(async move {
        (
            "loadbalancer",
            crate::loadbalancer::run(client, cluster, lab).await,
        )
    });
}
