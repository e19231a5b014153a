//! The outbound proxy: every intercepted connection to a mirror goes through
//! a warm mTLS tunnel to one of the remote cluster's gateways.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use mc_admin::ProxyMetrics;
use mc_identity::{CertSource, SpiffeId};
use mc_tunnel::{
    MuxConfig, Request, Source, SpliceConfig, SpliceErrorKind, Target, TunnelClient,
    forward_tcp_to_tunnel,
};
use rustls::pki_types::ServerName;

use crate::intercept::Intercepted;
use crate::mirrors::{Gateways, MirrorTarget, Workloads};

/// Settings of the outbound proxy.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    /// This cluster's name, sent as the source cluster of every stream.
    pub cluster_name: String,
    /// Tunnel connection settings per gateway address.
    pub mux: MuxConfig,
    /// Longest wait for the gateway's status after the request was sent.
    pub status_timeout: Duration,
    /// Copy settings (buffers, idle timeout).
    pub splice: SpliceConfig,
}

/// The tunnels to one remote cluster: multiplexed mTLS connections to each
/// gateway address.
pub struct ClusterTunnels {
    identity: String,
    gateways: Vec<TunnelClient>,
    next: AtomicUsize,
}

impl ClusterTunnels {
    /// A tunnel to one of the gateways, starting from the next one in turn
    /// and moving on when one cannot be reached.
    async fn connect(&self) -> Result<mc_tunnel::MuxStream> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.gateways.len() {
            let gateway = &self.gateways[(start + i) % self.gateways.len()];
            match gateway.open().await {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    tracing::debug!(gateway = %gateway.addr(), %error, "gateway unreachable, trying the next");
                    last = Some(error);
                }
            }
        }
        match last {
            Some(error) => Err(error).context("no gateway of the cluster could be reached"),
            None => anyhow::bail!("the cluster's Link lists no gateway address"),
        }
    }
}

/// Tunnels by remote cluster name.
#[derive(Default)]
pub struct Tunnels {
    by_cluster: HashMap<Arc<str>, Arc<ClusterTunnels>>,
}

impl Tunnels {
    /// The tunnels for `gateways`, keeping those of `previous` whose
    /// cluster, identity and addresses did not change (so a Link edit that
    /// touches one cluster does not drop the other clusters' tunnels).
    pub fn rebuild(
        previous: &Tunnels,
        gateways: &Gateways,
        source: &Arc<dyn CertSource>,
        cfg: &OutboundConfig,
    ) -> Tunnels {
        let mut by_cluster = HashMap::new();
        for (cluster, target) in gateways {
            if let Some(old) = previous.by_cluster.get(cluster) {
                let same_addrs = old
                    .gateways
                    .iter()
                    .map(TunnelClient::addr)
                    .eq(target.addresses.iter().copied());
                if old.identity == target.identity && same_addrs {
                    by_cluster.insert(cluster.clone(), old.clone());
                    continue;
                }
            }
            let identity = match SpiffeId::parse(&target.identity) {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(%cluster, identity = %target.identity, %error, "Link names an invalid gateway identity; its cluster is unreachable");
                    continue;
                }
            };
            let tls = match mc_identity::cluster_client_config(source.clone(), identity, cluster) {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::warn!(%cluster, error = format!("{error:#}"), "cannot build the tunnel TLS config");
                    continue;
                }
            };
            let clients = target
                .addresses
                .iter()
                .map(|addr| {
                    TunnelClient::new(
                        tls.clone(),
                        *addr,
                        ServerName::IpAddress(addr.ip().into()),
                        cfg.mux.clone(),
                    )
                })
                .collect();
            tracing::info!(%cluster, gateways = ?target.addresses, "tunnels to cluster ready");
            by_cluster.insert(
                cluster.clone(),
                Arc::new(ClusterTunnels {
                    identity: target.identity.clone(),
                    gateways: clients,
                    next: AtomicUsize::new(0),
                }),
            );
        }
        Tunnels { by_cluster }
    }

    /// The tunnels of a remote cluster, if it is linked.
    pub fn get(&self, cluster: &str) -> Option<Arc<ClusterTunnels>> {
        self.by_cluster.get(cluster).cloned()
    }
}

/// Carries one intercepted connection to `target` through `tunnels`. The
/// client is reset when the stream cannot be set up or the gateway refuses
/// it, so it never hangs.
pub async fn proxy(
    conn: Intercepted,
    target: MirrorTarget,
    tunnels: Arc<ClusterTunnels>,
    workloads: &Workloads,
    metrics: &ProxyMetrics,
    cfg: &OutboundConfig,
) {
    let started = std::time::Instant::now();
    let record = metrics.open(&target.cluster, &target.namespace, &target.service);
    let Intercepted {
        mut stream,
        peer,
        original_dst,
    } = conn;
    let _ = stream.set_nodelay(true);
    let request = request_for(&target, peer.ip(), workloads, &cfg.cluster_name);
    let mut tunnel = match tunnels.connect().await {
        Ok(tunnel) => tunnel,
        Err(error) => {
            tracing::warn!(%peer, dst = %original_dst, cluster = %target.cluster, error = format!("{error:#}"), "refusing: no tunnel");
            record.fail("no_tunnel", 0, 0);
            reset(stream);
            return;
        }
    };
    let opened_after = started.elapsed();
    match forward_tcp_to_tunnel(
        &mut stream,
        &mut tunnel,
        &request,
        cfg.status_timeout,
        &cfg.splice,
    )
    .await
    {
        Ok(moved) => {
            // Connect latency: until the gateway said the target is connected.
            if let Some(status_after) = moved.status_after {
                record.connected(opened_after + status_after);
            }
            record.close(moved.a_to_b, moved.b_to_a)
        }
        Err(error) => {
            let reason = match &error.kind {
                SpliceErrorKind::Refused(reason) => {
                    tracing::info!(%peer, dst = %original_dst, cluster = %target.cluster, service = %target.service,
                        reason = reason.as_str(), "gateway refused the stream");
                    reason.as_str()
                }
                SpliceErrorKind::IdleTimeout(_) => "idle_timeout",
                SpliceErrorKind::Handshake(_) => "tunnel_handshake",
                SpliceErrorKind::Io { .. } => "io",
            };
            if reason != "io" {
                tracing::debug!(%peer, dst = %original_dst, %error, "stream ended with an error");
            }
            record.fail(reason, error.transfer.a_to_b, error.transfer.b_to_a);
            reset(stream);
        }
    }
}

fn request_for(
    target: &MirrorTarget,
    peer: IpAddr,
    workloads: &Workloads,
    cluster: &str,
) -> Request {
    let workload = workloads.get(&peer);
    Request {
        target: Target {
            namespace: target.namespace.clone(),
            service: target.service.clone(),
            port: target.port,
        },
        source: Source {
            cluster: cluster.to_string(),
            namespace: workload.map(|w| w.namespace.clone()),
            service_account: workload.map(|w| w.service_account.clone()),
        },
    }
}

/// Closes a client connection with a reset, so the client learns at once.
fn reset(stream: tokio::net::TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Resolves the gateway addresses of a Link: IPs as they are, hostnames
/// through the system resolver.
pub async fn resolve_addresses(addresses: &[String], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for address in addresses {
        if let Ok(ip) = address.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            continue;
        }
        match tokio::net::lookup_host((address.as_str(), port)).await {
            Ok(found) => out.extend(found),
            Err(error) => tracing::warn!(%address, %error, "cannot resolve gateway address"),
        }
    }
    out
}
