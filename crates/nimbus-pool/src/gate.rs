//! The instance gate (opt-in: `--instance-gate on`): on a host whose CPUs are
//! saturated, a process function's short invocations wait for one of its busy instances
//! to come back instead of making one more instance busy, once more instances no longer
//! bring more throughput.
//!
//! Lambda's model — one instance per concurrent request — is what the pool does as long
//! as the host has CPU to spare. On a small host it stops paying off for short
//! invocations: 32 Node instances answering a hello on 2 cores each serve a thirty-second
//! of the requests, their JITs stay cold, the scheduler switches between them, and the
//! host serves fewer requests than with 4 (docs/performance.md, issue 19). The gate
//! measures that, per version, with two latencies of its warm invocations:
//!
//! - the *floor*: invocations that started while at most as many instances of the
//!   version were busy as the host has cores, the host's CPUs not saturated
//!   (uncontended);
//! - the *recent* latency of all of them, and how many instances were busy on average.
//!
//! Once the recent latency is twice the floor or more, more busy instances only add
//! contention: by Little's law the version's throughput is `busy / recent`, and at floor
//! latency it would need `busy × floor / recent` instances — that many may be busy (at
//! least two per core); a request beyond it waits for a returning instance. A function
//! waiting on I/O keeps its latency near its floor however many instances run, so it is
//! never gated; a CPU-bound one gated stops adding contention, its latency falls back
//! towards the floor and the gate opens again. Nothing is gated while the host's CPUs
//! have at least a tenth idle (sampled from `/proc/stat` at most every 250 ms), nor for
//! invocations of 100 ms or more (a cold start costs less than waiting for them), nor
//! before the version has a floor; and a gated request waits at most a few of the recent
//! latencies (more the more requests wait ahead of it) before it is let through anyway.
//!
//! Off by default: as it stands it gains nothing measurable for the Node and Python
//! hellos on 2 cores; an earlier variant that let only one waiter on per returning
//! instance gained 25 % (one run). See docs/performance.md, "The instance gate".

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;

/// Invocations this long or longer are never gated.
const SHORT: Duration = Duration::from_millis(100);
/// Warm invocations at low concurrency before the floor is trusted.
const FLOOR_SAMPLES: u32 = 8;
/// How often the host's CPU use is read at most.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The host is saturated when its CPUs were busy at least this share of the last sample.
const SATURATED: f64 = 0.9;

/// Whether the host's CPUs are saturated, from `/proc/stat` (or set by a test).
pub(crate) struct HostCpu {
    /// 0: read `/proc/stat`; 1: a test says not saturated; 2: a test says saturated.
    forced: AtomicU8,
    saturated: AtomicBool,
    /// When `last` was read, in ms since `epoch`; `u64::MAX` while a read is in progress.
    read_at_ms: AtomicU64,
    epoch: std::time::Instant,
    /// The previous `/proc/stat` totals: (busy, all) jiffies.
    last: Mutex<Option<(u64, u64)>>,
}

impl HostCpu {
    pub(crate) fn new() -> Self {
        Self {
            // The pool's unit tests run on whatever the machine is doing: unsaturated
            // unless a test says otherwise.
            forced: AtomicU8::new(if cfg!(test) { 1 } else { 0 }),
            saturated: AtomicBool::new(false),
            read_at_ms: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            last: Mutex::new(None),
        }
    }

    /// For tests: the host is (`Some(true)`) or is not saturated, or is read again (`None`).
    #[cfg(test)]
    pub(crate) fn force(&self, saturated: Option<bool>) {
        self.forced.store(
            match saturated {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            },
            Ordering::SeqCst,
        );
    }

    /// Whether at least 90 % of the host's CPU time was busy since the previous read
    /// (read again when that is 250 ms old; one caller reads, the others use the last
    /// answer).
    pub(crate) fn saturated(&self) -> bool {
        match self.forced.load(Ordering::Relaxed) {
            1 => return false,
            2 => return true,
            _ => {}
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let at = self.read_at_ms.load(Ordering::Relaxed);
        if at != u64::MAX
            && now.saturating_sub(at) >= SAMPLE_EVERY.as_millis() as u64
            && self
                .read_at_ms
                .compare_exchange(at, u64::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let totals = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| cpu_totals(&s));
            let mut last = self.last.lock().unwrap();
            if let (Some((b1, a1)), Some((b0, a0))) = (totals, *last) {
                let all = a1.saturating_sub(a0);
                if all > 0 {
                    let share = b1.saturating_sub(b0) as f64 / all as f64;
                    self.saturated.store(share >= SATURATED, Ordering::Relaxed);
                }
            }
            *last = totals;
            self.read_at_ms.store(now, Ordering::Release);
        }
        self.saturated.load(Ordering::Relaxed)
    }
}

/// `(busy, all)` jiffies of the host's first `/proc/stat` line; idle and iowait are
/// not busy.
fn cpu_totals(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((all.saturating_sub(idle), all))
}

/// One version's latencies, for the gate.
#[derive(Default)]
pub(crate) struct Load(Mutex<LoadInner>);

#[derive(Default)]
struct LoadInner {
    /// EWMA of warm invocations that started with at most `cores` busy, in µs.
    floor_us: f64,
    floor_samples: u32,
    /// EWMA of all warm invocations, in µs, and of the busy instances at their start.
    recent_us: f64,
    recent_busy: f64,
}

impl Load {
    /// A warm invocation that took `took`, started with `busy` instances busy (itself
    /// included), on a host whose CPUs were `saturated` or not. The floor counts only
    /// calls with the host's CPUs to spare (on a saturated host even a lone call waits
    /// for the CPU, and a floor measured so would open the gate it is there to close).
    pub(crate) fn record(&self, took: Duration, busy: usize, cores: usize, saturated: bool) {
        let us = took.as_secs_f64() * 1e6;
        let mut l = self.0.lock().unwrap();
        if busy <= cores && !saturated {
            l.floor_us = ewma(l.floor_us, us, 8.0, l.floor_samples == 0);
            l.floor_samples = l.floor_samples.saturating_add(1);
        }
        let first = l.recent_us == 0.0;
        l.recent_us = ewma(l.recent_us, us, 16.0, first);
        l.recent_busy = ewma(l.recent_busy, busy as f64, 16.0, first);
    }

    /// Whether one more instance may become busy while `busy` are; `min` is the fewest
    /// busy instances the gate allows (two per core).
    pub(crate) fn admits(&self, busy: usize, min: usize) -> bool {
        if busy < min {
            return true;
        }
        let l = self.0.lock().unwrap();
        // Latency under twice the floor: more instances still bring more throughput
        // (a burst of calls waiting on I/O ramps up without waiting for the averages).
        if l.floor_samples < FLOOR_SAMPLES
            || l.recent_us >= SHORT.as_secs_f64() * 1e6
            || l.recent_us < 2.0 * l.floor_us
        {
            return true;
        }
        let target = (l.recent_busy * l.floor_us / l.recent_us).ceil() as usize;
        busy < target.max(min)
    }

    /// The gate's figures (floor and recent latency in µs, busy instances on average,
    /// floor samples), for its debug log.
    pub(crate) fn figures(&self) -> (f64, f64, f64, u32) {
        let l = self.0.lock().unwrap();
        (l.floor_us, l.recent_us, l.recent_busy, l.floor_samples)
    }

    /// How long a request with `ahead` requests in front of it waits at most while
    /// `busy` instances are busy: returning instances come back every `recent / busy` on
    /// average, so its turn comes after about `recent × (ahead + 1) / busy`; twice that,
    /// and at least two recent latencies (at most a second).
    pub(crate) fn bound(&self, busy: usize, ahead: usize) -> Duration {
        let recent = self.0.lock().unwrap().recent_us;
        let us = recent * (2.0 + 2.0 * (ahead as f64 + 1.0) / busy.max(1) as f64);
        Duration::from_micros(us as u64).min(SHORT * 10)
    }
}

/// The requests waiting at a version's gate, first come first served: returning
/// instances let the first ones go on, as many as the gate admits; a newcomer queues
/// behind them (else the clients whose calls just ended would take every returning
/// instance first).
#[derive(Default)]
pub(crate) struct Line {
    waiting: Mutex<VecDeque<oneshot::Sender<()>>>,
    len: AtomicUsize,
    /// Let through, not yet gone on (not yet counted as past the gate by the pool).
    pending: AtomicUsize,
}

impl Line {
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// Goes on at once (`None`) when nobody waits and `admits(0)`; else joins the line
    /// (and the line moves on as far as `admits` lets it, this request included): with
    /// how many wait ahead. `admits(k)`: whether one more may go on besides `k` let
    /// through and not gone on yet.
    pub(crate) fn join(&self, admits: impl Fn(usize) -> bool) -> Option<(Ticket<'_>, usize)> {
        let mut w = self.waiting.lock().unwrap();
        if w.is_empty() && admits(self.pending.load(Ordering::SeqCst)) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        w.push_back(tx);
        let ahead = w.len() - 1;
        self.move_on(&mut w, admits);
        Some((
            Ticket {
                rx,
                line: self,
                done: false,
            },
            ahead,
        ))
    }

    /// A request past the gate ended: the first ones still waiting go on while `admits`.
    /// Those that stopped waiting — their bound passed, their caller left — are skipped.
    pub(crate) fn release(&self, admits: impl Fn(usize) -> bool) {
        if self.is_empty() {
            return;
        }
        let mut w = self.waiting.lock().unwrap();
        self.move_on(&mut w, admits);
    }

    fn move_on(&self, w: &mut VecDeque<oneshot::Sender<()>>, admits: impl Fn(usize) -> bool) {
        while !w.is_empty() && admits(self.pending.load(Ordering::SeqCst)) {
            while let Some(tx) = w.pop_front() {
                // Counted before the send: the waiter may go on (and uncount) at once.
                self.pending.fetch_add(1, Ordering::SeqCst);
                if tx.send(()).is_ok() {
                    break;
                }
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.len.store(w.len(), Ordering::SeqCst);
    }
}

/// A place in the [`Line`].
pub(crate) struct Ticket<'a> {
    rx: oneshot::Receiver<()>,
    line: &'a Line,
    done: bool,
}

impl Ticket<'_> {
    /// Waits to be let through, at most until `until`: true when let through.
    pub(crate) async fn wait(&mut self, until: tokio::time::Instant) -> bool {
        tokio::select! {
            r = &mut self.rx => {
                self.done = true;
                if r.is_ok() {
                    self.line.pending.fetch_sub(1, Ordering::SeqCst);
                }
                r.is_ok()
            }
            _ = tokio::time::sleep_until(until) => false,
        }
    }
}

impl Drop for Ticket<'_> {
    /// Gone without being let through (bound passed, caller left): a let-through that
    /// raced with it is uncounted.
    fn drop(&mut self) {
        if !self.done {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.line.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn ewma(old: f64, new: f64, weight: f64, first: bool) -> f64 {
    if first {
        new
    } else {
        old + (new - old) / weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_totals() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
        assert_eq!(cpu_totals(stat), Some((160, 980)));
        assert_eq!(cpu_totals("intr 1 2 3"), None);
    }

    fn load_with(floor: Duration, recent: Duration, busy: usize) -> Load {
        let l = Load::default();
        for _ in 0..FLOOR_SAMPLES {
            l.record(floor, 1, 2, false);
        }
        for _ in 0..200 {
            l.record(recent, busy, 2, true);
        }
        l
    }

    #[test]
    fn contended_short_invocations_are_gated_down_to_what_the_throughput_needs() {
        // 32 busy, latency 20× the floor: they would need 1.6 at the floor, below two
        // per core, so 4 may be busy.
        let l = load_with(Duration::from_micros(300), Duration::from_millis(6), 32);
        assert!(l.admits(3, 4));
        assert!(!l.admits(4, 4));
        assert!(!l.admits(31, 4));
        // More waiting ahead: a longer bound.
        assert!(l.bound(8, 20) > l.bound(8, 0));
    }

    #[test]
    fn latency_near_the_floor_is_never_gated() {
        // Waiting on I/O: 2 ms whatever the concurrency.
        let l = load_with(Duration::from_millis(2), Duration::from_micros(2100), 32);
        assert!(l.admits(32, 4));
        assert!(l.admits(60, 4));
    }

    #[test]
    fn long_invocations_and_unknown_floors_are_never_gated() {
        let l = load_with(Duration::from_millis(20), Duration::from_millis(400), 32);
        assert!(l.admits(32, 4));
        let l = Load::default();
        for _ in 0..100 {
            l.record(Duration::from_millis(5), 32, 2, true);
        }
        assert!(l.admits(32, 4), "no floor yet");
        // Calls alone on a saturated host are no floor either.
        for _ in 0..100 {
            l.record(Duration::from_micros(300), 1, 2, true);
        }
        assert!(l.admits(32, 4), "no floor measured with CPUs to spare");
    }

    #[tokio::test]
    async fn the_line_is_first_come_first_served_and_skips_those_gone() {
        let line = Line::default();
        let soon = || tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(line.join(|_| true).is_none(), "nobody waits: straight on");
        let (a, ahead_a) = line.join(|_| false).unwrap();
        let (mut b, ahead_b) = line.join(|_| false).unwrap();
        let (mut c, ahead_c) = line.join(|_| false).unwrap();
        assert_eq!((ahead_a, ahead_b, ahead_c), (0, 1, 2));
        drop(a);
        line.release(|_| false);
        assert!(!line.is_empty());
        // Room for one: a left, so b; c waits while b has not gone on.
        line.release(|k| k < 1);
        line.release(|k| k < 1);
        assert!(!c.wait(soon()).await);
        assert!(b.wait(soon()).await);
        // A newcomer with room for two: c first, then the newcomer itself.
        let (mut d, ahead_d) = line.join(|k| k < 2).unwrap();
        assert_eq!(ahead_d, 1);
        assert!(c.wait(soon()).await && d.wait(soon()).await);
        assert!(line.is_empty());
        assert_eq!(line.pending.load(Ordering::SeqCst), 0);
        // Let through but gone before it saw it: uncounted.
        let (e, _) = line.join(|_| false).unwrap();
        line.release(|_| true);
        assert_eq!(line.pending.load(Ordering::SeqCst), 1);
        drop(e);
        assert_eq!(line.pending.load(Ordering::SeqCst), 0);
    }
}
