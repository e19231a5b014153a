//! mc-tunnel: the agent-to-gateway tunnel protocol.
//!
//! Every proxied TCP connection is one HTTP/2 stream (CONNECT) inside a
//! few long-lived mutual-TLS connections per gateway address, so a new
//! proxied connection costs no TLS handshake. Inside the stream the agent
//! writes a [`Request`] header naming the target and the source, and
//! immediately streams the client's bytes; the gateway answers with one
//! [`Status`] byte (OK, or the reason it refused) followed by the raw
//! upstream bytes. See `docs/tunnel-protocol.md` for the byte layout and the
//! measurements behind the design.
//!
//! * [`wire`]: the codec (`Request::encode`/`decode`, `Status`).
//! * [`handshake`]: async `read_request`/`write_request`/`read_status`/
//!   `write_status` with timeouts.
//! * [`mod@splice`]: the bidirectional copy (half-close, backpressure, idle
//!   timeout): [`forward_tcp_to_tunnel`], the agent's whole stream in one
//!   call, and [`splice_tunnel`], the gateway's, both handing HTTP/2 whole
//!   buffers without a copy; [`splice()`] and [`forward_to_tunnel`] for any
//!   other pair of streams.
//! * [`mux`]: [`TunnelClient`] (agent) and [`serve_connection`] (gateway).
//! * [`socket`]: socket setup under TLS (`TCP_NODELAY`, read buffer).
//!
//! Agent, per intercepted connection:
//! ```no_run
//! # use std::time::Duration;
//! # use mc_tunnel::*;
//! # async fn agent(tunnel: TunnelClient, mut client: tokio::net::TcpStream, request: Request) {
//! let outcome = match tunnel.open().await {
//!     Ok(mut stream) => forward_tcp_to_tunnel(
//!         &mut client, &mut stream, &request, Duration::from_secs(5), &SpliceConfig::default(),
//!     ).await.map_err(|e| e.to_string()),
//!     Err(e) => Err(e.to_string()),
//! };
//! if outcome.is_err() {
//!     let _ = client.set_zero_linger(); // the client sees a reset, at once
//! }
//! # }
//! ```
//!
//! Gateway, per accepted TLS connection (`tls` from `tokio_rustls` over
//! [`buffered_socket`]):
//! ```no_run
//! # use std::time::Duration;
//! # use mc_tunnel::*;
//! # async fn gateway(tls: tokio::io::DuplexStream) -> Result<(), h2::Error> {
//! let shutdown = std::future::pending(); // or a signal, for a graceful drain
//! serve_connection(tls, &MuxConfig::default(), |mut stream| async move {
//!     let Ok(request) = read_request(&mut stream, Duration::from_secs(10)).await else { return };
//!     // authorize, pick an endpoint for request.target ...
//!     match tokio::net::TcpStream::connect(("10.0.0.7", request.target.port)).await {
//!         Ok(mut upstream) => {
//!             if write_status(&mut stream, Status::Ok, Duration::from_secs(5)).await.is_ok() {
//!                 let moved = splice_tunnel(&mut stream, &mut upstream, &SpliceConfig::default()).await;
//!             }
//!         }
//!         Err(_) => {
//!             let refused = Status::Refused(Reason::ConnectRefused);
//!             let _ = write_status(&mut stream, refused, Duration::from_secs(5)).await;
//!         }
//!     }
//! }, shutdown).await
//! # }
//! ```

pub mod handshake;
pub mod mux;
pub mod socket;
pub mod splice;
pub mod wire;

pub use handshake::{HandshakeError, read_request, read_status, write_request, write_status};
pub use mux::{
    ConnectError, MuxConfig, MuxRecv, MuxSend, MuxStream, TunnelClient, serve_connection,
};
pub use socket::buffered_socket;
pub use splice::{
    Direction, SpliceConfig, SpliceError, SpliceErrorKind, Transfer, forward_tcp_to_tunnel,
    forward_to_tunnel, splice, splice_tunnel,
};
pub use wire::{Field, Reason, Request, Source, Status, Target, WireError};
