//! Mirroring between two real control planes: export, port changes,
//! unexport, remote deletion, long names, conflicts with foreign Services,
//! missing and created namespaces, and Link deletion.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const SOON: Duration = Duration::from_secs(2);

async fn mirror(west: &Cluster, ns: &str, name: &str) -> Option<Service> {
    west.services(ns).get_opt(name).await.expect("get mirror")
}

#[tokio::test]
async fn exported_services_are_mirrored_followed_and_removed() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.east.namespace("shop").await;
    pair.west.namespace("shop").await;
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    let east = pair.east.services("shop");
    east.create(
        &PostParams::default(),
        &service("backend", "shop", &[("http", 8080)], true),
    )
    .await
    .expect("backend");

    let m = eventually(SOON, "backend-east in west", || async {
        mirror(&pair.west, "shop", "backend-east").await
    })
    .await;
    assert_eq!(ports_of(&m), vec![("http".to_string(), 8080)]);
    let spec = m.spec.clone().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.selector.is_none(), "a mirror has no selector");
    assert!(spec.cluster_ip.is_some(), "a mirror gets a ClusterIP");
    let labels = m.metadata.labels.clone().expect("labels");
    assert_eq!(labels["mc.dev/mirror-of-cluster"], "east");
    assert_eq!(labels["mc.dev/mirror-of-service"], "backend");
    assert_eq!(labels["app"], "backend");
    assert!(!labels.contains_key("mc.dev/exported"));

    // The Link's status tells what is mirrored and that all is well.
    eventually(SOON, "status lists the mirror", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        (status.mirrored_services == 1
            && status
                .mirrors
                .iter()
                .any(|m| m.mirror == "backend-east" && m.state == "Mirrored"))
        .then_some(())
    })
    .await;
    for type_ in ["CredentialsValid", "RemoteAPIReachable"] {
        let (status, _, _) = condition(&pair.west, type_).await.expect(type_);
        assert_eq!(status, "True", "{type_}");
    }

    // Port changes follow; the ClusterIP stays.
    east.patch(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ports": [
            {"name": "http", "port": 9090, "targetPort": 9090},
            {"name": "grpc", "port": 9091, "targetPort": 9091}
        ]}})),
    )
    .await
    .expect("ports changed");
    let changed = eventually(SOON, "mirror follows the ports", || async {
        let m = mirror(&pair.west, "shop", "backend-east").await?;
        (ports_of(&m).len() == 2).then_some(m)
    })
    .await;
    assert_eq!(
        ports_of(&changed),
        vec![("http".to_string(), 9090), ("grpc".to_string(), 9091)]
    );
    assert_eq!(
        changed.spec.and_then(|s| s.cluster_ip),
        spec.cluster_ip,
        "an update keeps the ClusterIP"
    );

    // Unexport: the mirror goes.
    east.patch(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"mc.dev/exported": null}}})),
    )
    .await
    .expect("unexported");
    eventually(SOON, "mirror removed on unexport", || async {
        mirror(&pair.west, "shop", "backend-east")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // Export again, then delete remotely: the mirror goes.
    east.patch(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"mc.dev/exported": "true"}}})),
    )
    .await
    .expect("exported again");
    eventually(SOON, "mirror back", || async {
        mirror(&pair.west, "shop", "backend-east").await
    })
    .await;
    east.delete("backend", &DeleteParams::default())
        .await
        .expect("deleted");
    eventually(SOON, "mirror removed on remote deletion", || async {
        mirror(&pair.west, "shop", "backend-east")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // A user deleting a mirror gets it back.
    east.create(
        &PostParams::default(),
        &service("cache", "shop", &[("redis", 6379)], true),
    )
    .await
    .expect("cache");
    eventually(SOON, "cache mirrored", || async {
        mirror(&pair.west, "shop", "cache-east").await
    })
    .await;
    pair.west
        .services("shop")
        .delete("cache-east", &DeleteParams::default())
        .await
        .expect("mirror deleted by hand");
    eventually(SOON, "mirror recreated", || async {
        mirror(&pair.west, "shop", "cache-east").await
    })
    .await;
    controller.shutdown().await;
}

#[tokio::test]
async fn long_names_are_shortened_and_recorded() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.east.namespace("shop").await;
    pair.west.namespace("shop").await;
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    let long = format!("inventory-{}", "a".repeat(50));
    assert_eq!(long.len(), 60);
    pair.east
        .services("shop")
        .create(
            &PostParams::default(),
            &service(&long, "shop", &[("http", 80)], true),
        )
        .await
        .expect("long service");
    let expected = mc_controller::mirror::mirror_name(&long, "east").expect("name");
    assert_eq!(expected.len(), 63);
    assert!(expected.starts_with(&long[..49]) && expected.ends_with("-east"));
    let m = eventually(SOON, "shortened mirror", || async {
        mirror(&pair.west, "shop", &expected).await
    })
    .await;
    let labels = m.metadata.labels.expect("labels");
    assert_eq!(labels["mc.dev/mirror-of-service"], long);
    assert_eq!(
        m.metadata.annotations.expect("annotations")["mc.dev/remote-service"],
        format!("shop/{long}")
    );
    eventually(SOON, "status records the shortened name", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        status
            .mirrors
            .iter()
            .any(|m| m.service == long && m.mirror == expected && m.state == "Mirrored")
            .then_some(())
    })
    .await;
    controller.shutdown().await;
}

#[tokio::test]
async fn a_foreign_service_is_never_touched_and_the_conflict_is_reported() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.east.namespace("shop").await;
    pair.west.namespace("shop").await;
    let west = pair.west.services("shop");
    let theirs = west
        .create(
            &PostParams::default(),
            &service("backend-east", "shop", &[("web", 80)], false),
        )
        .await
        .expect("user's backend-east");
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    pair.east
        .services("shop")
        .create(
            &PostParams::default(),
            &service("backend", "shop", &[("http", 8080)], true),
        )
        .await
        .expect("backend");

    eventually(SOON, "conflict in status", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        status
            .mirrors
            .iter()
            .any(|m| m.mirror == "backend-east" && m.state == "Conflict" && !m.message.is_empty())
            .then_some(())
    })
    .await;
    let events: Api<Event> = Api::namespaced(pair.west.admin.clone(), NS);
    let event = eventually(SOON, "MirrorConflict event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("MirrorConflict"))
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.and_then(|r| r.name).as_deref(),
        Some("east")
    );
    assert_eq!(
        event.related.and_then(|r| r.name).as_deref(),
        Some("backend-east")
    );
    // Give the loop time to (wrongly) act, then check nothing changed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = west.get("backend-east").await.expect("still there");
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(ports_of(&now), vec![("web".to_string(), 80)]);

    // Link deletion leaves the foreign Service alone too.
    pair.west
        .links()
        .delete("east", &DeleteParams::default())
        .await
        .expect("link deleted");
    eventually(Duration::from_secs(5), "link gone", || async {
        pair.west
            .links()
            .get_opt("east")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let after = west.get("backend-east").await.expect("still there");
    assert_eq!(
        after.metadata.resource_version,
        theirs.metadata.resource_version
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn missing_namespaces_are_reported_then_mirrored_when_they_appear() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.east.namespace("only-east").await;
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    pair.east
        .services("only-east")
        .create(
            &PostParams::default(),
            &service("api", "only-east", &[("http", 80)], true),
        )
        .await
        .expect("api");
    let message = eventually(SOON, "MissingNamespace in status", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        status
            .mirrors
            .into_iter()
            .find(|m| m.service == "api" && m.state == "MissingNamespace")
            .map(|m| m.message)
    })
    .await;
    assert!(message.contains("only-east"), "{message}");
    pair.west.namespace("only-east").await;
    eventually(SOON, "mirror once the namespace exists", || async {
        mirror(&pair.west, "only-east", "api-east").await
    })
    .await;
    controller.shutdown().await;
}

#[tokio::test]
async fn created_namespaces_and_mirrors_go_with_the_link() {
    init_tracing();
    let pair = Pair::linked(|link| {
        link["spec"]["createNamespaces"] = json!(true);
    })
    .await;
    pair.east.namespace("shop").await;
    pair.east.namespace("billing").await;
    pair.west.namespace("shop").await;
    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    for (ns, name) in [("shop", "backend"), ("shop", "cart"), ("billing", "ledger")] {
        pair.east
            .services(ns)
            .create(
                &PostParams::default(),
                &service(name, ns, &[("http", 80)], true),
            )
            .await
            .expect("service");
    }
    // A Service of the user's in the namespace mc did not create.
    pair.west
        .services("shop")
        .create(
            &PostParams::default(),
            &service("frontend", "shop", &[("http", 80)], false),
        )
        .await
        .expect("frontend");
    eventually(SOON, "three mirrors, billing created", || async {
        let status = pair.west.links().get("east").await.ok()?.status?;
        (status.mirrored_services == 3 && status.created_namespaces == vec!["billing".to_string()])
            .then_some(())
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(pair.west.admin.clone());
    let billing = namespaces.get("billing").await.expect("billing");
    let labels = billing.metadata.labels.expect("labels");
    assert_eq!(labels["app.kubernetes.io/part-of"], "mc");
    assert_eq!(labels["mc.dev/mirror-of-cluster"], "east");
    let link = pair.west.links().get("east").await.expect("link");
    assert!(
        link.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"mc.dev/link-cleanup".to_string())
    );

    pair.west
        .links()
        .delete("east", &DeleteParams::default())
        .await
        .expect("link deleted");
    eventually(
        Duration::from_secs(5),
        "link, mirrors and billing gone",
        || async {
            let link_gone = pair.west.links().get_opt("east").await.ok()?.is_none();
            let mirrors = Api::<Service>::all(pair.west.admin.clone())
                .list(&ListParams::default().labels("mc.dev/mirror-of-cluster=east"))
                .await
                .ok()?;
            let billing = namespaces.get_opt("billing").await.ok()?;
            let billing_gone = billing.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some());
            (link_gone && mirrors.items.is_empty() && billing_gone).then_some(())
        },
    )
    .await;
    // The namespace mc did not create, and the user's Service, stay.
    assert!(namespaces.get_opt("shop").await.expect("get").is_some());
    assert!(
        pair.west
            .services("shop")
            .get_opt("frontend")
            .await
            .expect("get")
            .is_some()
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn mirrors_of_clusters_without_a_link_are_swept_at_start() {
    init_tracing();
    let pair = Pair::linked(|_| {}).await;
    pair.west.namespace("shop").await;
    let west = pair.west.services("shop");
    let mut orphan = service("old-gone", "shop", &[("http", 80)], false);
    orphan.spec.as_mut().expect("spec").selector = None;
    orphan.metadata.labels = Some(
        [
            ("mc.dev/mirror-of-cluster", "gone"),
            ("mc.dev/mirror-of-service", "old"),
            ("app.kubernetes.io/part-of", "mc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    west.create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    // Labelled like a mirror but not marked as mc's: never touched.
    let mut lookalike = orphan.clone();
    lookalike.metadata.name = Some("lookalike".into());
    if let Some(labels) = lookalike.metadata.labels.as_mut() {
        labels.remove("app.kubernetes.io/part-of");
    }
    west.create(&PostParams::default(), &lookalike)
        .await
        .expect("lookalike");

    let controller = start_controller(pair.west.admin.clone(), fast_config("a"));
    eventually(SOON, "orphan swept", || async {
        mirror(&pair.west, "shop", "old-gone")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(mirror(&pair.west, "shop", "lookalike").await.is_some());
    controller.shutdown().await;
}
