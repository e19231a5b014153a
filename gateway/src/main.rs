//! `mc-gateway`: the inbound end of mc's tunnels. It authenticates callers,
//! checks that the target Service is exported on the named port, and
//! forwards to one of its ready endpoints.

mod authz;
mod balance;
mod inbound;
mod targets;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use clap::Parser;
use mc_admin::{AdminState, ProxyMetrics, Readiness, Side};
use mc_identity::{CertSource, IdentityFlags, SourceKind, SpiffeId};
use mc_tunnel::{MuxConfig, SpliceConfig};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::authz::AuthzMetrics;
use crate::inbound::{Inbound, InboundConfig};
use crate::targets::Targets;

/// The mc gateway: accepts mTLS tunnels from the node agents of linked
/// clusters and forwards each to a ready endpoint of an exported Service.
///
/// The Kubernetes client comes from the pod's ServiceAccount (built with
/// `--features kubeconfig`, from KUBECONFIG or ~/.kube/config outside a pod).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the tunnel listener.
    #[arg(long, env = "MC_GATEWAY_LISTEN", default_value = "0.0.0.0:4143")]
    listen: SocketAddr,
    /// Address of the admin server (/live, /ready, /metrics).
    #[arg(long, env = "MC_ADMIN_LISTEN", default_value = "0.0.0.0:4191")]
    admin_listen: SocketAddr,
    /// Directory holding this gateway's identity: ca.crt (trust anchors)
    /// and, with `--identity-source files`, tls.crt (leaf then
    /// intermediates) and tls.key.
    #[arg(long, env = "MC_IDENTITY_DIR", default_value = "/var/run/mc/identity")]
    identity_dir: PathBuf,
    /// Where the certificate comes from: `csr` (a key generated in memory,
    /// the certificate from the controller's signer through a
    /// CertificateSigningRequest, renewed at two thirds of its lifetime) or
    /// `files` (tls.crt and tls.key in --identity-dir, from a PKI of your
    /// own, which must renew them; the leaf must be signed by a cluster
    /// issuer, `spiffe://<td>/cluster/<name>`).
    #[arg(long, env = "MC_IDENTITY_SOURCE", default_value = "csr")]
    identity_source: SourceKind,
    /// Trust domain of the SPIFFE ID requested with `--identity-source csr`.
    #[arg(long, env = "MC_TRUST_DOMAIN", default_value = mc_api::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Namespace and ServiceAccount this gateway runs as (its SPIFFE ID).
    #[arg(long, env = "POD_NAMESPACE", default_value = mc_api::NAMESPACE)]
    pod_namespace: String,
    /// ServiceAccount this gateway runs as.
    #[arg(long, env = "MC_SERVICE_ACCOUNT", default_value = "mc-gateway")]
    service_account: String,
    /// ServiceAccount (in mc-system) of the node agents allowed to open
    /// tunnels; their certificates must come from a linked cluster's issuer.
    #[arg(long, default_value = "mc-node-agent")]
    agent_service_account: String,
    /// This pod's name, used in the names of its CertificateSigningRequests.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Longest wait, in seconds, for a TLS handshake and for a stream's request header.
    #[arg(long, value_parser = parse_secs, default_value = "10")]
    handshake_timeout_secs: Duration,
    /// Longest one connect attempt to an endpoint may take, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    connect_timeout_ms: u64,
    /// Most endpoints tried for one connection before it is refused.
    #[arg(long, default_value_t = 3)]
    connect_attempts: usize,
    /// On SIGTERM, how many seconds open connections get to finish.
    #[arg(long, default_value_t = 20)]
    drain_secs: u64,
    /// Threads that run the gateway (0: one per CPU). One (tokio's
    /// current-thread scheduler) keeps each proxied connection and its
    /// tunnel on one thread, without cross-thread wake-ups; scale with
    /// replicas, or raise this on big dedicated nodes (bench/README.md has
    /// the measurements).
    #[arg(long, env = "MC_WORKER_THREADS", default_value_t = 1)]
    worker_threads: usize,
    /// Close a connection after this many seconds without a byte either way.
    #[arg(long, default_value_t = 3600)]
    idle_timeout_secs: u64,
}

/// The gateway's identity, as `--identity-source` says; with `csr`, waits
/// until the first certificate is issued.
async fn identity_source(args: &Args, client: kube::Client) -> Result<Arc<dyn CertSource>> {
    let flags = IdentityFlags {
        source: args.identity_source,
        dir: args.identity_dir.clone(),
        trust_domain: args.trust_domain.clone(),
        namespace: args.pod_namespace.clone(),
        service_account: args.service_account.clone(),
        request_prefix: args
            .pod_name
            .clone()
            .unwrap_or_else(|| args.service_account.clone()),
    };
    flags.open(client, "gateway").await
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|e| format!("seconds expected: {e}"))
}

fn main() -> Result<()> {
    mc_admin::logging::init();
    let args = Args::parse();
    mc_admin::runtime::build(args.worker_threads)?.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let client = mc_admin::api_client::connect().await?;

    let targets = Arc::new(ArcSwap::from_pointee(Targets::default()));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ProxyMetrics::register(Side::Gateway, &mut registry);
    let authz = AuthzMetrics::register(&mut registry);
    // Not ready until the identity is in hand and the caches are synced.
    let readiness = Readiness::new();
    let admin = tokio::spawn(mc_admin::serve(
        args.admin_listen,
        AdminState::new(registry, readiness.clone()),
    ));
    let source = identity_source(&args, client.clone()).await?;
    let agent = SpiffeId::new(
        source.current().id().trust_domain(),
        mc_api::NAMESPACE,
        &args.agent_service_account,
    )
    .context("--agent-service-account")?;
    let tls =
        mc_identity::server_config(source.clone()).context("building the TLS server config")?;
    let watch = {
        let (targets, readiness, namespace) = (
            targets.clone(),
            readiness.clone(),
            args.pod_namespace.clone(),
        );
        tokio::spawn(async move { watch::run(client, &namespace, targets, readiness).await })
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, "tunnel listener ready");
    let cfg = InboundConfig {
        handshake_timeout: args.handshake_timeout_secs,
        request_timeout: args.handshake_timeout_secs,
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        connect_attempts: args.connect_attempts.max(1),
        splice: SpliceConfig {
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            ..SpliceConfig::default()
        },
        mux: MuxConfig::default(),
    };
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let inbound = Arc::new(Inbound {
        targets,
        metrics,
        authz,
        identity: source,
        agent,
        cfg,
        shutdown,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        result = inbound::serve(listener, acceptor, inbound.clone()) => result?,
        result = watch => return result.context("watch task")?,
        result = admin => return result.context("admin task")?,
        _ = sigterm.recv() => tracing::info!("SIGTERM received, draining"),
        signal = tokio::signal::ctrl_c() => {
            signal.context("waiting for SIGINT")?;
            tracing::info!("SIGINT received, draining");
        }
    }
    // Not ready any more, no new connections; agents are told (GOAWAY) to
    // use another gateway while open streams finish, within the grace time.
    readiness.set(false);
    shutdown_tx.send_replace(true);
    let drained = async {
        while Arc::strong_count(&inbound) > 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(args.drain_secs), drained)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain time; closing them");
    }
    Ok(())
}
