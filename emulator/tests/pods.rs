//! Pod semantics the lab's kubelet and controllers rely on: graceful
//! deletion (deletionTimestamp + grace period until the kubelet deletes
//! with grace 0), binding, defaulting, and the workload resources'
//! defaulting, validation and ownership (orphan or collect dependents).

mod common;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Binding, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn pod(name: &str, node: Option<&str>, grace: Option<i64>) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    if let Some(grace) = grace {
        spec["terminationGracePeriodSeconds"] = json!(grace);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

fn grace(seconds: u32) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(seconds),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_unbound_pod_is_removed_at_once() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.admin().await, "default");
    pods.create(&PostParams::default(), &pod("p", None, None))
        .await
        .expect("create");
    let answer = pods
        .delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let last = answer.left().expect("the deleted pod is returned");
    assert_eq!(last.metadata.name.as_deref(), Some("p"));
    assert!(pods.get_opt("p").await.expect("get").is_none());
}

#[tokio::test]
async fn a_bound_pod_waits_for_its_kubelet_until_deleted_with_grace_zero() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.admin().await, "default");
    let created = pods
        .create(&PostParams::default(), &pod("p", Some("n1"), Some(20)))
        .await
        .expect("create");
    let rv = created.metadata.resource_version.clone().expect("rv");
    let mut events = pods
        .watch(&WatchParams::default().fields("metadata.name=p"), &rv)
        .await
        .expect("watch")
        .boxed();

    let answer = pods
        .delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let pending = answer
        .left()
        .expect("Api::delete returns the terminating pod");
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(20));
    let deadline = pending
        .metadata
        .deletion_timestamp
        .as_ref()
        .expect("deletionTimestamp")
        .0;
    let ahead = deadline.as_second() - unix_now();
    assert!(
        (18..=21).contains(&ahead),
        "deletionTimestamp is {ahead}s ahead, want the grace period"
    );

    // The kubelet still writes status while the pod terminates.
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .expect("status while terminating");
    let still = pods.get("p").await.expect("the pod is still there");
    assert!(still.metadata.deletion_timestamp.is_some());

    // A longer grace period changes nothing; a shorter one shortens it.
    let again = pods.delete("p", &grace(60)).await.expect("delete again");
    let again = again.left().expect("pod");
    assert_eq!(again.metadata.deletion_grace_period_seconds, Some(20));
    let shorter = pods.delete("p", &grace(5)).await.expect("shorter");
    let shorter = shorter.left().expect("pod");
    assert_eq!(shorter.metadata.deletion_grace_period_seconds, Some(5));

    // The kubelet's final delete removes it.
    pods.delete("p", &grace(0)).await.expect("final delete");
    assert!(pods.get_opt("p").await.expect("get").is_none());

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("DELETED") {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("event");
        seen.push(
            match event {
                WatchEvent::Added(_) => "ADDED",
                WatchEvent::Modified(_) => "MODIFIED",
                WatchEvent::Deleted(_) => "DELETED",
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(e) => panic!("watch error {e:?}"),
            }
            .to_string(),
        );
    }
    assert_eq!(seen.first().map(String::as_str), Some("MODIFIED"));
    assert!(seen.len() >= 2, "events {seen:?}");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[tokio::test]
async fn grace_comes_from_the_request_then_the_pod_then_thirty_seconds() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.admin().await, "default");
    pods.create(&PostParams::default(), &pod("a", Some("n1"), None))
        .await
        .expect("create a");
    let a = pods.get("a").await.expect("a");
    assert_eq!(
        a.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds),
        Some(30),
        "the API defaults terminationGracePeriodSeconds"
    );
    let a = pods
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a")
        .left()
        .expect("pod");
    assert_eq!(a.metadata.deletion_grace_period_seconds, Some(30));

    pods.create(&PostParams::default(), &pod("b", Some("n1"), Some(3)))
        .await
        .expect("create b");
    let b = pods
        .delete("b", &grace(7))
        .await
        .expect("delete b")
        .left()
        .expect("pod");
    assert_eq!(b.metadata.deletion_grace_period_seconds, Some(7));

    // A finished pod has nothing to stop: removed at once.
    pods.create(&PostParams::default(), &pod("c", Some("n1"), None))
        .await
        .expect("create c");
    pods.patch_status(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .expect("status");
    pods.delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    assert!(pods.get_opt("c").await.expect("get c").is_none());
}

#[tokio::test]
async fn finalizers_still_hold_a_pod_after_its_grace_period() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.admin().await, "default");
    let mut p = pod("p", Some("n1"), Some(10));
    p.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    pods.create(&PostParams::default(), &p)
        .await
        .expect("create");
    pods.delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    pods.delete("p", &grace(0)).await.expect("grace 0");
    let held = pods.get("p").await.expect("held by its finalizer");
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(0));
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("drop the finalizer");
    assert!(pods.get_opt("p").await.expect("get").is_none());
}

#[tokio::test]
async fn binding_assigns_a_node_once() {
    let t = common::start().await;
    let pods: Api<Pod> = Api::namespaced(t.admin().await, "default");
    pods.create(&PostParams::default(), &pod("p", None, None))
        .await
        .expect("create");
    let binding: Binding = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
    }))
    .expect("binding");
    let body = serde_json::to_vec(&binding).expect("json");
    let request = http::Request::post("/api/v1/namespaces/default/pods/p/binding")
        .header("content-type", "application/json")
        .body(body.clone())
        .expect("request");
    let client = t.admin().await;
    client
        .request_text(request)
        .await
        .expect("first binding succeeds");
    let bound = pods.get("p").await.expect("get");
    assert_eq!(
        bound.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("n1")
    );
    let scheduled = bound
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled condition");
    assert_eq!(scheduled.status, "True");
    let request = http::Request::post("/api/v1/namespaces/default/pods/p/binding")
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let error = client
        .request_text(request)
        .await
        .expect_err("a bound pod cannot be bound again");
    assert_eq!(common::status_code(error), 409);
}

fn deployment(selector: &str, label: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": selector}},
            "template": {"metadata": {"labels": {"app": label}},
                         "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
        },
    }))
    .expect("deployment")
}

#[tokio::test]
async fn deployments_are_defaulted_and_their_selector_must_match_the_template() {
    let t = common::start().await;
    let api: Api<Deployment> = Api::namespaced(t.admin().await, "default");
    let error = api
        .create(&PostParams::default(), &deployment("web", "other"))
        .await
        .expect_err("selector does not match");
    let status = common::status(error);
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("`selector` does not match template `labels`"),
        "{}",
        status.message
    );
    let created = api
        .create(&PostParams::default(), &deployment("web", "web"))
        .await
        .expect("create");
    let spec = created.spec.expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("RollingUpdate")
    );
    let pod_spec = spec.template.spec.expect("pod spec");
    assert_eq!(pod_spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(created.metadata.generation, Some(1));
}

#[tokio::test]
async fn orphaned_dependents_survive_their_owner_and_others_are_collected() {
    let t = common::start().await;
    let client = t.admin().await;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "rs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    }))
    .expect("rs");
    for policy in ["Orphan", "Background"] {
        let owner = sets
            .create(&PostParams::default(), &rs)
            .await
            .expect("create rs");
        let mut p = pod("dependent", None, None);
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": owner.metadata.uid, "controller": true, "blockOwnerDeletion": true,
            }))
            .expect("owner reference"),
        ]);
        pods.create(&PostParams::default(), &p)
            .await
            .expect("create dependent");
        let params = DeleteParams {
            propagation_policy: Some(if policy == "Orphan" {
                kube::api::PropagationPolicy::Orphan
            } else {
                kube::api::PropagationPolicy::Background
            }),
            ..Default::default()
        };
        sets.delete("rs", &params).await.expect("delete rs");
        let mut left = None;
        for _ in 0..50 {
            left = pods.get_opt("dependent").await.expect("get");
            if policy == "Orphan" || left.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if policy == "Orphan" {
            let left = left.expect("the orphan survives");
            assert!(
                left.metadata
                    .owner_references
                    .unwrap_or_default()
                    .is_empty(),
                "orphan keeps no reference to its deleted owner"
            );
            pods.delete("dependent", &DeleteParams::default())
                .await
                .expect("cleanup");
        } else {
            assert!(left.is_none(), "the dependent was collected");
        }
    }
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let t = common::start().await;
    let api: Api<Deployment> = Api::namespaced(t.admin().await, "default");
    api.create(&PostParams::default(), &deployment("web", "web"))
        .await
        .expect("create");
    let scale = api.get_scale("web").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app=web")
    );
    let scaled = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("patch scale");
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(3));
    let d = api.get("web").await.expect("get");
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(d.metadata.generation, Some(2), "scaling is a spec change");
    let error = api
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .expect_err("negative replicas");
    assert_eq!(common::status_code(error), 422);
}
