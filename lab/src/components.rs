//! Where the real Kubernetes components live: the binaries
//! `lab/components/build.sh` builds from their Go modules (kube-apiserver,
//! kube-controller-manager, kube-scheduler, kube-proxy, kubectl, etcd,
//! coredns).

use std::path::{Path, PathBuf};

use anyhow::Result;

/// Every binary the lab runs from the components directory.
pub const REQUIRED: [&str; 6] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "coredns",
];

/// The components directory (see [`mc_kubeparts::components_dir`]), with
/// every [`REQUIRED`] binary in it.
pub fn locate() -> Result<PathBuf> {
    mc_kubeparts::components_dir(&REQUIRED)
}

/// Fails unless every [`REQUIRED`] binary is in `dir`.
pub fn check(dir: &Path) -> Result<()> {
    mc_kubeparts::check_components(dir, &REQUIRED)
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
