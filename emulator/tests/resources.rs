//! Resource-specific behaviour through kube-rs: Service IP and NodePort
//! allocation and validation, the `kubernetes` Service, CRDs (served on
//! create, status subresource, schema validation and pruning, cleanup),
//! CSRs with approval, and persistence across restarts.

mod common;

use std::time::Duration;

use common::{status, status_code};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;

fn svc(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

#[tokio::test]
async fn services_get_cluster_ips_and_node_ports_and_release_them() {
    let t = common::start().await;
    let api: Api<Service> = Api::namespaced(t.admin().await, "default");

    let k = api.get("kubernetes").await.expect("kubernetes service");
    assert_eq!(
        k.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.1")
    );
    let eps: Api<Endpoints> = Api::namespaced(t.admin().await, "default");
    let ep = eps.get("kubernetes").await.expect("kubernetes endpoints");
    let addr = ep.subsets.unwrap_or_default()[0]
        .addresses
        .clone()
        .unwrap_or_default()[0]
        .ip
        .clone();
    assert_eq!(addr, "127.0.0.1");

    let ports = json!([{"name": "http", "port": 80, "targetPort": 8080}]);
    let a = api
        .create(&PostParams::default(), &svc("a", json!({"ports": ports})))
        .await
        .expect("a");
    let ip = a
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("cluster ip");
    assert!(ip.starts_with("10.96.0.") && ip != "10.96.0.1", "{ip}");
    let headless = api
        .create(
            &PostParams::default(),
            &svc("h", json!({"clusterIP": "None", "ports": ports})),
        )
        .await
        .expect("headless");
    assert_eq!(
        headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    let np = api
        .create(
            &PostParams::default(),
            &svc("np", json!({"type": "NodePort", "ports": ports})),
        )
        .await
        .expect("nodeport");
    let node_port = np
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p[0].node_port)
        .expect("node port");
    assert!((30000..=30010).contains(&node_port));

    // Asking for an IP in use is refused; after delete it can be had again.
    let err = status(
        api.create(
            &PostParams::default(),
            &svc("b", json!({"clusterIP": ip, "ports": ports})),
        )
        .await
        .expect_err("ip in use"),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let b = api
        .create(
            &PostParams::default(),
            &svc("b", json!({"clusterIP": ip, "ports": ports})),
        )
        .await
        .expect("released ip reused");
    assert_eq!(
        b.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
        Some(ip.clone())
    );

    // The cluster IP is immutable.
    let err = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"clusterIP": "10.96.0.200", "clusterIPs": ["10.96.0.200"]}}),
            ),
        )
        .await
        .expect_err("immutable");
    assert_eq!(status_code(err), 422);

    // Invalid specs: bad port, long name.
    let err = status(
        api.create(
            &PostParams::default(),
            &svc("bad", json!({"ports": [{"port": 0}]})),
        )
        .await
        .expect_err("port 0"),
    );
    assert_eq!(err.code, 422);
    assert!(
        err.details
            .map(|d| d
                .causes
                .iter()
                .any(|c| c.field.starts_with("spec.ports[0]")))
            .unwrap_or(false)
    );
    let long = "x".repeat(64);
    assert_eq!(
        status_code(
            api.create(&PostParams::default(), &svc(&long, json!({"ports": ports})))
                .await
                .expect_err("long")
        ),
        422
    );

    // A LoadBalancer's ingress is set through /status by the lab.
    api.create(
        &PostParams::default(),
        &svc("lb", json!({"type": "LoadBalancer", "ports": ports})),
    )
    .await
    .expect("lb");
    let lb = api
        .patch_status(
            "lb",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}),
            ),
        )
        .await
        .expect("lb status");
    let ingress = lb
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default();
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.10"));
}

fn widget_crd(scope: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "required": ["size"], "properties": {
                            "size": {"type": "integer"},
                            "color": {"type": "string", "enum": ["red", "blue"], "default": "red"}
                        }},
                        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                    }
                }}
            }]
        }
    }))
    .expect("crd")
}

fn widgets(client: &kube::Client, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}))
        .expect("widget")
}

#[tokio::test]
async fn crds_serve_validated_pruned_custom_resources_and_clean_up() {
    let t = common::start().await;
    let client = t.admin().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &widget_crd("Namespaced"))
        .await
        .expect("crd");
    let conds = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let api = widgets(&client, Some("default"));
    let w = api
        .create(
            &PostParams::default(),
            &widget("w1", json!({"size": 3, "unknown": true})),
        )
        .await
        .expect("widget");
    assert_eq!(
        w.data["spec"],
        json!({"size": 3, "color": "red"}),
        "pruned and defaulted"
    );
    assert_eq!(w.metadata.generation, Some(1));

    let err = status(
        api.create(
            &PostParams::default(),
            &widget("w2", json!({"color": "green"})),
        )
        .await
        .expect_err("invalid"),
    );
    assert_eq!(err.code, 422);
    let fields: Vec<String> = err
        .details
        .map(|d| d.causes.into_iter().map(|c| c.field).collect())
        .unwrap_or_default();
    assert!(fields.iter().any(|f| f == "spec.size"), "{fields:?}");
    assert!(fields.iter().any(|f| f == "spec.color"), "{fields:?}");

    // The status subresource.
    let s = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"ready": true}, "spec": {"size": 9}})),
        )
        .await
        .expect("status");
    assert_eq!(s.data["status"]["ready"], json!(true));
    assert_eq!(s.data["spec"]["size"], json!(3));

    // Replace without a resourceVersion is refused for custom resources.
    let mut unconditional = s.clone();
    unconditional.metadata.resource_version = None;
    assert_eq!(
        status_code(
            api.replace("w1", &PostParams::default(), &unconditional)
                .await
                .expect_err("rv required")
        ),
        422
    );

    // Deleting the CRD removes its objects and the resource.
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .expect("delete crd");
    let mut gone = false;
    for _ in 0..100 {
        if crds
            .get_opt("widgets.example.com")
            .await
            .expect("get crd")
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "crd removed");
    assert_eq!(
        status_code(api.get("w1").await.expect_err("no longer served")),
        404
    );

    // Recreated cluster-scoped: objects from before are gone.
    crds.create(&PostParams::default(), &widget_crd("Cluster"))
        .await
        .expect("crd again");
    let cluster = widgets(&client, None);
    assert!(
        cluster
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    cluster
        .create(&PostParams::default(), &widget("c1", json!({"size": 1})))
        .await
        .expect("cluster widget");
}

#[tokio::test]
async fn csrs_record_the_requester_and_take_approval() {
    let t = common::start().await;
    let client = t.with_cert("agent-1", &["system:masters", "agents"]).await;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": "c1"},
        "spec": {"request": "UkVRVUVTVA==", "signerName": "mc.dev/identity", "usages": ["client auth"]}
    }))
    .expect("csr");
    let c = api.create(&PostParams::default(), &csr).await.expect("csr");
    assert_eq!(c.spec.username.as_deref(), Some("agent-1"));
    assert!(
        c.spec
            .groups
            .unwrap_or_default()
            .contains(&"agents".to_string())
    );

    let approval = json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "Test"}]}});
    let a = api
        .patch_approval("c1", &PatchParams::default(), &Patch::Merge(&approval))
        .await
        .expect("approve");
    assert_eq!(
        a.status.and_then(|s| s.conditions).unwrap_or_default()[0].type_,
        "Approved"
    );
    let signed = api
        .patch_status(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"certificate": "Q0VSVA=="}})),
        )
        .await
        .expect("certificate");
    assert!(signed.status.and_then(|s| s.certificate).is_some());
}

#[tokio::test]
async fn a_restart_over_the_data_dir_keeps_objects_and_versions() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let root = dir.path().to_path_buf();
    let start = |d: std::path::PathBuf| {
        let mut cfg = common::test_config(&root);
        cfg.data_dir = Some(d);
        async move { mc_emulator::Emulator::start(cfg).await.expect("start") }
    };
    let emu = start(data.clone()).await;
    let client = common::client_from_yaml(&emu.admin_kubeconfig("t")).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let s = api
        .create(
            &PostParams::default(),
            &svc("kept", json!({"ports": [{"port": 80}]})),
        )
        .await
        .expect("svc");
    let rv: u64 = s
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    emu.shutdown().await;

    let emu = start(data.clone()).await;
    let client = common::client_from_yaml(&emu.admin_kubeconfig("t")).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let again = api.get("kept").await.expect("survived");
    assert_eq!(again.metadata.uid, s.metadata.uid);
    assert_eq!(
        again.spec.and_then(|s| s.cluster_ip),
        s.spec.and_then(|s| s.cluster_ip.clone()).clone()
    );
    let next = api
        .create(
            &PostParams::default(),
            &svc("new", json!({"ports": [{"port": 80}]})),
        )
        .await
        .expect("svc");
    let rv2: u64 = next
        .metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("rv");
    assert!(rv2 > rv, "resourceVersion continues after restart");
    emu.shutdown().await;
}
