//! Starting an emulator in-process and building kube-rs clients for it.
#![allow(dead_code)]

use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mc_emulator::{Emulator, EmulatorConfig};

/// A running emulator with its temp dirs (removed on drop).
pub struct TestEmu {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
}

/// The configuration used by tests: loopback, a free port, fast bookmarks.
pub fn test_config(dir: &std::path::Path) -> EmulatorConfig {
    let mut cfg = EmulatorConfig::new(
        "127.0.0.1:0".parse().expect("static address"),
        dir.join("pki"),
    );
    cfg.bookmark_interval = Duration::from_millis(200);
    cfg.service_cidr = "10.96.0.0/24".parse().expect("static cidr");
    cfg.node_port_range = 30000..=30010;
    cfg
}

/// Starts an emulator with [`test_config`], adjusted by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> TestEmu {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(dir.path());
    tweak(&mut cfg);
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    TestEmu { emu, dir }
}

/// Starts an emulator with the test defaults.
pub async fn start() -> TestEmu {
    start_with(|_| {}).await
}

/// A kube client from a kubeconfig YAML.
pub async fn client_from_yaml(yaml: &str) -> Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    Client::try_from(cfg).expect("client")
}

impl TestEmu {
    /// A client for the admin (client certificate in system:masters).
    pub async fn admin(&self) -> Client {
        client_from_yaml(&self.emu.admin_kubeconfig("test")).await
    }

    /// A client authenticating with a bearer token.
    pub async fn with_token(&self, token: &str) -> Client {
        client_from_yaml(&self.emu.kubeconfig_with_token("test", token)).await
    }

    /// A client with a fresh client certificate for `user` in `groups`.
    pub async fn with_cert(&self, user: &str, groups: &[&str]) -> Client {
        let (c, k) = self
            .emu
            .issue_client_cert(user, groups)
            .expect("client cert");
        client_from_yaml(&self.emu.kubeconfig_with_cert("test", &c, &k)).await
    }
}

/// The HTTP status code of a kube error response, or panics with the error.
pub fn status_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The whole Status of a kube error response.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
