//! The transparent listener that TPROXY hands intercepted connections to.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener as StdTcpListener};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
    sockopt,
};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener with `IP_TRANSPARENT`, so that it accepts connections whose
/// destination is not a local address (the mirrored ClusterIP:port).
#[derive(Debug)]
pub struct TransparentListener {
    inner: TcpListener,
}

/// A connection caught by the kernel rules.
#[derive(Debug)]
pub struct Intercepted {
    /// The accepted connection; its local end is the original destination.
    pub stream: TcpStream,
    /// The client (pod or host-network process).
    pub peer: SocketAddr,
    /// The address the client connected to (ClusterIP:port of a mirror).
    pub original_dst: SocketAddr,
}

impl TransparentListener {
    /// Binds a transparent listener on `addr` (needs CAP_NET_ADMIN and a
    /// running tokio runtime). The socket lives in the calling thread's
    /// network namespace. IPv4 only for now, like the kernel rules.
    pub fn bind(addr: SocketAddrV4) -> Result<Self> {
        let fd: OwnedFd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .context("creating the listener socket")?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).context("setting SO_REUSEADDR")?;
        setsockopt(&fd, sockopt::IpTransparent, &true)
            .context("setting IP_TRANSPARENT (needs CAP_NET_ADMIN)")?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(addr))
            .with_context(|| format!("binding the transparent listener to {addr}"))?;
        let backlog = Backlog::new(1024).context("listen backlog")?;
        listen(&fd, backlog).with_context(|| format!("listening on {addr}"))?;
        let inner = TcpListener::from_std(StdTcpListener::from(fd))
            .context("registering the listener with tokio")?;
        Ok(Self { inner })
    }

    /// The address the listener is bound to (the TPROXY target).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for the next intercepted connection. Under TPROXY the accepted
    /// socket's local address is the client's original destination.
    pub async fn accept(&self) -> io::Result<Intercepted> {
        let (stream, peer) = self.inner.accept().await?;
        let original_dst = stream.local_addr()?;
        Ok(Intercepted {
            stream,
            peer,
            original_dst,
        })
    }
}

impl Intercepted {
    /// Refuses the connection at once: the client sees a reset, as if
    /// nothing listened at the destination.
    pub fn refuse(self) -> io::Result<()> {
        self.stream.set_zero_linger()?;
        drop(self.stream);
        Ok(())
    }
}
