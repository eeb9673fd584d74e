//! The scheduler: fires schedule rules (`rate(…)`, `cron(…)`, `at(…)`) as Lambda
//! "Scheduled Event"s through the async engine.
//!
//! Each schedule rule has a durable watermark (`last_fired_ms`): every firing at or before
//! it has been claimed by a scheduler. A tick takes the firings in `(watermark, now]`,
//! oldest first, and for each one first **claims** it
//! ([`BusStore::claim_firing`](nimbus_store::BusStore::claim_firing), a compare-and-set
//! that moves the watermark to the firing) and then queues it under the idempotency key
//! `rule:<name>:<firing epoch ms>` (`rule:<bus>/<name>:…` off the default bus). So
//! however many schedulers share one bus store (the nodes of a cluster on one
//! PostgreSQL database, or two servers on one data directory), each firing is queued by
//! exactly one of them. A claim lost to another scheduler means that one owns the firing
//! and everything before it: the rule is left alone until the next tick reads it again.
//!
//! **The failure window.** A firing is claimed before it is queued, so it never runs
//! twice; the price is the window between the two: a scheduler whose submission fails
//! (the event store refuses or is unreachable) retries it three times at once, then on
//! every later tick, as long as the process lives (no other scheduler will, since the
//! firing is claimed); a drain tries once more. Only a process that dies between a claim
//! and its submission (a few milliseconds, or the time its event store stays unreachable)
//! loses that firing: at most one firing per rule per node death. Claim and submission
//! cannot share a transaction, since the bus and the event queue are separate stores.
//! Once queued, the engine delivers the event at least once.
//!
//! On start, firings missed while the server was down are handled per
//! [`MissedSchedules`]: `run-once` (the default) queues only the latest missed firing of
//! each rule, `skip` queues none. Either way the watermark then moves to now. In a
//! cluster "down" is every node down: a node starting while others run finds nothing
//! missed (they kept the watermarks current), and its catch-up claims like any tick.
//!
//! [`Scheduler::drain`] stops the loop after the tick in progress (whose claimed firings
//! it queues) and queues what is still owed.
//!
//! Rates are anchored at the rule's creation time (first firing one period after it).
//! **Test only:** with the engine's `time_scale` N > 1, rate periods are divided by N, so
//! `rate(1 minute)` fires every second at `--time-scale 60`; cron and `at` keep wall-clock
//! time.

use crate::bus::{envelope, rule_arn, EventBus};
use crate::drain::InFlight;
use crate::heartbeat::Heartbeat;
use crate::schedule::{parse_time_zone, Schedule, Timestamp};
use nimbus_store::{Rule, DEFAULT_BUS};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// What to do, at start, with firings missed while the server was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedSchedules {
    /// Queue the latest missed firing of each rule (at most one per rule).
    #[default]
    RunOnce,
    /// Queue none.
    Skip,
}

impl std::str::FromStr for MissedSchedules {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "run-once" => Ok(Self::RunOnce),
            "skip" => Ok(Self::Skip),
            _ => Err(format!("expected run-once or skip, not {s:?}")),
        }
    }
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    pub missed: MissedSchedules,
    /// Test-only: rate periods run this many times faster (see the module docs).
    pub time_scale: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            missed: MissedSchedules::RunOnce,
            time_scale: 1,
        }
    }
}

/// Where the scheduler reads the time (a fake one in tests).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::engine::now_ms()
    }
}

/// Longest sleep between ticks (rules changing wake the scheduler at once anyway); also
/// the period of its heartbeat.
const MAX_SLEEP: Duration = Duration::from_secs(10);
/// Most firings of one rule queued by one tick (the rest follow on the next tick).
const MAX_PER_TICK: usize = 100;

/// A rule's schedule ready to evaluate: the expression (rates scaled), zone and anchor.
struct Parsed {
    schedule: Schedule,
    tz: crate::schedule::TimeZone,
    anchor: Timestamp,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn parse_rule(rule: &Rule, time_scale: u32) -> Option<Parsed> {
    let expr = rule.schedule.as_deref()?;
    let schedule = match Schedule::parse(expr) {
        Ok(Schedule::Rate(p)) if time_scale > 1 => {
            Schedule::Rate((p / time_scale).max(Duration::from_millis(1)))
        }
        Ok(s) => s,
        Err(e) => {
            warn!(rule = %rule.name, "stored schedule does not parse: {e}");
            return None;
        }
    };
    let tz = match rule.timezone.as_deref().map(parse_time_zone) {
        None => crate::schedule::TimeZone::UTC,
        Some(Ok(tz)) => tz,
        Some(Err(e)) => {
            warn!(rule = %rule.name, "stored time zone does not parse: {e}");
            return None;
        }
    };
    Some(Parsed {
        schedule,
        tz,
        anchor: ts(rule.created_ms),
    })
}

/// The firings of one rule to queue now, and the watermark to store afterwards.
///
/// `catch_up` is `Some(policy)` on the first tick after start (missed firings), `None`
/// afterwards (every firing in the window, at most [`MAX_PER_TICK`]).
pub fn plan(
    schedule: &Schedule,
    tz: &crate::schedule::TimeZone,
    anchor_ms: i64,
    watermark_ms: i64,
    now_ms: i64,
    catch_up: Option<MissedSchedules>,
) -> (Vec<i64>, i64) {
    let (anchor, now) = (ts(anchor_ms), ts(now_ms));
    match catch_up {
        Some(MissedSchedules::Skip) => (Vec::new(), now_ms.max(watermark_ms)),
        Some(MissedSchedules::RunOnce) => {
            // The latest firing in (watermark, now].
            let mut cursor = ts(watermark_ms);
            let mut last = None;
            while let Some(next) = schedule.next_after(cursor, anchor, tz) {
                if next > now {
                    break;
                }
                last = Some(next.as_millisecond());
                cursor = next;
            }
            (last.into_iter().collect(), now_ms.max(watermark_ms))
        }
        None => {
            let firings: Vec<i64> = schedule
                .firings_between(ts(watermark_ms), now, anchor, tz, MAX_PER_TICK)
                .into_iter()
                .map(|t| t.as_millisecond())
                .collect();
            let watermark = if firings.len() == MAX_PER_TICK {
                *firings.last().expect("non-empty")
            } else {
                now_ms.max(watermark_ms)
            };
            (firings, watermark)
        }
    }
}

/// A firing handed over later than this after its time counts as late
/// (`nimbus_schedule_late_firings_total`).
const LATE_AFTER_MS: i64 = 60_000;

/// The idempotency key of one firing of a rule.
pub fn firing_key(bus: &str, rule: &str, firing_ms: i64) -> String {
    if bus == DEFAULT_BUS {
        format!("rule:{rule}:{firing_ms}")
    } else {
        format!("rule:{bus}/{rule}:{firing_ms}")
    }
}

pub struct Scheduler {
    bus: Arc<EventBus>,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    stopping: AtomicBool,
    /// Beaten by every tick.
    heartbeat: Heartbeat,
    /// Firings this scheduler claimed whose submission failed: retried on every tick
    /// (no other scheduler will, the claim is ours).
    owed: Mutex<Vec<(Rule, i64)>>,
    /// The tick in progress, if any (for [`Scheduler::drain`]).
    ticking: Arc<InFlight>,
}

/// Immediate submission attempts of a claimed firing before it waits for the next tick.
const SUBMIT_TRIES: u32 = 3;

impl Scheduler {
    pub fn new(bus: Arc<EventBus>, cfg: SchedulerConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            bus,
            cfg,
            clock,
            stopping: AtomicBool::new(false),
            heartbeat: Heartbeat::new(MAX_SLEEP),
            owed: Mutex::new(Vec::new()),
            ticking: Arc::new(InFlight::new()),
        })
    }

    /// The scheduler loop's heartbeat (for health checks).
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Claims and queues the due firings of every schedule rule (see the module docs);
    /// returns when the next firing of any enabled rule falls due. `catch_up` on the first
    /// tick. Does nothing once stopped.
    pub async fn tick(&self, catch_up: bool) -> Option<i64> {
        let _busy = self.ticking.enter();
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let mut next_due: Option<i64> = None;
        if !self.submit_owed().await {
            next_due = Some(self.clock.now_ms() + 1000);
        }
        let store = self.bus.store().clone();
        let rules = match tokio::task::spawn_blocking(move || store.list_rules(None)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!("scheduler cannot read rules: {e}");
                return Some(self.clock.now_ms() + 1000);
            }
            Err(_) => return Some(self.clock.now_ms() + 1000),
        };
        for rule in rules.iter().filter(|r| r.schedule.is_some()) {
            let Some(p) = parse_rule(rule, self.cfg.time_scale) else {
                continue;
            };
            let now = self.clock.now_ms();
            let watermark = rule.last_fired_ms.unwrap_or(rule.created_ms);
            let (firings, new_watermark) = if rule.enabled {
                plan(
                    &p.schedule,
                    &p.tz,
                    rule.created_ms,
                    watermark,
                    now,
                    catch_up.then_some(self.cfg.missed),
                )
            } else {
                // Disabled: time passes without firings (enabling does not catch up).
                (Vec::new(), now)
            };
            if catch_up && rule.enabled {
                // Firings in the downtime the policy did not run (all of them with `skip`,
                // all but the last with `run-once`), counted up to one tick's worth.
                let due = p
                    .schedule
                    .firings_between(ts(watermark), ts(now), p.anchor, &p.tz, MAX_PER_TICK)
                    .len();
                let missed = due.saturating_sub(firings.len()) as u64;
                self.bus
                    .engine()
                    .count(|m| m.sources().schedule_missed(&rule.bus, &rule.name, missed));
            }
            if catch_up && !firings.is_empty() {
                info!(
                    rule = %rule.name,
                    bus = %rule.bus,
                    firing = %crate::bus::event_time(firings[firings.len() - 1]),
                    "running a schedule firing missed while the server was down"
                );
            }
            // Where this tick's handling of the rule stopped: `None` when it went through
            // its window; `Some(f)` when firing `f` belongs to another scheduler (or
            // could not be claimed or queued now).
            let mut stopped_at = None;
            for &f in &firings {
                match self.claim(rule, f).await {
                    Ok(true) => {}
                    Ok(false) => {
                        debug!(rule = %rule.name, firing_ms = f, "firing claimed by another scheduler");
                        stopped_at = Some(f);
                        break;
                    }
                    Err(e) => {
                        warn!(rule = %rule.name, "cannot claim a schedule firing (retrying): {e}");
                        next_due = Some(now + 1000);
                        stopped_at = Some(f - 1);
                        break;
                    }
                }
                if !self.submit_claimed(rule, f).await {
                    self.owed.lock().unwrap().push((rule.clone(), f));
                    next_due = Some(now + 1000);
                    stopped_at = Some(f);
                    break;
                }
                let late = now - f > LATE_AFTER_MS;
                self.bus
                    .engine()
                    .count(|m| m.sources().schedule_fired(&rule.bus, &rule.name, late));
            }
            // Moves that fire nothing (a disabled rule's window, what catch-up drops or
            // found empty). Claims moved the watermark past every firing queued; without
            // firings it may stay behind (the next window still starts after the last
            // firing claimed): one durable write per firing, not per tick.
            let moved = catch_up || !rule.enabled;
            if stopped_at.is_none() && moved && new_watermark > watermark {
                let (store, bus, name) = (
                    self.bus.store().clone(),
                    rule.bus.clone(),
                    rule.name.clone(),
                );
                let res = tokio::task::spawn_blocking(move || {
                    store.advance_watermark(&bus, &name, new_watermark)
                })
                .await;
                if !matches!(res, Ok(Ok(()))) {
                    warn!(rule = %rule.name, "cannot store the schedule watermark: {res:?}");
                }
            }
            if rule.enabled {
                let handled = stopped_at.unwrap_or(new_watermark.max(now));
                if let Some(n) = p.schedule.next_after(ts(handled), p.anchor, &p.tz) {
                    let mut n = n.as_millisecond();
                    if stopped_at.is_some() {
                        // Due firings after one another scheduler claimed: it is most
                        // likely queueing them now; look again shortly, not in a spin.
                        n = n.max(now + 100);
                    }
                    next_due = Some(next_due.map_or(n, |d| d.min(n)));
                }
            }
        }
        next_due
    }

    /// [`BusStore::claim_firing`](nimbus_store::BusStore::claim_firing) off the runtime.
    async fn claim(&self, rule: &Rule, firing_ms: i64) -> Result<bool, String> {
        let (store, bus, name) = (
            self.bus.store().clone(),
            rule.bus.clone(),
            rule.name.clone(),
        );
        tokio::task::spawn_blocking(move || store.claim_firing(&bus, &name, firing_ms))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Queues a firing this scheduler claimed, trying [`SUBMIT_TRIES`] times; false when
    /// it is still owed.
    async fn submit_claimed(&self, rule: &Rule, firing_ms: i64) -> bool {
        for attempt in 1..=SUBMIT_TRIES {
            match self.fire(rule, firing_ms).await {
                Ok(()) => return true,
                Err(e) if attempt < SUBMIT_TRIES => {
                    debug!(rule = %rule.name, firing_ms, attempt, "cannot queue a claimed firing: {e}");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    warn!(rule = %rule.name, firing_ms, "cannot queue a scheduled event (retrying on the next tick): {e}");
                }
            }
        }
        false
    }

    /// Tries again the firings this scheduler claimed but could not queue; true when none
    /// is owed any more.
    async fn submit_owed(&self) -> bool {
        let owed = std::mem::take(&mut *self.owed.lock().unwrap());
        let mut left = Vec::new();
        for (rule, f) in owed {
            if self.fire(&rule, f).await.is_ok() {
                info!(rule = %rule.name, firing_ms = f, "a scheduled event that could not be queued earlier is queued");
                let late = self.clock.now_ms() - f > LATE_AFTER_MS;
                self.bus
                    .engine()
                    .count(|m| m.sources().schedule_fired(&rule.bus, &rule.name, late));
            } else {
                left.push((rule, f));
            }
        }
        let done = left.is_empty();
        self.owed.lock().unwrap().extend(left);
        done
    }

    async fn fire(&self, rule: &Rule, firing_ms: i64) -> Result<(), crate::bus::BusError> {
        let id = uuid::Uuid::new_v4().to_string();
        let event = envelope(
            &id,
            "aws.events",
            "Scheduled Event",
            firing_ms,
            &[rule_arn(&rule.bus, &rule.name)],
            json!({}),
        );
        let key = firing_key(&rule.bus, &rule.name, firing_ms);
        // A firing starts a new trace: its span is the root of every target's invocations.
        let trace = self.bus.engine().hop(
            format!("schedule {}", rule.name),
            None,
            vec![
                nimbus_trace::KeyValue::new("nimbus.bus", rule.bus.clone()),
                nimbus_trace::KeyValue::new("nimbus.rule", rule.name.clone()),
                nimbus_trace::KeyValue::new("nimbus.firing_ms", firing_ms),
            ],
            Vec::new(),
        );
        for target in &rule.targets {
            let origin = crate::engine::Origin {
                trigger: nimbus_metrics::Trigger::Schedule,
                trace: trace.clone(),
            };
            let s = self
                .bus
                .submit_to(target, &event, Some(key.clone()), origin)
                .await?;
            if s.duplicate {
                debug!(rule = %rule.name, firing_ms, "firing already queued before a restart");
            } else {
                debug!(rule = %rule.name, firing_ms, event = %s.request_id, "schedule fired");
            }
        }
        Ok(())
    }

    /// Runs until [`stop`](Self::stop): a catch-up tick, then one tick per firing.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut catch_up = true;
            if me.cfg.time_scale > 1 {
                info!(
                    time_scale = me.cfg.time_scale,
                    "TEST ONLY: schedule rates run faster by the time scale"
                );
            }
            while !me.stopping.load(Ordering::SeqCst) {
                me.heartbeat.beat();
                let next = me.tick(catch_up).await;
                catch_up = false;
                let now = me.clock.now_ms();
                let wait = match next {
                    Some(t) => Duration::from_millis((t - now).clamp(0, i64::MAX) as u64 + 1),
                    None => MAX_SLEEP,
                }
                .min(MAX_SLEEP);
                tokio::select! {
                    _ = me.bus.rules_changed.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// Stops the loop (a tick in progress goes on; see [`Scheduler::drain`]).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.bus.rules_changed.notify_one();
    }

    /// Stops claiming firings: waits for the tick in progress (it queues what it claimed),
    /// then tries once more to queue the firings this scheduler claimed but could not
    /// queue; those still failing are lost, and logged as such.
    pub async fn drain(&self) {
        self.stop();
        self.ticking.idle().await;
        if !self.submit_owed().await {
            for (rule, f) in self.owed.lock().unwrap().drain(..) {
                error!(
                    rule = %rule.name,
                    bus = %rule.bus,
                    firing = %crate::bus::event_time(f),
                    "a schedule firing claimed by this node could not be queued before it stopped: it is lost"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AsyncEngine, EngineConfig};
    use nimbus_store::{BusStore, EventQueue, RuleTarget, SqliteBusStore, SqliteEventQueue};
    use serde_json::Value;
    use std::sync::atomic::AtomicI64;
    use std::time::Duration;

    const MIN: i64 = 60_000;

    struct FakeClock(AtomicI64);
    impl Clock for FakeClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn plan_catches_up_once_skips_or_fires_each() {
        let s = Schedule::parse("rate(1 minute)").unwrap();
        let utc = crate::schedule::TimeZone::UTC;
        // Steady state: every firing in (watermark, now].
        assert_eq!(
            plan(&s, &utc, 0, MIN, 3 * MIN + 5, None),
            (vec![2 * MIN, 3 * MIN], 3 * MIN + 5)
        );
        assert_eq!(plan(&s, &utc, 0, MIN, MIN + 5, None), (vec![], MIN + 5));
        // Start after downtime: only the latest missed firing, or none.
        assert_eq!(
            plan(
                &s,
                &utc,
                0,
                MIN,
                10 * MIN + 5,
                Some(MissedSchedules::RunOnce)
            ),
            (vec![10 * MIN], 10 * MIN + 5)
        );
        assert_eq!(
            plan(&s, &utc, 0, MIN, MIN + 5, Some(MissedSchedules::RunOnce)),
            (vec![], MIN + 5)
        );
        assert_eq!(
            plan(&s, &utc, 0, MIN, 10 * MIN, Some(MissedSchedules::Skip)),
            (vec![], 10 * MIN)
        );
        // A long stall is worked off in bounded steps.
        let (f, w) = plan(&s, &utc, 0, 0, 1000 * MIN, None);
        assert_eq!((f.len(), w), (MAX_PER_TICK, MAX_PER_TICK as i64 * MIN));
    }

    struct Setup {
        _dir: tempfile::TempDir,
        clock: Arc<FakeClock>,
        queue: Arc<SqliteEventQueue>,
        bus: Arc<EventBus>,
    }

    async fn setup(created_at: i64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(SqliteEventQueue::open(dir.path()).unwrap());
        let engine = AsyncEngine::new(queue.clone(), EngineConfig::default());
        let store = Arc::new(SqliteBusStore::open(dir.path(), 0).unwrap());
        let bus = EventBus::new(store.clone(), engine);
        let rule = Rule {
            bus: "default".into(),
            name: "every-minute".into(),
            pattern: None,
            schedule: Some("rate(1 minute)".into()),
            timezone: None,
            enabled: true,
            targets: vec![RuleTarget {
                id: None,
                arn: "tick".into(),
                input: None,
                message_group_id: None,
            }],
            created_ms: 0,
            last_fired_ms: None,
        };
        // Created at `created_at`: the rate's anchor and the first watermark.
        store.put_rule(&rule, created_at).unwrap();
        Setup {
            _dir: dir,
            clock: Arc::new(FakeClock(AtomicI64::new(created_at))),
            queue,
            bus,
        }
    }

    fn delivered_times(q: &SqliteEventQueue) -> Vec<String> {
        let mut v: Vec<String> = q
            .list("tick", None, 1000)
            .unwrap()
            .iter()
            .map(|e| {
                let ev: Value = serde_json::from_str(&e.payload).unwrap();
                assert_eq!(ev["detail-type"], "Scheduled Event");
                assert_eq!(ev["source"], "aws.events");
                assert_eq!(
                    ev["resources"][0],
                    "arn:aws:events:us-east-1:000000000000:rule/every-minute"
                );
                assert_eq!(ev["detail"], serde_json::json!({}));
                ev["time"].as_str().unwrap().to_string()
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn fires_each_minute_and_catches_up_once_after_downtime() {
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN; // a whole minute
        let s = setup(t0).await;
        let metrics = nimbus_metrics::Metrics::new(Default::default());
        s.bus.engine().set_metrics(metrics.clone());
        let count = |family: &str| {
            let series = format!(r#"{family}{{bus="default",rule="every-minute"}} "#);
            let text = metrics.encode().unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |v| v.parse::<u64>().unwrap())
        };
        let sched = Scheduler::new(s.bus.clone(), SchedulerConfig::default(), s.clock.clone());
        assert_eq!(sched.tick(true).await, Some(t0 + MIN));
        s.clock.0.store(t0 + MIN + 10, Ordering::SeqCst);
        assert_eq!(sched.tick(false).await, Some(t0 + 2 * MIN));
        s.clock.0.store(t0 + 2 * MIN, Ordering::SeqCst);
        sched.tick(false).await;
        sched.tick(false).await; // nothing new
        assert_eq!(delivered_times(&s.queue).len(), 2);
        // "Crash" before the watermark moved: the same firing is queued again, as a no-op.
        let sched2 = Scheduler::new(s.bus.clone(), SchedulerConfig::default(), s.clock.clone());
        sched2
            .fire(
                &s.bus.store().get_rule("default", "every-minute").unwrap(),
                t0 + 2 * MIN,
            )
            .await
            .unwrap();
        assert_eq!(delivered_times(&s.queue).len(), 2, "no double firing");
        // Down for five minutes: a restart queues only the latest missed firing.
        s.clock.0.store(t0 + 7 * MIN + 30_000, Ordering::SeqCst);
        sched2.tick(true).await;
        let times = delivered_times(&s.queue);
        assert_eq!(times.len(), 3, "{times:?}");
        assert_eq!(times[2], crate::bus::event_time(t0 + 7 * MIN));
        // With skip, nothing is queued for a downtime.
        s.clock.0.store(t0 + 20 * MIN + 1, Ordering::SeqCst);
        let skip = Scheduler::new(
            s.bus.clone(),
            SchedulerConfig {
                missed: MissedSchedules::Skip,
                time_scale: 1,
            },
            s.clock.clone(),
        );
        assert_eq!(skip.tick(true).await, Some(t0 + 21 * MIN));
        assert_eq!(delivered_times(&s.queue).len(), 3);
        s.clock.0.store(t0 + 21 * MIN, Ordering::SeqCst);
        skip.tick(false).await;
        assert_eq!(delivered_times(&s.queue).len(), 4);
        // A stall: the firing of minute 22 is handed over 65 s late, minute 23's on time.
        s.clock.0.store(t0 + 23 * MIN + 5_000, Ordering::SeqCst);
        skip.tick(false).await;
        assert_eq!(delivered_times(&s.queue).len(), 6);
        // Counted by tick (the direct `fire` above is not): minutes 1, 2, 7, 21, 22, 23;
        // missed: minutes 3–6 (run-once ran only 7), then 8–20 (skip).
        assert_eq!(count("nimbus_schedule_firings_total"), 6);
        assert_eq!(count("nimbus_schedule_late_firings_total"), 1);
        assert_eq!(count("nimbus_schedule_missed_firings_total"), 4 + 13);
    }

    #[tokio::test]
    async fn time_scale_speeds_up_rates_only() {
        let s = setup(0).await;
        let sched = Scheduler::new(
            s.bus.clone(),
            SchedulerConfig {
                missed: MissedSchedules::RunOnce,
                time_scale: 60,
            },
            s.clock.clone(),
        );
        assert_eq!(sched.tick(true).await, Some(1000), "rate(1 minute) → 1 s");
        s.clock.0.store(3500, Ordering::SeqCst);
        sched.tick(false).await;
        assert_eq!(delivered_times(&s.queue).len(), 3);
    }
    /// Opens the bus store (again): on PostgreSQL each open is a pool of its own, as on
    /// another node; on SQLite another handle on the same data directory.
    type Open<'a> = &'a dyn Fn(i64) -> Arc<dyn BusStore>;

    fn on_sqlite(body: fn(Open)) {
        let dir = tempfile::tempdir().unwrap();
        body(&|now| Arc::new(SqliteBusStore::open(dir.path(), now).unwrap()));
    }

    fn on_postgres(body: fn(Open)) {
        let db = nimbus_pg::testing::TestDb::new("scheduler");
        body(&|now| {
            let pg = nimbus_pg::Pg::connect(&nimbus_pg::PgConfig::new(&db.url)).unwrap();
            Arc::new(nimbus_store::postgres::bus::PgBusStore::open(&pg, now).unwrap())
        });
    }

    /// Runs each test body on both bus store backends (`<body>::sqlite`, `<body>::postgres`).
    macro_rules! on_both_backends {
        ($($body:ident),* $(,)?) => {$(
            mod $body {
                #[test]
                fn sqlite() {
                    super::on_sqlite(super::$body)
                }
                #[test]
                fn postgres() {
                    super::on_postgres(super::$body)
                }
            }
        )*};
    }

    on_both_backends!(two_nodes_fire_each_tick_exactly_once);

    fn schedule_rule(name: &str, schedule: &str) -> Rule {
        Rule {
            bus: "default".into(),
            name: name.into(),
            pattern: None,
            schedule: Some(schedule.into()),
            timezone: None,
            enabled: true,
            targets: vec![RuleTarget {
                id: None,
                arn: "tick".into(),
                input: None,
                message_group_id: None,
            }],
            created_ms: 0,
            last_fired_ms: None,
        }
    }

    /// Two nodes (schedulers on two bus store handles, each with an event queue of its
    /// own, so a firing queued by both shows twice) tick at the same moments of a shared
    /// test clock for two simulated minutes; the second joins late, with a catch-up tick.
    /// Every firing is queued exactly once: none missed, none doubled.
    fn two_nodes_fire_each_tick_exactly_once(open: Open) {
        const ROUNDS: i64 = 120;
        const JOINS: i64 = 10;
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN;
        let clock = Arc::new(FakeClock(AtomicI64::new(t0)));
        let cfg = SchedulerConfig {
            missed: MissedSchedules::RunOnce,
            time_scale: 60, // rate(1 minute) fires every second
        };
        let stores = [open(t0), open(t0)];
        stores[0]
            .put_rule(&schedule_rule("every-second", "rate(1 minute)"), t0)
            .unwrap();
        stores[1]
            .put_rule(&schedule_rule("every-2s", "rate(2 minutes)"), t0)
            .unwrap();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let queues: Vec<Arc<SqliteEventQueue>> = dirs
            .iter()
            .map(|d| Arc::new(SqliteEventQueue::open(d.path()).unwrap()))
            .collect();
        let nodes: Vec<Arc<Scheduler>> = stores
            .iter()
            .zip(&queues)
            .map(|(store, queue)| {
                let engine = AsyncEngine::new(queue.clone(), EngineConfig::default());
                let bus = EventBus::new(store.clone(), engine);
                Scheduler::new(bus, cfg, clock.clone())
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for round in 0..ROUNDS {
                // A little past each second, by a varying amount.
                clock
                    .0
                    .store(t0 + round * 1000 + (round % 3) * 7, Ordering::SeqCst);
                let ticks: Vec<_> = nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i == 0 || round >= JOINS)
                    .map(|(i, node)| {
                        let (node, catch_up) = (node.clone(), round == [0, JOINS][i]);
                        tokio::spawn(async move { node.tick(catch_up).await })
                    })
                    .collect();
                for t in ticks {
                    t.await.unwrap();
                }
            }
        });
        drop(rt);
        let mut fired: std::collections::BTreeMap<(String, String), Vec<usize>> =
            Default::default();
        for (node, q) in queues.iter().enumerate() {
            for e in q.list("tick", None, 10_000).unwrap() {
                let ev: Value = serde_json::from_str(&e.payload).unwrap();
                let rule = ev["resources"][0].as_str().unwrap().to_string();
                let time = ev["time"].as_str().unwrap().to_string();
                fired.entry((rule, time)).or_default().push(node);
            }
        }
        let doubled: Vec<_> = fired.iter().filter(|(_, by)| by.len() > 1).collect();
        assert!(doubled.is_empty(), "firings queued twice: {doubled:?}");
        let count = |rule: &str| {
            fired
                .keys()
                .filter(|(r, _)| r.ends_with(&format!("rule/{rule}")))
                .count() as i64
        };
        // Firings at t0 + 1 s … t0 + 119 s, and every other second.
        assert_eq!(count("every-second"), ROUNDS - 1, "{fired:?}");
        assert_eq!(count("every-2s"), (ROUNDS - 1) / 2, "{fired:?}");
        let by_b = fired.values().filter(|by| by[0] == 1).count();
        assert!(
            by_b > 0,
            "the second node never won a firing: the test did not race"
        );
        for s in &stores {
            assert_eq!(
                s.get_rule("default", "every-second").unwrap().last_fired_ms,
                Some(t0 + (ROUNDS - 1) * 1000)
            );
        }
        drop(nodes);
    }

    #[tokio::test]
    async fn drain_queues_what_the_tick_in_progress_claimed_and_stops() {
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MIN;
        let s = setup(t0).await;
        let sched = Scheduler::new(s.bus.clone(), SchedulerConfig::default(), s.clock.clone());
        let task = sched.spawn();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.clock.0.store(t0 + MIN, Ordering::SeqCst);
        s.bus.rules_changed.notify_one();
        tokio::time::timeout(Duration::from_secs(5), sched.drain())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let queued = delivered_times(&s.queue).len();
        // A drained scheduler claims nothing more.
        s.clock.0.store(t0 + 5 * MIN, Ordering::SeqCst);
        assert_eq!(sched.tick(false).await, None);
        assert_eq!(delivered_times(&s.queue).len(), queued);
        let wm = s.bus.store().get_rule("default", "every-minute").unwrap();
        assert!(wm.last_fired_ms.unwrap() < t0 + 5 * MIN);
    }
}
