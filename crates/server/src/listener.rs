//! A TCP listener that closes without resetting queued connections.
//!
//! Dropping a listening socket makes the kernel reset every connection still waiting in its
//! accept queue: clients that already sent a request see "connection reset" although the server
//! never read it. On shutdown this listener first accepts everything already queued (each gets
//! served and answered with `Connection: close`), then closes the socket, then tells the server
//! to stop accepting and drain; clients arriving after that are refused cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

pub(crate) struct DrainingListener {
    inner: Option<TcpListener>,
    addr: SocketAddr,
    close: watch::Receiver<bool>,
    closed: Option<oneshot::Sender<()>>,
}

impl DrainingListener {
    /// `close` turning true starts the close; `closed` fires once the socket is gone.
    pub(crate) fn new(
        inner: TcpListener,
        close: watch::Receiver<bool>,
        closed: oneshot::Sender<()>,
    ) -> std::io::Result<Self> {
        let addr = inner.local_addr()?;
        Ok(DrainingListener {
            inner: Some(inner),
            addr,
            close,
            closed: Some(closed),
        })
    }
}

fn ready(stream: TcpStream, addr: SocketAddr) -> (TcpStream, SocketAddr) {
    // Nagle's algorithm would hold small responses back ~40 ms waiting for an ACK.
    let _ = stream.set_nodelay(true);
    (stream, addr)
}

async fn on_accept_error(e: std::io::Error) {
    // Per-connection errors (the peer went away) are not worth a pause; running out of file
    // descriptors is, or we would spin.
    if !matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
    ) {
        tracing::warn!(error = %e, "accept failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl axum::serve::Listener for DrainingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some(listener) = &self.inner else {
                return std::future::pending().await;
            };
            if *self.close.borrow() {
                // Zero timeout: tokio polls the accept once before looking at the deadline.
                match tokio::time::timeout(Duration::ZERO, listener.accept()).await {
                    Ok(Ok((s, a))) => return ready(s, a),
                    Ok(Err(e)) => on_accept_error(e).await,
                    Err(_) => {
                        self.inner = None;
                        if let Some(tx) = self.closed.take() {
                            let _ = tx.send(());
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, a)) => return ready(s, a),
                    Err(e) => on_accept_error(e).await,
                },
                _ = self.close.changed() => {}
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// The peer address of a connection accepted by [`DrainingListener`] (for per-client rate
/// limits when no API key is sent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

impl<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, DrainingListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'a, DrainingListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}
