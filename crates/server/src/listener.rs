//! The front door: accepts connections on a thread of its own and answers health probes there.
//!
//! Under overload the async workers have hundreds of ready tasks (requests being parsed,
//! admitted or shed); a connection accepted among them waits its turn, and a Kubernetes probe
//! that waits too long restarts a server that was merely busy. So the listening socket belongs
//! to a small single-threaded runtime on its own thread. It accepts each connection, peeks at
//! its first bytes without consuming them, and:
//! - a request line for `/livez`, `/readyz` or `/metrics` is served right there, by the same
//!   router (same middleware, same answers), so probes never queue behind searches;
//! - anything else is handed to the main runtime through a channel ([`HandoffListener`]) and
//!   served by `axum::serve` as usual.
//!
//! It also closes without resetting queued connections. Dropping a listening socket makes the
//! kernel reset every connection still waiting in its accept queue: clients that already sent
//! a request see "connection reset" although the server never read it. On close the front door
//! first accepts everything already queued (each is routed as above and answered with
//! `Connection: close`), then closes the socket; once the last handed-off connection has been
//! taken by the main server, [`HandoffListener`] reports the listener closed and the server
//! stops accepting and drains. Clients arriving after that are refused cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// Paths the front door serves itself (exact path; a query string is allowed).
const FRONT_PATHS: [&str; 3] = ["/livez", "/readyz", "/metrics"];
/// How long the front door waits for a silent connection's first bytes before handing it to
/// the main server anyway (which then applies its own rules to it).
const PEEK_TIMEOUT: Duration = Duration::from_secs(1);
/// On close, how long health connections still open may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Connections waiting for the main runtime to take them.
const HANDOFF_QUEUE: usize = 1024;

type Handoff = (std::net::TcpStream, SocketAddr);

/// Starts the front door on its own thread. Returns the listener the main server accepts from.
/// `close` turning true (or its sender going away) starts the close described in the module
/// docs; `closed` fires once the socket is gone and every queued connection was taken.
pub(crate) fn start(
    listener: TcpListener,
    app: Router,
    close: watch::Receiver<bool>,
    closed: oneshot::Sender<()>,
) -> std::io::Result<HandoffListener> {
    let addr = listener.local_addr()?;
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ironsift-front")
        .build()?;
    let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
    std::thread::Builder::new()
        .name("ironsift-front".into())
        .spawn(move || runtime.block_on(front_door(listener, app, close, tx)))?;
    Ok(HandoffListener {
        rx,
        addr,
        closed: Some(closed),
        draining: Default::default(),
    })
}

async fn front_door(
    listener: std::net::TcpListener,
    app: Router,
    mut close: watch::Receiver<bool>,
    to_main: mpsc::Sender<Handoff>,
) {
    // Readiness from the runtime, accepts as plain syscalls: a connection handed to the main
    // server is never registered with this runtime's poller (a storm of new connections costs
    // this thread an accept, a flag and a peek each).
    // SAFETY: a `std::net::TcpListener` owns its descriptor, which stays open and the same
    // until the `AsyncFd` (which owns the listener) is dropped.
    #[allow(unsafe_code)]
    let registered =
        unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) };
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            let e = e.into_parts().1;
            // Dropping `to_main` tells the main server there is nothing to serve.
            tracing::error!(error = %e, "the front door cannot listen");
            return;
        }
    };
    let door = Door { app, to_main };
    let mut conns = JoinSet::new();
    while !*close.borrow() {
        tokio::select! {
            ready = listener.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => { on_accept_error(e).await; continue; }
                };
                // A bounded batch, then back to the loop (closing, reaping, yielding).
                for _ in 0..64 {
                    match guard.try_io(|l| l.get_ref().accept()) {
                        Ok(Ok((s, a))) => door.dispatch(s, a, &mut conns),
                        Ok(Err(e)) => { on_accept_error(e).await; break; }
                        Err(_would_block) => break,
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = close.changed() => if changed.is_err() { break },
        }
    }
    // Accept what is already queued (the socket is non-blocking: stops at "would block").
    loop {
        match listener.get_ref().accept() {
            Ok((s, a)) => door.dispatch(s, a, &mut conns),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => on_accept_error(e).await,
        }
    }
    drop(listener);
    drop(door);
    let drained = tokio::time::timeout(CLOSE_GRACE, async {
        while conns.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::debug!(
            connections = conns.len(),
            "front door: closing health connections still open"
        );
    }
}

struct Door {
    app: Router,
    to_main: mpsc::Sender<Handoff>,
}

impl Door {
    /// Routes a just-accepted connection: at once when its first bytes are there (the usual
    /// case: a client sends its request right after connecting), else in a task that waits.
    fn dispatch(&self, stream: std::net::TcpStream, addr: SocketAddr, conns: &mut JoinSet<()>) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut buf = [0u8; 24];
        let kind = match stream.peek(&mut buf) {
            // The peer already went away.
            Ok(0) => return,
            Ok(n) => classify(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Kind::Undecided,
            Err(_) => return,
        };
        if kind == Kind::Main {
            match self.to_main.try_send((stream, addr)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(h)) => {
                    let to_main = self.to_main.clone();
                    conns.spawn(async move {
                        let _ = to_main.send(h).await;
                    });
                }
                // The main server is gone: the connection is dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
            return;
        }
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "front door: cannot register a connection");
                return;
            }
        };
        if kind == Kind::Front {
            conns.spawn(serve_here(stream, addr, self.app.clone()));
        } else {
            conns.spawn(route(stream, addr, self.app.clone(), self.to_main.clone()));
        }
    }
}

/// What a connection's first bytes say.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// A request the front door serves itself.
    Front,
    /// Anything else: the main server's.
    Main,
    /// Not decided yet: more bytes are needed.
    Undecided,
}

fn classify(head: &[u8]) -> Kind {
    let mut undecided = false;
    for method in ["GET ", "HEAD "] {
        for path in FRONT_PATHS {
            let (m, p) = (method.as_bytes(), path.as_bytes());
            let want = m.len() + p.len();
            let matches_so_far = head.iter().zip(m.iter().chain(p)).all(|(a, b)| a == b);
            if !matches_so_far {
                continue;
            }
            match head.get(want) {
                Some(b' ' | b'?') => return Kind::Front,
                Some(_) => {}
                None => undecided = true,
            }
        }
    }
    if undecided {
        Kind::Undecided
    } else {
        Kind::Main
    }
}

async fn route(stream: TcpStream, addr: SocketAddr, app: Router, to_main: mpsc::Sender<Handoff>) {
    let deadline = tokio::time::Instant::now() + PEEK_TIMEOUT;
    let mut buf = [0u8; 24];
    let kind = loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => break Kind::Main,
            // The peer went away before sending anything.
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(n)) => match classify(&buf[..n]) {
                Kind::Undecided if tokio::time::Instant::now() < deadline => {
                    // Part of a request line: peek returns at once until more arrives.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Kind::Undecided => break Kind::Main,
                k => break k,
            },
        }
    };
    if kind == Kind::Front {
        drop(to_main);
        serve_here(stream, addr, app).await;
        return;
    }
    match stream.into_std() {
        // Fails only once the main server is gone: the connection is dropped then.
        Ok(s) => {
            let _ = to_main.send((s, addr)).await;
        }
        Err(e) => tracing::debug!(error = %e, "front door: cannot hand a connection over"),
    }
}

/// Serves one connection on the front door's runtime with the full router.
async fn serve_here(stream: TcpStream, addr: SocketAddr, app: Router) {
    // Nagle's algorithm would hold small responses back ~40 ms waiting for an ACK.
    let _ = stream.set_nodelay(true);
    let svc = tower::ServiceExt::map_request(
        app,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(ConnectInfo(ClientAddr(addr, None)));
            req
        },
    );
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(svc),
        );
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "front door: health connection ended with an error");
    }
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

/// The main server's side of the front door: connections handed over by it.
pub(crate) struct HandoffListener {
    rx: mpsc::Receiver<Handoff>,
    addr: SocketAddr,
    closed: Option<oneshot::Sender<()>>,
    /// Set when the front door has closed: the connections' idle limit drops.
    draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl axum::serve::Listener for HandoffListener {
    type Io = crate::conn_guard::Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (crate::conn_guard::Guarded, SocketAddr) {
        loop {
            let Some((s, a)) = self.rx.recv().await else {
                // The front door closed its socket and every queued connection was taken.
                self.draining
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                if let Some(tx) = self.closed.take() {
                    let _ = tx.send(());
                }
                return std::future::pending().await;
            };
            match TcpStream::from_std(s) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return (crate::conn_guard::Guarded::new(s, self.draining.clone()), a);
                }
                Err(e) => tracing::warn!(error = %e, "cannot take over a connection"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// The peer address of a connection (for per-client rate limits when no API key is sent),
/// and for the main server's connections what their requests tell the connection guard.
#[derive(Debug, Clone)]
pub(crate) struct ClientAddr(
    pub(crate) SocketAddr,
    pub(crate) Option<std::sync::Arc<crate::conn_guard::Activity>>,
);

impl<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, HandoffListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'a, HandoffListener>) -> Self {
        ClientAddr(*stream.remote_addr(), Some(stream.io().activity()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::routing::get;

    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("?").to_string()
    }

    /// Sends raw request bytes (in parts, with a pause between them) and reads until the
    /// server closes; returns the bodies' text (everything after the last blank line).
    fn exchange(addr: SocketAddr, parts: &[&str]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(50));
            }
            s.write_all(p.as_bytes()).unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn get_once(addr: SocketAddr, path: &str) -> String {
        let raw = exchange(
            addr,
            &[&format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )],
        );
        raw.rsplit("\r\n\r\n").next().unwrap_or("").to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probes_are_answered_while_the_main_runtime_is_stuck() {
        let unstuck = Arc::new(AtomicBool::new(false));
        let u = unstuck.clone();
        let app = Router::new()
            .route("/livez", get(|| async { thread_name() }))
            .route("/where", get(|| async { thread_name() }))
            .route(
                "/stuck",
                get(move || async move {
                    // Blocks the (only) main runtime thread, as a flood of ready tasks would.
                    std::thread::sleep(Duration::from_secs(3));
                    u.store(true, Ordering::SeqCst);
                    "unstuck"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close_tx, close_rx) = watch::channel(false);
        let (closed_tx, closed_rx) = oneshot::channel();
        let main = start(listener, app.clone(), close_rx, closed_tx).unwrap();
        let server = tokio::spawn(
            axum::serve(
                main,
                app.into_make_service_with_connect_info::<ClientAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = closed_rx.await;
            })
            .into_future(),
        );
        let main_thread = thread_name();
        let clients = tokio::task::spawn_blocking(move || {
            // Other paths are served by the main runtime, probes by the front door.
            assert_eq!(get_once(addr, "/where"), main_thread);
            assert_eq!(get_once(addr, "/livez"), "ironsift-front");
            let stuck = std::thread::spawn(move || get_once(addr, "/stuck"));
            std::thread::sleep(Duration::from_millis(300));
            // The main runtime is stuck for 3 s: the probe is still answered, at once.
            assert_eq!(get_once(addr, "/livez?x=1"), "ironsift-front");
            // A request line arriving in pieces is still recognised.
            let raw = exchange(
                addr,
                &[
                    "GET /li",
                    "vez HTTP/1.1\r\nHost: x\r\n",
                    "Connection: close\r\n\r\n",
                ],
            );
            assert!(raw.ends_with("ironsift-front"), "{raw}");
            assert!(
                !unstuck.load(Ordering::SeqCst),
                "probes waited for the stuck runtime"
            );
            assert_eq!(stuck.join().unwrap(), "unstuck");
            // A keep-alive connection that began with a probe is served whole by the front
            // door (same router, same answers).
            let raw = exchange(
                addr,
                &[
                    "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
                    "GET /where HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                ],
            );
            assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}");
        });
        clients.await.unwrap();
        // Closing: the socket goes, the main server stops; new connections are refused.
        close_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server did not stop after the front door closed")
            .unwrap()
            .unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn probes_are_recognised_from_their_first_bytes() {
        assert_eq!(classify(b"GET /livez HTTP/1.1\r\n"), Kind::Front);
        assert_eq!(classify(b"GET /readyz?verbose HTTP/1.1"), Kind::Front);
        assert_eq!(classify(b"HEAD /readyz HTTP/1.1"), Kind::Front);
        assert_eq!(classify(b"GET /metrics HTTP/1.1"), Kind::Front);
        assert_eq!(classify(b"GET /readyzz HTTP/1.1"), Kind::Main);
        assert_eq!(classify(b"GET /readyz/x HTTP/1.1"), Kind::Main);
        assert_eq!(classify(b"POST /livez HTTP/1.1"), Kind::Main);
        assert_eq!(classify(b"GET /v1/indexes/a/search?q=x"), Kind::Main);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Kind::Main);
        for partial in [
            &b""[..],
            b"G",
            b"GET",
            b"GET /",
            b"GET /re",
            b"GET /readyz",
            b"HE",
        ] {
            assert_eq!(classify(partial), Kind::Undecided, "{partial:?}");
        }
        assert_eq!(classify(b"GET /v"), Kind::Main);
        assert_eq!(classify(b"\x16\x03\x01"), Kind::Main);
    }
}
