//! The accept loop of the public listener, plain or TLS: at most `max_connections` open
//! connections (further clients wait in the kernel's backlog), hyper's HTTP/1 server
//! with a header read timeout (which also closes keep-alive connections idle for that
//! long: hyper starts the timer whenever it waits for a request head), a bounded read
//! buffer (the backstop of the gateway's own header limits) and a bounded header count.
//! Shutdown stops accepting, then lets open connections finish their in-flight
//! requests.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Connection-level limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at once.
    pub max_connections: usize,
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
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for the gateway's limit plus the request line; hyper's minimum is 8 KiB.
        .max_buf_size((limits.max_header_bytes * 2).max(8192) + 16 * 1024)
        .max_headers(limits.max_headers.saturating_mul(2).max(100));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
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
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let watcher = graceful.watcher();
        let builder = builder.clone();
        #[cfg(feature = "tls")]
        let tls = tls.clone();
        #[cfg(not(feature = "tls"))]
        let _ = &tls;
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                tower_service::Service::call(&mut router, req)
            });
            #[cfg(feature = "tls")]
            if let Some(acceptor) = tls {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
