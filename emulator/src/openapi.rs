//! A minimal OpenAPI v3 surface: the root index and per-group-version
//! documents naming each resource's PATCH operation with its
//! `fieldValidation` parameter, which is what kubectl checks before it
//! relies on server-side field validation. No schemas are published.

use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::resources::{Registry, ResourceInfo};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn group_versions(reg: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in reg.all() {
        for v in &r.versions {
            let gv = (r.group.clone(), v.clone());
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
    }
    out
}

/// `/openapi/v3`.
pub fn root(reg: &Registry, rv: &str) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions(reg) {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={rv}")}),
        );
    }
    json!({"paths": paths})
}

fn item_path(r: &ResourceInfo, version: &str) -> String {
    let base = format!("/{}", gv_path(&r.group, version));
    if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
    } else {
        format!("{base}/{}/{{name}}", r.plural)
    }
}

/// `/openapi/v3/<api/v1 | apis/<group>/<version>>`.
pub fn group_version(reg: &Registry, path: &str) -> Result<Value, ApiError> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(ApiError::path_not_found()),
    };
    let mut paths = Map::new();
    for r in reg
        .in_group_version(&group, &version)
        .filter(|r| !r.create_only)
    {
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let gvk = json!({"group": r.group, "version": version, "kind": r.kind});
        paths.insert(
            item_path(r, &version),
            json!({"patch": {"operationId": format!("patch{}", r.kind), "parameters": params,
                             "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                             "responses": {"200": {"description": "OK"}}}}),
        );
    }
    if paths.is_empty() {
        return Err(ApiError::path_not_found());
    }
    Ok(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
