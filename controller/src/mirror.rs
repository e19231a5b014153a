//! The desired mirror of a remote Service: its name (shortened when too
//! long), its labels and ports, and how an existing local Service relates to
//! it. Pure functions, no I/O.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mc_api::labels::{MIRROR_OF_CLUSTER, MIRROR_OF_SERVICE};
use sha2::{Digest, Sha256};

/// Annotation on a mirror naming its remote Service as `<namespace>/<name>`.
pub const REMOTE_SERVICE_ANNOTATION: &str = "mc.dev/remote-service";
/// Recommended label carried by every object mc creates.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// Value of [`PART_OF`].
pub const PART_OF_VALUE: &str = "mc";
/// Recommended label naming the mc component that made the object.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Value of [`COMPONENT`] on objects the controller creates.
pub const COMPONENT_VALUE: &str = "controller";
/// Label keys with this prefix are mc's own and never copied from a remote Service.
const MC_LABEL_PREFIX: &str = "mc.dev/";
/// Longest Service name Kubernetes accepts (a DNS-1035 label).
pub const MAX_NAME_LEN: usize = 63;
/// Hex digits of the service-name hash used in shortened names.
const HASH_LEN: usize = 8;

/// A remote Service, by namespace and name; also identifies its mirror.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteKey {
    /// Namespace of the remote Service (and of its mirror).
    pub namespace: String,
    /// Name of the remote Service.
    pub name: String,
}

impl RemoteKey {
    /// The key of a Service object, when it has a namespace and a name.
    pub fn of(service: &Service) -> Option<RemoteKey> {
        Some(RemoteKey {
            namespace: service.metadata.namespace.clone()?,
            name: service.metadata.name.clone()?,
        })
    }

    /// The remote Service a local mirror says it mirrors (annotation, else
    /// its own namespace and the `mc.dev/mirror-of-service` label).
    pub fn of_mirror(mirror: &Service) -> Option<RemoteKey> {
        let annotated = mirror
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REMOTE_SERVICE_ANNOTATION))
            .and_then(|v| v.split_once('/'))
            .map(|(namespace, name)| RemoteKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        annotated.or_else(|| {
            Some(RemoteKey {
                namespace: mirror.metadata.namespace.clone()?,
                name: label(mirror, MIRROR_OF_SERVICE)?.to_string(),
            })
        })
    }
}

impl fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a remote Service cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmirrorable {
    /// The cluster name leaves no room for any service name within 63 characters.
    #[error("cluster name {0:?} is too long for mirror names (at most 52 characters)")]
    ClusterNameTooLong(String),
    /// A ClusterIP Service needs at least one port.
    #[error("the remote Service has no ports")]
    NoPorts,
    /// ExternalName Services have no endpoints to reach.
    #[error("ExternalName Services are not mirrored")]
    ExternalName,
    /// The remote Service is itself a mirror; mirrors are never chained.
    #[error("the remote Service is a mirror of cluster {0:?}; mirrors are not mirrored again")]
    IsMirror(String),
}

/// The mirror name of `service` from `cluster`: `<service>-<cluster>`, or,
/// when that exceeds 63 characters, `<service truncated>-<8 hex of
/// sha256(service)>-<cluster>` cut to exactly 63. Deterministic, so every
/// controller and tool derives the same name.
pub fn mirror_name(service: &str, cluster: &str) -> Result<String, Unmirrorable> {
    let plain = mc_api::mirror_name(service, cluster);
    if plain.len() <= MAX_NAME_LEN {
        return Ok(plain);
    }
    // <prefix>-<hash>-<cluster>
    let room = MAX_NAME_LEN
        .checked_sub(cluster.len() + HASH_LEN + 2)
        .filter(|room| *room > 0)
        .ok_or_else(|| Unmirrorable::ClusterNameTooLong(cluster.to_string()))?;
    let digest = hex::encode(Sha256::digest(service.as_bytes()));
    // Service names are ASCII (DNS-1035), so byte slicing is safe; guard anyway.
    let prefix: String = service.chars().take(room).collect();
    Ok(format!("{prefix}-{}-{cluster}", &digest[..HASH_LEN]))
}

/// The labels mc puts on every mirror of `service` from `cluster`.
pub fn mc_labels(service: &str, cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MIRROR_OF_CLUSTER.to_string(), cluster.to_string()),
        (MIRROR_OF_SERVICE.to_string(), service.to_string()),
        (PART_OF.to_string(), PART_OF_VALUE.to_string()),
        (COMPONENT.to_string(), COMPONENT_VALUE.to_string()),
    ])
}

/// The mirror `remote` should have in this cluster, as mirrored from `cluster`.
pub fn desired_mirror(remote: &Service, cluster: &str) -> Result<Service, Unmirrorable> {
    let key = RemoteKey::of(remote).unwrap_or_else(|| RemoteKey {
        namespace: String::new(),
        name: String::new(),
    });
    if let Some(of) = label(remote, MIRROR_OF_CLUSTER) {
        return Err(Unmirrorable::IsMirror(of.to_string()));
    }
    let spec = remote.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Err(Unmirrorable::ExternalName);
    }
    let ports: Vec<ServicePort> = spec
        .and_then(|s| s.ports.as_ref())
        .map(|ports| ports.iter().map(mirror_port).collect())
        .unwrap_or_default();
    if ports.is_empty() {
        return Err(Unmirrorable::NoPorts);
    }
    let name = mirror_name(&key.name, cluster)?;
    let mut labels: BTreeMap<String, String> = remote
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(MC_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(mc_labels(&key.name, cluster));
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                REMOTE_SERVICE_ANNOTATION.to_string(),
                key.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// A remote port as the mirror carries it: name, protocol and port, the
/// target port equal to the port, no node port.
fn mirror_port(remote: &ServicePort) -> ServicePort {
    ServicePort {
        name: remote.name.clone(),
        protocol: Some(remote.protocol.clone().unwrap_or_else(|| "TCP".to_string())),
        port: remote.port,
        target_port: Some(IntOrString::Int(remote.port)),
        ..ServicePort::default()
    }
}

/// How an existing local Service with a mirror's name relates to mc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// mc's mirror of this very remote Service from this cluster.
    Ours,
    /// Anything else: a user's Service, or a mirror of another cluster or
    /// Service. Never modified or deleted.
    Foreign(String),
}

/// Whether `existing` is mc's mirror of `key` from `cluster`.
pub fn ownership(existing: &Service, key: &RemoteKey, cluster: &str) -> Ownership {
    match label(existing, MIRROR_OF_CLUSTER) {
        None => Ownership::Foreign("a Service mc does not manage".to_string()),
        Some(other) if other != cluster => {
            Ownership::Foreign(format!("the mirror of a Service from cluster {other:?}"))
        }
        Some(_) => match RemoteKey::of_mirror(existing) {
            Some(of) if &of == key => Ownership::Ours,
            Some(of) => Ownership::Foreign(format!("the mirror of {of} from cluster {cluster:?}")),
            None => Ownership::Foreign("a Service with incomplete mirror labels".to_string()),
        },
    }
}

/// Whether `existing` (ours) differs from `desired` in anything mc manages:
/// labels, the remote-service annotation, type, selector or ports.
pub fn needs_update(existing: &Service, desired: &Service) -> bool {
    let labels_differ = existing.metadata.labels != desired.metadata.labels;
    let annotation_differs = annotation(existing, REMOTE_SERVICE_ANNOTATION)
        != annotation(desired, REMOTE_SERVICE_ANNOTATION);
    let spec = existing.spec.clone().unwrap_or_default();
    let type_differs = spec.type_.as_deref().unwrap_or("ClusterIP") != "ClusterIP";
    let has_selector = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    let ports_differ = port_tuples(existing) != port_tuples(desired);
    labels_differ || annotation_differs || type_differs || has_selector || ports_differ
}

/// `existing` with everything mc manages taken from `desired`; the rest
/// (clusterIP, resourceVersion, other annotations) kept, so the result can
/// be sent as an update.
pub fn updated(existing: &Service, desired: &Service) -> Service {
    let mut next = existing.clone();
    next.metadata.labels = desired.metadata.labels.clone();
    let annotations = next.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in desired.metadata.annotations.iter().flatten() {
        annotations.insert(k.clone(), v.clone());
    }
    let spec = next.spec.get_or_insert_with(ServiceSpec::default);
    let wanted = desired.spec.clone().unwrap_or_default();
    spec.type_ = wanted.type_;
    spec.selector = None;
    spec.ports = wanted.ports;
    next.status = None;
    next
}

type PortTuple = (Option<String>, String, i32, Option<IntOrString>);

fn port_tuples(service: &Service) -> Vec<PortTuple> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                        p.port,
                        p.target_port.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn label<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn annotation<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn remote(name: &str, spec: serde_json::Value, labels: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": labels,
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": spec
        }))
        .expect("service")
    }

    #[test]
    fn short_names_are_service_dash_cluster() {
        assert_eq!(
            mirror_name("backend", "east").as_deref(),
            Ok("backend-east")
        );
        let exactly = "a".repeat(63 - 5);
        assert_eq!(
            mirror_name(&exactly, "east").expect("fits"),
            format!("{exactly}-east")
        );
    }

    #[test]
    fn long_names_are_shortened_deterministically_to_63() {
        let service = format!("orders-{}", "x".repeat(53)); // 60 characters
        assert_eq!(service.len(), 60);
        let name = mirror_name(&service, "east").expect("shortened");
        assert_eq!(name.len(), 63);
        assert_eq!(name, mirror_name(&service, "east").expect("again"));
        let digest = hex::encode(Sha256::digest(service.as_bytes()));
        assert_eq!(name, format!("{}-{}-east", &service[..49], &digest[..8]));
        // Two services sharing the first 49 characters still get distinct names.
        let sibling = format!("orders-{}y", "x".repeat(52));
        assert_ne!(name, mirror_name(&sibling, "east").expect("shortened"));
    }

    #[test]
    fn a_cluster_name_without_room_is_refused() {
        let cluster = "c".repeat(53);
        assert_eq!(
            mirror_name(&"s".repeat(20), &cluster),
            Err(Unmirrorable::ClusterNameTooLong(cluster.clone()))
        );
        assert!(mirror_name(&"s".repeat(20), &"c".repeat(52)).is_ok());
    }

    #[test]
    fn the_mirror_copies_ports_and_labels_but_not_mc_labels_or_selector() {
        let svc = remote(
            "backend",
            json!({"type": "NodePort", "selector": {"app": "backend"}, "clusterIP": "10.0.0.9",
                   "ports": [{"name": "http", "port": 8080, "targetPort": "web", "nodePort": 30080},
                             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}),
            json!({"app": "backend", "mc.dev/exported": "true", "app.kubernetes.io/part-of": "shop"}),
        );
        let mirror = desired_mirror(&svc, "east").expect("mirrorable");
        assert_eq!(mirror.metadata.name.as_deref(), Some("backend-east"));
        assert_eq!(mirror.metadata.namespace.as_deref(), Some("shop"));
        let labels = mirror.metadata.labels.clone().expect("labels");
        assert_eq!(labels.get("app").map(String::as_str), Some("backend"));
        assert!(!labels.contains_key("mc.dev/exported"), "no daisy chains");
        assert_eq!(
            labels.get(MIRROR_OF_CLUSTER).map(String::as_str),
            Some("east")
        );
        assert_eq!(
            labels.get(MIRROR_OF_SERVICE).map(String::as_str),
            Some("backend")
        );
        assert_eq!(labels.get(PART_OF).map(String::as_str), Some("mc"));
        assert_eq!(
            mirror.metadata.annotations.expect("annotations"),
            BTreeMap::from([(
                REMOTE_SERVICE_ANNOTATION.to_string(),
                "shop/backend".to_string()
            )])
        );
        let spec = mirror.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert!(spec.selector.is_none());
        assert!(spec.cluster_ip.is_none());
        let ports = spec.ports.expect("ports");
        assert_eq!(
            serde_json::to_value(&ports).expect("ports serialize"),
            json!([{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080},
                   {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}])
        );
    }

    #[test]
    fn services_without_ports_external_names_and_mirrors_are_refused() {
        let none = remote("a", json!({"ports": []}), json!({}));
        assert_eq!(desired_mirror(&none, "east"), Err(Unmirrorable::NoPorts));
        let ext = remote(
            "b",
            json!({"type": "ExternalName", "externalName": "x.example"}),
            json!({}),
        );
        assert_eq!(
            desired_mirror(&ext, "east"),
            Err(Unmirrorable::ExternalName)
        );
        let chained = remote(
            "c-north",
            json!({"ports": [{"port": 80}]}),
            json!({MIRROR_OF_CLUSTER: "north"}),
        );
        assert_eq!(
            desired_mirror(&chained, "east"),
            Err(Unmirrorable::IsMirror("north".to_string()))
        );
    }

    #[test]
    fn ownership_requires_this_cluster_and_this_service() {
        let key = RemoteKey {
            namespace: "shop".into(),
            name: "backend".into(),
        };
        let ours = desired_mirror(
            &remote("backend", json!({"ports": [{"port": 80}]}), json!({})),
            "east",
        )
        .expect("mirror");
        assert_eq!(ownership(&ours, &key, "east"), Ownership::Ours);
        assert!(matches!(
            ownership(&ours, &key, "north"),
            Ownership::Foreign(_)
        ));
        let other_key = RemoteKey {
            namespace: "shop".into(),
            name: "other".into(),
        };
        assert!(matches!(
            ownership(&ours, &other_key, "east"),
            Ownership::Foreign(_)
        ));
        let users = remote(
            "backend-east",
            json!({"ports": [{"port": 80}]}),
            json!({"app": "x"}),
        );
        assert!(matches!(
            ownership(&users, &key, "east"),
            Ownership::Foreign(_)
        ));
        assert_eq!(RemoteKey::of_mirror(&ours), Some(key));
    }

    #[test]
    fn updates_follow_ports_and_keep_the_cluster_ip() {
        let v1 = desired_mirror(
            &remote(
                "backend",
                json!({"ports": [{"name": "http", "port": 8080}]}),
                json!({}),
            ),
            "east",
        )
        .expect("mirror");
        let mut existing = v1.clone();
        existing.metadata.resource_version = Some("7".into());
        existing
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert("note".into(), "kept".into());
        existing.spec.as_mut().expect("spec").cluster_ip = Some("10.96.0.20".into());
        assert!(!needs_update(&existing, &v1));

        let v2 = desired_mirror(
            &remote(
                "backend",
                json!({"ports": [{"name": "http", "port": 9090}]}),
                json!({}),
            ),
            "east",
        )
        .expect("mirror");
        assert!(needs_update(&existing, &v2));
        let next = updated(&existing, &v2);
        assert!(!needs_update(&next, &v2));
        let spec = next.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.20"));
        assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            next.metadata
                .annotations
                .expect("annotations")
                .get("note")
                .map(String::as_str),
            Some("kept")
        );
        assert_eq!(spec.ports.expect("ports")[0].port, 9090);
    }
}
