//! Nimbus's response cache (API Gateway's stage cache for function URLs and user routes):
//! a byte-bounded LRU of HTTP responses, each kept for a TTL, keyed by function, route,
//! method, path and the request parts a route chose (`query:NAME`, `header:NAME`,
//! `identity`; [`key`]), with the HTTP rules of what may be stored ([`policy`]).
//!
//! Owns the entries and their bounds, nothing else: the gateway decides which requests
//! may use it (authentication, allowed invalidations), counts hits and misses in its
//! metrics, and invalidates a function when it changes. One mutex guards the map; it is
//! held for a hash lookup and a list move on a hit (the response is an `Arc` taken out
//! before the lock is released), for a few pointer moves and the evictions on an insert,
//! and for a scan of the entries when a function is invalidated. A miss hands out a
//! [`Ticket`]: a response computed while its function changed (a deploy, an alias move)
//! is not stored after the change. Depends on nothing of Nimbus.

pub mod key;
pub mod policy;

pub use key::{build_key, Identity, KeyInput, KeyPart};
pub use policy::{decide, wants_fresh, Decision, CACHEABLE_STATUSES};

use bytes::Bytes;
use hashlink::LinkedHashMap;
use http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Errors of this crate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("invalid cache key part {0:?}: use query:NAME, header:NAME or identity")]
    KeyPart(String),
}

/// The default bound of all entries together (`serve --cache-max-bytes`).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What every entry is counted at beyond its key, headers and body (map node, list
/// links, the entry's fields, the `Arc`s).
pub const ENTRY_OVERHEAD: usize = 160;

/// What each stored header is counted at beyond its name and value.
const HEADER_OVERHEAD: usize = 32;

/// A stored response: status, headers and the whole body.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl CachedResponse {
    /// The bytes an entry for `key` holding this response counts against the bound.
    pub fn size(&self, key: &[u8]) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        ENTRY_OVERHEAD + key.len() + headers + self.body.len()
    }
}

/// A fresh entry found for a key.
#[derive(Debug, Clone)]
pub struct Hit {
    pub response: Arc<CachedResponse>,
    /// How long ago it was stored (the `Age` header).
    pub age: Duration,
}

/// The answer of [`ResponseCache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    Hit(Hit),
    /// Nothing fresh: compute the response, then [`ResponseCache::insert`] it with this.
    Miss(Ticket),
}

/// The state of a function's entries when a miss began: [`ResponseCache::insert`] stores
/// nothing if the function was invalidated (or the cache cleared) since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
}

/// What [`ResponseCache::insert`] did.
#[derive(Debug, Default)]
pub struct Inserted {
    pub stored: bool,
    /// The functions of the fresh entries evicted to make room, one per entry (empty,
    /// without allocating, in the usual case).
    pub evicted: Vec<Arc<str>>,
}

/// How full the cache is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub entries: usize,
    pub bytes: usize,
    pub max_bytes: usize,
}

struct Entry {
    response: Arc<CachedResponse>,
    function: Arc<str>,
    stored: Instant,
    expires: Instant,
    size: usize,
}

#[derive(Default)]
struct Inner {
    /// Least recently used first.
    map: LinkedHashMap<Box<[u8]>, Entry>,
    bytes: usize,
    /// Bumped by [`ResponseCache::clear`].
    epoch: u64,
    /// Bumped per function by [`ResponseCache::invalidate_function`] (absent: 0).
    generations: HashMap<Box<str>, u64>,
}

impl Inner {
    fn ticket(&self, function: &str) -> Ticket {
        Ticket {
            epoch: self.epoch,
            generation: self.generations.get(function).copied().unwrap_or(0),
        }
    }
}

/// The cache. Share it as an `Arc`.
pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("usage", &self.usage())
            .finish()
    }
}

impl ResponseCache {
    /// A cache holding at most `max_bytes` (0: off, nothing is ever stored).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::default(),
        }
    }

    /// Whether anything can be stored.
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The largest entry stored: an eighth of the bound, so one response never empties
    /// the cache.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_bytes / 8
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fresh entry of `key` (made most recently used), or a ticket for storing the
    /// response about to be computed. An expired entry is dropped.
    pub fn lookup(&self, function: &str, key: &[u8], now: Instant) -> Lookup {
        let mut g = self.lock();
        if let Some(e) = g.map.to_back(key) {
            if now < e.expires {
                return Lookup::Hit(Hit {
                    response: e.response.clone(),
                    age: now.saturating_duration_since(e.stored),
                });
            }
            if let Some(e) = g.map.remove(key) {
                g.bytes -= e.size;
            }
        }
        Lookup::Miss(g.ticket(function))
    }

    /// A ticket without a lookup (a request allowed to bypass the cache replaces the
    /// entry it would have read).
    pub fn ticket(&self, function: &str) -> Ticket {
        self.lock().ticket(function)
    }

    /// Stores `response` under `key` for `ttl` from `now`, evicting the least recently
    /// used entries to stay within the bound. Nothing is stored when the response is
    /// larger than [`Self::max_entry_bytes`], the TTL is zero, or `function` was
    /// invalidated since `ticket` was taken.
    pub fn insert(
        &self,
        function: &str,
        key: Vec<u8>,
        response: CachedResponse,
        ttl: Duration,
        ticket: Ticket,
        now: Instant,
    ) -> Inserted {
        let size = response.size(&key);
        if ttl.is_zero() || size > self.max_entry_bytes() {
            return Inserted::default();
        }
        let entry = Entry {
            response: Arc::new(response),
            function: Arc::from(function),
            stored: now,
            expires: now + ttl,
            size,
        };
        let mut evicted = Vec::new();
        let mut g = self.lock();
        if g.ticket(function) != ticket {
            return Inserted::default();
        }
        if let Some(old) = g.map.remove(&key[..]) {
            g.bytes -= old.size;
        }
        while g.bytes + size > self.max_bytes {
            let Some((_, old)) = g.map.pop_front() else {
                break;
            };
            g.bytes -= old.size;
            if now < old.expires {
                evicted.push(old.function);
            }
        }
        g.bytes += size;
        g.map.insert(key.into_boxed_slice(), entry);
        Inserted {
            stored: true,
            evicted,
        }
    }

    /// Drops every entry of `function` (it was deployed, reconfigured, its alias moved,
    /// or a flush was asked); responses being computed for it are not stored. Returns how
    /// many entries went.
    pub fn invalidate_function(&self, function: &str) -> usize {
        let mut g = self.lock();
        *g.generations.entry(function.into()).or_insert(0) += 1;
        let (mut n, mut freed) = (0, 0);
        g.map.retain(|_, e| {
            let keep = &*e.function != function;
            if !keep {
                n += 1;
                freed += e.size;
            }
            keep
        });
        g.bytes -= freed;
        n
    }

    /// Drops every entry (another node changed the registry); responses being computed
    /// are not stored. Returns how many entries went.
    pub fn clear(&self) -> usize {
        let mut g = self.lock();
        g.epoch += 1;
        let n = g.map.len();
        g.map.clear();
        g.bytes = 0;
        n
    }

    pub fn usage(&self) -> Usage {
        let g = self.lock();
        Usage {
            entries: g.map.len(),
            bytes: g.bytes,
            max_bytes: self.max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: &str) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn store(c: &ResponseCache, f: &str, key: &str, body: &str, ttl: u64, now: Instant) -> bool {
        let Lookup::Miss(t) = c.lookup(f, key.as_bytes(), now) else {
            panic!("{key} is cached already");
        };
        c.insert(
            f,
            key.as_bytes().to_vec(),
            response(body),
            Duration::from_secs(ttl),
            t,
            now,
        )
        .stored
    }

    fn hit(c: &ResponseCache, f: &str, key: &str, now: Instant) -> Option<String> {
        match c.lookup(f, key.as_bytes(), now) {
            Lookup::Hit(h) => Some(String::from_utf8(h.response.body.to_vec()).unwrap()),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn hits_until_the_ttl_passes() {
        let c = ResponseCache::new(1 << 20);
        let t0 = Instant::now();
        assert!(store(&c, "f", "k", "one", 60, t0));
        assert_eq!(
            hit(&c, "f", "k", t0 + Duration::from_secs(59)).as_deref(),
            Some("one")
        );
        match c.lookup("f", b"k", t0 + Duration::from_secs(10)) {
            Lookup::Hit(h) => assert_eq!(h.age, Duration::from_secs(10)),
            Lookup::Miss(_) => panic!("expected a hit"),
        }
        assert_eq!(hit(&c, "f", "k", t0 + Duration::from_secs(60)), None);
        // The expired entry is gone, its bytes given back.
        assert_eq!(c.usage().entries, 0);
        assert_eq!(c.usage().bytes, 0);
    }

    #[test]
    fn evicts_the_least_recently_used_within_the_byte_bound() {
        let one = response("x".repeat(100).as_str()).size(b"k1");
        // Room for eight entries of this size (each is an eighth of the bound).
        let c = ResponseCache::new(one * 8);
        let now = Instant::now();
        for k in ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"] {
            assert!(store(&c, "f", k, &"x".repeat(100), 60, now));
        }
        assert_eq!(c.usage().bytes, one * 8);
        // k1 is used again: k2 is now the least recently used.
        assert!(hit(&c, "f", "k1", now).is_some());
        let Lookup::Miss(t) = c.lookup("g", b"k9", now) else {
            panic!()
        };
        let ins = c.insert(
            "g",
            b"k9".to_vec(),
            response(&"x".repeat(100)),
            Duration::from_secs(60),
            t,
            now,
        );
        assert!(ins.stored);
        assert_eq!(ins.evicted.iter().map(|f| &**f).collect::<Vec<_>>(), ["f"]);
        assert!(hit(&c, "f", "k2", now).is_none());
        assert!(hit(&c, "f", "k1", now).is_some());
        assert!(hit(&c, "f", "k3", now).is_some());
        assert!(c.usage().bytes <= one * 8);
        // Too large for one entry (an eighth of the bound): not stored, nothing evicted.
        let Lookup::Miss(t) = c.lookup("f", b"big", now) else {
            panic!()
        };
        let big = c.insert(
            "f",
            b"big".to_vec(),
            response(&"x".repeat(one)),
            Duration::from_secs(60),
            t,
            now,
        );
        assert!(!big.stored && big.evicted.is_empty());
        assert_eq!(c.usage().entries, 8);
    }

    #[test]
    fn expired_entries_pushed_out_are_not_evictions() {
        let one = response("y").size(b"a");
        let c = ResponseCache::new(one * 8);
        let t0 = Instant::now();
        for k in ["a", "b", "c", "d", "e", "f", "g", "h"] {
            assert!(store(&c, "f", k, "y", 1, t0));
        }
        let later = t0 + Duration::from_secs(5);
        let Lookup::Miss(t) = c.lookup("f", b"i", later) else {
            panic!()
        };
        let ins = c.insert(
            "f",
            b"i".to_vec(),
            response("y"),
            Duration::from_secs(1),
            t,
            later,
        );
        assert!(ins.stored);
        assert!(ins.evicted.is_empty());
    }

    #[test]
    fn invalidation_drops_a_functions_entries_and_refuses_stale_inserts() {
        let c = ResponseCache::new(1 << 20);
        let now = Instant::now();
        assert!(store(&c, "f", "f1", "a", 60, now));
        assert!(store(&c, "f", "f2", "b", 60, now));
        assert!(store(&c, "g", "g1", "c", 60, now));
        // A miss of f in flight while f is deployed.
        let Lookup::Miss(stale) = c.lookup("f", b"f3", now) else {
            panic!()
        };
        assert_eq!(c.invalidate_function("f"), 2);
        assert!(hit(&c, "f", "f1", now).is_none());
        assert_eq!(hit(&c, "g", "g1", now).as_deref(), Some("c"));
        let ins = c.insert(
            "f",
            b"f3".to_vec(),
            response("old"),
            Duration::from_secs(60),
            stale,
            now,
        );
        assert!(!ins.stored);
        // A miss begun after the change stores.
        assert!(store(&c, "f", "f3", "new", 60, now));
        assert_eq!(c.usage().entries, 2);
        // Another function's tickets stay valid across f's invalidation.
        let Lookup::Miss(tg) = c.lookup("g", b"g2", now) else {
            panic!()
        };
        c.invalidate_function("f");
        assert!(
            c.insert(
                "g",
                b"g2".to_vec(),
                response("d"),
                Duration::from_secs(60),
                tg,
                now
            )
            .stored
        );
        // clear: everything, and every ticket taken before.
        let Lookup::Miss(tg) = c.lookup("g", b"g3", now) else {
            panic!()
        };
        assert_eq!(c.clear(), 2);
        assert_eq!(
            c.usage(),
            Usage {
                entries: 0,
                bytes: 0,
                max_bytes: 1 << 20
            }
        );
        assert!(
            !c.insert(
                "g",
                b"g3".to_vec(),
                response("e"),
                Duration::from_secs(60),
                tg,
                now
            )
            .stored
        );
    }

    #[test]
    fn replacing_a_key_keeps_the_byte_count_right() {
        let c = ResponseCache::new(1 << 20);
        let now = Instant::now();
        assert!(store(&c, "f", "k", "short", 60, now));
        let t = c.ticket("f");
        assert!(
            c.insert(
                "f",
                b"k".to_vec(),
                response("a longer body"),
                Duration::from_secs(60),
                t,
                now
            )
            .stored
        );
        assert_eq!(c.usage().entries, 1);
        assert_eq!(c.usage().bytes, response("a longer body").size(b"k"));
        assert_eq!(hit(&c, "f", "k", now).as_deref(), Some("a longer body"));
    }

    #[test]
    fn off_stores_nothing() {
        let c = ResponseCache::new(0);
        assert!(!c.enabled());
        assert!(!store(&c, "f", "k", "a", 60, Instant::now()));
        assert_eq!(c.usage().entries, 0);
    }

    #[test]
    fn shared_between_threads() {
        let c = Arc::new(ResponseCache::new(1 << 20));
        let now = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for n in 0..200 {
                        let key = format!("{i}-{}", n % 20);
                        match c.lookup("f", key.as_bytes(), now) {
                            Lookup::Hit(h) => assert_eq!(h.response.body, key.as_bytes()),
                            Lookup::Miss(t) => {
                                let mut r = response("");
                                r.body = Bytes::from(key.clone().into_bytes());
                                c.insert("f", key.into_bytes(), r, Duration::from_secs(60), t, now);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.usage().entries, 80);
    }
}
