//! The lab's state on disk, `/run/mc-lab/<lab>/`: what `up` made, so that
//! `down` can remove it even after a crash.
//!
//! ```text
//! /run/mc-lab/<lab>/state.json            LabState
//! /run/mc-lab/<lab>/kubeconfig            one context per cluster
//! /run/mc-lab/<lab>/clusters/<c>/pki      the control plane's certificates and kubeconfigs
//! /run/mc-lab/<lab>/clusters/<c>/etcd     etcd's data
//! /run/mc-lab/<lab>/clusters/<c>/kube-proxy/<node>.yaml  kube-proxy's configuration
//! /run/mc-lab/<lab>/clusters/<c>/admin.kubeconfig  written once the API server is ready
//! /run/mc-lab/<lab>/logs/<c>.log          the cluster daemon's log
//! /run/mc-lab/<lab>/logs/<c>-<component>.log  etcd, kube-apiserver, ..., kube-proxy-<node>
//! /run/mc-lab/<lab>/logs/<c>/<ns>_<pod>.log  pod output
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::plan::{ClusterPlan, LabPlan, NodePlan, ProxyMode};

/// Directory holding every lab's state; `MC_LAB_STATE_ROOT` overrides it.
pub fn state_root() -> PathBuf {
    std::env::var_os("MC_LAB_STATE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/mc-lab"))
}

/// Paths of one lab's state directory.
#[derive(Clone, Debug)]
pub struct LabDir {
    /// `/run/mc-lab/<lab>`.
    pub root: PathBuf,
}

impl LabDir {
    /// The state directory of lab `name`.
    pub fn new(name: &str) -> Self {
        LabDir {
            root: state_root().join(name),
        }
    }
    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The merged kubeconfig with one context per cluster.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    /// Directory of cluster `cluster`'s files (PKI, etcd, kube-proxy, pods).
    pub fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.root.join("clusters").join(cluster)
    }
    /// The admin kubeconfig a cluster daemon writes once its API serves.
    pub fn admin_kubeconfig(&self, cluster: &str) -> PathBuf {
        self.cluster_dir(cluster).join("admin.kubeconfig")
    }
    /// Log directory.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Log of cluster `cluster`'s daemon.
    pub fn daemon_log(&self, cluster: &str) -> PathBuf {
        self.logs().join(format!("{cluster}.log"))
    }
    /// Log of one pod's containers.
    pub fn pod_log(&self, cluster: &str, namespace: &str, pod: &str) -> PathBuf {
        self.logs()
            .join(cluster)
            .join(format!("{namespace}_{pod}.log"))
    }
    /// Directory of files the kubelet materialises for one pod (its
    /// ServiceAccount token, for instance).
    pub fn pod_dir(&self, cluster: &str, pod_uid: &str) -> PathBuf {
        self.cluster_dir(cluster).join("pods").join(pod_uid)
    }
}

/// Everything `up` created, recorded in `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// Lab name.
    pub name: String,
    /// WAN slot (`198.18.<slot>.0/24`).
    pub slot: u8,
    /// Clusters in index order.
    pub clusters: Vec<ClusterState>,
    /// kube-proxy's mode on every node.
    #[serde(default)]
    pub proxy_mode: ProxyMode,
    /// Directory of the Kubernetes binaries the lab runs.
    pub components: PathBuf,
}

/// One cluster of a lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster name (also its kubeconfig context).
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// PID of the cluster daemon (`mc-lab serve`), once started.
    pub daemon_pid: Option<u32>,
}

impl LabState {
    /// The address plan of this lab.
    pub fn plan(&self) -> LabPlan {
        LabPlan {
            name: self.name.clone(),
            slot: self.slot,
        }
    }
    /// Plans of every cluster.
    pub fn cluster_plans(&self) -> Vec<ClusterPlan> {
        let lab = self.plan();
        self.clusters
            .iter()
            .enumerate()
            .map(|(k, c)| lab.cluster(k, &c.name))
            .collect()
    }
    /// Plan of the cluster called `name`.
    pub fn cluster(&self, name: &str) -> Result<ClusterPlan> {
        self.cluster_plans()
            .into_iter()
            .find(|c| c.name == name)
            .with_context(|| format!("lab {} has no cluster {name}", self.name))
    }
    /// Plans of every node of cluster `name`.
    pub fn nodes(&self, name: &str) -> Result<Vec<NodePlan>> {
        let plan = self.cluster(name)?;
        let count = self.clusters[plan.index].nodes;
        Ok((0..count).map(|j| plan.node(j)).collect())
    }

    /// Reads the state of lab `name`.
    pub fn load(dir: &LabDir) -> Result<Self> {
        let path = dir.state_file();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is the lab up? `mc-lab up`)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes the state atomically (temporary file, then rename).
    pub fn save(&self, dir: &LabDir) -> Result<()> {
        fs::create_dir_all(&dir.root)
            .with_context(|| format!("cannot create {}", dir.root.display()))?;
        let path = dir.state_file();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).context("serializing the lab state")?;
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Holds an exclusive lock on the state root while labs are created, so two
/// concurrent `up`s never pick the same slot.
pub struct RootLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl RootLock {
    /// Waits for and takes the lock.
    pub fn acquire() -> Result<Self> {
        let root = state_root();
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let path = root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(RootLock { _lock: lock })
    }
}

/// The lowest slot no other lab records and no address of the root netns
/// uses. Call with the [`RootLock`] held.
pub fn free_slot() -> Result<u8> {
    let mut used = BTreeSet::new();
    let root = state_root();
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries.flatten() {
            let dir = LabDir { root: entry.path() };
            if let Ok(state) = LabState::load(&dir) {
                used.insert(state.slot);
            }
        }
    }
    let addrs = crate::cmd::ip(&["-4", "-o", "addr", "show"]).unwrap_or_default();
    for slot in 0..=255u8 {
        if used.contains(&slot) || addrs.contains(&format!(" 198.18.{slot}.")) {
            continue;
        }
        return Ok(slot);
    }
    bail!("every WAN slot 198.18.0-255.0/24 is in use; `mc-lab down` some labs")
}
