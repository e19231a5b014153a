//! A Kubernetes API server emulator for the lab and the tests: HTTPS, the
//! real status codes, resourceVersion and watch semantics, CRDs with schema
//! validation, RBAC and Service IP allocation. The product never depends on it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mc_emulator::{Emulator, EmulatorConfig};
//! let cfg = EmulatorConfig::new("127.0.0.1:0".parse()?, "/tmp/pki".into());
//! let emu = Emulator::start(cfg).await?;
//! let kubeconfig_yaml = emu.admin_kubeconfig("lab");
//! # let _ = kubeconfig_yaml;
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admission;
pub mod auth;
pub mod authz;
pub mod config;
pub mod controllers;
pub mod discovery;
pub mod errors;
pub mod handlers;
pub mod openapi;
pub mod persist;
pub mod pki;
pub mod rbac;
pub mod request;
pub mod resources;
pub mod scale;
pub mod schema;
pub mod selector;
pub mod server;
pub mod service;
pub mod shared;
pub mod state;
pub mod store;
pub mod table;
pub mod validation;
pub mod watch;
pub mod workloads;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::task::JoinHandle;

pub use config::EmulatorConfig;

use crate::auth::TokenSigner;
use crate::pki::Pki;
use crate::resources::Registry;
use crate::service::ServiceAllocator;
use crate::shared::Shared;
use crate::state::{Env, State};
use crate::store::Store;

/// A running emulator. Dropping it without [`Emulator::shutdown`] leaves its tasks running.
pub struct Emulator {
    local_addr: SocketAddr,
    advertise: SocketAddr,
    cluster_name: String,
    pki: Pki,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn restore(cfg: &EmulatorConfig) -> Result<Store> {
    let snapshot = match &cfg.data_dir {
        Some(dir) => persist::load(dir)?,
        None => None,
    };
    Ok(match snapshot {
        Some(s) => Store::from_snapshot(s, cfg.history_len),
        None => Store::new(cfg.history_len),
    })
}

impl Emulator {
    /// Starts serving: binds, loads or creates the PKI in `pki_dir`, restores
    /// the store from `data_dir`, creates the bootstrap objects and writes
    /// `<pki_dir>/kubeconfig` for the admin.
    pub async fn start(mut config: EmulatorConfig) -> Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        if config.advertise.port() == 0 {
            config.advertise.set_port(local_addr.port());
        }
        if config.advertise.ip().is_unspecified() {
            let ip = if local_addr.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                local_addr.ip()
            };
            config.advertise.set_ip(ip);
        }
        let pki = Pki::load_or_create(&config.pki_dir, &config.cluster_name, &config.sans())?;
        let tls = pki.server_config()?;
        let env = Arc::new(Env {
            signer: TokenSigner::new(&pki.sa_signing_key, config.api_audience()),
            ca_pem: pki.ca_cert_pem.clone(),
        });
        let store = restore(&config)?;
        let mut registry = Registry::builtin();
        let mut services =
            ServiceAllocator::new(config.service_cidr, config.node_port_range.clone());
        for (res, obj) in store.all() {
            match (res.0.as_str(), res.1.as_str()) {
                ("apiextensions.k8s.io", "customresourcedefinitions") => {
                    if let Some(ri) = resources::from_crd(obj) {
                        registry.insert(ri);
                    }
                }
                ("", "services") => services.restore(obj),
                _ => {}
            }
        }
        let mut state = State::new(store, registry, services, env.clone());
        controllers::bootstrap(&mut state, &config);
        controllers::reconcile(&mut state);
        let shared = Arc::new(Shared::new(state, config.clone(), env));
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(server::serve(
                listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
                shared.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(controllers::run(shared.clone(), stop_rx.clone())),
        ];
        if let Some(dir) = &config.data_dir {
            persist::write_now(&shared, dir)?;
            tasks.push(tokio::spawn(persist::run(
                shared.clone(),
                dir.clone(),
                stop_rx,
            )));
        }
        let emu = Emulator {
            local_addr,
            advertise: config.advertise,
            cluster_name: config.cluster_name.clone(),
            pki,
            shared,
            stop,
            tasks,
        };
        let kubeconfig_path = config.pki_dir.join(pki::KUBECONFIG);
        std::fs::write(&kubeconfig_path, emu.admin_kubeconfig(&config.cluster_name))
            .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
        tracing::info!(addr = %local_addr, advertise = %config.advertise, "API emulator serving");
        Ok(emu)
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://<advertise address>`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.advertise)
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_cert_pem
    }

    /// A kubeconfig (YAML) for the admin user (client certificate in `system:masters`),
    /// with cluster, user and context all named `context`.
    pub fn admin_kubeconfig(&self, context: &str) -> String {
        self.kubeconfig_with_cert(context, &self.pki.admin_cert_pem, &self.pki.admin_key_pem)
    }

    /// A kubeconfig (YAML) authenticating with the given client certificate and key.
    pub fn kubeconfig_with_cert(&self, context: &str, cert_pem: &str, key_pem: &str) -> String {
        let user = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            STANDARD.encode(cert_pem),
            STANDARD.encode(key_pem)
        );
        self.kubeconfig(context, &user)
    }

    /// A kubeconfig (YAML) authenticating with a bearer token.
    pub fn kubeconfig_with_token(&self, context: &str, token: &str) -> String {
        self.kubeconfig(context, &format!("    token: {token}\n"))
    }

    fn kubeconfig(&self, context: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {context}\n  user:\n{user}contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\ncurrent-context: {context}\n",
            server = self.server_url(),
            ca = STANDARD.encode(&self.pki.ca_cert_pem),
        )
    }

    /// Issues a client certificate from the cluster CA (user `cn`, groups `orgs`): (cert PEM, key PEM).
    pub fn issue_client_cert(&self, cn: &str, orgs: &[&str]) -> Result<(String, String)> {
        self.pki.issue_client_cert(cn, orgs)
    }

    /// The cluster name from the configuration.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// Stops serving: closes the listener and every connection, and writes a
    /// last snapshot when persistence is on.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "emulator task ended abnormally");
            }
        }
        drop(self.shared);
    }
}
