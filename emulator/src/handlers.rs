//! The resource verbs over HTTP: get, list, create, update, patch, delete,
//! deletecollection, plus the TokenRequest and self-review endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::auth::{TokenClaims, UserInfo};
use crate::authz;
use crate::errors::{ApiError, success_status};
use crate::request::ResourcePath;
use crate::resources::{ResourceInfo, Subresource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::Shared;
use crate::state::{DeleteOpts, Deleted, meta_str, rkey, target};
use crate::table;

/// How a response should be rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// `as=Table` (kubectl get); `true` when the row objects should be whole objects.
    Table {
        full_objects: bool,
    },
}

/// A request resolved against the registry.
pub struct Call<'a> {
    pub info: ResourceInfo,
    pub path: &'a ResourcePath,
    pub query: &'a HashMap<String, String>,
    pub user: &'a UserInfo,
    pub format: Format,
}

impl Call<'_> {
    fn ns(&self) -> Option<&str> {
        if self.info.namespaced {
            self.path.namespace.as_deref()
        } else {
            None
        }
    }

    fn store_ns(&self) -> &str {
        self.ns().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.path.name.as_deref().unwrap_or_default()
    }

    fn sub(&self) -> Result<Option<Subresource>, ApiError> {
        match self.path.subresource.as_deref() {
            None => Ok(None),
            Some(s) => self
                .info
                .subresources
                .iter()
                .copied()
                .find(|x| x.name() == s)
                .map(Some)
                .ok_or_else(ApiError::path_not_found),
        }
    }

    /// The object as the client asked for it: apiVersion of the requested version.
    pub fn present(&self, obj: &Value) -> Value {
        present(&self.info, &self.path.version, obj)
    }
}

/// An object with apiVersion set to the requested version (conversion `None`).
pub fn present(info: &ResourceInfo, version: &str, obj: &Value) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(info.api_version(version));
    o
}

/// Parsed list/watch filters.
pub struct Filters {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filters {
    /// From `labelSelector` and `fieldSelector`.
    pub fn from_query(info: &ResourceInfo, q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )
        .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
        fields
            .check_supported(&info.group, &info.plural)
            .map_err(ApiError::bad_request)?;
        Ok(Filters { labels, fields })
    }

    /// Whether an object is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels")) && self.fields.matches(obj)
    }
}

/// A JSON reply (status code, body).
pub type Reply = (u16, Value);

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

/// GET of one object.
pub fn get(shared: &Shared, c: &Call<'_>) -> Result<Reply, ApiError> {
    let sub = c.sub()?;
    if sub.is_some_and(|s| s != Subresource::Status && s != Subresource::Scale) {
        return Err(ApiError::method_not_allowed("get", &c.info.plural));
    }
    let obj = shared
        .read(|st| st.store.get(&rkey(&c.info), c.store_ns(), c.name()))
        .ok_or_else(|| ApiError::not_found(target(&c.info, c.name())))?;
    if sub == Some(Subresource::Scale) {
        return Ok((200, crate::scale::scale_of(&obj)));
    }
    let rv = meta_str(&obj, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    Ok(match c.format {
        Format::Json => (200, c.present(&obj)),
        Format::Table { full_objects } => (
            200,
            table::table(
                &c.info,
                &c.path.version,
                &[c.present(&obj)],
                full_objects,
                &rv,
                None,
            ),
        ),
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

/// LIST with selectors, limit and continue.
pub fn list(shared: &Shared, c: &Call<'_>) -> Result<Reply, ApiError> {
    let filters = Filters::from_query(&c.info, c.query)?;
    let limit: usize = c
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let token = match c.query.get("continue").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => {
            let raw = URL_SAFE_NO_PAD
                .decode(t.trim_end_matches('='))
                .map_err(|_| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
            let tok: ContinueToken = serde_json::from_slice(&raw).map_err(|_| {
                ApiError::bad_request("continue key is not valid: not a continue token")
            })?;
            Some(tok)
        }
    };
    let (objs, rv, oldest) = shared.read(|st| {
        (
            st.store.list(&rkey(&c.info), c.ns()),
            st.store.current_rv(),
            st.store.oldest_replayable_rv(),
        )
    });
    let list_rv = match &token {
        Some(t) if t.rv < oldest => return Err(ApiError::continue_expired()),
        Some(t) => t.rv,
        None => rv,
    };
    let start = token.as_ref().map(|t| t.start.clone());
    let mut selected: Vec<Value> = Vec::new();
    let mut remaining = 0usize;
    let mut last_key = String::new();
    for o in objs.iter() {
        let key = format!(
            "{}/{}",
            meta_str(o, "namespace").unwrap_or_default(),
            meta_str(o, "name").unwrap_or_default()
        );
        if start.as_ref().is_some_and(|s| key.as_str() <= s.as_str()) || !filters.matches(o) {
            continue;
        }
        if limit > 0 && selected.len() >= limit {
            remaining += 1;
            continue;
        }
        last_key = key;
        selected.push(c.present(o));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0 {
        let tok = serde_json::to_vec(&ContinueToken {
            rv: list_rv,
            start: last_key,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
        metadata["continue"] = json!(URL_SAFE_NO_PAD.encode(tok));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(match c.format {
        Format::Json => (
            200,
            json!({
                "kind": format!("{}List", c.info.kind),
                "apiVersion": c.info.api_version(&c.path.version),
                "metadata": metadata,
                "items": selected,
            }),
        ),
        Format::Table { full_objects } => {
            let cont = metadata
                .get("continue")
                .and_then(Value::as_str)
                .map(str::to_string);
            (
                200,
                table::table(
                    &c.info,
                    &c.path.version,
                    &selected,
                    full_objects,
                    &list_rv.to_string(),
                    cont,
                ),
            )
        }
    })
}

/// POST: create, or a subresource create (TokenRequest), or a self-review.
pub fn create(shared: &Shared, c: &Call<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let obj = parse_body(body)?;
    match (c.info.group.as_str(), c.info.plural.as_str(), c.sub()?) {
        ("", "serviceaccounts", Some(Subresource::Token)) => return token_request(shared, c, obj),
        ("", "pods", Some(Subresource::Binding)) => {
            shared.write(|st| st.bind_pod(&c.info, c.store_ns(), c.name(), &obj))?;
            return Ok((
                201,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
        (_, _, Some(_)) => return Err(ApiError::method_not_allowed("create", &c.info.plural)),
        ("authorization.k8s.io", "selfsubjectaccessreviews", None) => {
            return Ok((
                201,
                shared.read(|st| authz::self_subject_access_review(st, c.user, obj)),
            ));
        }
        ("authentication.k8s.io", "selfsubjectreviews", None) => {
            let u = c.user;
            return Ok((
                201,
                json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
                    "status": {"userInfo": {"username": u.name, "uid": u.uid, "groups": u.groups}}}),
            ));
        }
        _ => {}
    }
    if c.path.name.is_some() {
        return Err(ApiError::method_not_allowed("create", &c.info.plural));
    }
    let stored = shared.write(|st| st.create(&c.info, c.ns(), obj, c.user))?;
    Ok((201, c.present(&stored)))
}

/// PUT on an object or its status/approval subresource.
pub fn update(shared: &Shared, c: &Call<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let obj = parse_body(body)?;
    let sub = c.sub()?;
    if sub == Some(Subresource::Scale) {
        return Ok((200, crate::scale::write(shared, c, obj)?));
    }
    let (stored, created) =
        shared.write(|st| st.update(&c.info, c.ns(), c.name(), obj, sub, c.user))?;
    Ok((if created { 201 } else { 200 }, c.present(&stored)))
}

/// Patch types the emulator accepts.
pub const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
];

/// PATCH with a JSON merge patch or a JSON patch; a resourceVersion in the result is a precondition.
pub fn patch(
    shared: &Shared,
    c: &Call<'_>,
    content_type: &str,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    if !PATCH_TYPES.contains(&ct) {
        return Err(ApiError::unsupported_media_type(ct, PATCH_TYPES));
    }
    let sub = c.sub()?;
    let patch = parse_body(body)?;
    if sub == Some(Subresource::Scale) {
        let cur = shared
            .read(|st| st.store.get(&rkey(&c.info), c.store_ns(), c.name()))
            .ok_or_else(|| ApiError::not_found(target(&c.info, c.name())))?;
        let mut scale = crate::scale::scale_of(&cur);
        apply_patch(&mut scale, ct, &patch, c)?;
        return Ok((200, crate::scale::write(shared, c, scale)?));
    }
    let stored = shared.write(|st| {
        let cur = st
            .store
            .get(&rkey(&c.info), c.store_ns(), c.name())
            .ok_or_else(|| ApiError::not_found(target(&c.info, c.name())))?;
        let mut doc = c.present(&cur);
        apply_patch(&mut doc, ct, &patch, c)?;
        if meta_str(&doc, "resourceVersion")
            .unwrap_or_default()
            .is_empty()
        {
            doc["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        }
        st.update(&c.info, c.ns(), c.name(), doc, sub, c.user)
            .map(|(o, _)| o)
    })?;
    Ok((200, c.present(&stored)))
}

/// DeleteOptions from the body, with the query parameters kubectl may use
/// instead (`gracePeriodSeconds`, `propagationPolicy`).
/// Applies a merge patch or a JSON patch (`ct`) to `doc`.
fn apply_patch(doc: &mut Value, ct: &str, patch: &Value, c: &Call<'_>) -> Result<(), ApiError> {
    if ct == "application/merge-patch+json" {
        json_patch::merge(doc, patch);
        return Ok(());
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    json_patch::patch(doc, &ops).map_err(|e| {
        ApiError::invalid(
            &c.info.group,
            &c.info.kind,
            c.name(),
            &[crate::validation::FieldError::new(
                crate::validation::FieldErrorKind::Invalid,
                "",
                format!("the server rejected our request due to an error in our request: {e}"),
            )],
        )
    })
}

fn delete_opts(body: &[u8], query: &HashMap<String, String>) -> Result<DeleteOpts, ApiError> {
    let mut opts = DeleteOpts::default();
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    opts.propagation_policy = query.get("propagationPolicy").cloned();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v = parse_body(body)?;
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace_period_seconds = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation_policy = Some(p.to_string());
        }
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation_policy = Some("Orphan".into());
        }
        opts.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.resource_version = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(opts)
}

/// DELETE of one object.
pub fn delete(shared: &Shared, c: &Call<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    if c.path.subresource.is_some() {
        return Err(ApiError::method_not_allowed("delete", &c.info.plural));
    }
    let opts = delete_opts(body, c.query)?;
    let res = shared.write(|st| st.delete(&c.info, c.store_ns(), c.name(), &opts))?;
    Ok(match res {
        Deleted::Pending(o) => (200, c.present(&o)),
        Deleted::Gone(o) if c.info.is_custom() || c.info.plural == "pods" => (200, c.present(&o)),
        Deleted::Gone(o) => (
            200,
            success_status(
                target(&c.info, c.name()),
                meta_str(&o, "uid").unwrap_or_default(),
            ),
        ),
    })
}

/// DELETE of a collection (with selectors); answers the list of deleted objects.
pub fn delete_collection(shared: &Shared, c: &Call<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let filters = Filters::from_query(&c.info, c.query)?;
    let opts = delete_opts(body, c.query)?;
    let (items, rv) = shared.write(|st| {
        let objs = st.store.list(&rkey(&c.info), c.ns());
        let mut items = Vec::new();
        for o in objs.iter().filter(|o| filters.matches(o)) {
            let ns = meta_str(o, "namespace").unwrap_or_default().to_string();
            let name = meta_str(o, "name").unwrap_or_default().to_string();
            match st.delete(&c.info, &ns, &name, &opts) {
                Ok(Deleted::Gone(o)) | Ok(Deleted::Pending(o)) => items.push(c.present(&o)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((items, st.rv_string()))
    })?;
    Ok((
        200,
        json!({"kind": format!("{}List", c.info.kind), "apiVersion": c.info.api_version(&c.path.version),
               "metadata": {"resourceVersion": rv}, "items": items}),
    ))
}

/// The minimum TokenRequest lifetime kube-apiserver accepts.
const MIN_TOKEN_SECONDS: i64 = 600;

fn token_request(shared: &Shared, c: &Call<'_>, req: Value) -> Result<Reply, ApiError> {
    let name = c.name().to_string();
    let ns = c.store_ns().to_string();
    let sa = shared
        .read(|st| st.store.get(&rkey(&c.info), &ns, &name))
        .ok_or_else(|| ApiError::not_found(target(&c.info, &name)))?;
    let seconds = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if seconds < MIN_TOKEN_SECONDS {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            &name,
            &[crate::validation::FieldError::new(
                crate::validation::FieldErrorKind::Invalid,
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                ),
            )],
        ));
    }
    let api_audience = shared.config.api_audience();
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| vec![api_audience]);
    let now = chrono::Utc::now();
    let exp = now.timestamp() + seconds;
    let token = shared.env.signer.sign(
        &TokenClaims {
            namespace: ns.clone(),
            service_account: name.clone(),
            service_account_uid: meta_str(&sa, "uid").unwrap_or_default().to_string(),
            expires: Some(exp),
            secret_name: None,
            audiences: audiences.clone(),
        },
        now.timestamp(),
    );
    let expiration = chrono::DateTime::from_timestamp(exp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut spec = req.get("spec").cloned().unwrap_or(json!({}));
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(seconds);
    Ok((
        201,
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expiration},
        }),
    ))
}

/// Shared handle type used by the router.
pub type SharedRef = Arc<Shared>;
