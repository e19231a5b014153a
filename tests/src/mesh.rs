//! A data-path mesh in a lab: `east` runs an exported `backend` behind
//! mc-gateway, `west` runs mc-node-agent on every node and mirrors of east's
//! Services, created directly through the API (as the service mirror will).
//!
//! The components run as real Pods with their own ServiceAccounts and the
//! RBAC the install manifests grant; identities come from files made with a
//! trust anchor generated here (the lab stand-in for issuance).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, CustomResourceExt};
use mc_api::Link;
use mc_identity::TrustAnchor;
use serde_json::json;

use crate::{Lab, eventually};

/// Trust domain of the test mesh.
pub const TRUST_DOMAIN: &str = "mc.local";
/// Namespace of mc's components.
pub const NS: &str = mc_api::NAMESPACE;

/// A running mesh: the lab, the identity files and the gateway address.
pub struct Mesh {
    pub lab: Lab,
    pub east: Client,
    pub west: Client,
    /// Where the identities live (`<dir>/<sa>/{tls.crt,tls.key,ca.crt}`).
    pub identity_root: PathBuf,
    /// The LoadBalancer address of east's gateway.
    pub gateway_ip: String,
    /// The trust anchor every identity chains to.
    pub anchor: TrustAnchor,
    /// [`node_network_state`] of each west node before its agent started.
    pub before_agents: Vec<String>,
}

impl Mesh {
    /// Brings up east and west (two nodes each) with the gateway in east and
    /// an agent on every west node, linked by a Link named `east`.
    pub async fn start() -> Result<Mesh> {
        let lab = Lab::up(&["east", "west"], 2)?;
        let east = lab.client("east").await?;
        let west = lab.client("west").await?;
        let identity_root = PathBuf::from("/run/mc-lab")
            .join(&lab.name)
            .join("identity");
        let anchor = TrustAnchor::generate(TRUST_DOMAIN)?;
        for sa in ["mc-gateway", "mc-node-agent"] {
            anchor.issue_to_dir(
                NS,
                sa,
                Duration::from_secs(24 * 3600),
                &identity_root.join(sa),
            )?;
        }

        for client in [&east, &west] {
            install_basics(client).await?;
        }
        start_gateway(&east, &identity_root.join("mc-gateway")).await?;
        let gateway_ip = load_balancer_ip(&east, "mc-gateway").await?;

        let before_agents = (0..2)
            .map(|node| node_network_state(&lab.name, "west", node))
            .collect::<Result<_>>()?;
        let mesh = Mesh {
            lab,
            east,
            west,
            identity_root,
            gateway_ip,
            anchor,
            before_agents,
        };
        mesh.apply_link("east", &mesh.gateway_identity()).await?;
        for node in 0..2 {
            mesh.start_agent(&format!("west-node-{node}")).await?;
        }
        Ok(mesh)
    }

    /// The SPIFFE ID of east's gateway.
    pub fn gateway_identity(&self) -> String {
        mc_api::spiffe_id(TRUST_DOMAIN, NS, "mc-gateway")
    }

    /// Creates or replaces the Link `east` in west, naming `identity` as
    /// the gateways' identity.
    pub async fn apply_link(&self, name: &str, identity: &str) -> Result<()> {
        let links: Api<Link> = Api::namespaced(self.west.clone(), NS);
        let link: Link = serde_json::from_value(json!({
            "apiVersion": "mc.dev/v1alpha1", "kind": "Link",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "targetClusterName": "east",
                "credentialsSecret": "mc-link-east",
                "gatewayAddresses": [self.gateway_ip],
                "gatewayIdentity": identity,
            }
        }))?;
        match links.get_opt(name).await? {
            Some(existing) => {
                let mut link = link;
                link.metadata.resource_version = existing.metadata.resource_version;
                links.replace(name, &PostParams::default(), &link).await?;
            }
            None => {
                links.create(&PostParams::default(), &link).await?;
            }
        }
        Ok(())
    }

    /// Starts the agent pod of a west node and waits until it is ready.
    pub async fn start_agent(&self, node: &str) -> Result<()> {
        let dir = self.identity_root.join("mc-node-agent");
        let pod = component_pod(
            &agent_pod_name(node),
            "mc-node-agent",
            json!([
                "mc-node-agent",
                "run",
                "--cluster-name",
                "west",
                "--identity-dir",
                dir
            ]),
            Some(node),
        );
        create_and_wait_ready(&self.west, pod).await
    }

    /// Deletes the agent pod of a west node and waits until it is gone.
    pub async fn stop_agent(&self, node: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.west.clone(), NS);
        let name = agent_pod_name(node);
        pods.delete(&name, &DeleteParams::default()).await?;
        eventually(Duration::from_secs(30), || async {
            match pods.get_opt(&name).await? {
                None => Ok(()),
                Some(_) => bail!("{name} still exists"),
            }
        })
        .await
    }

    /// Creates a mirror Service `<service>-east` in west's `namespace` with
    /// `ports` (name, port), as the service mirror would; returns its ClusterIP.
    pub async fn mirror(
        &self,
        namespace: &str,
        service: &str,
        ports: &[(&str, u16)],
    ) -> Result<String> {
        self.mirror_named(&format!("{service}-east"), namespace, service, ports)
            .await
    }

    /// Like [`Mesh::mirror`], under another name (e.g. a second mirror of
    /// the same remote Service with other ports).
    pub async fn mirror_named(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        ports: &[(&str, u16)],
    ) -> Result<String> {
        let services: Api<Service> = Api::namespaced(self.west.clone(), namespace);
        let ports: Vec<_> = ports
            .iter()
            .map(|(name, port)| json!({"name": name, "port": port}))
            .collect();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": {
                mc_api::labels::MIRROR_OF_CLUSTER: "east",
                mc_api::labels::MIRROR_OF_SERVICE: service,
            }},
            "spec": {"ports": ports}
        }))?;
        let created = services.create(&PostParams::default(), &svc).await?;
        created
            .spec
            .and_then(|s| s.cluster_ip)
            .context("the mirror got no ClusterIP")
    }
}

/// Exports (or not) a Service `name` in east selecting pods `app=<name>`,
/// with `ports` (name, port).
pub async fn east_service(
    client: &Client,
    name: &str,
    exported: bool,
    ports: &[(&str, u16)],
) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut labels = BTreeMap::new();
    if exported {
        labels.insert(
            mc_api::labels::EXPORTED.to_string(),
            mc_api::labels::EXPORTED_VALUE.to_string(),
        );
    }
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p}))
        .collect();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": ports}
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    Ok(())
}

fn agent_pod_name(node: &str) -> String {
    format!("mc-node-agent-{node}")
}

/// Namespace, ServiceAccounts, the Link CRD and least-privilege RBAC of the
/// gateway and the agent, as the install manifests grant them.
async fn install_basics(client: &Client) -> Result<()> {
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.create(&pp, &Link::crd()).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    for sa in ["mc-gateway", "mc-node-agent"] {
        sas.create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": sa}}))?,
        )
        .await?;
    }
    let cluster_roles: Api<ClusterRole> = Api::all(client.clone());
    let read = json!(["get", "list", "watch"]);
    cluster_roles
        .create(&pp, &serde_json::from_value(json!({"metadata": {"name": "mc-gateway"}, "rules": [
            {"apiGroups": [""], "resources": ["services"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read}]}))?)
        .await?;
    cluster_roles
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "mc-node-agent"}, "rules": [
            {"apiGroups": [""], "resources": ["services", "pods"], "verbs": read}]}))?,
        )
        .await?;
    let roles: Api<Role> = Api::namespaced(client.clone(), NS);
    roles
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "mc-node-agent"}, "rules": [
            {"apiGroups": ["mc.dev"], "resources": ["links"], "verbs": read}]}))?,
        )
        .await?;
    let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
    for sa in ["mc-gateway", "mc-node-agent"] {
        crbs.create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}]}))?,
        )
        .await?;
    }
    let rbs: Api<RoleBinding> = Api::namespaced(client.clone(), NS);
    rbs.create(&pp, &serde_json::from_value(json!({"metadata": {"name": "mc-node-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mc-node-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "mc-node-agent", "namespace": NS}]}))?)
        .await?;
    Ok(())
}

async fn start_gateway(client: &Client, identity_dir: &Path) -> Result<()> {
    let pod = component_pod(
        "mc-gateway-0",
        "mc-gateway",
        json!(["mc-gateway", "--identity-dir", identity_dir]),
        None,
    );
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "mc-gateway"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "mc-gateway"}, "ports": [
            {"name": "tunnel", "port": mc_api::GATEWAY_TUNNEL_PORT},
            {"name": "admin", "port": mc_api::ADMIN_PORT}]}
    }))?;
    services.create(&PostParams::default(), &svc).await?;
    create_and_wait_ready(client, pod).await
}

/// A Pod running one of mc's binaries under its ServiceAccount, ready when
/// its admin `/ready` answers. `node` makes it a host-network pod there.
fn component_pod(name: &str, sa: &str, command: serde_json::Value, node: Option<&str>) -> Pod {
    let mut spec = json!({
        "serviceAccountName": sa,
        "containers": [{
            "name": sa, "image": "ghcr.io/mc-dev/mc:dev", "command": command,
            "env": [{"name": "RUST_LOG", "value": "info"}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": mc_api::ADMIN_PORT}, "periodSeconds": 1}
        }]
    });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
        spec["hostNetwork"] = json!(true);
        spec["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"app": sa}},
        "spec": spec
    }))
    .expect("a valid Pod")
}

async fn create_and_wait_ready(client: &Client, pod: Pod) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let name = pod.metadata.name.clone().context("pod name")?;
    pods.create(&PostParams::default(), &pod).await?;
    eventually(Duration::from_secs(30), || async {
        let pod = pods.get(&name).await?;
        let ready = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            Ok(())
        } else {
            bail!("{name} is not ready")
        }
    })
    .await
    .with_context(|| format!("waiting for pod {name}"))
}

async fn load_balancer_ip(client: &Client, service: &str) -> Result<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    eventually(Duration::from_secs(20), || async {
        let svc = services.get(service).await?;
        svc.status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .and_then(|i| i.into_iter().next())
            .and_then(|i| i.ip)
            .context("no LoadBalancer ingress yet")
    })
    .await
}

/// `nft list ruleset` (without the lab's kube-proxy table, which follows
/// Services), `ip rule` and every IPv4 routing table (without pods' routes)
/// of a node.
pub fn node_network_state(lab: &str, cluster: &str, node: usize) -> Result<String> {
    let netns = format!("mc-{lab}-{cluster}-n{node}");
    let run = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &netns])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let ruleset = run(&["nft", "list", "ruleset"])?;
    let mut kept = String::new();
    let mut skipping = false;
    for line in ruleset.lines() {
        if line.starts_with("table ") {
            skipping = line.starts_with("table ip lab-kube-proxy");
        }
        if !skipping {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    // Pods come and go with their /32 routes (`dev v<id>`): not the agent's doing.
    let routes: String = run(&["ip", "-4", "route", "show", "table", "all"])?
        .lines()
        .filter(|line| {
            let mut words = line.split_whitespace();
            !words.any(|w| w == "dev")
                || !words
                    .next()
                    .is_some_and(|d| d.len() == 9 && d.starts_with('v'))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    Ok(format!(
        "{kept}\n--- ip rule\n{}\n--- routes\n{routes}",
        run(&["ip", "-4", "rule"])?
    ))
}
