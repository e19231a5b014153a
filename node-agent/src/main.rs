//! `mc-node-agent`: see the crate documentation of `mc_node_agent`.

use anyhow::Result;
use clap::Parser;
use mc_admin::runtime;
use mc_node_agent::cli::{Cli, Command};

fn main() -> Result<()> {
    mc_admin::logging::init();
    match Cli::parse().command {
        Command::Run(args) => {
            runtime::build(args.worker_threads)?.block_on(mc_node_agent::run::run(*args))
        }
        Command::Cleanup => runtime::build(1)?.block_on(mc_node_agent::kernel::cleanup()),
    }
}
