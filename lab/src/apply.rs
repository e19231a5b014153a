//! `mc-lab apply -f FILE`: a minimal `kubectl create-or-replace` for the
//! demo and the tests, so they need no kubectl. Every YAML document (and
//! every item of a `kind: List`) is resolved through API discovery, created,
//! or replaced when it exists (keeping its resourceVersion). With `--wait`,
//! Deployments, DaemonSets and Pods it applied are waited for until they are
//! rolled out and ready, like `kubectl rollout status`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::Deserialize;
use serde_json::Value;

use crate::state::LabDir;

/// Attempts at a replace that races another writer.
const REPLACE_ATTEMPTS: usize = 3;

/// What `mc-lab apply` does.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    /// The manifest file, `-` for standard input.
    pub file: String,
    /// The cluster (kubeconfig context) to apply to.
    pub cluster: String,
    /// Namespace of namespaced objects that name none.
    pub namespace: String,
    /// Wait for applied workloads to be ready, at most this long.
    pub wait: Option<Duration>,
}

/// One object to apply, with what discovery said about its kind.
struct Resolved {
    resource: ApiResource,
    namespace: Option<String>,
    object: DynamicObject,
}

impl Resolved {
    fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// `deployment.apps/backend`, as kubectl prints it.
    fn short(&self) -> String {
        let kind = self.resource.kind.to_lowercase();
        match self.resource.group.as_str() {
            "" => format!("{kind}/{}", self.name()),
            group => format!("{kind}.{group}/{}", self.name()),
        }
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// Applies every object of the request's file and prints one line each.
pub async fn apply(lab: &str, req: &ApplyRequest) -> Result<()> {
    let text = read_manifest(&req.file)?;
    let documents = parse_documents(&text).with_context(|| format!("parsing {}", req.file))?;
    if documents.is_empty() {
        bail!("{} holds no objects", req.file);
    }
    let client = crate::kubeconfig::client(&LabDir::new(lab), &req.cluster).await?;
    let mut kinds: HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)> = HashMap::new();
    let mut applied = Vec::new();
    for document in documents {
        let resolved = resolve(&client, &mut kinds, document, &req.namespace).await?;
        let verb = apply_one(&client, &resolved).await?;
        println!("{} {verb}", resolved.short());
        applied.push(resolved);
    }
    if let Some(timeout) = req.wait {
        let deadline = Instant::now() + timeout;
        for resolved in &applied {
            wait_ready(&client, resolved, deadline).await?;
        }
    }
    Ok(())
}

fn read_manifest(file: &str) -> Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the manifest from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(Path::new(file)).with_context(|| format!("reading {file}"))
}

/// The objects of a multi-document YAML text, `kind: List` flattened,
/// empty documents skipped.
fn parse_documents(text: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("document {}", index + 1))?;
        if value.is_null() {
            continue;
        }
        let json: Value = serde_json::to_value(value)
            .with_context(|| format!("document {} is not a JSON-compatible object", index + 1))?;
        let is_list = json.get("kind").and_then(Value::as_str) == Some("List");
        match (is_list, json.get("items").and_then(Value::as_array)) {
            (true, Some(items)) => objects.extend(items.iter().cloned()),
            (true, None) => {}
            (false, _) => objects.push(json),
        }
    }
    Ok(objects)
}

/// The group, version and kind an object names.
fn gvk_of(object: &Value) -> Result<GroupVersionKind> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("an object has no apiVersion"))?;
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("an object of {api_version} has no kind"))?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Ok(GroupVersionKind::gvk(group, version, kind))
}

async fn resolve(
    client: &kube::Client,
    kinds: &mut HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>,
    document: Value,
    default_namespace: &str,
) -> Result<Resolved> {
    let gvk = gvk_of(&document)?;
    if !kinds.contains_key(&gvk) {
        let found = kube::discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| {
                format!(
                    "the cluster does not serve kind {} of {}/{}",
                    gvk.kind, gvk.group, gvk.version
                )
            })?;
        kinds.insert(gvk.clone(), found);
    }
    let (resource, capabilities) = kinds
        .get(&gvk)
        .cloned()
        .ok_or_else(|| anyhow!("discovery lost kind {}", gvk.kind))?;
    let mut object: DynamicObject = serde_json::from_value(document)
        .with_context(|| format!("reading a {} object", gvk.kind))?;
    if object
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        bail!("a {} object has no metadata.name", gvk.kind);
    }
    let namespace = match capabilities.scope {
        Scope::Namespaced => {
            let ns = object
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| default_namespace.to_string());
            object.metadata.namespace = Some(ns.clone());
            Some(ns)
        }
        Scope::Cluster => {
            object.metadata.namespace = None;
            None
        }
    };
    Ok(Resolved {
        resource,
        namespace,
        object,
    })
}

fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Creates the object, or replaces it when it exists; returns the verb.
async fn apply_one(client: &kube::Client, resolved: &Resolved) -> Result<&'static str> {
    let api = resolved.api(client);
    let what = resolved.short();
    match api.create(&PostParams::default(), &resolved.object).await {
        Ok(_) => return Ok("created"),
        Err(e) if status_code(&e) == Some(409) => {}
        Err(e) => return Err(anyhow!(e).context(format!("creating {what}"))),
    }
    let mut last = None;
    for _ in 0..REPLACE_ATTEMPTS {
        let current = api
            .get(resolved.name())
            .await
            .with_context(|| format!("reading {what}"))?;
        let mut desired = resolved.object.clone();
        desired.metadata.resource_version = current.metadata.resource_version;
        match api
            .replace(resolved.name(), &PostParams::default(), &desired)
            .await
        {
            Ok(_) => return Ok("replaced"),
            Err(e) if status_code(&e) == Some(409) => last = Some(e),
            Err(e) => return Err(anyhow!(e).context(format!("replacing {what}"))),
        }
    }
    let error = last
        .map(|e| anyhow!(e))
        .unwrap_or_else(|| anyhow!("no attempt"));
    Err(error.context(format!("replacing {what}: it kept changing concurrently")))
}

/// Why a workload is not ready yet, or `None` when it is (or is not a
/// kind that has a readiness to wait for).
fn not_ready(kind: &str, object: &Value) -> Option<String> {
    let int = |path: &str| object.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    let generation = int("/metadata/generation");
    match kind {
        "Deployment" => {
            let want = object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let (updated, ready, total) = (
                int("/status/updatedReplicas"),
                int("/status/readyReplicas"),
                int("/status/replicas"),
            );
            if int("/status/observedGeneration") < generation {
                Some("the new generation is not observed yet".into())
            } else if updated < want || ready < want || total > want {
                Some(format!(
                    "{updated} of {want} updated, {ready} ready, {total} in total"
                ))
            } else {
                None
            }
        }
        "DaemonSet" => {
            let want = int("/status/desiredNumberScheduled");
            let (updated, ready) = (
                int("/status/updatedNumberScheduled"),
                int("/status/numberReady"),
            );
            if int("/status/observedGeneration") < generation {
                Some("the new generation is not observed yet".into())
            } else if updated < want || ready < want {
                Some(format!("{updated} of {want} updated, {ready} ready"))
            } else {
                None
            }
        }
        "Pod" => {
            let ready = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|conditions| {
                    conditions.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Ready")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            (!ready).then(|| "not Ready".to_string())
        }
        _ => None,
    }
}

/// Waits until a Deployment, DaemonSet or Pod is ready; other kinds pass.
async fn wait_ready(client: &kube::Client, resolved: &Resolved, deadline: Instant) -> Result<()> {
    let kind = resolved.resource.kind.as_str();
    if !matches!(kind, "Deployment" | "DaemonSet" | "Pod") {
        return Ok(());
    }
    let api = resolved.api(client);
    let what = resolved.short();
    loop {
        let current = api
            .get(resolved.name())
            .await
            .with_context(|| format!("reading {what}"))?;
        let value = serde_json::to_value(&current).with_context(|| format!("reading {what}"))?;
        let Some(reason) = not_ready(kind, &value) else {
            println!("{what} ready");
            return Ok(());
        };
        if Instant::now() > deadline {
            bail!("{what} is not ready in time: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_are_split_lists_flattened_and_empty_ones_skipped() {
        let text = "---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n\
                    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}\n";
        let objects = parse_documents(text).unwrap();
        let names: Vec<_> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn api_versions_split_into_group_and_version() {
        let core = gvk_of(&json!({"apiVersion": "v1", "kind": "Service"})).unwrap();
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        let apps = gvk_of(&json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap();
        assert_eq!((apps.group.as_str(), apps.version.as_str()), ("apps", "v1"));
        assert!(gvk_of(&json!({"kind": "Service"})).is_err());
        assert!(gvk_of(&json!({"apiVersion": "v1"})).is_err());
    }

    #[test]
    fn a_deployment_is_ready_only_when_every_replica_is_updated_and_ready() {
        let mut deployment = json!({
            "metadata": {"generation": 2},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2}
        });
        assert!(not_ready("Deployment", &deployment).is_some());
        deployment["status"]["readyReplicas"] = json!(3);
        assert_eq!(not_ready("Deployment", &deployment), None);
        deployment["metadata"]["generation"] = json!(3);
        assert!(not_ready("Deployment", &deployment).is_some());
    }

    #[test]
    fn a_pod_is_ready_with_its_ready_condition() {
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(not_ready("Pod", &pod).is_some());
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(not_ready("Pod", &pod), None);
        assert_eq!(not_ready("Service", &json!({})), None);
    }
}
