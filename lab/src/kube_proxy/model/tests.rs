use super::*;
use serde_json::json;

pub(crate) fn service(name: &str, spec: serde_json::Value, status: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
        "status": status,
    }))
    .expect("valid Service")
}

pub(crate) fn slice(
    service: &str,
    ports: serde_json::Value,
    endpoints: serde_json::Value,
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{service}-x"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

fn endpoint(
    ip: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> serde_json::Value {
    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

fn addr(s: &str) -> SocketAddrV4 {
    s.parse().expect("socket address")
}

#[test]
fn cluster_ip_ports_map_to_ready_endpoints_by_port_name_and_protocol() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.100.0.20", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ]}),
        json!({}),
    );
    let slices = [slice(
        "web",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
        json!([
            endpoint("10.10.1.5", Some(true), Some(true), Some(false)),
            endpoint("10.10.2.5", None, None, None),
            endpoint("10.10.2.6", Some(false), Some(false), Some(false)),
        ]),
    )];
    let rules = service_ports([&svc], &slices);
    assert_eq!(rules.len(), 2);
    let (http, dns) = (&rules[0], &rules[1]);
    assert_eq!(dns.name, "shop/web/udp/dns");
    assert_eq!(
        (dns.protocol, dns.port, dns.cluster_ip),
        (Protocol::Udp, 53, Some(Ipv4Addr::new(10, 100, 0, 20)))
    );
    assert_eq!(
        dns.endpoints,
        [addr("10.10.1.5:5353"), addr("10.10.2.5:5353")]
    );
    assert_eq!(
        http.endpoints,
        [addr("10.10.1.5:8080"), addr("10.10.2.5:8080")]
    );
    assert_eq!((http.node_port, http.external_ips.len()), (None, 0));
}

#[test]
fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.100.0.20", "ports": [{"port": 80}]}),
        json!({}),
    );
    let only_terminating = [slice(
        "web",
        json!([{"port": 8080}]),
        json!([
            endpoint("10.10.1.5", Some(false), Some(true), Some(true)),
            endpoint("10.10.1.6", Some(false), Some(false), Some(true)),
        ]),
    )];
    assert_eq!(
        service_ports([&svc], &only_terminating)[0].endpoints,
        [addr("10.10.1.5:8080")]
    );

    let mixed = [slice(
        "web",
        json!([{"port": 8080}]),
        json!([
            endpoint("10.10.1.5", Some(false), Some(true), Some(true)),
            endpoint("10.10.1.7", Some(true), None, None)
        ]),
    )];
    assert_eq!(
        service_ports([&svc], &mixed)[0].endpoints,
        [addr("10.10.1.7:8080")]
    );

    let none_ready = [slice(
        "web",
        json!([{"port": 8080}]),
        json!([endpoint("10.10.1.5", Some(false), Some(false), Some(false))]),
    )];
    assert!(service_ports([&svc], &none_ready)[0].endpoints.is_empty());
    assert!(service_ports([&svc], &[])[0].endpoints.is_empty());
}

#[test]
fn load_balancer_services_get_node_ports_and_ingress_addresses() {
    let svc = service(
        "gw",
        json!({"type": "LoadBalancer", "clusterIP": "10.100.0.30", "externalIPs": ["198.18.0.99"],
               "ports": [{"port": 4143, "nodePort": 30443}]}),
        json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.160", "ipMode": "VIP"}, {"ip": "198.18.0.161", "ipMode": "Proxy"}]}}),
    );
    let rules = service_ports([&svc], &[]);
    assert_eq!(rules[0].node_port, Some(30443));
    assert_eq!(
        rules[0].external_ips,
        [
            Ipv4Addr::new(198, 18, 0, 99),
            Ipv4Addr::new(198, 18, 0, 160)
        ]
    );

    // A ClusterIP Service keeps no NodePort even if one is written.
    let plain = service(
        "p",
        json!({"clusterIP": "10.100.0.31", "ports": [{"port": 80, "nodePort": 30080}]}),
        json!({}),
    );
    assert_eq!(service_ports([&plain], &[])[0].node_port, None);
}

#[test]
fn headless_external_name_and_foreign_proxy_services_are_skipped() {
    let headless = service(
        "h",
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        json!({}),
    );
    let external = service(
        "e",
        json!({"type": "ExternalName", "externalName": "x.example"}),
        json!({}),
    );
    let mut foreign = service(
        "f",
        json!({"clusterIP": "10.100.0.40", "ports": [{"port": 80}]}),
        json!({}),
    );
    foreign.metadata.labels =
        Some([(SERVICE_PROXY_NAME_LABEL.to_string(), "other".to_string())].into());
    let sctp = service(
        "s",
        json!({"clusterIP": "10.100.0.41", "ports": [{"port": 80, "protocol": "SCTP"}]}),
        json!({}),
    );
    assert!(service_ports([&headless, &external, &foreign, &sctp], &[]).is_empty());
}

#[test]
fn slices_of_other_services_and_ipv6_slices_are_ignored() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.100.0.20", "ports": [{"port": 80}]}),
        json!({}),
    );
    let other = slice(
        "other",
        json!([{"port": 8080}]),
        json!([endpoint("10.10.1.5", None, None, None)]),
    );
    let mut v6 = slice(
        "web",
        json!([{"port": 8080}]),
        json!([endpoint("fd00::5", None, None, None)]),
    );
    v6.address_type = "IPv6".into();
    assert!(service_ports([&svc], &[other, v6])[0].endpoints.is_empty());
}
