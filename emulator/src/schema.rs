//! Custom resources against their CRD's structural openAPIV3Schema:
//! defaulting, pruning and validation as kube-apiserver does them, and the
//! validation of CustomResourceDefinition objects themselves.

use serde_json::{Map, Value, json};

use crate::validation::{FieldError, validate_dns1035_label, validate_dns1123_subdomain};

/// Fields every (embedded) Kubernetes object keeps whatever its schema says.
const OBJECT_META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Defaults, prunes and validates `obj` (a whole custom resource) in place.
pub fn validate_and_prune(schema: &Value, obj: &mut Value) -> Result<(), Vec<FieldError>> {
    validate_and_prune_listing_unknown(schema, obj).map(|_| ())
}

/// Like [`validate_and_prune`] but returns the paths of the unknown fields
/// it pruned (e.g. `spec.foo`), for `fieldValidation=Strict|Warn`
/// (`unknown field "spec.foo"`).
pub fn validate_and_prune_listing_unknown(
    schema: &Value,
    obj: &mut Value,
) -> Result<Vec<String>, Vec<FieldError>> {
    let mut unknown = Vec::new();
    default_and_prune(schema, obj, "", true, &mut unknown);
    let mut errs = Vec::new();
    validate(schema, obj, "", true, &mut errs);
    if errs.is_empty() {
        Ok(unknown)
    } else {
        Err(errs)
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Structural defaulting and pruning (in that order, as the decoder does):
/// non-nullable nulls become their default or disappear, missing fields
/// get their `default`, unknown fields are dropped.
fn default_and_prune(
    schema: &Value,
    value: &mut Value,
    path: &str,
    keep_meta: bool,
    unknown: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(props) = props {
                for (key, prop) in props {
                    let present_null = map.get(key).is_some_and(Value::is_null);
                    if present_null && !flag(prop, "nullable") {
                        match prop.get("default") {
                            Some(d) => {
                                map.insert(key.clone(), d.clone());
                            }
                            None => {
                                map.remove(key);
                            }
                        }
                    } else if !map.contains_key(key)
                        && let Some(d) = prop.get("default")
                    {
                        map.insert(key.clone(), d.clone());
                    }
                }
            }
            let additional = schema.get("additionalProperties");
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let p = child(path, &key);
                if (keep_meta || embedded) && OBJECT_META_FIELDS.contains(&key.as_str()) {
                    if let (Some(prop), Some(v)) =
                        (props.and_then(|p| p.get(&key)), map.get_mut(&key))
                        && key != "metadata"
                    {
                        default_and_prune(prop, v, &p, false, unknown);
                    }
                    continue;
                }
                if let Some(prop) = props.and_then(|p| p.get(&key)) {
                    if let Some(v) = map.get_mut(&key) {
                        default_and_prune(prop, v, &p, false, unknown);
                    }
                } else if let Some(add) = additional.filter(|a| a.is_object()) {
                    if let Some(v) = map.get_mut(&key) {
                        default_and_prune(add, v, &p, false, unknown);
                    }
                } else if preserve || additional.and_then(Value::as_bool) == Some(true) {
                    // kept as sent
                } else {
                    map.remove(&key);
                    unknown.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    if item.is_null()
                        && !flag(item_schema, "nullable")
                        && item_schema.get("default").is_some()
                    {
                        *item = item_schema["default"].clone();
                    }
                    default_and_prune(item_schema, item, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// The type name go-openapi reports for a JSON value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                "integer"
            } else {
                "number"
            }
        }
    }
}

fn type_matches(want: &str, value: &Value) -> bool {
    let have = type_name(value);
    have == want || (want == "number" && have == "integer")
}

/// What error paths are printed as inside messages (`<name> in body ...`).
fn display_name(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

fn validate(schema: &Value, value: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let name = display_name(path).to_string();
    if value.is_null() && flag(schema, "nullable") {
        return;
    }
    // types
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let declared = schema.get("type").and_then(Value::as_str);
    if int_or_string {
        if !matches!(type_name(value), "integer" | "string") {
            let have = type_name(value);
            errs.push(FieldError::type_invalid(
                path,
                &json!(have),
                &format!("{name} in body must be of type integer,string: \"{have}\""),
            ));
            return;
        }
    } else if let Some(want) = declared
        && !type_matches(want, value)
    {
        let have = type_name(value);
        errs.push(FieldError::type_invalid(
            path,
            &json!(have),
            &format!("{name} in body must be of type {want}: \"{have}\""),
        ));
        return;
    }
    // enum
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let rendered: Vec<String> = allowed
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        let refs: Vec<&str> = rendered.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, value, &refs));
    }
    match value {
        Value::String(s) => validate_string(schema, s, value, path, &name, errs),
        Value::Number(_) => validate_number(schema, value, path, &name, errs),
        Value::Array(items) => validate_array(schema, items, path, &name, errs),
        Value::Object(map) => validate_object(schema, map, path, root, &name, errs),
        _ => {}
    }
    validate_junctors(schema, value, path, &name, errs);
}

fn validate_string(
    schema: &Value,
    s: &str,
    value: &Value,
    path: &str,
    name: &str,
    errs: &mut Vec<FieldError>,
) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errs.push(FieldError::too_long(path, max as usize));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errs.push(FieldError::invalid(
            path,
            value,
            &format!("{name} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => errs.push(FieldError::invalid(
                path,
                value,
                &format!("{name} in body should match '{pattern}'"),
            )),
            Err(e) => errs.push(FieldError::invalid(
                path,
                value,
                &format!("{name} in body: pattern {pattern:?} cannot be compiled: {e}"),
            )),
        }
    }
}

fn validate_number(
    schema: &Value,
    value: &Value,
    path: &str,
    name: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(x) = value.as_f64() else { return };
    let fmt = |v: &Value| v.to_string();
    if let Some(min) = schema.get("minimum") {
        let exclusive = flag(schema, "exclusiveMinimum");
        let m = min.as_f64().unwrap_or(f64::MIN);
        if (exclusive && x <= m) || (!exclusive && x < m) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                value,
                &format!("{name} in body should be {rel} {}", fmt(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum") {
        let exclusive = flag(schema, "exclusiveMaximum");
        let m = max.as_f64().unwrap_or(f64::MAX);
        if (exclusive && x >= m) || (!exclusive && x > m) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                value,
                &format!("{name} in body should be {rel} {}", fmt(max)),
            ));
        }
    }
    if let Some(multiple) = schema.get("multipleOf").and_then(Value::as_f64)
        && multiple > 0.0
        && (x / multiple).fract() != 0.0
    {
        errs.push(FieldError::invalid(
            path,
            value,
            &format!("{name} in body should be a multiple of {multiple}"),
        ));
    }
    let range = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => Some((f64::from(i32::MIN), f64::from(i32::MAX))),
        Some("int64") => Some((i64::MIN as f64, i64::MAX as f64)),
        _ => None,
    };
    if let (Some((lo, hi)), Some(format)) = (range, schema.get("format").and_then(Value::as_str))
        && (x < lo || x > hi)
    {
        errs.push(FieldError::type_invalid(
            path,
            value,
            &format!("{name} in body must be of type {format}: \"{value}\""),
        ));
    }
}

fn validate_array(
    schema: &Value,
    items: &[Value],
    path: &str,
    name: &str,
    errs: &mut Vec<FieldError>,
) {
    let len = items.len();
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && len as u64 > max
    {
        errs.push(FieldError::too_many(path, len, max as usize));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (len as u64) < min
    {
        errs.push(FieldError::invalid(
            path,
            &json!(len),
            &format!("{name} in body should have at least {min} items"),
        ));
    }
    let item_schema = schema.get("items").filter(|s| s.is_object());
    if let Some(item_schema) = item_schema {
        for (i, item) in items.iter().enumerate() {
            validate(item_schema, item, &format!("{path}[{i}]"), false, errs);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    errs.push(FieldError::duplicate(format!("{path}[{i}]"), item));
                }
            }
        }
        Some("map") => {
            let keys: Vec<String> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let key_of = |item: &Value| -> Value {
                Value::Object(
                    keys.iter()
                        .map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null)))
                        .collect(),
                )
            };
            for (i, item) in items.iter().enumerate() {
                let k = key_of(item);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    errs.push(FieldError::duplicate(format!("{path}[{i}]"), &k));
                }
            }
        }
        _ => {}
    }
}

fn validate_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    name: &str,
    errs: &mut Vec<FieldError>,
) {
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                errs.push(FieldError::required(child(path, key), ""));
            }
        }
    }
    let count = map.len();
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && count as u64 > max
    {
        errs.push(FieldError::too_many(path, count, max as usize));
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && (count as u64) < min
    {
        errs.push(FieldError::invalid(
            path,
            &json!(count),
            &format!("{name} in body should have at least {min} properties"),
        ));
    }
    if embedded {
        for key in ["apiVersion", "kind"] {
            if map
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required(child(path, key), "must not be empty"));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (key, v) in map {
        let p = child(path, key);
        if (root || embedded) && key == "metadata" {
            continue;
        }
        if let Some(prop) = props.and_then(|ps| ps.get(key)) {
            validate(prop, v, &p, false, errs);
        } else if let Some(add) = additional {
            validate(add, v, &p, false, errs);
        }
    }
}

/// Whether a value passes a sub-schema (for anyOf / oneOf / not).
fn passes(schema: &Value, value: &Value, path: &str) -> bool {
    let mut errs = Vec::new();
    validate(schema, value, path, false, &mut errs);
    errs.is_empty()
}

fn validate_junctors(
    schema: &Value,
    value: &Value,
    path: &str,
    name: &str,
    errs: &mut Vec<FieldError>,
) {
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(s, value, path, false, errs);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| passes(s, value, path))
    {
        errs.push(FieldError::invalid(
            path,
            value,
            &format!("{name} in body must validate at least one schema (anyOf)"),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| passes(s, value, path)).count() != 1
    {
        errs.push(FieldError::invalid(
            path,
            value,
            &format!("{name} in body must validate one and only one schema (oneOf)"),
        ));
    }
    if let Some(not) = schema.get("not").filter(|s| s.is_object())
        && passes(not, value, path)
    {
        errs.push(FieldError::invalid(
            path,
            value,
            &format!("{name} in body must not validate the schema (not)"),
        ));
    }
}

/// Fills what the API server defaults on a CRD (`names.singular`,
/// `names.listKind`, `conversion.strategy`) before validation.
pub fn default_crd(crd: &mut Value) {
    let names = &mut crd["spec"]["names"];
    if names.is_object() {
        let kind = names["kind"].as_str().unwrap_or_default().to_string();
        if names["singular"].as_str().is_none_or(str::is_empty) && !kind.is_empty() {
            names["singular"] = json!(kind.to_lowercase());
        }
        if names["listKind"].as_str().is_none_or(str::is_empty) && !kind.is_empty() {
            names["listKind"] = json!(format!("{kind}List"));
        }
    }
    if crd["spec"].is_object() && crd["spec"]["conversion"].is_null() {
        crd["spec"]["conversion"] = json!({"strategy": "None"});
    }
}

/// Validates an apiextensions.k8s.io/v1 CustomResourceDefinition.
pub fn validate_crd(crd: &Value) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let group = s(&spec["group"]);
    let plural = s(&spec["names"]["plural"]);
    let name = s(&crd["metadata"]["name"]);
    let name_value = json!(name);
    for msg in validate_dns1123_subdomain(&name) {
        errs.push(FieldError::invalid("metadata.name", &name_value, &msg));
    }
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &name_value,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if let msgs = validate_dns1123_subdomain(&group)
        && !msgs.is_empty()
    {
        errs.push(FieldError::invalid(
            "spec.group",
            &json!(group),
            &msgs.join(","),
        ));
    } else if group.split('.').count() < 2 {
        errs.push(FieldError::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    match s(&spec["scope"]).as_str() {
        "" => errs.push(FieldError::required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => errs.push(FieldError::not_supported(
            "spec.scope",
            &json!(other),
            &["Cluster", "Namespaced"],
        )),
    }
    errs.extend(validate_names(&spec["names"]));
    errs.extend(validate_versions(&spec["versions"]));
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn validate_names(names: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let s = |k: &str| names[k].as_str().unwrap_or_default().to_string();
    let (plural, singular, kind, list_kind) =
        (s("plural"), s("singular"), s("kind"), s("listKind"));
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    } else if let msgs = validate_dns1035_label(&plural)
        && !msgs.is_empty()
    {
        errs.push(FieldError::invalid(
            "spec.names.plural",
            &json!(plural),
            &msgs.join(","),
        ));
    }
    if let msgs = validate_dns1035_label(&singular)
        && !singular.is_empty()
        && !msgs.is_empty()
    {
        errs.push(FieldError::invalid(
            "spec.names.singular",
            &json!(singular),
            &msgs.join(","),
        ));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    } else if let msgs = validate_dns1035_label(&kind.to_lowercase())
        && !msgs.is_empty()
    {
        errs.push(FieldError::invalid(
            "spec.names.kind",
            &json!(kind),
            &format!(
                "may have mixed case, but should otherwise match: {}",
                msgs.join(",")
            ),
        ));
    }
    if let msgs = validate_dns1035_label(&list_kind.to_lowercase())
        && !list_kind.is_empty()
        && !msgs.is_empty()
    {
        errs.push(FieldError::invalid(
            "spec.names.listKind",
            &json!(list_kind),
            &format!(
                "may have mixed case, but should otherwise match: {}",
                msgs.join(",")
            ),
        ));
    }
    if !kind.is_empty() && kind == list_kind {
        errs.push(FieldError::invalid(
            "spec.names.listKind",
            &json!(list_kind),
            "kind and listKind may not be the same",
        ));
    }
    if let Some(shorts) = names["shortNames"].as_array() {
        for (i, short) in shorts.iter().enumerate() {
            let msgs = validate_dns1035_label(short.as_str().unwrap_or_default());
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(
                    format!("spec.names.shortNames[{i}]"),
                    short,
                    &msgs.join(","),
                ));
            }
        }
    }
    errs
}

fn validate_versions(versions: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let list = versions.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        errs.push(FieldError::required(
            "spec.versions",
            "must have at least one version",
        ));
        return errs;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut unique = true;
    let mut storage = 0;
    for (i, version) in list.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = version["name"].as_str().unwrap_or_default();
        if !seen.insert(name.to_string()) {
            unique = false;
        }
        let msgs = validate_dns1035_label(name);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                &json!(name),
                &msgs.join(","),
            ));
        }
        if version["storage"].as_bool() == Some(true) {
            storage += 1;
        }
        let schema = &version["schema"]["openAPIV3Schema"];
        let schema_path = format!("{path}.schema.openAPIV3Schema");
        if !schema.is_object() {
            errs.push(FieldError::required(&schema_path, "schemas are required"));
            continue;
        }
        match schema["type"].as_str() {
            None | Some("") => errs.push(FieldError::required(
                format!("{schema_path}.type"),
                "must not be empty at the root",
            )),
            Some("object") => {}
            Some(other) => errs.push(FieldError::invalid(
                format!("{schema_path}.type"),
                &json!(other),
                "must be object at the root",
            )),
        }
        structural_types(schema, &schema_path, &mut errs);
    }
    let summary = json!(list.iter().map(|v| v["name"].clone()).collect::<Vec<_>>());
    if !unique {
        errs.push(FieldError::invalid(
            "spec.versions",
            &summary,
            "must contain unique version names",
        ));
    }
    if storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &summary,
            "must have exactly one version marked as storage version",
        ));
    }
    errs
}

/// The structural-schema rule that every specified field has a type
/// (except int-or-string and preserve-unknown-fields nodes).
fn structural_types(schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let visit = |sub: &Value, sub_path: String, errs: &mut Vec<FieldError>| {
        let exempt = flag(sub, "x-kubernetes-int-or-string")
            || flag(sub, "x-kubernetes-preserve-unknown-fields");
        if sub["type"].as_str().is_none_or(str::is_empty) && !exempt {
            errs.push(FieldError::required(
                format!("{sub_path}.type"),
                "must not be empty for specified object fields",
            ));
        }
        structural_types(sub, &sub_path, errs);
    };
    if let Some(props) = schema["properties"].as_object() {
        for (key, sub) in props {
            visit(sub, format!("{path}.properties[{key}]"), errs);
        }
    }
    if schema["items"].is_object() {
        visit(&schema["items"], format!("{path}.items"), errs);
    }
    if schema["additionalProperties"].is_object() {
        visit(
            &schema["additionalProperties"],
            format!("{path}.additionalProperties"),
            errs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Link-like schema exercising most keywords.
    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["targetCluster", "gatewayAddresses"],
                    "properties": {
                        "targetCluster": {"type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[a-z][-a-z0-9]*$"},
                        "gatewayAddresses": {"type": "array", "minItems": 1, "maxItems": 3,
                            "items": {"type": "string", "format": "ipv4"}},
                        "gatewayPort": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535, "default": 4143},
                        "mode": {"type": "string", "enum": ["auto", "manual"]},
                        "ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0},
                        "enabled": {"type": "boolean"},
                        "probe": {"type": "object", "default": {},
                            "properties": {"period": {"type": "string", "default": "3s"},
                                           "failureThreshold": {"type": "integer", "default": 3}}},
                        "selector": {"type": "object", "additionalProperties": {"type": "string"}},
                        "port": {"x-kubernetes-int-or-string": true},
                        "note": {"type": "string", "nullable": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"known": {"type": "integer"}}},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}},
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
                    }
                },
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    fn link(spec: Value) -> Value {
        json!({"apiVersion": "mc.dev/v1alpha1", "kind": "Link",
               "metadata": {"name": "east", "namespace": "mc-system", "labels": {"a": "b"}}, "spec": spec})
    }

    fn valid_spec() -> Value {
        json!({"targetCluster": "east", "gatewayAddresses": ["10.0.0.1"]})
    }

    fn errors_for(spec: Value) -> Vec<String> {
        let mut obj = link(spec);
        validate_and_prune(&schema(), &mut obj)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_are_applied_recursively_and_meta_kept() {
        let mut obj = link(valid_spec());
        assert_eq!(validate_and_prune(&schema(), &mut obj), Ok(()));
        assert_eq!(obj["spec"]["gatewayPort"], 4143);
        assert_eq!(
            obj["spec"]["probe"],
            json!({"period": "3s", "failureThreshold": 3})
        );
        assert_eq!(obj["apiVersion"], "mc.dev/v1alpha1");
        assert_eq!(obj["kind"], "Link");
        assert_eq!(obj["metadata"]["labels"], json!({"a": "b"}));
        assert!(
            obj.get("status").is_none(),
            "absent objects without default stay absent"
        );
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_preserved() {
        let mut spec = valid_spec();
        spec["bogus"] = json!(1);
        spec["probe"] = json!({"period": "5s", "junk": true});
        spec["extra"] = json!({"known": 1, "anything": {"deep": [1, 2]}});
        spec["template"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                                  "spec": {"a": "b", "drop": 1}, "other": 2});
        let mut obj = link(spec);
        obj["topLevel"] = json!("x");
        let unknown = validate_and_prune_listing_unknown(&schema(), &mut obj);
        assert_eq!(
            unknown,
            Ok(vec![
                "spec.bogus".to_string(),
                "spec.probe.junk".to_string(),
                "spec.template.other".to_string(),
                "spec.template.spec.drop".to_string(),
                "topLevel".to_string(),
            ])
        );
        assert!(obj["spec"].get("bogus").is_none());
        assert_eq!(
            obj["spec"]["probe"],
            json!({"period": "5s", "failureThreshold": 3})
        );
        assert_eq!(obj["spec"]["extra"]["anything"], json!({"deep": [1, 2]}));
        assert_eq!(obj["spec"]["template"]["metadata"], json!({"name": "x"}));
        assert_eq!(obj["spec"]["template"]["spec"], json!({"a": "b"}));
    }

    #[test]
    fn required_and_type_errors_read_like_the_api_server() {
        assert_eq!(
            errors_for(json!({})),
            vec![
                "spec.targetCluster: Required value",
                "spec.gatewayAddresses: Required value"
            ]
        );
        let mut spec = valid_spec();
        spec["gatewayPort"] = json!("4143");
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.gatewayPort: Invalid value: \"string\": spec.gatewayPort in body must be of type integer: \"string\""
            ]
        );
        let mut spec = valid_spec();
        spec["gatewayAddresses"] = json!(["10.0.0.1", 7]);
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.gatewayAddresses[1]: Invalid value: \"integer\": spec.gatewayAddresses[1] in body must be of type string: \"integer\""
            ]
        );
        let mut spec = valid_spec();
        spec["gatewayPort"] = json!(4143.5);
        assert!(errors_for(spec)[0].ends_with("must be of type integer: \"number\""));
        let mut spec = valid_spec();
        spec["gatewayPort"] = json!(4143.0);
        assert!(
            errors_for(spec).is_empty(),
            "whole-number JSON numbers are integers"
        );
        let mut spec = valid_spec();
        spec["ratio"] = json!(2);
        spec["enabled"] = json!("yes");
        assert_eq!(
            errors_for(spec).len(),
            1,
            "integers are numbers; strings are not booleans"
        );
    }

    #[test]
    fn enums_ranges_lengths_patterns_items() {
        let mut spec = valid_spec();
        spec["mode"] = json!("magic");
        assert_eq!(
            errors_for(spec),
            vec!["spec.mode: Unsupported value: \"magic\": supported values: \"auto\", \"manual\""]
        );
        let mut spec = valid_spec();
        spec["gatewayPort"] = json!(0);
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.gatewayPort: Invalid value: 0: spec.gatewayPort in body should be greater than or equal to 1"
            ]
        );
        let mut spec = valid_spec();
        spec["gatewayPort"] = json!(70000);
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.gatewayPort: Invalid value: 70000: spec.gatewayPort in body should be less than or equal to 65535"
            ]
        );
        let mut spec = valid_spec();
        spec["ratio"] = json!(0);
        assert_eq!(
            errors_for(spec),
            vec!["spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"]
        );
        let mut spec = valid_spec();
        spec["targetCluster"] = json!("");
        let errs = errors_for(spec);
        assert!(errs.contains(&"spec.targetCluster: Invalid value: \"\": spec.targetCluster in body should be at least 1 chars long".to_string()), "{errs:?}");
        let mut spec = valid_spec();
        spec["targetCluster"] = json!("a".repeat(21));
        assert_eq!(
            errors_for(spec),
            vec!["spec.targetCluster: Too long: may not be more than 20 bytes"]
        );
        let mut spec = valid_spec();
        spec["targetCluster"] = json!("East");
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.targetCluster: Invalid value: \"East\": spec.targetCluster in body should match '^[a-z][-a-z0-9]*$'"
            ]
        );
        let mut spec = valid_spec();
        spec["gatewayAddresses"] = json!([]);
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.gatewayAddresses: Invalid value: 0: spec.gatewayAddresses in body should have at least 1 items"
            ]
        );
        let mut spec = valid_spec();
        spec["gatewayAddresses"] = json!(["a", "b", "c", "d"]);
        assert_eq!(
            errors_for(spec),
            vec!["spec.gatewayAddresses: Too many: 4: must have at most 3 items"]
        );
        let mut spec = valid_spec();
        spec["tags"] = json!(["x", "y", "x"]);
        assert_eq!(
            errors_for(spec),
            vec!["spec.tags[2]: Duplicate value: \"x\""]
        );
    }

    #[test]
    fn int32_format_range() {
        let s =
            json!({"type": "object", "properties": {"n": {"type": "integer", "format": "int32"}}});
        let mut ok = json!({"n": 2147483647});
        assert_eq!(validate_and_prune(&s, &mut ok), Ok(()));
        let mut big = json!({"n": 2147483648_i64});
        let errs = validate_and_prune(&s, &mut big).err().unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("n in body must be of type int32"));
    }

    #[test]
    fn maps_int_or_string_nullable_and_nulls() {
        let mut spec = valid_spec();
        spec["selector"] = json!({"app": "x", "n": 1});
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.selector.n: Invalid value: \"integer\": spec.selector.n in body must be of type string: \"integer\""
            ]
        );
        for port in [json!(80), json!("http")] {
            let mut spec = valid_spec();
            spec["port"] = port;
            assert!(errors_for(spec).is_empty());
        }
        let mut spec = valid_spec();
        spec["port"] = json!(true);
        assert_eq!(errors_for(spec).len(), 1);
        let mut spec = valid_spec();
        spec["note"] = Value::Null;
        spec["mode"] = Value::Null;
        spec["gatewayPort"] = Value::Null;
        let mut obj = link(spec);
        assert_eq!(validate_and_prune(&schema(), &mut obj), Ok(()));
        assert_eq!(obj["spec"]["note"], Value::Null, "nullable keeps null");
        assert!(
            obj["spec"].get("mode").is_none(),
            "non-nullable null without default is dropped"
        );
        assert_eq!(
            obj["spec"]["gatewayPort"], 4143,
            "non-nullable null takes the default"
        );
    }

    #[test]
    fn embedded_resources_need_api_version_and_kind() {
        let mut spec = valid_spec();
        spec["template"] = json!({"metadata": {"name": "x"}});
        assert_eq!(
            errors_for(spec),
            vec![
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty"
            ]
        );
    }

    #[test]
    fn junctors() {
        let s = json!({"type": "object", "properties": {
            "v": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
            "w": {"type": "integer", "oneOf": [{"minimum": 5}, {"maximum": 10}]},
            "x": {"type": "string", "not": {"enum": ["forbidden"]}},
            "y": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 3}]}
        }});
        let check = |v: Value| {
            let mut v = v;
            validate_and_prune(&s, &mut v)
                .err()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert!(check(json!({"v": 1, "w": 1, "x": "ok", "y": 2})).is_empty());
        assert_eq!(
            check(json!({"w": 7})),
            vec!["w: Invalid value: 7: w in body must validate one and only one schema (oneOf)"]
        );
        assert_eq!(
            check(json!({"x": "forbidden"})),
            vec!["x: Invalid value: \"forbidden\": x in body must not validate the schema (not)"]
        );
        assert_eq!(
            check(json!({"y": 4})),
            vec!["y: Invalid value: 4: y in body should be less than or equal to 3"]
        );
    }

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "links.mc.dev"},
            "spec": {
                "group": "mc.dev", "scope": "Namespaced",
                "names": {"plural": "links", "singular": "link", "kind": "Link", "listKind": "LinkList"},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": schema()}}]
            }
        })
    }

    fn crd_errors(c: &Value) -> Vec<String> {
        validate_crd(c)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn valid_crd_passes_and_defaults() {
        assert_eq!(validate_crd(&crd()), Ok(()));
        let mut c = crd();
        c["spec"]["names"] = json!({"plural": "links", "kind": "Link"});
        default_crd(&mut c);
        assert_eq!(c["spec"]["names"]["singular"], "link");
        assert_eq!(c["spec"]["names"]["listKind"], "LinkList");
        assert_eq!(validate_crd(&c), Ok(()));
    }

    #[test]
    fn crd_rules() {
        let mut c = crd();
        c["metadata"]["name"] = json!("link.mc.dev");
        assert_eq!(
            crd_errors(&c),
            vec![
                "metadata.name: Invalid value: \"link.mc.dev\": must be spec.names.plural+\".\"+spec.group"
            ]
        );
        let mut c = crd();
        c["spec"]["names"] = json!({});
        c["metadata"]["name"] = json!(".mc.dev");
        let errs = crd_errors(&c);
        assert!(
            errs.contains(&"spec.names.plural: Required value".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"spec.names.kind: Required value".to_string()),
            "{errs:?}"
        );
        let mut c = crd();
        c["spec"]["scope"] = json!("Global");
        assert_eq!(
            crd_errors(&c),
            vec![
                "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\""
            ]
        );
        let mut c = crd();
        c["spec"]["versions"] = json!([]);
        assert_eq!(
            crd_errors(&c),
            vec!["spec.versions: Required value: must have at least one version"]
        );
        let mut c = crd();
        c["spec"]["versions"][0]["storage"] = json!(false);
        assert_eq!(
            crd_errors(&c),
            vec![
                "spec.versions: Invalid value: []string{\"v1alpha1\"}: must have exactly one version marked as storage version"
            ]
        );
        let mut c = crd();
        let v = c["spec"]["versions"][0].clone();
        c["spec"]["versions"] = json!([v.clone(), v]);
        let errs = crd_errors(&c);
        assert!(
            errs.iter()
                .any(|e| e.ends_with("must contain unique version names")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.ends_with("must have exactly one version marked as storage version"))
        );
        let mut c = crd();
        c["spec"]["versions"][0]["schema"] = json!({});
        assert_eq!(
            crd_errors(&c),
            vec!["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"]
        );
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = json!({"type": "string"});
        assert_eq!(
            crd_errors(&c),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.type: Invalid value: \"string\": must be object at the root"
            ]
        );
        let mut c = crd();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"] =
            json!({"type": "object", "properties": {"spec": {"properties": {}}}});
        assert_eq!(
            crd_errors(&c),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"
            ]
        );
        let mut c = crd();
        c["spec"]["group"] = json!("mcdev");
        c["metadata"]["name"] = json!("links.mcdev");
        assert_eq!(
            crd_errors(&c),
            vec!["spec.group: Invalid value: \"mcdev\": should be a domain with at least one dot"]
        );
        let mut c = crd();
        c["spec"]["names"]["kind"] = json!("Link_X");
        assert!(crd_errors(&c)[0].starts_with("spec.names.kind: Invalid value: \"Link_X\": may have mixed case, but should otherwise match: a DNS-1035 label"));
    }
}
