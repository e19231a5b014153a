//! Where the real Kubernetes components live: the binaries
//! `lab/components/build.sh` builds from their Go modules (kube-apiserver,
//! kube-controller-manager, kube-scheduler, kube-proxy, kubectl, etcd,
//! coredns).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Every binary the lab runs from the components directory.
pub const REQUIRED: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "coredns",
];

/// Default cache of `build.sh`; `current/bin` is the last build.
const DEFAULT_CACHE: &str = "/var/cache/mc-lab/components";

/// The components directory: `MC_LAB_COMPONENTS`, else the last build in
/// `MC_LAB_COMPONENTS_CACHE` (default `/var/cache/mc-lab/components`).
/// Fails, saying how to build them, when a binary is missing.
pub fn locate() -> Result<PathBuf> {
    let dir = match std::env::var_os("MC_LAB_COMPONENTS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("MC_LAB_COMPONENTS_CACHE")
            .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
            .join("current")
            .join("bin"),
    };
    check(&dir)?;
    // Resolved, so a later build that moves `current` does not change the
    // binaries of a running lab.
    Ok(dir.canonicalize().unwrap_or(dir))
}

/// Fails unless every [`REQUIRED`] binary is in `dir`.
pub fn check(dir: &Path) -> Result<()> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the Kubernetes components {} are not in {}; build them with \
             `lab/components/build.sh` (about 10 minutes the first time) or point \
             MC_LAB_COMPONENTS at a directory holding them",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// The Kubernetes version of the components in `dir` (from the `VERSIONS`
/// file `build.sh` writes beside `bin/`), or `unknown`.
pub fn kubernetes_version(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("..").join("VERSIONS"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("kubernetes ").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into())
}
