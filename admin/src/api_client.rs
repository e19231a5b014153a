//! The proxies' Kubernetes API client.
//!
//! The agent and the gateway run in pods, so their client comes from the
//! pod's ServiceAccount (token, CA and the `KUBERNETES_SERVICE_*`
//! variables). Reading kubeconfig files needs a YAML parser, JSONPath and
//! a regular-expression engine, which would be about a tenth of each proxy's
//! code and resident memory for a case that only development has: build
//! with `--features kubeconfig` to fall back to `KUBECONFIG` or
//! `~/.kube/config` outside a pod.

use anyhow::{Context, Result};

/// A client for the cluster this process runs in.
pub async fn connect() -> Result<kube::Client> {
    let config = config().await?;
    kube::Client::try_from(config).context("building the Kubernetes API client")
}

#[cfg(not(feature = "kubeconfig"))]
async fn config() -> Result<kube::Config> {
    kube::Config::incluster().context(
        "reading the pod's ServiceAccount credentials (outside a pod, \
         build with --features kubeconfig to use a kubeconfig)",
    )
}

/// Like kubectl: a kubeconfig if there is one, else the ServiceAccount.
#[cfg(feature = "kubeconfig")]
async fn config() -> Result<kube::Config> {
    kube::Config::infer()
        .await
        .context("reading KUBECONFIG, ~/.kube/config or the pod's ServiceAccount credentials")
}
