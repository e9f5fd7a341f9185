//! Silent and slow clients on the main server's connections.
//!
//! `axum::serve` gives hyper no timer, so hyper's own header-read timeout never runs: a client
//! that connects and sends nothing, or half a request line, holds its connection (and a file
//! descriptor) for ever, and a graceful shutdown waits for it until its timeout. Every
//! connection handed to the main server is therefore a [`Guarded`] stream: while no request
//! of it is being handled, reading that makes no progress for [`IDLE_LIMIT`]
//! ([`IDLE_LIMIT_DRAINING`] once the server drains) ends the connection, and so does a
//! request head still incomplete that long after its first byte (bytes trickling in one at a
//! time). A request being handled is never cut off by
//! this (its handler has its own deadlines, and request bodies their own idle timeout, see
//! [`BODY_IDLE_LIMIT`]); the clock starts again when its answer is written.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A connection with no request in progress may stay silent this long (the wait for a
/// request's head, and the keep-alive idle time between requests).
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// The same once the server is draining for shutdown.
pub(crate) const IDLE_LIMIT_DRAINING: Duration = Duration::from_secs(1);
/// A request body may pause this long between two pieces.
pub(crate) const BODY_IDLE_LIMIT: Duration = Duration::from_secs(30);
/// How often a waiting connection looks at the clock and the drain flag.
const TICK: Duration = Duration::from_secs(1);

/// Nanoseconds since the first use: an `Instant` that fits an atomic (tokio's clock, which
/// is the system's unless a test pauses it).
fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(epoch).as_nanos() as u64
}

/// What the request middleware tells a connection about its requests.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Requests started on the connection so far.
    started: AtomicU64,
    /// When the last request of the connection ended ([`now_nanos`]).
    last_end: AtomicU64,
}

/// Held while a request is handled; stamps the end when dropped.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(crate) fn new(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.started.fetch_add(1, Ordering::SeqCst);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_end.store(now_nanos(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection of the main server (see the module docs).
pub(crate) struct Guarded {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// Set once the server drains: the limit drops to [`IDLE_LIMIT_DRAINING`].
    draining: Arc<AtomicBool>,
    /// Last read or write that moved bytes ([`now_nanos`]).
    last_io: u64,
    /// When the first byte of a request not yet started was read: a request's head must be
    /// complete within the limit however slowly its bytes trickle in.
    head_since: Option<u64>,
    /// [`Activity::started`] when `head_since` was last looked at.
    seen_started: u64,
    tick: Pin<Box<Sleep>>,
}

impl Guarded {
    pub(crate) fn new(inner: TcpStream, draining: Arc<AtomicBool>) -> Guarded {
        Guarded {
            inner,
            activity: Arc::new(Activity::default()),
            draining,
            last_io: now_nanos(),
            head_since: None,
            seen_started: 0,
            tick: Box::pin(tokio::time::sleep(TICK)),
        }
    }

    pub(crate) fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Whether the connection, with nothing in progress, has been silent past the limit or
    /// has been sending a request's head for longer than that.
    fn expired(&mut self) -> bool {
        self.note_started();
        if self.activity.in_flight.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let last = self
            .last_io
            .max(self.activity.last_end.load(Ordering::SeqCst));
        let limit = if self.draining.load(Ordering::SeqCst) {
            IDLE_LIMIT_DRAINING
        } else {
            IDLE_LIMIT
        }
        .as_nanos() as u64;
        let now = now_nanos();
        now.saturating_sub(last) >= limit
            || self
                .head_since
                .is_some_and(|t| now.saturating_sub(t) >= limit)
    }

    /// Forgets the head clock once a request has started since it was set.
    fn note_started(&mut self) {
        let started = self.activity.started.load(Ordering::SeqCst);
        if started != self.seen_started {
            self.seen_started = started;
            self.head_since = None;
        }
    }

    /// Bytes were read: they belong to a request's head if no request is in progress.
    fn on_bytes_read(&mut self) {
        self.note_started();
        if self.head_since.is_none() && self.activity.in_flight.load(Ordering::SeqCst) == 0 {
            self.head_since = Some(now_nanos());
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.last_io = now_nanos();
                if r.is_ok() && buf.filled().len() > before {
                    this.on_bytes_read();
                    if this.expired() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request head not complete within its limit",
                        )));
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => loop {
                if this.tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if this.expired() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past its limit",
                    )));
                }
                let next = tokio::time::Instant::now() + TICK;
                this.tick.as_mut().reset(next);
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.last_io = now_nanos();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.last_io = now_nanos();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Guarded, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (
            Guarded::new(server, Arc::new(AtomicBool::new(false))),
            client,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_ends_but_not_while_a_request_is_handled() {
        let (mut g, mut client) = pair().await;
        // Bytes arriving reset the clock.
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(g.read(&mut buf).await.unwrap(), 8);
        // A request in progress: no limit, however long.
        let busy = InFlight::new(g.activity());
        let waited = tokio::time::timeout(IDLE_LIMIT * 3, g.read(&mut buf)).await;
        assert!(waited.is_err(), "the read must still be waiting");
        drop(busy);
        // Idle again: cut off after the limit.
        let started = tokio::time::Instant::now();
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= IDLE_LIMIT - TICK && took <= IDLE_LIMIT + 2 * TICK,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickling_in_byte_by_byte_ends_at_the_limit() {
        let (mut g, mut client) = pair().await;
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 16];
        let end = loop {
            // One byte every 5 s: never silent for long, yet never a whole head.
            if client.write_all(b"G").await.is_err() {
                break started.elapsed();
            }
            match g.read(&mut buf).await {
                Ok(_) => tokio::time::sleep(Duration::from_secs(5)).await,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                    break started.elapsed();
                }
            }
            assert!(started.elapsed() < IDLE_LIMIT * 3, "never cut off");
        };
        assert!(
            end >= IDLE_LIMIT && end <= IDLE_LIMIT + Duration::from_secs(6),
            "{end:?}"
        );
        // A request that starts resets the head clock.
        let (mut g, mut client) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(g.read(&mut buf).await.unwrap() > 0);
        drop(InFlight::new(g.activity()));
        tokio::time::sleep(IDLE_LIMIT - Duration::from_secs(2)).await;
        client.write_all(b"G").await.unwrap();
        assert!(
            g.read(&mut buf).await.is_ok(),
            "a new head has its own clock"
        );
    }
}
