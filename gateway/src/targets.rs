//! The gateway's view of what it may forward to and for whom: exported
//! Services, who may call each, their declared ports, the endpoints behind
//! each port, and the clusters linked here.
//!
//! The index is rebuilt from the watched Services and EndpointSlices whenever
//! they change and published as an immutable snapshot, so a new connection
//! resolves its target with one hash lookup and no lock.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use mc_api::labels;

use crate::authz::{Access, Denial};

/// Label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a target was refused. Each reason is counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No Service of that name carries the export label.
    NotExported,
    /// The Service is exported but does not declare that port.
    PortNotDeclared,
    /// The port exists but no endpoint is ready (or serving while terminating).
    NoEndpoints,
    /// The caller may not reach this Service.
    Denied(Denial),
}

impl Refusal {
    /// Stable name used as a metric label and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotExported => "not_exported",
            Refusal::PortNotDeclared => "port_not_declared",
            Refusal::NoEndpoints => "no_endpoints",
            Refusal::Denied(denial) => denial.as_str(),
        }
    }
}

/// One backend address with its count of open connections, shared across
/// index rebuilds so that balancing survives endpoint churn.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub active: Arc<AtomicUsize>,
}

/// The endpoints of one Service port.
#[derive(Clone, Debug, Default)]
pub struct PortTargets {
    /// Endpoints to use: the ready ones, or, when none is ready, the ones
    /// still serving while they terminate (as kube-proxy does).
    pub endpoints: Vec<Endpoint>,
}

/// One exported Service.
#[derive(Clone, Debug, Default)]
pub struct ExportedService {
    /// Who may call it (its `mc.dev/allowed-callers` annotation).
    pub access: Access,
    /// Keyed by the Service port number a caller names.
    ports: HashMap<u16, PortTargets>,
}

impl ExportedService {
    /// The endpoints a connection to `port` may use.
    pub fn endpoints(&self, port: u16) -> Result<&[Endpoint], Refusal> {
        let targets = self.ports.get(&port).ok_or(Refusal::PortNotDeclared)?;
        if targets.endpoints.is_empty() {
            return Err(Refusal::NoEndpoints);
        }
        Ok(&targets.endpoints)
    }
}

/// Immutable index of exported Services and linked clusters.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    services: HashMap<(String, String), ExportedService>,
    linked: HashSet<String>,
}

impl Targets {
    /// Builds the index from the current Services and EndpointSlices of the
    /// cluster and the names of the clusters linked here. `previous` lends
    /// its connection counters to endpoints that are still there.
    pub fn build(
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        linked: HashSet<String>,
        previous: &Targets,
    ) -> Targets {
        let counters = previous.counters();
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            by_service
                .entry((ns, svc.as_str()))
                .or_default()
                .push(slice);
        }

        let mut index = HashMap::new();
        for svc in services.iter().filter(|s| is_exported(s)) {
            let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) else {
                continue;
            };
            let svc_slices = by_service
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut ports = HashMap::new();
            for port in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let endpoints =
                    port_endpoints(svc_slices, port.name.as_deref().unwrap_or(""), &counters);
                ports.insert(number, PortTargets { endpoints });
            }
            let access = Access::from_annotation(
                svc.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(labels::ALLOWED_CALLERS))
                    .map(String::as_str),
            );
            if let Access::Invalid(error) = &access {
                tracing::warn!(namespace = ns, service = name, %error,
                    "invalid {} annotation: every caller is denied until it is fixed", labels::ALLOWED_CALLERS);
            }
            index.insert(
                (ns.to_string(), name.to_string()),
                ExportedService { access, ports },
            );
        }
        Targets {
            services: index,
            linked,
        }
    }

    /// The exported Service `namespace/service`.
    pub fn service(&self, namespace: &str, service: &str) -> Result<&ExportedService, Refusal> {
        // A tuple of borrowed strs cannot look up a tuple of Strings, so the
        // key is built once per connection; this is not per packet.
        let key = (namespace.to_string(), service.to_string());
        self.services.get(&key).ok_or(Refusal::NotExported)
    }

    /// The endpoints a connection to `namespace/service:port` may use.
    #[cfg(test)]
    pub fn resolve(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
    ) -> Result<&[Endpoint], Refusal> {
        self.service(namespace, service)?.endpoints(port)
    }

    /// The clusters linked here (named by a `kubectl mc link`).
    pub fn linked(&self) -> &HashSet<String> {
        &self.linked
    }

    /// Number of exported Services in the index.
    pub fn exported_count(&self) -> usize {
        self.services.len()
    }

    fn counters(&self) -> HashMap<SocketAddr, Arc<AtomicUsize>> {
        self.services
            .values()
            .flat_map(|s| s.ports.values())
            .flat_map(|p| p.endpoints.iter())
            .map(|e| (e.addr, e.active.clone()))
            .collect()
    }
}

/// Whether a Service carries the export label.
pub fn is_exported(svc: &Service) -> bool {
    svc.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::EXPORTED))
        .is_some_and(|v| v == labels::EXPORTED_VALUE)
}

/// Endpoints for the Service port named `port_name` ("" when unnamed): the
/// ready ones, else the serving-and-terminating ones.
fn port_endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    counters: &HashMap<SocketAddr, Arc<AtomicUsize>>,
) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(target_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let cond = ep.conditions.as_ref();
            let is_ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let is_terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let is_serving = cond.and_then(|c| c.serving).unwrap_or(is_ready);
            let addr = SocketAddr::new(ip, target_port);
            let endpoint = Endpoint {
                addr,
                active: counters.get(&addr).cloned().unwrap_or_default(),
            };
            if is_ready && !is_terminating {
                ready.push(endpoint);
            } else if is_serving && is_terminating {
                terminating.push(endpoint);
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort_by_key(|e| e.addr);
    chosen.dedup_by_key(|e| e.addr);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(name: &str, exported: bool, ports: serde_json::Value) -> Arc<Service> {
        let labels = if exported {
            json!({"mc.dev/exported": "true"})
        } else {
            json!({})
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "spec": {"ports": ports}
            }))
            .expect("valid Service"),
        )
    }

    fn slice(
        svc: &str,
        ports: serde_json::Value,
        endpoints: serde_json::Value,
    ) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{svc}-abc"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints
            }))
            .expect("valid EndpointSlice"),
        )
    }

    fn addrs(eps: &[Endpoint]) -> Vec<String> {
        eps.iter().map(|e| e.addr.to_string()).collect()
    }

    #[test]
    fn only_exported_services_on_declared_ports_resolve() {
        let services = vec![
            service(
                "backend",
                true,
                json!([{"name": "http", "port": 8080, "targetPort": 80}]),
            ),
            service("private", false, json!([{"name": "http", "port": 8080}])),
        ];
        let slices = vec![
            slice(
                "backend",
                json!([{"name": "http", "port": 80}]),
                json!([{"addresses": ["10.0.0.1"]}]),
            ),
            slice(
                "private",
                json!([{"name": "http", "port": 8080}]),
                json!([{"addresses": ["10.0.0.2"]}]),
            ),
        ];
        let t = Targets::build(&services, &slices, HashSet::new(), &Targets::default());
        assert_eq!(
            addrs(t.resolve("default", "backend", 8080).unwrap()),
            ["10.0.0.1:80"]
        );
        assert_eq!(
            t.resolve("default", "backend", 80).unwrap_err(),
            Refusal::PortNotDeclared
        );
        assert_eq!(
            t.resolve("default", "private", 8080).unwrap_err(),
            Refusal::NotExported
        );
        assert_eq!(
            t.resolve("other", "backend", 8080).unwrap_err(),
            Refusal::NotExported
        );
    }

    #[test]
    fn ready_endpoints_win_and_terminating_serving_ones_are_the_fallback() {
        let services = vec![service("b", true, json!([{"port": 9000}]))];
        let eps = json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": false}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
        ]);
        let slices = vec![slice("b", json!([{"port": 9000}]), eps)];
        let t = Targets::build(&services, &slices, HashSet::new(), &Targets::default());
        assert_eq!(
            addrs(t.resolve("default", "b", 9000).unwrap()),
            ["10.0.0.1:9000"]
        );

        let only_terminating = json!([
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}}
        ]);
        let slices = vec![slice("b", json!([{"port": 9000}]), only_terminating)];
        let t = Targets::build(&services, &slices, HashSet::new(), &Targets::default());
        assert_eq!(
            addrs(t.resolve("default", "b", 9000).unwrap()),
            ["10.0.0.3:9000"]
        );

        let none = json!([{"addresses": ["10.0.0.2"], "conditions": {"ready": false}}]);
        let slices = vec![slice("b", json!([{"port": 9000}]), none)];
        let t = Targets::build(&services, &slices, HashSet::new(), &Targets::default());
        assert_eq!(
            t.resolve("default", "b", 9000).unwrap_err(),
            Refusal::NoEndpoints
        );
    }

    #[test]
    fn endpoints_from_several_slices_merge_and_counters_survive_rebuilds() {
        let services = vec![service("b", true, json!([{"name": "web", "port": 80}]))];
        let slices = vec![
            slice(
                "b",
                json!([{"name": "web", "port": 8080}]),
                json!([{"addresses": ["10.0.0.1"]}]),
            ),
            slice(
                "b",
                json!([{"name": "web", "port": 8080}]),
                json!([{"addresses": ["10.0.0.2"]}]),
            ),
        ];
        let first = Targets::build(&services, &slices, HashSet::new(), &Targets::default());
        let eps = first.resolve("default", "b", 80).unwrap();
        assert_eq!(addrs(eps), ["10.0.0.1:8080", "10.0.0.2:8080"]);
        eps[0]
            .active
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);

        let second = Targets::build(&services, &slices, HashSet::new(), &first);
        let eps = second.resolve("default", "b", 80).unwrap();
        assert_eq!(eps[0].active.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[test]
    fn the_allowed_callers_annotation_sets_each_services_access() {
        let annotated = |name: &str, value: Option<&str>| {
            let mut svc = (*service(name, true, json!([{"port": 80}]))).clone();
            if let Some(value) = value {
                svc.metadata.annotations =
                    Some([(labels::ALLOWED_CALLERS.to_string(), value.to_string())].into());
            }
            Arc::new(svc)
        };
        let services = vec![
            annotated("open", None),
            annotated("narrow", Some("west/default/frontend")),
            annotated("broken", Some("west/default")),
        ];
        let linked: HashSet<String> = ["west".to_string()].into();
        let t = Targets::build(&services, &[], linked, &Targets::default());
        assert!(t.linked().contains("west"));
        assert!(matches!(
            t.service("default", "open").unwrap().access,
            Access::AnyLinked
        ));
        match &t.service("default", "narrow").unwrap().access {
            Access::Only(list) => {
                assert!(list.allows("west", Some(("default", "frontend"))));
                assert!(!list.allows("west", Some(("default", "other"))));
            }
            other => panic!("expected an allow list, got {other:?}"),
        }
        assert!(matches!(
            t.service("default", "broken").unwrap().access,
            Access::Invalid(_)
        ));
    }
}
