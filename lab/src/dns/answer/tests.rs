use std::collections::BTreeMap;

use hickory_proto::op::Query;

use super::*;

struct Services(BTreeMap<(&'static str, &'static str), Target>);

impl Catalog for Services {
    fn service(&self, namespace: &str, name: &str) -> Option<Target> {
        self.0
            .iter()
            .find(|((ns, n), _)| *ns == namespace && *n == name)
            .map(|(_, t)| t.clone())
    }
    fn has_namespace(&self, namespace: &str) -> bool {
        self.0.keys().any(|(ns, _)| *ns == namespace)
    }
}

fn catalog() -> Services {
    Services(BTreeMap::from([
        (
            ("shop", "web"),
            Target::ClusterIp(Ipv4Addr::new(10, 100, 0, 20)),
        ),
        (
            ("shop", "db"),
            Target::Headless(vec![
                Ipv4Addr::new(10, 10, 1, 7),
                Ipv4Addr::new(10, 10, 2, 7),
            ]),
        ),
        (
            ("shop", "ext"),
            Target::ExternalName(Name::from_ascii("api.example.com.").expect("name")),
        ),
    ]))
}

fn ask(name: &str, query_type: RecordType) -> Message {
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        query_type,
    ));
    // Through the wire format, as the server sees it.
    let bytes = request.to_vec().expect("encode");
    let request = Message::from_vec(&bytes).expect("decode");
    let response = answer(
        &request,
        &Name::from_ascii("cluster.local.").expect("domain"),
        &catalog(),
    );
    assert_eq!(response.id, request.id);
    Message::from_vec(&response.to_vec().expect("encode response")).expect("decode response")
}

fn addresses(response: &Message) -> Vec<Ipv4Addr> {
    response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_query_for_a_service_returns_its_cluster_ip_with_ttl_5() {
    let response = ask("web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(response.response_code, ResponseCode::NoError);
    assert!(response.authoritative);
    assert_eq!(addresses(&response), [Ipv4Addr::new(10, 100, 0, 20)]);
    assert_eq!(response.answers[0].ttl, 5);
    assert_eq!(response.queries.len(), 1);
}

#[test]
fn names_are_case_insensitive() {
    let response = ask("Web.SHOP.svc.Cluster.Local.", RecordType::A);
    assert_eq!(addresses(&response), [Ipv4Addr::new(10, 100, 0, 20)]);
}

#[test]
fn headless_services_return_every_ready_endpoint() {
    let response = ask("db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        addresses(&response),
        [Ipv4Addr::new(10, 10, 1, 7), Ipv4Addr::new(10, 10, 2, 7)]
    );
}

#[test]
fn aaaa_for_a_known_name_is_an_empty_success() {
    let response = ask("web.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(response.response_code, ResponseCode::NoError);
    assert!(response.answers.is_empty());
    assert!(matches!(
        response.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));
}

#[test]
fn unknown_names_in_the_cluster_domain_do_not_exist() {
    for name in [
        "nope.shop.svc.cluster.local.",
        "web.other.svc.cluster.local.",
        "x.web.shop.svc.cluster.local.",
        "foo.cluster.local.",
    ] {
        let response = ask(name, RecordType::A);
        assert_eq!(response.response_code, ResponseCode::NXDomain, "{name}");
        assert!(response.answers.is_empty(), "{name}");
    }
}

#[test]
fn namespaces_with_services_exist_without_records() {
    let response = ask("shop.svc.cluster.local.", RecordType::A);
    assert_eq!(response.response_code, ResponseCode::NoError);
    assert!(response.answers.is_empty());
}

#[test]
fn names_outside_the_cluster_domain_are_refused() {
    for name in [
        "example.com.",
        "cluster.local.example.com.",
        "20.0.100.10.in-addr.arpa.",
    ] {
        let response = ask(name, RecordType::A);
        assert_eq!(response.response_code, ResponseCode::Refused, "{name}");
        assert!(response.answers.is_empty());
    }
}

#[test]
fn external_name_services_are_aliases() {
    let response = ask("ext.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(response.response_code, ResponseCode::NoError);
    match response.answers.first().map(|r| &r.data) {
        Some(RData::CNAME(alias)) => assert_eq!(alias.0.to_ascii(), "api.example.com."),
        other => panic!("expected a CNAME, got {other:?}"),
    }
}
