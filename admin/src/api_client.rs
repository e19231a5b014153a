//! The proxies' Kubernetes API client.
//!
//! The agent and the gateway run in pods, so their client is the in-cluster
//! one: the API server from `KUBERNETES_SERVICE_HOST`/`_PORT`, its CA and a
//! bearer token from the pod's ServiceAccount volume, both re-read every
//! minute (kubelet rotates projected tokens; see [`crate::cluster_ca`] for
//! the CA). The connection is set up here rather than by `kube::Client::try_from(Config)`: that one also
//! brings kubeconfig authentication (exec plugins, whose output is parsed as
//! YAML and picked with JSONPath and regular expressions), about a tenth of
//! each proxy's code, resident in every proxy for a case that never happens
//! in a pod (bench/README.md, "Memory"). `kube::Client`, `Api` and the
//! watchers on top are kube's as usual.
//!
//! Built with `--features kubeconfig`, the proxies read `KUBECONFIG` or
//! `~/.kube/config` first, like kubectl (for running one outside a pod).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http::HeaderValue;
use http::header::AUTHORIZATION;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ConfigExt};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use crate::cluster_ca::ClusterCa;

/// How long a token read from the ServiceAccount volume is used before the
/// file is read again (kube-rs and client-go use the same minute).
pub const TOKEN_RELOAD: Duration = Duration::from_secs(60);
/// How often the cluster CA file is read again.
pub const CA_RELOAD: Duration = Duration::from_secs(60);

/// A client for the cluster this process runs in.
pub async fn connect() -> Result<kube::Client> {
    #[cfg(feature = "kubeconfig")]
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let config = kube::Config::infer()
            .await
            .context("reading KUBECONFIG or ~/.kube/config")?;
        return kube::Client::try_from(config).context("building the Kubernetes API client");
    }
    in_cluster()
}

/// The in-cluster client, from the pod's ServiceAccount.
fn in_cluster() -> Result<kube::Client> {
    let config = kube::Config::incluster().context(
        "reading the pod's ServiceAccount credentials (outside a pod, build with \
         --features kubeconfig to use a kubeconfig)",
    )?;
    let token_path = config
        .auth_info
        .token_file
        .clone()
        .map(PathBuf::from)
        .context("the in-cluster configuration names no token file")?;
    let token = Arc::new(TokenFile::new(token_path, TOKEN_RELOAD));
    token.header().context("reading the ServiceAccount token")?;

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(&config)?)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Body>(connector);

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        // As kube's default client: 429, 503 and 504 are retried with
        // backoff, honouring Retry-After.
        .layer(RetryLayer::new(RetryPolicy::server_retry()))
        .map_request(move |mut request: http::Request<Body>| {
            match token.header() {
                Ok(value) => {
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
                // The API answers 401, which the caller reports and retries.
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "no ServiceAccount token to send"
                    )
                }
            }
            request
        })
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// TLS to the API server: TLS 1.2 or 1.3, the cluster CA of the
/// ServiceAccount volume (re-read every [`CA_RELOAD`]), no client
/// certificate (the token authenticates).
fn tls_config(config: &kube::Config) -> Result<rustls::ClientConfig> {
    let path = config
        .root_cert_file
        .clone()
        .context("the in-cluster configuration names no CA file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = ClusterCa::load(path, CA_RELOAD, provider.clone())?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ca))
        .with_no_client_auth())
}

/// A bearer token file, re-read once its last reading is older than the
/// reload interval. A failed re-read keeps the token that was read last.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    reload: Duration,
    last: Mutex<Option<(HeaderValue, Instant)>>,
}

impl TokenFile {
    /// A token file at `path`, re-read every `reload`.
    pub fn new(path: PathBuf, reload: Duration) -> TokenFile {
        TokenFile {
            path,
            reload,
            last: Mutex::new(None),
        }
    }

    /// The `Authorization` header value for the current token.
    pub fn header(&self) -> Result<HeaderValue> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((value, read_at)) = last.as_ref()
            && read_at.elapsed() < self.reload
        {
            return Ok(value.clone());
        }
        match self.read() {
            Ok(value) => {
                *last = Some((value.clone(), Instant::now()));
                Ok(value)
            }
            Err(error) => match last.as_ref() {
                Some((value, _)) => {
                    tracing::warn!(path = %self.path.display(), error = format!("{error:#}"),
                        "re-reading the token failed; using the previous one");
                    Ok(value.clone())
                }
                None => Err(error),
            },
        }
    }

    fn read(&self) -> Result<HeaderValue> {
        let token = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let token = token.trim();
        anyhow::ensure!(!token.is_empty(), "{} is empty", self.path.display());
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .with_context(|| format!("{} is not a valid bearer token", self.path.display()))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_reread_after_the_interval_and_kept_when_the_file_goes() {
        let dir = std::env::temp_dir().join(format!("mc-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let token = TokenFile::new(path.clone(), Duration::from_millis(50));
        assert_eq!(token.header().unwrap(), "Bearer first");
        assert!(token.header().unwrap().is_sensitive());

        // Within the interval the file is not read again.
        std::fs::write(&path, "second").unwrap();
        assert_eq!(token.header().unwrap(), "Bearer first");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(token.header().unwrap(), "Bearer second");

        // A failed re-read keeps the last token.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(token.header().unwrap(), "Bearer second");
        std::fs::remove_dir_all(&dir).unwrap();

        // With nothing read yet, a missing file is an error that names it.
        let missing = TokenFile::new(dir.join("token"), TOKEN_RELOAD);
        let error = format!("{:#}", missing.header().unwrap_err());
        assert!(error.contains("token"), "{error}");
    }
}
