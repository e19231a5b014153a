//! The tunnel server: accept mTLS connections from agents, read what each
//! wants, refuse or connect to an endpoint, then copy bytes both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mc_tunnel::{Reason, Request, SpliceConfig, Status, read_request, splice, write_status};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::balance::{self, ActiveGuard};
use crate::targets::{Endpoint, Refusal};
use crate::watch::SharedTargets;

/// Settings of the tunnel server.
#[derive(Clone, Debug)]
pub struct InboundConfig {
    /// Longest a TLS handshake, or the wait for the request header after it, may take.
    /// Agents keep warm connections open before they use them, so the header
    /// wait is long.
    pub handshake_timeout: Duration,
    /// How long to wait for the request header on an established tunnel.
    pub request_timeout: Duration,
    /// Longest one connect attempt to an endpoint may take.
    pub connect_timeout: Duration,
    /// Most endpoints tried for one connection.
    pub connect_attempts: usize,
    /// Copy settings (buffers, idle timeout).
    pub splice: SpliceConfig,
}

/// Serves tunnels on `listener` until it fails.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    targets: SharedTargets,
    cfg: Arc<InboundConfig>,
) -> Result<()> {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, targets, cfg) = (acceptor.clone(), targets.clone(), cfg.clone());
        tokio::spawn(async move {
            if let Err(error) = handle(tcp, peer, acceptor, targets, cfg).await {
                tracing::debug!(%peer, error = format!("{error:#}"), "tunnel ended with an error");
            }
        });
    }
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    targets: SharedTargets,
    cfg: Arc<InboundConfig>,
) -> Result<()> {
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    let mut tls = tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(tcp))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
    let caller = mc_identity::peer_spiffe_id(tls.get_ref().1).context("caller identity")?;

    let request: Request = match read_request(&mut tls, cfg.request_timeout).await {
        Ok(request) => request,
        Err(error) => {
            let _ = write_status(
                &mut tls,
                Status::Refused(Reason::Malformed),
                cfg.connect_timeout,
            )
            .await;
            return Err(error).context("reading the request header");
        }
    };
    let target = &request.target;

    let endpoints: Vec<Endpoint> = {
        let snapshot = targets.load();
        match snapshot.resolve(&target.namespace, &target.service, target.port) {
            Ok(endpoints) => endpoints.to_vec(),
            Err(refusal) => {
                tracing::info!(%caller, src_cluster = %request.source.cluster, namespace = %target.namespace,
                    service = %target.service, port = target.port, reason = refusal.as_str(), "refused");
                let reason = match refusal {
                    Refusal::NotExported | Refusal::PortNotDeclared => Reason::NotExported,
                    Refusal::NoEndpoints => Reason::NoEndpoints,
                };
                write_status(&mut tls, Status::Refused(reason), cfg.connect_timeout).await?;
                return Ok(());
            }
        }
    };

    let (mut upstream, _guard) = match connect(&endpoints, &cfg).await {
        Ok(connected) => connected,
        Err(reason) => {
            tracing::info!(%caller, namespace = %target.namespace, service = %target.service,
                port = target.port, reason = reason.as_str(), "no endpoint could be reached");
            write_status(&mut tls, Status::Refused(reason), cfg.connect_timeout).await?;
            return Ok(());
        }
    };
    write_status(&mut tls, Status::Ok, cfg.connect_timeout).await?;
    let _ = peer;
    splice(&mut tls, &mut upstream, &cfg.splice)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Connects to one of `endpoints`, trying up to `connect_attempts` distinct
/// ones chosen by the balancer.
async fn connect(
    endpoints: &[Endpoint],
    cfg: &InboundConfig,
) -> Result<(TcpStream, ActiveGuard), Reason> {
    let mut tried = Vec::with_capacity(cfg.connect_attempts);
    let mut last = Reason::NoEndpoints;
    while tried.len() < cfg.connect_attempts {
        // The thread-local generator is not Send: use it only between awaits.
        let Some((index, endpoint)) = balance::pick(endpoints, &tried, &mut rand::rng()) else {
            break;
        };
        tried.push(index);
        let guard = ActiveGuard::new(endpoint);
        let started = Instant::now();
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                tracing::trace!(addr = %endpoint.addr, elapsed = ?started.elapsed(), "connected");
                return Ok((stream, guard));
            }
            Ok(Err(error)) => {
                tracing::debug!(addr = %endpoint.addr, %error, "endpoint connect failed");
                last = if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    Reason::ConnectRefused
                } else {
                    Reason::ConnectFailed
                };
            }
            Err(_) => last = Reason::ConnectTimeout,
        }
    }
    Err(last)
}
