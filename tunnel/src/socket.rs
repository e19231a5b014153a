//! How both ends set up a tunnel socket before TLS.

use tokio::io::BufReader;
use tokio::net::TcpStream;

/// How many bytes the tunnel reads from its socket at once. rustls asks
/// for 4 KiB per read; this buffer underneath it turns those into fewer,
/// larger reads (see the rationale in docs/tunnel-protocol.md).
pub const SOCKET_READ_BUFFER: usize = 64 * 1024;

/// A tunnel socket as TLS should get it: read-buffered.
pub type BufferedSocket = BufReader<TcpStream>;

/// Wraps an accepted or connected tunnel socket the way both ends should:
/// `TCP_NODELAY` on and a [`SOCKET_READ_BUFFER`] read buffer under TLS.
pub fn buffered_socket(tcp: TcpStream) -> std::io::Result<BufferedSocket> {
    tcp.set_nodelay(true)?;
    Ok(BufReader::with_capacity(SOCKET_READ_BUFFER, tcp))
}
