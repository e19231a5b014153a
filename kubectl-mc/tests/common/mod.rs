//! Two real control planes (east, west; `mc-testenv`), one kubeconfig
//! holding both contexts, and a runner for the real `kubectl-mc` binary.
#![allow(dead_code)]

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mc_testenv::{Options, TestCluster};

/// Two clusters and a kubeconfig with contexts `east` and `west`.
pub struct Clusters {
    pub east: TestCluster,
    pub west: TestCluster,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    pub fn failed(self) -> Run {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A cluster whose Services get addresses from `10.<second>.0.0/24`.
async fn start(second: u8, controller_manager: bool) -> TestCluster {
    TestCluster::start(Options {
        controller_manager,
        service_cidr: Ipv4Addr::new(10, second, 0, 0),
    })
    .await
    .expect("test cluster starts")
}

fn merge(a: &str, b: &str) -> String {
    let mut first: serde_yaml::Value = serde_yaml::from_str(a).expect("kubeconfig parses");
    let second: serde_yaml::Value = serde_yaml::from_str(b).expect("kubeconfig parses");
    for key in ["clusters", "users", "contexts"] {
        let extra = second[key].as_sequence().cloned().unwrap_or_default();
        first[key].as_sequence_mut().expect("list").extend(extra);
    }
    serde_yaml::to_string(&first).expect("kubeconfig renders")
}

impl Clusters {
    /// Starts east and west, each with kube-controller-manager; the
    /// kubeconfig's current context is east.
    pub async fn start() -> Clusters {
        Clusters::start_with(true).await
    }

    /// Starts east and west, with kube-controller-manager or without (then
    /// nothing rewrites the status of Deployments and DaemonSets a test
    /// writes in place of kubelets).
    pub async fn start_with(controller_manager: bool) -> Clusters {
        let dir = tempfile::tempdir().expect("temp dir");
        let (east, west) =
            tokio::join!(start(96, controller_manager), start(97, controller_manager));
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            merge(
                &east.admin_kubeconfig_yaml("east"),
                &west.admin_kubeconfig_yaml("west"),
            ),
        )
        .expect("kubeconfig written");
        Clusters {
            east,
            west,
            dir,
            kubeconfig,
        }
    }

    /// Runs `kubectl-mc --kubeconfig <both> args...` in the temp dir.
    pub async fn mc(&self, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-mc"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .await
            .expect("kubectl-mc runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// An admin client for a context.
    pub async fn client(&self, context: &str) -> Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let cfg = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .expect("config");
        Client::try_from(cfg).expect("client")
    }

    /// The shared trust anchor directory.
    pub fn identity_dir(&self) -> PathBuf {
        self.dir.path().join("anchor")
    }

    /// Installs mc in east and west with one shared anchor.
    pub async fn install_both(&self) {
        let dir = self.identity_dir();
        let dir = dir.to_str().expect("utf-8 path");
        self.mc(&["identity", "init", "--out", dir]).await.ok();
        for ctx in ["east", "west"] {
            self.mc(&[
                "--context",
                ctx,
                "install",
                "--cluster-name",
                ctx,
                "--identity-dir",
                dir,
                "--apply",
            ])
            .await
            .ok();
        }
    }

    /// `link` in print mode: east's credentials and Link for west, with a
    /// fixed gateway address, plus `extra` flags; must succeed.
    pub async fn print_link_east_from_west(&self, address: &str, extra: &[&str]) -> Run {
        let mut args = link_east_args(address, &["--from-cluster", "west"]);
        args.extend_from_slice(extra);
        self.mc(&args).await.ok()
    }

    /// Links west to east, with a fixed gateway address.
    pub async fn link_west_to_east(&self, address: &str) {
        self.mc(&link_east_args(address, &["--apply-to", "west"]))
            .await
            .ok();
    }
}

/// `--context east link --cluster-name east --gateway-address ADDRESS`,
/// then `rest`.
pub fn link_east_args<'a>(address: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--context",
        "east",
        "link",
        "--cluster-name",
        "east",
        "--gateway-address",
        address,
    ];
    args.extend_from_slice(rest);
    args
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
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses a multi-document YAML stream into its documents.
pub fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}
