//! ServiceAccounts and least-privilege RBAC of each component, and of the
//! remote reader `link` creates in a target cluster.

use anyhow::Result;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{self, CONTROLLER, GATEWAY, LINK_READER, NODE_AGENT, cluster_meta, system_meta};
use crate::objects::{Object, object};

const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    PolicyRule {
        api_groups: strings(groups),
        resources: strings(resources),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// Cluster-wide rules of the controller.
pub fn controller_cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["services"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
        rule(
            &[""],
            &["namespaces"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            READ,
        ),
        rule(
            &["certificates.k8s.io"],
            &[
                "certificatesigningrequests/approval",
                "certificatesigningrequests/status",
            ],
            &["update"],
        ),
        PolicyRule {
            resource_names: Some(vec![mc_identity::SIGNER_NAME.to_string()]),
            ..rule(&["certificates.k8s.io"], &["signers"], &["approve", "sign"])
        },
    ]
}

/// What the gateway and the node agent need to obtain their certificates:
/// create their CSRs and read them back. Never Secrets.
fn csr_requester_rule() -> PolicyRule {
    rule(
        &["certificates.k8s.io"],
        &["certificatesigningrequests"],
        &["create", "get", "watch"],
    )
}

/// Rules of the controller in `mc-system`.
pub fn controller_namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[mc_api::GROUP],
            &["links", "links/status", "links/finalizers"],
            &["get", "list", "watch", "update", "patch"],
        ),
        // Link credentials and the issuer: only the controller reads Secrets.
        rule(&[""], &["secrets"], READ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(&[""], &["configmaps"], &["get"]),
    ]
}

/// Cluster-wide rules of the gateway.
pub fn gateway_cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[""], &["services"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        csr_requester_rule(),
    ]
}

/// Rules of the gateway in `mc-system`: the ServiceAccounts `link` makes
/// name the clusters whose agents it accepts.
pub fn gateway_namespace_rules() -> Vec<PolicyRule> {
    vec![rule(&[""], &["serviceaccounts"], READ)]
}

/// Cluster-wide rules of the node agent.
pub fn node_agent_cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[""], &["services", "pods"], READ),
        csr_requester_rule(),
    ]
}

/// Rules of the node agent in `mc-system`.
pub fn node_agent_namespace_rules() -> Vec<PolicyRule> {
    vec![rule(&[mc_api::GROUP], &["links"], READ)]
}

/// Rules of the remote reader: Services and EndpointSlices, read only.
pub fn link_reader_rules() -> Vec<PolicyRule> {
    vec![
        rule(&[""], &["services"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
    ]
}

fn subject(service_account: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".to_string(),
        name: service_account.to_string(),
        namespace: Some(mc_api::NAMESPACE.to_string()),
        ..Subject::default()
    }]
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
    }
}

/// A ServiceAccount in `mc-system` with a ClusterRole (named like it) and,
/// when `namespace_rules` is not empty, a Role in `mc-system`.
fn identity_with_rules(
    service_account: &str,
    cluster_rules: Vec<PolicyRule>,
    namespace_rules: Vec<PolicyRule>,
) -> Result<Vec<Object>> {
    let component = Some(meta::component_of(service_account));
    let mut objects = vec![
        object(&ServiceAccount {
            metadata: system_meta(service_account, component),
            ..ServiceAccount::default()
        })?,
        object(&ClusterRole {
            metadata: cluster_meta(service_account, component),
            rules: Some(cluster_rules),
            ..ClusterRole::default()
        })?,
        object(&ClusterRoleBinding {
            metadata: cluster_meta(service_account, component),
            role_ref: role_ref("ClusterRole", service_account),
            subjects: Some(subject(service_account)),
        })?,
    ];
    if !namespace_rules.is_empty() {
        objects.push(object(&Role {
            metadata: system_meta(service_account, component),
            rules: Some(namespace_rules),
        })?);
        objects.push(object(&RoleBinding {
            metadata: system_meta(service_account, component),
            role_ref: role_ref("Role", service_account),
            subjects: Some(subject(service_account)),
        })?);
    }
    Ok(objects)
}

/// ServiceAccounts and RBAC of the controller, gateway and node agent.
pub fn components() -> Result<Vec<Object>> {
    let mut objects = identity_with_rules(
        CONTROLLER,
        controller_cluster_rules(),
        controller_namespace_rules(),
    )?;
    objects.extend(identity_with_rules(
        GATEWAY,
        gateway_cluster_rules(),
        gateway_namespace_rules(),
    )?);
    objects.extend(identity_with_rules(
        NODE_AGENT,
        node_agent_cluster_rules(),
        node_agent_namespace_rules(),
    )?);
    Ok(objects)
}

/// The ClusterRole every linked cluster's reader is bound to.
pub fn link_reader() -> Result<Vec<Object>> {
    Ok(vec![object(&ClusterRole {
        metadata: cluster_meta(LINK_READER, Some("link")),
        rules: Some(link_reader_rules()),
        ..ClusterRole::default()
    })?])
}

/// Name of the ServiceAccount (and its ClusterRoleBinding) through which
/// `cluster` reads this one, and whose existence links it here.
pub fn linked_cluster_account(cluster: &str) -> String {
    format!("mc-link-{cluster}")
}

/// What `link` makes in the target for the linking `cluster`: its own
/// ServiceAccount (labelled with the cluster's name: the gateway accepts
/// that cluster's agents while it exists) bound to the reader ClusterRole.
/// Deleting the account revokes the token and the gateway's acceptance.
pub fn linked_cluster(cluster: &str) -> Result<Vec<Object>> {
    let name = linked_cluster_account(cluster);
    let mut binding_meta = cluster_meta(&name, Some("link"));
    binding_meta
        .labels
        .get_or_insert_with(Default::default)
        .insert(
            mc_api::labels::LINKED_CLUSTER.to_string(),
            cluster.to_string(),
        );
    let account_meta = ObjectMeta {
        namespace: Some(mc_api::NAMESPACE.to_string()),
        ..binding_meta.clone()
    };
    Ok(vec![
        object(&ServiceAccount {
            metadata: account_meta,
            ..ServiceAccount::default()
        })?,
        object(&ClusterRoleBinding {
            metadata: binding_meta,
            role_ref: role_ref("ClusterRole", LINK_READER),
            subjects: Some(subject(&name)),
        })?,
    ])
}
