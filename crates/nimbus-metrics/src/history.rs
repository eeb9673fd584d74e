//! Per-minute aggregates of each function, accumulated in memory off any lock and taken
//! by a background flusher once a minute (see `nimbus-store`'s history store).
//!
//! Durations go into a fixed, mergeable [`LatencyHistogram`]: log-spaced buckets (four per
//! doubling, so a percentile read from it is within ±9 % of the true value) from 100 µs to
//! about 15 minutes. Merging minutes into longer periods, or functions into a summary, adds
//! bucket counts; percentiles are read from the merged counts.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets of [`LatencyHistogram`]: bucket 0 holds durations under [`HIST_BASE_MS`],
/// bucket `i ≥ 1` holds `[BASE·2^((i-1)/4), BASE·2^(i/4))` ms, the last one everything above.
pub const HIST_BUCKETS: usize = 96;
/// The lower bound of bucket 1 in milliseconds (100 µs).
pub const HIST_BASE_MS: f64 = 0.1;
const PER_DOUBLING: f64 = 4.0;

/// Bucket index of a duration in milliseconds.
pub fn bucket_of(ms: f64) -> usize {
    if ms.is_nan() || ms < HIST_BASE_MS {
        return 0;
    }
    let i = ((ms / HIST_BASE_MS).log2() * PER_DOUBLING).floor() as usize + 1;
    i.min(HIST_BUCKETS - 1)
}

/// The lower bound (ms) of bucket `i ≥ 1`.
fn lower_ms(i: usize) -> f64 {
    HIST_BASE_MS * ((i as f64 - 1.0) / PER_DOUBLING).exp2()
}

/// A value representing bucket `i`: the geometric middle of its bounds (0.05 ms for
/// bucket 0, the lower bound for the open last one).
fn representative_ms(i: usize) -> f64 {
    match i {
        0 => HIST_BASE_MS / 2.0,
        i if i == HIST_BUCKETS - 1 => lower_ms(i),
        i => (lower_ms(i) * lower_ms(i + 1)).sqrt(),
    }
}

/// Counts of durations per bucket; merges by addition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; HIST_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: [0; HIST_BUCKETS],
        }
    }
}

impl LatencyHistogram {
    pub fn record_ms(&mut self, ms: f64) {
        self.counts[bucket_of(ms)] += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0 < q ≤ 1) in milliseconds: the representative value of the
    /// bucket holding the `ceil(q·n)`-th smallest duration; `None` when empty.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(representative_ms(i));
            }
        }
        None
    }

    /// Sparse text form: `index:count` pairs of non-empty buckets, comma-separated (at
    /// most 96 pairs, so at most about 2 KB; a few bytes for typical minutes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{i}:{c}"));
        }
        out
    }

    /// Reads [`Self::encode`]'s form; malformed pairs are skipped.
    pub fn decode(text: &str) -> Self {
        let mut h = Self::default();
        for pair in text.split(',') {
            if let Some((i, c)) = pair.split_once(':') {
                if let (Ok(i), Ok(c)) = (i.parse::<usize>(), c.parse::<u64>()) {
                    if i < HIST_BUCKETS {
                        h.counts[i] += c;
                    }
                }
            }
        }
        h
    }
}

/// One function's aggregates over one minute (or any merged span).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteStats {
    /// Invocations that ran (success, error, timeout, init error); throttles excluded.
    pub invocations: u64,
    /// Invocations that failed, timeouts and init errors included (Lambda's `Errors`).
    pub errors: u64,
    pub throttles: u64,
    pub timeouts: u64,
    pub cold_starts: u64,
    /// The most invocations in flight at once.
    pub max_concurrency: u64,
    pub durations: LatencyHistogram,
}

impl MinuteStats {
    /// Adds `other` (sums, and the larger concurrency).
    pub fn merge(&mut self, other: &MinuteStats) {
        self.invocations += other.invocations;
        self.errors += other.errors;
        self.throttles += other.throttles;
        self.timeouts += other.timeouts;
        self.cold_starts += other.cold_starts;
        self.max_concurrency = self.max_concurrency.max(other.max_concurrency);
        self.durations.merge(&other.durations);
    }

    pub fn is_empty(&self) -> bool {
        self.invocations == 0
            && self.throttles == 0
            && self.cold_starts == 0
            && self.max_concurrency == 0
    }
}

/// Lock-free accumulator of one function's current minute (see [`crate::FunctionMetrics`]).
#[derive(Debug)]
pub struct MinuteCell {
    invocations: AtomicU64,
    errors: AtomicU64,
    throttles: AtomicU64,
    timeouts: AtomicU64,
    cold_starts: AtomicU64,
    in_flight: AtomicI64,
    max_in_flight: AtomicU64,
    buckets: [AtomicU64; HIST_BUCKETS],
}

impl Default for MinuteCell {
    fn default() -> Self {
        Self {
            invocations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            throttles: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            max_in_flight: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl MinuteCell {
    pub(crate) fn finished(&self, outcome: crate::InvocationOutcome, duration: Option<Duration>) {
        use crate::InvocationOutcome as O;
        match outcome {
            O::Throttle => {
                self.throttles.fetch_add(1, Relaxed);
                return;
            }
            O::Success => {}
            O::Timeout => {
                self.timeouts.fetch_add(1, Relaxed);
                self.errors.fetch_add(1, Relaxed);
            }
            O::Error | O::InitError => {
                self.errors.fetch_add(1, Relaxed);
            }
        }
        self.invocations.fetch_add(1, Relaxed);
        if let Some(d) = duration {
            self.buckets[bucket_of(d.as_secs_f64() * 1000.0)].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn cold_start(&self) {
        self.cold_starts.fetch_add(1, Relaxed);
    }

    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now.max(0) as u64, Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Invocations in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed).max(0) as u64
    }

    /// What was accumulated since the last take, without resetting it.
    pub fn peek(&self) -> MinuteStats {
        self.read(|a| a.load(Relaxed))
    }

    /// What was accumulated since the last take; starts the next minute (its maximum
    /// concurrency starts at the invocations in flight now).
    pub fn take(&self) -> MinuteStats {
        let mut s = self.read(|a| a.swap(0, Relaxed));
        s.max_concurrency = self.max_in_flight.swap(self.in_flight(), Relaxed);
        s
    }

    fn read(&self, get: impl Fn(&AtomicU64) -> u64) -> MinuteStats {
        let mut durations = LatencyHistogram::default();
        for (c, b) in durations.counts.iter_mut().zip(self.buckets.iter()) {
            *c = get(b);
        }
        MinuteStats {
            invocations: get(&self.invocations),
            errors: get(&self.errors),
            throttles: get(&self.throttles),
            timeouts: get(&self.timeouts),
            cold_starts: get(&self.cold_starts),
            max_concurrency: self.max_in_flight.load(Relaxed),
            durations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_spaced_and_bounded() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.099), 0);
        assert_eq!(bucket_of(0.1), 1);
        assert_eq!(bucket_of(0.2), 5);
        assert_eq!(bucket_of(1e12), HIST_BUCKETS - 1);
        for ms in [0.15, 1.0, 7.3, 120.0, 4_000.0, 600_000.0] {
            let i = bucket_of(ms);
            assert!(lower_ms(i) <= ms && ms < lower_ms(i + 1), "{ms} in {i}");
            let r = representative_ms(i);
            assert!((r - ms).abs() / ms < 0.1, "{ms} represented by {r}");
        }
    }

    #[test]
    fn percentiles_of_merged_histograms() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        for i in 1..=90 {
            a.record_ms(i as f64 / 10.0); // 0.1 ms .. 9 ms
        }
        for _ in 0..10 {
            b.record_ms(1000.0);
        }
        assert_eq!(a.percentile_ms(0.99).map(|v| v < 10.0), Some(true));
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.count(), 100);
        let p50 = m.percentile_ms(0.5).unwrap();
        assert!((4.0..5.0).contains(&p50), "p50 {p50}");
        let p90 = m.percentile_ms(0.9).unwrap();
        assert!((8.0..10.0).contains(&p90), "p90 {p90}");
        let p99 = m.percentile_ms(0.99).unwrap();
        assert!((920.0..1090.0).contains(&p99), "p99 {p99}");
        assert_eq!(LatencyHistogram::default().percentile_ms(0.5), None);
        // Merging is order-independent and survives the stored form.
        let mut n = b.clone();
        n.merge(&a);
        assert_eq!(n, m);
        assert_eq!(LatencyHistogram::decode(&m.encode()), m);
        assert_eq!(LatencyHistogram::decode("x,3:2,999:1,4"), {
            let mut h = LatencyHistogram::default();
            h.counts[3] = 2;
            h
        });
    }

    #[test]
    fn a_cell_counts_outcomes_and_concurrency_per_take() {
        use crate::InvocationOutcome as O;
        let c = MinuteCell::default();
        c.enter();
        c.enter();
        c.leave();
        c.finished(O::Success, Some(Duration::from_millis(2)));
        c.finished(O::Timeout, Some(Duration::from_secs(3)));
        c.finished(O::Error, Some(Duration::from_millis(5)));
        c.finished(O::Throttle, None);
        c.cold_start();
        assert_eq!(c.peek().invocations, 3);
        let m = c.take();
        assert_eq!(
            (
                m.invocations,
                m.errors,
                m.timeouts,
                m.throttles,
                m.cold_starts
            ),
            (3, 2, 1, 1, 1)
        );
        assert_eq!(m.max_concurrency, 2);
        assert_eq!(m.durations.count(), 3);
        // The next minute starts with the one invocation still in flight.
        let next = c.take();
        assert_eq!((next.invocations, next.max_concurrency), (0, 1));
        c.leave();
        assert_eq!(c.take().max_concurrency, 1);
        assert!(c.take().is_empty());
    }
}
