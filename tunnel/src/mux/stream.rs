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
///
/// The generic I/O traits copy through a staging buffer; the splice of the
/// agent and the gateway ([`crate::splice::forward_tcp_to_tunnel`],
/// [`crate::splice::splice_tunnel`]) use [`MuxStream::halves`] to hand
/// HTTP/2 whole `Bytes` both ways instead.
pub struct MuxStream {
    send: MuxSend,
    recv: MuxRecv,
}

/// The sending half of a [`MuxStream`].
pub struct MuxSend {
    sending: Sending,
    /// Staging for chunks written through `AsyncWrite`; its allocation is
    /// reused once the connection has written the chunks cut from it.
    staging: BytesMut,
    write_closed: bool,
}

/// The receiving half of a [`MuxStream`].
pub struct MuxRecv {
    receiving: Receiving,
    /// What a read through `AsyncRead` left of the last DATA payload.
    leftover: Bytes,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stream_id = match &self.send.sending {
            Sending::Head(respond) => respond.stream_id(),
            Sending::Body(send) => send.stream_id(),
        };
        f.debug_struct("MuxStream")
            .field("stream_id", &stream_id.as_u32())
            .field("write_closed", &self.send.write_closed)
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
        MuxStream::new(Sending::Body(send), Receiving::Head(response))
    }

    pub(crate) fn server(respond: SendResponse<Bytes>, body: RecvStream) -> MuxStream {
        MuxStream::new(Sending::Head(respond), Receiving::Body(body))
    }

    fn new(sending: Sending, receiving: Receiving) -> MuxStream {
        MuxStream {
            send: MuxSend {
                sending,
                staging: BytesMut::new(),
                write_closed: false,
            },
            recv: MuxRecv {
                receiving,
                leftover: Bytes::new(),
            },
        }
    }

    /// Both halves at once, so each direction can be driven on its own.
    pub fn halves(&mut self) -> (&mut MuxSend, &mut MuxRecv) {
        (&mut self.send, &mut self.recv)
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

impl MuxSend {
    /// Queues all of `chunk` as DATA frames, waiting for flow-control
    /// capacity as needed; `chunk` shrinks by what was queued, so a call
    /// after `Pending` goes on where the last one stopped. No copy: HTTP/2
    /// writes the chunk's own bytes.
    pub fn poll_send(&mut self, cx: &mut Context<'_>, chunk: &mut Bytes) -> Poll<io::Result<()>> {
        if self.write_closed {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        let send = body_sender(&mut self.sending)?;
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len().min(MAX_WRITE));
            let capacity = send.capacity();
            if capacity > 0 {
                let part = chunk.split_to(capacity.min(chunk.len()));
                send.send_data(part, false).map_err(h2_to_io)?;
                continue;
            }
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(h2_to_io(error))),
                None => return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Ends this direction (END_STREAM), like a TCP half-close.
    fn close(&mut self) -> io::Result<()> {
        if !self.write_closed {
            self.write_closed = true;
            let send = body_sender(&mut self.sending)?;
            send.reserve_capacity(0);
            send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Ok(())
    }
}

impl MuxRecv {
    /// The next received bytes, whole as they arrived (`None` at the end
    /// of the stream). Flow-control capacity is given back as soon as a
    /// payload is taken.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.leftover.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.leftover))));
        }
        loop {
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
                Receiving::Body(body) => {
                    return match ready!(body.poll_data(cx)) {
                        Some(Ok(data)) => {
                            body.flow_control()
                                .release_capacity(data.len())
                                .map_err(h2_to_io)?;
                            Poll::Ready(Ok(Some(data)))
                        }
                        Some(Err(error)) => Poll::Ready(Err(h2_to_io(error))),
                        None => Poll::Ready(Ok(None)),
                    };
                }
            }
        }
    }
}

impl AsyncRead for MuxRecv {
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
            match ready!(self.poll_chunk(cx))? {
                Some(data) => self.leftover = data,
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for MuxSend {
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
        Poll::Ready(self.close())
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}
