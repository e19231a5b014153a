//! mc-controller: mirrors remote Services for every Link, probes the
//! linked gateways and reports Link status; one leader among its replicas.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use mc_controller::Config;
use mc_controller::config::{Loop, default_signer_accounts, parse_account, parse_duration};
use tokio_util::sync::CancellationToken;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "mc-controller", version, about)]
struct Args {
    /// Name of this cluster.
    #[arg(long, env = "MC_CLUSTER_NAME")]
    cluster_name: String,
    /// Namespace of Links, their credentials and the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = mc_api::NAMESPACE)]
    namespace: String,
    /// Identity in the leader Lease and in Events (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Address of the admin server (/live, /ready, /metrics).
    #[arg(long, default_value = "0.0.0.0:4191")]
    admin_listen: SocketAddr,
    /// Period of full reconciliations of every Link's mirrors.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    resync: Duration,
    /// Most frequent Link status rewrite for probe latency alone.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    status_refresh: Duration,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "mc-controller")]
    lease_name: String,
    /// How long the Lease stays valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How often the leader renews the Lease.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    renew_period: Duration,
    /// How often a standby tries to acquire the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// Lifetime of the leaf certificates the signer issues.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    leaf_lifetime: Duration,
    /// A `<namespace>/<serviceaccount>` whose own SPIFFE ID the signer
    /// issues; repeatable (default: mc-system/mc-node-agent and
    /// mc-system/mc-gateway).
    #[arg(long = "signer-allow", value_name = "NS/SA", value_parser = parse_account)]
    signer_allow: Vec<(String, String)>,
    /// Secret (in --namespace) holding the cluster issuer.
    #[arg(long, default_value = mc_identity::ISSUER_SECRET)]
    issuer_secret: String,
    /// Loops the leader runs (comma-separated): `links` (service mirror,
    /// probes, status) and `signer` (certificate signer).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "links,signer"
    )]
    controllers: Vec<Loop>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if args.renew_period >= args.lease_duration {
        anyhow::bail!("--renew-period must be shorter than --lease-duration");
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("mc-controller-{}", uuid::Uuid::new_v4().simple()));
    let config = Config {
        cluster_name: args.cluster_name,
        namespace: args.namespace,
        identity,
        admin_listen: Some(args.admin_listen),
        resync: args.resync,
        status_refresh: args.status_refresh,
        lease_name: args.lease_name,
        lease_duration: args.lease_duration,
        renew_period: args.renew_period,
        retry_period: args.retry_period,
        leaf_lifetime: args.leaf_lifetime,
        signer_accounts: if args.signer_allow.is_empty() {
            default_signer_accounts()
        } else {
            args.signer_allow
        },
        issuer_secret: args.issuer_secret,
        loops: args.controllers,
    };
    let client = kube::Client::try_default()
        .await
        .context("building the Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    mc_controller::run(config, client, shutdown).await
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT, shutting down"),
    }
    shutdown.cancel();
}
