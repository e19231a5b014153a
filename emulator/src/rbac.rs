//! Kubernetes RBAC authorization over Roles, ClusterRoles and their
//! bindings, with the API server's 403 messages, and the bootstrap policy
//! objects every cluster starts with.

use serde_json::{Value, json};

use crate::selector::LabelSelector;
use crate::validation::go_quote;

/// The group whose members bypass authorization.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group every authenticated user is in.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";

/// The authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user a ServiceAccount token authenticates as, with the groups the
    /// real token authenticator adds.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                SYSTEM_AUTHENTICATED.to_string(),
            ],
        }
    }
}

/// What a request wants to do (the API server's authorizer attributes).
/// For collection requests (list, watch, create, deletecollection) `name`
/// is `None`, which is why `resourceNames` never grant them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Lower-case verb: get, list, watch, create, update, patch, delete,
    /// deletecollection (or the HTTP method for non-resource paths).
    pub verb: String,
    /// "" for the core group.
    pub api_group: String,
    pub resource: String,
    /// "" when none (e.g. `status`, `scale` otherwise).
    pub subresource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Set for non-resource requests (e.g. `/healthz`); then resource fields are ignored.
    pub path: Option<String>,
}

/// Where the authorizer reads RBAC objects from (the store), as the JSON
/// the API serves (`rules`, `roleRef`, `subjects`, ...).
pub trait RbacSource {
    fn role(&self, namespace: &str, name: &str) -> Option<Value>;
    fn cluster_role(&self, name: &str) -> Option<Value>;
    fn role_bindings(&self, namespace: &str) -> Vec<Value>;
    fn cluster_role_bindings(&self) -> Vec<Value>;
    /// Every ClusterRole, so that `aggregationRule` roles get the rules of
    /// the roles they select; the default (none) uses stored rules as they are.
    fn cluster_roles(&self) -> Vec<Value> {
        Vec::new()
    }
}

/// The authorizer's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Carries the full 403 Status message, e.g. `services is forbidden:
    /// User "x" cannot create resource "services" in API group "" in the namespace "default"`.
    Deny(String),
}

/// Decides a request as kube-apiserver's RBAC authorizer would (with no
/// other authorizer before it): members of `system:masters` may do
/// anything; otherwise a rule from a ClusterRoleBinding (anywhere) or a
/// RoleBinding (in its namespace) must allow it.
pub fn authorize(user: &UserInfo, attrs: &Attributes, src: &dyn RbacSource) -> Decision {
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Decision::Allow;
    }
    let mut errors: Vec<String> = Vec::new();
    for binding in src.cluster_role_bindings() {
        if !binding_applies(&binding, user, "") {
            continue;
        }
        match resolve_role_ref(&binding, "", src) {
            Ok(rules) => {
                if rules.iter().any(|r| rule_allows(attrs, r)) {
                    return Decision::Allow;
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let namespace = attrs.namespace.as_deref().unwrap_or_default();
    if attrs.path.is_none() && !namespace.is_empty() {
        for binding in src.role_bindings(namespace) {
            if !binding_applies(&binding, user, namespace) {
                continue;
            }
            match resolve_role_ref(&binding, namespace, src) {
                Ok(rules) => {
                    if rules.iter().any(|r| rule_allows(attrs, r)) {
                        return Decision::Allow;
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    let reason = match errors.len() {
        0 => String::new(),
        1 => format!("RBAC: {}", errors[0]),
        _ => format!("RBAC: [{}]", errors.join(", ")),
    };
    Decision::Deny(forbidden_message(user, attrs, &reason))
}

/// The 403 Status message for a refused request (responsewriters.Forbidden
/// wrapped in apierrors.NewForbidden).
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes, reason: &str) -> String {
    let user_name = go_quote(&user.name);
    let mut detail = match &attrs.path {
        Some(path) => format!(
            "User {user_name} cannot {} path {}",
            attrs.verb,
            go_quote(path)
        ),
        None => {
            let mut resource = attrs.resource.clone();
            if !attrs.subresource.is_empty() {
                resource = format!("{resource}/{}", attrs.subresource);
            }
            let head = format!(
                "User {user_name} cannot {} resource {} in API group {}",
                attrs.verb,
                go_quote(&resource),
                go_quote(&attrs.api_group)
            );
            match attrs.namespace.as_deref() {
                Some(ns) if !ns.is_empty() => format!("{head} in the namespace {}", go_quote(ns)),
                _ => format!("{head} at the cluster scope"),
            }
        }
    };
    if !reason.is_empty() {
        detail = format!("{detail}: {reason}");
    }
    if attrs.path.is_some() || attrs.resource.is_empty() {
        return format!("forbidden: {detail}");
    }
    let qualified = if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    match attrs.name.as_deref() {
        Some(name) if !name.is_empty() => {
            format!("{qualified} {} is forbidden: {detail}", go_quote(name))
        }
        _ => format!("{qualified} is forbidden: {detail}"),
    }
}

/// Whether any subject of a binding (in `namespace`, "" for a
/// ClusterRoleBinding) is this user.
fn binding_applies(binding: &Value, user: &UserInfo, namespace: &str) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|s| subject_applies(s, user, namespace))
}

fn subject_applies(subject: &Value, user: &UserInfo, namespace: &str) -> bool {
    let field = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or_default();
    let name = field("name");
    match field("kind") {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let sa_namespace = match field("namespace") {
                "" => namespace,
                ns => ns,
            };
            !sa_namespace.is_empty()
                && user.name == format!("system:serviceaccount:{sa_namespace}:{name}")
        }
        _ => false,
    }
}

/// The rules a binding's roleRef names, or the authorizer's error text.
fn resolve_role_ref(
    binding: &Value,
    namespace: &str,
    src: &dyn RbacSource,
) -> Result<Vec<Value>, String> {
    let role_ref = binding.get("roleRef").cloned().unwrap_or(Value::Null);
    let kind = role_ref
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "ClusterRole" => match src.cluster_role(name) {
            Some(role) => Ok(effective_cluster_role_rules(&role, src)),
            None => Err(format!(
                "clusterrole.rbac.authorization.k8s.io {} not found",
                go_quote(name)
            )),
        },
        "Role" if !namespace.is_empty() => match src.role(namespace, name) {
            Some(role) => Ok(rules_of(&role)),
            None => Err(format!(
                "role.rbac.authorization.k8s.io {} not found",
                go_quote(name)
            )),
        },
        other => Err(format!(
            "unsupported role reference kind: {}",
            go_quote(other)
        )),
    }
}

fn rules_of(role: &Value) -> Vec<Value> {
    role.get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A ClusterRole's rules; for an aggregated role (with `aggregationRule`)
/// the union of the selected roles' rules when the source lists roles.
fn effective_cluster_role_rules(role: &Value, src: &dyn RbacSource) -> Vec<Value> {
    if role.get("aggregationRule").is_none() {
        return rules_of(role);
    }
    let all = src.cluster_roles();
    if all.is_empty() {
        return rules_of(role);
    }
    aggregated_rules(role, &all).unwrap_or_else(|| rules_of(role))
}

/// The rules the ClusterRole aggregation controller would write into an
/// aggregated ClusterRole: those of every other ClusterRole matched by one
/// of its `clusterRoleSelectors`, in name order, without duplicates.
/// `None` when the role has no aggregation rule.
pub fn aggregated_rules(role: &Value, all_cluster_roles: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .get("aggregationRule")?
        .get("clusterRoleSelectors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let selectors: Vec<LabelSelector> = selectors
        .iter()
        .filter_map(|s| LabelSelector::from_json(s).ok())
        .collect();
    let own_name = role.pointer("/metadata/name");
    let mut candidates: Vec<&Value> = all_cluster_roles
        .iter()
        .filter(|r| r.pointer("/metadata/name") != own_name)
        .filter(|r| {
            let labels = r.pointer("/metadata/labels");
            selectors.iter().any(|s| !s.is_empty() && s.matches(labels))
        })
        .collect();
    candidates.sort_by_key(|r| {
        r.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    });
    let mut rules: Vec<Value> = Vec::new();
    for candidate in candidates {
        for rule in rules_of(candidate) {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    Some(rules)
}

fn strings(rule: &Value, key: &str) -> Vec<String> {
    rule.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether one PolicyRule allows the request (rbac `RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &Value) -> bool {
    let verbs = strings(rule, "verbs");
    let verb_ok = verbs.iter().any(|v| v == "*" || *v == attrs.verb);
    if !verb_ok {
        return false;
    }
    if let Some(path) = &attrs.path {
        return strings(rule, "nonResourceURLs").iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        });
    }
    let groups = strings(rule, "apiGroups");
    if !groups.iter().any(|g| g == "*" || *g == attrs.api_group) {
        return false;
    }
    let combined = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let resource_ok = strings(rule, "resources").iter().any(|r| {
        r == "*"
            || *r == combined
            || (!attrs.subresource.is_empty()
                && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(rule, "resourceNames");
    names.is_empty()
        || attrs
            .name
            .as_deref()
            .is_some_and(|n| names.iter().any(|x| x == n))
}

fn bootstrap_meta(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
    })
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": bootstrap_meta(name),
        "rules": rules
    })
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": bootstrap_meta(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects
    })
}

/// The subset of kube-apiserver's bootstrap RBAC policy the emulator seeds:
/// ClusterRoles `cluster-admin`, `system:discovery`, `system:basic-user`,
/// `system:public-info-viewer` and their ClusterRoleBindings (to
/// `system:masters`, `system:authenticated`, `system:unauthenticated`).
pub fn bootstrap_policy() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]}
            ]),
        ),
        cluster_role(
            "system:discovery",
            json!([{"nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                "/openapi/*", "/readyz", "/version", "/version/"
            ], "verbs": ["get"]}]),
        ),
        cluster_role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"],
                    "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
        cluster_role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": ["get"]}]),
        ),
        cluster_role_binding("cluster-admin", "cluster-admin", &[SYSTEM_MASTERS]),
        cluster_role_binding(
            "system:discovery",
            "system:discovery",
            &[SYSTEM_AUTHENTICATED],
        ),
        cluster_role_binding(
            "system:basic-user",
            "system:basic-user",
            &[SYSTEM_AUTHENTICATED],
        ),
        cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[SYSTEM_AUTHENTICATED, "system:unauthenticated"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Objects {
        items: Vec<Value>,
    }

    impl Objects {
        fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
            self.items.iter().filter(move |o| o["kind"] == kind)
        }
    }

    impl RbacSource for Objects {
        fn role(&self, ns: &str, name: &str) -> Option<Value> {
            self.of_kind("Role")
                .find(|r| r["metadata"]["namespace"] == ns && r["metadata"]["name"] == name)
                .cloned()
        }
        fn cluster_role(&self, name: &str) -> Option<Value> {
            self.of_kind("ClusterRole")
                .find(|r| r["metadata"]["name"] == name)
                .cloned()
        }
        fn role_bindings(&self, ns: &str) -> Vec<Value> {
            self.of_kind("RoleBinding")
                .filter(|r| r["metadata"]["namespace"] == ns)
                .cloned()
                .collect()
        }
        fn cluster_role_bindings(&self) -> Vec<Value> {
            self.of_kind("ClusterRoleBinding").cloned().collect()
        }
        fn cluster_roles(&self) -> Vec<Value> {
            self.of_kind("ClusterRole").cloned().collect()
        }
    }

    fn role(ns: &str, name: &str, rules: Value) -> Value {
        json!({"kind": "Role", "metadata": {"namespace": ns, "name": name}, "rules": rules})
    }

    fn crole(name: &str, rules: Value) -> Value {
        json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
    }

    fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
        json!({"kind": "RoleBinding", "metadata": {"namespace": ns, "name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
               "subjects": subjects})
    }

    fn crb(name: &str, role: &str, subjects: Value) -> Value {
        json!({"kind": "ClusterRoleBinding", "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": subjects})
    }

    fn req(
        verb: &str,
        group: &str,
        resource: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            ..Attributes::default()
        }
    }

    fn reader() -> UserInfo {
        UserInfo::service_account("mc-system", "reader")
    }

    fn allowed(d: &Decision) -> bool {
        *d == Decision::Allow
    }

    /// A read-only ServiceAccount, as `kubectl mc link` creates it.
    fn read_only_world() -> Objects {
        Objects {
            items: vec![
                crole(
                    "mc-reader",
                    json!([{"apiGroups": ["", "discovery.k8s.io"],
                    "resources": ["services", "endpointslices"], "verbs": ["get", "list", "watch"]}]),
                ),
                crb(
                    "mc-reader",
                    "mc-reader",
                    json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "mc-system"}]),
                ),
            ],
        }
    }

    #[test]
    fn masters_may_do_anything() {
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec![SYSTEM_MASTERS.into()],
        };
        let d = authorize(
            &admin,
            &req("delete", "", "nodes", None, Some("n1")),
            &Objects::default(),
        );
        assert!(allowed(&d));
    }

    #[test]
    fn read_only_service_account_reads_but_cannot_write() {
        let w = read_only_world();
        let u = reader();
        assert!(allowed(&authorize(
            &u,
            &req("list", "", "services", None, None),
            &w
        )));
        assert!(allowed(&authorize(
            &u,
            &req(
                "watch",
                "discovery.k8s.io",
                "endpointslices",
                Some("default"),
                None
            ),
            &w
        )));
        assert!(allowed(&authorize(
            &u,
            &req("get", "", "services", Some("default"), Some("backend")),
            &w
        )));
        assert_eq!(
            authorize(&u, &req("create", "", "services", Some("default"), None), &w),
            Decision::Deny(
                "services is forbidden: User \"system:serviceaccount:mc-system:reader\" cannot create resource \"services\" in API group \"\" in the namespace \"default\"".into()
            )
        );
        assert_eq!(
            authorize(&u, &req("delete", "", "services", Some("default"), Some("backend")), &w),
            Decision::Deny(
                "services \"backend\" is forbidden: User \"system:serviceaccount:mc-system:reader\" cannot delete resource \"services\" in API group \"\" in the namespace \"default\"".into()
            )
        );
        assert_eq!(
            authorize(&u, &req("list", "", "secrets", None, None), &w),
            Decision::Deny(
                "secrets is forbidden: User \"system:serviceaccount:mc-system:reader\" cannot list resource \"secrets\" in API group \"\" at the cluster scope".into()
            )
        );
        let other = UserInfo::service_account("default", "reader");
        assert!(!allowed(&authorize(
            &other,
            &req("list", "", "services", None, None),
            &w
        )));
    }

    #[test]
    fn group_qualified_and_subresource_messages() {
        let w = Objects::default();
        let u = UserInfo {
            name: "jane".into(),
            groups: vec![],
        };
        let mut a = req("update", "mc.dev", "links", Some("mc-system"), Some("east"));
        a.subresource = "status".into();
        assert_eq!(
            authorize(&u, &a, &w),
            Decision::Deny("links.mc.dev \"east\" is forbidden: User \"jane\" cannot update resource \"links/status\" in API group \"mc.dev\" in the namespace \"mc-system\"".into())
        );
        let path = Attributes {
            verb: "get".into(),
            path: Some("/metrics".into()),
            ..Attributes::default()
        };
        assert_eq!(
            authorize(&u, &path, &w),
            Decision::Deny("forbidden: User \"jane\" cannot get path \"/metrics\"".into())
        );
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace() {
        let w = Objects {
            items: vec![
                role(
                    "apps",
                    "svc-admin",
                    json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["*"]}]),
                ),
                rb(
                    "apps",
                    "b",
                    "Role",
                    "svc-admin",
                    json!([{"kind": "User", "name": "jane"}]),
                ),
            ],
        };
        let jane = UserInfo {
            name: "jane".into(),
            groups: vec![],
        };
        assert!(allowed(&authorize(
            &jane,
            &req("create", "", "services", Some("apps"), None),
            &w
        )));
        assert!(!allowed(&authorize(
            &jane,
            &req("create", "", "services", Some("other"), None),
            &w
        )));
        assert!(
            !allowed(&authorize(
                &jane,
                &req("list", "", "services", None, None),
                &w
            )),
            "no cluster-wide grant"
        );
        assert!(!allowed(&authorize(
            &jane,
            &req("get", "", "configmaps", Some("apps"), Some("x")),
            &w
        )));
    }

    #[test]
    fn role_binding_to_cluster_role_is_namespaced() {
        let w = Objects {
            items: vec![
                crole(
                    "view-svc",
                    json!([{"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]),
                ),
                rb(
                    "apps",
                    "b",
                    "ClusterRole",
                    "view-svc",
                    json!([{"kind": "Group", "name": "devs"}]),
                ),
            ],
        };
        let u = UserInfo {
            name: "bob".into(),
            groups: vec!["devs".into()],
        };
        assert!(allowed(&authorize(
            &u,
            &req("get", "", "services", Some("apps"), Some("s")),
            &w
        )));
        assert!(!allowed(&authorize(
            &u,
            &req("get", "", "services", Some("kube-system"), Some("s")),
            &w
        )));
    }

    #[test]
    fn service_account_subject_defaults_to_binding_namespace() {
        let w = Objects {
            items: vec![
                role(
                    "apps",
                    "r",
                    json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
                ),
                rb(
                    "apps",
                    "b",
                    "Role",
                    "r",
                    json!([{"kind": "ServiceAccount", "name": "builder"}]),
                ),
                crb(
                    "c",
                    "missing",
                    json!([{"kind": "ServiceAccount", "name": "builder"}]),
                ),
            ],
        };
        let u = UserInfo::service_account("apps", "builder");
        assert!(allowed(&authorize(
            &u,
            &req("list", "", "pods", Some("apps"), None),
            &w
        )));
        let elsewhere = UserInfo::service_account("other", "builder");
        assert!(!allowed(&authorize(
            &elsewhere,
            &req("list", "", "pods", Some("apps"), None),
            &w
        )));
    }

    #[test]
    fn resource_names_constrain_named_verbs_only() {
        let w = Objects {
            items: vec![
                role(
                    "mc-system",
                    "lease",
                    json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "resourceNames": ["mc-controller"], "verbs": ["get", "update", "list", "create"]}]),
                ),
                rb(
                    "mc-system",
                    "b",
                    "Role",
                    "lease",
                    json!([{"kind": "User", "name": "ctl"}]),
                ),
            ],
        };
        let u = UserInfo {
            name: "ctl".into(),
            groups: vec![],
        };
        let ns = Some("mc-system");
        assert!(allowed(&authorize(
            &u,
            &req(
                "get",
                "coordination.k8s.io",
                "leases",
                ns,
                Some("mc-controller")
            ),
            &w
        )));
        assert!(allowed(&authorize(
            &u,
            &req(
                "update",
                "coordination.k8s.io",
                "leases",
                ns,
                Some("mc-controller")
            ),
            &w
        )));
        assert!(!allowed(&authorize(
            &u,
            &req("get", "coordination.k8s.io", "leases", ns, Some("other")),
            &w
        )));
        assert!(!allowed(&authorize(
            &u,
            &req("list", "coordination.k8s.io", "leases", ns, None),
            &w
        )));
        assert!(!allowed(&authorize(
            &u,
            &req("create", "coordination.k8s.io", "leases", ns, None),
            &w
        )));
    }

    #[test]
    fn wildcards_and_subresources() {
        let all_status =
            json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["update"]});
        let svc_only = json!({"apiGroups": [""], "resources": ["services"], "verbs": ["*"]});
        let star = json!({"apiGroups": ["mc.dev"], "resources": ["*"], "verbs": ["get"]});
        let mut a = req("update", "mc.dev", "links", Some("x"), Some("l"));
        a.subresource = "status".into();
        assert!(rule_allows(&a, &all_status));
        a.subresource = "scale".into();
        assert!(!rule_allows(&a, &all_status));
        let mut s = req("update", "", "services", Some("x"), Some("s"));
        assert!(rule_allows(&s, &svc_only));
        s.subresource = "status".into();
        assert!(
            !rule_allows(&s, &svc_only),
            "plain resource does not grant its subresources"
        );
        assert!(rule_allows(
            &s,
            &json!({"apiGroups": [""], "resources": ["services/status"], "verbs": ["update"]})
        ));
        let mut g = req("get", "mc.dev", "links", None, Some("l"));
        g.subresource = "status".into();
        assert!(rule_allows(&g, &star), "* covers subresources");
        assert!(!rule_allows(
            &req("get", "apps", "links", None, None),
            &star
        ));
    }

    #[test]
    fn non_resource_urls() {
        let rule = json!({"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]});
        let at = |p: &str, v: &str| Attributes {
            verb: v.into(),
            path: Some(p.into()),
            ..Attributes::default()
        };
        assert!(rule_allows(&at("/healthz", "get"), &rule));
        assert!(rule_allows(&at("/apis/mc.dev/v1alpha1", "get"), &rule));
        assert!(!rule_allows(&at("/healthz/etcd", "get"), &rule));
        assert!(!rule_allows(&at("/healthz", "post"), &rule));
        let resource_rule = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(!rule_allows(&at("/healthz", "get"), &resource_rule));
        let w = Objects {
            items: bootstrap_policy(),
        };
        let u = UserInfo {
            name: "x".into(),
            groups: vec![SYSTEM_AUTHENTICATED.into()],
        };
        assert!(allowed(&authorize(&u, &at("/version", "get"), &w)));
        assert!(allowed(&authorize(&u, &at("/apis/mc.dev", "get"), &w)));
        assert!(!allowed(&authorize(&u, &at("/metrics", "get"), &w)));
        assert!(!allowed(&authorize(
            &u,
            &req("list", "", "pods", None, None),
            &w
        )));
    }

    #[test]
    fn missing_roles_are_reported_in_the_reason() {
        let w = Objects {
            items: vec![rb(
                "apps",
                "b",
                "Role",
                "gone",
                json!([{"kind": "User", "name": "jane"}]),
            )],
        };
        let jane = UserInfo {
            name: "jane".into(),
            groups: vec![],
        };
        let Decision::Deny(msg) =
            authorize(&jane, &req("list", "", "pods", Some("apps"), None), &w)
        else {
            panic!("must be denied");
        };
        assert!(
            msg.ends_with(
                "in the namespace \"apps\": RBAC: role.rbac.authorization.k8s.io \"gone\" not found"
            ),
            "{msg}"
        );
    }

    #[test]
    fn aggregated_cluster_roles_take_selected_rules() {
        let mut labelled = crole(
            "mc-view-links",
            json!([{"apiGroups": ["mc.dev"], "resources": ["links"], "verbs": ["get"]}]),
        );
        labelled["metadata"]["labels"] = json!({"rbac.mc.dev/aggregate-to-view": "true"});
        let aggregate = json!({"kind": "ClusterRole", "metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.mc.dev/aggregate-to-view": "true"}}]},
            "rules": []});
        let w = Objects {
            items: vec![
                labelled,
                aggregate.clone(),
                crole(
                    "unrelated",
                    json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
                ),
                crb("v", "view", json!([{"kind": "User", "name": "jane"}])),
            ],
        };
        let jane = UserInfo {
            name: "jane".into(),
            groups: vec![],
        };
        assert!(allowed(&authorize(
            &jane,
            &req("get", "mc.dev", "links", Some("a"), Some("l")),
            &w
        )));
        assert!(!allowed(&authorize(
            &jane,
            &req("delete", "mc.dev", "links", Some("a"), Some("l")),
            &w
        )));
        assert_eq!(
            aggregated_rules(&aggregate, &w.cluster_roles()).map(|r| r.len()),
            Some(1)
        );
    }
}
