//! Two in-process API emulators (east, west), one kubeconfig holding both
//! contexts, and a runner for the real `kubectl-mc` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mc_emulator::{Emulator, EmulatorConfig};

/// Two emulators and a kubeconfig with contexts `east` and `west`.
pub struct Clusters {
    pub east: Emulator,
    pub west: Emulator,
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

async fn start(
    dir: &Path,
    name: &str,
    cidr: &str,
    ports: std::ops::RangeInclusive<u16>,
) -> Emulator {
    let mut cfg = EmulatorConfig::new(
        "127.0.0.1:0".parse().expect("static address"),
        dir.join(name),
    );
    cfg.bookmark_interval = Duration::from_millis(200);
    cfg.service_cidr = cidr.parse().expect("static cidr");
    cfg.node_port_range = ports;
    Emulator::start(cfg).await.expect("emulator starts")
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
    /// Starts east and west; the kubeconfig's current context is east.
    pub async fn start() -> Clusters {
        let dir = tempfile::tempdir().expect("temp dir");
        let east = start(dir.path(), "east", "10.96.0.0/24", 30000..=30010).await;
        let west = start(dir.path(), "west", "10.97.0.0/24", 30020..=30030).await;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            merge(
                &east.admin_kubeconfig("east"),
                &west.admin_kubeconfig("west"),
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

/// Parses a multi-document YAML stream into its documents.
pub fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML document"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}
