//! A kube client for one kubeconfig context, with errors that name the
//! context and say what to do.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::Global;

/// How long the first request to a context may take.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// One context of the user's kubeconfig and a client for it.
#[derive(Clone)]
pub struct KubeContext {
    /// The context's name (the current context when none was asked for).
    pub name: String,
    /// The API server URL.
    pub server: String,
    /// The namespace of `-n`, else the context's, else `default`.
    pub namespace: String,
    /// The client.
    pub client: Client,
    kubeconfig: Kubeconfig,
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("name", &self.name)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The cluster entry of a context, as another cluster needs it.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// API server URL.
    pub server: String,
    /// Base64 of the CA bundle (PEM), when the context has one.
    pub certificate_authority_data: Option<String>,
    /// Whether the context skips TLS verification.
    pub insecure_skip_tls_verify: bool,
    /// TLS server name override.
    pub tls_server_name: Option<String>,
}

fn load_kubeconfig(path: Option<&Path>) -> Result<Kubeconfig> {
    match path {
        Some(path) => Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display())),
        None => Kubeconfig::read().context(
            "reading the kubeconfig ($KUBECONFIG or ~/.kube/config); pass --kubeconfig PATH",
        ),
    }
}

impl KubeContext {
    /// The context `--context` names (or `context` when given), from `--kubeconfig`.
    pub async fn connect(global: &Global, context: Option<&str>) -> Result<KubeContext> {
        let kubeconfig = load_kubeconfig(global.kubeconfig.as_deref())?;
        let name = match context.or(global.context.as_deref()) {
            Some(name) => name.to_string(),
            None => kubeconfig.current_context.clone().ok_or_else(|| {
                anyhow!("the kubeconfig has no current context: pass --context NAME")
            })?,
        };
        let named = kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = kubeconfig
                    .contexts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                anyhow!(
                    "context {name:?} is not in the kubeconfig (known contexts: {})",
                    known.join(", ")
                )
            })?;
        let context_namespace = named.context.as_ref().and_then(|c| c.namespace.clone());
        let options = KubeConfigOptions {
            context: Some(name.clone()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig.clone(), &options)
            .await
            .with_context(|| format!("loading context {name:?} from the kubeconfig"))?;
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client = Client::try_from(config)
            .with_context(|| format!("building a client for context {name:?} at {server}"))?;
        let namespace = global
            .namespace
            .clone()
            .or(context_namespace)
            .unwrap_or_else(|| "default".to_string());
        Ok(KubeContext {
            name,
            server,
            namespace,
            client,
            kubeconfig,
        })
    }

    /// Like [`KubeContext::connect`], then makes one request so an unreachable
    /// cluster fails early with a clear message.
    pub async fn connect_reachable(global: &Global, context: Option<&str>) -> Result<KubeContext> {
        let ctx = KubeContext::connect(global, context).await?;
        ctx.ensure_reachable().await?;
        Ok(ctx)
    }

    /// Asks the API server for its version.
    pub async fn ensure_reachable(&self) -> Result<()> {
        let outcome = tokio::time::timeout(REACH_TIMEOUT, self.client.apiserver_version()).await;
        let cause = match outcome {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => describe(&e),
            Err(_) => format!("no answer within {}s", REACH_TIMEOUT.as_secs()),
        };
        bail!(
            "cannot reach context {:?} at {}: {cause} — is the cluster up and the context right?",
            self.name,
            self.server
        )
    }

    /// Wraps a failed API call: `in context "east": <what>: <cause>`.
    pub fn error(&self, what: impl std::fmt::Display, err: &kube::Error) -> anyhow::Error {
        let hint = match err {
            kube::Error::Api(s) if s.code == 403 => {
                " — your user lacks this permission; use a context with more rights"
            }
            kube::Error::Api(s) if s.code == 401 => {
                " — the context's credentials were rejected; refresh them"
            }
            kube::Error::Api(_) => "",
            _ => " — is the cluster up and the context right?",
        };
        anyhow!(
            "in context {:?} ({}): {what}: {}{hint}",
            self.name,
            self.server,
            describe(err)
        )
    }

    /// The cluster entry of this context, with a CA file inlined.
    pub fn cluster_access(&self) -> Result<ClusterAccess> {
        let cluster_name = self
            .kubeconfig
            .contexts
            .iter()
            .find(|c| c.name == self.name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| anyhow!("context {:?} names no cluster", self.name))?;
        let cluster = self
            .kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| {
                anyhow!(
                    "cluster {cluster_name:?} of context {:?} is not in the kubeconfig",
                    self.name
                )
            })?;
        let server = cluster
            .server
            .clone()
            .ok_or_else(|| anyhow!("cluster {cluster_name:?} has no server"))?;
        let certificate_authority_data = match (
            cluster.certificate_authority_data.clone(),
            cluster.certificate_authority.as_deref(),
        ) {
            (Some(data), _) => Some(data),
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("reading the CA file {path} of cluster {cluster_name:?}")
                })?;
                Some(STANDARD.encode(pem))
            }
            (None, None) => None,
        };
        Ok(ClusterAccess {
            server,
            certificate_authority_data,
            insecure_skip_tls_verify: cluster.insecure_skip_tls_verify.unwrap_or(false),
            tls_server_name: cluster.tls_server_name.clone(),
        })
    }
}

/// A one-line description of a kube error: the API's message for API errors,
/// the cause chain otherwise.
pub fn describe(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                format!("{} ({})", status.message, status.code)
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    }
}

/// The HTTP status of an API error, if it is one.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
