//! `meta.k8s.io/v1` Table output for `kubectl get` (Accept `as=Table`):
//! a few columns per built-in resource, a CRD's additionalPrinterColumns.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

struct Column {
    name: String,
    ty: String,
    format: String,
    priority: i64,
    /// How to compute the cell.
    source: Source,
}

enum Source {
    Name,
    Age,
    Path(String),
    ServicePorts,
}

fn col(name: &str, ty: &str, source: Source) -> Column {
    Column {
        name: name.into(),
        ty: ty.into(),
        format: String::new(),
        priority: 0,
        source,
    }
}

fn columns(info: &ResourceInfo, version: &str) -> Vec<Column> {
    let name = || {
        let mut c = col("Name", "string", Source::Name);
        c.format = "name".into();
        c
    };
    if let Some(v) = info.crd_version(version) {
        let mut cols = vec![name()];
        let printer = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut has_age = false;
        for p in &printer {
            let s = |f: &str| {
                p.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let path = s("jsonPath");
            let source = if path == ".metadata.creationTimestamp" {
                has_age = true;
                Source::Age
            } else {
                Source::Path(path)
            };
            cols.push(Column {
                name: s("name"),
                ty: s("type"),
                format: s("format"),
                priority: p.get("priority").and_then(Value::as_i64).unwrap_or(0),
                source,
            });
        }
        if !has_age && printer.is_empty() {
            cols.push(col("Age", "date", Source::Age));
        }
        return cols;
    }
    let mut cols = vec![name()];
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => cols.push(col(
            "Status",
            "string",
            Source::Path(".status.phase".into()),
        )),
        ("", "services") => {
            cols.push(col("Type", "string", Source::Path(".spec.type".into())));
            cols.push(col(
                "Cluster-IP",
                "string",
                Source::Path(".spec.clusterIP".into()),
            ));
            cols.push(col("Ports", "string", Source::ServicePorts));
        }
        ("", "pods") => {
            cols.push(col(
                "Status",
                "string",
                Source::Path(".status.phase".into()),
            ));
            cols.push(col("IP", "string", Source::Path(".status.podIP".into())));
            cols.push(col("Node", "string", Source::Path(".spec.nodeName".into())));
        }
        ("", "secrets") => cols.push(col("Type", "string", Source::Path(".type".into()))),
        ("discovery.k8s.io", "endpointslices") => cols.push(col(
            "AddressType",
            "string",
            Source::Path(".addressType".into()),
        )),
        ("coordination.k8s.io", "leases") => cols.push(col(
            "Holder",
            "string",
            Source::Path(".spec.holderIdentity".into()),
        )),
        ("certificates.k8s.io", "certificatesigningrequests") => {
            cols.push(col(
                "SignerName",
                "string",
                Source::Path(".spec.signerName".into()),
            ));
            cols.push(col(
                "Requestor",
                "string",
                Source::Path(".spec.username".into()),
            ));
        }
        _ => {}
    }
    cols.push(col("Age", "string", Source::Age));
    cols
}

/// A simple JSONPath (`.a.b`, `.a[0].b`) lookup.
fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// `5s`, `3m`, `2h`, `4d` like kubectl's short human durations.
fn human_age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok()) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn service_ports(obj: &Value) -> Value {
    let ports = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parts: Vec<String> = ports
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    json!(if parts.is_empty() {
        "<none>".to_string()
    } else {
        parts.join(",")
    })
}

fn cell(c: &Column, obj: &Value) -> Value {
    match &c.source {
        Source::Name => obj
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
        Source::Age => json!(human_age(
            obj.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        )),
        Source::Path(p) => json_path(obj, p).cloned().unwrap_or(Value::Null),
        Source::ServicePorts => service_ports(obj),
    }
}

/// A Table of `objs`; rows carry whole objects or PartialObjectMetadata.
pub fn table(
    info: &ResourceInfo,
    version: &str,
    objs: &[Value],
    full_objects: bool,
    rv: &str,
    continue_token: Option<String>,
) -> Value {
    let cols = columns(info, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": "", "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let object = if full_objects {
                o.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
            };
            json!({"cells": cols.iter().map(|c| cell(c, o)).collect::<Vec<_>>(), "object": object})
        })
        .collect();
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_follow_fields_and_indexes() {
        let o = json!({"spec": {"a": [{"b": 3}]}});
        assert_eq!(json_path(&o, ".spec.a[0].b"), Some(&json!(3)));
        assert_eq!(json_path(&o, ".spec.x"), None);
    }
}
