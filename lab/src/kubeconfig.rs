//! The lab's kubeconfig (one context per cluster, named after the cluster)
//! and kube clients built from it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_yaml::{Mapping, Value};

use crate::state::{LabDir, LabState};

/// Waits until every cluster daemon wrote its admin kubeconfig, then writes
/// the lab's kubeconfig with one context per cluster.
pub async fn wait_and_merge(dir: &LabDir, state: &LabState, deadline: Instant) -> Result<()> {
    let mut merged = Merged::default();
    for cluster in &state.clusters {
        let path = dir.admin_kubeconfig(&cluster.name);
        loop {
            if path.exists() {
                break;
            }
            crate::lifecycle::check_daemon(dir, cluster, &state.name)?;
            if Instant::now() > deadline {
                bail!(
                    "cluster {}'s daemon wrote no kubeconfig in time; see {}",
                    cluster.name,
                    dir.daemon_log(&cluster.name).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        merged
            .add(&cluster.name, &text)
            .with_context(|| format!("merging {}", path.display()))?;
    }
    let out = dir.kubeconfig();
    let text = serde_yaml::to_string(&merged.into_value()).context("serializing the kubeconfig")?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Accumulates per-cluster kubeconfigs into one.
#[derive(Default)]
struct Merged {
    clusters: Vec<Value>,
    users: Vec<Value>,
    contexts: Vec<Value>,
    first: Option<String>,
}

impl Merged {
    /// Adds the (first) cluster, user and context of `text` as context `name`.
    fn add(&mut self, name: &str, text: &str) -> Result<()> {
        let doc: Value = serde_yaml::from_str(text).context("not YAML")?;
        let first = |key: &str| -> Result<Value> {
            doc.get(key)
                .and_then(Value::as_sequence)
                .and_then(|s| s.first())
                .and_then(|entry| entry.get(key.trim_end_matches('s')))
                .cloned()
                .with_context(|| format!("no {key} entry"))
        };
        let user_name = format!("{name}-admin");
        self.clusters
            .push(named(name, "cluster", first("clusters")?));
        self.users.push(named(&user_name, "user", first("users")?));
        let mut context = Mapping::new();
        context.insert("cluster".into(), name.into());
        context.insert("user".into(), user_name.as_str().into());
        self.contexts
            .push(named(name, "context", Value::Mapping(context)));
        self.first.get_or_insert_with(|| name.to_string());
        Ok(())
    }

    fn into_value(self) -> Value {
        let mut doc = Mapping::new();
        doc.insert("apiVersion".into(), "v1".into());
        doc.insert("kind".into(), "Config".into());
        doc.insert("clusters".into(), Value::Sequence(self.clusters));
        doc.insert("users".into(), Value::Sequence(self.users));
        doc.insert("contexts".into(), Value::Sequence(self.contexts));
        doc.insert(
            "current-context".into(),
            self.first.unwrap_or_default().into(),
        );
        doc.insert("preferences".into(), Value::Mapping(Mapping::new()));
        Value::Mapping(doc)
    }
}

fn named(name: &str, key: &str, body: Value) -> Value {
    let mut entry = Mapping::new();
    entry.insert("name".into(), name.into());
    entry.insert(key.into(), body);
    Value::Mapping(entry)
}

/// A client for context `cluster` of the lab's kubeconfig.
pub async fn client(dir: &LabDir, cluster: &str) -> Result<kube::Client> {
    client_from_file(&dir.kubeconfig(), cluster).await
}

/// A client for context `context` of the kubeconfig at `path`.
pub async fn client_from_file(path: &std::path::Path, context: &str) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("context {context} of {}", path.display()))?;
    kube::Client::try_from(config).context("building a kube client")
}

/// Waits until cluster `cluster` answers `/readyz`, has `nodes` Ready
/// Nodes and a ready cluster DNS server.
pub async fn wait_ready(
    dir: &LabDir,
    cluster: &str,
    nodes: usize,
    deadline: Instant,
) -> Result<()> {
    let client = client(dir, cluster).await?;
    loop {
        let last = match ready_nodes(&client).await {
            Ok(ready) if ready >= nodes => match dns_ready(&client).await {
                Ok(true) => return Ok(()),
                Ok(false) => "CoreDNS is not ready yet".to_string(),
                Err(error) => format!("{error:#}"),
            },
            Ok(ready) => format!("{ready} of {nodes} nodes Ready"),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `kube-system/coredns` has a ready replica.
async fn dns_ready(client: &kube::Client) -> Result<bool> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), "kube-system")
        .get_opt("coredns")
        .await
        .context("reading Deployment kube-system/coredns")?;
    Ok(deployment
        .and_then(|d| d.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        > 0)
}

async fn ready_nodes(client: &kube::Client) -> Result<usize> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .context("building /readyz")?;
    client.request_text(request).await.context("GET /readyz")?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing Nodes")?;
    Ok(nodes
        .items
        .iter()
        .filter(|n| crate::nodes::is_ready(n))
        .count())
}
