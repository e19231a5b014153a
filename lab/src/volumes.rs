//! The volumes of a pod's (first) container, as the kubelet provides
//! them: Secret, ConfigMap, downward API and projected (secret, configMap,
//! serviceAccountToken, downwardAPI) volumes are
//! files in the pod's directory, written atomically and kept in step with
//! their objects; emptyDir is a directory of the pod; hostPath is the
//! host's path. `pod-init` bind-mounts each at its `mountPath` (Secret,
//! ConfigMap and projected read-only) in the pod's mount namespace.

mod atomic;
mod contents;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Volume};
use serde::{Deserialize, Serialize};

pub use self::contents::{Files, Tokens, read as read_contents};

/// One bind mount `pod-init` makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Directory (or file) on the host.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// The `--mount` argument of `pod-init` (JSON).
    pub fn to_arg(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a `--mount` argument.
    pub fn from_arg(arg: &str) -> Result<Self> {
        serde_json::from_str(arg).with_context(|| format!("invalid --mount {arg:?}"))
    }
}

/// How the kubelet provides a volume.
enum Kind<'a> {
    /// Files from the API, under the pod's directory.
    Files,
    /// A scratch directory of the pod.
    EmptyDir,
    /// A host path, created first for `DirectoryOrCreate`.
    HostPath { path: &'a str, create: bool },
}

fn kind(volume: &Volume) -> Result<Kind<'_>> {
    if volume.secret.is_some() || volume.config_map.is_some() || volume.downward_api.is_some() {
        return Ok(Kind::Files);
    }
    if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if source.secret.is_none()
                && source.config_map.is_none()
                && source.service_account_token.is_none()
                && source.downward_api.is_none()
            {
                bail!(
                    "volume {}: the lab projects secret, configMap, serviceAccountToken and downwardAPI sources only",
                    volume.name
                );
            }
        }
        return Ok(Kind::Files);
    }
    if volume.empty_dir.is_some() {
        return Ok(Kind::EmptyDir);
    }
    if let Some(host) = &volume.host_path {
        return Ok(Kind::HostPath {
            path: &host.path,
            create: host.type_.as_deref() == Some("DirectoryOrCreate"),
        });
    }
    bail!(
        "volume {}: the lab supports secret, configMap, projected, emptyDir and hostPath volumes",
        volume.name
    )
}

/// Where the files of volume `name` of a pod live.
fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// The mounts of the pod's first container, from its spec alone (so
/// `mc-lab exec` finds the same ones the kubelet made).
pub fn mounts(pod: &Pod, pod_dir: &Path) -> Result<Vec<Mount>> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let Some(container) = spec.containers.first() else {
        return Ok(Vec::new());
    };
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut out = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(mount.name.as_str())
            .with_context(|| format!("volumeMount {}: the pod has no such volume", mount.name))?;
        if mount.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
            bail!(
                "volumeMount {}: subPath is not supported by the lab",
                mount.name
            );
        }
        let (source, read_only) = match kind(volume)? {
            Kind::Files => (volume_dir(pod_dir, &volume.name), true),
            Kind::EmptyDir => (
                volume_dir(pod_dir, &volume.name),
                mount.read_only == Some(true),
            ),
            Kind::HostPath { path, .. } => (PathBuf::from(path), mount.read_only == Some(true)),
        };
        out.push(Mount {
            source,
            target: PathBuf::from(&mount.mount_path),
            read_only,
        });
    }
    Ok(out)
}

/// Creates the directories of emptyDir and `DirectoryOrCreate` hostPath
/// volumes the first container mounts.
pub fn create_dirs(pod: &Pod, pod_dir: &Path) -> Result<()> {
    for volume in mounted_volumes(pod) {
        let dir = match kind(volume)? {
            Kind::Files => continue,
            Kind::EmptyDir => volume_dir(pod_dir, &volume.name),
            Kind::HostPath { path, create } => {
                if !create {
                    continue;
                }
                PathBuf::from(path)
            }
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("volume {}: cannot create {}", volume.name, dir.display()))?;
    }
    Ok(())
}

/// The volumes the first container mounts.
fn mounted_volumes(pod: &Pod) -> Vec<&Volume> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let names: Vec<&str> = spec
        .containers
        .first()
        .into_iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .map(|m| m.name.as_str())
        .collect();
    spec.volumes
        .iter()
        .flatten()
        .filter(|v| names.contains(&v.name.as_str()))
        .collect()
}

/// Keeps the file volumes of one pod in step with their Secrets and
/// ConfigMaps: [`FileVolumes::sync`] rewrites a volume (atomically) only
/// when its contents changed since the last write.
pub struct FileVolumes {
    pod: Pod,
    pod_dir: PathBuf,
    written: BTreeMap<String, Files>,
    tokens: Tokens,
}

impl FileVolumes {
    /// The file volumes of `pod`, written under `pod_dir`.
    pub fn new(pod: &Pod, pod_dir: &Path) -> Self {
        FileVolumes {
            pod: pod.clone(),
            pod_dir: pod_dir.to_path_buf(),
            written: BTreeMap::new(),
            tokens: Tokens::default(),
        }
    }

    /// Reads every file volume from the API and writes those that
    /// changed. Fails when a non-optional Secret, ConfigMap or key is
    /// missing (the pod cannot start, or keeps its last files).
    pub async fn sync(&mut self, client: &kube::Client) -> Result<()> {
        for volume in mounted_volumes(&self.pod) {
            if !matches!(kind(volume)?, Kind::Files) {
                continue;
            }
            let files = read_contents(client, &self.pod, volume, &mut self.tokens)
                .await
                .with_context(|| {
                    format!("MountVolume.SetUp failed for volume {:?}", volume.name)
                })?;
            if self.written.get(&volume.name) == Some(&files) {
                continue;
            }
            let dir = volume_dir(&self.pod_dir, &volume.name);
            atomic::write(&dir, &files)
                .with_context(|| format!("writing volume {} to {}", volume.name, dir.display()))?;
            tracing::debug!(pod = ?self.pod.metadata.name, volume = %volume.name, "volume written");
            self.written.insert(volume.name.clone(), files);
        }
        Ok(())
    }

    /// Whether the pod has any file volume to keep in step.
    pub fn is_empty(&self) -> bool {
        mounted_volumes(&self.pod)
            .into_iter()
            .all(|v| !matches!(kind(v), Ok(Kind::Files)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"volumes": volumes,
                     "containers": [{"name": "c", "volumeMounts": mounts}]},
        }))
        .expect("pod")
    }

    #[test]
    fn secrets_are_read_only_and_come_from_the_pod_directory() {
        let p = pod(
            json!([{"name": "id", "secret": {"secretName": "s"}},
                   {"name": "scratch", "emptyDir": {}},
                   {"name": "unused", "gcePersistentDisk": {"pdName": "x"}}]),
            json!([{"name": "id", "mountPath": "/var/run/mc/identity"},
                   {"name": "scratch", "mountPath": "/tmp/x"}]),
        );
        let mounts = mounts(&p, Path::new("/pods/u")).expect("mounts");
        assert_eq!(
            mounts,
            vec![
                Mount {
                    source: "/pods/u/volumes/id".into(),
                    target: "/var/run/mc/identity".into(),
                    read_only: true
                },
                Mount {
                    source: "/pods/u/volumes/scratch".into(),
                    target: "/tmp/x".into(),
                    read_only: false
                },
            ]
        );
        let arg = mounts[0].to_arg();
        assert_eq!(Mount::from_arg(&arg).expect("parse"), mounts[0]);
    }

    #[test]
    fn unsupported_volumes_that_are_mounted_are_refused() {
        let p = pod(
            json!([{"name": "disk", "gcePersistentDisk": {"pdName": "x"}}]),
            json!([{"name": "disk", "mountPath": "/d"}]),
        );
        let error = mounts(&p, Path::new("/pods/u")).expect_err("refused");
        assert!(format!("{error}").contains("volume disk"), "{error}");
    }
}
