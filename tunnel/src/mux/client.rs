//! [`TunnelClient`]: the agent's tunnel to one gateway address. Proxied
//! connections are HTTP/2 streams multiplexed over a few long-lived mTLS
//! connections, so a new proxied connection costs one HEADERS frame, not a
//! TLS handshake, and never waits for a round trip before its first byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::stream::{MuxStream, h2_to_io};
use super::{ConnectError, MuxConfig, keepalive};
use crate::socket::buffered_socket;

struct Shared {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    config: MuxConfig,
    slots: Vec<tokio::sync::Mutex<Option<SendRequest<Bytes>>>>,
    next: AtomicUsize,
    backoff: std::sync::Mutex<Backoff>,
}

/// After a failed connect, further connects wait: opens in the meantime fail
/// at once instead of queueing behind a dead gateway.
#[derive(Debug, Default)]
struct Backoff {
    retry_at: Option<Instant>,
    delay: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tunnel connections to one gateway address. Cheap to share (`Clone`).
#[derive(Clone)]
pub struct TunnelClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TunnelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelClient")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl TunnelClient {
    /// Creates the client and starts connecting in the background, so the
    /// first proxied connection finds a handshaken tunnel. Must be called
    /// inside a tokio runtime. `client_config` decides which gateway identity
    /// is accepted (see `mc_identity::client_config`); `server_name` only
    /// keys TLS session resumption, e.g. `ServerName::IpAddress(ip.into())`.
    pub fn new(
        client_config: Arc<ClientConfig>,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        config: MuxConfig,
    ) -> TunnelClient {
        let slots = (0..config.connections.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        let client = TunnelClient {
            shared: Arc::new(Shared {
                addr,
                server_name,
                connector: TlsConnector::from(client_config),
                config,
                slots,
                next: AtomicUsize::new(0),
                backoff: std::sync::Mutex::new(Backoff::default()),
            }),
        };
        let warm = client.clone();
        tokio::spawn(async move {
            for slot in 0..warm.shared.slots.len() {
                if let Err(error) = warm.sender(slot).await {
                    tracing::warn!(gateway = %warm.shared.addr, %error, "tunnel warm-up failed");
                    return;
                }
            }
        });
        client
    }

    /// The gateway address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Opens a stream for one proxied connection. Returns as soon as the
    /// stream is opened locally: write the request header and the client's
    /// bytes at once (see [`crate::forward_tcp_to_tunnel`]).
    pub async fn open(&self) -> Result<MuxStream, ConnectError> {
        let slot = self.shared.next.fetch_add(1, Ordering::Relaxed) % self.shared.slots.len();
        // One retry: a tunnel that died since its last use is replaced.
        let mut last_error = None;
        for _ in 0..2 {
            let sender = self.sender(slot).await?;
            match sender.ready().await {
                Ok(mut ready) => {
                    let request = http::Request::builder()
                        .method(http::Method::CONNECT)
                        .uri(super::AUTHORITY)
                        .body(())
                        .map_err(|e| ConnectError::Protocol(e.to_string()))?;
                    match ready.send_request(request, false) {
                        Ok((response, send)) => return Ok(MuxStream::client(send, response)),
                        Err(error) => last_error = Some(error),
                    }
                }
                Err(error) => last_error = Some(error),
            }
            self.forget(slot).await;
        }
        Err(ConnectError::Http2 {
            addr: self.shared.addr,
            source: h2_to_io(
                last_error.unwrap_or_else(|| h2::Error::from(h2::Reason::INTERNAL_ERROR)),
            ),
        })
    }

    /// The live sender of `slot`, connecting first if there is none.
    async fn sender(&self, slot: usize) -> Result<SendRequest<Bytes>, ConnectError> {
        let mut guard = self.shared.slots[slot].lock().await;
        if let Some(sender) = guard.as_ref() {
            return Ok(sender.clone());
        }
        if let Some(retry_at) = self.lock_backoff().retry_at {
            let now = Instant::now();
            if now < retry_at {
                return Err(ConnectError::Backoff {
                    addr: self.shared.addr,
                    retry_in: retry_at - now,
                });
            }
        }
        match self.connect().await {
            Ok(sender) => {
                *self.lock_backoff() = Backoff::default();
                *guard = Some(sender.clone());
                Ok(sender)
            }
            Err(error) => {
                let mut backoff = self.lock_backoff();
                backoff.delay = (backoff.delay * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                backoff.retry_at = Some(Instant::now() + backoff.delay);
                Err(error)
            }
        }
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        // The backoff state is valid whatever a panicking holder did.
        self.shared
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn forget(&self, slot: usize) {
        *self.shared.slots[slot].lock().await = None;
    }

    async fn connect(&self) -> Result<SendRequest<Bytes>, ConnectError> {
        let shared = &self.shared;
        let addr = shared.addr;
        let attempt = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            let io = buffered_socket(tcp).map_err(|source| ConnectError::Tcp { addr, source })?;
            let tls = shared
                .connector
                .connect(shared.server_name.clone(), io)
                .await
                .map_err(|source| ConnectError::Tls { addr, source })?;
            let mut builder = h2::client::Builder::new();
            shared.config.apply_client(&mut builder);
            builder
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|e| ConnectError::Http2 {
                    addr,
                    source: h2_to_io(e),
                })
        };
        let timeout = shared.config.connect_timeout;
        let (sender, mut connection) = tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout { addr, timeout })??;
        let ping = connection.ping_pong();
        let config = shared.config.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                result = &mut connection => result.map_err(|e| e.to_string()),
                failure = keepalive(ping, &config) => Err(failure),
            };
            match outcome {
                Ok(()) => tracing::debug!(gateway = %addr, "tunnel connection closed"),
                Err(error) => tracing::info!(gateway = %addr, %error, "tunnel connection lost"),
            }
        });
        tracing::debug!(gateway = %addr, "tunnel connection established");
        Ok(sender)
    }
}
