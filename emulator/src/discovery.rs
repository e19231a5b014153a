//! Discovery documents (unaggregated, plain JSON): `/api`, `/apis`,
//! `/apis/<group>`, `/api/v1`, `/apis/<group>/<version>`, and `/version`.

use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::resources::{Registry, ResourceInfo, Subresource};

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis`.
pub fn groups(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn group(reg: &Registry, name: &str) -> Result<Value, ApiError> {
    let (g, vs) = reg
        .groups()
        .into_iter()
        .find(|(g, _)| g == name)
        .ok_or_else(ApiError::path_not_found)?;
    let mut e = group_entry(&g, &vs);
    e["kind"] = json!("APIGroup");
    e["apiVersion"] = json!("v1");
    Ok(e)
}

fn resource_entries(r: &ResourceInfo) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if r.is_custom() {
        main["categories"] = json!(["all"]);
    }
    let mut out = vec![main];
    for s in &r.subresources {
        let (kind, verbs, group, version): (&str, Vec<&str>, Option<&str>, Option<&str>) = match s {
            Subresource::Status => (r.kind.as_str(), vec!["get", "patch", "update"], None, None),
            Subresource::Approval => (r.kind.as_str(), vec!["get", "patch", "update"], None, None),
            Subresource::Binding => ("Binding", vec!["create"], None, None),
            Subresource::Scale => (
                "Scale",
                vec!["get", "patch", "update"],
                Some("autoscaling"),
                Some("v1"),
            ),
            Subresource::Token => (
                "TokenRequest",
                vec!["create"],
                Some("authentication.k8s.io"),
                Some("v1"),
            ),
        };
        let mut e = json!({
            "name": format!("{}/{}", r.plural, s.name()),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let (Some(g), Some(v)) = (group, version) {
            e["group"] = json!(g);
            e["version"] = json!(v);
        }
        out.push(e);
    }
    out
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resources(reg: &Registry, group: &str, version: &str) -> Result<Value, ApiError> {
    let list: Vec<Value> = reg
        .in_group_version(group, version)
        .flat_map(resource_entries)
        .collect();
    if list.is_empty() {
        return Err(ApiError::path_not_found());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

/// `/version`: what a v1.33 server reports.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-mc-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
