//! Reaching a remote cluster's API through a Link's credentials Secret, and
//! telling apart what can go wrong there.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use sha2::{Digest, Sha256};

/// The Secret key holding the remote kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// How long connecting to a remote API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence on a remote connection before it counts as broken.
/// Longer than the watch timeout the watcher asks for (290 s by default).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the credentials could not even be turned into a client.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret has no `kubeconfig` key.
    #[error("Secret has no {KUBECONFIG_KEY:?} key")]
    MissingKey,
    /// The kubeconfig does not parse or names no usable context.
    #[error("kubeconfig is invalid: {0}")]
    Invalid(String),
    /// The kubeconfig would run a program or read a file of the
    /// controller's (which can read the issuer key): mc takes inline
    /// credentials only.
    #[error(
        "kubeconfig is refused: {0}; a Link's credentials must be inline \
         (token or client-certificate-data/client-key-data, certificate-authority-data), \
         as `kubectl mc link` writes them"
    )]
    Refused(String),
}

/// Refuses a kubeconfig that names a program to run (`exec`,
/// `auth-provider`) or a file to read (`tokenFile`, `client-certificate`,
/// `client-key`, `certificate-authority`) in any entry: whoever can write
/// the Link's Secret must not get code run, or files read, in the
/// controller.
fn refuse_local_effects(kubeconfig: &Kubeconfig) -> Result<(), CredentialsError> {
    let mut found = Vec::new();
    for named in &kubeconfig.auth_infos {
        let Some(user) = &named.auth_info else {
            continue;
        };
        for (field, present) in [
            ("exec", user.exec.is_some()),
            ("auth-provider", user.auth_provider.is_some()),
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
        ] {
            if present {
                found.push(format!("user {:?} uses {field}", named.name));
            }
        }
    }
    for named in &kubeconfig.clusters {
        if named
            .cluster
            .as_ref()
            .is_some_and(|c| c.certificate_authority.is_some())
        {
            found.push(format!(
                "cluster {:?} uses certificate-authority (a file)",
                named.name
            ));
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(CredentialsError::Refused(found.join(", ")))
    }
}

/// A fingerprint of the Secret's kubeconfig: changes exactly when the
/// credentials do (not on label or annotation edits).
pub fn fingerprint(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(KUBECONFIG_KEY)?;
    Some(hex::encode(Sha256::digest(&bytes.0)))
}

/// A client for the remote API from the Secret's kubeconfig (its current
/// context).
pub async fn client_from_secret(secret: &Secret) -> Result<Client, CredentialsError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .ok_or(CredentialsError::MissingKey)?;
    let yaml = std::str::from_utf8(&bytes.0)
        .map_err(|e| CredentialsError::Invalid(format!("not UTF-8: {e}")))?;
    let kubeconfig =
        Kubeconfig::from_yaml(yaml).map_err(|e| CredentialsError::Invalid(e.to_string()))?;
    refuse_local_effects(&kubeconfig)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| CredentialsError::Invalid(e.to_string()))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    Client::try_from(config).map_err(|e| CredentialsError::Invalid(e.to_string()))
}

/// What a failed remote request says about the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFailure {
    /// The API answered 401: the token is wrong, expired or revoked.
    Unauthorized(String),
    /// The API answered 403: the ServiceAccount may not list Services.
    Forbidden(String),
    /// The API did not answer (connection refused, timeout, TLS failure).
    Unreachable(String),
    /// The API answered with another error.
    Failed(String),
}

/// Classifies a watcher error from the remote API.
pub fn classify(error: &watcher::Error) -> RemoteFailure {
    let client_error = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => return from_code(status.code, &status.message),
        watcher::Error::NoResourceVersion => return RemoteFailure::Failed(error.to_string()),
    };
    classify_client(client_error)
}

/// Classifies a failed remote request.
pub fn classify_client(error: &kube::Error) -> RemoteFailure {
    match error {
        kube::Error::Api(status) => from_code(status.code, &status.message),
        other => RemoteFailure::Unreachable(chain(other)),
    }
}

fn from_code(code: u16, message: &str) -> RemoteFailure {
    match code {
        401 => RemoteFailure::Unauthorized(message.to_string()),
        403 => RemoteFailure::Forbidden(message.to_string()),
        _ => RemoteFailure::Failed(format!("{code}: {message}")),
    }
}

/// An error with its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(kubeconfig: Option<&str>) -> Secret {
        Secret {
            data: kubeconfig.map(|k| {
                BTreeMap::from([(
                    KUBECONFIG_KEY.to_string(),
                    ByteString(k.as_bytes().to_vec()),
                )])
            }),
            ..Secret::default()
        }
    }

    #[tokio::test]
    async fn bad_secrets_are_credential_errors() {
        assert!(matches!(
            client_from_secret(&secret(None)).await,
            Err(CredentialsError::MissingKey)
        ));
        assert!(matches!(
            client_from_secret(&secret(Some("clusters: [oops"))).await,
            Err(CredentialsError::Invalid(_))
        ));
    }

    /// A kubeconfig with `user` as its one user's fields.
    fn kubeconfig_with(user: &str, cluster: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: east\n  cluster:\n    \
             server: https://192.0.2.1:6443\n{cluster}users:\n- name: reader\n  user:\n{user}\
             contexts:\n- name: east\n  context: {{cluster: east, user: reader}}\n\
             current-context: east\n"
        )
    }

    #[tokio::test]
    async fn kubeconfigs_that_run_programs_or_read_files_are_refused() {
        let refused = [
            (
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'id > /tmp/pwned']\n",
                "",
                "exec",
            ),
            (
                "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n",
                "",
                "tokenFile",
            ),
            (
                "    client-certificate: /etc/mc/cert.pem\n    client-key: /etc/mc/key.pem\n",
                "",
                "client-certificate",
            ),
            (
                "    auth-provider:\n      name: oidc\n",
                "",
                "auth-provider",
            ),
            (
                "    token: abc\n",
                "    certificate-authority: /etc/mc/ca.crt\n",
                "certificate-authority",
            ),
        ];
        for (user, cluster, field) in refused {
            match client_from_secret(&secret(Some(&kubeconfig_with(user, cluster)))).await {
                Err(CredentialsError::Refused(why)) => {
                    assert!(why.contains(field), "{field}: {why}")
                }
                other => panic!("{field} was not refused: {:?}", other.map(|_| "a client")),
            }
        }
        let inline = kubeconfig_with("    token: abc\n", "");
        assert!(
            client_from_secret(&secret(Some(&inline))).await.is_ok(),
            "an inline token is what link writes"
        );
    }

    #[test]
    fn the_fingerprint_follows_the_kubeconfig_only() {
        let a = secret(Some("a"));
        let mut relabelled = a.clone();
        relabelled.metadata.labels = Some(BTreeMap::from([("x".into(), "y".into())]));
        assert_eq!(fingerprint(&a), fingerprint(&relabelled));
        assert_ne!(fingerprint(&a), fingerprint(&secret(Some("b"))));
        assert_eq!(fingerprint(&secret(None)), None);
    }

    #[test]
    fn api_codes_are_classified() {
        let status = |code| {
            Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..kube::core::Status::default()
            })
        };
        assert_eq!(
            classify(&watcher::Error::InitialListFailed(kube::Error::Api(
                status(401)
            ))),
            RemoteFailure::Unauthorized("m".into())
        );
        assert_eq!(
            classify(&watcher::Error::WatchError(status(403))),
            RemoteFailure::Forbidden("m".into())
        );
    }
}
