//! Two in-process API emulators, east and west, linked the way
//! `kubectl mc link` links them: a read-only ServiceAccount in east, its
//! token in a kubeconfig Secret in west, and a Link in west. The controller
//! runs in-process against west.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, CustomResourceExt};
use mc_api::Link;
use mc_emulator::{Emulator, EmulatorConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub const NS: &str = "mc-system";
pub const READER: &str = "mc-link-reader";

/// One emulated cluster and its admin client.
pub struct Cluster {
    pub emu: Emulator,
    pub admin: Client,
    pub root: PathBuf,
}

/// The emulator configuration of the tests: loopback, fast bookmarks.
pub fn emu_config(root: &Path, port: u16, persist: bool) -> EmulatorConfig {
    let mut cfg = EmulatorConfig::new(
        format!("127.0.0.1:{port}").parse().expect("address"),
        root.join("pki"),
    );
    cfg.bookmark_interval = Duration::from_millis(200);
    cfg.service_cidr = "10.96.0.0/24".parse().expect("cidr");
    cfg.node_port_range = 30000..=30010;
    if persist {
        cfg.data_dir = Some(root.join("data"));
    }
    cfg
}

pub async fn client_from_yaml(yaml: &str) -> Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(cfg).expect("client")
}

impl Cluster {
    /// Starts an emulator over `root` (pki and, with `persist`, data).
    pub async fn start(root: &Path, port: u16, persist: bool) -> Cluster {
        let emu = Emulator::start(emu_config(root, port, persist))
            .await
            .expect("emulator starts");
        let admin = client_from_yaml(&emu.admin_kubeconfig("admin")).await;
        Cluster {
            emu,
            admin,
            root: root.to_path_buf(),
        }
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
    pub dir: tempfile::TempDir,
    pub east_port: u16,
}

impl Pair {
    /// Starts both clusters (east persisting when `persist_east`) and links them.
    pub async fn linked(persist_east: bool, tweak: impl FnOnce(&mut serde_json::Value)) -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        let east_port = free_port();
        let east = Cluster::start(&dir.path().join("east"), east_port, persist_east).await;
        let west = Cluster::start(&dir.path().join("west"), 0, false).await;
        let pair = Pair {
            east,
            west,
            dir,
            east_port,
        };
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

    async fn install_crd(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.west.admin.clone());
        crds.create(&PostParams::default(), &Link::crd())
            .await
            .expect("Link CRD");
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
        let kubeconfig = self.east.emu.kubeconfig_with_token("east", token);
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

    /// Shuts east down (its state stays in its data dir).
    pub async fn stop_east(self) -> (PathBuf, Cluster, tempfile::TempDir, u16) {
        let root = self.east.root.clone();
        self.east.emu.shutdown().await;
        (root, self.west, self.dir, self.east_port)
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
