//! The cluster issuer, loaded from its Secret and reloaded whenever the
//! Secret changes (checked by resourceVersion on each use).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use mc_identity::ClusterIssuer;
use tokio::sync::Mutex;

/// The last issuer loaded and the Secret version it came from.
pub struct IssuerCache {
    secrets: Api<Secret>,
    name: String,
    loaded: Mutex<Option<(String, Arc<ClusterIssuer>)>>,
}

fn text<'a>(secret: &'a Secret, key: &str) -> Result<&'a str> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("the issuer Secret has no {key}"))?;
    std::str::from_utf8(&bytes.0).with_context(|| format!("the issuer Secret's {key} is not text"))
}

impl IssuerCache {
    /// Reads Secret `namespace/name` on first use.
    pub fn new(client: Client, namespace: &str, name: &str) -> IssuerCache {
        IssuerCache {
            secrets: Api::namespaced(client, namespace),
            name: name.to_string(),
            loaded: Mutex::new(None),
        }
    }

    /// The issuer of the Secret as it is now.
    pub async fn current(&self) -> Result<Arc<ClusterIssuer>> {
        let secret = self
            .secrets
            .get(&self.name)
            .await
            .with_context(|| format!("reading the issuer Secret {}", self.name))?;
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        let mut loaded = self.loaded.lock().await;
        if let Some((seen, issuer)) = loaded.as_ref()
            && *seen == version
        {
            return Ok(issuer.clone());
        }
        let issuer = ClusterIssuer::from_pem(
            text(&secret, "tls.crt")?,
            text(&secret, "tls.key")?,
            text(&secret, "ca.crt")?,
        )
        .with_context(|| format!("loading the issuer from Secret {}", self.name))?;
        let issuer = Arc::new(issuer);
        tracing::info!(cluster = %issuer.cluster().cluster, trust_domain = %issuer.cluster().trust_domain,
            "issuer loaded");
        *loaded = Some((version, issuer.clone()));
        Ok(issuer)
    }
}
