//! Watch semantics through kube-rs: replay from a resourceVersion, 410 for
//! versions older than the history, bookmarks, selector transitions,
//! streaming lists, and kube-runtime watchers and reflectors.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn cm(name: &str, tier: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": tier}}}))
        .expect("cm")
}

fn name_of(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

async fn next_event(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
) -> WatchEvent<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("event within 5s")
        .expect("stream open")
        .expect("event decodes")
}

#[tokio::test]
async fn watch_replays_from_a_version_and_reports_selector_transitions() {
    let t = common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(t.admin().await, "default");
    let a = api
        .create(&PostParams::default(), &cm("a", "web"))
        .await
        .expect("a");
    let rv = a.metadata.resource_version.clone().expect("rv");
    api.create(&PostParams::default(), &cm("b", "web"))
        .await
        .expect("b");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"x": "1"}})),
    )
    .await
    .expect("patch");

    // From `rv`: only what followed, in order.
    let wp = WatchParams::default()
        .labels("tier=web")
        .disable_bookmarks();
    let mut s = api.watch(&wp, &rv).await.expect("watch").boxed();
    match next_event(&mut s).await {
        WatchEvent::Added(o) => assert_eq!(name_of(&o), "b"),
        e => panic!("expected ADDED b, got {e:?}"),
    }
    match next_event(&mut s).await {
        WatchEvent::Modified(o) => assert_eq!(name_of(&o), "a"),
        e => panic!("expected MODIFIED a, got {e:?}"),
    }
    // Leaving the selector is a DELETED, entering it an ADDED, and deletion a DELETED.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"tier": "db"}}})),
    )
    .await
    .expect("relabel");
    match next_event(&mut s).await {
        WatchEvent::Deleted(o) => assert_eq!(name_of(&o), "a"),
        e => panic!("expected DELETED a, got {e:?}"),
    }
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"tier": "web"}}})),
    )
    .await
    .expect("relabel back");
    match next_event(&mut s).await {
        WatchEvent::Added(o) => assert_eq!(name_of(&o), "a"),
        e => panic!("expected ADDED a, got {e:?}"),
    }
    let del = api
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    assert!(del.is_right(), "configmap delete answers a Status");
    match next_event(&mut s).await {
        WatchEvent::Deleted(o) => assert_eq!(name_of(&o), "b"),
        e => panic!("expected DELETED b, got {e:?}"),
    }
}

#[tokio::test]
async fn too_old_resource_version_is_410_and_bookmarks_arrive() {
    let t = common::start_with(|c| c.history_len = 3).await;
    let api: Api<ConfigMap> = Api::namespaced(t.admin().await, "default");
    let first = api
        .create(&PostParams::default(), &cm("a", "x"))
        .await
        .expect("a");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("n{i}"), "x"))
            .await
            .expect("more");
    }
    let old = first.metadata.resource_version.clone().expect("rv");
    let mut s = api
        .watch(&WatchParams::default(), &old)
        .await
        .expect("watch")
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        e => panic!("expected a 410 ERROR event, got {e:?}"),
    }

    let list = api.list(&Default::default()).await.expect("list");
    let rv = list.metadata.resource_version.clone().expect("list rv");
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    match next_event(&mut s).await {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        e => panic!("expected a BOOKMARK, got {e:?}"),
    }
}

#[tokio::test]
async fn watch_timeout_ends_the_stream() {
    let t = common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(t.admin().await, "default");
    let wp = WatchParams::default().timeout(1).disable_bookmarks();
    let s = api.watch(&wp, "0").await.expect("watch");
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
        .await
        .expect("stream ends by itself");
    assert!(events.is_empty(), "no objects, no events: {events:?}");
}

#[tokio::test]
async fn watchers_and_reflectors_follow_the_store() {
    let t = common::start().await;
    let api: Api<ConfigMap> = Api::namespaced(t.admin().await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("pre{i}"), "x"))
            .await
            .expect("pre");
    }
    for cfg in [
        watcher::Config::default().page_size(2),
        watcher::Config::default().streaming_lists(),
    ] {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let stream = reflector(writer, watcher(api.clone(), cfg.labels("tier=x")))
            .applied_objects()
            .try_for_each(|_| async { Ok(()) });
        let task = tokio::spawn(stream);
        reader.wait_until_ready().await.expect("reflector ready");
        assert_eq!(reader.state().len(), 5);
        api.create(&PostParams::default(), &cm("late", "x"))
            .await
            .expect("late");
        api.delete("late", &DeleteParams::default())
            .await
            .expect("delete");
        api.create(&PostParams::default(), &cm("later", "x"))
            .await
            .expect("later");
        let mut ok = false;
        for _ in 0..100 {
            let names: Vec<String> = reader.state().iter().map(|c| name_of(c)).collect();
            if names.len() == 6
                && names.contains(&"later".to_string())
                && !names.contains(&"late".to_string())
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            ok,
            "reflector converged: {:?}",
            reader
                .state()
                .iter()
                .map(|c| name_of(c))
                .collect::<Vec<_>>()
        );
        api.delete("later", &DeleteParams::default())
            .await
            .expect("cleanup");
        task.abort();
    }
}
