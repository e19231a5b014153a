//! `mc-node-agent run`: program the kernel, serve the transparent listener,
//! proxy mirrors through the tunnels, and remove everything on shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use mc_admin::{AdminState, ProxyMetrics, Readiness, Side};
use mc_identity::{CertSource, IdentityFlags};
use mc_tunnel::{MuxConfig, SpliceConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::intercept::{Intercepted, TransparentListener};
use crate::kernel::{Interceptor, MirrorSet};
use crate::mirrors::Gateways;
use crate::outbound::{self, OutboundConfig, Tunnels};
use crate::watch::{self as cluster_watch, Views, WatchConfig};

/// How long to wait before applying the kernel state again after a failure.
const KERNEL_RETRY: Duration = Duration::from_secs(2);

/// Runs the agent until SIGTERM or SIGINT, then cleans up the kernel state.
pub async fn run(args: RunArgs) -> Result<()> {
    let interceptor = Arc::new(Interceptor::new(args.kernel_config())?);
    // Bind before programming the kernel, so TPROXY always finds the socket.
    let listener = TransparentListener::bind(interceptor.config().listen)?;
    let static_mirrors: MirrorSet = args.mirrors.iter().copied().collect();
    interceptor
        .apply(&static_mirrors)
        .await
        .context("start-up reconcile of the kernel state")?;

    let result = if args.static_only {
        info!(listen = %interceptor.config().listen, "node agent ready (static mirrors only, no Kubernetes)");
        serve(&listener, None).await
    } else {
        match Proxy::start(&args, interceptor.clone(), static_mirrors).await {
            Ok(proxy) => {
                info!(listen = %interceptor.config().listen, "node agent ready");
                serve(&listener, Some(&proxy)).await
            }
            Err(error) => Err(error),
        }
    };
    let cleaned = interceptor
        .cleanup()
        .await
        .context("removing mc's kernel state on shutdown");
    result.and(cleaned)
}

/// Everything a connection needs to be proxied.
struct Proxy {
    metrics: ProxyMetrics,
    views: Arc<Views>,
    tunnels: Arc<ArcSwap<Tunnels>>,
    cfg: Arc<OutboundConfig>,
}

impl Proxy {
    /// Loads the identity, starts the watches, the kernel programmer and the
    /// tunnel manager.
    async fn start(
        args: &RunArgs,
        interceptor: Arc<Interceptor>,
        static_mirrors: MirrorSet,
    ) -> Result<Proxy> {
        let cluster_name = args
            .cluster_name
            .clone()
            .context("--cluster-name is required")?;
        let client = mc_admin::api_client::connect().await?;
        let cfg = Arc::new(OutboundConfig {
            cluster_name,
            mux: MuxConfig {
                connections: args.tunnel_connections,
                ..MuxConfig::default()
            },
            status_timeout: Duration::from_secs(10),
            splice: SpliceConfig {
                idle_timeout: Duration::from_secs(args.idle_timeout_secs),
                ..SpliceConfig::default()
            },
        });

        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = ProxyMetrics::register(Side::Agent, &mut registry);
        let readiness = Readiness::new();
        let admin = AdminState::new(registry, readiness.clone());
        let admin_listen = args.admin_listen;
        tokio::spawn(async move {
            if let Err(error) = mc_admin::serve(admin_listen, admin).await {
                tracing::error!(error = format!("{error:#}"), "admin server stopped");
            }
        });
        // Not ready (the admin server says so) until the identity is in hand.
        let source = identity_source(args, client.clone()).await?;

        let views = Arc::new(Views::default());
        let tunnels = Arc::new(ArcSwap::from_pointee(Tunnels::default()));
        let (gateways_tx, gateways_rx) = watch::channel(Gateways::new());
        let (kernel_tx, kernel_rx) = watch::channel(None);

        let watch_cfg = WatchConfig {
            links_namespace: args.links_namespace.clone(),
            node_name: args.node_name.clone(),
        };
        let watch_views = views.clone();
        tokio::spawn(async move {
            if let Err(error) =
                cluster_watch::run(client, watch_cfg, watch_views, gateways_tx, kernel_tx).await
            {
                tracing::error!(error = format!("{error:#}"), "cluster watch stopped");
            }
        });
        tokio::spawn(program_kernel(
            interceptor,
            kernel_rx,
            static_mirrors,
            readiness,
        ));
        tokio::spawn(manage_tunnels(
            gateways_rx,
            tunnels.clone(),
            source,
            cfg.clone(),
        ));
        Ok(Proxy {
            metrics,
            views,
            tunnels,
            cfg,
        })
    }

    /// Routes one intercepted connection: a mirror with a linked cluster is
    /// proxied, anything else is refused at once.
    fn dispatch(&self, conn: Intercepted) {
        let mirrors = self.views.mirrors.load();
        let Some(target) = mirrors.get(&conn.original_dst).cloned() else {
            warn!(peer = %conn.peer, dst = %conn.original_dst, "intercepted destination is not a mirror; refusing");
            refuse(conn);
            return;
        };
        let Some(tunnels) = self.tunnels.load().get(&target.cluster) else {
            warn!(peer = %conn.peer, dst = %conn.original_dst, cluster = %target.cluster, "no Link to the mirror's cluster; refusing");
            refuse(conn);
            return;
        };
        let (views, metrics, cfg) = (self.views.clone(), self.metrics.clone(), self.cfg.clone());
        tokio::spawn(async move {
            let workloads = views.workloads.load();
            outbound::proxy(conn, target, tunnels, &workloads, &metrics, &cfg).await;
        });
    }
}

/// The agent's identity, as `--identity-source` says; with `csr`, waits
/// until the first certificate is issued.
async fn identity_source(args: &RunArgs, client: kube::Client) -> Result<Arc<dyn CertSource>> {
    let flags = IdentityFlags {
        source: args.identity_source,
        dir: args.identity_dir.clone(),
        trust_domain: args.trust_domain.clone(),
        namespace: args.pod_namespace.clone(),
        service_account: args.service_account.clone(),
        request_prefix: match &args.node_name {
            Some(node) => format!("{}-{node}", args.service_account),
            None => args.service_account.clone(),
        },
    };
    flags.open(client, "agent").await
}

/// Applies each new mirror set to the kernel, retrying failures; a newer set
/// replaces one not yet applied, so updates are batched naturally. The agent
/// is ready once the first set from the cluster is in the kernel.
async fn program_kernel(
    interceptor: Arc<Interceptor>,
    mut rx: watch::Receiver<Option<MirrorSet>>,
    static_mirrors: MirrorSet,
    readiness: Readiness,
) {
    loop {
        let wanted = rx.borrow_and_update().clone();
        if let Some(mut set) = wanted {
            for addr in static_mirrors.iter() {
                set.insert(*addr);
            }
            if let Err(error) = interceptor.apply(&set).await {
                warn!(
                    error = format!("{error:#}"),
                    "programming the kernel failed; retrying"
                );
                tokio::time::sleep(KERNEL_RETRY).await;
                rx.mark_changed();
                continue;
            }
            tracing::debug!(mirrors = set.len(), "kernel state applied");
            readiness.set(true);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Rebuilds the tunnel pools whenever the Links change.
async fn manage_tunnels(
    mut rx: watch::Receiver<Gateways>,
    tunnels: Arc<ArcSwap<Tunnels>>,
    source: Arc<dyn CertSource>,
    cfg: Arc<OutboundConfig>,
) {
    loop {
        let next = Tunnels::rebuild(&tunnels.load(), &rx.borrow_and_update(), &source, &cfg);
        tunnels.store(Arc::new(next));
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn serve(listener: &TransparentListener, proxy: Option<&Proxy>) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => {
                info!("SIGTERM received, shutting down");
                return Ok(());
            }
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for SIGINT")?;
                info!("SIGINT received, shutting down");
                return Ok(());
            }
            accepted = listener.accept() => match (accepted, proxy) {
                (Ok(conn), Some(proxy)) => proxy.dispatch(conn),
                (Ok(conn), None) => {
                    warn!(peer = %conn.peer, dst = %conn.original_dst, "no Kubernetes view in static mode; refusing");
                    refuse(conn);
                }
                (Err(error), _) => warn!(%error, "accepting an intercepted connection failed"),
            },
        }
    }
}

fn refuse(conn: Intercepted) {
    let (peer, dst) = (conn.peer, conn.original_dst);
    if let Err(error) = conn.refuse() {
        warn!(%peer, %dst, %error, "resetting a refused connection failed");
    }
}
