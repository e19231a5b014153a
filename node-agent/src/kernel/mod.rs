//! Kernel side of the node agent: catches connections to mirrored Service
//! addresses with nftables (notrack + TPROXY + mark) and delivers them to the
//! agent's transparent listener with policy routing.
//!
//! Everything acts on the network namespace of the calling thread (the
//! netlink socket is opened and `nft` is started from it).

mod config;
mod mirror_set;
pub mod nft;
pub mod route;

use anyhow::{Context, Result};
use tracing::info;

pub use config::{
    DEFAULT_FWMARK, DEFAULT_LISTEN, DEFAULT_ROUTE_TABLE, DEFAULT_RULE_PRIORITY, KernelConfig,
};
pub use mirror_set::MirrorSet;

/// Programs the node so that exactly a given [`MirrorSet`] is intercepted.
#[derive(Debug, Clone)]
pub struct Interceptor {
    config: KernelConfig,
}

impl Interceptor {
    /// Checks `config`; nothing is programmed until [`Interceptor::apply`].
    pub fn new(config: KernelConfig) -> Result<Self> {
        config
            .validate()
            .context("invalid kernel interception settings")?;
        Ok(Self { config })
    }

    /// The settings this interceptor programs.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    /// Makes the node intercept exactly `mirrors` (the full desired state).
    ///
    /// Reconciles policy routing first (adds what is missing, removes stale
    /// mc entries), then replaces mc's nftables table in one atomic
    /// transaction. Idempotent: applying the same set twice changes nothing.
    pub async fn apply(&self, mirrors: &MirrorSet) -> Result<()> {
        route::reconcile(&self.config)
            .await
            .context("reconciling mc's policy routing")?;
        nft::run_script(&nft::render(&self.config, mirrors))
            .await
            .context("replacing mc's nftables table")?;
        info!(mirrors = mirrors.len(), "kernel interception applied");
        Ok(())
    }

    /// Removes everything mc added on this node; see [`cleanup`].
    pub async fn cleanup(&self) -> Result<()> {
        cleanup().await
    }
}

/// Removes everything any run of the agent added on this node (its nftables
/// table, and rules and routes tagged [`route::RTPROT_MC`]) and nothing else.
/// Needs no settings, so it also cleans up after a run with other flags.
pub async fn cleanup() -> Result<()> {
    // Stop marking packets before the routes that deliver them go away.
    nft::run_script(&nft::render_removal())
        .await
        .context("removing mc's nftables table")?;
    route::remove_all()
        .await
        .context("removing mc's policy routing")?;
    info!("kernel interception removed");
    Ok(())
}
