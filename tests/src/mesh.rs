//! A data-path mesh in a lab: `east` runs an exported `backend` behind
//! mc-gateway, `west` runs mc-node-agent on every node and mirrors of east's
//! Services, created directly through the API (as the service mirror will).
//!
//! The components run as real Pods with their own ServiceAccounts and the
//! RBAC the install manifests grant. Identity is the real thing: one trust
//! anchor generated here, an issuer per cluster in its `mc-identity-issuer`
//! Secret, mc-controller's signer in each cluster (`--controllers signer`:
//! the mirrors are made here, not by the service mirror), and agents and
//! the gateway holding keys in memory and certificates from CSRs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::{Client, CustomResourceExt};
use kubectl_mc::manifests::{identity as identity_manifests, rbac};
use kubectl_mc::objects::Object;
use mc_api::Link;
use mc_identity::{
    CertSource, ClusterIssuer, Identity, IssuedLeaf, SharedIdentity, SpiffeId, TrustAnchor,
};
use serde_json::json;

use crate::{Lab, eventually};

/// Trust domain of the test mesh.
pub const TRUST_DOMAIN: &str = "mc.local";
/// Namespace of mc's components.
pub const NS: &str = mc_api::NAMESPACE;

/// A running mesh: the lab, the trust material and the gateway address.
pub struct Mesh {
    pub lab: Lab,
    pub east: Client,
    pub west: Client,
    /// Per cluster, the directory with the trust anchors (`<dir>/<cluster>/ca.crt`)
    /// the cluster's agents and gateway load (the `mc-trust-anchor` mount).
    pub identity_root: PathBuf,
    /// The LoadBalancer address of east's gateway.
    pub gateway_ip: String,
    /// The trust anchor every identity chains to.
    pub anchor: TrustAnchor,
    /// The issuer of each cluster, by name.
    pub issuers: BTreeMap<String, ClusterIssuer>,
    /// [`node_network_state`] of each west node before its agent started.
    pub before_agents: Vec<String>,
    /// Extra environment of the agents and the gateway.
    proxy_env: Vec<(String, String)>,
}

/// Settings of a [`Mesh`].
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Lifetime of the leaves the signers issue (renewed at two thirds).
    pub leaf_lifetime: Duration,
    /// Extra environment of the agents and the gateway (e.g.
    /// `TOKIO_WORKER_THREADS`), for the benchmark.
    pub proxy_env: Vec<(String, String)>,
    /// kube-proxy's mode on every node: `nftables` or `iptables`.
    pub kube_proxy_mode: &'static str,
}

impl Default for MeshOptions {
    fn default() -> MeshOptions {
        MeshOptions {
            leaf_lifetime: Duration::from_secs(24 * 3600),
            proxy_env: Vec::new(),
            kube_proxy_mode: "nftables",
        }
    }
}

impl Mesh {
    /// Brings up east and west (two nodes each) with the gateway in east and
    /// an agent on every west node, linked by a Link named `east`.
    pub async fn start() -> Result<Mesh> {
        Mesh::start_with(MeshOptions::default()).await
    }

    /// [`Mesh::start`] with `options`.
    pub async fn start_with(options: MeshOptions) -> Result<Mesh> {
        let lab = Lab::up_with_proxy(&["east", "west"], 2, options.kube_proxy_mode)?;
        let east = lab.client("east").await?;
        let west = lab.client("west").await?;
        let identity_root = PathBuf::from("/run/mc-lab")
            .join(&lab.name)
            .join("identity");
        let anchor = TrustAnchor::generate(TRUST_DOMAIN)?;
        let mut issuers = BTreeMap::new();
        for (cluster, client) in [("east", &east), ("west", &west)] {
            let issuer = anchor.issue_cluster_issuer(cluster, Duration::from_secs(24 * 3600))?;
            let dir = identity_root.join(cluster);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("ca.crt"), anchor.cert_pem())?;
            install_basics(client, cluster, &issuer).await?;
            start_signer(client, cluster, options.leaf_lifetime).await?;
            issuers.insert(cluster.to_string(), issuer);
        }
        // `kubectl mc link` run against east for west: west's reader account,
        // which is also what tells east's gateway that west is linked.
        create_objects(&east, &rbac::link_reader()?).await?;
        start_gateway(&east, &identity_root.join("east"), &options.proxy_env).await?;
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
            issuers,
            before_agents,
            proxy_env: options.proxy_env,
        };
        mesh.link_west().await?;
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

    /// What a west agent holds: a leaf from west's issuer and the anchor.
    pub fn west_agent_identity(&self) -> Result<Arc<dyn CertSource>> {
        let leaf = self.issue("west", "mc-node-agent", Duration::from_secs(3600))?;
        let identity = Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, self.anchor.cert_pem())?;
        Ok(Arc::new(SharedIdentity::new(identity)))
    }

    /// Makes what `kubectl mc link` run against east for west makes there:
    /// west's reader account, which also tells east's gateway that west is
    /// linked.
    pub async fn link_west(&self) -> Result<()> {
        create_objects(&self.east, &rbac::linked_cluster("west")?).await
    }

    /// Deletes west's reader account in east (and its binding): west is no
    /// longer linked there.
    pub async fn unlink_west(&self) -> Result<()> {
        let name = rbac::linked_cluster_account("west");
        let accounts: Api<ServiceAccount> = Api::namespaced(self.east.clone(), NS);
        accounts.delete(&name, &DeleteParams::default()).await?;
        let bindings: Api<ClusterRoleBinding> = Api::all(self.east.clone());
        bindings.delete(&name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// A leaf for `mc-system/<sa>` from `cluster`'s issuer (what its signer
    /// would issue), valid for `lifetime`; `cert_pem` is the chain.
    pub fn issue(&self, cluster: &str, sa: &str, lifetime: Duration) -> Result<IssuedLeaf> {
        let issuer = self
            .issuers
            .get(cluster)
            .with_context(|| format!("no issuer for cluster {cluster}"))?;
        issuer.issue_leaf(&SpiffeId::system(TRUST_DOMAIN, sa)?, lifetime)
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
        let dir = self.identity_root.join("west");
        let pod = component_pod(
            &agent_pod_name(node),
            "mc-node-agent",
            json!([
                "mc-node-agent",
                "run",
                "--cluster-name",
                "west",
                "--identity-source",
                "csr",
                "--identity-dir",
                dir
            ]),
            Some(node),
            &self.proxy_env,
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

    /// Runs `backends` echo pods `backend-<i>` in east's `default`
    /// namespace behind an exported Service `backend` (HTTP 8080, TCP 9000)
    /// and mirrors it into west; returns the mirror's ClusterIP.
    pub async fn export_echo_backend(&self, backends: usize) -> Result<String> {
        for i in 0..backends {
            self.lab
                .run_echo(&format!("east/default/backend-{i}"), "app=backend", None)?;
        }
        let ports = [("http", 8080), ("tcp", 9000)];
        east_service(&self.east, "backend", true, &ports).await?;
        self.mirror("default", "backend", &ports).await
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

/// Namespace, the Link CRD, the components' ServiceAccounts and RBAC and
/// the identity Secrets, exactly as `kubectl mc install` renders them.
async fn install_basics(client: &Client, cluster: &str, issuer: &ClusterIssuer) -> Result<()> {
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
    create_objects(client, &rbac::components()?).await?;
    create_objects(client, &identity_manifests::secrets(issuer)?)
        .await
        .with_context(|| format!("identity Secrets of {cluster}"))
}

/// Creates rendered objects as they are.
async fn create_objects(client: &Client, objects: &[Object]) -> Result<()> {
    for object in objects {
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &object.resource),
            None => Api::all_with(client.clone(), &object.resource),
        };
        api.create(&PostParams::default(), &object.dynamic)
            .await
            .with_context(|| format!("creating {}", object.describe()))?;
    }
    Ok(())
}

/// mc-controller running only its certificate signer.
async fn start_signer(client: &Client, cluster: &str, leaf_lifetime: Duration) -> Result<()> {
    let pod = component_pod(
        "mc-controller-0",
        "mc-controller",
        json!([
            "mc-controller",
            "--cluster-name",
            cluster,
            "--controllers",
            "signer",
            "--leaf-lifetime",
            format!("{}s", leaf_lifetime.as_secs()),
        ]),
        None,
        &[],
    );
    create_and_wait_ready(client, pod).await
}

async fn start_gateway(
    client: &Client,
    identity_dir: &Path,
    env: &[(String, String)],
) -> Result<()> {
    let pod = component_pod(
        "mc-gateway-0",
        "mc-gateway",
        json!([
            "mc-gateway",
            "--identity-source",
            "csr",
            "--identity-dir",
            identity_dir
        ]),
        None,
        env,
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
fn component_pod(
    name: &str,
    sa: &str,
    command: serde_json::Value,
    node: Option<&str>,
    env: &[(String, String)],
) -> Pod {
    let env: Vec<_> = std::iter::once(json!({"name": "RUST_LOG", "value": "info"}))
        .chain(env.iter().map(|(k, v)| json!({"name": k, "value": v})))
        .collect();
    let mut spec = json!({
        "serviceAccountName": sa,
        "containers": [{
            "name": sa, "image": "ghcr.io/mc-dev/mc:dev", "command": command,
            "env": env,
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
/// Whether nftables table `family name` is kube-proxy's: its own table in
/// nftables mode, or the xtables tables iptables-nft writes in iptables
/// mode. They follow the cluster's Services, not the agent.
fn is_kube_proxys(table: &str) -> bool {
    let name = table.split_whitespace().nth(1).unwrap_or_default();
    matches!(
        name,
        "kube-proxy" | "nat" | "filter" | "mangle" | "raw" | "security"
    )
}

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
        if let Some(table) = line.strip_prefix("table ") {
            skipping = is_kube_proxys(table.trim_end_matches(" {"));
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
