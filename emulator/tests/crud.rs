//! Object semantics through kube-rs over HTTPS: create/get/list/replace/
//! patch/delete, resourceVersion conflicts, finalizers, generateName,
//! namespaces, status subresources, selectors and pagination.

mod common;

use common::{status, status_code};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .expect("configmap")
}

async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns"),
    )
    .await
    .expect("namespace created");
}

#[tokio::test]
async fn create_get_replace_patch_delete_with_resource_versions() {
    let t = common::start().await;
    let client = t.admin().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .expect("create");
    let md = &created.metadata;
    assert!(md.uid.is_some() && md.creation_timestamp.is_some());
    let rv1: u64 = md
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("numeric rv");

    // AlreadyExists
    let err = status(
        api.create(&PostParams::default(), &cm("a", json!({})))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"a\" already exists");

    // NotFound
    let err = status(api.get("nope").await.expect_err("missing"));
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "configmaps \"nope\" not found")
    );

    // Replace with the current version succeeds and bumps the version.
    let mut next = created.clone();
    next.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = api
        .replace("a", &PostParams::default(), &next)
        .await
        .expect("replace");
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    assert!(rv2 > rv1);
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    // Replace with the stale version conflicts.
    let err = status(
        api.replace("a", &PostParams::default(), &next)
            .await
            .expect_err("stale"),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Merge patch with a stale resourceVersion conflicts; without one it applies.
    let stale = json!({"metadata": {"resourceVersion": rv1.to_string()}, "data": {"x": "1"}});
    let err = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .expect_err("stale patch");
    assert_eq!(status_code(err), 409);
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"l": "1"}}, "data": {"x": "1"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("x"))
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("w")
    );

    // JSON patch.
    let ops: kube_json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/x", "value": "2"}]))
            .expect("ops");
    let patched = api
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect("json patch");
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("x"))
            .map(String::as_str),
        Some("2")
    );

    // Strategic merge and apply patches are refused with 415.
    let err = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {"y": "1"}})),
        )
        .await
        .expect_err("strategic");
    assert_eq!(status(err).reason, "UnsupportedMediaType");
    let err = api
        .patch(
            "a",
            &PatchParams::apply("t"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap"})),
        )
        .await
        .expect_err("apply");
    assert_eq!(status_code(err), 415);

    // Delete preconditions, then delete.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        status_code(api.delete("a", &dp).await.expect_err("uid precondition")),
        409
    );
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(status_code(api.get("a").await.expect_err("gone")), 404);
    assert_eq!(
        status_code(
            api.delete("a", &DeleteParams::default())
                .await
                .expect_err("gone")
        ),
        404
    );
}

#[tokio::test]
async fn generate_name_namespaces_and_invalid_names() {
    let t = common::start().await;
    let client = t.admin().await;

    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let obj: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).expect("cm");
    let a = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("generateName a");
    let b = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("generateName b");
    let (na, nb) = (
        a.metadata.name.unwrap_or_default(),
        b.metadata.name.unwrap_or_default(),
    );
    assert!(
        na.starts_with("gen-") && na.len() == 9 && na != nb,
        "{na} {nb}"
    );

    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let err = status(
        missing
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .expect_err("no namespace"),
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );

    let err = status(
        api.create(&PostParams::default(), &cm("Not_Valid", json!({})))
            .await
            .expect_err("bad name"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.map(|d| d.causes).unwrap_or_default();
    assert_eq!(
        causes.first().map(|c| c.field.as_str()),
        Some("metadata.name")
    );

    // Every namespace gets a default ServiceAccount.
    namespace(&client, "team").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let mut found = false;
    for _ in 0..50 {
        if sas.get_opt("default").await.expect("get sa").is_some() {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found, "default ServiceAccount created");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let t = common::start().await;
    let client = t.admin().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut obj = cm("held", json!({}));
    obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");

    let res = api
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = res.left().expect("object returned while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get("held").await.expect("still there");
    assert!(still.metadata.deletion_timestamp.is_some());

    // New finalizers cannot be added while deleting.
    let add = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}});
    assert_eq!(
        status_code(
            api.patch("held", &PatchParams::default(), &Patch::Merge(&add))
                .await
                .expect_err("no new")
        ),
        422
    );

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizers");
    assert_eq!(status_code(api.get("held").await.expect_err("gone")), 404);
}

#[tokio::test]
async fn namespace_deletion_terminates_then_removes_contents() {
    let t = common::start().await;
    let client = t.admin().await;
    namespace(&client, "doomed").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let mut held = cm("held", json!({}));
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held)
        .await
        .expect("held");
    api.create(&PostParams::default(), &cm("free", json!({})))
        .await
        .expect("free");

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("doomed", &DeleteParams::default())
        .await
        .expect("delete ns");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ns = nss
        .get("doomed")
        .await
        .expect("terminating namespace still there");
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert_eq!(
        status_code(api.get("free").await.expect_err("content deleted")),
        404
    );
    let err = status(
        api.create(&PostParams::default(), &cm("late", json!({})))
            .await
            .expect_err("terminating"),
    );
    assert_eq!(err.code, 403);
    assert!(
        err.message.contains("because it is being terminated"),
        "{}",
        err.message
    );

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    let mut gone = false;
    for _ in 0..50 {
        if nss.get_opt("doomed").await.expect("get ns").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "namespace removed once empty");
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let t = common::start().await;
    let client = t.admin().await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 5}
    }))
    .expect("deployment");
    let created = api
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status is dropped on create");

    // A status write keeps the spec and does not bump the generation.
    let s = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"replicas": 2}, "spec": {"replicas": 9}})),
        )
        .await
        .expect("status patch");
    assert_eq!(s.status.and_then(|s| s.replicas), Some(2));
    assert_ne!(s.spec.as_ref().and_then(|s| s.replicas), Some(9));
    assert_eq!(s.metadata.generation, Some(1));

    // A main-resource write keeps the status and bumps the generation on spec changes.
    let m = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}, "status": {"replicas": 7}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(m.status.and_then(|s| s.replicas), Some(2));
    assert_eq!(m.metadata.generation, Some(2));
    let l = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(l.metadata.generation, Some(2));

    // Pods are Pending until their status is written.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("pod");
    let p = pods.create(&PostParams::default(), &p).await.expect("pod");
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
}

#[tokio::test]
async fn selectors_pagination_and_delete_collection() {
    let t = common::start().await;
    let client = t.admin().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({"tier": tier})),
        )
        .await
        .expect("create");
    }
    let even = api
        .list(&ListParams::default().labels("tier=even"))
        .await
        .expect("list");
    assert_eq!(even.items.len(), 4);
    let not_even = api
        .list(&ListParams::default().labels("tier!=even,tier"))
        .await
        .expect("list");
    assert_eq!(not_even.items.len(), 3);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .expect("list");
    assert_eq!(
        by_name
            .items
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["c3"]
    );
    assert_eq!(
        status_code(
            api.list(&ListParams::default().fields("data.k=v"))
                .await
                .expect_err("unsupported field")
        ),
        400
    );

    // limit/continue pages through everything exactly once.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().labels("tier").limit(3);
    loop {
        let page = api.list(&lp).await.expect("page");
        seen.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(seen, vec!["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);

    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=odd"),
        )
        .await
        .expect("dc");
    assert_eq!(deleted.left().map(|l| l.items.len()), Some(3));
    assert_eq!(
        api.list(&ListParams::default().labels("tier"))
            .await
            .expect("list")
            .items
            .len(),
        4
    );
}

#[tokio::test]
async fn garbage_collection_deletes_dependents_of_deleted_owners() {
    let t = common::start().await;
    let client = t.admin().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let owner = api
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .expect("owner");
    let mut dep = cm("dependent", json!({}));
    dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.clone().unwrap_or_default()
    }))
    .expect("ownerRef")]);
    api.create(&PostParams::default(), &dep)
        .await
        .expect("dependent");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        api.get_opt("dependent").await.expect("get").is_some(),
        "dependent stays while its owner exists"
    );
    api.delete("owner", &DeleteParams::default())
        .await
        .expect("delete owner");
    let mut gone = false;
    for _ in 0..50 {
        if api.get_opt("dependent").await.expect("get").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "dependent garbage-collected");
}
