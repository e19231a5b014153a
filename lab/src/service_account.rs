//! The projected ServiceAccount volume of a pod: `token` (from the
//! TokenRequest API, bound to the pod), `ca.crt` and `namespace`, written to
//! the pod's directory and mounted by `pod-init` at
//! `/var/run/secrets/kubernetes.io/serviceaccount`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// Token lifetime requested for pods (the lab lives shorter than this).
const TOKEN_SECONDS: i64 = 24 * 3600;

/// Writes the ServiceAccount files of `pod` under `dir/serviceaccount` and
/// returns that directory, or `None` when the pod opts out of automounting.
pub async fn materialize(
    client: &kube::Client,
    pod: &Pod,
    ca_pem: &str,
    dir: &Path,
) -> Result<Option<PathBuf>> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.automount_service_account_token) == Some(false) {
        return Ok(None);
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = spec
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [],
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    }))
    .context("building a TokenRequest")?;
    let api = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
    let response = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{account}"))?;
    let token = response
        .status
        .map(|s| s.token)
        .context("the TokenRequest answer has no token")?;
    let sa_dir = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa_dir)
        .with_context(|| format!("cannot create {}", sa_dir.display()))?;
    write(&sa_dir.join("token"), &token)?;
    write(&sa_dir.join("ca.crt"), ca_pem)?;
    write(&sa_dir.join("namespace"), &namespace)?;
    Ok(Some(sa_dir))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
