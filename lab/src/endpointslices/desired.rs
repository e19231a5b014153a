//! What the EndpointSlices and Endpoints of one Service should hold, computed
//! from the Service and the Pods of its namespace (no I/O).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, ObjectReference,
    Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`] (the one Kubernetes' own controller uses).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label Kubernetes' Endpoints controller puts on the Endpoints it writes.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Label marking the slices and Endpoints of a headless Service.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The objects one Service should have.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// One slice per distinct set of resolved ports (usually exactly one).
    pub slices: Vec<EndpointSlice>,
    /// The legacy Endpoints object, named like the Service.
    pub endpoints: Endpoints,
}

/// Whether the controller manages endpoints of `service`: it has a non-empty
/// selector and is not of type ExternalName.
pub fn is_managed(service: &Service) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

/// Whether an object this controller wrote for `service` (`None`: the
/// Service does not exist) and that no pass wants any more should be
/// deleted. Objects of Services without a selector are left to whoever
/// writes them, as in Kubernetes (for example `default/kubernetes`).
pub fn unwanted_is_stale(service: Option<&Service>) -> bool {
    service.is_none_or(|s| {
        is_managed(s)
            || s.spec.as_ref().and_then(|spec| spec.type_.as_deref()) == Some("ExternalName")
    })
}

/// The desired slices and Endpoints of `service`, given candidate `pods`
/// (any pods; those of other namespaces or not matching the selector are
/// ignored). `None` when the Service is not managed or lacks name/uid.
pub fn desired(service: &Service, pods: &[&Pod]) -> Option<Desired> {
    if !is_managed(service) {
        return None;
    }
    let name = service.metadata.name.as_deref()?;
    let namespace = service.metadata.namespace.as_deref()?;
    let uid = service.metadata.uid.as_deref()?;
    let spec = service.spec.as_ref()?;
    let selector = spec.selector.as_ref()?;
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let service_ports = spec.ports.as_deref().unwrap_or_default();

    // Group pods by the ports they resolve to: pods with different named
    // container ports land in different slices, as in Kubernetes.
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<PodEndpoint>> = BTreeMap::new();
    for pod in pods {
        if pod.metadata.namespace.as_deref() != Some(namespace) || !matches_selector(pod, selector)
        {
            continue;
        }
        let Some(endpoint) = PodEndpoint::of(pod, publish_not_ready) else {
            continue;
        };
        let ports = service_ports
            .iter()
            .filter_map(|sp| resolve_port(sp, pod))
            .collect();
        groups.entry(ports).or_default().push(endpoint);
    }
    for endpoints in groups.values_mut() {
        endpoints.sort_by(|a, b| a.ip.cmp(&b.ip));
    }

    let headless = spec.cluster_ip.as_deref() == Some("None");
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if headless {
        labels.insert(HEADLESS_LABEL.to_string(), String::new());
    }
    let mut slice_labels = labels.clone();
    slice_labels.insert(SERVICE_NAME_LABEL.to_string(), name.to_string());
    slice_labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };

    let slice = |ports: &[ResolvedPort], endpoints: &[PodEndpoint]| EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(name, uid, ports)),
            namespace: Some(namespace.into()),
            labels: Some(slice_labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints.iter().map(PodEndpoint::slice_endpoint).collect(),
        ports: (!ports.is_empty()).then(|| ports.iter().map(ResolvedPort::slice_port).collect()),
    };
    let slices = if groups.is_empty() {
        // A Service without endpoints still gets one (empty) slice.
        vec![slice(&[], &[])]
    } else {
        groups
            .iter()
            .map(|(ports, endpoints)| slice(ports, endpoints))
            .collect()
    };

    let mut endpoints_labels = labels;
    endpoints_labels.insert(SKIP_MIRROR_LABEL.to_string(), "true".to_string());
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .filter(|(ports, _)| service_ports.is_empty() || !ports.is_empty())
        .filter_map(|(ports, endpoints)| legacy_subset(ports, endpoints, publish_not_ready))
        .collect();
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(endpoints_labels),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    Some(Desired { slices, endpoints })
}

/// Name of the slice of Service `name` (uid `uid`) holding `ports`:
/// `<name>-<5 chars>`, stable across restarts so reconciling is idempotent.
fn slice_name(name: &str, uid: &str, ports: &[ResolvedPort]) -> String {
    let mut key = uid.to_string();
    for port in ports {
        key.push_str(&format!("/{}:{}:{}", port.name, port.protocol, port.port));
    }
    format!("{name}-{}", short_hash(&key))
}

/// Five base-36 characters of an FNV-1a hash (stable across Rust versions).
fn short_hash(key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..5)
        .map(|_| {
            let digit = DIGITS[(hash % 36) as usize];
            hash /= 36;
            char::from(digit)
        })
        .collect()
}

fn matches_selector(pod: &Pod, selector: &BTreeMap<String, String>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The endpoint port of `service_port` on `pod`: the target port as a number,
/// or a named target port looked up in the pod's container ports. `None`
/// when a named port is not found (Kubernetes then leaves the port out).
fn resolve_port(service_port: &ServicePort, pod: &Pod) -> Option<ResolvedPort> {
    let protocol = service_port
        .protocol
        .clone()
        .unwrap_or_else(|| "TCP".into());
    let number = match &service_port.target_port {
        None => service_port.port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(port_name)) => {
            let containers = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            containers
                .iter()
                .flat_map(|c| c.ports.as_deref().unwrap_or_default())
                .find(|p| {
                    p.name.as_deref() == Some(port_name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })?
                .container_port
        }
    };
    Some(ResolvedPort {
        name: service_port.name.clone().unwrap_or_default(),
        protocol,
        port: number,
        app_protocol: service_port.app_protocol.clone(),
    })
}

/// One Service port resolved for a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ResolvedPort {
    name: String,
    protocol: String,
    port: i32,
    app_protocol: Option<String>,
}

impl ResolvedPort {
    fn slice_port(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    fn legacy_port(&self) -> CoreEndpointPort {
        CoreEndpointPort {
            name: Some(self.name.clone()).filter(|n| !n.is_empty()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// What the controller needs to know about one pod.
#[derive(Clone, Debug)]
struct PodEndpoint {
    ip: String,
    ready: bool,
    serving: bool,
    terminating: bool,
    node_name: Option<String>,
    target: ObjectReference,
}

impl PodEndpoint {
    /// The endpoint of `pod`, if it has an address and is not finished.
    fn of(pod: &Pod, publish_not_ready: bool) -> Option<Self> {
        let status = pod.status.as_ref()?;
        let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let pod_ready = status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pod_ready || publish_not_ready;
        Some(Self {
            ip,
            ready: serving && !terminating,
            serving,
            terminating,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target: ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
        })
    }

    fn slice_endpoint(&self) -> Endpoint {
        Endpoint {
            addresses: vec![self.ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(self.ready),
                serving: Some(self.serving),
                terminating: Some(self.terminating),
            }),
            node_name: self.node_name.clone(),
            target_ref: Some(self.target.clone()),
            ..Default::default()
        }
    }

    fn address(&self) -> EndpointAddress {
        EndpointAddress {
            ip: self.ip.clone(),
            node_name: self.node_name.clone(),
            target_ref: Some(self.target.clone()),
            hostname: None,
        }
    }
}

/// The legacy subset of one port group: ready pods in `addresses`, others in
/// `notReadyAddresses`; terminating pods are left out unless the Service
/// publishes not-ready addresses (as Kubernetes' Endpoints controller does).
fn legacy_subset(
    ports: &[ResolvedPort],
    endpoints: &[PodEndpoint],
    publish_not_ready: bool,
) -> Option<EndpointSubset> {
    let (ready, not_ready): (Vec<_>, Vec<_>) = endpoints
        .iter()
        .filter(|e| publish_not_ready || !e.terminating)
        .partition(|e| e.ready || publish_not_ready);
    if ready.is_empty() && not_ready.is_empty() {
        return None;
    }
    let ports: Vec<CoreEndpointPort> = ports.iter().map(ResolvedPort::legacy_port).collect();
    let addresses = |list: Vec<&PodEndpoint>| {
        (!list.is_empty()).then(|| list.into_iter().map(PodEndpoint::address).collect())
    };
    Some(EndpointSubset {
        addresses: addresses(ready),
        not_ready_addresses: addresses(not_ready),
        ports: (!ports.is_empty()).then_some(ports),
    })
}

#[cfg(test)]
mod tests;
