//! The controllers of a real control plane whose effects clients see through
//! the API: bootstrap objects, default ServiceAccounts, namespace and CRD
//! deletion, and garbage collection of orphaned dependents.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::admission::CRD_CLEANUP_FINALIZER;
use crate::auth::UserInfo;
use crate::config::EmulatorConfig;
use crate::resources::ResourceInfo;
use crate::shared::Shared;
use crate::state::{DeleteOpts, State, meta_str, rkey};

fn system_user() -> UserInfo {
    UserInfo {
        name: "system:apiserver".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
    }
}

fn info(st: &State, group: &str, plural: &str) -> Option<ResourceInfo> {
    st.registry.get(group, plural).cloned()
}

fn ensure(st: &mut State, group: &str, plural: &str, ns: Option<&str>, obj: Value) {
    let Some(ri) = info(st, group, plural) else {
        return;
    };
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    if st
        .store
        .get(&rkey(&ri), ns.unwrap_or_default(), &name)
        .is_some()
    {
        return;
    }
    if let Err(e) = st.create(&ri, ns, obj, &system_user()) {
        tracing::warn!(%plural, %name, error = %e.message, "bootstrap object refused");
    }
}

/// Replaces (or creates) an object the API server itself maintains.
fn reconcile_owned(
    st: &mut State,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
    desired: Value,
) {
    let Some(ri) = info(st, group, plural) else {
        return;
    };
    match st.store.get(&rkey(&ri), ns, name) {
        None => ensure(st, group, plural, Some(ns), desired),
        Some(cur) => {
            let mut next = (*cur).clone();
            for (k, v) in desired.as_object().into_iter().flatten() {
                if k != "metadata" {
                    next[k] = v.clone();
                }
            }
            if next != *cur
                && let Err(e) = st.update(&ri, Some(ns), name, next, None, &system_user())
            {
                tracing::warn!(%plural, %name, error = %e.message, "cannot reconcile");
            }
        }
    }
}

/// Creates the objects every cluster starts with, and points the
/// `default/kubernetes` Service at the advertised address.
pub fn bootstrap(st: &mut State, cfg: &EmulatorConfig) {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            st,
            "",
            "namespaces",
            None,
            json!({"metadata": {"name": ns}}),
        );
    }
    let ip = cfg.kubernetes_service_ip().to_string();
    let port = cfg.advertise.port();
    let addr = cfg.advertise.ip().to_string();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure(
        st,
        "",
        "services",
        Some("default"),
        json!({
            "metadata": {"name": "kubernetes", "labels": labels},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        }),
    );
    reconcile_owned(
        st,
        "",
        "endpoints",
        "default",
        "kubernetes",
        json!({
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": addr}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
    );
    reconcile_owned(
        st,
        "discovery.k8s.io",
        "endpointslices",
        "default",
        "kubernetes",
        json!({
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes",
                                                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [addr], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
    );
    let rbac = "rbac.authorization.k8s.io";
    for obj in crate::rbac::bootstrap_policy() {
        let plural = match obj.get("kind").and_then(Value::as_str) {
            Some("ClusterRole") => "clusterroles",
            Some("ClusterRoleBinding") => "clusterrolebindings",
            _ => continue,
        };
        ensure(st, rbac, plural, None, obj);
    }
    let read = json!(["get", "list", "watch"]);
    ensure(
        st,
        rbac,
        "clusterroles",
        None,
        json!({
            "metadata": {"name": "view", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "pods/status",
                    "services", "services/status", "serviceaccounts", "events", "namespaces", "namespaces/status"], "verbs": read},
                {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status", "daemonsets", "daemonsets/status"], "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": read},
            ],
        }),
    );
}

/// One pass of every controller; returns nothing, writes only what needs writing.
pub fn reconcile(st: &mut State) {
    default_service_accounts(st);
    finish_namespaces(st);
    finish_crds(st);
    collect_garbage(st);
}

fn default_service_accounts(st: &mut State) {
    let namespaces = st.store.list(&(String::new(), "namespaces".into()), None);
    for ns in namespaces
        .iter()
        .filter(|n| meta_str(n, "deletionTimestamp").is_none())
    {
        let name = meta_str(ns, "name").unwrap_or_default().to_string();
        ensure(
            st,
            "",
            "serviceaccounts",
            Some(&name),
            json!({"metadata": {"name": "default"}}),
        );
    }
}

fn finish_namespaces(st: &mut State) {
    let ns_key = (String::new(), "namespaces".to_string());
    let terminating: Vec<String> = st
        .store
        .list(&ns_key, None)
        .iter()
        .filter(|n| meta_str(n, "deletionTimestamp").is_some())
        .filter_map(|n| meta_str(n, "name").map(str::to_string))
        .collect();
    if terminating.is_empty() {
        return;
    }
    let namespaced: Vec<ResourceInfo> = st
        .registry
        .all()
        .filter(|r| r.namespaced)
        .cloned()
        .collect();
    for ns in terminating {
        let mut remaining = 0;
        for ri in &namespaced {
            for o in st.store.list(&rkey(ri), Some(&ns)) {
                remaining += 1;
                if meta_str(&o, "deletionTimestamp").is_none() {
                    let name = meta_str(&o, "name").unwrap_or_default().to_string();
                    let _ = st.delete(ri, &ns, &name, &DeleteOpts::default());
                }
            }
        }
        if remaining > 0 {
            continue;
        }
        let Some(nsi) = info(st, "", "namespaces") else {
            return;
        };
        if let Some(cur) = st.store.get(&ns_key, "", &ns) {
            let mut next = (*cur).clone();
            next["spec"]["finalizers"] = json!([]);
            finalize_namespace(st, &nsi, next);
        }
    }
}

/// The `/finalize` step: store the emptied spec finalizers, removing the namespace when nothing holds it.
fn finalize_namespace(st: &mut State, nsi: &ResourceInfo, next: Value) {
    let name = meta_str(&next, "name").unwrap_or_default().to_string();
    let meta_finalizers = next
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if meta_finalizers {
        st.store.put(&rkey(nsi), next);
    } else {
        st.remove(nsi, "", &name);
    }
}

fn finish_crds(st: &mut State) {
    let Some(crdi) = info(st, "apiextensions.k8s.io", "customresourcedefinitions") else {
        return;
    };
    let deleting: Vec<Arc<Value>> = st
        .store
        .list(&rkey(&crdi), None)
        .into_iter()
        .filter(|c| meta_str(c, "deletionTimestamp").is_some())
        .collect();
    for crd in deleting {
        let Some(ri) = crate::resources::from_crd(&crd) else {
            continue;
        };
        let objs = st.store.list(&rkey(&ri), None);
        for o in &objs {
            if meta_str(o, "deletionTimestamp").is_none() {
                let ns = meta_str(o, "namespace").unwrap_or_default().to_string();
                let name = meta_str(o, "name").unwrap_or_default().to_string();
                let _ = st.delete(&ri, &ns, &name, &DeleteOpts::default());
            }
        }
        if !st.store.list(&rkey(&ri), None).is_empty() {
            continue;
        }
        let mut next = (*crd).clone();
        if let Some(f) = next
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != CRD_CLEANUP_FINALIZER);
        }
        let name = meta_str(&crd, "name").unwrap_or_default().to_string();
        if let Err(e) = st.update(&crdi, None, &name, next, None, &system_user()) {
            tracing::warn!(crd = %name, error = %e.message, "cannot finalize CRD");
        }
    }
}

fn collect_garbage(st: &mut State) {
    let uids: HashSet<String> = st
        .store
        .all()
        .filter_map(|(_, o)| meta_str(o, "uid").map(str::to_string))
        .collect();
    let mut orphans = Vec::new();
    for (res, o) in st.store.all() {
        let Some(owners) = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            continue;
        };
        if owners.is_empty() || meta_str(o, "deletionTimestamp").is_some() {
            continue;
        }
        let all_gone = owners.iter().all(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .is_none_or(|u| !uids.contains(u))
        });
        if all_gone {
            orphans.push((
                res.clone(),
                meta_str(o, "namespace").unwrap_or_default().to_string(),
                meta_str(o, "name").unwrap_or_default().to_string(),
            ));
        }
    }
    for ((group, plural), ns, name) in orphans {
        if let Some(ri) = info(st, &group, &plural) {
            tracing::debug!(%plural, %ns, %name, "garbage-collecting an object whose owners are gone");
            let _ = st.delete(&ri, &ns, &name, &DeleteOpts::default());
        }
    }
}

/// Runs the controllers after every change until `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut changed = shared.subscribe();
    loop {
        shared.write(reconcile);
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}
