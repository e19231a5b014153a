//! [`MuxStream`]: one proxied connection carried by one HTTP/2 stream,
//! seen as an ordinary `AsyncRead + AsyncWrite` byte stream.
//!
//! * Writing sends DATA frames, never more than the peer's flow-control
//!   window allows (backpressure crosses the tunnel per stream).
//! * Reading returns DATA payloads and gives the window back as soon as a
//!   payload is taken, so at most one frame waits here per stream.
//! * `shutdown` sends END_STREAM: the TCP half-close of the proxied
//!   connection. The other direction keeps flowing.
//! * Dropping the stream before both directions ended resets it
//!   (RST_STREAM), which the peer sees as an error, like a TCP reset.
//! * On the gateway's side the response head is sent with the first write
//!   (the status byte), not when the stream is accepted: the agent gets
//!   HEADERS and the status in one TLS record, one write and one wakeup
//!   fewer per proxied connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::client::ResponseFuture;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest chunk handed to HTTP/2 per write.
const MAX_WRITE: usize = 256 * 1024;

enum Receiving {
    /// Client side: the response head has not arrived yet.
    Head(ResponseFuture),
    /// The response (or request) body.
    Body(RecvStream),
}

enum Sending {
    /// Server side: the response head goes out with the first write.
    Head(SendResponse<Bytes>),
    /// The request (or response) body.
    Body(SendStream<Bytes>),
}

/// A proxied connection over one HTTP/2 stream of a tunnel connection.
pub struct MuxStream {
    sending: Sending,
    receiving: Receiving,
    leftover: Bytes,
    /// Staging for outgoing chunks; its allocation is reused once the
    /// connection has written the chunks cut from it.
    staging: BytesMut,
    write_closed: bool,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stream_id = match &self.sending {
            Sending::Head(respond) => respond.stream_id(),
            Sending::Body(send) => send.stream_id(),
        };
        f.debug_struct("MuxStream")
            .field("stream_id", &stream_id.as_u32())
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

/// Maps an HTTP/2 error to the I/O error a TCP socket would have given.
pub(crate) fn h2_to_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe));
    }
    let kind = if error.is_reset() || error.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, error)
}

impl MuxStream {
    pub(crate) fn client(send: SendStream<Bytes>, response: ResponseFuture) -> MuxStream {
        MuxStream {
            sending: Sending::Body(send),
            receiving: Receiving::Head(response),
            leftover: Bytes::new(),
            staging: BytesMut::new(),
            write_closed: false,
        }
    }

    pub(crate) fn server(respond: SendResponse<Bytes>, body: RecvStream) -> MuxStream {
        MuxStream {
            sending: Sending::Head(respond),
            receiving: Receiving::Body(body),
            leftover: Bytes::new(),
            staging: BytesMut::new(),
            write_closed: false,
        }
    }
}

/// The body's sender, sending the response head first if it is still
/// pending (server side).
fn body_sender(sending: &mut Sending) -> io::Result<&mut SendStream<Bytes>> {
    if let Sending::Head(respond) = sending {
        let send = respond
            .send_response(http::Response::new(()), false)
            .map_err(h2_to_io)?;
        *sending = Sending::Body(send);
    }
    match sending {
        Sending::Body(send) => Ok(send),
        Sending::Head(_) => unreachable!("the head was sent just above"),
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.leftover.is_empty() {
                let n = self.leftover.len().min(buf.remaining());
                buf.put_slice(&self.leftover[..n]);
                self.leftover.advance(n);
                return Poll::Ready(Ok(()));
            }
            match &mut self.receiving {
                Receiving::Head(response) => {
                    let head = ready!(Pin::new(response).poll(cx)).map_err(h2_to_io)?;
                    if !head.status().is_success() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("tunnel answered HTTP {}", head.status()),
                        )));
                    }
                    self.receiving = Receiving::Body(head.into_body());
                }
                Receiving::Body(body) => match ready!(body.poll_data(cx)) {
                    Some(Ok(data)) => {
                        body.flow_control()
                            .release_capacity(data.len())
                            .map_err(h2_to_io)?;
                        self.leftover = data;
                    }
                    Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                    None => return Poll::Ready(Ok(())),
                },
            }
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.write_closed {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        let wanted = buf.len().min(MAX_WRITE);
        let this = &mut *self;
        let send = body_sender(&mut this.sending)?;
        send.reserve_capacity(wanted);
        loop {
            let capacity = send.capacity();
            if capacity > 0 {
                let n = capacity.min(wanted);
                this.staging.reserve(n);
                this.staging.extend_from_slice(&buf[..n]);
                let chunk = this.staging.split().freeze();
                send.send_data(chunk, false).map_err(h2_to_io)?;
                return Poll::Ready(Ok(n));
            }
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                None => return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe))),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are queued in the connection, whose task writes and
        // flushes them; there is nothing to flush per stream.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            let send = body_sender(&mut self.sending)?;
            send.reserve_capacity(0);
            send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
