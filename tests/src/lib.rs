//! The shared fixture of the end-to-end tests: a lab built by the real
//! `mc-lab` binary, removed again when the fixture drops.
//!
//! The tests need root and the built binaries: run `cargo build` (or at
//! least `cargo build -p mc-lab`) before `cargo test -p mc-e2e`. The binary
//! is found next to the test executable's `target/<profile>/` directory, or
//! at `$MC_LAB_BIN`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod caller;
pub mod mesh;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Path of the built `mc-lab` binary.
pub fn mc_lab_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MC_LAB_BIN") {
        return Ok(PathBuf::from(path));
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not inside target/<profile>/deps")?;
    let bin = profile_dir.join("mc-lab");
    if !bin.exists() {
        bail!(
            "{} does not exist: run `cargo build -p mc-lab` before the tests (or set MC_LAB_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Path of another built binary of the workspace (`kubectl-mc`,
/// `mc-controller`, ...), next to `mc-lab`.
pub fn built_bin(name: &str) -> Result<PathBuf> {
    let bin = mc_lab_bin()?.with_file_name(name);
    if !bin.exists() {
        bail!(
            "{} does not exist: run `cargo build` before the tests",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running lab; `mc-lab down` runs when it drops.
pub struct Lab {
    /// Lab name (unique per test).
    pub name: String,
    /// Cluster names.
    pub clusters: Vec<String>,
    /// The lab's kubeconfig, one context per cluster.
    pub kubeconfig: PathBuf,
    bin: PathBuf,
    down: bool,
}

impl Lab {
    /// Brings up a lab with `clusters` of `nodes_per_cluster` nodes each,
    /// under a name unique to this process and call, with kube-proxy in
    /// its default (nftables) mode.
    pub fn up(clusters: &[&str], nodes_per_cluster: usize) -> Result<Lab> {
        Lab::up_with_proxy(clusters, nodes_per_cluster, "nftables")
    }

    /// [`Lab::up`] with kube-proxy in `proxy_mode` (`nftables` or `iptables`).
    pub fn up_with_proxy(
        clusters: &[&str],
        nodes_per_cluster: usize,
        proxy_mode: &str,
    ) -> Result<Lab> {
        let bin = mc_lab_bin()?;
        let name = format!(
            "t{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            name,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            kubeconfig: PathBuf::new(),
            bin,
            // Clean up even when `up` fails half-way.
            down: false,
        };
        let out = lab.mc_lab(&[
            "up",
            "--clusters",
            &clusters.join(","),
            "--nodes-per-cluster",
            &nodes_per_cluster.to_string(),
            "--proxy-mode",
            proxy_mode,
        ])?;
        if !out.status.success() {
            bail!("mc-lab up failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = lab.mc_lab(&["kubeconfig"])?;
        lab.kubeconfig = PathBuf::from(String::from_utf8_lossy(&path.stdout).trim());
        Ok(lab)
    }

    /// Runs `mc-lab --lab <name> args...` and returns its output.
    pub fn mc_lab(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .arg("--lab")
            .arg(&self.name)
            .args(args)
            .output()
            .with_context(|| format!("running mc-lab {}", args.join(" ")))
    }

    /// Runs `kubectl-mc --kubeconfig <the lab's> args...` as a user would
    /// (with the lab's binaries first on PATH) and returns its output.
    pub fn kubectl_mc(&self, args: &[&str]) -> Result<Output> {
        let bin = built_bin("kubectl-mc")?;
        Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .with_context(|| format!("running kubectl-mc {}", args.join(" ")))
    }

    /// Runs the lab's real `kubectl --kubeconfig <the lab's> args...` with
    /// `stdin` on its standard input and returns its output.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> Result<Output> {
        use std::io::Write;
        let components = self.state()?["components"]
            .as_str()
            .context("the lab's state names no components directory")?
            .to_string();
        let mut child = Command::new(Path::new(&components).join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(stdin.as_bytes())?;
        child.wait_with_output().context("waiting for kubectl")
    }

    /// `mc-lab apply -f - --cluster <cluster> [extra...]` with `yaml` on
    /// standard input; fails with mc-lab's message when it fails.
    pub fn apply(&self, cluster: &str, yaml: &str, extra: &[&str]) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .arg("--lab")
            .arg(&self.name)
            .args(["apply", "-f", "-", "--cluster", cluster])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running mc-lab apply")?;
        child
            .stdin
            .take()
            .context("mc-lab apply has no stdin")?
            .write_all(yaml.as_bytes())
            .context("writing the manifest to mc-lab apply")?;
        let out = child
            .wait_with_output()
            .context("waiting for mc-lab apply")?;
        if !out.status.success() {
            bail!(
                "mc-lab apply to {cluster} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a pod (`cluster/ns/name`) with `labels` (`k=v,...`) on `node`
    /// (or the least loaded one), ready once `ready_port` accepts; returns
    /// its IP.
    pub fn run_pod(
        &self,
        pod: &str,
        labels: &str,
        node: Option<&str>,
        ready_port: Option<u16>,
        command: &[&str],
    ) -> Result<String> {
        self.run_pod_as(pod, "default", labels, node, ready_port, command)
    }

    /// [`Lab::run_pod`] under ServiceAccount `service_account` (created
    /// when missing).
    pub fn run_pod_as(
        &self,
        pod: &str,
        service_account: &str,
        labels: &str,
        node: Option<&str>,
        ready_port: Option<u16>,
        command: &[&str],
    ) -> Result<String> {
        let mut args = vec![
            "pod",
            "run",
            pod,
            "--labels",
            labels,
            "--service-account",
            service_account,
        ];
        if let Some(node) = node {
            args.extend(["--node", node]);
        }
        let port = ready_port.map(|p| p.to_string());
        if let Some(port) = &port {
            args.extend(["--ready-port", port]);
        }
        args.push("--");
        args.extend(command);
        let out = self.mc_lab(&args)?;
        if !out.status.success() {
            bail!(
                "mc-lab pod run {pod} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts the built-in echo server (HTTP 8080, TCP 9000) as a ready pod.
    pub fn run_echo(&self, pod: &str, labels: &str, node: Option<&str>) -> Result<String> {
        self.run_pod(pod, labels, node, Some(8080), &["mc-lab", "echo"])
    }

    /// Deletes a pod and waits until the kubelet removed it.
    pub fn delete_pod(&self, pod: &str) -> Result<()> {
        let out = self.mc_lab(&["pod", "delete", pod])?;
        if !out.status.success() {
            bail!(
                "mc-lab pod delete {pod} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs a command in a pod.
    pub fn exec(&self, pod: &str, command: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", pod, "--"];
        args.extend(command);
        self.mc_lab(&args)
    }

    /// From inside `pod`, sends `send` to `addr` over TCP and returns the
    /// answer, or an error when no connection could be made.
    pub fn tcp_from(&self, pod: &str, addr: &str, send: &str) -> Result<String> {
        let out = self.exec(
            pod,
            &[
                "mc-lab",
                "tcp-client",
                addr,
                "--send",
                send,
                "--timeout",
                "2",
            ],
        )?;
        if !out.status.success() {
            bail!(
                "{pod} -> {addr}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An HTTP GET of `/` on `addr` from inside `pod`; the response text.
    pub fn http_from(&self, pod: &str, addr: &str) -> Result<String> {
        self.tcp_from(pod, addr, "GET / HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n")
    }

    /// A client for cluster `cluster`, as the user's shell gets it.
    pub async fn client(&self, cluster: &str) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .context("reading the lab kubeconfig")?;
        let options = kube::config::KubeConfigOptions {
            context: Some(cluster.to_string()),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .context("kube config")?;
        kube::Client::try_from(config).context("kube client")
    }

    /// A client for cluster `cluster` authenticated as ServiceAccount
    /// `namespace/name`, with a token minted through TokenRequest (what a
    /// pod running as that account holds).
    pub async fn client_as(
        &self,
        cluster: &str,
        namespace: &str,
        name: &str,
    ) -> Result<kube::Client> {
        let admin = self.client(cluster).await?;
        let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(admin, namespace);
        let request =
            serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 3600}}))?;
        let token = accounts
            .create_token_request(name, &Default::default(), &request)
            .await
            .with_context(|| format!("minting a token for {namespace}/{name}"))?
            .status
            .context("TokenRequest without status")?
            .token;
        let lab_config = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .context("reading the lab kubeconfig")?;
        let entry = lab_config
            .clusters
            .iter()
            .find(|c| c.name == cluster)
            .and_then(|c| c.cluster.clone())
            .with_context(|| format!("no cluster {cluster} in the lab kubeconfig"))?;
        // JSON is YAML: a kubeconfig with the same server and CA, and the token.
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": cluster, "cluster": {
                "server": entry.server,
                "certificate-authority-data": entry.certificate_authority_data,
            }}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": name}}],
            "current-context": cluster,
        });
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig.to_string())
            .context("the account's kubeconfig")?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .context("kube config")?;
        kube::Client::try_from(config).context("kube client")
    }

    /// The lab's `state.json`.
    pub fn state(&self) -> Result<serde_json::Value> {
        let path = PathBuf::from("/run/mc-lab")
            .join(&self.name)
            .join("state.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).context("parsing state.json")
    }

    /// The output of pod `ns/pod` of `cluster` so far (its log file; empty
    /// when the pod has not written anything yet).
    pub fn pod_log(&self, cluster: &str, namespace: &str, pod: &str) -> String {
        let path = PathBuf::from("/run/mc-lab")
            .join(&self.name)
            .join("logs")
            .join(cluster)
            .join(format!("{namespace}_{pod}.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Runs `mc-lab down` now (Drop then does nothing).
    pub fn down(&mut self) -> Result<()> {
        self.down = true;
        let out = self.mc_lab(&["down"])?;
        if !out.status.success() {
            bail!(
                "mc-lab down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Lab {
    /// Removes the lab, unless `MC_E2E_KEEP_LAB` is set (for debugging a
    /// failed test: `mc-lab --lab <name> status`, then `down`).
    fn drop(&mut self) {
        if std::env::var_os("MC_E2E_KEEP_LAB").is_some() {
            eprintln!("keeping lab {} (MC_E2E_KEEP_LAB is set)", self.name);
            return;
        }
        if !self.down {
            let _ = self.mc_lab(&["down"]);
        }
    }
}

/// Retries `check` until it returns `Ok` or `timeout` passes; the last
/// error explains a timeout.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!("still failing after {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
