//! One node at a time per mapping and per target. On one node every mapping's loop and
//! every target's delivery runs here. In a cluster the nodes share the mappings, targets
//! and outbox, and most brokers would misbehave with one consumer per node: an MQTT
//! subscription delivers every message to every subscriber, a PostgreSQL slot is peeked by
//! one reader, two MQTT clients with one client id throw each other off, and two nodes
//! draining one outbox publish its head twice. So a node runs a mapping or a target only
//! while it holds its lease ([`Leases`], kept in the cluster's database).
//!
//! [`LeaseGate`] is the runners' side: at each reconcile it renews the leases of what it
//! wants to run and takes the free ones; what it does not hold, or could not renew within
//! [`STOP_BEFORE`] of its TTL, is stopped, so by its own clock a node stops before the
//! database lets another node take the lease over (each renewal's deadline counts from
//! when it was *sent*). A renewal that does not answer within [`ASK_TIMEOUT`] counts as
//! failed (a partition must not hold the supervisor up).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Leases shared by the nodes (blocking calls).
pub trait Leases: Send + Sync {
    /// Takes or renews `key` for this node; true when this node holds it now.
    fn hold(&self, key: &str) -> Result<bool, String>;
    /// Gives `key` back (when this node holds it).
    fn release(&self, key: &str) -> Result<(), String>;
    /// How long a lease lasts after its last renewal.
    fn ttl(&self) -> Duration;
}

/// A holder stops this long before its lease could end.
pub const STOP_BEFORE: Duration = Duration::from_secs(4);
/// A renewal that takes longer counts as failed.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Which of the wanted keys this node may run (see the module's doc).
#[derive(Default)]
pub struct LeaseGate {
    leases: OnceLock<Arc<dyn Leases>>,
    /// Held keys and when their last successful renewal was sent.
    held: Mutex<HashMap<String, Instant>>,
}

impl LeaseGate {
    /// Runs only under leases from now on (cluster mode).
    pub fn set(&self, leases: Arc<dyn Leases>) {
        let _ = self.leases.set(leases);
    }

    /// Of `wanted`, the keys this node may run now: all of them without leases; else the
    /// ones whose lease it took or renewed, in time. Leases of keys no longer wanted are
    /// given back.
    pub async fn allowed(&self, wanted: &[String]) -> HashSet<String> {
        let Some(leases) = self.leases.get().cloned() else {
            return wanted.iter().cloned().collect();
        };
        let gone: Vec<String> = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            let gone = held
                .keys()
                .filter(|k| !wanted.contains(k))
                .cloned()
                .collect();
            held.retain(|k, _| wanted.contains(k));
            gone
        };
        let keys = wanted.to_vec();
        let sent = Instant::now();
        let l = leases.clone();
        let asked = tokio::time::timeout(
            ASK_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                for k in &gone {
                    if let Err(e) = l.release(k) {
                        warn!(lease = %k, "cannot give a lease back (it ends with its TTL): {e}");
                    }
                }
                keys.iter()
                    .map(|k| (k.clone(), l.hold(k)))
                    .collect::<Vec<_>>()
            }),
        )
        .await;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match asked {
            Ok(Ok(answers)) => {
                for (k, a) in answers {
                    match a {
                        Ok(true) => {
                            if held.insert(k.clone(), sent).is_none() {
                                info!(lease = %k, "took the lease: running it on this node");
                            }
                        }
                        Ok(false) => {
                            if held.remove(&k).is_some() {
                                warn!(lease = %k, "another node holds the lease now: stopping here");
                            }
                        }
                        Err(e) => warn!(lease = %k, "cannot renew the lease: {e}"),
                    }
                }
            }
            _ => warn!("the lease renewals did not answer within {ASK_TIMEOUT:?}"),
        }
        let limit = leases.ttl().saturating_sub(STOP_BEFORE);
        held.retain(|k, at| {
            let fresh = at.elapsed() < limit;
            if !fresh {
                warn!(lease = %k, "lease not renewed in time: stopping here before another node may take it");
            }
            fresh
        });
        held.keys().cloned().collect()
    }

    /// Gives every held lease back (a clean stop or a drain), so another node takes over
    /// at once. Blocking.
    pub fn release_all(&self) {
        let Some(leases) = self.leases.get() else {
            return;
        };
        let held: Vec<String> = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(k, _)| k)
            .collect();
        for k in held {
            if let Err(e) = leases.release(&k) {
                warn!(lease = %k, "cannot give a lease back (it ends with its TTL): {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Leases in memory for two "nodes" (the PostgreSQL ones are tested in nimbus-cluster).
    struct Shared {
        owner: Mutex<HashMap<String, &'static str>>,
        down: AtomicBool,
    }
    struct Node(&'static str, Arc<Shared>);

    impl Leases for Node {
        fn hold(&self, key: &str) -> Result<bool, String> {
            if self.1.down.load(Ordering::SeqCst) {
                return Err("database unreachable".into());
            }
            let mut o = self.1.owner.lock().unwrap();
            Ok(*o.entry(key.to_string()).or_insert(self.0) == self.0)
        }
        fn release(&self, key: &str) -> Result<(), String> {
            let mut o = self.1.owner.lock().unwrap();
            if o.get(key) == Some(&self.0) {
                o.remove(key);
            }
            Ok(())
        }
        fn ttl(&self) -> Duration {
            Duration::from_millis(4200)
        }
    }

    #[tokio::test]
    async fn runs_what_it_holds_and_stops_before_an_unrenewed_lease_ends() {
        let shared = Arc::new(Shared {
            owner: Mutex::default(),
            down: AtomicBool::new(false),
        });
        let (a, b) = (LeaseGate::default(), LeaseGate::default());
        let keys = vec!["source:1".to_string(), "target:t".to_string()];
        // Without leases: everything.
        assert_eq!(a.allowed(&keys).await.len(), 2);
        a.set(Arc::new(Node("a", shared.clone())));
        b.set(Arc::new(Node("b", shared.clone())));
        assert_eq!(a.allowed(&keys).await.len(), 2);
        assert!(b.allowed(&keys).await.is_empty(), "a holds both");
        // A key no longer wanted by a is given back; b takes it.
        assert_eq!(a.allowed(&keys[..1]).await.len(), 1);
        assert_eq!(
            b.allowed(&keys).await,
            HashSet::from(["target:t".to_string()])
        );
        // The database away: a keeps running until TTL − STOP_BEFORE after its last
        // renewal was sent, then stops.
        shared.down.store(true, Ordering::SeqCst);
        assert_eq!(a.allowed(&keys[..1]).await.len(), 1);
        std::thread::sleep(Duration::from_millis(300));
        assert!(a.allowed(&keys[..1]).await.is_empty());
        // A clean stop gives everything back.
        shared.down.store(false, Ordering::SeqCst);
        b.release_all();
        assert_eq!(a.allowed(&keys).await.len(), 2);
        assert!(b.allowed(&keys).await.is_empty());
    }
}
