//! What kube-proxy must do for each Service port, derived from Services and
//! EndpointSlices (no I/O).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

/// Label naming the Service an EndpointSlice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services carrying this label are handled by another proxy.
const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// The proxy rules of one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortRules {
    /// `<namespace>/<service>/<protocol>/<port name>`.
    pub name: String,
    pub protocol: Protocol,
    /// The ClusterIP, unless the Service has none.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// The NodePort, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// LoadBalancer ingress IPs and spec.externalIPs.
    pub external_ips: Vec<Ipv4Addr>,
    /// Where connections go: the ready endpoints, or when none is ready the
    /// serving terminating ones (as kube-proxy does); empty means reject.
    pub endpoints: Vec<SocketAddrV4>,
}

/// The rules of every proxied Service port, sorted by name.
pub fn service_ports<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<ServicePortRules> {
    let mut slices_by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        if slice.address_type != "IPv4" {
            continue;
        }
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        slices_by_service
            .entry((namespace, service.clone()))
            .or_default()
            .push(slice);
    }
    let mut rules: Vec<ServicePortRules> = services
        .into_iter()
        .flat_map(|service| {
            let namespace = service.metadata.namespace.clone().unwrap_or_default();
            let name = service.metadata.name.clone().unwrap_or_default();
            let slices = slices_by_service
                .get(&(namespace, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            service_rules(service, slices)
        })
        .collect();
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    rules
}

fn service_rules(service: &Service, slices: &[&EndpointSlice]) -> Vec<ServicePortRules> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let proxied_elsewhere = service
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL));
    if proxied_elsewhere || spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let Some(cluster_ip) = cluster_ip else {
        // Headless (clusterIP None) or not yet allocated: nothing to proxy.
        return Vec::new();
    };
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    let mut external_ips: BTreeSet<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if load_balancer {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        external_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                _ => return None,
            };
            let port_name = port.name.clone().unwrap_or_default();
            let with_node_port = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
            Some(ServicePortRules {
                name: format!("{namespace}/{name}/{protocol}/{port_name}"),
                protocol,
                cluster_ip: Some(cluster_ip),
                port: u16::try_from(port.port).ok()?,
                node_port: port
                    .node_port
                    .filter(|_| with_node_port)
                    .and_then(|p| u16::try_from(p).ok()),
                external_ips: external_ips.iter().copied().collect(),
                endpoints: endpoints_of(slices, &port_name, protocol),
            })
        })
        .collect()
}

/// The endpoints of the Service port named `port_name`: ready ones, or when
/// none is ready, the serving and terminating ones. Sorted, without repeats.
fn endpoints_of(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
) -> Vec<SocketAddrV4> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(&protocol.to_string())
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let (is_ready, serving, is_terminating) = conditions(endpoint);
            if is_ready {
                ready.insert(SocketAddrV4::new(ip, port));
            } else if serving && is_terminating {
                terminating.insert(SocketAddrV4::new(ip, port));
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

/// (ready, serving, terminating); unset ready and serving mean true, unset
/// terminating means false, as the EndpointSlice API defines.
fn conditions(endpoint: &Endpoint) -> (bool, bool, bool) {
    let c = endpoint.conditions.clone().unwrap_or_default();
    let ready = c.ready.unwrap_or(true);
    (
        ready,
        c.serving.unwrap_or(true),
        c.terminating.unwrap_or(false),
    )
}

#[cfg(test)]
mod tests;
