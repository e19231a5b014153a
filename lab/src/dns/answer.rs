//! Answers one DNS query about the cluster domain from a catalog of
//! Services (no I/O): `<service>.<namespace>.svc.<domain>`.

use std::net::Ipv4Addr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// TTL of every record and of negative answers, in seconds.
pub const TTL: u32 = 5;
/// Largest UDP payload we offer in EDNS.
pub const EDNS_PAYLOAD: u16 = 1232;

/// What a Service name resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Service with a ClusterIP.
    ClusterIp(Ipv4Addr),
    /// A headless Service: the addresses of its ready endpoints.
    Headless(Vec<Ipv4Addr>),
    /// An ExternalName Service: an alias.
    ExternalName(Name),
}

/// The Services the server knows.
pub trait Catalog {
    /// What `<name>.<namespace>.svc` resolves to, if that Service exists.
    fn service(&self, namespace: &str, name: &str) -> Option<Target>;
    /// Whether any Service exists in `namespace`.
    fn has_namespace(&self, namespace: &str) -> bool;
}

/// The response to `request`, authoritative for `domain` (for example
/// `cluster.local.`). Names outside the domain are REFUSED: the server never
/// forwards.
pub fn answer(request: &Message, domain: &Name, catalog: &impl Catalog) -> Message {
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    if request.message_type != MessageType::Query || request.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response;
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    let name = query.name().to_lowercase();
    let name = if name.is_fqdn() {
        name
    } else {
        Name::root().append_name(&name).unwrap_or(name)
    };
    if query.query_class() != DNSClass::IN || !domain.zone_of(&name) {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    }
    response.metadata.authoritative = true;

    // Labels below the domain, innermost first: ["web", "shop", "svc"].
    let relative: Vec<String> = name
        .iter()
        .take(usize::from(name.num_labels() - domain.num_labels()))
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let relative: Vec<&str> = relative.iter().map(String::as_str).collect();
    let found = match relative.as_slice() {
        [] => {
            if query.query_type() == RecordType::SOA {
                response.add_answer(soa(domain));
            }
            Found::Exists
        }
        ["svc"] => Found::Exists,
        [namespace, "svc"] if catalog.has_namespace(namespace) => Found::Exists,
        [service, namespace, "svc"] => match catalog.service(namespace, service) {
            Some(target) => Found::Service(target),
            None => Found::Missing,
        },
        _ => Found::Missing,
    };
    match found {
        Found::Missing => response.metadata.response_code = ResponseCode::NXDomain,
        Found::Exists => {}
        Found::Service(Target::ExternalName(alias)) => {
            response.add_answer(Record::from_rdata(
                name.clone(),
                TTL,
                RData::CNAME(CNAME(alias)),
            ));
        }
        Found::Service(Target::ClusterIp(ip)) if wants_a(query.query_type()) => {
            response.add_answer(Record::from_rdata(name.clone(), TTL, RData::A(A(ip))));
        }
        Found::Service(Target::Headless(ips)) if wants_a(query.query_type()) => {
            response.add_answers(
                ips.into_iter()
                    .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))),
            );
        }
        Found::Service(_) => {}
    }
    if response.answers.is_empty() {
        // Negative answers carry the SOA so resolvers cache them for TTL.
        response.add_authority(soa(domain));
    }
    response
}

enum Found {
    /// A name with no records of its own (the domain, `svc`, a namespace).
    Exists,
    Service(Target),
    Missing,
}

fn wants_a(query_type: RecordType) -> bool {
    matches!(query_type, RecordType::A | RecordType::ANY)
}

fn soa(domain: &Name) -> Record {
    let host = |label: &str| {
        Name::from_ascii(label)
            .and_then(|n| n.append_name(domain))
            .unwrap_or_else(|_| domain.clone())
    };
    let rdata = SOA::new(
        host("ns.dns"),
        host("hostmaster"),
        1,
        7200,
        1800,
        86400,
        TTL,
    );
    Record::from_rdata(domain.clone(), TTL, RData::SOA(rdata))
}

#[cfg(test)]
mod tests;
