//! Forwarding synchronous invocations to a node with an idle warm instance.
//!
//! Each node publishes with its heartbeat how many idle instances it keeps per function
//! revision ([`crate::Load::idle`], written only when it changed); each heartbeat also
//! reads the other live, not draining nodes' counts into [`Peers`] (so the view is at most
//! about one heartbeat old). A node that would cold-start or throttle a synchronous call
//! asks [`Peers::pick`] for a node with an idle instance of the same revision and, with a
//! request signed by the [`NodeKey`] every node derives from the cluster's master key,
//! has that node run the invocation (the gateway's `forward.rs`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type HmacSha256 = Hmac<Sha256>;

/// The label the node-to-node key is derived with (HMAC-SHA256 of it under the master key).
const NODE_KEY_LABEL: &[u8] = b"nimbus cluster node-to-node key v1";

/// How far a signed request's time may be from the receiver's clock.
pub const SIGNATURE_SKEW: Duration = Duration::from_secs(60);

/// A peer a forward failed to reach is left out of the choice for this long (a killed
/// node keeps its row alive until its heartbeat is older than the TTL).
pub const FAILED_PEER_PAUSE: Duration = Duration::from_secs(5);

/// The key nodes of one cluster sign their internal requests with: derived from the
/// master key they all share, so it needs no distribution of its own and is never sent.
#[derive(Clone)]
pub struct NodeKey([u8; 32]);

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl NodeKey {
    /// HMAC-SHA256 of a fixed label under `master` (the master key's bytes or encoding).
    pub fn derive(master: &[u8]) -> NodeKey {
        let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
        mac.update(NODE_KEY_LABEL);
        NodeKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, unix_ms: i64, from: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(unix_ms.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(from.as_bytes());
        mac.update(b"\n");
        mac.update(body);
        mac
    }

    /// The signature (hex) of a request sent at `unix_ms` by node `from` with `body`.
    pub fn sign(&self, unix_ms: i64, from: &str, body: &[u8]) -> String {
        hex::encode(self.mac(unix_ms, from, body).finalize().into_bytes())
    }

    /// Whether `signature` is this key's for the request, sent within [`SIGNATURE_SKEW`]
    /// of `now_ms` (constant-time comparison).
    pub fn verify(
        &self,
        unix_ms: i64,
        from: &str,
        body: &[u8],
        signature: &str,
        now_ms: i64,
    ) -> bool {
        if now_ms.abs_diff(unix_ms) > SIGNATURE_SKEW.as_millis() as u64 {
            return false;
        }
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        self.mac(unix_ms, from, body).verify_slice(&sig).is_ok()
    }
}

/// Idle instances per function revision, as a node reports them.
pub type IdleCounts = BTreeMap<String, u32>;

/// Another node as the last heartbeat read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdle {
    pub id: String,
    /// Base URL of its API.
    pub address: String,
    pub idle: IdleCounts,
}

struct Peer {
    id: String,
    address: String,
    idle: IdleCounts,
    /// Idle instances this node sent work to since the view was read.
    taken: HashMap<String, u32>,
}

#[derive(Default)]
struct View {
    generation: u64,
    peers: Vec<Peer>,
    /// Peers a forward could not reach, and when.
    failed: HashMap<String, Instant>,
}

/// This node's view of the other live nodes' idle instances.
#[derive(Default)]
pub struct Peers {
    view: Mutex<View>,
    /// Whether any other node reported an idle instance (read without the lock).
    any: AtomicBool,
    /// Turns among candidates with as many idle instances.
    turn: AtomicUsize,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

/// A node chosen to run one invocation; its idle instance counts as taken until dropped.
#[derive(Debug)]
pub struct Pick {
    pub node: String,
    pub address: String,
    peers: Arc<Peers>,
    generation: u64,
    revision: String,
}

impl Pick {
    /// The forward could not reach the node: leave it out for [`FAILED_PEER_PAUSE`].
    pub fn failed(&self) {
        let mut v = self.peers.view.lock().unwrap();
        v.failed.insert(self.node.clone(), Instant::now());
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        // The invocation ended: the instance is idle there again (until the next read).
        let mut v = self.peers.view.lock().unwrap();
        if v.generation != self.generation {
            return;
        }
        if let Some(p) = v.peers.iter_mut().find(|p| p.id == self.node) {
            if let Some(t) = p.taken.get_mut(&self.revision) {
                *t = t.saturating_sub(1);
            }
        }
    }
}

impl Peers {
    pub fn new() -> Arc<Peers> {
        Arc::new(Peers::default())
    }

    /// Replaces the view with what the database says now (each heartbeat).
    pub fn replace(&self, peers: Vec<PeerIdle>) {
        let mut v = self.view.lock().unwrap();
        v.generation += 1;
        v.peers = peers
            .into_iter()
            .map(|p| Peer {
                id: p.id,
                address: p.address,
                idle: p.idle,
                taken: HashMap::new(),
            })
            .collect();
        v.failed.retain(|_, at| at.elapsed() < FAILED_PEER_PAUSE);
        let any = v.peers.iter().any(|p| p.idle.values().any(|&n| n > 0));
        self.any.store(any, Ordering::Relaxed);
    }

    /// Whether any other node reported an idle instance (one atomic load, no lock: every
    /// synchronous call asks first).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// The node with the most idle instances of `revision` not yet taken by this node
    /// (ties take turns), or `None`. The instance counts as taken until the [`Pick`] drops.
    pub fn pick(self: &Arc<Self>, revision: &str) -> Option<Pick> {
        let mut v = self.view.lock().unwrap();
        let View {
            generation,
            peers,
            failed,
        } = &mut *v;
        let free = |p: &Peer| {
            let idle = p.idle.get(revision).copied().unwrap_or(0);
            idle.saturating_sub(p.taken.get(revision).copied().unwrap_or(0))
        };
        let usable = |p: &Peer| {
            failed
                .get(&p.id)
                .is_none_or(|at| at.elapsed() >= FAILED_PEER_PAUSE)
        };
        let best = peers
            .iter()
            .filter(|p| usable(p))
            .map(free)
            .max()
            .filter(|&n| n > 0)?;
        let tied: Vec<usize> = (0..peers.len())
            .filter(|&i| usable(&peers[i]) && free(&peers[i]) == best)
            .collect();
        let i = tied[self.turn.fetch_add(1, Ordering::Relaxed) % tied.len()];
        let p = &mut peers[i];
        *p.taken.entry(revision.to_string()).or_default() += 1;
        Some(Pick {
            node: p.id.clone(),
            address: p.address.clone(),
            peers: self.clone(),
            generation: *generation,
            revision: revision.to_string(),
        })
    }
}

/// Encodes idle counts for the `cluster_nodes.idle` column (JSON object).
pub(crate) fn encode(idle: &IdleCounts) -> String {
    serde_json::to_string(idle).unwrap_or_else(|_| "{}".into())
}

/// Decodes the `cluster_nodes.idle` column; anything unreadable counts as nothing idle.
pub(crate) fn decode(text: Option<&str>) -> IdleCounts {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, idle: &[(&str, u32)]) -> PeerIdle {
        PeerIdle {
            id: id.into(),
            address: format!("http://{id}"),
            idle: idle.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn picks_the_node_with_most_idle_of_the_revision() {
        let peers = Peers::new();
        peers.replace(vec![
            peer("a", &[("r1", 1), ("r2", 5)]),
            peer("b", &[("r1", 3)]),
        ]);
        assert_eq!(peers.pick("r1").unwrap().node, "b");
        assert_eq!(peers.pick("r2").unwrap().node, "a");
        assert!(peers.pick("r3").is_none(), "no node has r3 idle");
        assert!(peers.any());
        peers.replace(vec![peer("a", &[("r1", 0)])]);
        assert!(!peers.any(), "nothing idle anywhere");
        peers.replace(Vec::new());
        assert!(!peers.any());
    }

    #[test]
    fn a_burst_takes_each_idle_instance_once_and_spreads() {
        let peers = Peers::new();
        peers.replace(vec![peer("a", &[("r", 2)]), peer("b", &[("r", 1)])]);
        let p1 = peers.pick("r").unwrap();
        assert_eq!(p1.node, "a", "most idle first");
        let p2 = peers.pick("r").unwrap();
        let p3 = peers.pick("r").unwrap();
        let mut rest = vec![p2.node.clone(), p3.node.clone()];
        rest.sort();
        assert_eq!(rest, ["a", "b"], "then both nodes with one left each");
        assert!(
            peers.pick("r").is_none(),
            "three idle instances, three taken"
        );
        drop(p2);
        assert!(
            peers.pick("r").is_some(),
            "a finished forward frees its instance"
        );
    }

    #[test]
    fn ties_take_turns() {
        let peers = Peers::new();
        peers.replace(vec![peer("a", &[("r", 5)]), peer("b", &[("r", 5)])]);
        let mut seen = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..20 {
            // Each pick dropped at once: the counts stay tied.
            let p = peers.pick("r").unwrap();
            *seen.entry(p.node.clone()).or_default() += 1;
        }
        assert_eq!(seen.get("a"), Some(&10));
        assert_eq!(seen.get("b"), Some(&10));
    }

    #[test]
    fn a_failed_node_is_left_out_until_the_pause_ends() {
        let peers = Peers::new();
        peers.replace(vec![peer("a", &[("r", 3)]), peer("b", &[("r", 1)])]);
        let p = peers.pick("r").unwrap();
        assert_eq!(p.node, "a");
        p.failed();
        drop(p);
        assert_eq!(peers.pick("r").unwrap().node, "b");
        // A new read does not bring it back within the pause.
        peers.replace(vec![peer("a", &[("r", 3)])]);
        assert!(peers.pick("r").is_none());
    }

    #[test]
    fn a_new_read_resets_what_was_taken() {
        let peers = Peers::new();
        peers.replace(vec![peer("a", &[("r", 1)])]);
        let old = peers.pick("r").unwrap();
        assert!(peers.pick("r").is_none());
        peers.replace(vec![peer("a", &[("r", 1)])]);
        drop(old); // from the previous view: changes nothing now
        let p = peers.pick("r").unwrap();
        assert_eq!(p.node, "a");
        assert!(peers.pick("r").is_none());
    }

    #[test]
    fn node_key_signatures() {
        let k = NodeKey::derive(b"master key bytes");
        let now = 1_000_000;
        let sig = k.sign(now, "n1", b"body");
        assert!(k.verify(now, "n1", b"body", &sig, now + 1000));
        assert!(!k.verify(now, "n1", b"other", &sig, now), "body is signed");
        assert!(!k.verify(now, "n2", b"body", &sig, now), "sender is signed");
        assert!(!k.verify(now, "n1", b"body", &sig, now + 61_000), "too old");
        assert!(!k.verify(now, "n1", b"body", "zz", now));
        let other = NodeKey::derive(b"another master key");
        assert!(
            !other.verify(now, "n1", b"body", &sig, now),
            "another cluster's key"
        );
    }

    #[test]
    fn idle_column_round_trip() {
        let idle: IdleCounts = [("r1".to_string(), 2), ("r2".to_string(), 1)].into();
        assert_eq!(decode(Some(&encode(&idle))), idle);
        assert!(decode(None).is_empty());
        assert!(decode(Some("not json")).is_empty());
    }
}
