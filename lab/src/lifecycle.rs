//! `mc-lab up` and `mc-lab down`: create a lab (network, cluster daemons,
//! kubeconfig) and remove everything it made, also after a crash.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::names::{validate_cluster_name, validate_lab_name};
use crate::plan::{MAX_CLUSTERS, MAX_NODES, ProxyMode};
use crate::procs;
use crate::state::{ClusterState, LabDir, LabState, RootLock, free_slot};
use crate::topology;

/// What `mc-lab up` is asked to build.
#[derive(Clone, Debug)]
pub struct UpRequest {
    /// Lab name.
    pub lab: String,
    /// Cluster names, in index order.
    pub clusters: Vec<String>,
    /// Nodes per cluster.
    pub nodes_per_cluster: usize,
    /// Remove an existing lab of the same name first.
    pub recreate: bool,
    /// Build only the network, start no cluster daemons.
    pub network_only: bool,
    /// How long to wait for the API servers and nodes.
    pub timeout: Duration,
    /// kube-proxy's mode.
    pub proxy_mode: ProxyMode,
}

/// Creates the lab; on failure removes what was made and returns the error.
pub async fn up(req: &UpRequest) -> Result<LabState> {
    validate_lab_name(&req.lab)?;
    if req.clusters.is_empty() || req.clusters.len() > MAX_CLUSTERS {
        bail!(
            "a lab holds 1 to {MAX_CLUSTERS} clusters, got {}",
            req.clusters.len()
        );
    }
    for (i, name) in req.clusters.iter().enumerate() {
        validate_cluster_name(name)?;
        if req.clusters[..i].contains(name) {
            bail!("cluster {name} is listed twice");
        }
    }
    if req.nodes_per_cluster == 0 || req.nodes_per_cluster > MAX_NODES {
        bail!(
            "a cluster holds 1 to {MAX_NODES} nodes, got {}",
            req.nodes_per_cluster
        );
    }
    let components = crate::components::locate()?;
    let dir = LabDir::new(&req.lab);
    let state = {
        let _lock = RootLock::acquire()?;
        if dir.state_file().exists() {
            if !req.recreate {
                bail!(
                    "lab {} is already up (state in {}); use `mc-lab --lab {} down` or `up --recreate`",
                    req.lab,
                    dir.root.display(),
                    req.lab
                );
            }
            down(&req.lab)?;
        }
        let state = LabState {
            name: req.lab.clone(),
            slot: free_slot()?,
            clusters: req
                .clusters
                .iter()
                .map(|name| ClusterState {
                    name: name.clone(),
                    nodes: req.nodes_per_cluster,
                    daemon_pid: None,
                })
                .collect(),
            proxy_mode: req.proxy_mode,
            components,
        };
        state.save(&dir)?;
        state
    };
    match build(req, &dir, state).await {
        Ok(state) => Ok(state),
        Err(error) => {
            if let Err(cleanup) = down(&req.lab) {
                tracing::warn!(error = %cleanup, "cleanup after a failed `up` was incomplete");
            }
            Err(error)
        }
    }
}

async fn build(req: &UpRequest, dir: &LabDir, mut state: LabState) -> Result<LabState> {
    let lab = state.plan();
    let clusters = state.cluster_plans();
    tracing::info!(lab = %lab.name, slot = lab.slot, "creating the network");
    topology::create_wan(&lab, &clusters)?;
    for cluster in &clusters {
        let nodes = state.nodes(&cluster.name)?;
        for node in &nodes {
            topology::create_node(node, &nodes)?;
        }
    }
    if req.network_only {
        return Ok(state);
    }
    std::fs::create_dir_all(dir.logs())
        .with_context(|| format!("cannot create {}", dir.logs().display()))?;
    let exe = std::env::current_exe().context("cannot find mc-lab's own executable")?;
    for k in 0..state.clusters.len() {
        let name = state.clusters[k].name.clone();
        let args = daemon_args(&lab.name, &name);
        let pid = procs::spawn_detached(&exe, &args, &dir.daemon_log(&name))?;
        tracing::info!(cluster = %name, pid, "started the cluster daemon");
        state.clusters[k].daemon_pid = Some(pid);
        state.save(dir)?;
    }
    let deadline = Instant::now() + req.timeout;
    crate::kubeconfig::wait_and_merge(dir, &state, deadline).await?;
    for cluster in &state.clusters {
        crate::kubeconfig::wait_ready(dir, &cluster.name, cluster.nodes, deadline)
            .await
            .with_context(|| {
                format!(
                    "cluster {} did not become ready; see {}",
                    cluster.name,
                    dir.daemon_log(&cluster.name).display()
                )
            })?;
    }
    Ok(state)
}

/// Arguments that start the daemon of cluster `cluster`; `down` also uses
/// them to recognise the process.
pub fn daemon_args(lab: &str, cluster: &str) -> Vec<String> {
    ["--lab", lab, "serve", "--cluster", cluster]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Fails with the tail of the daemon's log when the daemon of `cluster` is
/// gone.
pub fn check_daemon(dir: &LabDir, cluster: &ClusterState, lab: &str) -> Result<()> {
    let Some(pid) = cluster.daemon_pid else {
        return Ok(());
    };
    if procs::alive(pid) && procs::is_ours(pid, &["serve", lab, &cluster.name]) {
        return Ok(());
    }
    bail!(
        "the daemon of cluster {} (pid {pid}) exited; last lines of {}:\n{}",
        cluster.name,
        dir.daemon_log(&cluster.name).display(),
        tail(&dir.daemon_log(&cluster.name), 20)
    )
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes lab `name`: its daemons, its pods' processes, every netns with
/// its prefix, its veth, its `/etc/netns` entries and its state directory.
/// Works from the state on disk and from what the system shows, so it also
/// cleans up after a crash or a half-finished `up`.
pub fn down(name: &str) -> Result<()> {
    validate_lab_name(name)?;
    let dir = LabDir::new(name);
    let state = LabState::load(&dir).ok();
    if let Some(state) = &state {
        for cluster in &state.clusters {
            if let Some(pid) = cluster.daemon_pid
                && procs::stop_group(pid, &["serve", name, &cluster.name], Duration::from_secs(5))
            {
                tracing::info!(cluster = %cluster.name, pid, "stopped the cluster daemon");
            }
        }
    }
    // Pods the daemons did not stop (a daemon that crashed leaves them).
    crate::pidfile::stop_all_under(&dir.root.join("clusters"));
    let slot = state.as_ref().map(|s| s.slot);
    let plan = crate::plan::LabPlan {
        name: name.to_string(),
        slot: slot.unwrap_or(0),
    };
    let removed = if slot.is_some() {
        topology::destroy(&plan)?
    } else {
        // Without state the slot is unknown: remove the namespaces only.
        let prefix = plan.netns_prefix();
        let mut removed = Vec::new();
        for ns in crate::cmd::netns_list()?
            .into_iter()
            .filter(|ns| ns.starts_with(&prefix))
        {
            crate::cmd::ip_quiet(&["netns", "delete", &ns]);
            removed.push(ns);
        }
        topology::remove_etc_netns(&prefix);
        removed
    };
    tracing::info!(
        lab = name,
        namespaces = removed.len(),
        "removed the network"
    );
    if dir.root.exists() {
        std::fs::remove_dir_all(&dir.root)
            .with_context(|| format!("cannot remove {}", dir.root.display()))?;
    }
    Ok(())
}
