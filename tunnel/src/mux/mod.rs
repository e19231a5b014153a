//! Multiplexing: many proxied connections over few long-lived mTLS
//! connections, one HTTP/2 stream (RFC 9113, CONNECT) per proxied
//! connection. The stream's bytes are exactly the tunnel protocol of
//! [`crate::wire`]: request header then client bytes one way, status byte
//! then upstream bytes the other way.
//!
//! * Agent: [`TunnelClient::open`] then [`crate::forward_tcp_to_tunnel`].
//! * Gateway: [`serve_connection`] per accepted TLS connection, then per
//!   stream [`crate::read_request`], [`crate::write_status`] and
//!   [`crate::splice_tunnel`].

mod client;
mod server;
mod stream;

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

pub use client::TunnelClient;
pub use server::serve_connection;
pub use stream::{MuxRecv, MuxSend, MuxStream};

/// The `:authority` of every tunnel CONNECT request. The target travels in
/// the request header inside the stream, not here.
pub(crate) const AUTHORITY: &str = "tunnel.mc.dev:4143";

/// Tunables of the multiplexed tunnel (both ends).
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Agent: TLS connections kept per gateway address; streams are spread
    /// over them round-robin so both ends can use more than one core.
    pub connections: usize,
    /// Per-stream flow-control window, in bytes: how much one proxied
    /// connection may have in flight before its reader must catch up.
    pub stream_window: u32,
    /// Per-connection flow-control window, in bytes.
    pub connection_window: u32,
    /// Largest HTTP/2 frame this side accepts.
    pub max_frame_size: u32,
    /// Gateway: most concurrent streams one agent connection may open.
    pub max_concurrent_streams: u32,
    /// Agent: bound on TCP connect plus TLS and HTTP/2 handshakes.
    pub connect_timeout: Duration,
    /// Send an HTTP/2 PING after this long and close the connection if no
    /// PONG comes back within `keepalive_timeout`.
    pub keepalive_interval: Duration,
    /// See `keepalive_interval`.
    pub keepalive_timeout: Duration,
}

impl Default for MuxConfig {
    fn default() -> Self {
        MuxConfig {
            connections: 2,
            stream_window: 1 << 20,
            connection_window: 32 << 20,
            max_frame_size: 64 * 1024,
            max_concurrent_streams: 10_000,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

impl MuxConfig {
    fn apply_client(&self, builder: &mut h2::client::Builder) {
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.stream_window as usize)
            .enable_push(false);
    }

    fn apply_server(&self, builder: &mut h2::server::Builder) {
        builder
            .initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.stream_window as usize)
            .max_concurrent_streams(self.max_concurrent_streams);
    }
}

/// Why a tunnel connection or stream could not be established.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// TCP connect plus handshakes took longer than the connect timeout.
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
    /// The HTTP/2 handshake failed, or the connection can take no stream.
    #[error("HTTP/2 with gateway {addr} failed")]
    Http2 {
        /// Gateway address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A recent connect to this gateway failed; the next attempt waits
    /// until the backoff (200 ms doubling to 5 s) has passed.
    #[error("gateway {addr} unreachable, next attempt in {retry_in:?}")]
    Backoff {
        /// Gateway address.
        addr: SocketAddr,
        /// Time until the next attempt.
        retry_in: Duration,
    },
    /// A request could not be built (a bug, not a network condition).
    #[error("building the tunnel request failed: {0}")]
    Protocol(String),
}

/// Pings the peer every `keepalive_interval`; returns why it gave up.
async fn keepalive(ping: Option<h2::PingPong>, config: &MuxConfig) -> String {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(config.keepalive_interval).await;
        match tokio::time::timeout(config.keepalive_timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(error)) => return format!("keepalive ping failed: {error}"),
            Err(_) => {
                return format!("no keepalive pong within {:?}", config.keepalive_timeout);
            }
        }
    }
}
