//! A minimal agent and gateway built only from mc-tunnel and mc-identity,
//! plus upstream servers, for the integration tests and the benchmark.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mc_identity::{SharedIdentity, SpiffeId, TrustAnchor, client_config, server_config};
use mc_tunnel::{
    MuxConfig, MuxStream, Reason, Request, Source, SpliceConfig, Status, Target, TunnelClient,
    buffered_socket, forward_tcp_to_tunnel, forward_to_tunnel, read_request, serve_connection,
    splice, splice_tunnel, write_status,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

pub const TD: &str = "mc.test";

pub struct Pki {
    pub anchor: TrustAnchor,
    pub gateway: Arc<SharedIdentity>,
    pub agent: Arc<SharedIdentity>,
}

fn identity(anchor: &TrustAnchor, sa: &str) -> Arc<SharedIdentity> {
    let leaf = anchor
        .issue("mc-system", sa, Duration::from_secs(3600))
        .unwrap();
    let id =
        mc_identity::Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, anchor.cert_pem()).unwrap();
    Arc::new(SharedIdentity::new(id))
}

pub fn pki() -> Pki {
    let anchor = TrustAnchor::generate(TD).unwrap();
    Pki {
        gateway: identity(&anchor, "mc-gateway"),
        agent: identity(&anchor, "mc-node-agent"),
        anchor,
    }
}

pub fn gateway_id() -> SpiffeId {
    SpiffeId::system(TD, "mc-gateway").unwrap()
}

pub fn request(service: &str, port: u16) -> Request {
    Request {
        target: Target {
            namespace: "shop".into(),
            service: service.into(),
            port,
        },
        source: Source {
            cluster: "west".into(),
            namespace: Some("frontend".into()),
            service_account: Some("web".into()),
        },
    }
}

/// A running gateway stand-in.
pub struct Gateway {
    pub addr: SocketAddr,
    /// TLS connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    drain: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    /// Gracefully shuts down every tunnel connection open now.
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }
}

/// Gateway: routes `(service, port)` to an upstream address.
pub async fn start_gateway(pki: &Pki, routes: HashMap<(String, u16), SocketAddr>) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(pki.gateway.clone()).unwrap());
    let routes = Arc::new(routes);
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    let (drain, drained) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let routes = Arc::clone(&routes);
            let counter = Arc::clone(&counter);
            let mut drained = drained.clone();
            drained.mark_unchanged();
            tokio::spawn(async move {
                let Ok(io) = buffered_socket(tcp) else { return };
                let Ok(tls) = acceptor.accept(io).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let shutdown = async move {
                    let _ = drained.changed().await;
                };
                let _ = serve_connection(
                    tls,
                    &MuxConfig::default(),
                    |stream| gateway_stream(stream, Arc::clone(&routes)),
                    shutdown,
                )
                .await;
            });
        }
    });
    Gateway {
        addr,
        connections,
        drain,
    }
}

async fn gateway_stream(mut stream: MuxStream, routes: Arc<HashMap<(String, u16), SocketAddr>>) {
    let Ok(req) = read_request(&mut stream, Duration::from_secs(10)).await else {
        return;
    };
    let t = Duration::from_secs(5);
    let Some(upstream_addr) = routes.get(&(req.target.service.clone(), req.target.port)) else {
        let _ = write_status(&mut stream, Status::Refused(Reason::NotExported), t).await;
        let _ = stream.shutdown().await;
        return;
    };
    match TcpStream::connect(upstream_addr).await {
        Ok(mut upstream) => {
            let _ = upstream.set_nodelay(true);
            if write_status(&mut stream, Status::Ok, t).await.is_ok() {
                let _ = splice_tunnel(&mut stream, &mut upstream, &SpliceConfig::default()).await;
            }
        }
        Err(_) => {
            let _ = write_status(&mut stream, Status::Refused(Reason::ConnectRefused), t).await;
            let _ = stream.shutdown().await;
        }
    }
}

pub fn tunnel_client(pki: &Pki, gateway: SocketAddr) -> TunnelClient {
    let config = client_config(pki.agent.clone(), gateway_id()).unwrap();
    TunnelClient::new(
        config,
        gateway,
        ServerName::IpAddress(gateway.ip().into()),
        MuxConfig::default(),
    )
}

/// Agent stand-in: every connection accepted on the returned address is
/// forwarded through the tunnel with `req`. A refusal resets the client
/// connection.
pub async fn start_agent(tunnel: TunnelClient, req: Request) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let req = Arc::new(req);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let tunnel = tunnel.clone();
            let req = Arc::clone(&req);
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut stream) = tunnel.open().await else {
                    let _ = client.set_zero_linger();
                    return;
                };
                let result = forward_tcp_to_tunnel(
                    &mut client,
                    &mut stream,
                    &req,
                    Duration::from_secs(5),
                    &SpliceConfig::default(),
                )
                .await;
                if result.is_err() {
                    let _ = client.set_zero_linger();
                }
            });
        }
    });
    addr
}

/// Echo server: writes back what it reads, half-closes on EOF.
pub async fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Server that speaks first: sends `banner`, half-closes, then reports what
/// the client sent afterwards through the channel.
pub async fn start_banner(
    banner: &'static [u8],
) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                tcp.write_all(banner).await.unwrap();
                tcp.shutdown().await.unwrap();
                let mut got = Vec::new();
                tcp.read_to_end(&mut got).await.unwrap();
                let _ = tx.send(got).await;
            });
        }
    });
    (addr, rx)
}

/// Server that accepts one connection and reads nothing until the returned
/// sender fires; then it reads to the end and reports how many bytes came.
pub async fn start_stalled_reader() -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<usize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel();
    let (count_tx, count_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let _ = go_rx.await;
        let mut sink = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        let _ = count_tx.send(total);
    });
    (addr, go_tx, count_rx)
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Gateway stand-in for the non-multiplexed variant (benchmark only): one
/// proxied connection per TLS connection, same stream protocol.
pub async fn start_plain_gateway(
    pki: &Pki,
    routes: HashMap<(String, u16), SocketAddr>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(pki.gateway.clone()).unwrap());
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let routes = Arc::clone(&routes);
            tokio::spawn(async move {
                let Ok(io) = buffered_socket(tcp) else { return };
                let Ok(mut tls) = acceptor.accept(io).await else {
                    return;
                };
                let Ok(req) = read_request(&mut tls, Duration::from_secs(10)).await else {
                    return;
                };
                let t = Duration::from_secs(5);
                let Some(up) = routes.get(&(req.target.service.clone(), req.target.port)) else {
                    return;
                };
                if let Ok(mut upstream) = TcpStream::connect(up).await {
                    let _ = upstream.set_nodelay(true);
                    if write_status(&mut tls, Status::Ok, t).await.is_ok() {
                        let _ = splice(&mut tls, &mut upstream, &SpliceConfig::default()).await;
                    }
                }
            });
        }
    });
    addr
}

/// Agent stand-in for the non-multiplexed variant (benchmark only): dials
/// one resumed TLS connection per proxied connection.
pub async fn start_plain_agent(pki: &Pki, gateway: SocketAddr, req: Request) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(client_config(pki.agent.clone(), gateway_id()).unwrap());
    let req = Arc::new(req);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let connector = connector.clone();
            let req = Arc::clone(&req);
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(tcp) = TcpStream::connect(gateway).await else {
                    return;
                };
                let Ok(io) = buffered_socket(tcp) else { return };
                let name = ServerName::IpAddress(gateway.ip().into());
                let Ok(mut tls) = connector.connect(name, io).await else {
                    return;
                };
                let _ = forward_to_tunnel(
                    &mut client,
                    &mut tls,
                    &req,
                    Duration::from_secs(5),
                    &SpliceConfig::default(),
                )
                .await;
            });
        }
    });
    addr
}
