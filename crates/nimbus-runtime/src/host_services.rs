//! Services on the host's loopback that a function may reach (`host_services`): for each
//! listed address the executor binds the same address inside the instance's network
//! namespace and forwards every connection made there to the host's service, from the
//! server's own (host) namespace. The instance reaches `127.0.0.1:5432` as if the database
//! were local and nothing else of the host's loopback. Without a namespace of its own
//! (degraded hosts) the instance is on the host network already and nothing is bound.
//!
//! An instance holds at most 256 connections to each service at once (each costs the server
//! a descriptor). The forwards live as long as the instance: dropping [`HostForwards`] stops accepting;
//! open connections end when either side closes (the instance's side closes when its
//! processes are gone).

use crate::netns::NetNs;
use crate::RuntimeError;
use std::net::SocketAddrV4;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn, Instrument};

/// Connections one instance may hold open to one host service at once: each costs the
/// server a descriptor on the host side, so a function cannot exhaust the server's.
const MAX_CONNECTIONS: usize = 256;

/// The forwards of one instance; dropping it stops them.
pub(crate) struct HostForwards {
    _stops: Vec<oneshot::Sender<()>>,
}

/// Binds each of `services` in `ns` and forwards connections to the host's service.
/// `None` without a namespace or without services.
pub(crate) async fn forward(
    function: &str,
    services: &[SocketAddrV4],
    ns: Option<&NetNs>,
) -> Result<Option<HostForwards>, RuntimeError> {
    let Some(ns) = ns.filter(|_| !services.is_empty()) else {
        return Ok(None);
    };
    let mut stops = Vec::with_capacity(services.len());
    for &addr in services {
        let listener = ns.bind(addr).await.map_err(|e| {
            RuntimeError::Network(format!(
                "cannot offer host service {addr} inside the instance: {e}"
            ))
        })?;
        let listener = TcpListener::from_std(listener)?;
        let (tx, rx) = oneshot::channel();
        let span = tracing::debug_span!("host_service", function, %addr);
        tokio::spawn(serve(listener, addr, rx).instrument(span));
        stops.push(tx);
    }
    Ok(Some(HostForwards { _stops: stops }))
}

/// Accepts in the instance's namespace until `stop` resolves or is dropped.
async fn serve(listener: TcpListener, addr: SocketAddrV4, mut stop: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Warned once per time the limit is reached, not per refused connection.
    let mut at_limit = false;
    loop {
        let conn = tokio::select! {
            _ = &mut stop => return,
            c = listener.accept() => c,
        };
        let Ok((mut inner, _)) = conn else {
            // Out of descriptors or an aborted handshake: keep serving the others.
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !at_limit {
                warn!("the instance holds {MAX_CONNECTIONS} connections to the host service: refusing more");
            }
            at_limit = true;
            continue;
        };
        at_limit = false;
        tokio::spawn(
            async move {
                let _slot = slot;
                let mut outer = match TcpStream::connect(addr).await {
                    Ok(s) => s,
                    Err(e) => {
                        // The instance sees a closed connection, as with the service down.
                        debug!("cannot reach the host service: {e}");
                        return;
                    }
                };
                let _ = inner.set_nodelay(true);
                let _ = outer.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inner, &mut outer).await;
            }
            .in_current_span(),
        );
    }
}
