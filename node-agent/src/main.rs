//! `mc-node-agent`: see the crate documentation of `mc_node_agent`.

use anyhow::{Context, Result};
use clap::Parser;
use mc_node_agent::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Run(args) => {
            runtime(args.worker_threads)?.block_on(mc_node_agent::run::run(*args))
        }
        Command::Cleanup => runtime(1)?.block_on(mc_node_agent::kernel::cleanup()),
    }
}

/// The async runtime with `workers` threads (0: one per CPU).
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}
