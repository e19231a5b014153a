//! The emulator's state (store, resource registry, allocators) and the write
//! operations with the apiserver's generic semantics: create, update,
//! delete with finalizers and preconditions.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::admission;
use crate::auth::{TokenSigner, UserInfo};
use crate::errors::{ApiError, Target};
use crate::resources::{Registry, ResourceInfo, Subresource};
use crate::service::ServiceAllocator;
use crate::store::{ResourceKey, Store, object_rv};
use crate::validation::{FieldError, FieldErrorKind};

/// Fixed facts the write paths need.
pub struct Env {
    pub signer: TokenSigner,
    pub ca_pem: String,
}

/// Everything behind the emulator's one lock.
pub struct State {
    pub store: Store,
    pub registry: Registry,
    pub services: ServiceAllocator,
    pub env: Arc<Env>,
}

/// Options of a delete (from `DeleteOptions` and the query).
#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `gracePeriodSeconds`: only Pods honour it (graceful deletion).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: `Orphan` strips the dependents' ownerReferences;
    /// `Background` and `Foreground` leave them to the garbage collector.
    pub propagation_policy: Option<String>,
}

/// The grace period a Pod is deleted with, as the Pod strategy decides it:
/// the request's, else the Pod's `terminationGracePeriodSeconds` (default
/// 30); zero for Pods not bound to a node or already finished.
pub fn pod_grace_seconds(pod: &Value, requested: Option<i64>) -> i64 {
    let unbound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if unbound || finished {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

/// The default `terminationGracePeriodSeconds` of a Pod.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// `deletionGracePeriodSeconds` of an object (0 when unset).
fn deletion_grace(obj: &Value) -> i64 {
    obj.pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// `now + seconds`, formatted as the API formats times.
fn rfc3339_in(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The result of a delete.
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Arc<Value>),
    /// The object waits for its finalizers, with deletionTimestamp set.
    Pending(Arc<Value>),
}

/// The current time as the API formats it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `metadata.<field>` as a string.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The resource key of a resource.
pub fn rkey(info: &ResourceInfo) -> ResourceKey {
    (info.group.clone(), info.plural.clone())
}

/// A Target for error messages.
pub fn target<'a>(info: &'a ResourceInfo, name: &'a str) -> Target<'a> {
    Target {
        group: &info.group,
        resource: &info.plural,
        name,
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a delete must wait: metadata finalizers, or a namespace's spec finalizers.
fn must_wait(info: &ResourceInfo, obj: &Value) -> bool {
    let spec_finalizers = info.group.is_empty()
        && info.plural == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    !finalizers(obj).is_empty() || spec_finalizers
}

/// Resources whose objects carry `metadata.generation`.
fn tracks_generation(info: &ResourceInfo) -> bool {
    info.is_custom()
        || (info.has(Subresource::Status)
            && !matches!(info.plural.as_str(), "namespaces" | "nodes"))
}

/// Everything but metadata and status: a change there bumps the generation.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let suffix: String = (0..5)
        .map(|_| GENERATE_ALPHABET[rand::random_range(0..GENERATE_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Makes sure `obj` is a JSON object with a `metadata` object.
fn ensure_metadata(obj: &mut Value) -> Result<(), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let md = m
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !md.is_object() {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Checks the body's kind against the resource and sets apiVersion/kind to the storage version.
fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != info.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({k}) does not match the resource ({})",
            info.kind
        )));
    }
    obj["apiVersion"] = json!(info.api_version(info.storage_version()));
    obj["kind"] = json!(info.kind);
    Ok(())
}

fn check_namespace(info: &ResourceInfo, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
    let body_ns = meta_str(obj, "namespace").unwrap_or_default().to_string();
    if info.namespaced {
        let ns = ns.unwrap_or_default();
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = json!(ns);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

impl State {
    /// A fresh state around a store.
    pub fn new(
        store: Store,
        registry: Registry,
        services: ServiceAllocator,
        env: Arc<Env>,
    ) -> Self {
        State {
            store,
            registry,
            services,
            env,
        }
    }

    fn namespace_gate(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<(), ApiError> {
        let ns_key = (String::new(), "namespaces".to_string());
        match self.store.get(&ns_key, "", ns) {
            None => Err(ApiError::not_found(Target {
                group: "",
                resource: "namespaces",
                name: ns,
            })),
            Some(n) if meta_str(&n, "deletionTimestamp").is_some() => {
                Err(ApiError::namespace_terminating(target(info, name), ns))
            }
            Some(_) => Ok(()),
        }
    }

    /// Creates an object (POST). `ns` is the namespace from the URL.
    pub fn create(
        &mut self,
        info: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        user: &UserInfo,
    ) -> Result<Arc<Value>, ApiError> {
        ensure_metadata(&mut obj)?;
        check_type(info, &mut obj)?;
        check_namespace(info, ns, &mut obj)?;
        let ns = ns.unwrap_or_default().to_string();
        let mut name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let generate = meta_str(&obj, "generateName")
            .unwrap_or_default()
            .to_string();
        let key = rkey(info);
        if name.is_empty() {
            if generate.is_empty() {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    "",
                    &[FieldError::new(
                        FieldErrorKind::Required,
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )],
                ));
            }
            let store_ns = if info.namespaced { ns.as_str() } else { "" };
            name = (0..8)
                .map(|_| generated_name(&generate))
                .find(|n| self.store.get(&key, store_ns, n).is_none())
                .unwrap_or_else(|| generated_name(&generate));
            obj["metadata"]["name"] = json!(name);
        }
        admission::validate_name(info, &obj, &name)?;
        if info.namespaced {
            self.namespace_gate(info, &ns, &name)?;
        }
        let store_ns = if info.namespaced { ns.as_str() } else { "" };
        if self.store.get(&key, store_ns, &name).is_some() {
            return Err(ApiError::already_exists(target(info, &name)));
        }
        {
            let md = obj["metadata"]
                .as_object_mut()
                .ok_or_else(|| ApiError::internal("metadata vanished"))?;
            md.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            md.insert("creationTimestamp".into(), json!(now_rfc3339()));
            md.remove("deletionTimestamp");
            md.remove("deletionGracePeriodSeconds");
            md.remove("resourceVersion");
            md.remove("selfLink");
            md.remove("managedFields");
            if tracks_generation(info) {
                md.insert("generation".into(), json!(1));
            } else {
                md.remove("generation");
            }
        }
        if info.reset_status_on_create
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        admission::on_create(self, info, &mut obj, user)?;
        let stored = self.store.put(&key, obj);
        admission::after_store(self, info, &stored);
        Ok(stored)
    }

    /// Replaces an object (PUT), on the object itself or on a subresource.
    /// Returns the stored object and whether it was created.
    pub fn update(
        &mut self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        mut new: Value,
        sub: Option<Subresource>,
        user: &UserInfo,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        ensure_metadata(&mut new)?;
        check_type(info, &mut new)?;
        check_namespace(info, ns, &mut new)?;
        match meta_str(&new, "name") {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => new["metadata"]["name"] = json!(name),
        }
        let key = rkey(info);
        let store_ns = if info.namespaced {
            ns.unwrap_or_default()
        } else {
            ""
        };
        let Some(old) = self.store.get(&key, store_ns, name) else {
            if info.create_on_update && sub.is_none() {
                return self.create(info, ns, new, user).map(|o| (o, true));
            }
            return Err(ApiError::not_found(target(info, name)));
        };
        let body_rv = meta_str(&new, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        if body_rv.is_empty() {
            if info.require_rv_on_update {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    name,
                    &[FieldError::new(
                        FieldErrorKind::Invalid,
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )],
                ));
            }
        } else if body_rv != meta_str(&old, "resourceVersion").unwrap_or_default() {
            return Err(ApiError::conflict(target(info, name)));
        }
        let mut merged = match sub {
            None => {
                let mut m = new;
                for f in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    match old["metadata"].get(f) {
                        Some(v) => m["metadata"][f] = v.clone(),
                        None => {
                            if let Some(md) = m["metadata"].as_object_mut() {
                                md.remove(f);
                            }
                        }
                    }
                }
                if info.has(Subresource::Status)
                    && let Some(o) = m.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                m
            }
            Some(Subresource::Status) => {
                let mut m = (*old).clone();
                if let Some(o) = m.as_object_mut() {
                    match new.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                m
            }
            Some(Subresource::Approval) => {
                let mut m = (*old).clone();
                let conditions = new
                    .pointer("/status/conditions")
                    .cloned()
                    .unwrap_or(json!([]));
                if !m.get("status").is_some_and(Value::is_object) {
                    m["status"] = json!({});
                }
                m["status"]["conditions"] = conditions;
                m
            }
            Some(s @ (Subresource::Token | Subresource::Binding | Subresource::Scale)) => {
                return Err(ApiError::method_not_allowed(
                    "update",
                    &format!("{}/{}", info.plural, s.name()),
                ));
            }
        };
        if meta_str(&old, "deletionTimestamp").is_some() {
            let before = finalizers(&old);
            if finalizers(&merged).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &info.group,
                    &info.kind,
                    name,
                    &[FieldError::new(
                        FieldErrorKind::Forbidden,
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        if tracks_generation(info) && spec_part(&old) != spec_part(&merged) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            merged["metadata"]["generation"] = json!(g + 1);
        }
        admission::on_update(self, info, &old, &mut merged, sub)?;
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if merged == *old {
            return Ok((old, false));
        }
        if meta_str(&merged, "deletionTimestamp").is_some()
            && !must_wait(info, &merged)
            && deletion_grace(&merged) == 0
        {
            let gone = self
                .remove(info, store_ns, name)
                .ok_or_else(|| ApiError::not_found(target(info, name)))?;
            return Ok((gone, false));
        }
        let stored = self.store.put(&key, merged);
        admission::after_store(self, info, &stored);
        Ok((stored, false))
    }

    /// Removes an object now, releasing what it held.
    pub fn remove(&mut self, info: &ResourceInfo, ns: &str, name: &str) -> Option<Arc<Value>> {
        let gone = self.store.remove(&rkey(info), ns, name)?;
        admission::after_remove(self, info, &gone);
        Some(gone)
    }

    /// Deletes an object (DELETE): at once, or by setting deletionTimestamp when finalizers remain.
    pub fn delete(
        &mut self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let key = rkey(info);
        let Some(cur) = self.store.get(&key, ns, name) else {
            return Err(ApiError::not_found(target(info, name)));
        };
        if let Some(uid) = &opts.uid {
            let actual = meta_str(&cur, "uid").unwrap_or_default();
            if uid != actual {
                return Err(ApiError::conflict_because(
                    target(info, name),
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            let actual = meta_str(&cur, "resourceVersion").unwrap_or_default();
            if rv != actual {
                return Err(ApiError::conflict_because(
                    target(info, name),
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        if info.group.is_empty() && info.plural == "pods" {
            let grace = pod_grace_seconds(&cur, opts.grace_period_seconds);
            if let Some(pending) = self.delete_gracefully(info, &cur, grace) {
                return Ok(pending);
            }
        }
        if opts.propagation_policy.as_deref() == Some("Orphan") {
            self.orphan_dependents(meta_str(&cur, "uid").unwrap_or_default());
        }
        if must_wait(info, &cur) {
            if meta_str(&cur, "deletionTimestamp").is_some() {
                return Ok(Deleted::Pending(cur));
            }
            let mut o = (*cur).clone();
            o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            admission::on_terminate(info, &mut o);
            let stored = self.store.put(&key, o);
            return Ok(Deleted::Pending(stored));
        }
        let gone = self
            .remove(info, ns, name)
            .ok_or_else(|| ApiError::not_found(target(info, name)))?;
        Ok(Deleted::Gone(gone))
    }

    /// The graceful part of a Pod's deletion: with `grace` > 0 the Pod
    /// gets (or keeps, or shortens to) a deletionTimestamp `grace` seconds
    /// ahead and stays for its kubelet to stop it. `None` when the delete
    /// goes on like any other (grace 0: removed unless finalizers hold it).
    fn delete_gracefully(
        &mut self,
        info: &ResourceInfo,
        cur: &Arc<Value>,
        grace: i64,
    ) -> Option<Deleted> {
        let deleting = meta_str(cur, "deletionTimestamp").is_some();
        let current = deletion_grace(cur);
        if grace == 0 {
            if deleting && current > 0 {
                // Finishing a graceful deletion: only finalizers may hold it now.
                let mut o = (**cur).clone();
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if must_wait(info, &o) {
                    return Some(Deleted::Pending(self.store.put(&rkey(info), o)));
                }
            }
            return None;
        }
        if deleting && current <= grace {
            // Only a shorter grace period changes a deletion in progress.
            return Some(Deleted::Pending(cur.clone()));
        }
        let mut o = (**cur).clone();
        o["metadata"]["deletionTimestamp"] = json!(rfc3339_in(grace));
        o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        Some(Deleted::Pending(self.store.put(&rkey(info), o)))
    }

    /// Removes the ownerReferences naming `owner_uid` from every object
    /// (the effect of `propagationPolicy: Orphan`).
    fn orphan_dependents(&mut self, owner_uid: &str) {
        if owner_uid.is_empty() {
            return;
        }
        let dependents: Vec<(crate::store::ResourceKey, Value)> = self
            .store
            .all()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
            })
            .map(|(res, o)| (res.clone(), (**o).clone()))
            .collect();
        for (res, mut o) in dependents {
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r["uid"] != owner_uid);
            }
            self.store.put(&res, o);
        }
    }

    /// Binds a Pod to a node (`pods/<name>/binding`), as the scheduler
    /// does: only a Pod without `spec.nodeName` may be bound.
    pub fn bind_pod(
        &mut self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        binding: &Value,
    ) -> Result<Arc<Value>, ApiError> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                &[FieldError::new(
                    FieldErrorKind::Required,
                    "target.name",
                    "Required value",
                )],
            ));
        }
        let key = rkey(info);
        let cur = self
            .store
            .get(&key, ns, name)
            .ok_or_else(|| ApiError::not_found(target(info, name)))?;
        if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str)
            && Some(uid) != meta_str(&cur, "uid")
        {
            return Err(ApiError::conflict_because(
                target(info, name),
                "Precondition failed: UID in precondition does not match the pod",
            ));
        }
        if meta_str(&cur, "deletionTimestamp").is_some() {
            return Err(ApiError::conflict_because(
                target(info, name),
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(bound) = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict_because(
                target(info, name),
                &format!("pod {name} is already assigned to node \"{bound}\""),
            ));
        }
        let mut o = (*cur).clone();
        o["spec"]["nodeName"] = json!(node);
        let now = now_rfc3339();
        let scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
        if !o.get("status").is_some_and(Value::is_object) {
            o["status"] = json!({});
        }
        let mut conditions: Vec<Value> = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c["type"] != "PodScheduled");
        conditions.push(scheduled);
        o["status"]["conditions"] = json!(conditions);
        Ok(self.store.put(&key, o))
    }

    /// The resourceVersion of the store as a string.
    pub fn rv_string(&self) -> String {
        self.store.current_rv().to_string()
    }
}

/// The resourceVersion of an object (re-exported for handlers).
pub fn rv_of(obj: &Value) -> u64 {
    object_rv(obj)
}
