//! The socket as hyper sees it. Reads tell the connection's watchdog when a request head starts
//! arriving; writes replace the empty-bodied error responses hyper composes itself (400, 414,
//! 431 for heads it cannot parse) with the failure envelope.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::canned;
use super::watchdog::ConnState;

pub struct Io {
    stream: Arc<TcpStream>,
    state: Arc<ConnState>,
    /// Our replacement for a response hyper wrote, not yet on the wire.
    replacement: Vec<u8>,
    /// After a replacement, hyper's own bytes for that response are dropped.
    swallowing: bool,
}

impl Io {
    pub fn new(stream: Arc<TcpStream>, state: Arc<ConnState>) -> Self {
        Self {
            stream,
            state,
            replacement: Vec::new(),
            swallowing: false,
        }
    }

    fn flush_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.replacement.is_empty() {
            let n = ready!(poll_write_on(&self.stream, cx, &self.replacement))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.replacement.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

fn poll_write_on(stream: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            // Into the buffer's spare room as it is: zeroing it first (`initialize_unfilled`)
            // would cost a memset per read and make every page of every open connection's read
            // buffer resident.
            match self.stream.try_read_buf(buf) {
                Ok(n) => {
                    if n > 0 {
                        self.state.bytes_arrived();
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.flush_replacement(cx))?;
        if self.swallowing {
            return Poll::Ready(Ok(buf.len()));
        }
        if !self.state.is_busy()
            && let Some(status) = canned::automatic_status(buf)
        {
            self.replacement = canned::response(&canned::for_parse_error(status));
            self.swallowing = true;
            ready!(self.flush_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let written = poll_write_on(&self.stream, cx, buf);
        if written.is_pending() {
            self.state.write_blocked();
        } else {
            self.state.write_progressed();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_replacement(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_replacement(cx))?;
        Poll::Ready(shutdown_write(&self.stream))
    }
}

/// Half-closes the socket (tokio's `TcpStream` does this only through `&mut`, and the
/// connection task keeps a second handle for the responses it writes itself).
pub fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// Writes a small response without waiting (best effort: the socket's send buffer is empty
/// when the connection layer answers on its own), then half-closes.
pub fn answer_and_close(stream: &TcpStream, response: &[u8]) {
    let _ = stream.try_write(response);
    let _ = shutdown_write(stream);
}
