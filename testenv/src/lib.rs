//! Real Kubernetes control planes for integration tests, envtest-style:
//! etcd, kube-apiserver and (by default) kube-controller-manager on
//! loopback, with a fresh PKI in a temporary directory.
//!
//! The binaries are the ones `lab/components/build.sh` builds: the
//! directory `MC_LAB_COMPONENTS`, else
//! `${MC_LAB_COMPONENTS_CACHE:-/var/cache/mc-lab/components}/current/bin`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = mc_testenv::TestCluster::start(Default::default()).await?;
//! let client = cluster.admin_client();
//! # Ok(()) }
//! ```

mod pki;
mod process;

use std::future::Future;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use pki::Pki;
use process::Component;

/// The binaries a test cluster runs.
const REQUIRED: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];
/// Set (to anything) to keep each cluster's directory, logs included.
pub const KEEP_ENV: &str = "MC_TESTENV_KEEP";
/// How long etcd and the API server have to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a fresh cluster picks new ports when one was taken.
const PORT_ATTEMPTS: usize = 5;
/// How long a restart waits for its old ports to be free again.
const RESTART_PORT_WAIT: Duration = Duration::from_secs(30);
/// Lines of a component's log quoted in a startup error.
const LOG_TAIL: usize = 30;
/// Ports are picked at random below the kernel's ephemeral range (32768
/// and up), so `bind(0)` and outgoing connections never take them.
const PORTS: std::ops::Range<u16> = 20000..32000;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Runs kube-controller-manager (namespace finalization, garbage
    /// collection, default ServiceAccounts, `kube-root-ca.crt`, workload
    /// controllers). Default: on.
    pub controller_manager: bool,
    /// The network address of the `/24` given as
    /// `--service-cluster-ip-range`; default `10.96.0.0`.
    pub service_cidr: Ipv4Addr,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_manager: true,
            service_cidr: Ipv4Addr::new(10, 96, 0, 0),
        }
    }
}

/// Loopback ports of one cluster, fixed once it has started.
#[derive(Clone, Copy, Debug)]
struct Ports {
    api: u16,
    etcd_client: u16,
    etcd_peer: u16,
}

impl Ports {
    fn pick() -> Result<Ports> {
        Ok(Ports {
            api: free_port()?,
            etcd_client: free_port()?,
            etcd_peer: free_port()?,
        })
    }
}

/// A running (or stopped) control plane. Dropping it kills its processes
/// and deletes its directory (unless [`KEEP_ENV`] is set).
pub struct TestCluster {
    options: Options,
    bin: PathBuf,
    dir: tempfile::TempDir,
    pki: Pki,
    ports: Ports,
    admin: Client,
    /// Running components, in start order.
    components: Vec<Component>,
}

/// Why a launch failed: a port was taken (worth another try) or anything else.
enum LaunchError {
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for LaunchError {
    fn from(e: anyhow::Error) -> Self {
        LaunchError::Failed(e)
    }
}

impl LaunchError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            LaunchError::PortTaken(e) | LaunchError::Failed(e) => e,
        }
    }
}

impl TestCluster {
    /// Writes a fresh PKI and starts etcd and kube-apiserver (then
    /// kube-controller-manager, per `options`), on free loopback ports;
    /// returns once the API server answers `/readyz` (the controller
    /// manager takes some seconds more to start its controllers: see
    /// [`TestCluster::wait_for_controller_manager`]).
    pub async fn start(options: Options) -> Result<TestCluster> {
        let bin = components_dir()?;
        let mut dir = tempfile::Builder::new()
            .prefix("mc-testenv-")
            .tempdir()
            .context("creating the cluster directory")?;
        if std::env::var_os(KEEP_ENV).is_some() {
            dir.disable_cleanup(true);
            eprintln!("mc-testenv: keeping {}", dir.path().display());
        }
        let [a, b, c, d] = options.service_cidr.octets();
        let pki = Pki::generate(
            &dir.path().join("pki"),
            Ipv4Addr::new(a, b, c, d.wrapping_add(1)),
        )?;
        create_private_dir(&dir.path().join("logs"))?;
        let ports = Ports::pick()?;
        let admin = admin_client(&pki, ports.api).await?;
        let mut cluster = TestCluster {
            options,
            bin,
            dir,
            pki,
            ports,
            admin,
            components: Vec::new(),
        };
        for attempt in 1.. {
            cluster.reset_etcd()?;
            match cluster.launch().await {
                Ok(()) => break,
                Err(LaunchError::PortTaken(_)) if attempt < PORT_ATTEMPTS => {
                    cluster.stop().await;
                    cluster.ports = Ports::pick()?;
                    cluster.admin = admin_client(&cluster.pki, cluster.ports.api).await?;
                }
                Err(e) => return Err(e.into_inner()).context("starting a test cluster"),
            }
        }
        Ok(cluster)
    }

    /// An admin client (`system:masters`).
    pub fn admin_client(&self) -> Client {
        self.admin.clone()
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        url(self.ports.api)
    }

    /// The API server's port.
    pub fn port(&self) -> u16 {
        self.ports.api
    }

    /// The cluster CA, PEM (what clients verify the API server with).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The cluster's directory (PKI, etcd data, `logs/<component>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig with one context `context` for the administrator
    /// (client certificate inline).
    pub fn admin_kubeconfig_yaml(&self, context: &str) -> String {
        kubeconfig(
            context,
            &self.url(),
            &self.pki.ca_pem,
            &cert_user(&self.pki.admin),
        )
    }

    /// A kubeconfig with one context `context` authenticating with the
    /// bearer `token`.
    pub fn kubeconfig_with_token(&self, context: &str, token: &str) -> String {
        kubeconfig(
            context,
            &self.url(),
            &self.pki.ca_pem,
            &format!("    token: {token}\n"),
        )
    }

    /// Stops every component gracefully (SIGTERM, newest first), keeping
    /// the data for [`TestCluster::restart`].
    pub async fn stop(&mut self) {
        while let Some(component) = self.components.pop() {
            component.stop().await;
        }
    }

    /// Starts the stopped cluster again on the same ports with the same
    /// PKI and data: clients and kubeconfigs handed out before still work.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let deadline = Instant::now() + RESTART_PORT_WAIT;
        loop {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(LaunchError::PortTaken(_)) if Instant::now() < deadline => {
                    self.stop().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    self.stop().await;
                    return Err(e.into_inner()).context("restarting the cluster");
                }
            }
        }
    }

    /// An empty etcd data directory (a fresh cluster's earlier attempt
    /// may have left data naming other ports).
    fn reset_etcd(&self) -> Result<()> {
        let path = self.dir.path().join("etcd");
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
        create_private_dir(&path)
    }

    /// Waits until kube-controller-manager works: it has made the
    /// `default` ServiceAccount (some seconds after [`TestCluster::start`]).
    pub async fn wait_for_controller_manager(&mut self) -> Result<()> {
        if !self.options.controller_manager {
            bail!("this cluster runs no kube-controller-manager");
        }
        let admin = self.admin.clone();
        self.wait_ready("the default ServiceAccount", || {
            default_service_account(admin.clone())
        })
        .await
        .map_err(LaunchError::into_inner)
    }

    /// Starts etcd, kube-apiserver and maybe kube-controller-manager on
    /// `self.ports`, each once the previous one is ready (the controller
    /// manager is only started).
    async fn launch(&mut self) -> Result<(), LaunchError> {
        let etcd_args = self.etcd_args();
        self.spawn("etcd", &etcd_args)?;
        let etcd = self.ports.etcd_client;
        self.wait_ready("etcd", || etcd_healthy(etcd)).await?;
        let apiserver_args = self.apiserver_args();
        self.spawn("kube-apiserver", &apiserver_args)?;
        let admin = self.admin.clone();
        self.wait_ready("kube-apiserver", || api_ready(admin.clone()))
            .await?;
        if self.options.controller_manager {
            let kcm_args = self.controller_manager_args()?;
            self.spawn("kube-controller-manager", &kcm_args)?;
        }
        Ok(())
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> Result<()> {
        let log = self.dir.path().join("logs").join(format!("{name}.log"));
        let component = Component::spawn(name, &self.bin, args, self.dir.path(), &log)?;
        self.components.push(component);
        Ok(())
    }

    /// Polls `ready` until it answers true, failing (with the log's tail)
    /// as soon as any component has exited.
    async fn wait_ready<F, Fut>(&mut self, what: &str, mut ready: F) -> Result<(), LaunchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for component in &mut self.components {
                if let Some(status) = component.exited() {
                    let tail = component.log_tail(LOG_TAIL);
                    let error = anyhow!(
                        "{} exited ({status}) while waiting for {what}; the end of its log:\n{tail}",
                        component.name()
                    );
                    return Err(if tail.contains("address already in use") {
                        LaunchError::PortTaken(error)
                    } else {
                        LaunchError::Failed(error)
                    });
                }
            }
            let last = match ready().await {
                Ok(true) => return Ok(()),
                Ok(false) => "not yet".to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                let tails: Vec<String> = self
                    .components
                    .iter()
                    .map(|c| format!("--- {}:\n{}", c.name(), c.log_tail(LOG_TAIL)))
                    .collect();
                return Err(LaunchError::Failed(anyhow!(
                    "{what} was not ready within {READY_TIMEOUT:?} ({last}); the end of the logs:\n{}",
                    tails.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn etcd_args(&self) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        vec![
            "--name=testenv".into(),
            format!("--data-dir={}", self.dir.path().join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=testenv={peer}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]
    }

    fn apiserver_args(&self) -> Vec<String> {
        let pki = &self.pki;
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.api),
            format!("--tls-cert-file={}", pki.file("apiserver.crt")),
            format!("--tls-private-key-file={}", pki.file("apiserver.key")),
            format!("--client-ca-file={}", pki.file("ca.crt")),
            format!(
                "--service-cluster-ip-range={}/24",
                self.options.service_cidr
            ),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki.file("sa.pub")),
            format!("--service-account-signing-key-file={}", pki.file("sa.key")),
            "--authorization-mode=Node,RBAC".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]
    }

    fn controller_manager_args(&self) -> Result<Vec<String>> {
        let pki = &self.pki;
        let path = self
            .dir
            .path()
            .join("pki")
            .join("kube-controller-manager.kubeconfig");
        mc_kubeparts::write_private(
            &path,
            &kubeconfig(
                "kube-controller-manager",
                &self.url(),
                &pki.ca_pem,
                &cert_user(&pki.controller_manager),
            ),
        )?;
        let kubeconfig = path.display();
        Ok(vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=true".into(),
            "--controllers=*".into(),
            format!("--service-account-private-key-file={}", pki.file("sa.key")),
            format!("--root-ca-file={}", pki.file("ca.crt")),
            format!("--cluster-signing-cert-file={}", pki.file("ca.crt")),
            format!("--cluster-signing-key-file={}", pki.file("ca.key")),
            "--profiling=false".into(),
            "--v=1".into(),
        ])
    }
}

/// Whether etcd answers `/health` with `"health":"true"`.
async fn etcd_healthy(port: u16) -> Result<bool> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    Ok(text.contains("\"health\":\"true\""))
}

/// Whether the API server answers `/readyz` with `ok`.
async fn api_ready(admin: Client) -> Result<bool> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    let body = admin.request_text(request).await?;
    Ok(body.trim() == "ok")
}

/// Whether kube-controller-manager has made ServiceAccount `default/default`.
async fn default_service_account(admin: Client) -> Result<bool> {
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(admin, "default");
    Ok(api.get_opt("default").await?.is_some())
}

/// The components directory (see the crate documentation); fails saying
/// how to build the binaries when one is missing.
pub fn components_dir() -> Result<PathBuf> {
    mc_kubeparts::components_dir(&REQUIRED)
}

/// A random loopback port that is free now (see [`PORTS`]).
fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let port = rand::random_range(PORTS);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port in {PORTS:?}")
}

fn url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// The `user:` lines of a client-certificate user.
fn cert_user(cert: &mc_kubeparts::CertPair) -> String {
    format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(&cert.cert_pem),
        STANDARD.encode(&cert.key_pem)
    )
}

/// A kubeconfig whose cluster, user and context are all named `context`.
fn kubeconfig(context: &str, server: &str, ca_pem: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {context}\n  user:\n{user}contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\ncurrent-context: {context}\n",
        ca = STANDARD.encode(ca_pem),
    )
}

async fn admin_client(pki: &Pki, port: u16) -> Result<Client> {
    client(&kubeconfig(
        "admin",
        &url(port),
        &pki.ca_pem,
        &cert_user(&pki.admin),
    ))
    .await
}

async fn client(kubeconfig: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).context("parsing a kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("a client configuration")?;
    Client::try_from(config).context("building a client")
}

fn create_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("creating {}", path.display()))
}
