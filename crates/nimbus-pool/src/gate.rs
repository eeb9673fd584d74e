//! The instance gate (`--instance-gate on`): on a host whose CPUs are saturated, a
//! process function's short invocations wait for one of its busy instances to come back
//! instead of making one more instance busy, once more instances no longer bring more
//! throughput.
//!
//! Lambda's model — one instance per concurrent request — is what the pool does as long
//! as the host has CPU to spare. On a small host it stops paying off for short
//! invocations: 32 Node instances answering a hello on 2 cores each serve a thirty-second
//! of the requests, their JITs stay cold, the scheduler switches between them, and the
//! host serves fewer requests than with 10 (docs/performance.md, issue 19). Where the
//! best count lies depends on the function, the host and what else runs, so the gate
//! measures it rather than computing it: per version, over windows of 250 ms, it counts
//! the invocations that complete, and a [`Climb`] moves a cap on the version's busy
//! instances to where that throughput is highest — a local search over the caps
//! `2 × cores × √2^k`, each try judged against the window just before it. A function
//! waiting on I/O serves more with every instance, so its cap climbs back to one per
//! request; a CPU-bound one settles where crowding stops paying.
//!
//! The gate engages only while the host's CPUs are at least 90 % busy (`/proc/stat`,
//! sampled at most every 250 ms) and the version had more than two busy instances per
//! core; it lets go when the CPUs have room and nobody waits (and raises the cap when
//! somebody does), for invocations of 100 ms or more (a cold start costs less than
//! waiting for them) and for versions with fewer than 32 calls in 250 ms. A request held
//! back waits first come first served, at most a few recent latencies (more the more
//! requests wait ahead of it), then goes on anyway.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Invocations this long or longer are never gated.
const SHORT: Duration = Duration::from_millis(100);
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

/// A window of completions over which the climb measures a version's throughput.
const WINDOW: Duration = Duration::from_millis(250);
/// Completions a window needs before it is judged (a quieter window runs on, up to
/// `QUIET`, and then lifts the cap: too few calls to measure, too few to crowd the host).
const WINDOW_CALLS: u32 = 32;
const QUIET: Duration = Duration::from_secs(2);
/// The caps the climb tries: `min × STEP^k` (4, 6, 8, 11, 16, 23, 32, 45… on 2 cores).
const STEP: f64 = std::f64::consts::SQRT_2;
/// The level the climb tries first: twice the least the gate allows (4 per core).
const FIRST_TRY: usize = 2;

/// One version's load, for the gate: its recent latency and, while the host is
/// saturated, the cap on its busy instances that the climb moves.
#[derive(Default)]
pub(crate) struct Load(Mutex<LoadInner>);

#[derive(Default)]
struct LoadInner {
    /// EWMA of warm invocations' latency, in µs.
    recent_us: f64,
    /// The climb, while the gate is engaged.
    climb: Option<Climb>,
    /// The window being measured: when it began, its completions, the most instances
    /// busy at once in it, whether a request found the cap reached in it.
    began: Option<Instant>,
    calls: u32,
    most_busy: usize,
    constrained: bool,
    /// Whether an instance started in the window (its throughput still ramps up).
    cold: bool,
    /// What the last judged window measured, for the debug log.
    last_rate: f64,
}

/// A local search over the caps `min × STEP^k`: the cap stays at the best level and
/// tries a neighbour of it now and then — down and up in turn, further the same way
/// while each try beats the best by [`MARGIN`]; every other window at first, less often
/// (up to every ninth) while tries keep failing. A try is judged against the window just
/// before it, at the best: throughput that drifts (JITs warming up, other load coming
/// and going) moves both alike, so mostly what the cap changed decides. It starts with a
/// long jump: the throughput measured with every instance the demand asked for against
/// four per core, the count at which short CPU-bound calls serve most on small hosts
/// (docs/performance.md) — a gap wide enough to stand out of a window's noise; a
/// function that needs more instances (it waits on I/O) loses so clearly there that the
/// cap goes straight back. From a best two levels or more above it, every try down is
/// that jump again.
struct Climb {
    min: usize,
    /// The level the cap is at, and the best level known with its last window's
    /// throughput (calls/s).
    at: usize,
    best: usize,
    best_rate: f64,
    /// The next try goes down (`true`) or up.
    down: bool,
    /// Windows to stay at the best before the next try (doubling, up to [`CALM_MAX`],
    /// while tries fail; one after a try that won), and the windows stayed so far.
    calm: u32,
    stayed: u32,
}

/// The most windows the climb stays at its best between two tries.
const CALM_MAX: u32 = 8;
/// How much more a try must serve than the best to take its place: a window's noise on
/// a busy 2-core host is ±20 % (docs/performance.md), so without a margin the cap walks
/// at random wherever neighbouring caps serve about alike.
const MARGIN: f64 = 1.1;

impl Climb {
    fn cap_of(min: usize, level: usize) -> usize {
        (min as f64 * STEP.powi(level as i32)).round() as usize
    }

    /// Engaged with `busy` instances (the level at or below it), which served `rate`:
    /// the first try is [`FIRST_TRY`] (or the level below, if that is not lower).
    fn new(min: usize, busy: usize, rate: f64) -> Self {
        let mut best = 0;
        while Self::cap_of(min, best + 1) <= busy {
            best += 1;
        }
        Self {
            min,
            at: FIRST_TRY.min(best.saturating_sub(1)),
            best,
            best_rate: rate,
            down: true,
            calm: 1,
            stayed: 0,
        }
    }

    fn cap(&self) -> usize {
        Self::cap_of(self.min, self.at)
    }

    /// A window at the current level measured `rate` with at most `most_busy`
    /// instances busy at once: where the cap goes next.
    fn judge(&mut self, rate: f64, most_busy: usize) {
        if self.at != self.best {
            // A try: better than the best, it is the best and the next try goes further
            // the same way; else back to the best, the next try the other way.
            if rate > self.best_rate * MARGIN {
                self.best = self.at;
                self.best_rate = rate;
                self.calm = 1;
            } else {
                self.at = self.best;
                self.down = !self.down;
                self.calm = (self.calm * 2).min(CALM_MAX);
                self.stayed = 0;
                return;
            }
        } else {
            self.best_rate = rate;
            self.stayed += 1;
            if self.stayed < self.calm {
                return;
            }
        }
        self.stayed = 0;
        // At the best: try its neighbour — not a higher cap when the best one already
        // held back nobody (the demand was below it).
        if self.best == 0 {
            self.down = false;
        } else if Self::cap_of(self.min, self.best) > most_busy {
            self.down = true;
        }
        // A try down from high up is the long jump again (a first one judged while the
        // instances were still warming up may have lost for that alone).
        self.at = match self.down {
            true if self.best >= FIRST_TRY + 2 => FIRST_TRY,
            true => self.best - 1,
            false => self.best + 1,
        };
    }

    /// The host has CPUs to spare and requests still wait: the cap is too low.
    fn raise(&mut self) {
        self.at += 1;
        self.best = self.at;
    }
}

impl Load {
    /// A warm invocation ended at `now` after `took`, started with `busy` instances busy
    /// (itself included), on a host whose CPUs are `saturated` or not; `min` is the
    /// fewest busy instances the gate allows.
    ///
    /// Every [`WINDOW`] with at least [`WINDOW_CALLS`] completions the gate judges the
    /// throughput the window measured. A saturated host engages it at the instances
    /// the window had busy at most (once none started in the window); from there the
    /// [`Climb`] moves the cap to where the function serves most. A host with CPUs to
    /// spare lifts the cap when nobody found it reached, and raises it when somebody
    /// did. Quiet versions and long calls are not gated.
    pub(crate) fn record(
        &self,
        took: Duration,
        busy: usize,
        min: usize,
        saturated: bool,
        now: Instant,
    ) {
        let us = took.as_secs_f64() * 1e6;
        let mut l = self.0.lock().unwrap();
        l.recent_us = ewma(l.recent_us, us, 16.0, l.recent_us == 0.0);
        let began = *l.began.get_or_insert(now);
        l.calls += 1;
        l.most_busy = l.most_busy.max(busy);
        let elapsed = now.saturating_duration_since(began);
        if elapsed < WINDOW || (l.calls < WINDOW_CALLS && elapsed < QUIET) {
            return;
        }
        let rate = l.calls as f64 / elapsed.as_secs_f64();
        let (most_busy, constrained, cold) = (l.most_busy, l.constrained, l.cold);
        l.last_rate = rate;
        l.began = Some(now);
        l.calls = 0;
        l.most_busy = 0;
        l.constrained = false;
        l.cold = false;
        let quiet = rate * WINDOW.as_secs_f64() < WINDOW_CALLS as f64;
        if quiet || l.recent_us >= SHORT.as_secs_f64() * 1e6 {
            l.climb = None;
            return;
        }
        match (&mut l.climb, saturated, constrained) {
            (None, true, _) if most_busy > min && !cold => {
                l.climb = Some(Climb::new(min, most_busy, rate));
            }
            (None, _, _) => {}
            (Some(c), true, _) => {
                let was = c.cap();
                c.judge(rate, most_busy);
                tracing::debug!(
                    cap = was,
                    rate = rate as u64,
                    best = Climb::cap_of(c.min, c.best),
                    next = c.cap(),
                    "instance gate: window"
                );
            }
            (Some(c), false, true) => c.raise(),
            (Some(_), false, false) => l.climb = None,
        }
    }

    /// An instance of the version started: the gate does not engage in this window
    /// (the throughput of instances still starting is no measure of their number).
    pub(crate) fn cold_start(&self) {
        self.0.lock().unwrap().cold = true;
    }

    /// Whether one more instance may become busy while `busy` are; `min` is the fewest
    /// busy instances the gate allows (two per core). A request refused marks the
    /// window as constrained: the cap is what limits the throughput now.
    pub(crate) fn admits(&self, busy: usize, min: usize) -> bool {
        if busy < min {
            return true;
        }
        let mut l = self.0.lock().unwrap();
        match l.climb.as_ref().map(Climb::cap) {
            Some(cap) if busy >= cap => {
                l.constrained = true;
                false
            }
            _ => true,
        }
    }

    /// Whether the gate is engaged (a cap is set).
    pub(crate) fn engaged(&self) -> bool {
        self.0.lock().unwrap().climb.is_some()
    }

    /// The gate's figures (cap, recent latency in µs, the last window's throughput), for
    /// its debug log.
    pub(crate) fn figures(&self) -> (Option<usize>, f64, f64) {
        let l = self.0.lock().unwrap();
        (l.climb.as_ref().map(Climb::cap), l.recent_us, l.last_rate)
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

    /// Runs `windows` windows of a version whose throughput at `busy` busy instances is
    /// `rate(busy)` calls/s, its clients always more than the cap (each window
    /// constrained) on a saturated host: the caps the climb chose, window by window.
    /// (`rate` also gets the window's number: throughput may drift.)
    fn climb(windows: usize, rate: impl Fn(f64, usize) -> f64) -> Vec<f64> {
        let load = Load::default();
        let mut now = Instant::now();
        let mut caps = vec![];
        // Before the gate engages: 32 busy, as without it.
        let mut cap = 32_usize;
        // A deterministic noise of ±5 %.
        let mut seed = 7_u64;
        for w in 0..windows {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = 1.0 + ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) / 10.0;
            // 32 clients: as many busy as the cap lets, at most 32.
            let b = cap.min(32);
            let r = rate(b as f64, w) * noise;
            let calls = (r * WINDOW.as_secs_f64()).ceil() as u32;
            // The window's first call begins it, its last ends it.
            let gap = Duration::from_secs_f64(WINDOW.as_secs_f64() / (calls - 1) as f64);
            // The 33rd request finds the cap reached if the cap is below the clients.
            load.admits(b, 4);
            for i in 0..calls {
                if i > 0 {
                    now += gap;
                }
                load.record(Duration::from_micros(500), b, 4, true, now);
            }
            now += gap;
            if let Some(c) = load.figures().0 {
                cap = c;
            }
            caps.push(cap as f64);
        }
        caps
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }

    #[test]
    fn the_cap_settles_where_the_function_serves_most() {
        // The Node hello's curve on 2 cores, measured by hand (docs/performance.md): 2 →
        // 5.5k, 4 → 5.7k, 10 → 6.4k, 32 → 4.5k req/s (interpolated between).
        let curve = |b: f64| {
            let pts = [(2.0, 5500.0), (4.0, 5700.0), (10.0, 6400.0), (32.0, 4500.0)];
            let b = b.clamp(2.0, 32.0);
            let i = pts.windows(2).position(|w| b <= w[1].0).unwrap_or(2);
            let ((x0, y0), (x1, y1)) = (pts[i], pts[i + 1]);
            y0 + (y1 - y0) * (b - x0) / (x1 - x0)
        };
        let caps = climb(200, |b, _| curve(b));
        let settled = median(caps[20..].to_vec());
        eprintln!("caps {caps:?}");
        assert!((4.0..=16.0).contains(&settled), "settled at {settled}");
        let mean = caps[20..].iter().map(|&c| curve(c)).sum::<f64>() / 180.0;
        assert!(
            mean > curve(32.0) * 1.2,
            "{mean} req/s vs {} ungated",
            curve(32.0)
        );
    }

    #[test]
    fn a_warming_up_function_does_not_carry_the_cap_up() {
        // The same curve, its throughput tripling over the first 40 windows (JITs
        // warming up): the climb judges each try against the window just before it.
        let curve = |b: f64| 6400.0 - 2000.0 * ((b - 10.0) / 22.0).powi(2);
        let caps = climb(200, |b, w| {
            curve(b) * (0.33 + 0.67 * (w as f64 / 40.0).min(1.0))
        });
        eprintln!("caps {caps:?}");
        let settled = median(caps[40..].to_vec());
        assert!((4.0..=16.0).contains(&settled), "settled at {settled}");
    }

    #[test]
    fn calls_waiting_on_io_climb_back_to_every_client() {
        // Latency the same however many run: throughput in proportion to the instances.
        let caps = climb(60, |b, _| 2000.0 * b.min(32.0));
        eprintln!("caps {caps:?}");
        let settled = median(caps[20..].to_vec());
        assert!(settled >= 28.0, "settled at {settled}");
    }

    #[test]
    fn the_cap_lifts_for_long_calls_quiet_versions_and_spare_cpus() {
        let mut now = Instant::now();
        let engaged = |now: &mut Instant| {
            let l = Load::default();
            for _ in 0..100 {
                *now += Duration::from_millis(3);
                l.record(Duration::from_millis(1), 32, 4, true, *now);
            }
            assert_eq!(l.figures().0, Some(8), "engaged: 8 tried against 32");
            l
        };
        // Spare CPUs, nobody held back: lifted.
        let l = engaged(&mut now);
        for _ in 0..100 {
            now += Duration::from_millis(3);
            l.record(Duration::from_millis(1), 8, 4, false, now);
        }
        assert!(!l.engaged());
        // Spare CPUs and requests held back: raised.
        let l = engaged(&mut now);
        for _ in 0..100 {
            l.admits(8, 4);
            now += Duration::from_millis(3);
            l.record(Duration::from_millis(1), 8, 4, false, now);
        }
        assert!(l.figures().0.unwrap() > 8);
        // Quiet: a call now and then lifts it.
        let l = engaged(&mut now);
        for _ in 0..3 {
            now += Duration::from_secs(1);
            l.record(Duration::from_millis(1), 4, 4, true, now);
        }
        assert!(!l.engaged());
        // Long calls are never gated.
        let l = Load::default();
        for _ in 0..400 {
            now += Duration::from_millis(1);
            l.record(Duration::from_millis(150), 32, 4, true, now);
        }
        assert!(!l.engaged());
        // Nor is a version that never has more busy than the least the gate allows.
        let l = Load::default();
        for _ in 0..400 {
            now += Duration::from_millis(1);
            l.record(Duration::from_millis(1), 4, 4, true, now);
        }
        assert!(!l.engaged());
        assert!(l.admits(3, 4));
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
