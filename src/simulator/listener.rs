//! A TCP listener whose connections a request handler can sever: the simulator loses an
//! answer (the `lose_answer` fault) by closing the connection instead of writing it, so the
//! client sees exactly what a timeout or a reset shows it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// One accepted connection, as the handlers see it (`ConnectInfo<Connection>`).
#[derive(Clone, Debug)]
pub struct Connection {
    /// Once set, nothing more is written: the answer in flight is dropped with the connection.
    pub severed: Arc<AtomicBool>,
}

/// Accepts TCP connections that [`Connection::severed`] can cut.
pub struct SeverableListener(pub TcpListener);

impl Listener for SeverableListener {
    type Io = Severable;
    type Addr = Connection;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, _) = Listener::accept(&mut self.0).await;
        let severed = Arc::new(AtomicBool::new(false));
        let io = Severable {
            stream,
            severed: severed.clone(),
        };
        (io, Connection { severed })
    }

    /// A fresh connection's state: the local address itself is the inner listener's.
    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr().map(|_| Connection {
            severed: Arc::default(),
        })
    }
}

impl Connected<IncomingStream<'_, SeverableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, SeverableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that refuses every write once severed, so the server drops the connection.
pub struct Severable {
    stream: TcpStream,
    severed: Arc<AtomicBool>,
}

impl Severable {
    fn check(&self) -> io::Result<()> {
        match self.severed.load(Ordering::SeqCst) {
            true => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "answer lost on purpose",
            )),
            false => Ok(()),
        }
    }
}

impl AsyncRead for Severable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
