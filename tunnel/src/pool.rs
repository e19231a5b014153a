//! A warm pool of handshaken mTLS connections to one gateway address.
//!
//! Each tunnel connection carries exactly one proxied stream, so the TLS
//! handshake would otherwise sit on the critical path of every new client
//! connection. The pool keeps a few connections ready, refills them in the
//! background after each checkout (TLS 1.3 resumption makes refills cheap),
//! and drops those older than `max_idle_age`, which must stay below the
//! gateway's request-header timeout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// How many bytes the tunnel reads from its socket at once. rustls itself
/// asks for 4 KiB per read; this buffer underneath it turns those into few
/// large reads (see the rationale in docs/tunnel-protocol.md).
pub const SOCKET_READ_BUFFER: usize = 64 * 1024;

/// A client tunnel connection: TLS over a read-buffered TCP socket.
pub type TunnelStream = tokio_rustls::client::TlsStream<BufReader<TcpStream>>;

/// Wraps an accepted or connected tunnel socket the way both ends should:
/// `TCP_NODELAY` on and a [`SOCKET_READ_BUFFER`] read buffer under TLS.
pub fn buffered_socket(tcp: TcpStream) -> std::io::Result<BufReader<TcpStream>> {
    tcp.set_nodelay(true)?;
    Ok(BufReader::with_capacity(SOCKET_READ_BUFFER, tcp))
}

/// Tunables of a [`TunnelPool`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Connections kept handshaken and ready.
    pub warm: usize,
    /// Pooled connections older than this are closed, never handed out.
    pub max_idle_age: Duration,
    /// Bound on TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Longest pause between refill attempts after failures.
    pub max_backoff: Duration,
}

impl Default for PoolConfig {
    /// Four warm connections, 30 s idle age, 5 s connect timeout.
    fn default() -> Self {
        PoolConfig {
            warm: 4,
            max_idle_age: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why a tunnel connection could not be established.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// TCP connect plus handshake took longer than the connect timeout.
    #[error("connecting to gateway {addr} timed out after {timeout:?}")]
    Timeout {
        /// Gateway address.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The TCP connection failed.
    #[error("TCP connect to gateway {addr} failed")]
    Tcp {
        /// Gateway address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (including certificate verification).
    #[error("TLS handshake with gateway {addr} failed")]
    Tls {
        /// Gateway address.
        addr: SocketAddr,
        /// The failure; a rustls error is inside for verification failures.
        #[source]
        source: std::io::Error,
    },
}

struct Pooled {
    stream: TunnelStream,
    born: Instant,
}

struct Shared {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    config: PoolConfig,
    idle: Mutex<VecDeque<Pooled>>,
    wake: Notify,
}

/// A warm pool of tunnel connections to one gateway address. Dropping it
/// stops the refill task and closes the pooled connections.
pub struct TunnelPool {
    shared: Arc<Shared>,
    refill: JoinHandle<()>,
}

impl TunnelPool {
    /// Creates the pool and starts filling it. Must be called inside a tokio
    /// runtime. `server_name` keys the TLS session cache (resumption); use
    /// one per gateway address, e.g. `ServerName::IpAddress(addr.ip().into())`.
    /// The client config decides who the gateway must be (see mc-identity).
    pub fn new(
        client_config: Arc<ClientConfig>,
        addr: SocketAddr,
        server_name: ServerName<'static>,
        config: PoolConfig,
    ) -> TunnelPool {
        let shared = Arc::new(Shared {
            addr,
            server_name,
            connector: TlsConnector::from(client_config),
            config,
            idle: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        });
        let refill = tokio::spawn(refill_loop(Arc::clone(&shared)));
        TunnelPool { shared, refill }
    }

    /// The gateway address this pool connects to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A ready connection: a warm one when available, else a new one
    /// dialled now. Either way the refill task is told to top the pool up.
    pub async fn get(&self) -> Result<TunnelStream, ConnectError> {
        let warm = self.take_warm();
        self.shared.wake.notify_one();
        match warm {
            Some(stream) => Ok(stream),
            None => self.shared.dial().await,
        }
    }

    /// Number of warm connections ready right now.
    pub fn warm_count(&self) -> usize {
        self.shared.lock_idle().len()
    }

    fn take_warm(&self) -> Option<TunnelStream> {
        let mut idle = self.shared.lock_idle();
        while let Some(mut pooled) = idle.pop_front() {
            if pooled.born.elapsed() < self.shared.config.max_idle_age
                && still_open(&mut pooled.stream)
            {
                return Some(pooled.stream);
            }
        }
        None
    }
}

impl Drop for TunnelPool {
    fn drop(&mut self) {
        self.refill.abort();
    }
}

impl Shared {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Pooled>> {
        // The queue stays consistent even if a holder panicked.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn dial(&self) -> Result<TunnelStream, ConnectError> {
        let addr = self.addr;
        let attempt = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Tcp { addr, source })?;
            let io = buffered_socket(tcp).map_err(|source| ConnectError::Tcp { addr, source })?;
            self.connector
                .connect(self.server_name.clone(), io)
                .await
                .map_err(|source| ConnectError::Tls { addr, source })
        };
        let timeout = self.config.connect_timeout;
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout { addr, timeout })?
    }
}

/// Polls the connection once without waiting. A healthy idle tunnel has
/// nothing to read (any session tickets the gateway sent are consumed here,
/// which also feeds TLS resumption); EOF, an error or unexpected data mean it
/// must not be used.
fn still_open(stream: &mut TunnelStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

async fn refill_loop(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let now = Instant::now();
        let missing = {
            let mut idle = shared.lock_idle();
            idle.retain(|p| now.duration_since(p.born) < shared.config.max_idle_age);
            shared.config.warm.saturating_sub(idle.len())
        };
        if missing == 0 {
            // Sleep until a checkout, or until the oldest entry expires.
            let oldest = shared.lock_idle().front().map(|p| p.born);
            let expiry = oldest.map_or(now + shared.config.max_idle_age, |born| {
                born + shared.config.max_idle_age
            });
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep_until(expiry) => {}
            }
            continue;
        }
        match shared.dial().await {
            Ok(stream) => {
                backoff = Duration::from_millis(50);
                shared.lock_idle().push_back(Pooled {
                    stream,
                    born: Instant::now(),
                });
            }
            Err(error) => {
                tracing::warn!(gateway = %shared.addr, error = %error, source = ?std::error::Error::source(&error), retry_in = ?backoff, "tunnel pool refill failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.config.max_backoff);
            }
        }
    }
}
