//! Reserved concurrency across the nodes of a cluster: a function with reserved concurrency
//! R runs at most R invocations at once in the whole cluster, not R per node.
//!
//! The R permits are a budget in `cluster_permits`: one row per function and node holding
//! the permits the node leases and until when (`expires_at`, by the database's clock). A
//! node runs an invocation only under a permit it leases; when its invocations in flight
//! would exceed its lease it asks the database for more ([`Permits::acquire`]: one
//! statement, serialised per function by an advisory lock, grants at most R − the others'
//! unexpired leases), and it gives back what it has not used for about a second. Leases are
//! renewed every second ([`Permits::renew`]) and expire after a TTL (3 s): a node that dies
//! loses its permits after the TTL.
//!
//! A node that cannot reach the database cannot renew: it stops admitting invocations under
//! its leases once they *may* have expired, by its own clock — the time it sent its last
//! successful renewal plus the TTL, less a margin for clock rate drift. That is earlier than
//! their expiry by the database's clock (which was read after the request was sent), so
//! another node is never granted a permit a cut-off node may still admit under. What can
//! overlap is only what the cut-off node was already running when its deadline passed.
//!
//! Fairness: each row also records the node's demand (invocations running and waiting) when
//! it last asked. While another node is short of its demand, a node grows its lease only up
//! to its fair share (⌈R / nodes asking⌉) and gives back what it holds beyond that share as
//! its invocations end, so a busy function's permits spread over the nodes that serve it
//! instead of staying with the node that asked first.
//!
//! [`PermitGate`] is the node's side: leases and local counts per function; the common path
//! (a permit is leased and free) takes a per-function lock for a few instructions and makes
//! no round trip.

use crate::{NodeId, Result};
use nimbus_pg::{Migration, Pg};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The `cluster` component's migration adding the permit table and its grant function.
pub(crate) const MIGRATION: Migration = Migration::additive(
    "CREATE TABLE cluster_permits (
        function   TEXT NOT NULL,
        node       TEXT NOT NULL,
        permits    INTEGER NOT NULL,
        wanted     INTEGER NOT NULL,
        wanted_at  TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (function, node)
    );
    CREATE INDEX cluster_permits_node ON cluster_permits (node);
    CREATE FUNCTION cluster_permits_acquire(
        f TEXT, me TEXT, lim INTEGER, total INTEGER, demand INTEGER,
        ttl_ms INTEGER, window_ms INTEGER
    ) RETURNS TABLE (held INTEGER, short_nodes INTEGER) LANGUAGE plpgsql AS $$
    DECLARE
        at     TIMESTAMPTZ;
        others INTEGER;
        mine   INTEGER;
        g      INTEGER;
    BEGIN
        PERFORM pg_advisory_xact_lock(1852403059, hashtext(f));
        at := clock_timestamp();
        DELETE FROM cluster_permits p WHERE p.function = f AND p.expires_at <= at;
        SELECT coalesce(sum(p.permits), 0)::integer,
               (count(*) FILTER (WHERE p.wanted > p.permits
                   AND p.wanted_at > at - make_interval(secs => window_ms / 1000.0)))::integer
          INTO others, short_nodes
          FROM cluster_permits p WHERE p.function = f AND p.node <> me;
        SELECT p.permits INTO mine FROM cluster_permits p WHERE p.function = f AND p.node = me;
        mine := coalesce(mine, 0);
        g := least(total, greatest(lim - others, 0));
        IF short_nodes > 0 AND g > mine THEN
            g := greatest(mine, least(g, ceil(lim::numeric / (short_nodes + 1))::integer));
        END IF;
        IF g = 0 AND demand = 0 THEN
            DELETE FROM cluster_permits p WHERE p.function = f AND p.node = me;
        ELSE
            INSERT INTO cluster_permits AS p
                (function, node, permits, wanted, wanted_at, expires_at)
            VALUES (f, me, g, demand, at, at + make_interval(secs => ttl_ms / 1000.0))
            ON CONFLICT (function, node) DO UPDATE SET
                permits = EXCLUDED.permits, wanted = EXCLUDED.wanted,
                wanted_at = EXCLUDED.wanted_at, expires_at = EXCLUDED.expires_at;
        END IF;
        held := g;
        RETURN NEXT;
    END $$;",
);

/// Timings of the permit leases.
#[derive(Debug, Clone, Copy)]
pub struct PermitConfig {
    /// A lease not renewed for this long expires (by the database's clock; default 3 s).
    pub ttl: Duration,
    /// Taken off the TTL for the node's own deadline (clock rate drift; default 500 ms).
    pub margin: Duration,
    /// How often leases are renewed (default 1 s).
    pub renew: Duration,
    /// Permits unused for about this long are given back (default 1 s).
    pub idle: Duration,
    /// How often a request waiting for a permit asks the database again, besides when an
    /// invocation of the function ends on this node (default 25 ms).
    pub retry: Duration,
    /// A node's demand counts for fairness this long after it asked (default 1 s).
    pub window: Duration,
}

impl Default for PermitConfig {
    fn default() -> Self {
        PermitConfig {
            ttl: Duration::from_secs(3),
            margin: Duration::from_millis(500),
            renew: Duration::from_secs(1),
            idle: Duration::from_secs(1),
            retry: Duration::from_millis(25),
            window: Duration::from_secs(1),
        }
    }
}

/// What [`Permits::acquire`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The permits this node now leases for the function.
    pub held: u32,
    /// Other nodes that asked for more than they hold within the fairness window.
    pub short_nodes: u32,
}

fn ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

fn int(n: u32) -> i32 {
    n.min(i32::MAX as u32) as i32
}

/// This node's leases in `cluster_permits` (blocking calls: each is one statement).
#[derive(Clone)]
pub struct Permits {
    pg: Pg,
    node: NodeId,
    cfg: PermitConfig,
}

impl std::fmt::Debug for Permits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permits").field("node", &self.node).finish()
    }
}

impl Permits {
    /// This node's leases (applies the `cluster` migrations if needed).
    pub fn new(pg: &Pg, node: NodeId, cfg: PermitConfig) -> Result<Permits> {
        pg.migrate("cluster", crate::migrations())?;
        Ok(Permits {
            pg: pg.clone(),
            node,
            cfg,
        })
    }

    pub fn config(&self) -> PermitConfig {
        self.cfg
    }

    /// Sets this node's lease for `function` to `total` permits, or to as many as the
    /// function's `limit` leaves beside the other nodes' unexpired leases (and, while other
    /// nodes are short, no more than its fair share unless it holds more already); renews
    /// the lease and records `demand` (invocations running and waiting here). Asking for
    /// fewer than held gives permits back.
    pub fn acquire(&self, function: &str, limit: u32, total: u32, demand: u32) -> Result<Grant> {
        let node = self.node.as_str();
        let (ttl, window) = (ms(self.cfg.ttl), ms(self.cfg.window));
        let (limit, total, demand) = (int(limit), int(total), int(demand));
        Ok(self.pg.with(async |c| {
            let row = c
                .query_one(
                    "SELECT held, short_nodes
                     FROM cluster_permits_acquire($1, $2, $3, $4, $5, $6, $7)",
                    &[&function, &node, &limit, &total, &demand, &ttl, &window],
                )
                .await?;
            let (held, short): (i32, i32) = (row.get(0), row.get(1));
            Ok(Grant {
                held: held.max(0) as u32,
                short_nodes: short.max(0) as u32,
            })
        })?)
    }

    /// Extends every unexpired lease of this node by the TTL (one that expired is not
    /// revived: another node may hold its permits now). Returns the functions renewed,
    /// each with the number of other nodes short of their demand.
    pub fn renew(&self) -> Result<Vec<(String, u32)>> {
        let (ttl, window) = (ms(self.cfg.ttl), ms(self.cfg.window));
        Ok(self.pg.with(async |c| {
            let rows = c
                .query(
                    "UPDATE cluster_permits p
                     SET expires_at = clock_timestamp() + make_interval(secs => $2::integer / 1000.0)
                     WHERE p.node = $1 AND p.expires_at > clock_timestamp()
                     RETURNING p.function,
                         (SELECT count(*) FROM cluster_permits o
                          WHERE o.function = p.function AND o.node <> p.node
                            AND o.expires_at > clock_timestamp() AND o.wanted > o.permits
                            AND o.wanted_at > clock_timestamp()
                                - make_interval(secs => $3::integer / 1000.0))::integer",
                    &[&self.node.as_str(), &ttl, &window],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1).max(0) as u32))
                .collect())
        })?)
    }

    /// Gives back every lease of this node (a clean stop, or a start after a crash).
    pub fn release_all(&self) -> Result<()> {
        Ok(self.pg.with(async |c| {
            c.execute(
                "DELETE FROM cluster_permits WHERE node = $1",
                &[&self.node.as_str()],
            )
            .await?;
            Ok(())
        })?)
    }

    /// Permits of `function` leased by all nodes and not expired (for tests and status).
    pub fn leased(&self, function: &str) -> Result<u32> {
        Ok(self.pg.with(async |c| {
            let row = c
                .query_one(
                    "SELECT coalesce(sum(permits), 0)::bigint FROM cluster_permits
                     WHERE function = $1 AND expires_at > clock_timestamp()",
                    &[&function],
                )
                .await?;
            Ok(row.get::<_, i64>(0).max(0) as u32)
        })?)
    }
}

/// Why [`PermitGate::enter`] did not admit an invocation: no permit within the wait (the
/// function is at its reserved concurrency in the cluster), or the wait queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoPermit;

/// One function's lease on this node.
struct Slot {
    name: String,
    st: Mutex<SlotState>,
    /// Signalled when an invocation ends or a lease changes.
    changed: Notify,
}

#[derive(Default)]
struct SlotState {
    /// The function's reserved concurrency as last seen.
    limit: u32,
    /// Permits leased (never more than the database's row says).
    held: u32,
    /// Until when `held` may be used, by this node's clock.
    deadline: Option<Instant>,
    in_use: u32,
    waiting: u32,
    /// A call to the database is under way for this function.
    syncing: bool,
    /// The limit went down since the last grant: the lease may hold more than this node's
    /// part of the new limit (the nodes' leases together may exceed it), so nothing is
    /// admitted under it until the database grants a lease under the new limit.
    lowered: bool,
    /// Highest demand in this period of [`PermitConfig::idle`] and the one before.
    high: u32,
    high_prev: u32,
    /// Other nodes short of their demand, as last heard, and when.
    short_nodes: u32,
    heard_at: Option<Instant>,
    /// When this node last asked for permits for requests waiting here.
    asked_at: Option<Instant>,
}

impl SlotState {
    fn usable(&self, now: Instant) -> u32 {
        match self.deadline {
            Some(d) if now < d && !self.lowered => self.held.min(self.limit),
            _ => 0,
        }
    }

    fn demand(&self) -> u32 {
        self.in_use + self.waiting
    }

    fn note_demand(&mut self) {
        self.high = self.high.max(self.demand());
    }

    /// The lease this node should hold now: its demand, what it used in the last period or
    /// two (so steady traffic does not give permits back and ask again), at most its fair
    /// share while other nodes are short — and never less than what is running here, so
    /// no other node is granted a permit under an invocation still running.
    fn target(&self, now: Instant, cfg: &PermitConfig) -> u32 {
        let mut keep = self.demand().max(self.high).max(self.high_prev);
        let contended = self.short_nodes > 0
            && self
                .heard_at
                .is_some_and(|t| now.duration_since(t) < cfg.renew + cfg.renew / 2);
        if contended {
            keep = keep.min(self.limit.div_ceil(self.short_nodes + 1));
        }
        keep.min(self.limit).max(self.in_use)
    }

    /// Whether to call the database now.
    fn needs_sync(&self, now: Instant, cfg: &PermitConfig) -> bool {
        if self.syncing {
            return false;
        }
        let target = self.target(now, cfg);
        let valid = self.deadline.is_some_and(|d| now < d);
        // Short here (ask for more, and tell the others: at most every `retry`), or
        // holding more than wanted, or holding permits that may have expired.
        let ask = self
            .asked_at
            .is_none_or(|t| now.duration_since(t) >= cfg.retry);
        (ask && self.waiting > 0 && (target > self.held || !valid || self.short_nodes > 0))
            || target < self.held
            || (!valid && self.held > 0)
            || self.lowered
    }
}

/// This node's side of the permits: per function, the lease, the invocations running under
/// it and the requests waiting for a permit.
pub struct PermitGate {
    permits: Permits,
    cfg: PermitConfig,
    /// Requests that may wait per function; beyond that they are refused at once.
    queue_depth: usize,
    /// The account's limit (`limits.rs`; 0: not held here) and the requests that may
    /// wait for a permit of [`crate::ACCOUNT_KEY`].
    account: std::sync::atomic::AtomicU32,
    account_depth: std::sync::atomic::AtomicUsize,
    /// Slots are never removed: a request holding one must count where the others do.
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    renew_failing: AtomicBool,
    sync_failing: AtomicBool,
}

impl std::fmt::Debug for PermitGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitGate")
            .field("node", &self.permits.node)
            .finish()
    }
}

/// A permit held by one invocation; given back to the node's lease when dropped.
pub struct PermitLease {
    gate: Arc<PermitGate>,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for PermitLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitLease")
            .field("function", &self.slot.name)
            .finish()
    }
}

impl Drop for PermitLease {
    fn drop(&mut self) {
        let sync = {
            let mut st = self.slot.st.lock().unwrap();
            st.in_use -= 1;
            // Held beyond what is wanted here (the fair share while other nodes are
            // short): given back at once, here first, then in the database.
            let target = st.target(Instant::now(), &self.gate.cfg);
            let sync = target < st.held && !st.syncing;
            if target < st.held {
                st.held = target;
            }
            if sync {
                st.syncing = true;
            }
            sync
        };
        self.slot.changed.notify_waiters();
        if sync {
            self.gate.start_sync(&self.slot);
        }
    }
}

/// Takes a waiting place back when a waiting request stops waiting.
struct Waiting<'a>(&'a Slot, bool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.st.lock().unwrap().waiting -= 1;
        }
    }
}

impl PermitGate {
    /// `queue_depth`: requests that may wait per function (the pool's queue depth).
    pub fn new(permits: Permits, queue_depth: usize) -> Arc<PermitGate> {
        Arc::new(PermitGate {
            cfg: permits.cfg,
            permits,
            queue_depth,
            account: Default::default(),
            account_depth: std::sync::atomic::AtomicUsize::new(queue_depth),
            slots: RwLock::new(HashMap::new()),
            renew_failing: Default::default(),
            sync_failing: Default::default(),
        })
    }

    pub fn permits(&self) -> &Permits {
        &self.permits
    }

    /// Holds the account's limit across the cluster too: invocations of functions without
    /// a reservation enter under [`crate::ACCOUNT_KEY`] with the limit `limit` − Σ
    /// reservations; `queue_depth` of them may wait (the pool's account queue depth).
    pub fn set_account_limit(&self, limit: u32, queue_depth: usize) {
        self.account.store(limit, Ordering::Relaxed);
        self.account_depth.store(queue_depth, Ordering::Relaxed);
    }

    /// The account's limit across the cluster, when this gate holds it.
    pub fn account_limit(&self) -> Option<u32> {
        Some(self.account.load(Ordering::Relaxed)).filter(|l| *l > 0)
    }

    fn slot(&self, function: &str) -> Arc<Slot> {
        if let Some(s) = self.slots.read().unwrap().get(function) {
            return s.clone();
        }
        self.slots
            .write()
            .unwrap()
            .entry(function.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    name: function.to_string(),
                    st: Mutex::new(SlotState::default()),
                    changed: Notify::new(),
                })
            })
            .clone()
    }

    /// Admits one invocation of `function`, whose reserved concurrency is `limit`, under a
    /// permit of this node's lease: at once when one is free, else after asking the
    /// database for more, waiting for an invocation here to end or for other nodes to
    /// give some back, until `until`. [`NoPermit`] when none came by then or the wait
    /// queue is full.
    pub async fn enter(
        self: &Arc<Self>,
        function: &str,
        limit: u32,
        until: Instant,
    ) -> Result<PermitLease, NoPermit> {
        let slot = self.slot(function);
        let depth = if function == crate::ACCOUNT_KEY {
            self.account_depth.load(Ordering::Relaxed)
        } else {
            self.queue_depth
        };
        let mut waiting = Waiting(&slot, false);
        loop {
            let changed = slot.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let sync = {
                let mut st = slot.st.lock().unwrap();
                if limit < st.limit {
                    st.lowered = true;
                }
                st.limit = limit;
                let now = Instant::now();
                // Requests already waiting go first.
                if st.in_use < st.usable(now) && (waiting.1 || st.waiting == 0) {
                    st.in_use += 1;
                    if waiting.1 {
                        st.waiting -= 1;
                        waiting.1 = false;
                    }
                    st.note_demand();
                    return Ok(PermitLease {
                        gate: self.clone(),
                        slot: slot.clone(),
                    });
                }
                if !waiting.1 {
                    if st.waiting as usize >= depth {
                        return Err(NoPermit);
                    }
                    st.waiting += 1;
                    waiting.1 = true;
                    st.note_demand();
                }
                let sync = st.needs_sync(now, &self.cfg);
                if sync {
                    st.syncing = true;
                }
                sync
            };
            if sync {
                self.start_sync(&slot);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(self.cfg.retry) => {}
                _ = tokio::time::sleep_until(until) => return Err(NoPermit),
            }
        }
    }

    /// Runs [`Self::sync`] in a task of its own (`syncing` is set by the caller), so a
    /// request that stops waiting does not leave the slot's call half done.
    fn start_sync(self: &Arc<Self>, slot: &Arc<Slot>) {
        let (me, slot) = (self.clone(), slot.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { me.sync(&slot).await });
            }
            Err(_) => slot.st.lock().unwrap().syncing = false,
        }
    }

    /// Sets this node's lease for the slot's function to its target (one statement). A
    /// lease that shrinks shrinks here before the database hears of it; one that grows
    /// grows here after: this node never uses more than the database grants it.
    async fn sync(self: &Arc<Self>, slot: &Arc<Slot>) {
        while self.sync_once(slot).await {}
        slot.changed.notify_waiters();
    }

    /// One call of [`Self::sync`]; true when the lease shrank here meanwhile, so the
    /// database must hear of it too (`syncing` then stays set).
    async fn sync_once(self: &Arc<Self>, slot: &Arc<Slot>) -> bool {
        let (limit, target, demand, before) = {
            let mut st = slot.st.lock().unwrap();
            let now = Instant::now();
            let target = st.target(now, &self.cfg);
            if target < st.held {
                st.held = target;
            }
            if st.waiting > 0 {
                st.asked_at = Some(now);
            }
            (st.limit, target, st.demand(), st.held)
        };
        tracing::debug!(function = %slot.name, limit, target, demand, "permits: asking");
        let sent = Instant::now();
        let (permits, name) = (self.permits.clone(), slot.name.clone());
        let r = tokio::task::spawn_blocking(move || permits.acquire(&name, limit, target, demand))
            .await
            .unwrap_or_else(|e| Err(crate::ClusterError::Io(e.to_string())));
        let mut st = slot.st.lock().unwrap();
        match r {
            Ok(g) => {
                if self.sync_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("concurrency permits leased from the database again");
                }
                tracing::debug!(function = %slot.name, held = g.held, short = g.short_nodes,
                    in_use = st.in_use, waiting = st.waiting, "permits: granted");
                st.deadline = Some(sent + self.cfg.ttl.saturating_sub(self.cfg.margin));
                st.short_nodes = g.short_nodes;
                st.heard_at = Some(Instant::now());
                // Granted under the limit this call carried; lowered again meanwhile, the
                // next call tells.
                st.lowered &= st.limit < limit;
                if st.held < before {
                    // Given back here while the call was under way (an invocation ended
                    // beyond the fair share): keep the smaller lease and tell the database.
                    st.held = st.held.min(g.held);
                    return true;
                }
                st.held = g.held;
            }
            Err(e) if !self.sync_failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(function = %slot.name, error = %e,
                    "cannot lease concurrency permits from the database: invocations of functions with reserved concurrency wait, then are throttled");
            }
            Err(_) => {}
        }
        st.syncing = false;
        false
    }

    /// Renews this node's leases (blocking); their deadlines here move to the time this
    /// call was sent plus the TTL less the margin.
    pub fn renew(&self) -> Result<()> {
        let sent = Instant::now();
        let renewed = self.permits.renew()?;
        let deadline = sent + self.cfg.ttl.saturating_sub(self.cfg.margin);
        let slots = self.slots.read().unwrap();
        tracing::debug!(?renewed, "permits: renewed");
        for (function, short) in renewed {
            if let Some(slot) = slots.get(&function) {
                let mut st = slot.st.lock().unwrap();
                if st.deadline.is_none_or(|d| d < deadline) {
                    st.deadline = Some(deadline);
                }
                st.short_nodes = short;
                st.heard_at = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Starts a new period of [`PermitConfig::idle`]: leases larger than what was used in
    /// the last two periods (or than the fair share, or past their deadline) are set again.
    pub fn sweep(self: &Arc<Self>) {
        let now = Instant::now();
        let slots: Vec<Arc<Slot>> = self.slots.read().unwrap().values().cloned().collect();
        for slot in slots {
            let sync = {
                let mut st = slot.st.lock().unwrap();
                st.high_prev = st.high;
                st.high = st.demand();
                let sync = st.needs_sync(now, &self.cfg);
                if sync {
                    st.syncing = true;
                }
                sync
            };
            if sync {
                self.start_sync(&slot);
            }
        }
    }

    /// Renews the leases every [`PermitConfig::renew`] and gives back unused permits every
    /// [`PermitConfig::idle`], until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let tick = me.cfg.renew.min(me.cfg.idle);
            let (mut renewed, mut swept) = (Instant::now(), Instant::now());
            loop {
                tokio::time::sleep(tick).await;
                if renewed.elapsed() >= me.cfg.renew {
                    renewed = Instant::now();
                    let m = me.clone();
                    let r = tokio::task::spawn_blocking(move || m.renew())
                        .await
                        .unwrap_or_else(|e| Err(crate::ClusterError::Io(e.to_string())));
                    let was = me.renew_failing.swap(r.is_err(), Ordering::Relaxed);
                    match r {
                        Ok(()) if was => tracing::info!("concurrency permit leases renewed again"),
                        Err(e) if !was => tracing::warn!(error = %e,
                            "cannot renew the concurrency permit leases: functions with reserved concurrency stop taking new invocations here when the leases may have expired"),
                        _ => {}
                    }
                }
                if swept.elapsed() >= me.cfg.idle {
                    swept = Instant::now();
                    me.sweep();
                }
            }
        })
    }

    /// Gives back every permit of this node (blocking; a clean stop).
    pub fn release_all(&self) -> Result<()> {
        for slot in self.slots.read().unwrap().values() {
            let mut st = slot.st.lock().unwrap();
            st.held = 0;
            st.deadline = None;
        }
        self.permits.release_all()
    }

    /// Permits leased here for `function` and usable now, and invocations running under
    /// them (for tests and status).
    pub fn local(&self, function: &str) -> (u32, u32) {
        let slot = self.slot(function);
        let st = slot.st.lock().unwrap();
        (st.usable(Instant::now()), st.in_use)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::PgConfig;
    use std::sync::atomic::{AtomicI64, AtomicU64};

    fn node(db: &TestDb, id: &str, cfg: PermitConfig) -> Permits {
        let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
        Permits::new(&pg, NodeId::parse(id).unwrap(), cfg).unwrap()
    }

    fn quick() -> PermitConfig {
        PermitConfig {
            ttl: Duration::from_millis(1500),
            margin: Duration::from_millis(300),
            ..PermitConfig::default()
        }
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[test]
    fn concurrent_grants_never_exceed_the_limit() {
        let db = TestDb::new("permits");
        let nodes: Vec<Permits> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| node(&db, id, PermitConfig::default()))
            .collect();
        // Permits counted as held by the threads: raised after the database granted them,
        // lowered before they are given back, so it never exceeds what the database says
        // the nodes lease.
        let held = Arc::new(AtomicI64::new(0));
        let peak = Arc::new(AtomicI64::new(0));
        let granted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let (held, peak, granted) = (held.clone(), peak.clone(), granted.clone());
                std::thread::spawn(move || {
                    for round in 0..150u32 {
                        let want = 1 + (round + i as u32) % 5;
                        let g = p.acquire("f", 5, want, want).unwrap();
                        assert!(g.held <= want);
                        let now = held.fetch_add(g.held as i64, Ordering::SeqCst) + g.held as i64;
                        peak.fetch_max(now, Ordering::SeqCst);
                        granted.fetch_add(g.held as u64, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200 * (round % 3) as u64));
                        held.fetch_sub(g.held as i64, Ordering::SeqCst);
                        assert_eq!(p.acquire("f", 5, 0, 0).unwrap().held, 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 5, "the nodes held {peak} permits of 5 at once");
        assert!(peak >= 2, "the nodes never held permits together ({peak})");
        assert!(granted.load(Ordering::SeqCst) > 150);
        let p = node(&db, "n4", PermitConfig::default());
        assert_eq!(p.leased("f").unwrap(), 0, "every permit was given back");
    }

    #[test]
    fn a_dead_nodes_permits_go_to_others_after_the_ttl() {
        let db = TestDb::new("permits");
        let (a, b) = (node(&db, "a", quick()), node(&db, "b", quick()));
        assert_eq!(a.acquire("f", 5, 4, 4).unwrap().held, 4);
        assert_eq!(b.acquire("f", 5, 5, 5).unwrap().held, 1);
        // Renewed leases stay.
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(a.renew().unwrap().len(), 1);
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(b.acquire("f", 5, 5, 5).unwrap().held, 1);
        // `a` dies: after the TTL its permits go to `b`, and a late renewal revives nothing.
        std::thread::sleep(Duration::from_millis(1600));
        assert_eq!(b.acquire("f", 5, 5, 5).unwrap().held, 5);
        assert!(a.renew().unwrap().is_empty());
        assert_eq!(a.acquire("f", 5, 2, 2).unwrap().held, 0);
        assert_eq!(b.leased("f").unwrap(), 5);
        // A clean stop gives its permits back at once.
        b.release_all().unwrap();
        assert_eq!(a.acquire("f", 5, 2, 2).unwrap().held, 2);
    }

    #[test]
    fn short_nodes_get_a_fair_share() {
        let db = TestDb::new("permits");
        let (a, b) = (node(&db, "a", quick()), node(&db, "b", quick()));
        assert_eq!(a.acquire("f", 6, 6, 6).unwrap().held, 6);
        // `b` is short and says so; `a` hears of it on its renewal and gives back down to
        // its share, which `b` may then take (and `a` may not take back).
        assert_eq!(b.acquire("f", 6, 4, 4).unwrap().held, 0);
        assert_eq!(a.renew().unwrap(), vec![("f".to_string(), 1)]);
        let g = a.acquire("f", 6, 3, 6).unwrap();
        assert_eq!(
            g,
            Grant {
                held: 3,
                short_nodes: 1
            }
        );
        assert_eq!(b.acquire("f", 6, 4, 4).unwrap().held, 3);
        assert_eq!(a.acquire("f", 6, 6, 6).unwrap().held, 3);
    }

    /// A TCP proxy to the database that can be cut (a node partitioned from it).
    struct Proxy {
        port: u16,
        cut: Arc<AtomicBool>,
        conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Proxy {
        async fn start(upstream: String) -> Proxy {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let cut = Arc::new(AtomicBool::new(false));
            let conns = Arc::new(Mutex::new(Vec::new()));
            let (c, cs) = (cut.clone(), conns.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut down, _)) = l.accept().await else {
                        return;
                    };
                    if c.load(Ordering::SeqCst) {
                        continue;
                    }
                    let up = upstream.clone();
                    let t = tokio::spawn(async move {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(up).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    cs.lock().unwrap().push(t.abort_handle());
                }
            });
            Proxy { port, cut, conns }
        }

        fn cut(&self) {
            self.cut.store(true, Ordering::SeqCst);
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_cut_off_node_stops_admitting_at_its_deadline() {
        let db = blocking(|| TestDb::new("permits")).await;
        // host:port of the test server, from postgres://user@host:port/db?...
        let after_at = db.url.split_once('@').unwrap().1;
        let upstream = after_at.split(['/', '?']).next().unwrap().to_string();
        let proxy = Proxy::start(upstream.clone()).await;
        let url = db
            .url
            .replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
        let cfg = quick();
        let gate = blocking(move || {
            let pg = Pg::connect(&PgConfig::new(&url)).unwrap();
            PermitGate::new(
                Permits::new(&pg, NodeId::parse("cut").unwrap(), cfg).unwrap(),
                10,
            )
        })
        .await;
        let other = {
            let url = db.url.clone();
            blocking(move || {
                let pg = Pg::connect(&PgConfig::new(&url)).unwrap();
                Permits::new(&pg, NodeId::parse("other").unwrap(), cfg).unwrap()
            })
            .await
        };
        let soon = || Instant::now() + Duration::from_secs(2);
        // Three invocations at once: three permits leased, kept when they end (nothing
        // sweeps them in this test).
        let leases = [
            gate.enter("f", 5, soon()).await.unwrap(),
            gate.enter("f", 5, soon()).await.unwrap(),
            gate.enter("f", 5, soon()).await.unwrap(),
        ];
        drop(leases);
        assert_eq!(gate.local("f"), (3, 0));
        let g = gate.clone();
        blocking(move || g.renew()).await.unwrap();
        let renewed = Instant::now();

        // Partitioned: renewals fail, but until its deadline the node still admits under
        // the permits it leases, without the database.
        proxy.cut();
        let g = gate.clone();
        assert!(blocking(move || g.renew()).await.is_err());
        let lease = gate
            .enter("f", 5, Instant::now() + Duration::from_millis(100))
            .await
            .expect("admitted under its lease before the deadline");
        drop(lease);
        let o = other.clone();
        assert_eq!(
            blocking(move || o.acquire("f", 5, 5, 5))
                .await
                .unwrap()
                .held,
            2,
            "the cut-off node's permits are still its own"
        );

        // After its deadline (last renewal + TTL − margin) it admits nothing more.
        tokio::time::sleep_until(renewed + cfg.ttl - cfg.margin).await;
        let t0 = Instant::now();
        let refused = gate
            .enter("f", 5, Instant::now() + Duration::from_millis(300))
            .await;
        assert_eq!(refused.unwrap_err(), NoPermit);
        assert!(t0.elapsed() >= Duration::from_millis(290));
        assert_eq!(gate.local("f"), (0, 0));

        // After the TTL by the database's clock, the others get its permits.
        let o = other.clone();
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let o = o.clone();
            let held = blocking(move || o.acquire("f", 5, 5, 5))
                .await
                .unwrap()
                .held;
            if held == 5 {
                break;
            }
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(db);
    }

    /// Three gates on one database, each with its own pool, heartbeats running.
    async fn three_gates(db: &TestDb) -> Vec<Arc<PermitGate>> {
        let mut gates = Vec::new();
        for id in ["n1", "n2", "n3"] {
            let url = db.url.clone();
            let gate = blocking(move || {
                let pg = Pg::connect(&PgConfig::new(&url)).unwrap();
                PermitGate::new(
                    Permits::new(&pg, NodeId::parse(id).unwrap(), PermitConfig::default()).unwrap(),
                    100,
                )
            })
            .await;
            gate.spawn();
            gates.push(gate);
        }
        gates
    }

    /// 30 callers spread over `gates` for `secs`, each invocation 30 ms under `limit`:
    /// the most running at once, the invocations per gate and the refusals.
    async fn callers(gates: &[Arc<PermitGate>], limit: u32, secs: f64) -> (i64, [u32; 3], u32) {
        let running = Arc::new(AtomicI64::new(0));
        let peak = Arc::new(AtomicI64::new(0));
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for i in 0..30 {
            let gate = gates[i % 3].clone();
            let (running, peak) = (running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ran, mut refused) = (0u32, 0u32);
                while Instant::now() < end {
                    match gate
                        .enter("f", limit, Instant::now() + Duration::from_millis(500))
                        .await
                    {
                        Ok(lease) => {
                            let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            drop(lease);
                            ran += 1;
                        }
                        Err(NoPermit) => refused += 1,
                    }
                }
                (i % 3, ran, refused)
            }));
        }
        let mut per_node = [0u32; 3];
        let mut refused = 0;
        for t in tasks {
            let (n, r, x) = t.await.unwrap();
            per_node[n] += r;
            refused += x;
        }
        (peak.load(Ordering::SeqCst), per_node, refused)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn three_gates_keep_the_limit_together() {
        let db = blocking(|| TestDb::new("permits")).await;
        let gates = three_gates(&db).await;
        let (peak, per_node, refused) = callers(&gates, 5, 3.0).await;
        assert!(
            peak <= 5,
            "{peak} invocations ran at once under a limit of 5"
        );
        assert_eq!(peak, 5, "the permits were never all in use");
        assert!(refused > 0, "30 callers on 5 permits were never refused");
        // Each node ran a fair part (fair shares move permits to the nodes that wait).
        for (i, n) in per_node.iter().enumerate() {
            assert!(*n >= 20, "node {i} ran only {n} invocations: {per_node:?}");
        }
        let g = gates[0].clone();
        blocking(move || g.release_all()).await.unwrap();
        drop(db);
    }

    /// A limit lowered while the nodes still lease permits under the old one (they keep
    /// them for steady traffic): the leases together may exceed the new limit, so no node
    /// admits under its old lease before the database grants it one under the new limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_lowered_limit_holds_at_once_across_gates() {
        let db = blocking(|| TestDb::new("permits_lowered")).await;
        let gates = three_gates(&db).await;
        let (peak, _, _) = callers(&gates, 6, 1.5).await;
        assert_eq!(peak, 6, "the permits were never all in use");
        let (peak, per_node, _) = callers(&gates, 3, 1.5).await;
        assert!(
            peak <= 3,
            "{peak} invocations ran at once right after the limit went from 6 to 3"
        );
        assert!(per_node.iter().sum::<u32>() > 0);
        let g = gates[0].clone();
        blocking(move || g.release_all()).await.unwrap();
        drop(db);
    }
}
