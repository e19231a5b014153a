//! `mc-lab`: several local Kubernetes-like clusters built from network
//! namespaces and API emulators, for the demo and the end-to-end tests.

mod cmd;
mod dns;
mod endpointslices;
mod kube_proxy;
mod kubeconfig;
mod lifecycle;
mod loadbalancer;
mod names;
mod nodes;
mod pidfile;
mod plan;
mod procs;
mod state;
mod topology;

use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Local multi-cluster lab: nodes and pods as network namespaces, one
/// Kubernetes API emulator per cluster.
#[derive(Parser, Debug)]
#[command(name = "mc-lab", version)]
struct Cli {
    /// Lab name (lowercase letters and digits); several labs can run side by side.
    #[arg(long, global = true, env = "MC_LAB", default_value = "mc")]
    lab: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the clusters and print how to use their kubeconfig.
    Up {
        /// Cluster names, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "east,west")]
        clusters: Vec<String>,
        /// Nodes in every cluster.
        #[arg(long, default_value_t = 2)]
        nodes_per_cluster: usize,
        /// Remove a lab of the same name first.
        #[arg(long)]
        recreate: bool,
        /// Build only the network (no API servers); for debugging the topology.
        #[arg(long, hide = true)]
        network_only: bool,
        /// Seconds to wait for the API servers and nodes.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Remove every namespace, link, process and file of the lab.
    Down,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mc-lab: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Up {
            clusters,
            nodes_per_cluster,
            recreate,
            network_only,
            timeout,
        } => {
            let req = lifecycle::UpRequest {
                lab: cli.lab.clone(),
                clusters,
                nodes_per_cluster,
                recreate,
                network_only,
                timeout: Duration::from_secs(timeout),
            };
            let state = runtime()?.block_on(lifecycle::up(&req))?;
            let dir = state::LabDir::new(&state.name);
            for cluster in state.cluster_plans() {
                println!("cluster {}: API {}", cluster.name, cluster.api_url());
            }
            if !network_only {
                println!("kubeconfig: {}", dir.kubeconfig().display());
                println!("export KUBECONFIG={}", dir.kubeconfig().display());
            }
        }
        Command::Down => lifecycle::down(&cli.lab)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}
