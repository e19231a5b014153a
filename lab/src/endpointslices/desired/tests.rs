use super::*;
use serde_json::json;

fn service(spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "backend", "namespace": "shop", "uid": "uid-1", "labels": {"app": "backend"}},
        "spec": spec,
    }))
    .expect("valid Service")
}

fn pod(name: &str, ip: Option<&str>, ready: bool, extra: serde_json::Value) -> Pod {
    let mut value = json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": {"app": "backend"}},
        "spec": {"nodeName": "east-node-0", "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        ]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
    });
    if let Some(ip) = ip {
        value["status"]["podIP"] = json!(ip);
    }
    merge(&mut value, extra);
    serde_json::from_value(value).expect("valid Pod")
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn web_service() -> Service {
    service(json!({
        "selector": {"app": "backend"},
        "clusterIP": "10.100.0.20",
        "ports": [
            {"name": "web", "port": 80, "targetPort": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        ],
    }))
}

fn conditions(e: &Endpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
    let c = e.conditions.clone().unwrap_or_default();
    (c.ready, c.serving, c.terminating)
}

#[test]
fn lists_matching_pods_with_their_conditions_and_resolved_ports() {
    let ready = pod("a", Some("10.10.1.5"), true, json!({}));
    let not_ready = pod("b", Some("10.10.2.5"), false, json!({}));
    let terminating = pod(
        "c",
        Some("10.10.1.6"),
        true,
        json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
    );
    let no_ip = pod("d", None, true, json!({}));
    let other_app = pod(
        "e",
        Some("10.10.1.7"),
        true,
        json!({"metadata": {"labels": {"app": "other"}}}),
    );
    let other_ns = pod(
        "f",
        Some("10.10.1.8"),
        true,
        json!({"metadata": {"namespace": "else"}}),
    );
    let finished = pod(
        "g",
        Some("10.10.1.9"),
        true,
        json!({"status": {"phase": "Succeeded"}}),
    );
    let pods = [
        &ready,
        &not_ready,
        &terminating,
        &no_ip,
        &other_app,
        &other_ns,
        &finished,
    ];

    let desired = desired(&web_service(), &pods).expect("managed service");
    assert_eq!(desired.slices.len(), 1);
    let slice = &desired.slices[0];
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(SERVICE_NAME_LABEL).map(String::as_str),
        Some("backend")
    );
    assert_eq!(
        labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some(MANAGED_BY)
    );
    let owner = &slice.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Service", "backend", "uid-1")
    );
    assert!(
        slice
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("backend-")
    );

    let ips: Vec<&str> = slice
        .endpoints
        .iter()
        .map(|e| e.addresses[0].as_str())
        .collect();
    assert_eq!(ips, ["10.10.1.5", "10.10.1.6", "10.10.2.5"]);
    assert_eq!(
        conditions(&slice.endpoints[0]),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(
        conditions(&slice.endpoints[1]),
        (Some(false), Some(true), Some(true))
    );
    assert_eq!(
        conditions(&slice.endpoints[2]),
        (Some(false), Some(false), Some(false))
    );
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("east-node-0"));
    let target = slice.endpoints[0].target_ref.clone().unwrap_or_default();
    assert_eq!(
        (target.kind.as_deref(), target.name.as_deref()),
        (Some("Pod"), Some("a"))
    );

    let ports: Vec<(Option<&str>, Option<i32>, Option<&str>)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref()))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("web"), Some(8080), Some("TCP")),
            (Some("dns"), Some(5353), Some("UDP"))
        ]
    );
}

#[test]
fn legacy_endpoints_split_ready_and_not_ready_and_drop_terminating() {
    let ready = pod("a", Some("10.10.1.5"), true, json!({}));
    let not_ready = pod("b", Some("10.10.2.5"), false, json!({}));
    let terminating = pod(
        "c",
        Some("10.10.1.6"),
        true,
        json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
    );
    let desired =
        desired(&web_service(), &[&ready, &not_ready, &terminating]).expect("managed service");
    let endpoints = desired.endpoints;
    assert_eq!(endpoints.metadata.name.as_deref(), Some("backend"));
    let subsets = endpoints.subsets.unwrap_or_default();
    assert_eq!(subsets.len(), 1);
    let ips = |list: &Option<Vec<EndpointAddress>>| {
        list.iter()
            .flatten()
            .map(|a| a.ip.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ips(&subsets[0].addresses), ["10.10.1.5"]);
    assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.10.2.5"]);
    let ports: Vec<(Option<String>, i32)> = subsets[0]
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("web".to_string()), 8080),
            (Some("dns".to_string()), 5353)
        ]
    );
}

#[test]
fn pods_resolving_named_ports_differently_get_separate_slices() {
    let a = pod("a", Some("10.10.1.5"), true, json!({}));
    let b = pod(
        "b",
        Some("10.10.1.6"),
        true,
        json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 9090}]}]}}),
    );
    let service = service(json!({
        "selector": {"app": "backend"},
        "ports": [{"name": "web", "port": 80, "targetPort": "http"}],
    }));
    let desired = desired(&service, &[&a, &b]).expect("managed service");
    let mut by_port: Vec<(i32, String)> = desired
        .slices
        .iter()
        .map(|s| {
            (
                s.ports.clone().unwrap_or_default()[0]
                    .port
                    .unwrap_or_default(),
                s.endpoints[0].addresses[0].clone(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        [
            (8080, "10.10.1.5".to_string()),
            (9090, "10.10.1.6".to_string())
        ]
    );
    assert_ne!(
        desired.slices[0].metadata.name,
        desired.slices[1].metadata.name
    );
}

#[test]
fn service_without_pods_gets_one_empty_slice_and_empty_endpoints() {
    let desired = desired(&web_service(), &[]).expect("managed service");
    assert_eq!(desired.slices.len(), 1);
    assert!(desired.slices[0].endpoints.is_empty());
    assert_eq!(desired.endpoints.subsets, None);
}

#[test]
fn slice_names_are_stable_and_depend_on_the_service_uid() {
    let a = pod("a", Some("10.10.1.5"), true, json!({}));
    let first = desired(&web_service(), &[&a]).expect("managed service");
    let again = desired(&web_service(), &[&a]).expect("managed service");
    assert_eq!(first.slices[0].metadata.name, again.slices[0].metadata.name);
    let mut recreated = web_service();
    recreated.metadata.uid = Some("uid-2".into());
    let other = desired(&recreated, &[&a]).expect("managed service");
    assert_ne!(first.slices[0].metadata.name, other.slices[0].metadata.name);
}

#[test]
fn services_without_selector_or_of_type_external_name_are_not_managed() {
    assert!(desired(&service(json!({"ports": [{"port": 80}]})), &[]).is_none());
    assert!(
        desired(
            &service(json!({"selector": {}, "ports": [{"port": 80}]})),
            &[]
        )
        .is_none()
    );
    let external = service(
        json!({"type": "ExternalName", "externalName": "x.example", "selector": {"app": "backend"}}),
    );
    assert!(desired(&external, &[]).is_none());
}

#[test]
fn publish_not_ready_addresses_marks_every_pod_ready() {
    let not_ready = pod("b", Some("10.10.2.5"), false, json!({}));
    let service = service(json!({
        "selector": {"app": "backend"},
        "clusterIP": "None",
        "publishNotReadyAddresses": true,
        "ports": [{"port": 80}],
    }));
    let desired = desired(&service, &[&not_ready]).expect("managed service");
    assert_eq!(conditions(&desired.slices[0].endpoints[0]).0, Some(true));
    let labels = desired.slices[0]
        .metadata
        .labels
        .clone()
        .unwrap_or_default();
    assert!(labels.contains_key(HEADLESS_LABEL));
    let subsets = desired.endpoints.subsets.unwrap_or_default();
    assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(1));
}

#[test]
fn unwanted_objects_are_deleted_unless_their_service_has_no_selector() {
    assert!(unwanted_is_stale(None), "deleted Service");
    assert!(
        unwanted_is_stale(Some(&web_service())),
        "stale slice of a managed Service"
    );
    let external = service(json!({"type": "ExternalName", "externalName": "x.example"}));
    assert!(unwanted_is_stale(Some(&external)));
    let selectorless = service(json!({"clusterIP": "10.100.0.1", "ports": [{"port": 443}]}));
    assert!(
        !unwanted_is_stale(Some(&selectorless)),
        "e.g. default/kubernetes, written by the API server"
    );
}
