//! `mc-node-agent`: see the crate documentation of `mc_node_agent`.

use anyhow::Result;
use clap::Parser;
use mc_node_agent::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Run(args) => mc_node_agent::run::run(*args).await,
        Command::Cleanup => mc_node_agent::kernel::cleanup().await,
    }
}
