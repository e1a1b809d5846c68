//! The socket as hyper sees it. Reads tell the connection's watchdog when a request head starts
//! arriving; writes replace the empty-bodied error responses hyper composes itself (400, 414,
//! 431 for heads it cannot parse) with the failure envelope.

use std::io::{self, IoSlice};
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

fn poll_write_vectored_on(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
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

impl Io {
    /// What every write does first: the replacement still owed goes out, hyper's bytes for a
    /// replaced response are dropped, and one of hyper's own empty-bodied refusals (its head
    /// is the first bytes hyper writes for it) is replaced. `Some` answers the write.
    fn before_write(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        len: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        match self.flush_replacement(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
            Poll::Pending => return Some(Poll::Pending),
        }
        if self.swallowing {
            return Some(Poll::Ready(Ok(len)));
        }
        if !self.state.is_busy()
            && let Some(status) = canned::automatic_status(head)
        {
            self.replacement = canned::response(&canned::for_parse_error(status));
            self.swallowing = true;
            return Some(self.flush_replacement(cx).map_ok(|()| len));
        }
        None
    }

    fn after_write(&self, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if written.is_pending() {
            self.state.write_blocked();
        } else {
            self.state.write_progressed();
        }
        written
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(answered) = self.before_write(cx, buf, buf.len()) {
            return answered;
        }
        let written = poll_write_on(&self.stream, cx, buf);
        self.after_write(written)
    }

    /// Vectored, so hyper queues a response's body behind its head instead of copying both
    /// into a buffer of the connection's own, which then stays at that size for as long as the
    /// connection is open (2.5 KB per connection for a CSR: 25 MB with 10,000 open).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let head = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if let Some(answered) = self.before_write(cx, head, len) {
            return answered;
        }
        let written = poll_write_vectored_on(&self.stream, cx, bufs);
        self.after_write(written)
    }

    fn is_write_vectored(&self) -> bool {
        true
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
