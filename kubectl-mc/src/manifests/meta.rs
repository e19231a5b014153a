//! Names and labels shared by every rendered object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `app.kubernetes.io/part-of`, on every object mc creates.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/component`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/version`.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// Value of [`PART_OF`].
pub const PART_OF_VALUE: &str = "mc";
/// Selector of everything mc created.
pub const PART_OF_SELECTOR: &str = "app.kubernetes.io/part-of=mc";

/// ServiceAccount, Deployment and pod `app` label of the controller.
pub const CONTROLLER: &str = "mc-controller";
/// ServiceAccount, Deployment, Service and pod `app` label of the gateway.
pub const GATEWAY: &str = "mc-gateway";
/// ServiceAccount, DaemonSet and pod `app` label of the node agent.
pub const NODE_AGENT: &str = "mc-node-agent";
/// The ConfigMap install writes.
pub const CONFIG_MAP: &str = "mc-config";
/// The Secret holding only the trust anchor certificate.
pub const TRUST_ANCHOR_SECRET: &str = "mc-trust-anchor";
/// The Secret holding this cluster's issuer (intermediate CA): only the
/// controller reads it.
pub const ISSUER_SECRET: &str = mc_identity::ISSUER_SECRET;
/// ServiceAccount and ClusterRole(Binding) of the remote reader `link` creates.
pub const LINK_READER: &str = "mc-link-reader";
/// Type of a Link's credentials Secret.
pub const LINK_CREDENTIALS_TYPE: &str = "mc.dev/link-credentials";
/// Key of the kubeconfig in a Link's credentials Secret.
pub const LINK_KUBECONFIG_KEY: &str = "kubeconfig";
/// Finalizer the controller puts on Links.
pub const LINK_FINALIZER: &str = "mc.dev/link-cleanup";
/// Where the trust anchors (Secret `mc-trust-anchor`) are mounted in the
/// gateway and the node agent.
pub const IDENTITY_MOUNT: &str = "/var/run/mc/identity";

/// The identity Secret of a component's ServiceAccount, as installs before
/// CSR issuance wrote them (uninstall still removes them).
pub fn identity_secret(service_account: &str) -> String {
    format!("{service_account}-identity")
}

/// The credentials Secret of the Link to `cluster`.
pub fn link_secret(cluster: &str) -> String {
    format!("mc-link-{cluster}")
}

/// The `component` value of the workload a ServiceAccount runs.
pub fn component_of(service_account: &str) -> &'static str {
    match service_account {
        CONTROLLER => "controller",
        GATEWAY => "gateway",
        NODE_AGENT => "node-agent",
        _ => "link",
    }
}

/// mc's labels, with a component when the object belongs to one.
pub fn labels(component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (PART_OF.to_string(), PART_OF_VALUE.to_string()),
        (
            VERSION_LABEL.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    if let Some(component) = component {
        labels.insert(COMPONENT.to_string(), component.to_string());
    }
    labels
}

/// Metadata of a cluster-scoped object.
pub fn cluster_meta(name: &str, component: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(labels(component)),
        ..ObjectMeta::default()
    }
}

/// Metadata of an object in `mc-system`.
pub fn system_meta(name: &str, component: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(mc_api::NAMESPACE.to_string()),
        ..cluster_meta(name, component)
    }
}
