//! The tunnel server: accept mTLS connections from agents and authenticate
//! them (a node agent of a known cluster); on each, every HTTP/2 stream is
//! one proxied connection: read what it wants, authorize it, refuse it or
//! connect to an endpoint, then copy bytes both ways.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mc_identity::{CertSource, SpiffeId};
use mc_tunnel::{
    MuxConfig, MuxStream, Reason, Request, SpliceConfig, Status, buffered_socket, read_request,
    serve_connection, splice_tunnel, write_status,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use mc_admin::ProxyMetrics;
use rustls::pki_types::UnixTime;

use crate::authz::{self, AuthzMetrics, Peer};
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
    /// HTTP/2 settings of tunnel connections.
    pub mux: MuxConfig,
}

/// What every connection of the tunnel server shares.
pub struct Inbound {
    pub targets: SharedTargets,
    pub metrics: ProxyMetrics,
    pub authz: AuthzMetrics,
    /// This gateway's identity: its anchors tell which cluster issuer
    /// vouched for a caller.
    pub identity: Arc<dyn CertSource>,
    /// The only identity allowed to open tunnels: the node agents'.
    pub agent: SpiffeId,
    pub cfg: InboundConfig,
    /// Turns true when the gateway shuts down: stop accepting, and tell each
    /// agent (HTTP/2 GOAWAY) to open new streams elsewhere while the open
    /// ones finish.
    pub shutdown: watch::Receiver<bool>,
}

/// Serves tunnels on `listener` until shutdown is signalled; returns then,
/// leaving the open connections to drain.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inbound: Arc<Inbound>,
) -> Result<()> {
    let mut shutdown = inbound.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        };
        let (acceptor, inbound) = (acceptor.clone(), inbound.clone());
        tokio::spawn(async move {
            if let Err(error) = handle(tcp, acceptor, inbound).await {
                tracing::debug!(%peer, error = format!("{error:#}"), "tunnel ended with an error");
            }
        });
    }
}

async fn handle(tcp: TcpStream, acceptor: TlsAcceptor, inbound: Arc<Inbound>) -> Result<()> {
    // A large read buffer under TLS: rustls reads at most 4 KiB at a time.
    let socket = buffered_socket(tcp).context("socket options")?;
    let tls = tokio::time::timeout(inbound.cfg.handshake_timeout, acceptor.accept(socket))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let peer = match authz::authenticate(
        inbound.identity.current().anchors(),
        &chain,
        &inbound.agent,
        UnixTime::now(),
    ) {
        Ok(peer) => peer,
        Err(rejection) => {
            let caller = chain
                .first()
                .and_then(|leaf| mc_identity::spiffe_id_of(leaf).ok())
                .map(|id| id.to_string())
                .unwrap_or_default();
            tracing::warn!(%caller, reason = rejection.as_str(), "tunnel rejected");
            inbound.authz.rejected(rejection);
            return Ok(());
        }
    };
    // Drain (GOAWAY, open streams finish) at shutdown, or when the
    // certificate this tunnel was authenticated with expires: the agent
    // then opens a new tunnel with its renewed one.
    let mut shutdown = inbound.shutdown.clone();
    let metrics = inbound.authz.clone();
    let valid_for = peer
        .expires
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let cluster = peer.cluster.clone();
    let drain = async move {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {}
            () = tokio::time::sleep(valid_for) => {
                tracing::debug!(src_cluster = %cluster, "caller certificate expired: retiring the tunnel");
                metrics.expired();
            }
        }
    };
    serve_connection(
        tls,
        &inbound.cfg.mux,
        |stream| {
            let (peer, inbound) = (peer.clone(), inbound.clone());
            async move {
                if let Err(error) = handle_stream(stream, &peer, &inbound).await {
                    tracing::debug!(error = format!("{error:#}"), "stream ended with an error");
                }
            }
        },
        drain,
    )
    .await
    .context("tunnel connection")
}

/// One proxied connection.
async fn handle_stream(mut tls: MuxStream, peer: &Peer, inbound: &Inbound) -> Result<()> {
    let (targets, metrics, cfg) = (&inbound.targets, &inbound.metrics, &inbound.cfg);
    let request: Request = match read_request(&mut tls, cfg.request_timeout).await {
        Ok(request) => request,
        Err(error) => {
            let _ = refuse(&mut tls, Reason::Malformed, cfg.connect_timeout).await;
            return Err(error).context("reading the request header");
        }
    };
    let (target, source) = (&request.target, &request.source);
    let started = Instant::now();
    // Labelled with the proven cluster, never the claimed one.
    let record = metrics.open(&peer.cluster, &target.namespace, &target.service);

    let endpoints: Vec<Endpoint> = {
        let snapshot = targets.load();
        let resolved = snapshot
            .service(&target.namespace, &target.service)
            .and_then(|service| {
                let decision = authz::authorize(peer, source, &service.access, snapshot.linked());
                inbound
                    .authz
                    .decided(source, &target.namespace, &target.service, decision);
                decision.map_err(Refusal::Denied)?;
                service.endpoints(target.port)
            });
        match resolved {
            Ok(endpoints) => endpoints.to_vec(),
            Err(refusal) => {
                tracing::info!(src_cluster = %peer.cluster, src_identity = %authz::caller_identity(source),
                    namespace = %target.namespace, service = %target.service, port = target.port,
                    reason = refusal.as_str(), "refused");
                let reason = match refusal {
                    Refusal::NotExported | Refusal::PortNotDeclared => Reason::NotExported,
                    Refusal::NoEndpoints => Reason::NoEndpoints,
                    Refusal::Denied(_) => Reason::Forbidden,
                };
                record.fail(refusal.as_str(), 0, 0);
                refuse(&mut tls, reason, cfg.connect_timeout).await?;
                return Ok(());
            }
        }
    };

    let (mut upstream, _guard) = match connect(&endpoints, cfg).await {
        Ok(connected) => connected,
        Err(reason) => {
            tracing::info!(src_cluster = %peer.cluster, namespace = %target.namespace, service = %target.service,
                port = target.port, reason = reason.as_str(), "no endpoint could be reached");
            record.fail(reason.as_str(), 0, 0);
            refuse(&mut tls, reason, cfg.connect_timeout).await?;
            return Ok(());
        }
    };
    record.connected(started.elapsed());
    write_status(&mut tls, Status::Ok, cfg.connect_timeout).await?;
    match splice_tunnel(&mut tls, &mut upstream, &cfg.splice).await {
        Ok(moved) => record.close(moved.a_to_b, moved.b_to_a),
        Err(error) => {
            record.fail("io", error.transfer.a_to_b, error.transfer.b_to_a);
            return Err(anyhow::anyhow!("{error}"));
        }
    }
    Ok(())
}

/// Sends a refusal and ends the stream after it. Ending it cleanly matters:
/// a stream dropped while the agent's side is open is reset with CANCEL,
/// and a reset discards the status byte still queued, so the agent would
/// see a broken stream instead of the reason.
async fn refuse(tls: &mut MuxStream, reason: Reason, timeout: Duration) -> Result<()> {
    write_status(tls, Status::Refused(reason), timeout).await?;
    tokio::time::timeout(timeout, tls.shutdown())
        .await
        .context("ending the refused stream timed out")?
        .context("ending the refused stream")
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
