//! The accept loop of the public listener, plain or TLS: at most
//! `max_connections_per_ip` open connections per client address (a connection beyond it
//! is closed at once, before anything is read), at most `max_connections` in all — at the
//! cap a connection that has not completed a request (TLS handshake, slow first head) or
//! is idle between requests is closed to make room, oldest first ([`crate::slots`]), and
//! only when every connection has a request in flight do new clients wait in the kernel's
//! backlog — and hyper's HTTP/1 server with a header read timeout (which also closes
//! keep-alive connections idle for that long: hyper starts the timer whenever it waits
//! for a request head), a bounded read buffer (the backstop of the gateway's own header
//! limits) and a bounded header count. Shutdown stops accepting, then lets open
//! connections finish their in-flight requests.

use crate::slots::{InFlight, Room, Slot, Slots};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, warn};

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections at once from one client address (IPv4 address or IPv6 /64);
    /// 0 means no per-address limit.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request head; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// The gateway's header byte limit; hyper's read buffer is sized from it.
    pub max_header_bytes: usize,
    /// The gateway's header count limit; hyper's parser allows a few more.
    pub max_headers: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// The TLS side of a connection, when the listener serves HTTPS.
#[cfg(feature = "tls")]
pub(crate) type Tls = Option<tokio_rustls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
pub(crate) type Tls = Option<std::convert::Infallible>;

/// How long a client may take to complete the TLS handshake.
#[cfg(feature = "tls")]
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener's accept queue (the kernel caps it at `net.core.somaxconn`). Tokio's
/// default of 128 overflowed while 1,500 reconnecting slow clients met the connection cap:
/// the kernel then drops a new client's handshake and it retries after a second.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the public listener with a [`LISTEN_BACKLOG`]-deep accept queue.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's `TcpListener::bind`: rebind at once after a restart.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How often connections closed or refused by the limits are summed up in a warning.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` until `shutdown` resolves, then waits for open connections to finish
/// their in-flight requests (the caller bounds that wait).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Tls,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Slots::new(limits.max_connections, limits.max_connections_per_ip);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for the gateway's limit plus the request line; hyper's minimum is 8 KiB.
        .max_buf_size((limits.max_header_bytes * 2).max(8192) + 16 * 1024)
        .max_headers(limits.max_headers.saturating_mul(2).max(100));
    let mut report = Report::default();
    tokio::pin!(shutdown);
    'accept: loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        report.maybe_log();
        if slots.address_full(peer.ip()) {
            // Closed before anything is read: no HTTP answer (like a load balancer's
            // connection limit), and nothing for a flood from one address to hold.
            debug!("refused a connection from {peer}: its address holds its limit");
            report.refused += 1;
            drop(tcp);
            continue;
        }
        // At the cap: close a slow or idle connection; if every one has a request in
        // flight, wait (this client and those behind it wait in the backlog).
        loop {
            match slots.make_room() {
                Room::Free => break,
                Room::Made => {
                    report.closed += 1;
                    break;
                }
                Room::Wait => {}
            }
            tokio::select! {
                _ = &mut shutdown => break 'accept,
                _ = slots.released() => {}
                // A busy connection may become idle without ending.
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        let _ = tcp.set_nodelay(true);
        let handle = slots.register(peer.ip());
        let conn = ConnTask {
            router: router.clone(),
            watcher: graceful.watcher(),
            builder: builder.clone(),
            slots: slots.clone(),
            slot: handle.slot().clone(),
            peer,
        };
        #[cfg(feature = "tls")]
        let tls = tls.clone();
        #[cfg(not(feature = "tls"))]
        let _ = &tls;
        tokio::spawn(async move {
            let slot = conn.slot.clone();
            {
                #[cfg(feature = "tls")]
                let serving = conn.run(tcp, tls);
                #[cfg(not(feature = "tls"))]
                let serving = conn.run(tcp);
                tokio::pin!(serving);
                loop {
                    tokio::select! {
                        _ = &mut serving => break,
                        _ = slot.close_requested() => {
                            // Only this task polls the connection, so no request can
                            // begin between this check and dropping it.
                            if slot.closing() {
                                debug!("closed the connection from {peer} to make room");
                                break;
                            }
                        }
                    }
                }
                // The connection (and its socket) is dropped here ...
            }
            // ... before the slot is given back.
            drop(handle);
        });
    }
    drop(listener);
    report.maybe_log();
    graceful.shutdown().await;
    Ok(())
}

/// Counts of connections refused and closed by the limits, logged at most every
/// [`REPORT_EVERY`] (a flood would otherwise write a line per connection).
struct Report {
    refused: u64,
    closed: u64,
    since: Instant,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            refused: 0,
            closed: 0,
            since: Instant::now(),
        }
    }
}

impl Report {
    fn maybe_log(&mut self) {
        if self.refused + self.closed == 0 || self.since.elapsed() < REPORT_EVERY {
            return;
        }
        warn!(
            refused = self.refused,
            closed = self.closed,
            "connection limits: in the last {}s refused {} connections over the per-address limit (--max-connections-per-ip) and closed {} idle or slow connections to make room under --max-connections",
            self.since.elapsed().as_secs(),
            self.refused,
            self.closed
        );
        *self = Self::default();
    }
}

/// What one connection's task needs.
struct ConnTask {
    router: Router,
    watcher: Watcher,
    builder: hyper::server::conn::http1::Builder,
    slots: Arc<Slots>,
    slot: Arc<Slot>,
    peer: SocketAddr,
}

impl ConnTask {
    /// Handshakes (with TLS) and serves the connection until it ends.
    async fn run(self, tcp: TcpStream, #[cfg(feature = "tls")] tls: Tls) {
        let ConnTask {
            router,
            watcher,
            builder,
            slots,
            slot,
            peer,
        } = self;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = slots.begin(&slot);
            let mut router = router.clone();
            let response = tower_service::Service::call(&mut router, req);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        #[cfg(feature = "tls")]
        if let Some(acceptor) = tls {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!("TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!("TLS handshake with {peer} timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                debug!("connection from {peer}: {e}");
            }
            return;
        }
        let conn = builder.serve_connection(TokioIo::new(tcp), service);
        if let Err(e) = watcher.watch(conn).await {
            debug!("connection from {peer}: {e}");
        }
    }
}

/// A response body that keeps its request marked in flight until hyper has written it.
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = <axum::body::Body as Body>::Data;
    type Error = <axum::body::Body as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
