//! Per-resource behaviour on writes: the create/update strategies and
//! admission steps kube-apiserver runs for the resources the emulator serves.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::auth::{TokenClaims, UserInfo};
use crate::errors::ApiError;
use crate::resources::{self, ResourceInfo, Subresource};
use crate::schema;
use crate::state::{State, meta_str, now_rfc3339};
use crate::validation::{self, FieldError, FieldErrorKind};
use crate::workloads;

/// The finalizer the CRD controller puts on every CRD.
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// Annotation naming the ServiceAccount of a legacy token Secret.
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Annotation carrying that ServiceAccount's uid.
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// The type of a legacy ServiceAccount token Secret.
pub const SA_TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";

fn is(info: &ResourceInfo, group: &str, plural: &str) -> bool {
    info.group == group && info.plural == plural
}

fn invalid(info: &ResourceInfo, obj: &Value, errors: Vec<FieldError>) -> ApiError {
    ApiError::invalid(
        &info.group,
        &info.kind,
        meta_str(obj, "name").unwrap_or_default(),
        &errors,
    )
}

/// Checks `metadata.name` under the rule the resource uses.
pub fn validate_name(info: &ResourceInfo, obj: &Value, name: &str) -> Result<(), ApiError> {
    let resource = if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    };
    let mut errors = validation::validate_object_name(&resource, name);
    if let Some(labels) = obj.pointer("/metadata/labels") {
        errors.extend(validation::validate_labels(labels, "metadata.labels"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, obj, errors))
    }
}

/// Merges a Secret's `stringData` into `data` (base64) and drops it.
fn merge_string_data(obj: &mut Value) {
    let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(sd) = sd.as_object() else { return };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        if let Some(s) = v.as_str() {
            obj["data"][k] = json!(STANDARD.encode(s));
        }
    }
}

/// Fills a legacy ServiceAccount token Secret (what the token controller does).
fn fill_token_secret(state: &State, obj: &mut Value) -> Result<(), ApiError> {
    if obj.get("type").and_then(Value::as_str) != Some(SA_TOKEN_SECRET_TYPE) {
        return Ok(());
    }
    let ns = meta_str(obj, "namespace").unwrap_or_default().to_string();
    let secret = meta_str(obj, "name").unwrap_or_default().to_string();
    let Some(sa_name) = obj
        .pointer(&format!(
            "/metadata/annotations/{}",
            SA_NAME_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(ApiError::invalid(
            "",
            "Secret",
            &secret,
            &[FieldError::new(
                FieldErrorKind::Required,
                format!("metadata.annotations[{SA_NAME_ANNOTATION}]"),
                "Required value",
            )],
        ));
    };
    let sa_key = (String::new(), "serviceaccounts".to_string());
    let Some(sa) = state.store.get(&sa_key, &ns, &sa_name) else {
        // The token controller would not fill it; the Secret stays as given.
        return Ok(());
    };
    let uid = meta_str(&sa, "uid").unwrap_or_default().to_string();
    obj["metadata"]["annotations"][SA_UID_ANNOTATION] = json!(uid);
    let token = state.env.signer.sign(
        &TokenClaims {
            namespace: ns.clone(),
            service_account: sa_name,
            service_account_uid: uid,
            expires: None,
            secret_name: Some(secret),
            audiences: Vec::new(),
        },
        chrono::Utc::now().timestamp(),
    );
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    obj["data"]["token"] = json!(STANDARD.encode(token));
    obj["data"]["ca.crt"] = json!(STANDARD.encode(&state.env.ca_pem));
    obj["data"]["namespace"] = json!(STANDARD.encode(&ns));
    Ok(())
}

fn crd_established_status(crd: &Value) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let now = now_rfc3339();
    let mut accepted = names.clone();
    if accepted.get("singular").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["singular"] = json!(k.to_lowercase());
    }
    if accepted.get("listKind").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["listKind"] = json!(format!("{k}List"));
    }
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": accepted,
        "storedVersions": storage,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    })
}

fn check_crd(
    state: &State,
    info: &ResourceInfo,
    crd: &Value,
    creating: bool,
) -> Result<(), ApiError> {
    if let Err(errors) = schema::validate_crd(crd) {
        return Err(invalid(info, crd, errors));
    }
    let name = meta_str(crd, "name").unwrap_or_default();
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            info,
            crd,
            vec![FieldError::new(
                FieldErrorKind::Invalid,
                "metadata.name",
                format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
            )],
        ));
    }
    if resources::from_crd(crd).is_none() {
        return Err(invalid(
            info,
            crd,
            vec![FieldError::new(
                FieldErrorKind::Required,
                "spec.versions",
                "Required value: must have exactly one version marked as storage version",
            )],
        ));
    }
    if creating
        && let Some(existing) = state.registry.get(group, plural)
        && !existing.is_custom()
    {
        return Err(invalid(
            info,
            crd,
            vec![FieldError::new(
                FieldErrorKind::Invalid,
                "spec.names.plural",
                format!("Invalid value: \"{plural}\": conflicts with a built-in resource"),
            )],
        ));
    }
    Ok(())
}

/// Validates and prunes a custom resource against its CRD's schema.
fn check_custom(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let version = info.storage_version().to_string();
    let Some(schema) = info
        .crd_version(&version)
        .and_then(|v| v.pointer("/schema/openAPIV3Schema"))
        .cloned()
    else {
        return Ok(());
    };
    let api_version = obj.get("apiVersion").cloned();
    let kind = obj.get("kind").cloned();
    let metadata = obj.get("metadata").cloned();
    schema::validate_and_prune(&schema, obj).map_err(|errors| invalid(info, obj, errors))?;
    // apiVersion, kind and metadata are the server's business, never pruned.
    for (k, v) in [
        ("apiVersion", api_version),
        ("kind", kind),
        ("metadata", metadata),
    ] {
        if let Some(v) = v {
            obj[k] = v;
        }
    }
    Ok(())
}

fn check_csr(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if obj
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(FieldError::new(
            FieldErrorKind::Required,
            "spec.request",
            "Required value",
        ));
    }
    if obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(FieldError::new(
            FieldErrorKind::Required,
            "spec.signerName",
            "Required value",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, obj, errors))
    }
}

fn check_csr_conditions(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let conds = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut errors = Vec::new();
    let types: Vec<&str> = conds
        .iter()
        .filter_map(|c| c.get("type").and_then(Value::as_str))
        .collect();
    if types.contains(&"Approved") && types.contains(&"Denied") {
        errors.push(FieldError::new(
            FieldErrorKind::Invalid,
            "status.conditions",
            "Invalid value: \"Approved\": Approved and Denied conditions are mutually exclusive",
        ));
    }
    for (i, c) in conds.iter().enumerate() {
        if c.get("status").and_then(Value::as_str).is_none() {
            errors.push(FieldError::new(
                FieldErrorKind::Required,
                format!("status.conditions[{i}].status"),
                "Required value",
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, obj, errors))
    }
}

/// Resource-specific steps of a create, after the generic metadata is set.
pub fn on_create(
    state: &mut State,
    info: &ResourceInfo,
    obj: &mut Value,
    user: &UserInfo,
) -> Result<(), ApiError> {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "services") => {
            state
                .services
                .create(obj)
                .map_err(|e| invalid(info, obj, e))?;
        }
        ("", "secrets") => {
            merge_string_data(obj);
            fill_token_secret(state, obj)?;
        }
        ("", "pods") => {
            if let Some(spec) = obj.get_mut("spec") {
                workloads::default_pod_spec(spec);
            }
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        ("apps", plural @ ("deployments" | "replicasets" | "daemonsets")) => {
            workloads::default_workload(plural, obj);
            let errors = workloads::validate_workload(obj);
            if !errors.is_empty() {
                return Err(invalid(info, obj, errors));
            }
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            check_csr(info, obj)?;
            obj["spec"]["username"] = json!(user.name);
            obj["spec"]["uid"] = json!(user.uid);
            obj["spec"]["groups"] = json!(user.groups);
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            schema::default_crd(obj);
            check_crd(state, info, obj, true)?;
            obj["status"] = crd_established_status(obj);
            let fins = obj["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !fins.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                let mut fins = fins;
                fins.push(json!(CRD_CLEANUP_FINALIZER));
                obj["metadata"]["finalizers"] = json!(fins);
            }
        }
        _ if info.is_custom() => check_custom(info, obj)?,
        _ => {}
    }
    Ok(())
}

/// Resource-specific steps of an update; `new` already carries the generic merge.
pub fn on_update(
    state: &mut State,
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
    sub: Option<Subresource>,
) -> Result<(), ApiError> {
    if let Some(labels) = new.pointer("/metadata/labels") {
        let errors = validation::validate_labels(labels, "metadata.labels");
        if !errors.is_empty() {
            return Err(invalid(info, new, errors));
        }
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") if sub.is_none() => {
            new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
            new["status"] = old.get("status").cloned().unwrap_or(json!({}));
        }
        ("", "services") if sub.is_none() => {
            state
                .services
                .update(old, new)
                .map_err(|e| invalid(info, new, e))?;
        }
        ("", "secrets") => merge_string_data(new),
        ("apps", plural @ ("deployments" | "replicasets" | "daemonsets")) if sub.is_none() => {
            workloads::default_workload(plural, new);
            let errors = workloads::validate_workload(new);
            if !errors.is_empty() {
                return Err(invalid(info, new, errors));
            }
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            if sub.is_none() {
                new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
            }
            check_csr_conditions(info, new)?;
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") if sub.is_none() => {
            schema::default_crd(new);
            check_crd(state, info, new, false)?;
        }
        _ if info.is_custom() => check_custom(info, new)?,
        _ => {}
    }
    Ok(())
}

/// Marks an object whose deletion waits (namespace Terminating, CRD Terminating).
pub fn on_terminate(info: &ResourceInfo, obj: &mut Value) {
    if is(info, "", "namespaces") {
        obj["status"]["phase"] = json!("Terminating");
    }
    if is(info, "apiextensions.k8s.io", "customresourcedefinitions")
        && let Some(conds) = obj
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
    {
        conds.push(json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress", "lastTransitionTime": now_rfc3339()}));
    }
}

/// Follow-ups once an object is stored: CRDs become servable.
pub fn after_store(state: &mut State, info: &ResourceInfo, obj: &Arc<Value>) {
    if is(info, "apiextensions.k8s.io", "customresourcedefinitions")
        && let Some(ri) = resources::from_crd(obj)
    {
        state.registry.insert(ri);
    }
}

/// Follow-ups once an object is gone: Services release their IPs and ports, CRDs stop being served.
pub fn after_remove(state: &mut State, info: &ResourceInfo, obj: &Arc<Value>) {
    if is(info, "", "services") {
        state.services.release(obj);
    }
    if is(info, "apiextensions.k8s.io", "customresourcedefinitions")
        && let Some(ri) = resources::from_crd(obj)
    {
        state.registry.remove(&ri.group, &ri.plural);
    }
}
