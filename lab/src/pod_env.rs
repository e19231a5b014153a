//! A container's environment as the kubelet builds it: a clean base, the
//! in-cluster API variables, the pod's identity, then the container's own
//! `env` (values, field references, Secret and ConfigMap keys).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

use crate::plan::ClusterPlan;

/// Facts about a pod the environment refers to.
pub struct PodFacts<'a> {
    /// The pod object.
    pub pod: &'a Pod,
    /// Its IP.
    pub pod_ip: Ipv4Addr,
    /// Its node's IP.
    pub host_ip: Ipv4Addr,
    /// Its node's name.
    pub node_name: &'a str,
    /// Its cluster.
    pub cluster: &'a ClusterPlan,
}

/// The environment of `container`, with `bin_dirs` (where mc-lab, the
/// other built binaries and the Kubernetes components live) first on PATH.
pub async fn build(
    client: &kube::Client,
    facts: &PodFacts<'_>,
    container: &Container,
    bin_dirs: &[&Path],
) -> Result<BTreeMap<String, String>> {
    let meta = &facts.pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let host_network = facts
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let mut env = BTreeMap::new();
    let mut path: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
    path.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let path = path.join(":");
    env.insert("PATH".into(), path);
    env.insert("HOME".into(), "/root".into());
    env.insert(
        "HOSTNAME".into(),
        if host_network {
            facts.node_name.to_string()
        } else {
            name.clone()
        },
    );
    let api_ip = facts.cluster.kubernetes_service_ip().to_string();
    env.insert("KUBERNETES_SERVICE_HOST".into(), api_ip.clone());
    env.insert("KUBERNETES_SERVICE_PORT".into(), "443".into());
    env.insert("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into());
    env.insert("KUBERNETES_PORT".into(), format!("tcp://{api_ip}:443"));
    env.insert("POD_NAME".into(), name.clone());
    env.insert("POD_NAMESPACE".into(), namespace.clone());
    env.insert("POD_IP".into(), facts.pod_ip.to_string());
    env.insert("NODE_NAME".into(), facts.node_name.to_string());
    env.insert("MC_LAB_CLUSTER".into(), facts.cluster.name.clone());
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    Some(field_value(facts, &field.field_path)?)
                } else if let Some(key) = &from.secret_key_ref {
                    let api = Api::<Secret>::namespaced(client.clone(), &namespace);
                    let secret = api
                        .get_opt(&key.name)
                        .await
                        .with_context(|| format!("reading Secret {}", key.name))?;
                    let bytes = secret
                        .and_then(|s| s.data)
                        .and_then(|d| d.get(&key.key).cloned());
                    match bytes {
                        Some(b) => Some(String::from_utf8_lossy(&b.0).into_owned()),
                        None if key.optional == Some(true) => None,
                        None => bail!("Secret {} has no key {}", key.name, key.key),
                    }
                } else if let Some(key) = &from.config_map_key_ref {
                    let api = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
                    let map = api
                        .get_opt(&key.name)
                        .await
                        .with_context(|| format!("reading ConfigMap {}", key.name))?;
                    match map
                        .and_then(|m| m.data)
                        .and_then(|d| d.get(&key.key).cloned())
                    {
                        Some(v) => Some(v),
                        None if key.optional == Some(true) => None,
                        None => bail!("ConfigMap {} has no key {}", key.name, key.key),
                    }
                } else {
                    bail!(
                        "env {}: resourceFieldRef is not supported by the lab",
                        var.name
                    )
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.insert(var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The value of a downward-API field reference.
fn field_value(facts: &PodFacts<'_>, path: &str) -> Result<String> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        other => {
            let label = other
                .strip_prefix("metadata.labels['")
                .and_then(|s| s.strip_suffix("']"));
            let annotation = other
                .strip_prefix("metadata.annotations['")
                .and_then(|s| s.strip_suffix("']"));
            if let Some(key) = label {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = annotation {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(key).cloned())
                    .unwrap_or_default()
            } else {
                bail!("field reference {other} is not supported")
            }
        }
    })
}

/// Where `program` (a bare name) is found on `path` (a `PATH` value): the
/// first regular, executable file of that name.
pub fn find_program(program: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_path_only_when_executable() {
        assert!(find_program("sh", "/nonexistent:/bin:/usr/bin").is_some());
        assert!(find_program("no-such-program-mc", "/bin:/usr/bin").is_none());
        assert!(
            find_program("passwd", "/etc").is_none(),
            "/etc/passwd is not executable"
        );
    }
}
