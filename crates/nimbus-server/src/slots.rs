//! Connection slots of the public listener: which connections are open, what each one is
//! doing, how many each client address holds, and which one to close when the global cap
//! is reached.
//!
//! A connection is *fresh* from accept until its first request head has been read (TLS
//! handshake included), *busy* while a request is in flight (from the parsed head until
//! the response body has been handed to the socket), and *idle* between requests (a
//! keep-alive connection waiting for, or receiving, its next head). At the cap the accept
//! loop closes the fresh connection waiting longest, else the idle one waiting longest;
//! a busy connection is never chosen. The per-request path is two atomic operations; the
//! registry's lock is taken once per connection (register, unregister) and by the accept
//! loop when it looks for a connection to close, never across an await.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// Accepted, no request yet: TLS handshake or first request head.
const FRESH: u8 = 0;
/// Between requests: waiting for (or receiving) the next request head.
const IDLE: u8 = 1;
/// A request in flight.
const BUSY: u8 = 2;
/// Chosen to make room; its task closes it.
const CLOSING: u8 = 3;
/// Its task has ended.
const CLOSED: u8 = 4;

/// Connections chosen to close whose task has not ended yet, at most: the accept loop
/// waits for them beyond that, so the process holds at most the cap plus this many
/// client sockets even when its tasks lag behind (under a flood of reconnecting clients
/// on a busy host they did, by a few hundred).
pub(crate) const MAX_CLOSING: usize = 64;

/// What [`Slots::make_room`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    Free,
    Made,
    Wait,
}

/// One open connection, shared by its task, its service and the registry.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    address: IpAddr,
    state: AtomicU8,
    /// When the connection entered its current state, ms since the registry's epoch.
    since_ms: AtomicU64,
    /// Woken when the accept loop has chosen this connection to make room.
    close: Notify,
}

impl Slot {
    /// Resolves when the accept loop asks this connection to close. Check
    /// [`Slot::closing`] afterwards: a request that began meanwhile keeps the connection.
    pub(crate) async fn close_requested(&self) {
        self.close.notified().await
    }

    /// Whether the connection was chosen to make room and no request has begun since.
    pub(crate) fn closing(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSING
    }
}

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    /// Per client address (IPv4 address or IPv6 /64); `usize::MAX` when off.
    per_address: usize,
    epoch: Instant,
    /// Registered connections, closing ones included.
    open: AtomicUsize,
    /// Connections chosen to make room whose task has not ended yet.
    closing: AtomicUsize,
    inner: Mutex<Inner>,
    /// Woken whenever a connection ends.
    released: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Arc<Slot>>,
    /// Connections in the order they were accepted, which is the order of their waiting
    /// while fresh; entries that are no longer fresh are dropped lazily (at the front when
    /// a connection is chosen, all of them when the queue grows past twice the cap).
    fresh: VecDeque<Arc<Slot>>,
    per_address: HashMap<IpAddr, usize>,
}

/// A registered connection; unregisters it when dropped (after the socket is closed).
#[derive(Debug)]
pub(crate) struct SlotHandle {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

impl SlotHandle {
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

/// A request in flight on a connection; the connection becomes idle when this is dropped
/// (hyper drops the response body once it has been written).
#[derive(Debug)]
pub(crate) struct InFlight {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = ms_since(self.epoch);
        if self
            .slot
            .state
            .compare_exchange(BUSY, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.slot.since_ms.store(now, Ordering::Release);
        }
    }
}

/// The key a per-address limit counts by: the IPv4 address (IPv4-mapped IPv6 included),
/// or the IPv6 /64 (one host or LAN usually holds a whole /64, so counting single IPv6
/// addresses would give one client billions of limits).
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

/// Among `(id, state, since_ms)`, the connection to close to make room: fresh before idle,
/// then the one in its state the longest; never a busy or closing one.
fn choose_victim(conns: impl Iterator<Item = (u64, u8, u64)>) -> Option<u64> {
    conns
        .filter(|&(_, state, _)| state == FRESH || state == IDLE)
        .min_by_key(|&(id, state, since)| (state, since, id))
        .map(|(id, _, _)| id)
}

fn ms_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Slots {
    /// `per_address` 0 means no per-address limit.
    pub(crate) fn new(max: usize, per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            per_address: if per_address == 0 {
                usize::MAX
            } else {
                per_address
            },
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            closing: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
            released: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock guards plain bookkeeping; a panic while holding it leaves it usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip`'s address already holds its limit of connections.
    pub(crate) fn address_full(&self, ip: IpAddr) -> bool {
        if self.per_address == usize::MAX {
            return false;
        }
        let key = address_key(ip);
        self.lock().per_address.get(&key).copied().unwrap_or(0) >= self.per_address
    }

    /// Whether another connection fits under the cap (connections being closed to make
    /// room do not count, up to [`MAX_CLOSING`] of them).
    #[cfg(test)]
    fn has_room(&self) -> bool {
        let open = self.open.load(Ordering::Acquire);
        let closing = self.closing.load(Ordering::Acquire);
        open.saturating_sub(closing) < self.max && open < self.max + MAX_CLOSING
    }

    /// Makes room for one more connection if it can: [`Room::Free`] when there is room,
    /// [`Room::Made`] when a fresh or idle connection was asked to close, [`Room::Wait`]
    /// when every connection has a request in flight or [`MAX_CLOSING`] are still
    /// closing.
    pub(crate) fn make_room(&self) -> Room {
        let open = self.open.load(Ordering::Acquire);
        let closing = self.closing.load(Ordering::Acquire);
        if open >= self.max + MAX_CLOSING {
            Room::Wait
        } else if open.saturating_sub(closing) < self.max {
            Room::Free
        } else if self.close_one() {
            Room::Made
        } else {
            Room::Wait
        }
    }

    /// Chooses a fresh or idle connection and asks it to close; false when every open
    /// connection has a request in flight.
    pub(crate) fn close_one(&self) -> bool {
        let mut inner = self.lock();
        // The fresh connection waiting longest is the oldest still fresh: amortised O(1),
        // as a flood of slow clients makes this the common case.
        while let Some(slot) = inner.fresh.pop_front() {
            if self.try_close(&slot, FRESH) {
                return true;
            }
        }
        // No fresh connection: the idle one waiting longest, by a scan.
        loop {
            let candidates = inner.conns.values().map(|s| {
                (
                    s.id,
                    s.state.load(Ordering::Acquire),
                    s.since_ms.load(Ordering::Acquire),
                )
            });
            let Some(id) = choose_victim(candidates) else {
                return false;
            };
            let slot = &inner.conns[&id];
            let state = slot.state.load(Ordering::Acquire);
            if (state == FRESH || state == IDLE) && self.try_close(slot, state) {
                return true;
            }
            // A request began on it meanwhile: choose again.
        }
    }

    /// Asks `slot` to close if it is still in `state`.
    fn try_close(&self, slot: &Slot, state: u8) -> bool {
        if slot
            .state
            .compare_exchange(state, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.closing.fetch_add(1, Ordering::AcqRel);
        slot.close.notify_one();
        true
    }

    /// Waits until a connection ends.
    pub(crate) async fn released(&self) {
        self.released.notified().await
    }

    /// Registers a new connection from `ip` (fresh).
    pub(crate) fn register(self: &Arc<Self>, ip: IpAddr) -> SlotHandle {
        let key = address_key(ip);
        let now = ms_since(self.epoch);
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            address: key,
            state: AtomicU8::new(FRESH),
            since_ms: AtomicU64::new(now),
            close: Notify::new(),
        });
        inner.conns.insert(id, slot.clone());
        inner.fresh.push_back(slot.clone());
        if inner.fresh.len() > 2 * self.max + 16 {
            inner
                .fresh
                .retain(|s| s.state.load(Ordering::Acquire) == FRESH);
        }
        *inner.per_address.entry(key).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::AcqRel);
        SlotHandle {
            slots: self.clone(),
            slot,
        }
    }

    /// Marks a request in flight on `slot` until the returned guard is dropped. A
    /// connection chosen to make room whose request began before its task closed it keeps
    /// its slot (the cap is exceeded by one until it ends).
    pub(crate) fn begin(&self, slot: &Arc<Slot>) -> InFlight {
        let mut state = slot.state.load(Ordering::Acquire);
        loop {
            if state == BUSY || state == CLOSED {
                break;
            }
            match slot
                .state
                .compare_exchange(state, BUSY, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if state == CLOSING {
                        self.closing.fetch_sub(1, Ordering::AcqRel);
                    }
                    break;
                }
                Err(now) => state = now,
            }
        }
        InFlight {
            slot: slot.clone(),
            epoch: self.epoch,
        }
    }

    /// Open connections (closing ones included) and those of `ip`'s address.
    #[cfg(test)]
    fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.conns.len(),
            inner
                .per_address
                .get(&address_key(ip))
                .copied()
                .unwrap_or(0),
        )
    }
}

impl Drop for SlotHandle {
    fn drop(&mut self) {
        let slots = &self.slots;
        if self.slot.state.swap(CLOSED, Ordering::AcqRel) == CLOSING {
            slots.closing.fetch_sub(1, Ordering::AcqRel);
        }
        {
            let mut inner = slots.lock();
            inner.conns.remove(&self.slot.id);
            if let Some(n) = inner.per_address.get_mut(&self.slot.address) {
                *n -= 1;
                if *n == 0 {
                    inner.per_address.remove(&self.slot.address);
                }
            }
        }
        slots.open.fetch_sub(1, Ordering::AcqRel);
        slots.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn victim_is_fresh_before_idle_then_oldest_never_busy() {
        assert_eq!(choose_victim([].into_iter()), None);
        assert_eq!(
            choose_victim([(1, BUSY, 0), (2, CLOSING, 0)].into_iter()),
            None
        );
        // An old idle connection loses to a younger fresh one.
        assert_eq!(
            choose_victim([(1, IDLE, 0), (2, FRESH, 500), (3, BUSY, 0)].into_iter()),
            Some(2)
        );
        // Among fresh ones, the one waiting longest.
        assert_eq!(
            choose_victim([(1, FRESH, 900), (2, FRESH, 100), (3, FRESH, 400)].into_iter()),
            Some(2)
        );
        // No fresh one: the longest idle.
        assert_eq!(
            choose_victim([(1, IDLE, 300), (2, IDLE, 200), (3, BUSY, 0)].into_iter()),
            Some(2)
        );
    }

    #[test]
    fn addresses_are_counted_by_ipv4_or_ipv6_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        assert_ne!(address_key(v4(1)), address_key(v4(2)));
    }

    #[test]
    fn per_address_limit_counts_open_connections() {
        let slots = Slots::new(10, 2);
        assert!(!slots.address_full(v4(1)));
        let a = slots.register(v4(1));
        let b = slots.register(v4(1));
        assert!(slots.address_full(v4(1)));
        assert!(!slots.address_full(v4(2)));
        drop(a);
        assert!(!slots.address_full(v4(1)));
        drop(b);
        assert_eq!(slots.counts(v4(1)), (0, 0));
        // 0 turns the limit off.
        let open = Slots::new(10, 0);
        let held: Vec<_> = (0..20).map(|_| open.register(v4(1))).collect();
        assert!(!open.address_full(v4(1)));
        drop(held);
    }

    #[test]
    fn at_the_cap_slow_and_idle_connections_make_room_busy_ones_never() {
        let slots = Slots::new(3, 0);
        let busy = slots.register(v4(1));
        let idle = slots.register(v4(2));
        let fresh = slots.register(v4(3));
        let _req = slots.begin(busy.slot());
        {
            // The idle one has completed a request.
            let _r = slots.begin(idle.slot());
        }
        assert!(!slots.has_room());
        // The fresh connection goes first, though it is younger than the idle one.
        assert!(slots.close_one());
        assert!(fresh.slot().closing());
        assert!(slots.has_room());
        drop(fresh);
        assert_eq!(slots.counts(v4(3)), (2, 0));
        let fresh2 = slots.register(v4(3));
        assert!(!slots.has_room());
        // A fresh one again, then the idle one; the busy one never.
        assert!(slots.close_one());
        assert!(fresh2.slot().closing());
        assert!(!idle.slot().closing());
        assert!(slots.close_one());
        assert!(idle.slot().closing());
        assert!(!slots.close_one());
        assert!(!busy.slot().closing());
    }

    #[test]
    fn a_request_beginning_as_its_connection_is_chosen_keeps_it() {
        let slots = Slots::new(1, 0);
        let c = slots.register(v4(1));
        assert!(!slots.has_room());
        assert!(slots.close_one());
        assert!(slots.has_room());
        // The head was read before the task saw the request to close: it stays.
        let req = slots.begin(c.slot());
        assert!(!c.slot().closing());
        assert!(!slots.has_room());
        assert!(!slots.close_one());
        drop(req);
        // Idle after its request, it can be chosen again.
        assert!(slots.close_one());
        assert!(c.slot().closing());
        drop(c);
        assert!(slots.has_room());
        assert_eq!(slots.closing.load(Ordering::Acquire), 0);
        assert_eq!(slots.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn connections_still_closing_are_bounded() {
        let slots = Slots::new(4, 0);
        let mut held: Vec<_> = (0..4).map(|_| slots.register(v4(1))).collect();
        // Their tasks lag: each new connection makes room by closing another, until
        // MAX_CLOSING are closing; then the accept loop waits for them.
        for _ in 0..MAX_CLOSING {
            assert_eq!(slots.make_room(), Room::Made);
            held.push(slots.register(v4(1)));
        }
        assert_eq!(slots.make_room(), Room::Wait);
        // One ends: room again.
        let closing = held.iter().position(|h| h.slot().closing()).unwrap();
        held.remove(closing);
        assert_eq!(slots.make_room(), Room::Made);
    }

    #[test]
    fn choosing_from_many_connections_is_cheap() {
        // A flood keeps the cap full of fresh connections and each new one closes the
        // oldest: that choice must not scan every connection.
        let slots = Slots::new(1024, 0);
        let mut held: std::collections::VecDeque<_> =
            (0..1024).map(|_| slots.register(v4(1))).collect();
        let t = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(slots.make_room(), Room::Made);
            let oldest = held.pop_front().unwrap();
            assert!(oldest.slot().closing());
            drop(oldest);
            held.push_back(slots.register(v4(1)));
        }
        // A scan of 1,024 took ~300 µs a round in a debug build; the queue ~11 µs.
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
