//! The `scale` subresource of Deployments and ReplicaSets: an
//! `autoscaling/v1` Scale whose `spec.replicas` reads and writes the
//! object's, as `kubectl scale` and autoscalers use it.

use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::handlers::Call;
use crate::shared::Shared;
use crate::state::{meta_str, rkey, target};
use crate::validation::{FieldError, FieldErrorKind};

/// The Scale view of a workload object.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj.pointer("/spec/selector")),
        },
    })
}

/// A label selector object in its string form (`a=b,c in (d,e)`).
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut parts: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// Writes the replicas of `scale` to the object (a resourceVersion in the
/// Scale is a precondition); answers the new Scale.
pub fn write(shared: &Shared, c: &Call<'_>, scale: Value) -> Result<Value, ApiError> {
    let name = c.path.name.as_deref().unwrap_or_default();
    let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64);
    let Some(replicas) = replicas.filter(|r| *r >= 0) else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            &[FieldError::new(
                FieldErrorKind::Invalid,
                "spec.replicas",
                "Invalid value: must be greater than or equal to 0",
            )],
        ));
    };
    let ns = c.path.namespace.as_deref();
    let stored = shared.write(|st| {
        let cur = st
            .store
            .get(&rkey(&c.info), ns.unwrap_or_default(), name)
            .ok_or_else(|| ApiError::not_found(target(&c.info, name)))?;
        let mut doc = (*cur).clone();
        doc["spec"]["replicas"] = json!(replicas);
        if let Some(rv) = meta_str(&scale, "resourceVersion").filter(|rv| !rv.is_empty()) {
            doc["metadata"]["resourceVersion"] = json!(rv);
        }
        st.update(&c.info, ns, name, doc, None, c.user)
            .map(|(o, _)| o)
    })?;
    Ok(scale_of(&stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_like_the_api() {
        let s = json!({"matchLabels": {"app": "web"},
                       "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(Some(&s)), "app=web,tier in (a,b)");
    }
}
