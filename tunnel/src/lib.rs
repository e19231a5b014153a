//! mc-tunnel: the agent-to-gateway tunnel protocol.
//!
//! One proxied TCP connection travels over one mutual-TLS connection. The
//! agent writes a [`Request`] header naming the target and the source, and
//! immediately streams the client's bytes; the gateway answers with one
//! [`Status`] byte (OK, or the reason it refused) followed by the raw
//! upstream bytes. See `docs/tunnel-protocol.md` for the byte layout and the
//! rationale.
//!
//! * [`wire`]: the codec (`Request::encode`/`decode`, `Status`).
//! * [`handshake`]: async `read_request`/`write_request`/`read_status`/
//!   `write_status` with timeouts.
//! * [`splice`]: the bidirectional copy (half-close, backpressure, idle
//!   timeout) and [`forward_to_tunnel`], the agent's whole stream in one call.
//! * [`pool`]: a warm pool of handshaken TLS connections per gateway address.
//!
//! Gateway side, per accepted TLS connection:
//! ```no_run
//! # use std::time::Duration;
//! # use mc_tunnel::{read_request, write_status, splice, Status, Reason, SpliceConfig};
//! # async fn gateway(mut tls: tokio::io::DuplexStream) -> anyhow::Result<()> {
//! let request = read_request(&mut tls, Duration::from_secs(60)).await?;
//! match tokio::net::TcpStream::connect(("10.0.0.7", request.target.port)).await {
//!     Ok(mut upstream) => {
//!         write_status(&mut tls, Status::Ok, Duration::from_secs(5)).await?;
//!         let moved = splice(&mut tls, &mut upstream, &SpliceConfig::default()).await?;
//!     }
//!     Err(_) => {
//!         write_status(&mut tls, Status::Refused(Reason::ConnectRefused), Duration::from_secs(5)).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod handshake;
pub mod pool;
pub mod splice;
pub mod wire;

pub use handshake::{HandshakeError, read_request, read_status, write_request, write_status};
pub use pool::{PoolConfig, TunnelPool, TunnelStream};
pub use splice::{
    Direction, SpliceConfig, SpliceError, SpliceErrorKind, Transfer, forward_to_tunnel, splice,
};
pub use wire::{Field, Reason, Request, Source, Status, Target, WireError};
