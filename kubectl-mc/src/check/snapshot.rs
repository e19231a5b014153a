//! Everything `check` looks at, read once: the checks themselves are pure
//! functions of this snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ListParams;
use kube::{Api, Resource};
use mc_api::Link;
use serde::de::DeserializeOwned;

use super::tls_probe::{self, GatewayTls};
use crate::kube_ctx::KubeContext;
use crate::manifests::meta::{
    CONFIG_MAP, CONTROLLER, GATEWAY, ISSUER_SECRET, NODE_AGENT, TRUST_ANCHOR_SECRET,
};
use crate::mesh_config::MeshConfig;

/// An object read by name: absent, present, or the read failed (message).
pub type Fetched<T> = Result<Option<T>, String>;

/// A linked cluster read through the user's own context for it.
#[derive(Debug, Clone)]
pub struct RemoteSnapshot {
    /// The context used.
    pub context: String,
    /// Its `mc-config`.
    pub config: Result<MeshConfig, String>,
    /// Its `mc-trust-anchor` ca.crt.
    pub anchor_pem: Fetched<String>,
    /// `namespace/name` of the Services a Link's selector matches there,
    /// keyed by the selector string.
    pub selected: BTreeMap<String, Result<Vec<String>, String>>,
}

/// What `check` read from the cluster (and from linked ones).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The context checked.
    pub context: String,
    /// The Link CRD.
    pub crd: Fetched<CustomResourceDefinition>,
    /// `mc-config`.
    pub config: Fetched<ConfigMap>,
    /// ServiceAccounts of the components, by name.
    pub service_accounts: BTreeMap<String, Fetched<ServiceAccount>>,
    /// ClusterRoles of the components, by name.
    pub cluster_roles: BTreeMap<String, Fetched<ClusterRole>>,
    /// ClusterRoleBindings of the components, by name.
    pub cluster_role_bindings: BTreeMap<String, Fetched<ClusterRoleBinding>>,
    /// Roles in mc-system, by name.
    pub roles: BTreeMap<String, Fetched<Role>>,
    /// RoleBindings in mc-system, by name.
    pub role_bindings: BTreeMap<String, Fetched<RoleBinding>>,
    /// The controller and gateway Deployments, by name.
    pub deployments: BTreeMap<String, Fetched<Deployment>>,
    /// The node agent DaemonSet.
    pub daemon_set: Fetched<DaemonSet>,
    /// The gateway Service.
    pub gateway_service: Fetched<Service>,
    /// Secrets in mc-system, by name (identity ones and each Link's).
    pub secrets: BTreeMap<String, Fetched<Secret>>,
    /// Links in mc-system.
    pub links: Result<Vec<Link>, String>,
    /// Mirror Services in every namespace.
    pub mirrors: Result<Vec<Service>, String>,
    /// Exported Services in every namespace.
    pub exported: Result<Vec<Service>, String>,
    /// Linked clusters reached through --remote-context.
    pub remotes: Vec<RemoteSnapshot>,
    /// TLS to each Link's gateway from here, by Link name.
    pub gateway_tls: BTreeMap<String, GatewayTls>,
    /// Unix seconds when the snapshot was taken.
    pub now: i64,
}

async fn get<K>(ctx: &KubeContext, api: &Api<K>, name: &str) -> Fetched<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| format!("{}", ctx.error(format!("reading {name}"), &e)))
}

/// `matchLabels` and `matchExpressions` as an API label selector string.
pub fn selector_string(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return mc_api::labels::EXPORTED_SELECTOR.to_string();
    };
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            _ => format!("!{}", expr.key),
        });
    }
    parts.join(",")
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// The PEM under `key` of a fetched Secret.
pub fn fetched_text(secret: &Fetched<Secret>, key: &str) -> Fetched<String> {
    match secret {
        Ok(Some(s)) => Ok(secret_text(s, key)),
        Ok(None) => Ok(None),
        Err(e) => Err(e.clone()),
    }
}

async fn remote(
    global: &crate::cli::Global,
    name: &str,
    selectors: &[String],
    timeout: Duration,
) -> RemoteSnapshot {
    let failed = |message: String| RemoteSnapshot {
        context: name.to_string(),
        config: Err(message),
        anchor_pem: Ok(None),
        selected: BTreeMap::new(),
    };
    let ctx = match tokio::time::timeout(
        timeout.max(Duration::from_secs(10)),
        KubeContext::connect_reachable(global, Some(name)),
    )
    .await
    {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(e)) => return failed(format!("{e:#}")),
        Err(_) => return failed(format!("context {name:?} did not answer")),
    };
    let config = crate::mesh_config::read(&ctx)
        .await
        .map_err(|e| format!("{e:#}"));
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), mc_api::NAMESPACE);
    let anchor_pem = fetched_text(&get(&ctx, &secrets, TRUST_ANCHOR_SECRET).await, "ca.crt");
    let services: Api<Service> = Api::all(ctx.client.clone());
    let mut selected = BTreeMap::new();
    for selector in selectors {
        let listed = services
            .list(&ListParams::default().labels(selector))
            .await
            .map(|list| {
                let mut names: Vec<String> = list
                    .items
                    .iter()
                    .map(|s| {
                        format!(
                            "{}/{}",
                            s.metadata.namespace.clone().unwrap_or_default(),
                            s.metadata.name.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                names.sort();
                names
            })
            .map_err(|e| {
                format!(
                    "{}",
                    ctx.error(format!("listing Services ({selector})"), &e)
                )
            });
        selected.insert(selector.clone(), listed);
    }
    RemoteSnapshot {
        context: ctx.name,
        config,
        anchor_pem,
        selected,
    }
}

/// Reads everything the checks need.
pub async fn take(
    ctx: &KubeContext,
    global: &crate::cli::Global,
    remote_contexts: &[String],
    timeout: Duration,
) -> Snapshot {
    let client = ctx.client.clone();
    let ns = mc_api::NAMESPACE;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let crs: Api<ClusterRole> = Api::all(client.clone());
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let links_api: Api<Link> = Api::namespaced(client.clone(), ns);
    let all_services: Api<Service> = Api::all(client.clone());

    let mut snap = Snapshot {
        context: ctx.name.clone(),
        crd: get(ctx, &crds, "links.mc.dev").await,
        config: get(ctx, &config_maps, CONFIG_MAP).await,
        service_accounts: BTreeMap::new(),
        cluster_roles: BTreeMap::new(),
        cluster_role_bindings: BTreeMap::new(),
        roles: BTreeMap::new(),
        role_bindings: BTreeMap::new(),
        deployments: BTreeMap::new(),
        daemon_set: get(ctx, &daemon_sets, NODE_AGENT).await,
        gateway_service: get(ctx, &services, GATEWAY).await,
        secrets: BTreeMap::new(),
        links: Ok(Vec::new()),
        mirrors: Ok(Vec::new()),
        exported: Ok(Vec::new()),
        remotes: Vec::new(),
        gateway_tls: BTreeMap::new(),
        now: chrono::Utc::now().timestamp(),
    };
    for sa in [CONTROLLER, GATEWAY, NODE_AGENT] {
        snap.service_accounts
            .insert(sa.into(), get(ctx, &sas, sa).await);
        snap.cluster_roles
            .insert(sa.into(), get(ctx, &crs, sa).await);
        snap.cluster_role_bindings
            .insert(sa.into(), get(ctx, &crbs, sa).await);
        snap.roles.insert(sa.into(), get(ctx, &roles, sa).await);
        snap.role_bindings
            .insert(sa.into(), get(ctx, &rbs, sa).await);
    }
    for name in [CONTROLLER, GATEWAY] {
        snap.deployments
            .insert(name.into(), get(ctx, &deployments, name).await);
    }
    for name in [TRUST_ANCHOR_SECRET, ISSUER_SECRET] {
        let fetched = get(ctx, &secrets, name).await;
        snap.secrets.insert(name.to_string(), fetched);
    }
    if !matches!(snap.crd, Ok(Some(_))) {
        return snap;
    }
    snap.links = links_api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("{}", ctx.error("listing Links", &e)));
    snap.mirrors = all_services
        .list(&ListParams::default().labels(mc_api::labels::MIRROR_SELECTOR))
        .await
        .map(|l| l.items)
        .map_err(|e| format!("{}", ctx.error("listing mirror Services", &e)));
    snap.exported = all_services
        .list(&ListParams::default().labels(mc_api::labels::EXPORTED_SELECTOR))
        .await
        .map(|l| l.items)
        .map_err(|e| format!("{}", ctx.error("listing exported Services", &e)));
    let links = snap.links.clone().unwrap_or_default();
    for link in &links {
        let name = link.spec.credentials_secret.clone();
        let fetched = get(ctx, &secrets, &name).await;
        snap.secrets.insert(name, fetched);
        let link_name = link.metadata.name.clone().unwrap_or_default();
        let tls = match link.spec.gateway_addresses.first() {
            Some(address) => tls_probe::probe(address, link.spec.gateway_port, timeout).await,
            None => GatewayTls::Unreachable("the Link lists no gateway address".into()),
        };
        snap.gateway_tls.insert(link_name, tls);
    }
    let selectors: Vec<String> = links
        .iter()
        .map(|l| selector_string(l.spec.selector.as_ref()))
        .collect();
    for name in remote_contexts {
        snap.remotes
            .push(remote(global, name, &selectors, timeout).await);
    }
    snap
}
