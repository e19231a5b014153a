//! Bidirectional byte copy between two streams, keeping half-close,
//! backpressure and an idle timeout, and counting bytes each way.
//!
//! * Half-close: when one side's reads end (EOF, or a TLS close_notify), the
//!   other side's write half is shut down and the opposite direction keeps
//!   flowing until it ends too.
//! * Backpressure: a direction reads again only after the previous chunk
//!   was fully written and flushed, so a slow reader slows the writer down
//!   through TCP flow control; nothing is queued without bound.
//! * Idle timeout: when no byte moved in either direction for the whole
//!   timeout, both streams are abandoned. One timer per connection, re-armed
//!   lazily.
//! * Buffers start small and double (up to a maximum) each time a read fills
//!   them, so bulk transfers make few large writes while many idle or
//!   chatty connections stay cheap in memory.
//! * Between a TCP socket and a tunnel stream ([`forward_tcp_to_tunnel`],
//!   [`splice_tunnel`]) the buffers themselves travel: a read becomes a DATA
//!   payload and a received payload is written as it is. [`splice`] and
//!   [`forward_to_tunnel`] copy through a buffer and take any streams.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::handshake::{HandshakeError, read_status, write_request};
use crate::mux::{MuxRecv, MuxSend, MuxStream};
use crate::wire::{Reason, Request, Status};

/// First buffer size of each direction.
pub const INITIAL_BUFFER: usize = 16 * 1024;

/// Tunables of a splice.
#[derive(Debug, Clone)]
pub struct SpliceConfig {
    /// Largest buffer a direction grows to.
    pub max_buffer: usize,
    /// Abandon the connection when no byte moved either way for this long.
    pub idle_timeout: Duration,
}

impl Default for SpliceConfig {
    /// 256 KiB buffers and a one hour idle timeout.
    fn default() -> Self {
        SpliceConfig {
            max_buffer: 256 * 1024,
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Bytes moved by a splice, counted as they were written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes read from the first stream and written to the second.
    pub a_to_b: u64,
    /// Bytes read from the second stream and written to the first.
    pub b_to_a: u64,
    /// [`forward_to_tunnel`] and [`forward_tcp_to_tunnel`] only: how long
    /// after the call the gateway's OK
    /// arrived (request written, upstream connected). Add the time spent
    /// before the call to get the connect latency of the proxied connection.
    pub status_after: Option<Duration>,
}

/// A direction of a splice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the first stream to the second.
    AToB,
    /// From the second stream to the first.
    BToA,
}

/// Why a splice ended before both directions reached EOF.
#[derive(Debug, Error)]
pub enum SpliceErrorKind {
    /// Nothing moved for the idle timeout.
    #[error("idle for {0:?}")]
    IdleTimeout(Duration),
    /// Reading, writing or shutting down failed in one direction.
    #[error("i/o failed copying {direction:?}")]
    Io {
        /// The direction that failed.
        direction: Direction,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The gateway refused the stream (only on the agent side).
    #[error("gateway refused the stream: {0}")]
    Refused(Reason),
    /// Writing the request or reading the status failed (only on the agent
    /// side).
    #[error("tunnel handshake failed")]
    Handshake(#[source] HandshakeError),
}

/// A failed splice, with the bytes that did move before it failed.
#[derive(Debug, Error)]
#[error("{kind} after {} bytes a->b and {} bytes b->a", transfer.a_to_b, transfer.b_to_a)]
pub struct SpliceError {
    /// What ended the splice.
    #[source]
    pub kind: SpliceErrorKind,
    /// Bytes moved before the failure.
    pub transfer: Transfer,
}

/// Copies bytes both ways between `a` and `b` until both directions have
/// reached EOF, one fails, or the connection is idle for too long. The
/// streams are borrowed so the caller decides how to close them afterwards
/// (for example with an RST after a failure).
pub async fn splice<A, B>(
    a: &mut A,
    b: &mut B,
    config: &SpliceConfig,
) -> Result<Transfer, SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    run(a, b, None, config).await
}

/// Agent side of a tunnel stream: writes `request` on `tunnel`, then at once
/// copies `client` bytes into the tunnel without waiting for the gateway's
/// answer. Meanwhile it waits up to `status_timeout` for the status byte; on
/// OK it copies the tunnel's bytes to the client as well, on a refusal it
/// stops everything and returns [`SpliceErrorKind::Refused`], so the client
/// can be closed immediately.
pub async fn forward_to_tunnel<C, T>(
    client: &mut C,
    tunnel: &mut T,
    request: &Request,
    status_timeout: Duration,
    config: &SpliceConfig,
) -> Result<Transfer, SpliceError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let started = send_request(tunnel, request, status_timeout).await?;
    run(client, tunnel, Some((status_timeout, started)), config).await
}

/// Writes the stream's request header; returns when the stream started.
async fn send_request<T: AsyncWrite + Unpin>(
    tunnel: &mut T,
    request: &Request,
    status_timeout: Duration,
) -> Result<Instant, SpliceError> {
    let started = Instant::now();
    write_request(tunnel, request, status_timeout)
        .await
        .map_err(|e| SpliceError {
            kind: SpliceErrorKind::Handshake(e),
            transfer: Transfer::default(),
        })?;
    Ok(started)
}

/// Agent side of a tunnel stream, for the agent's real types: what
/// [`forward_to_tunnel`] does, without a copy on the tunnel side (the
/// client's reads become DATA frames as they are, and received DATA is
/// written to the client as it arrived) and without a lock between the two
/// directions. Compiled here, with the rest of the data path.
pub async fn forward_tcp_to_tunnel(
    client: &mut TcpStream,
    tunnel: &mut MuxStream,
    request: &Request,
    status_timeout: Duration,
    config: &SpliceConfig,
) -> Result<Transfer, SpliceError> {
    let started = send_request(tunnel, request, status_timeout).await?;
    let (client_read, client_write) = client.split();
    let (send, recv) = tunnel.halves();
    let progress = Progress::new(Some((status_timeout, started)));
    let forward = read_into_mux(
        client_read,
        send,
        config.max_buffer,
        Direction::AToB,
        &progress,
    );
    let backward = write_from_mux(recv, client_write, Direction::BToA, &progress);
    progress.drive(forward, backward, config.idle_timeout).await
}

/// Gateway side of a tunnel stream once the upstream is connected and the
/// OK status written: [`splice`] between the stream (first) and the
/// upstream (second), with the same savings as [`forward_tcp_to_tunnel`].
pub async fn splice_tunnel(
    tunnel: &mut MuxStream,
    upstream: &mut TcpStream,
    config: &SpliceConfig,
) -> Result<Transfer, SpliceError> {
    let (send, recv) = tunnel.halves();
    let (upstream_read, upstream_write) = upstream.split();
    let progress = Progress::new(None);
    let forward = write_from_mux(recv, upstream_write, Direction::AToB, &progress);
    let backward = read_into_mux(
        upstream_read,
        send,
        config.max_buffer,
        Direction::BToA,
        &progress,
    );
    progress.drive(forward, backward, config.idle_timeout).await
}

/// Time of the last byte moved, as milliseconds since `start`.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            tokio::time::sleep_until(deadline).await;
            if self.last() + idle <= Instant::now() {
                return;
            }
        }
    }
}

/// What the two directions of one splice share: byte counts, the idle
/// clock, and (agent side) the wait for the gateway's status.
struct Progress {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
    activity: Activity,
    /// The status to wait for before copying b to a: its timeout and when
    /// the stream was opened.
    expect_status: Option<(Duration, Instant)>,
    /// Nanoseconds until the OK status, plus one; 0 while none arrived.
    status_after: AtomicU64,
}

impl Progress {
    fn new(expect_status: Option<(Duration, Instant)>) -> Progress {
        Progress {
            a_to_b: AtomicU64::new(0),
            b_to_a: AtomicU64::new(0),
            activity: Activity {
                start: Instant::now(),
                last_ms: AtomicU64::new(0),
            },
            expect_status,
            status_after: AtomicU64::new(0),
        }
    }

    /// Reads the gateway's status from `reader` when one is expected: OK
    /// lets the copy back to the client start, anything else ends the splice.
    async fn await_status<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
    ) -> Result<(), SpliceErrorKind> {
        let Some((timeout, started)) = self.expect_status else {
            return Ok(());
        };
        match read_status(reader, timeout).await {
            Ok(Status::Ok) => {
                self.activity.touch();
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
                self.status_after.store(nanos + 1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Status::Refused(reason)) => Err(SpliceErrorKind::Refused(reason)),
            Err(e) => Err(SpliceErrorKind::Handshake(e)),
        }
    }

    /// Runs both directions until both ended, one failed, or the splice
    /// was idle for `idle_timeout`; `backward` waits for the status itself.
    async fn drive(
        &self,
        forward: impl Future<Output = Result<(), SpliceErrorKind>>,
        backward: impl Future<Output = Result<(), SpliceErrorKind>>,
        idle_timeout: Duration,
    ) -> Result<Transfer, SpliceError> {
        let outcome = tokio::select! {
            both = async { tokio::try_join!(forward, backward) } => both.map(|_| ()),
            () = self.activity.idle_for(idle_timeout) => {
                Err(SpliceErrorKind::IdleTimeout(idle_timeout))
            }
        };
        let transfer = Transfer {
            a_to_b: self.a_to_b.load(Ordering::Relaxed),
            b_to_a: self.b_to_a.load(Ordering::Relaxed),
            status_after: match self.status_after.load(Ordering::Relaxed) {
                0 => None,
                nanos => Some(Duration::from_nanos(nanos - 1)),
            },
        };
        match outcome {
            Ok(()) => Ok(transfer),
            Err(kind) => Err(SpliceError { kind, transfer }),
        }
    }

    /// Counts `n` bytes moved in `direction`.
    fn moved(&self, direction: Direction, n: usize) {
        let counter = match direction {
            Direction::AToB => &self.a_to_b,
            Direction::BToA => &self.b_to_a,
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.activity.touch();
    }
}

/// The error of a copy that failed in `direction`.
fn failed(direction: Direction) -> impl Fn(io::Error) -> SpliceErrorKind {
    move |source| SpliceErrorKind::Io { direction, source }
}

async fn run<A, B>(
    a: &mut A,
    b: &mut B,
    expect_status: Option<(Duration, Instant)>,
    config: &SpliceConfig,
) -> Result<Transfer, SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let progress = Progress::new(expect_status);
    let forward = copy_half(
        &mut a_read,
        &mut b_write,
        config.max_buffer,
        Direction::AToB,
        &progress,
    );
    let backward = async {
        progress.await_status(&mut b_read).await?;
        copy_half(
            &mut b_read,
            &mut a_write,
            config.max_buffer,
            Direction::BToA,
            &progress,
        )
        .await
    };
    progress.drive(forward, backward, config.idle_timeout).await
}

/// Copies one direction until EOF, then shuts the writer down.
async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    max_buffer: usize,
    direction: Direction,
    progress: &Progress,
) -> Result<(), SpliceErrorKind>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let failed = failed(direction);
    let max_buffer = max_buffer.max(1);
    let mut buf = vec![0u8; INITIAL_BUFFER.min(max_buffer)];
    loop {
        let n = reader.read(&mut buf).await.map_err(&failed)?;
        if n == 0 {
            return writer.shutdown().await.map_err(failed);
        }
        writer.write_all(&buf[..n]).await.map_err(&failed)?;
        writer.flush().await.map_err(&failed)?;
        progress.moved(direction, n);
        if n == buf.len() && buf.len() < max_buffer {
            buf.resize((buf.len() * 2).min(max_buffer), 0);
        }
    }
}

/// Copies a TCP socket into a tunnel stream until EOF, then ends the
/// stream's direction. Each read lands in a fresh part of one buffer and
/// goes to HTTP/2 as it is; the buffer's allocation is reused once HTTP/2
/// has written what was cut from it.
async fn read_into_mux(
    mut reader: ReadHalf<'_>,
    send: &mut MuxSend,
    max_buffer: usize,
    direction: Direction,
    progress: &Progress,
) -> Result<(), SpliceErrorKind> {
    let failed = failed(direction);
    let max_buffer = max_buffer.max(1);
    let mut size = INITIAL_BUFFER.min(max_buffer);
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(size);
        let n = reader.read_buf(&mut buf).await.map_err(&failed)?;
        if n == 0 {
            return send.shutdown().await.map_err(failed);
        }
        let mut chunk = buf.split().freeze();
        std::future::poll_fn(|cx| send.poll_send(cx, &mut chunk))
            .await
            .map_err(&failed)?;
        progress.moved(direction, n);
        if n >= size && size < max_buffer {
            size = (size * 2).min(max_buffer);
        }
    }
}

/// Copies a tunnel stream to a TCP socket until the stream ends, then
/// half-closes the socket. Received DATA is written as it arrived.
async fn write_from_mux(
    recv: &mut MuxRecv,
    mut writer: WriteHalf<'_>,
    direction: Direction,
    progress: &Progress,
) -> Result<(), SpliceErrorKind> {
    let failed = failed(direction);
    progress.await_status(recv).await?;
    loop {
        let chunk = std::future::poll_fn(|cx| recv.poll_chunk(cx))
            .await
            .map_err(&failed)?;
        let Some(chunk) = chunk else {
            return writer.shutdown().await.map_err(failed);
        };
        writer.write_all(&chunk).await.map_err(&failed)?;
        progress.moved(direction, chunk.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let (mut client, mut a) = duplex(1024);
        let (mut b, mut server) = duplex(1024);
        let task =
            tokio::spawn(async move { splice(&mut a, &mut b, &SpliceConfig::default()).await });
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        // The other direction still works after the first one closed.
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong!");
        let transfer = task.await.unwrap().unwrap();
        assert_eq!(
            transfer,
            Transfer {
                a_to_b: 4,
                b_to_a: 5,
                status_after: None
            }
        );
    }

    #[tokio::test]
    async fn idle_connection_is_abandoned_with_its_counts() {
        let (mut client, mut a) = duplex(1024);
        let (mut b, mut server) = duplex(1024);
        let config = SpliceConfig {
            idle_timeout: Duration::from_millis(100),
            ..SpliceConfig::default()
        };
        let task = tokio::spawn(async move { splice(&mut a, &mut b, &config).await });
        client.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        server.read_exact(&mut got).await.unwrap();
        let started = std::time::Instant::now();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err.kind, SpliceErrorKind::IdleTimeout(_)));
        assert_eq!(err.transfer.a_to_b, 3);
        assert!(started.elapsed() < Duration::from_secs(2));
        // The splice dropped its ends: both peers see EOF.
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn slow_reader_bounds_what_is_buffered() {
        // 4 KiB pipes on both sides; the server does not read. The writer
        // must stall instead of the splice buffering everything.
        let (mut client, mut a) = duplex(4096);
        let (mut b, mut server) = duplex(4096);
        let task =
            tokio::spawn(async move { splice(&mut a, &mut b, &SpliceConfig::default()).await });
        let chunk = vec![7u8; 1024 * 1024];
        let write =
            tokio::time::timeout(Duration::from_millis(300), client.write_all(&chunk)).await;
        assert!(
            write.is_err(),
            "a 1 MiB write cannot complete while nobody reads"
        );
        // Once the server reads, everything arrives.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        client.write_all(&chunk).await.unwrap();
        client.shutdown().await.unwrap();
        let received = reader.await.unwrap();
        // The first, timed-out write_all may have moved part of the chunk.
        assert!(received >= chunk.len());
        drop(client);
        let transfer = task.await.unwrap().unwrap();
        assert_eq!(transfer.a_to_b, received as u64);
    }

    fn request() -> Request {
        use crate::wire::{Source, Target};
        Request {
            target: Target {
                namespace: "ns".into(),
                service: "svc".into(),
                port: 80,
            },
            source: Source {
                cluster: "west".into(),
                namespace: None,
                service_account: None,
            },
        }
    }

    #[tokio::test]
    async fn client_bytes_flow_before_the_status_and_refusal_ends_the_stream() {
        use crate::handshake::{read_request, write_status};
        let (mut client, mut agent_side) = duplex(1024);
        let (mut tunnel, mut gateway) = duplex(1024);
        let task = tokio::spawn(async move {
            forward_to_tunnel(
                &mut agent_side,
                &mut tunnel,
                &request(),
                Duration::from_secs(5),
                &SpliceConfig::default(),
            )
            .await
        });
        client.write_all(b"early").await.unwrap();
        let timeout = Duration::from_secs(1);
        assert_eq!(
            read_request(&mut gateway, timeout).await.unwrap(),
            request()
        );
        // The client's bytes arrive before the gateway said anything.
        let mut early = [0u8; 5];
        gateway.read_exact(&mut early).await.unwrap();
        assert_eq!(&early, b"early");
        write_status(&mut gateway, Status::Refused(Reason::NoEndpoints), timeout)
            .await
            .unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(
            err.kind,
            SpliceErrorKind::Refused(Reason::NoEndpoints)
        ));
        assert_eq!(err.transfer.a_to_b, 5);
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn accepted_stream_carries_upstream_bytes_after_the_status() {
        use crate::handshake::{read_request, write_status};
        let (mut client, mut agent_side) = duplex(1024);
        let (mut tunnel, mut gateway) = duplex(1024);
        let task = tokio::spawn(async move {
            forward_to_tunnel(
                &mut agent_side,
                &mut tunnel,
                &request(),
                Duration::from_secs(5),
                &SpliceConfig::default(),
            )
            .await
        });
        let timeout = Duration::from_secs(1);
        read_request(&mut gateway, timeout).await.unwrap();
        write_status(&mut gateway, Status::Ok, timeout)
            .await
            .unwrap();
        gateway.write_all(b"hello").await.unwrap();
        gateway.shutdown().await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        let transfer = task.await.unwrap().unwrap();
        assert_eq!((transfer.a_to_b, transfer.b_to_a), (0, 5));
        assert!(
            transfer
                .status_after
                .is_some_and(|d| d < Duration::from_secs(5))
        );
    }
}
