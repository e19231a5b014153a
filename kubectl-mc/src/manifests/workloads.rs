//! The controller and gateway Deployments, the gateway Service and the node
//! agent DaemonSet.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::InstallOptions;
use super::meta::{
    self, CONTROLLER, GATEWAY, IDENTITY_MOUNT, NODE_AGENT, TRUST_ANCHOR_SECRET, system_meta,
};
use crate::objects::{Object, object};

const IDENTITY_VOLUME: &str = "identity";

fn app_labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn pod_labels(app: &str) -> BTreeMap<String, String> {
    let mut labels = meta::labels(Some(meta::component_of(app)));
    labels.extend(app_labels(app));
    labels
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn env_field(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("admin".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory.to_string())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.to_string()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The trust anchors (`ca.crt`), all the gateway and the agent read from
/// disk: their keys are generated in memory and their certificates come
/// through CSRs.
fn identity_volume() -> Volume {
    Volume {
        name: IDENTITY_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(TRUST_ANCHOR_SECRET.to_string()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn identity_mount() -> VolumeMount {
    VolumeMount {
        name: IDENTITY_VOLUME.to_string(),
        mount_path: IDENTITY_MOUNT.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The flags that make a component request its certificate through CSRs.
fn identity_args(opts: &InstallOptions) -> [String; 3] {
    [
        format!("--identity-dir={IDENTITY_MOUNT}"),
        "--identity-source=csr".to_string(),
        format!("--trust-domain={}", opts.trust_domain),
    ]
}

fn template(app: &str, spec: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels(app)),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    }
}

fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(app_labels(app)),
        ..LabelSelector::default()
    }
}

/// The controller Deployment.
pub fn controller(opts: &InstallOptions) -> Result<Object> {
    let container = Container {
        name: CONTROLLER.to_string(),
        image: Some(opts.image.clone()),
        command: Some(vec![CONTROLLER.to_string()]),
        args: Some(vec![
            format!("--cluster-name={}", opts.cluster_name),
            format!("--leaf-lifetime={}s", opts.leaf_lifetime.as_secs()),
        ]),
        env: Some(vec![
            env_field("POD_NAME", "metadata.name"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![port("admin", mc_api::ADMIN_PORT)]),
        readiness_probe: Some(http_probe("/ready", 5)),
        liveness_probe: Some(http_probe("/live", 10)),
        resources: Some(resources("50m", "64Mi", "256Mi")),
        security_context: Some(restricted()),
        ..Container::default()
    };
    object(&Deployment {
        metadata: system_meta(CONTROLLER, Some("controller")),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: selector(CONTROLLER),
            template: template(
                CONTROLLER,
                PodSpec {
                    service_account_name: Some(CONTROLLER.to_string()),
                    containers: vec![container],
                    ..PodSpec::default()
                },
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The gateway Deployment.
pub fn gateway(opts: &InstallOptions) -> Result<Object> {
    let container = Container {
        name: GATEWAY.to_string(),
        image: Some(opts.image.clone()),
        command: Some(vec![GATEWAY.to_string()]),
        args: Some(identity_args(opts).to_vec()),
        env: Some(vec![
            env_field("POD_NAME", "metadata.name"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            port("tunnel", mc_api::GATEWAY_TUNNEL_PORT),
            port("admin", mc_api::ADMIN_PORT),
        ]),
        readiness_probe: Some(http_probe("/ready", 5)),
        liveness_probe: Some(http_probe("/live", 10)),
        resources: Some(resources("100m", "64Mi", "512Mi")),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![identity_mount()]),
        ..Container::default()
    };
    object(&Deployment {
        metadata: system_meta(GATEWAY, Some("gateway")),
        spec: Some(DeploymentSpec {
            replicas: Some(opts.gateway_replicas),
            selector: selector(GATEWAY),
            template: template(
                GATEWAY,
                PodSpec {
                    service_account_name: Some(GATEWAY.to_string()),
                    containers: vec![container],
                    volumes: Some(vec![identity_volume()]),
                    ..PodSpec::default()
                },
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

fn service_port(name: &str, number: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The gateway Service (LoadBalancer or NodePort).
pub fn gateway_service(opts: &InstallOptions) -> Result<Object> {
    object(&Service {
        metadata: system_meta(GATEWAY, Some("gateway")),
        spec: Some(ServiceSpec {
            type_: Some(opts.gateway_service_type.as_str().to_string()),
            selector: Some(app_labels(GATEWAY)),
            ports: Some(vec![
                service_port("tunnel", mc_api::GATEWAY_TUNNEL_PORT),
                service_port("admin", mc_api::ADMIN_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The node agent DaemonSet.
pub fn node_agent(opts: &InstallOptions) -> Result<Object> {
    let container = Container {
        name: NODE_AGENT.to_string(),
        image: Some(opts.image.clone()),
        command: Some(vec![NODE_AGENT.to_string()]),
        args: Some(
            std::iter::once("run".to_string())
                .chain(identity_args(opts))
                .chain([
                    format!("--links-namespace={}", mc_api::NAMESPACE),
                    format!("--admin-listen=0.0.0.0:{}", mc_api::ADMIN_PORT),
                ])
                .collect(),
        ),
        env: Some(vec![
            env_field("NODE_NAME", "spec.nodeName"),
            env_field("POD_NAMESPACE", "metadata.namespace"),
            env_value("MC_CLUSTER_NAME", &opts.cluster_name),
        ]),
        ports: Some(vec![port("admin", mc_api::ADMIN_PORT)]),
        readiness_probe: Some(http_probe("/ready", 5)),
        liveness_probe: Some(http_probe("/live", 10)),
        resources: Some(resources("50m", "64Mi", "256Mi")),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()]),
                drop: Some(vec!["ALL".to_string()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![identity_mount()]),
        ..Container::default()
    };
    object(&DaemonSet {
        metadata: system_meta(NODE_AGENT, Some("node-agent")),
        spec: Some(DaemonSetSpec {
            selector: selector(NODE_AGENT),
            template: template(
                NODE_AGENT,
                PodSpec {
                    service_account_name: Some(NODE_AGENT.to_string()),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".to_string()),
                    termination_grace_period_seconds: Some(10),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".to_string()),
                        ..Toleration::default()
                    }]),
                    containers: vec![container],
                    volumes: Some(vec![identity_volume()]),
                    ..PodSpec::default()
                },
            ),
            ..DaemonSetSpec::default()
        }),
        ..DaemonSet::default()
    })
}
