//! Write latency of the stores' databases (`nimbus_store_write_seconds{db}`): the stores
//! time each commit (WAL append and, with `synchronous=FULL`, its fsync) through a
//! [`WriteTimer`], and `/v1/ready` reads the slowest of the last minute
//! ([`recent_store_writes`]). Also the sizes of databases that are not files in the data
//! dir ([`add_database_sizes`], [`database_sizes`]: PostgreSQL's, per component).
//!
//! Process-wide, unlike the rest of the registry: the stores are opened before, and
//! without, the registry (one server per process; every [`crate::Metrics`] serves these
//! series). The label set is the databases' names: the SQLite files' (`registry`,
//! `events`, …), or `postgres` for the one PostgreSQL database all stores share in cluster
//! mode (one WAL, one commit latency). On the write path a commit costs an `Instant`, one
//! histogram observation and two atomic operations on the last minute's figures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Buckets of a commit (seconds): a page-cache write to a stalled disk.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The window of [`recent_store_writes`], in slots of [`SLOT_SECS`].
const SLOTS: u64 = 6;
const SLOT_SECS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DbLabels {
    db: String,
}

pub(crate) type WriteFamily = Family<DbLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

struct StoreWrites {
    family: WriteFamily,
    /// Each database's last minute, in the order they were opened.
    recent: Mutex<Vec<(String, Arc<Recent>)>>,
}

static WRITES: LazyLock<StoreWrites> = LazyLock::new(|| StoreWrites {
    family: Family::new_with_constructor(histogram),
    recent: Mutex::new(Vec::new()),
});

/// The family every registry serves as `nimbus_store_write_seconds`.
pub(crate) fn family() -> WriteFamily {
    WRITES.family.clone()
}

/// Times the commits of one database (keep one per open database).
#[derive(Debug, Clone)]
pub struct WriteTimer {
    histogram: Histogram,
    recent: Arc<Recent>,
}

impl WriteTimer {
    /// The timer of database `db` (its file name without `.db`); databases of the same
    /// name share their series.
    pub fn new(db: &str) -> Self {
        let histogram = WRITES
            .family
            .get_or_create_owned(&DbLabels { db: db.to_string() });
        let mut recent = WRITES.recent.lock().unwrap_or_else(|e| e.into_inner());
        let recent = match recent.iter().find(|(name, _)| name == db) {
            Some((_, r)) => r.clone(),
            None => {
                let r = Arc::new(Recent::default());
                recent.push((db.to_string(), r.clone()));
                r
            }
        };
        Self { histogram, recent }
    }

    /// One commit took `took`.
    pub fn observe(&self, took: Duration) {
        self.histogram.observe(took.as_secs_f64());
        self.recent.observe(took, unix_secs());
    }
}

/// One database's writes of the last minute, for `/v1/ready`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentWrites {
    pub db: String,
    /// Commits in the window.
    pub count: u64,
    /// The slowest of them (zero without any).
    pub max: Duration,
}

/// Every opened database's commits of the last 50 to 60 seconds (slots of 10 s).
pub fn recent_store_writes() -> Vec<RecentWrites> {
    let now = unix_secs();
    let recent = WRITES.recent.lock().unwrap_or_else(|e| e.into_inner());
    recent
        .iter()
        .map(|(db, r)| {
            let (count, max) = r.read(now);
            RecentWrites {
                db: db.clone(),
                count,
                max,
            }
        })
        .collect()
}

/// A source of database sizes in bytes by name; `None` once its database is closed (the
/// source is then forgotten).
pub type SizeSource = Box<dyn Fn() -> Option<Vec<(String, u64)>> + Send + Sync>;

static SIZE_SOURCES: Mutex<Vec<SizeSource>> = Mutex::new(Vec::new());

/// Registers the sizes of databases that are not files in the data dir (the PostgreSQL
/// pool registers its components' tables), read at each `/metrics` scrape.
pub fn add_database_sizes(source: SizeSource) {
    SIZE_SOURCES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(source);
}

/// The sizes every registered source reports now (sorted by name).
pub fn database_sizes() -> Vec<(String, u64)> {
    let mut sources = SIZE_SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    let mut sizes = Vec::new();
    sources.retain(|source| match source() {
        Some(found) => {
            sizes.extend(found);
            true
        }
        None => false,
    });
    sizes.sort();
    sizes
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A ring of 10-second slots: the count and the slowest commit of each. Racing writers
/// of the same database (rare: each store commits under its connection's lock) may lose
/// a figure when a slot is recycled; good enough for a health signal.
#[derive(Debug, Default)]
struct Recent {
    slots: [Slot; SLOTS as usize],
}

#[derive(Debug, Default)]
struct Slot {
    /// Which 10-second period of the Unix time the figures are of.
    period: AtomicU64,
    count: AtomicU64,
    max_ns: AtomicU64,
}

impl Recent {
    fn observe(&self, took: Duration, now_secs: u64) {
        let period = now_secs / SLOT_SECS;
        let slot = &self.slots[(period % SLOTS) as usize];
        if slot.period.load(Ordering::Acquire) != period {
            slot.count.store(0, Ordering::Relaxed);
            slot.max_ns.store(0, Ordering::Relaxed);
            slot.period.store(period, Ordering::Release);
        }
        slot.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        slot.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    fn read(&self, now_secs: u64) -> (u64, Duration) {
        let now = now_secs / SLOT_SECS;
        let (mut count, mut max) = (0, 0);
        for s in &self.slots {
            let p = s.period.load(Ordering::Acquire);
            if p + SLOTS > now && p <= now {
                count += s.count.load(Ordering::Relaxed);
                max = max.max(s.max_ns.load(Ordering::Relaxed));
            }
        }
        (count, Duration::from_nanos(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_minute_forgets_older_slots() {
        let r = Recent::default();
        let t0 = 1_000_000;
        r.observe(Duration::from_millis(900), t0);
        r.observe(Duration::from_millis(2), t0 + 15);
        assert_eq!(r.read(t0 + 20), (2, Duration::from_millis(900)));
        // A minute later the slow one is out of the window, the other one still in.
        assert_eq!(r.read(t0 + 65), (1, Duration::from_millis(2)));
        // Its slot is reused by a new period.
        r.observe(Duration::from_millis(1), t0 + 60);
        assert_eq!(r.read(t0 + 61), (2, Duration::from_millis(2)));
        assert_eq!(r.read(t0 + 200), (0, Duration::ZERO));
    }

    #[test]
    fn size_sources_are_read_until_their_database_is_gone() {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let o = open.clone();
        add_database_sizes(Box::new(move || {
            o.load(Ordering::Relaxed)
                .then(|| vec![("unit-size".to_string(), 42)])
        }));
        assert!(database_sizes().contains(&("unit-size".to_string(), 42)));
        open.store(false, Ordering::Relaxed);
        assert!(!database_sizes().iter().any(|(db, _)| db == "unit-size"));
        open.store(true, Ordering::Relaxed);
        assert!(
            !database_sizes().iter().any(|(db, _)| db == "unit-size"),
            "a source that said its database is gone is forgotten"
        );
    }

    #[test]
    fn timers_record_per_database() {
        let a = WriteTimer::new("unit-a");
        WriteTimer::new("unit-a").observe(Duration::from_millis(3));
        a.observe(Duration::from_millis(7));
        let w = recent_store_writes();
        let mine = w.iter().find(|w| w.db == "unit-a").unwrap();
        assert_eq!((mine.count, mine.max), (2, Duration::from_millis(7)));
        let text = {
            let m = crate::Metrics::new(crate::MetricsConfig::default());
            m.encode().unwrap()
        };
        assert!(
            text.contains(r#"nimbus_store_write_seconds_count{db="unit-a"} 2"#),
            "{text}"
        );
    }
}
