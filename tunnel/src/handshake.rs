//! Async helpers that read and write the request header and the status byte
//! on a tunnel stream, each bounded by a timeout.
//!
//! The readers never read past the header or the status byte, so whatever
//! follows (the client's or upstream's first bytes) stays in the stream for
//! the splice that comes next.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{MAX_REQUEST_LEN, PREFIX_LEN, Request, Status, WireError};

/// Why a request or status could not be read or written.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The peer closed the stream before sending a single byte. On the
    /// gateway this is how an agent discards a pooled connection; it is not
    /// an error worth a warning.
    #[error("peer closed the tunnel before sending anything")]
    ClosedEarly,
    /// The bytes are not a valid request.
    #[error("invalid tunnel request")]
    Wire(#[from] WireError),
    /// The deadline passed first.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The stream failed (including a close in the middle of a header).
    #[error("tunnel i/o failed")]
    Io(#[from] std::io::Error),
}

/// Reads one request header, and nothing after it, within `timeout`.
pub async fn read_request<R>(stream: &mut R, timeout: Duration) -> Result<Request, HandshakeError>
where
    R: AsyncRead + Unpin,
{
    tokio::time::timeout(timeout, read_request_inner(stream))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
}

async fn read_request_inner<R>(stream: &mut R) -> Result<Request, HandshakeError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = [0u8; MAX_REQUEST_LEN];
    // Never ask for more than the prefix (then exactly the body), so no byte
    // after the header is consumed.
    let mut filled = 0;
    while filled < PREFIX_LEN {
        let n = stream.read(&mut buf[filled..PREFIX_LEN]).await?;
        if n == 0 {
            return Err(if filled == 0 {
                HandshakeError::ClosedEarly
            } else {
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()
            });
        }
        filled += n;
        // Fail fast on a wrong magic or version without waiting for more.
        Request::decode(&buf[..filled])?;
    }
    let body_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    Request::check_body_len(body_len)?;
    let body = &mut buf[PREFIX_LEN..PREFIX_LEN + body_len];
    stream.read_exact(body).await?;
    Ok(Request::decode_body(body)?)
}

/// Writes a request header and flushes it, within `timeout`.
pub async fn write_request<W>(
    stream: &mut W,
    request: &Request,
    timeout: Duration,
) -> Result<(), HandshakeError>
where
    W: AsyncWrite + Unpin,
{
    let bytes = request.encode()?;
    tokio::time::timeout(timeout, async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| HandshakeError::Timeout(timeout))??;
    Ok(())
}

/// Reads the one-byte status, and nothing after it, within `timeout`.
pub async fn read_status<R>(stream: &mut R, timeout: Duration) -> Result<Status, HandshakeError>
where
    R: AsyncRead + Unpin,
{
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(timeout, stream.read(&mut byte))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))??;
    if n == 0 {
        return Err(HandshakeError::ClosedEarly);
    }
    Ok(Status::from_byte(byte[0]))
}

/// Writes the status byte and flushes it, within `timeout`. After a refusal
/// the caller should shut the stream down (`AsyncWriteExt::shutdown`) so the
/// agent sees the close at once.
pub async fn write_status<W>(
    stream: &mut W,
    status: Status,
    timeout: Duration,
) -> Result<(), HandshakeError>
where
    W: AsyncWrite + Unpin,
{
    tokio::time::timeout(timeout, async {
        stream.write_all(&status.encode()).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| HandshakeError::Timeout(timeout))??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Reason, Source, Target};

    fn sample() -> Request {
        Request {
            target: Target {
                namespace: "shop".into(),
                service: "backend".into(),
                port: 80,
            },
            source: Source {
                cluster: "west".into(),
                namespace: None,
                service_account: Some("default".into()),
            },
        }
    }

    #[tokio::test]
    async fn request_then_payload_stays_separate() {
        let (mut agent, mut gateway) = tokio::io::duplex(64);
        let sent = sample();
        let writer = tokio::spawn(async move {
            write_request(&mut agent, &sent, Duration::from_secs(1))
                .await
                .unwrap();
            agent.write_all(b"hello").await.unwrap();
            agent
        });
        let got = read_request(&mut gateway, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got, sample());
        let mut rest = [0u8; 5];
        gateway.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_is_refused_without_waiting_for_a_whole_header() {
        let (mut agent, mut gateway) = tokio::io::duplex(64);
        agent.write_all(b"GE").await.unwrap();
        let err = read_request(&mut gateway, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Wire(WireError::BadMagic)));
    }

    #[tokio::test]
    async fn close_before_anything_and_silence_are_told_apart() {
        let (agent, mut gateway) = tokio::io::duplex(64);
        drop(agent);
        let err = read_request(&mut gateway, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::ClosedEarly));

        let (_agent, mut gateway) = tokio::io::duplex(64);
        let err = read_request(&mut gateway, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(_)));
    }

    #[tokio::test]
    async fn status_byte_then_payload() {
        let (mut gateway, mut agent) = tokio::io::duplex(64);
        write_status(
            &mut gateway,
            Status::Refused(Reason::NoEndpoints),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        write_status(&mut gateway, Status::Ok, Duration::from_secs(1))
            .await
            .unwrap();
        let timeout = Duration::from_secs(1);
        assert_eq!(
            read_status(&mut agent, timeout).await.unwrap(),
            Status::Refused(Reason::NoEndpoints)
        );
        assert_eq!(read_status(&mut agent, timeout).await.unwrap(), Status::Ok);
        drop(gateway);
        assert!(matches!(
            read_status(&mut agent, timeout).await,
            Err(HandshakeError::ClosedEarly)
        ));
    }
}
