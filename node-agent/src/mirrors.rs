//! What the agent knows of its cluster: which ClusterIP:port belongs to which
//! remote Service (from the mirror Services), how to reach each remote
//! cluster's gateways (from the Links), and which pod owns a source address
//! (from the Pods on this node).
//!
//! Each view is rebuilt from reflector caches after a burst of changes and
//! published as an immutable snapshot; a connection reads it without a lock.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use mc_api::{Link, labels};

use crate::kernel::MirrorSet;
use crate::pod::PodView;

/// The remote Service behind one mirrored ClusterIP:port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorTarget {
    /// Remote cluster name (the Link's `targetClusterName`).
    pub cluster: Arc<str>,
    /// Namespace of the Service, the same on both sides.
    pub namespace: String,
    /// The remote Service's name (not the mirror's).
    pub service: String,
    /// The Service port, the same on both sides.
    pub port: u16,
}

/// Mirrored addresses and where each leads.
#[derive(Clone, Debug, Default)]
pub struct Mirrors {
    routes: HashMap<SocketAddrV4, MirrorTarget>,
}

impl Mirrors {
    /// Builds the routes from the mirror Services of this cluster. Services
    /// without a ClusterIP (headless, or not yet allocated) are skipped.
    pub fn build(services: &[Arc<Service>]) -> Mirrors {
        let mut routes = HashMap::new();
        for svc in services {
            let labels = svc.metadata.labels.as_ref();
            let (Some(cluster), Some(remote), Some(namespace)) = (
                labels.and_then(|l| l.get(labels::MIRROR_OF_CLUSTER)),
                labels.and_then(|l| l.get(labels::MIRROR_OF_SERVICE)),
                svc.metadata.namespace.as_ref(),
            ) else {
                continue;
            };
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
                continue;
            };
            let cluster: Arc<str> = Arc::from(cluster.as_str());
            for port in spec.ports.iter().flatten() {
                if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                    continue;
                }
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                routes.insert(
                    SocketAddrV4::new(ip, number),
                    MirrorTarget {
                        cluster: cluster.clone(),
                        namespace: namespace.clone(),
                        service: remote.clone(),
                        port: number,
                    },
                );
            }
        }
        Mirrors { routes }
    }

    /// The remote target of an intercepted destination, if it is a mirror.
    pub fn get(&self, dst: &SocketAddr) -> Option<&MirrorTarget> {
        match dst {
            SocketAddr::V4(v4) => self.routes.get(v4),
            SocketAddr::V6(_) => None,
        }
    }

    /// The addresses the kernel must intercept.
    pub fn set(&self) -> MirrorSet {
        self.routes.keys().copied().collect()
    }
}

/// How to reach one remote cluster's gateways, from its Link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayTarget {
    /// The gateways' addresses, in the Link's order.
    pub addresses: Vec<SocketAddr>,
    /// The SPIFFE ID every gateway of that cluster must present.
    pub identity: String,
}

/// Gateway targets by remote cluster name. Hostnames in a Link are resolved
/// by the caller before building (see [`gateway_target`]).
pub type Gateways = HashMap<Arc<str>, GatewayTarget>;

/// The gateway target of a Link whose addresses are already resolved.
pub fn gateway_target(link: &Link, resolved: Vec<SocketAddr>) -> GatewayTarget {
    GatewayTarget {
        addresses: resolved,
        identity: link.spec.gateway_identity.clone(),
    }
}

/// Who runs at a source address of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
}

/// Pods of this node by IP. Left out, so that an address never speaks for
/// a pod that no longer holds it: host-network pods (their address is the
/// node's, shared by every host process), pods being deleted, finished pods
/// (`Succeeded`/`Failed`: their address is free for the next pod), and an
/// address two live pods claim with different identities (a stale status
/// during reuse) until only one does.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    by_ip: HashMap<IpAddr, Workload>,
}

impl Workloads {
    /// Builds the index from the Pods bound to this node.
    pub fn build(pods: &[Arc<PodView>]) -> Workloads {
        let mut by_ip = HashMap::new();
        let mut contested = std::collections::HashSet::new();
        for pod in pods {
            let spec = &pod.spec;
            if spec.host_network || pod.metadata.deletion_timestamp.is_some() || pod.is_terminal() {
                continue;
            }
            let Some(namespace) = pod.metadata.namespace.clone() else {
                continue;
            };
            let service_account = spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".to_string());
            for ip in &pod.status.pod_ips {
                if let Ok(ip) = ip.ip.parse() {
                    let workload = Workload {
                        namespace: namespace.clone(),
                        service_account: service_account.clone(),
                    };
                    if let Some(other) = by_ip.insert(ip, workload.clone())
                        && other != workload
                    {
                        contested.insert(ip);
                    }
                }
            }
        }
        for ip in contested {
            by_ip.remove(&ip);
        }
        Workloads { by_ip }
    }

    /// The workload that owns `ip`, if a pod of this node does.
    pub fn get(&self, ip: &IpAddr) -> Option<&Workload> {
        self.by_ip.get(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(value: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(value).expect("valid Service"))
    }

    #[test]
    fn every_tcp_port_of_a_mirror_routes_to_its_remote_service() {
        let services = vec![
            svc(json!({
                "metadata": {"name": "backend-east", "namespace": "shop", "labels": {
                    "mc.dev/mirror-of-cluster": "east", "mc.dev/mirror-of-service": "backend"}},
                "spec": {"clusterIP": "10.101.0.7", "ports": [
                    {"name": "http", "port": 8080}, {"name": "grpc", "port": 9090},
                    {"name": "dns", "port": 53, "protocol": "UDP"}]}
            })),
            svc(json!({
                "metadata": {"name": "plain", "namespace": "shop"},
                "spec": {"clusterIP": "10.101.0.8", "ports": [{"port": 80}]}
            })),
            svc(json!({
                "metadata": {"name": "pending-east", "namespace": "shop", "labels": {
                    "mc.dev/mirror-of-cluster": "east", "mc.dev/mirror-of-service": "pending"}},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
            })),
        ];
        let mirrors = Mirrors::build(&services);
        let target = mirrors
            .get(&"10.101.0.7:9090".parse().unwrap())
            .expect("mirrored");
        assert_eq!(
            target,
            &MirrorTarget {
                cluster: "east".into(),
                namespace: "shop".into(),
                service: "backend".into(),
                port: 9090
            }
        );
        assert!(
            mirrors.get(&"10.101.0.7:53".parse().unwrap()).is_none(),
            "UDP is not tunnelled"
        );
        assert!(
            mirrors.get(&"10.101.0.8:80".parse().unwrap()).is_none(),
            "not a mirror"
        );
        assert_eq!(mirrors.set().len(), 2);
    }

    #[test]
    fn pods_are_found_by_ip_but_host_network_pods_are_not() {
        let pods: Vec<Arc<PodView>> = [
            json!({"metadata": {"name": "a", "namespace": "shop"},
                   "spec": {"containers": [], "serviceAccountName": "frontend"},
                   "status": {"podIP": "10.10.1.5", "podIPs": [{"ip": "10.10.1.5"}]}}),
            json!({"metadata": {"name": "h", "namespace": "kube-system"},
                   "spec": {"containers": [], "hostNetwork": true},
                   "status": {"podIP": "198.18.0.10", "podIPs": [{"ip": "198.18.0.10"}]}}),
        ]
        .into_iter()
        .map(|v| Arc::new(serde_json::from_value(v).expect("valid Pod")))
        .collect();
        let workloads = Workloads::build(&pods);
        let w = workloads
            .get(&"10.10.1.5".parse().unwrap())
            .expect("known pod");
        assert_eq!(
            (w.namespace.as_str(), w.service_account.as_str()),
            ("shop", "frontend")
        );
        assert!(workloads.get(&"198.18.0.10".parse().unwrap()).is_none());
    }

    fn pod(name: &str, sa: &str, phase: &str, ip: &str) -> Arc<PodView> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"serviceAccountName": sa},
                "status": {"phase": phase, "podIPs": [{"ip": ip}]},
            }))
            .expect("valid Pod"),
        )
    }

    #[test]
    fn a_reused_address_never_speaks_for_the_pod_that_held_it_before() {
        let ip: IpAddr = "10.10.1.7".parse().unwrap();
        // A finished pod keeps its IP in its status; the address is free.
        let done = Workloads::build(&[pod("job", "admin", "Succeeded", "10.10.1.7")]);
        assert!(done.get(&ip).is_none(), "a Succeeded pod still named");
        let failed = Workloads::build(&[pod("job", "admin", "Failed", "10.10.1.7")]);
        assert!(failed.get(&ip).is_none(), "a Failed pod still named");
        // The next pod on that address is itself, not its predecessor.
        let reused = Workloads::build(&[
            pod("job", "admin", "Succeeded", "10.10.1.7"),
            pod("web", "frontend", "Running", "10.10.1.7"),
        ]);
        assert_eq!(
            reused.get(&ip).map(|w| w.service_account.as_str()),
            Some("frontend")
        );
        // Two live claims with different identities: nobody, until one goes.
        let contested = Workloads::build(&[
            pod("old", "admin", "Running", "10.10.1.7"),
            pod("new", "frontend", "Pending", "10.10.1.7"),
        ]);
        assert!(
            contested.get(&ip).is_none(),
            "a contested address was named"
        );
    }
}
