//! The table of resources the emulator serves: the built-in ones and those
//! registered from CustomResourceDefinitions.

use std::collections::BTreeMap;

use serde_json::Value;

/// Subresources a resource may have beyond the object itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: writes to it change only `.status`.
    Status,
    /// `serviceaccounts/<name>/token` (TokenRequest).
    Token,
    /// `certificatesigningrequests/<name>/approval`.
    Approval,
    /// `pods/<name>/binding`: the scheduler's assignment of a pod to a node.
    Binding,
    /// `<workload>/<name>/scale`: an `autoscaling/v1` Scale view of `spec.replicas`.
    Scale,
}

impl Subresource {
    /// The path segment naming the subresource.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Token => "token",
            Subresource::Approval => "approval",
            Subresource::Binding => "binding",
            Subresource::Scale => "scale",
        }
    }
}

/// One servable resource.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: String,
    /// Versions served, the storage version first.
    pub versions: Vec<String>,
    pub kind: String,
    /// Plural resource name used in paths.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub subresources: Vec<Subresource>,
    /// Only `create` is served (reviews).
    pub create_only: bool,
    /// Status is reset on create (the real create strategies of most resources with `/status`).
    pub reset_status_on_create: bool,
    /// A PUT to a missing object creates it.
    pub create_on_update: bool,
    /// A PUT without `metadata.resourceVersion` is refused (custom resources).
    pub require_rv_on_update: bool,
    /// The CRD's version entries (`spec.versions[]`) for custom resources.
    pub crd_versions: Option<Vec<Value>>,
}

impl ResourceInfo {
    /// Whether `sub` exists for this resource.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// `apiVersion` for a served version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// The storage version.
    pub fn storage_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// Whether `version` is served.
    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// Verbs for discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// The CRD version entry for `version`, for custom resources.
    pub fn crd_version(&self, version: &str) -> Option<&Value> {
        self.crd_versions
            .as_ref()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
    }

    /// Whether this resource comes from a CRD.
    pub fn is_custom(&self) -> bool {
        self.crd_versions.is_some()
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    subs: &'static [Subresource],
}

const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    subs: &'static [Subresource],
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
        subs,
    }
}

use Subresource::{Approval, Binding, Scale, Status, Token};

const BUILTINS: &[Builtin] = &[
    b(
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        &[Status],
    ),
    b("", "v1", "Service", "services", true, &["svc"], &[Status]),
    b("", "v1", "Endpoints", "endpoints", true, &["ep"], &[]),
    b("", "v1", "Secret", "secrets", true, &[], &[]),
    b("", "v1", "ConfigMap", "configmaps", true, &["cm"], &[]),
    b(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        &[Token],
    ),
    b("", "v1", "Pod", "pods", true, &["po"], &[Status, Binding]),
    b("", "v1", "Node", "nodes", false, &["no"], &[Status]),
    b("", "v1", "Event", "events", true, &["ev"], &[]),
    b(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        &[Status, Scale],
    ),
    b(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        &[Status, Scale],
    ),
    b(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        &[Status],
    ),
    b("events.k8s.io", "v1", "Event", "events", true, &["ev"], &[]),
    b(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
        &[],
        &[],
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        &[],
    ),
    b(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
        &["csr"],
        &[Status, Approval],
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        &[Status],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        &[],
    ),
    b(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
        &[],
        &[],
    ),
    b(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
        &[],
        &[],
    ),
];

/// Resources whose `status` the real create strategy keeps (the client registers it).
const KEEP_STATUS_ON_CREATE: &[&str] = &["nodes", "namespaces"];
/// Resources a PUT may create.
const CREATE_ON_UPDATE: &[(&str, &str)] = &[
    ("", "endpoints"),
    ("", "events"),
    ("events.k8s.io", "events"),
];

/// All served resources keyed by (group, plural).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_key: BTreeMap<(String, String), ResourceInfo>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        for bi in BUILTINS {
            let create_only = bi.plural.starts_with("selfsubject");
            let has_status = bi.subs.contains(&Status);
            let info = ResourceInfo {
                group: bi.group.to_string(),
                versions: vec![bi.version.to_string()],
                kind: bi.kind.to_string(),
                plural: bi.plural.to_string(),
                singular: bi.kind.to_lowercase(),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                subresources: bi.subs.to_vec(),
                create_only,
                reset_status_on_create: has_status && !KEEP_STATUS_ON_CREATE.contains(&bi.plural),
                create_on_update: CREATE_ON_UPDATE.contains(&(bi.group, bi.plural)),
                require_rv_on_update: false,
                crd_versions: None,
            };
            r.insert(info);
        }
        r
    }

    /// Adds or replaces a resource.
    pub fn insert(&mut self, info: ResourceInfo) {
        self.by_key
            .insert((info.group.clone(), info.plural.clone()), info);
    }

    /// Removes a resource (CRD deleted).
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.by_key.remove(&(group.to_string(), plural.to_string()));
    }

    /// The resource for (group, plural), whatever the version.
    pub fn get(&self, group: &str, plural: &str) -> Option<&ResourceInfo> {
        self.by_key.get(&(group.to_string(), plural.to_string()))
    }

    /// The resource for (group, version, plural) if that version is served.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.get(group, plural).filter(|r| r.serves(version))
    }

    /// The resource whose storage version's kind is `kind` in `group`.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ResourceInfo> {
        self.by_key
            .values()
            .find(|r| r.group == group && r.kind == kind)
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &ResourceInfo> {
        self.by_key.values()
    }

    /// Groups and their served versions, core group excluded, in a stable order
    /// (built-in groups first as registered, then custom groups by name).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.by_key.values() {
            if r.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    for v in &r.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                }
                None => out.push((r.group.clone(), r.versions.clone())),
            }
        }
        out
    }

    /// Resources served in (group, version).
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> {
        self.by_key
            .values()
            .filter(move |r| r.group == group && r.serves(version))
    }
}

/// The [`ResourceInfo`] a CRD object describes, or why it cannot be served.
pub fn from_crd(crd: &Value) -> Option<ResourceInfo> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_string();
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?.to_string();
    let kind = names.get("kind")?.as_str()?.to_string();
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names = names
        .get("shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let all_versions: Vec<Value> = spec.get("versions")?.as_array()?.clone();
    let served: Vec<&Value> = all_versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(false))
        .collect();
    let storage = served
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
        .or_else(|| served.first())?;
    let mut versions = vec![storage.get("name")?.as_str()?.to_string()];
    for v in &served {
        let n = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if !versions.iter().any(|x| x == n) {
            versions.push(n.to_string());
        }
    }
    let has_status = all_versions
        .iter()
        .any(|v| v.pointer("/subresources/status").is_some());
    Some(ResourceInfo {
        group,
        versions,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        subresources: if has_status {
            vec![Subresource::Status]
        } else {
            vec![]
        },
        create_only: false,
        reset_status_on_create: has_status,
        create_on_update: false,
        require_rv_on_update: true,
        crd_versions: Some(all_versions),
    })
}
