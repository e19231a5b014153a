//! Two real control planes (`mc-testenv`), east and west, linked the way
//! `kubectl mc link` links them: a read-only ServiceAccount in east, its
//! token in a kubeconfig Secret in west, and a Link in west. The controller
//! runs in-process against west.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use mc_api::Link;
use mc_testenv::TestCluster;
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub const NS: &str = "mc-system";
pub const READER: &str = "mc-link-reader";

/// One real cluster and its admin client.
pub struct Cluster {
    pub env: TestCluster,
    pub admin: Client,
}

pub async fn client_from_yaml(yaml: &str) -> Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(cfg).expect("client")
}

impl Cluster {
    /// Starts a control plane (etcd, kube-apiserver, kube-controller-manager).
    pub async fn start() -> Cluster {
        let env = TestCluster::start(Default::default())
            .await
            .expect("test cluster starts");
        let admin = env.admin_client();
        Cluster { env, admin }
    }

    pub async fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.admin.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating namespace {name}: {e}"),
        }
    }

    pub fn services(&self, ns: &str) -> Api<Service> {
        Api::namespaced(self.admin.clone(), ns)
    }

    pub fn links(&self) -> Api<Link> {
        Api::namespaced(self.admin.clone(), NS)
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// east and west, linked: Link CRD in west, reader SA in east, Secret and
/// Link `east` in west.
pub struct Pair {
    pub east: Cluster,
    pub west: Cluster,
}

impl Pair {
    /// Starts both clusters and links them.
    pub async fn linked(tweak: impl FnOnce(&mut serde_json::Value)) -> Pair {
        let (east, west) = tokio::join!(Cluster::start(), Cluster::start());
        let pair = Pair { east, west };
        pair.install_crd().await;
        pair.west.namespace(NS).await;
        pair.east.namespace(NS).await;
        let token = pair.reader_token().await;
        pair.put_secret(&token).await;
        let mut link = json!({
            "apiVersion": "mc.dev/v1alpha1",
            "kind": "Link",
            "metadata": {"name": "east", "namespace": NS},
            "spec": {
                "targetClusterName": "east",
                "credentialsSecret": "mc-link-east",
                "gatewayAddresses": ["127.0.0.1"],
                "gatewayIdentity": "spiffe://mc.local/ns/mc-system/sa/mc-gateway",
                "probe": {"port": free_port(), "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 2}
            }
        });
        tweak(&mut link);
        let link: Link = serde_json::from_value(link).expect("link");
        pair.west
            .links()
            .create(&PostParams::default(), &link)
            .await
            .expect("link created");
        pair
    }

    /// Creates the Link CRD in west and waits until it is served.
    async fn install_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.west.admin.clone());
        crds.create(&PostParams::default(), &Link::crd())
            .await
            .expect("Link CRD");
        let name = Link::crd_name();
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds, name, conditions::is_crd_established()),
        )
        .await
        .expect("Link CRD established within 30 s")
        .expect("watching the Link CRD");
    }

    /// What `kubectl mc link` does in east: a read-only ServiceAccount and a
    /// TokenRequest token for it.
    pub async fn reader_token(&self) -> String {
        let admin = &self.east.admin;
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": READER}})).expect("sa");
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("sa: {e}"),
        }
        let roles: Api<ClusterRole> = Api::all(admin.clone());
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": READER},
            "rules": [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
            ]
        }))
        .expect("role");
        let _ = roles.create(&PostParams::default(), &role).await;
        let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": READER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER},
            "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": NS}]
        }))
        .expect("binding");
        let _ = bindings.create(&PostParams::default(), &binding).await;
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
                .expect("token request");
        sas.create_token_request(READER, &PostParams::default(), &request)
            .await
            .expect("token")
            .status
            .expect("token status")
            .token
    }

    /// Revokes every reader token: deletes the ServiceAccount.
    pub async fn revoke_reader(&self) {
        let sas: Api<ServiceAccount> = Api::namespaced(self.east.admin.clone(), NS);
        sas.delete(READER, &DeleteParams::default())
            .await
            .expect("sa deleted");
    }

    /// Writes (creates or replaces) the credentials Secret with `token`.
    pub async fn put_secret(&self, token: &str) {
        self.put_kubeconfig(self.east.env.kubeconfig_with_token("east", token))
            .await;
    }

    /// Writes (creates or replaces) the credentials Secret with `kubeconfig`.
    pub async fn put_kubeconfig(&self, kubeconfig: String) {
        let secrets: Api<Secret> = Api::namespaced(self.west.admin.clone(), NS);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("mc-link-east".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            type_: Some("mc.dev/link-credentials".into()),
            data: Some(BTreeMap::from([(
                "kubeconfig".to_string(),
                ByteString(kubeconfig.into_bytes()),
            )])),
            ..Default::default()
        };
        match secrets.get_opt("mc-link-east").await.expect("read secret") {
            None => {
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .expect("secret created");
            }
            Some(old) => {
                let mut next = secret;
                next.metadata.resource_version = old.metadata.resource_version;
                secrets
                    .replace("mc-link-east", &PostParams::default(), &next)
                    .await
                    .expect("secret replaced");
            }
        }
    }

    /// Stops east's control plane (its data stays for a restart).
    pub async fn stop_east(&mut self) {
        self.east.env.stop().await;
    }

    /// Starts east again on the same port with its data.
    pub async fn restart_east(&mut self) {
        self.east.env.restart().await.expect("east restarts");
    }
}

/// Runs a controller against `client` with fast leader-election settings.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn fast_config(identity: &str) -> mc_controller::Config {
    let mut config = mc_controller::Config::new("west", identity);
    config.lease_duration = Duration::from_secs(3);
    config.renew_period = Duration::from_secs(1);
    config.retry_period = Duration::from_millis(300);
    config.status_refresh = Duration::from_secs(1);
    config
}

pub fn start_controller(client: Client, config: mc_controller::Config) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(mc_controller::run(config, client, stop.clone()));
    Running { stop, task }
}

impl Running {
    /// Graceful stop (releases the Lease).
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("controller task")
            .expect("controller ran cleanly");
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An exported (by default) Service with `ports` (name, port).
pub fn service(name: &str, ns: &str, ports: &[(&str, i32)], exported: bool) -> Service {
    let mut labels = json!({"app": name});
    if exported {
        labels["mc.dev/exported"] = json!("true");
    }
    let ports: Vec<_> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "targetPort": p}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"selector": {"app": name}, "ports": ports}
    }))
    .expect("service")
}

/// The (name, port) pairs of a Service.
pub fn ports_of(svc: &Service) -> Vec<(String, i32)> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ps| {
            ps.iter()
                .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                .collect()
        })
        .unwrap_or_default()
}

/// The status of condition `type_` on the Link.
pub async fn condition(west: &Cluster, type_: &str) -> Option<(String, String, String)> {
    let link = west.links().get("east").await.ok()?;
    link.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Logs for failing tests (`RUST_LOG=mc_controller=debug`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
