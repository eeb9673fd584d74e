//! Account-wide concurrency accounting (as Lambda): the account limit, reservations carved
//! out of it, the unreserved pool the other functions share, the bounded wait queue (per
//! function and in total) and the per-function scale-out rate (token bucket).
//!
//! Every structure here is lock-free or holds its lock for a few instructions, never across
//! an await: waiting happens on tokio semaphores (FIFO) and `Notify`s. What every invocation
//! reads (the reservations) is a [`SnapshotMap`]: no lock shared by all functions.

use nimbus_core::SnapshotMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Why a request was throttled; the gateway maps it to Lambda's `Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleReason {
    /// The function's reservation is full (or is 0):
    /// `ReservedFunctionConcurrentInvocationLimitExceeded`.
    Reserved,
    /// The unreserved account pool, or an unreserved function's own `concurrency`
    /// maximum, is exhausted: `ConcurrentInvocationLimitExceeded`.
    Concurrency,
    /// No warm instance freed and the scale-out rate allowed no new one before the
    /// deadline: `FunctionInvocationRateLimitExceeded`.
    ScaleRate,
}

impl ThrottleReason {
    /// Lambda's `Reason` field of the 429 `TooManyRequestsException`.
    pub fn lambda_reason(self) -> &'static str {
        match self {
            ThrottleReason::Reserved => "ReservedFunctionConcurrentInvocationLimitExceeded",
            ThrottleReason::Concurrency => "ConcurrentInvocationLimitExceeded",
            ThrottleReason::ScaleRate => "FunctionInvocationRateLimitExceeded",
        }
    }
}

/// How fast one function may start new instances: `per_sec` tokens a second, at most
/// `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleRate {
    pub per_sec: f64,
    pub burst: u32,
}

impl Default for ScaleRate {
    fn default() -> Self {
        Self {
            per_sec: 50.0,
            burst: 100,
        }
    }
}

impl ScaleRate {
    /// Parses `PER_SEC[:BURST]` (burst defaults to `max(1, PER_SEC)`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (r, b) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let per_sec: f64 = r
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {r:?}: expected PER_SEC[:BURST]"))?;
        if !(per_sec.is_finite() && per_sec > 0.0) {
            return Err(format!("the scale-out rate must be positive, not {r}"));
        }
        let burst = match b {
            Some(b) => b
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("invalid burst {b:?}"))?,
            None => per_sec.ceil() as u32,
        }
        .max(1);
        Ok(Self { per_sec, burst })
    }
}

/// A token bucket: one token per new instance.
pub(crate) struct TokenBucket {
    rate: ScaleRate,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(crate) fn new(rate: ScaleRate) -> Self {
        Self {
            rate,
            state: Mutex::new((rate.burst as f64, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is due.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let (tokens, last) = *st;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate.per_sec)
            .min(self.rate.burst as f64);
        if tokens >= 1.0 {
            *st = (tokens - 1.0, now);
            Ok(())
        } else {
            *st = (tokens, now);
            // At least a millisecond: a wait that rounds to nothing would be taken again
            // at once, with no time for the bucket to refill (a busy loop).
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate.per_sec)
                .max(Duration::from_millis(1)))
        }
    }
}

/// The account: its limit, the reservations, the unreserved pool and the total queue.
pub(crate) struct Account {
    pub(crate) limit: u32,
    /// Permits of the unreserved pool (account − Σreserved); functions without a
    /// reservation hold one per running invocation.
    pub(crate) unreserved: Arc<Semaphore>,
    /// Reservations by function: read by every invocation, so without a lock.
    reserved: SnapshotMap<String, u32>,
    /// Σ reservations.
    reserved_total: AtomicU32,
    /// Permits the unreserved semaphore is meant to have; held while a reservation changes.
    capacity: Mutex<u32>,
    /// Requests waiting anywhere in the pool.
    pub(crate) waiting: AtomicUsize,
}

impl Account {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            unreserved: Arc::new(Semaphore::new(limit as usize)),
            reserved: SnapshotMap::new(),
            reserved_total: AtomicU32::new(0),
            capacity: Mutex::new(limit),
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn reservation(&self, function: &str) -> Option<u32> {
        self.reserved.get(function)
    }

    /// Σ reservations.
    pub(crate) fn reserved_total(&self) -> u32 {
        self.reserved_total.load(Ordering::SeqCst)
    }

    /// Sets (or with `None` removes) a function's reservation and resizes the unreserved
    /// pool to account − Σreserved. Permits in use when it shrinks are taken back as they
    /// are released.
    pub(crate) fn set_reservation(&self, function: &str, value: Option<u32>) {
        let mut capacity = self.capacity.lock().unwrap();
        let sum: u32 = self.reserved.update(|m| {
            match value {
                Some(v) => m.insert(function.to_string(), v),
                None => m.remove(function),
            };
            m.values().sum()
        });
        self.reserved_total.store(sum, Ordering::SeqCst);
        let target = self.limit.saturating_sub(sum);
        if target > *capacity {
            self.unreserved.add_permits((target - *capacity) as usize);
        } else if target < *capacity {
            let want = (*capacity - target) as usize;
            let got = self.unreserved.forget_permits(want);
            if got < want {
                let sem = self.unreserved.clone();
                let debt = (want - got) as u32;
                tokio::spawn(async move {
                    if let Ok(p) = sem.acquire_many_owned(debt).await {
                        p.forget();
                    }
                });
            }
        }
        *capacity = target;
    }
}

/// A place in the wait queue: counted per function and in the account; released on drop.
pub(crate) struct QueueSlot<'a> {
    function: &'a AtomicUsize,
    account: &'a AtomicUsize,
}

impl<'a> QueueSlot<'a> {
    /// Takes a place, or `None` when the function's or the account's queue is full.
    pub(crate) fn enter(
        function: &'a AtomicUsize,
        per_function: usize,
        account: &'a AtomicUsize,
        total: usize,
    ) -> Option<Self> {
        if function.fetch_add(1, Ordering::SeqCst) >= per_function {
            function.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        if account.fetch_add(1, Ordering::SeqCst) >= total {
            account.fetch_sub(1, Ordering::SeqCst);
            function.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self { function, account })
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.function.fetch_sub(1, Ordering::SeqCst);
        self.account.fetch_sub(1, Ordering::SeqCst);
    }
}
