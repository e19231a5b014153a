//! mc-controller: per-Link service mirroring, gateway probes and Link
//! status, run by the leader among the controller's replicas.
//!
//! [`run`] is the whole controller: admin server, leader election on the
//! Lease `<namespace>/mc-controller`, and (while leading) the Link
//! supervisor with one mirror loop and one gateway prober per Link, and the
//! certificate signer ([`signer`]). The binary only parses flags and builds
//! the Kubernetes client.

pub mod cache;
pub mod cleanup;
pub mod config;
pub mod context;
pub mod leader;
pub mod links;
pub mod metrics;
pub mod mirror;
pub mod probe;
pub mod remote;
pub mod signer;
pub mod status;
pub mod sync;
pub mod task;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use mc_admin::{AdminState, Readiness};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Loop};

use crate::context::Context;
use crate::leader::{Elector, LeaderConfig};
use crate::metrics::Metrics;
use crate::task::Task;

/// Name under which the controller reports Events.
pub const CONTROLLER_NAME: &str = "mc-controller";

/// Runs the controller until `shutdown` is cancelled: stops the loops
/// (mirrors stay), then releases the Lease so a standby takes over at once.
pub async fn run(config: Config, client: Client, shutdown: CancellationToken) -> Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let readiness = Readiness::new();
    let _admin = match config.admin_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin server to {addr}"))?;
            let state = AdminState::new(registry, readiness.clone());
            Some(Task(tokio::spawn(async move {
                if let Err(error) = mc_admin::serve_on(listener, state).await {
                    tracing::error!(error = format!("{error:#}"), "admin server stopped");
                }
            })))
        }
        None => None,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance: Some(config.identity.clone()),
        },
    );
    let ctx = Context {
        client: client.clone(),
        recorder,
        metrics: metrics.clone(),
        config: Arc::new(config.clone()),
    };
    let elector = Elector::new(
        client,
        LeaderConfig {
            namespace: config.namespace.clone(),
            lease_name: config.lease_name.clone(),
            identity: config.identity.clone(),
            lease_duration: config.lease_duration,
            renew_period: config.renew_period,
            retry_period: config.retry_period,
        },
    );
    let (leading_tx, mut leading) = watch::channel(false);
    let stop_election = CancellationToken::new();
    // Aborted if this future is dropped, so a dropped controller stops renewing.
    let mut election = Task(tokio::spawn(elector.run(
        leading_tx,
        stop_election.clone(),
        move || readiness.set(true),
    )));
    tracing::info!(identity = %config.identity, cluster = %config.cluster_name, "controller started");

    let mut supervisor: Option<Vec<Task<()>>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.changed() => {
                if changed.is_err() {
                    break;
                }
                let leads = *leading.borrow_and_update();
                metrics.leader(leads);
                supervisor = leads.then(|| {
                    config
                        .loops
                        .iter()
                        .map(|part| match part {
                            Loop::Links => Task(tokio::spawn(links::supervise(ctx.clone()))),
                            Loop::Signer => Task(tokio::spawn(signer::run(ctx.clone()))),
                        })
                        .collect::<Vec<_>>()
                });
            }
        }
    }
    // Stop mirroring before another instance can lead.
    drop(supervisor);
    stop_election.cancel();
    (&mut election.0)
        .await
        .context("leader election task failed")?;
    metrics.leader(false);
    tracing::info!("controller stopped");
    Ok(())
}
