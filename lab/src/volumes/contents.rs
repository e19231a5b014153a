//! The files of Secret, ConfigMap, downward API and projected volumes
//! (with ServiceAccount tokens from the TokenRequest API), read from the
//! API with the volume's `items`, modes and `optional` rules.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// Default file mode of Secret and ConfigMap volumes (0644).
const DEFAULT_MODE: u32 = 0o644;

/// One file of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A volume's files by relative path.
pub type Files = BTreeMap<String, File>;

/// Lifetime of a projected token when the projection names none (the API's
/// default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// ServiceAccount tokens already issued to a pod, by volume and path; each
/// is reused until 80% of its lifetime passed, as the kubelet does.
#[derive(Default)]
pub struct Tokens {
    issued: BTreeMap<(String, String), (String, Instant)>,
}

fn mode(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|m| u32::try_from(m).ok())
        .map_or(default, |m| m & 0o777)
}

/// The files of `volume` (a secret, configMap, downwardAPI or projected
/// volume) of `pod`.
pub async fn read(
    client: &kube::Client,
    pod: &Pod,
    volume: &Volume,
    tokens: &mut Tokens,
) -> Result<Files> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut files = Files::new();
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = secret_data(client, namespace, &name, secret.optional).await?;
        let default = mode(secret.default_mode, DEFAULT_MODE);
        select(
            &mut files,
            data,
            secret.items.as_deref(),
            secret.optional,
            default,
            "secret",
            &name,
        )?;
    } else if let Some(map) = &volume.config_map {
        let data = config_map_data(client, namespace, &map.name, map.optional).await?;
        let default = mode(map.default_mode, DEFAULT_MODE);
        select(
            &mut files,
            data,
            map.items.as_deref(),
            map.optional,
            default,
            "configmap",
            &map.name,
        )?;
    } else if let Some(downward) = &volume.downward_api {
        let default = mode(downward.default_mode, DEFAULT_MODE);
        for item in downward.items.iter().flatten() {
            downward_file(&mut files, pod, item, default)?;
        }
    } else if let Some(projected) = &volume.projected {
        let default = mode(projected.default_mode, DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            if let Some(secret) = &source.secret {
                let data = secret_data(client, namespace, &secret.name, secret.optional).await?;
                select(
                    &mut files,
                    data,
                    secret.items.as_deref(),
                    secret.optional,
                    default,
                    "secret",
                    &secret.name,
                )?;
            } else if let Some(map) = &source.config_map {
                let data = config_map_data(client, namespace, &map.name, map.optional).await?;
                select(
                    &mut files,
                    data,
                    map.items.as_deref(),
                    map.optional,
                    default,
                    "configmap",
                    &map.name,
                )?;
            } else if let Some(token) = &source.service_account_token {
                check_path(&token.path)?;
                let data = token_for(client, pod, &volume.name, token, tokens).await?;
                files.insert(
                    token.path.clone(),
                    File {
                        data: data.into_bytes(),
                        mode: default,
                    },
                );
            } else if let Some(downward) = &source.downward_api {
                for item in downward.items.iter().flatten() {
                    downward_file(&mut files, pod, item, default)?;
                }
            }
        }
    }
    Ok(files)
}

/// The token of projection `token` of `pod`: the one issued before while
/// it is fresh, else a new one from the TokenRequest API, bound to the pod.
async fn token_for(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    token: &ServiceAccountTokenProjection,
    tokens: &mut Tokens,
) -> Result<String> {
    let key = (volume.to_string(), token.path.clone());
    if let Some((value, refresh_at)) = tokens.issued.get(&key)
        && Instant::now() < *refresh_at
    {
        return Ok(value.clone());
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let seconds = token.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": token.audience.iter().collect::<Vec<_>>(),
            "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    }))
    .context("building a TokenRequest")?;
    let answer = Api::<ServiceAccount>::namespaced(client.clone(), &namespace)
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{account}"))?;
    let value = answer
        .status
        .map(|s| s.token)
        .context("the TokenRequest answer has no token")?;
    let lifetime = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    tokens
        .issued
        .insert(key, (value.clone(), Instant::now() + lifetime.mul_f64(0.8)));
    Ok(value)
}

/// Adds the downward API file `item` of `pod` (metadata fields only).
fn downward_file(
    files: &mut Files,
    pod: &Pod,
    item: &DownwardAPIVolumeFile,
    default_mode: u32,
) -> Result<()> {
    check_path(&item.path)?;
    let Some(field) = &item.field_ref else {
        bail!(
            "downward API file {}: the lab provides metadata fields only",
            item.path
        );
    };
    let meta = &pod.metadata;
    let map = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    let value = match field.field_path.as_str() {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map(&meta.labels),
        "metadata.annotations" => map(&meta.annotations),
        other => bail!("downward API file {}: unsupported field {other}", item.path),
    };
    files.insert(
        item.path.clone(),
        File {
            data: value.into_bytes(),
            mode: mode(item.mode, default_mode),
        },
    );
    Ok(())
}

async fn secret_data(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("reading secret {namespace}/{name}"))?;
    match secret {
        Some(secret) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => bail!("secret \"{name}\" not found"),
    }
}

async fn config_map_data(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("reading configmap {namespace}/{name}"))?;
    match map {
        Some(map) => {
            let mut data: BTreeMap<String, Vec<u8>> = map
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                map.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(data)
        }
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => bail!("configmap \"{name}\" not found"),
    }
}

/// Adds `data` to `files`: every key under its own name, or only the
/// `items` under their paths.
fn select(
    files: &mut Files,
    mut data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: u32,
    what: &str,
    name: &str,
) -> Result<()> {
    match items {
        None => {
            for (key, value) in data {
                files.insert(
                    key,
                    File {
                        data: value,
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.remove(&item.key) else {
                    if optional == Some(true) {
                        continue;
                    }
                    bail!("{what} {name:?} references non-existent key: {}", item.key);
                };
                check_path(&item.path)?;
                files.insert(
                    item.path.clone(),
                    File {
                        data: value,
                        mode: mode(item.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(())
}

/// A relative path without `..` elements, as the API validates it.
fn check_path(path: &str) -> Result<()> {
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|p| p == ".." || p.starts_with(".."))
    {
        bail!("invalid volume path {path:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pick_keys_and_paths() {
        let data = BTreeMap::from([
            ("tls.crt".to_string(), b"C".to_vec()),
            ("tls.key".to_string(), b"K".to_vec()),
        ]);
        let items = [KeyToPath {
            key: "tls.crt".into(),
            path: "certs/server.crt".into(),
            mode: Some(0o600),
        }];
        let mut files = Files::new();
        select(
            &mut files,
            data.clone(),
            Some(&items),
            None,
            DEFAULT_MODE,
            "secret",
            "s",
        )
        .expect("select");
        assert_eq!(files.len(), 1);
        assert_eq!(
            files["certs/server.crt"],
            File {
                data: b"C".to_vec(),
                mode: 0o600
            }
        );

        let mut all = Files::new();
        select(
            &mut all,
            data.clone(),
            None,
            None,
            DEFAULT_MODE,
            "secret",
            "s",
        )
        .expect("all");
        assert_eq!(
            all.keys().cloned().collect::<Vec<_>>(),
            vec!["tls.crt", "tls.key"]
        );

        let missing = [KeyToPath {
            key: "ca.crt".into(),
            path: "ca.crt".into(),
            mode: None,
        }];
        assert!(
            select(
                &mut Files::new(),
                data.clone(),
                Some(&missing),
                None,
                DEFAULT_MODE,
                "secret",
                "s"
            )
            .is_err()
        );
        assert!(
            select(
                &mut Files::new(),
                data,
                Some(&missing),
                Some(true),
                DEFAULT_MODE,
                "secret",
                "s"
            )
            .is_ok()
        );
        assert!(check_path("../x").is_err());
    }
}
