//! The event bus: EventBridge `PutEvents` onto named buses, rules that match events with
//! EventBridge event patterns (or fire on a schedule, see [`crate::scheduler`]), and
//! delivery of every (rule, target) match through the [`AsyncEngine`] — so a routed event
//! gets the same durability, retries, dead-lettering and destinations as an async invoke.
//!
//! `put_events` answers an entry with its `EventId` only after every matching target's
//! event is durably queued; an entry that could not be queued gets an `ErrorCode` instead,
//! as `PutEvents` reports per-entry failures.

use crate::engine::{AsyncEngine, Origin};
use crate::pattern::EventPattern;
use crate::schedule::{parse_time_zone, Schedule};
use jiff::Timestamp;
use nimbus_core::{arn, LATEST};
use nimbus_metrics::Trigger;
use nimbus_store::{Bus, BusStore, Rule, RuleTarget, StoreError, DEFAULT_BUS};
use nimbus_trace::{KeyValue, TraceContext};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::warn;

/// At most this many entries per `PutEvents` call (as EventBridge).
pub const MAX_ENTRIES: usize = 10;
/// At most this many bytes of entries per call (as EventBridge).
pub const MAX_PUT_BYTES: usize = 256 * 1024;
/// At most this many targets per rule (as EventBridge).
pub const MAX_TARGETS: usize = 5;

/// Why a bus or rule request was refused.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The caller sent something unusable (a bad pattern, schedule, name, target …).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One `PutEvents` request entry (EventBridge's field names).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsEntry {
    pub source: Option<String>,
    pub detail_type: Option<String>,
    /// A JSON object, as a string.
    pub detail: Option<String>,
    pub event_bus_name: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    /// RFC 3339 text or epoch seconds (what AWS SDKs send); default now.
    pub time: Option<Value>,
}

/// One `PutEvents` result entry: `EventId`, or `ErrorCode` and `ErrorMessage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsResultEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl PutEventsResultEntry {
    fn error(code: &str, message: impl Into<String>) -> Self {
        Self {
            event_id: None,
            error_code: Some(code.into()),
            error_message: Some(message.into()),
        }
    }
}

/// The `PutEvents` reply: `FailedEntryCount` and one result per entry, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEventsOutput {
    pub failed_entry_count: usize,
    pub entries: Vec<PutEventsResultEntry>,
}

/// A rule as the API writes it.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub pattern: Option<Value>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    /// Function names or ARNs (optionally qualified), each with an optional `Input`.
    pub targets: Vec<RuleTarget>,
    pub enabled: bool,
}

/// `arn:aws:events:REGION:ACCOUNT:rule/NAME` (`rule/BUS/NAME` on a bus other than default).
pub fn rule_arn(bus: &str, name: &str) -> String {
    let (region, account) = (arn::REGION, arn::ACCOUNT);
    if bus == DEFAULT_BUS {
        format!("arn:aws:events:{region}:{account}:rule/{name}")
    } else {
        format!("arn:aws:events:{region}:{account}:rule/{bus}/{name}")
    }
}

/// `arn:aws:events:REGION:ACCOUNT:event-bus/NAME`.
pub fn bus_arn(bus: &str) -> String {
    format!(
        "arn:aws:events:{}:{}:event-bus/{bus}",
        arn::REGION,
        arn::ACCOUNT
    )
}

/// EventBridge's `time` format: RFC 3339, whole seconds, UTC (`2015-10-08T16:53:06Z`).
pub fn event_time(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The EventBridge event envelope.
pub fn envelope(
    id: &str,
    source: &str,
    detail_type: &str,
    time_ms: i64,
    resources: &[String],
    detail: Value,
) -> Value {
    json!({
        "version": "0",
        "id": id,
        "detail-type": detail_type,
        "source": source,
        "account": arn::ACCOUNT,
        "time": event_time(time_ms),
        "region": arn::REGION,
        "resources": resources,
        "detail": detail,
    })
}

/// Bus and rule names: 1-64 letters, digits, `.`, `-`, `_` (EventBridge's rule name rule).
pub fn validate_name(kind: &str, name: &str) -> Result<(), BusError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(BusError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '.', '-' or '_'"
        )))
    }
}

/// The function (and qualifier) a target names.
pub fn target_function(target: &str) -> Result<(String, String), BusError> {
    let (name, q) = arn::parse_function_ref(target).map_err(|e| {
        BusError::Invalid(format!(
            "invalid target {target:?}: expected a function name or ARN ({e})"
        ))
    })?;
    Ok((name.to_string(), q.unwrap_or_else(|| LATEST.to_string())))
}

/// What a rule target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A function (name or ARN, maybe qualified): an async event through the engine.
    Function { name: String, qualifier: String },
    /// A built-in queue (`arn:aws:sqs:REGION:ACCOUNT:NAME`): the event becomes a message.
    Queue(String),
    /// Another bus (`arn:aws:events:REGION:ACCOUNT:event-bus/NAME`): the event is routed
    /// by that bus's rules too.
    Bus(String),
    /// An external target (`arn:nimbus:targets:REGION:ACCOUNT:target/NAME`): the event is
    /// published to its broker through the outbox.
    External(String),
    /// A state machine (`arn:aws:states:REGION:ACCOUNT:stateMachine:NAME[:QUALIFIER]`):
    /// the event starts an execution.
    StateMachine(String),
}

impl TargetKind {
    pub fn parse(target: &str) -> Result<TargetKind, BusError> {
        if target.starts_with("arn:nimbus:targets:") {
            return arn::target_from_arn(target)
                .map(|n| TargetKind::External(n.to_string()))
                .ok_or_else(|| {
                    BusError::Invalid(format!(
                        "invalid target {target:?}: arn:nimbus:targets:us-east-1:000000000000:target/NAME"
                    ))
                });
        }
        if crate::external::is_state_machine_arn(target) {
            return Ok(TargetKind::StateMachine(target.to_string()));
        }
        if target.starts_with("arn:aws:sqs:") {
            return crate::mapping::queue_from_arn(target)
                .map(|q| TargetKind::Queue(q.to_string()))
                .ok_or_else(|| {
                    BusError::Invalid(format!("invalid target {target:?}: not a queue ARN"))
                });
        }
        if let Some((_, bus)) = target
            .strip_prefix("arn:aws:events:")
            .and_then(|rest| rest.split_once(":event-bus/"))
        {
            validate_name("event bus", bus)?;
            return Ok(TargetKind::Bus(bus.to_string()));
        }
        let (name, qualifier) = target_function(target)?;
        Ok(TargetKind::Function { name, qualifier })
    }

    /// The canonical ARN.
    pub fn arn(&self) -> String {
        match self {
            TargetKind::Function { name, qualifier } => arn::function_arn(name, Some(qualifier)),
            TargetKind::Queue(q) => crate::mapping::queue_arn(q),
            TargetKind::Bus(b) => bus_arn(b),
            TargetKind::External(n) => arn::target_arn(n),
            TargetKind::StateMachine(a) => a.clone(),
        }
    }
}

/// EventBridge's rule for `SqsParameters.MessageGroupId`: a FIFO queue target needs one
/// (1-128 characters); no other target takes one (Nimbus's standard queues have no
/// message groups).
fn check_message_group(kind: &TargetKind, group: Option<&str>) -> Result<(), BusError> {
    let fifo = matches!(kind, TargetKind::Queue(q) if nimbus_store::is_fifo_name(q));
    match group {
        None if fifo => Err(BusError::Invalid(format!(
            "target {} is a FIFO queue: it needs SqsParameters.MessageGroupId",
            kind.arn()
        ))),
        Some(_) if !fifo => Err(BusError::Invalid(format!(
            "target {}: SqsParameters.MessageGroupId applies only to FIFO queue targets",
            kind.arn()
        ))),
        Some(g) if g.is_empty() || g.chars().count() > 128 => Err(BusError::Invalid(format!(
            "target {}: SqsParameters.MessageGroupId must be 1-128 characters",
            kind.arn()
        ))),
        _ => Ok(()),
    }
}

/// How many matches each rule remembers ([`EventBus::recent_matches`]).
pub const RECENT_MATCHES: usize = 20;

/// An event a rule matched, and what became of it at each of the rule's targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMatch {
    pub time_ms: i64,
    pub event_id: String,
    pub detail_type: String,
    pub source: String,
    pub targets: Vec<TargetResult>,
}

/// The hand-off of a matched event to one target: `queued` (as an async event, a queue
/// message or an event on another bus, whose `id` it has) or `failed` (with the `error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetResult {
    pub arn: String,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TargetResult {
    fn of(arn: &str, handed: &Result<crate::engine::Submitted, BusError>) -> Self {
        let (result, id, error) = match handed {
            Ok(s) => ("queued", Some(s.request_id.clone()), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        Self {
            arn: arn.to_string(),
            result,
            id: id.filter(|i| !i.is_empty()),
            error,
        }
    }
}

/// Each rule's ring of matches, by (bus, rule).
type Rings = std::collections::HashMap<(String, String), std::collections::VecDeque<RuleMatch>>;

/// The last [`RECENT_MATCHES`] matches of each rule, in memory only (gone at restart).
#[derive(Default)]
struct RecentMatches(std::sync::Mutex<Rings>);

impl RecentMatches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `event`'s hand-offs, grouped by rule (`results` in routing order).
    fn record(&self, bus: &str, event: &Value, results: Vec<(&Rule, TargetResult)>) {
        if results.is_empty() {
            return;
        }
        let text = |k: &str| event[k].as_str().unwrap_or_default().to_string();
        let mut map = self.lock();
        let mut last: Option<&str> = None;
        for (rule, result) in results {
            let ring = map.entry((bus.to_string(), rule.name.clone())).or_default();
            if last != Some(rule.name.as_str()) {
                if ring.len() >= RECENT_MATCHES {
                    ring.pop_front();
                }
                ring.push_back(RuleMatch {
                    time_ms: now_ms(),
                    event_id: text("id"),
                    detail_type: text("detail-type"),
                    source: text("source"),
                    targets: Vec::new(),
                });
                last = Some(rule.name.as_str());
            }
            if let Some(m) = ring.back_mut() {
                m.targets.push(result);
            }
        }
    }

    /// Forgets the matches of `bus`'s rule `rule`, or of every rule of `bus`.
    fn forget(&self, bus: &str, rule: Option<&str>) {
        self.lock()
            .retain(|(b, r), _| b != bus || rule.is_some_and(|name| name != r));
    }
}

/// How many bus-to-bus hops an event may take (a loop of buses ends here).
const MAX_BUS_HOPS: u8 = 4;

/// Buses, rules and routing of put events.
pub struct EventBus {
    store: Arc<dyn BusStore>,
    engine: Arc<AsyncEngine>,
    /// Compiled event patterns by their JSON text (rules change rarely, events often).
    patterns: std::sync::Mutex<std::collections::HashMap<String, Option<Arc<EventPattern>>>>,
    /// Built-in queues, for queue targets (set by the server).
    queues: std::sync::OnceLock<Arc<crate::mapping::MappingRunner>>,
    /// Woken when a rule changes (the scheduler recomputes its next firing).
    pub(crate) rules_changed: Notify,
    recent: RecentMatches,
}

fn now_ms() -> i64 {
    crate::engine::now_ms()
}

impl EventBus {
    /// Also enables the engine's event bus destinations.
    pub fn new(store: Arc<dyn BusStore>, engine: Arc<AsyncEngine>) -> Arc<Self> {
        let bus = Arc::new(Self {
            store,
            engine,
            patterns: Default::default(),
            queues: Default::default(),
            rules_changed: Notify::new(),
            recent: RecentMatches::default(),
        });
        bus.engine.set_bus(Arc::downgrade(&bus));
        bus
    }

    /// The (rule, target) pairs `event` goes to, with patterns compiled once.
    fn route<'a>(&self, event: &Value, rules: &[&'a Rule]) -> Vec<(&'a Rule, &'a RuleTarget)> {
        let mut cache = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        route_with(event, rules, |rule, text| {
            if let Some(p) = cache.get(text) {
                return p.clone();
            }
            if cache.len() >= 4096 {
                cache.clear();
            }
            let p = match EventPattern::parse(text) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    warn!(rule = %rule.name, "stored event pattern does not parse: {e}");
                    None
                }
            };
            cache.insert(text.to_string(), p.clone());
            p
        })
    }

    /// Enables queue targets (`arn:aws:sqs:…`): messages go to the built-in queues.
    pub fn set_queues(&self, runner: Arc<crate::mapping::MappingRunner>) {
        let _ = self.queues.set(runner);
    }

    /// The last [`RECENT_MATCHES`] events `bus`'s rule `rule` matched (put or forwarded
    /// from another bus), newest first, with the hand-off to each target. Kept in memory
    /// only: a restart forgets them.
    pub fn recent_matches(&self, bus: &str, rule: &str) -> Vec<RuleMatch> {
        self.recent
            .lock()
            .get(&(bus.to_string(), rule.to_string()))
            .map(|ring| ring.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    pub fn store(&self) -> &Arc<dyn BusStore> {
        &self.store
    }

    pub fn engine(&self) -> &Arc<AsyncEngine> {
        &self.engine
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BusStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }

    pub async fn put_bus(&self, name: &str) -> Result<Bus, BusError> {
        validate_name("event bus", name)?;
        let name = name.to_string();
        Ok(self.blocking(move |s| s.put_bus(&name, now_ms())).await?)
    }

    pub async fn delete_bus(&self, name: &str) -> Result<(), BusError> {
        if name == DEFAULT_BUS {
            return Err(BusError::Invalid(
                "the default event bus cannot be deleted".into(),
            ));
        }
        let bus = name.to_string();
        self.blocking(move |s| s.delete_bus(&bus)).await?;
        self.recent.forget(name, None);
        Ok(())
    }

    /// Validates and stores a rule (creating or replacing it); the scheduler picks up
    /// schedule changes at once.
    pub async fn put_rule(&self, bus: &str, name: &str, spec: RuleSpec) -> Result<Rule, BusError> {
        validate_name("rule", name)?;
        let pattern =
            match (&spec.pattern, &spec.schedule) {
                (Some(_), Some(_)) | (None, None) => return Err(BusError::Invalid(
                    "a rule needs exactly one of \"pattern\" (an event pattern) and \"schedule\" \
                     (rate(…), cron(…) or at(…))"
                        .into(),
                )),
                (Some(p), None) => {
                    EventPattern::from_value(p).map_err(|e| BusError::Invalid(e.to_string()))?;
                    Some(p.to_string())
                }
                (None, Some(s)) => {
                    Schedule::parse(s).map_err(|e| BusError::Invalid(e.to_string()))?;
                    None
                }
            };
        if let Some(tz) = &spec.timezone {
            if spec.schedule.is_none() {
                return Err(BusError::Invalid(
                    "\"timezone\" only applies to a schedule".into(),
                ));
            }
            parse_time_zone(tz).map_err(|e| BusError::Invalid(e.to_string()))?;
        }
        if spec.targets.len() > MAX_TARGETS {
            return Err(BusError::Invalid(format!(
                "a rule has at most {MAX_TARGETS} targets"
            )));
        }
        let mut targets = spec.targets;
        for t in &mut targets {
            let kind = TargetKind::parse(&t.arn)?;
            check_message_group(&kind, t.message_group_id.as_deref())?;
            t.arn = kind.arn();
            if let Some(input) = &t.input {
                serde_json::from_str::<Value>(input).map_err(|e| {
                    BusError::Invalid(format!("the Input of target {} is not JSON: {e}", t.arn))
                })?;
            }
        }
        let rule = Rule {
            bus: bus.to_string(),
            name: name.to_string(),
            pattern,
            schedule: spec.schedule.map(|s| s.trim().to_string()),
            timezone: spec.timezone,
            enabled: spec.enabled,
            targets,
            created_ms: 0,
            last_fired_ms: None,
        };
        let stored = self.blocking(move |s| s.put_rule(&rule, now_ms())).await?;
        self.rules_changed.notify_one();
        Ok(stored)
    }

    pub async fn delete_rule(&self, bus: &str, name: &str) -> Result<(), BusError> {
        let (b, r) = (bus.to_string(), name.to_string());
        self.blocking(move |s| s.delete_rule(&b, &r)).await?;
        self.recent.forget(bus, Some(name));
        self.rules_changed.notify_one();
        Ok(())
    }

    /// EventBridge `PutEvents`: validates each entry, routes it to every enabled pattern
    /// rule of its bus that matches, and queues one async event per (rule, target).
    /// `default_bus` is used for entries without `EventBusName`. `trace` is the request's
    /// trace context: each (rule, target) is a span of it, which the queued event carries.
    pub async fn put_events(
        &self,
        default_bus: &str,
        entries: Vec<PutEventsEntry>,
        trace: Option<&TraceContext>,
    ) -> Result<PutEventsOutput, BusError> {
        if entries.is_empty() || entries.len() > MAX_ENTRIES {
            return Err(BusError::Invalid(format!(
                "Entries must hold 1 to {MAX_ENTRIES} entries"
            )));
        }
        let size: usize = entries
            .iter()
            .map(|e| {
                e.source.as_deref().map_or(0, str::len)
                    + e.detail_type.as_deref().map_or(0, str::len)
                    + e.detail.as_deref().map_or(0, str::len)
                    + e.resources.iter().map(String::len).sum::<usize>()
            })
            .sum();
        if size > MAX_PUT_BYTES {
            return Err(BusError::Invalid(format!(
                "the entries total {size} bytes; PutEvents takes at most {MAX_PUT_BYTES}"
            )));
        }
        let all_rules = self.blocking(|s| s.list_rules(None)).await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let bus = entry
                .event_bus_name
                .clone()
                .map(|b| bus_name_of(&b))
                .unwrap_or_else(|| default_bus.to_string());
            let rules: Vec<&Rule> = all_rules.iter().filter(|r| r.bus == bus).collect();
            out.push(self.put_one(&bus, entry, &rules, trace).await);
        }
        Ok(PutEventsOutput {
            failed_entry_count: out.iter().filter(|e| e.error_code.is_some()).count(),
            entries: out,
        })
    }

    /// Routes an already built envelope (an AWS service's event, such as a Lambda
    /// destination record) on `bus` by its rules, as if it had been put there.
    pub async fn route_envelope(&self, bus: &str, event: &Value) -> Result<(), BusError> {
        self.route_envelope_traced(bus, event, None).await
    }

    /// [`Self::route_envelope`] for an event sent within a trace: its targets' work
    /// carries `trace`.
    pub async fn route_envelope_traced(
        &self,
        bus: &str,
        event: &Value,
        trace: Option<TraceContext>,
    ) -> Result<(), BusError> {
        let target = RuleTarget {
            id: None,
            arn: bus_arn(bus),
            input: None,
            message_group_id: None,
        };
        let origin = Origin {
            trace,
            ..Origin::default()
        };
        self.submit_to(&target, event, None, origin)
            .await
            .map(|_| ())
    }

    /// Hands an event of another service (an object store notification, say) to the
    /// target `arn`: a function (an async event, deduplicated by `idempotency_key` within
    /// the engine's window), a built-in queue (`event` as the message body) or a bus
    /// (`event`, an EventBridge envelope, routed by the bus's rules).
    pub async fn deliver(
        &self,
        arn: &str,
        event: &Value,
        idempotency_key: Option<String>,
        origin: Origin,
    ) -> Result<crate::engine::Submitted, BusError> {
        let target = RuleTarget {
            id: None,
            arn: arn.to_string(),
            input: None,
            message_group_id: None,
        };
        self.submit_to(&target, event, idempotency_key, origin)
            .await
    }

    /// The origin of the work `rule` of `bus` hands `target` for the event `event_id`: a
    /// bus trigger, in a `rule NAME` producer span that is a child of `parent`.
    fn rule_origin(
        &self,
        bus: &str,
        rule: &Rule,
        target: &RuleTarget,
        event_id: &str,
        parent: Option<&TraceContext>,
    ) -> Origin {
        Origin {
            trigger: Trigger::Bus,
            trace: self.engine.hop(
                format!("rule {}", rule.name),
                parent,
                vec![
                    KeyValue::new("nimbus.bus", bus.to_string()),
                    KeyValue::new("nimbus.rule", rule.name.clone()),
                    KeyValue::new("nimbus.target", target.arn.clone()),
                    KeyValue::new("nimbus.event_id", event_id.to_string()),
                ],
                Vec::new(),
            ),
        }
    }

    async fn put_one(
        &self,
        bus: &str,
        entry: PutEventsEntry,
        rules: &[&Rule],
        trace: Option<&TraceContext>,
    ) -> PutEventsResultEntry {
        let event = match validate_entry(&entry, now_ms()) {
            Ok(ev) => ev,
            Err((code, msg)) => return PutEventsResultEntry::error(code, msg),
        };
        if rules.is_empty() && bus != DEFAULT_BUS {
            let b = bus.to_string();
            if let Err(e) = self.blocking(move |s| s.get_bus(&b)).await {
                return PutEventsResultEntry::error(
                    if e.is_not_found() {
                        "ResourceNotFoundException"
                    } else {
                        "InternalFailure"
                    },
                    e.to_string(),
                );
            }
        }
        self.engine.count(|m| m.sources().bus_put(bus));
        let id = event["id"].as_str().unwrap_or_default().to_string();
        let mut results = Vec::new();
        let mut failed = None;
        for (rule, target) in self.route(&event, rules) {
            let origin = self.rule_origin(bus, rule, target, &id, trace);
            let handed = self.submit_to(target, &event, None, origin).await;
            self.engine
                .count(|m| m.sources().bus_target(bus, &rule.name, handed.is_ok()));
            results.push((rule, TargetResult::of(&target.arn, &handed)));
            if let Err(e) = handed {
                warn!(rule = %rule.name, target = %target.arn, "cannot queue a routed event: {e}");
                let code = match &e {
                    BusError::Store(s) if s.is_full() => "ThrottlingException",
                    _ => "InternalFailure",
                };
                failed = Some(PutEventsResultEntry::error(code, e.to_string()));
                break;
            }
        }
        self.recent.record(bus, &event, results);
        if let Some(failed) = failed {
            return failed;
        }
        PutEventsResultEntry {
            event_id: Some(id),
            error_code: None,
            error_message: None,
        }
    }

    /// Hands `event` (or the target's constant `Input`) to the target: an async event for
    /// a function (with `idempotency_key`), a message for a queue, or the rules of another
    /// bus, each carrying `origin` (its trigger and trace context). The returned id is the
    /// request id, message id or event id.
    pub(crate) async fn submit_to(
        &self,
        target: &RuleTarget,
        event: &Value,
        idempotency_key: Option<String>,
        origin: Origin,
    ) -> Result<crate::engine::Submitted, BusError> {
        self.submit_hop(target, event, idempotency_key, origin, 0)
            .await
    }

    fn submit_hop<'a>(
        &'a self,
        target: &'a RuleTarget,
        event: &'a Value,
        idempotency_key: Option<String>,
        origin: Origin,
        hops: u8,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<crate::engine::Submitted, BusError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let payload = target.input.clone().unwrap_or_else(|| event.to_string());
            let submitted = |id: String| crate::engine::Submitted {
                request_id: id,
                duplicate: false,
            };
            match TargetKind::parse(&target.arn)? {
                TargetKind::Function { name, qualifier } => Ok(self
                    .engine
                    .submit_from(&name, &qualifier, payload, idempotency_key, origin)
                    .await?),
                TargetKind::Queue(queue) => {
                    let runner = self.queues.get().cloned().ok_or_else(|| {
                        BusError::Invalid("built-in queues are not enabled".into())
                    })?;
                    let store = runner.store().clone();
                    // A FIFO queue target's messages go to the target's group, deduplicated
                    // by the event's id (a redelivered event is not queued twice).
                    let group_id = target.message_group_id.clone();
                    let dedup_id = group_id
                        .as_ref()
                        .and(event["id"].as_str())
                        .map(str::to_string);
                    let sent = tokio::task::spawn_blocking(move || {
                        store.send(
                            &queue,
                            &[nimbus_store::NewMessage {
                                body: payload,
                                attributes: json!({}),
                                delay_s: 0,
                                trace: origin.trace.map(|t| t.stored_xray()),
                                group_id,
                                dedup_id,
                                ..Default::default()
                            }],
                            now_ms(),
                        )
                    })
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
                    runner.messages_sent();
                    Ok(submitted(
                        sent.first().map(|m| m.id.clone()).unwrap_or_default(),
                    ))
                }
                TargetKind::StateMachine(machine) => {
                    let key = idempotency_key
                        .clone()
                        .or_else(|| event["id"].as_str().map(str::to_string))
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                    let name = crate::external::execution_name(&key, &machine);
                    let arn = self
                        .engine
                        .to_workflow(&machine, name, payload, origin.trace)
                        .await
                        .map_err(BusError::Invalid)?;
                    Ok(submitted(arn))
                }
                TargetKind::External(name) => {
                    self.engine
                        .to_external(&name, payload, origin.trace)
                        .await
                        .map_err(BusError::Invalid)?;
                    Ok(submitted(String::new()))
                }
                TargetKind::Bus(bus) => {
                    if hops >= MAX_BUS_HOPS {
                        warn!(
                            bus,
                            "event dropped: more than {MAX_BUS_HOPS} bus-to-bus hops"
                        );
                        return Ok(submitted(String::new()));
                    }
                    let b = bus.clone();
                    let rules = self.blocking(move |s| s.list_rules(Some(&b))).await?;
                    let refs: Vec<&Rule> = rules.iter().collect();
                    let forwarded: Value = match &target.input {
                        Some(input) => serde_json::from_str(input).unwrap_or(Value::Null),
                        None => event.clone(),
                    };
                    let mut results = Vec::new();
                    let mut failed = None;
                    let id = forwarded["id"].as_str().unwrap_or_default().to_string();
                    for (rule, t) in self.route(&forwarded, &refs) {
                        // Each rule's work is a bus trigger with a span of its own, as for
                        // PutEvents.
                        let rule_origin =
                            self.rule_origin(&bus, rule, t, &id, origin.trace.as_ref());
                        let handed = self
                            .submit_hop(t, &forwarded, None, rule_origin, hops + 1)
                            .await;
                        self.engine
                            .count(|m| m.sources().bus_target(&bus, &rule.name, handed.is_ok()));
                        results.push((rule, TargetResult::of(&t.arn, &handed)));
                        if let Err(e) = handed {
                            warn!(bus, rule = %rule.name, target = %t.arn, "cannot forward an event: {e}");
                            failed = Some(e);
                            break;
                        }
                    }
                    self.recent.record(&bus, &forwarded, results);
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    Ok(submitted(
                        forwarded["id"].as_str().unwrap_or_default().to_string(),
                    ))
                }
            }
        })
    }
}

/// `EventBusName` may be a name or an ARN.
fn bus_name_of(b: &str) -> String {
    b.rsplit_once(":event-bus/")
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| b.to_string())
}

/// The (rule, target) pairs an event goes to: every enabled pattern rule that matches it.
/// Rules whose stored pattern no longer parses are skipped.
pub fn route<'a>(event: &Value, rules: &[&'a Rule]) -> Vec<(&'a Rule, &'a RuleTarget)> {
    route_with(event, rules, |rule, text| match EventPattern::parse(text) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            warn!(rule = %rule.name, "stored event pattern does not parse: {e}");
            None
        }
    })
}

/// [`route`] with the patterns compiled by `compile` (a cache).
fn route_with<'a>(
    event: &Value,
    rules: &[&'a Rule],
    mut compile: impl FnMut(&Rule, &str) -> Option<Arc<EventPattern>>,
) -> Vec<(&'a Rule, &'a RuleTarget)> {
    let mut out = Vec::new();
    for rule in rules {
        let Some(text) = rule.pattern.as_deref().filter(|_| rule.enabled) else {
            continue;
        };
        if compile(rule, text).is_some_and(|p| p.matches(event)) {
            out.extend(rule.targets.iter().map(|t| (*rule, t)));
        }
    }
    out
}

/// Checks an entry as `PutEvents` does and builds its envelope; a failure is
/// `(ErrorCode, ErrorMessage)`.
pub fn validate_entry(e: &PutEventsEntry, now_ms: i64) -> Result<Value, (&'static str, String)> {
    let required = |v: &Option<String>, field: &str| -> Result<String, (&'static str, String)> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err((
                "InvalidArgument",
                format!("Parameter {field} is not valid. Reason: {field} is a required argument."),
            )),
        }
    };
    let source = required(&e.source, "Source")?;
    let detail_type = required(&e.detail_type, "DetailType")?;
    let detail_text = required(&e.detail, "Detail")?;
    let detail: Value = match serde_json::from_str(&detail_text) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(("MalformedDetail", "Detail is malformed.".into())),
    };
    let time_ms = match &e.time {
        None | Some(Value::Null) => now_ms,
        Some(Value::Number(n)) => n.as_f64().map(|s| (s * 1000.0) as i64).ok_or((
            "InvalidArgument",
            "Parameter Time is not valid.".to_string(),
        ))?,
        Some(Value::String(s)) => {
            s.parse::<Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|err| {
                    (
                        "InvalidArgument",
                        format!("Parameter Time is not valid: {err}"),
                    )
                })?
        }
        Some(_) => return Err(("InvalidArgument", "Parameter Time is not valid.".into())),
    };
    let id = uuid::Uuid::new_v4().to_string();
    Ok(envelope(
        &id,
        &source,
        &detail_type,
        time_ms,
        &e.resources,
        detail,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use nimbus_store::{EventQueue, SqliteBusStore, SqliteEventQueue};

    fn rule(name: &str, pattern: Value, targets: &[&str], enabled: bool) -> Rule {
        Rule {
            bus: "default".into(),
            name: name.into(),
            pattern: Some(pattern.to_string()),
            schedule: None,
            timezone: None,
            enabled,
            targets: targets
                .iter()
                .map(|t| RuleTarget {
                    id: None,
                    arn: t.to_string(),
                    input: None,
                    message_group_id: None,
                })
                .collect(),
            created_ms: 0,
            last_fired_ms: None,
        }
    }

    fn entry(source: &str, detail: &str) -> PutEventsEntry {
        PutEventsEntry {
            source: Some(source.into()),
            detail_type: Some("Order Placed".into()),
            detail: Some(detail.into()),
            ..Default::default()
        }
    }

    /// An enabled rule with `pattern` whose targets are the given ARNs or function names.
    fn spec(pattern: Value, targets: &[&str]) -> RuleSpec {
        RuleSpec {
            pattern: Some(pattern),
            targets: targets
                .iter()
                .map(|t| RuleTarget {
                    id: None,
                    arn: t.to_string(),
                    input: None,
                    message_group_id: None,
                })
                .collect(),
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn entries_are_validated_like_put_events() {
        let ok = validate_entry(&entry("shop", r#"{"n":1}"#), 1_444_323_186_000).unwrap();
        assert_eq!(ok["version"], "0");
        assert_eq!(ok["detail-type"], "Order Placed");
        assert_eq!(ok["source"], "shop");
        assert_eq!(ok["account"], "000000000000");
        assert_eq!(ok["region"], "us-east-1");
        assert_eq!(ok["time"], "2015-10-08T16:53:06Z");
        assert_eq!(ok["resources"], json!([]));
        assert_eq!(ok["detail"], json!({"n": 1}));
        assert_eq!(ok["id"].as_str().unwrap().len(), 36);
        let code = |e: PutEventsEntry| validate_entry(&e, 0).unwrap_err().0;
        assert_eq!(code(entry("", "{}")), "InvalidArgument");
        assert_eq!(code(entry("s", "[1]")), "MalformedDetail");
        assert_eq!(code(entry("s", "{")), "MalformedDetail");
        let mut e = entry("s", "{}");
        e.detail_type = None;
        assert_eq!(code(e), "InvalidArgument");
        let mut e = entry("s", "{}");
        e.time = Some(json!("2020-01-02T03:04:05Z"));
        assert_eq!(
            validate_entry(&e, 0).unwrap()["time"],
            "2020-01-02T03:04:05Z"
        );
        e.time = Some(json!(1_577_934_245));
        assert_eq!(
            validate_entry(&e, 0).unwrap()["time"],
            "2020-01-02T03:04:05Z"
        );
        e.time = Some(json!("yesterday"));
        assert_eq!(code(e), "InvalidArgument");
    }

    #[test]
    fn routing_picks_every_enabled_matching_rule() {
        let rules = [
            rule(
                "big-orders",
                json!({"source": ["shop"], "detail": {"total": [{"numeric": [">", 100]}]}}),
                &["big", "audit"],
                true,
            ),
            rule(
                "eu",
                json!({"detail": {"country": [{"prefix": "EU-"}]}}),
                &["eu"],
                true,
            ),
            rule("off", json!({"source": ["shop"]}), &["never"], false),
            rule(
                "not-shop",
                json!({"source": [{"anything-but": "shop"}]}),
                &["others"],
                true,
            ),
        ];
        let refs: Vec<&Rule> = rules.iter().collect();
        let targets = |detail: Value, source: &str| -> Vec<String> {
            let ev = validate_entry(&entry(source, &detail.to_string()), 0).unwrap();
            route(&ev, &refs)
                .iter()
                .map(|(_, t)| t.arn.clone())
                .collect()
        };
        assert_eq!(
            targets(json!({"total": 150, "country": "EU-DE"}), "shop"),
            ["big", "audit", "eu"]
        );
        assert_eq!(
            targets(json!({"total": 50, "country": "US"}), "shop"),
            Vec::<String>::new()
        );
        assert_eq!(targets(json!({"total": 500}), "crm"), ["others"]);
    }

    #[tokio::test]
    async fn put_events_queues_one_event_per_rule_target() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(SqliteEventQueue::open(dir.path()).unwrap());
        let engine = AsyncEngine::new(queue.clone(), EngineConfig::default());
        let bus = EventBus::new(
            Arc::new(SqliteBusStore::open(dir.path(), 0).unwrap()),
            engine,
        );
        let err = bus
            .put_rule("default", "bad", spec(json!({"source": "shop"}), &["f"]))
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Invalid(_)), "{err}");
        bus.put_rule(
            "default",
            "shop",
            spec(
                json!({"source": ["shop"]}),
                &["f", "arn:aws:lambda:us-east-1:000000000000:function:g:live"],
            ),
        )
        .await
        .unwrap();
        let out = bus
            .put_events(
                "default",
                vec![
                    entry("shop", r#"{"a":1}"#),
                    entry("crm", r#"{"a":2}"#),
                    entry("shop", "nope"),
                ],
                None,
            )
            .await
            .unwrap();
        assert_eq!(out.failed_entry_count, 1);
        assert!(out.entries[0].event_id.is_some() && out.entries[1].event_id.is_some());
        assert_eq!(
            out.entries[2].error_code.as_deref(),
            Some("MalformedDetail")
        );
        let f = queue.list("f", None, 10).unwrap();
        assert_eq!(f.len(), 1);
        let ev: Value = serde_json::from_str(&f[0].payload).unwrap();
        assert_eq!(ev["id"], out.entries[0].event_id.clone().unwrap().as_str());
        assert_eq!(ev["detail"], json!({"a": 1}));
        let g = queue.list("g", None, 10).unwrap();
        assert_eq!((g.len(), g[0].qualifier.as_str()), (1, "live"));
        // The rule remembers the match and each target's hand-off.
        let recent = bus.recent_matches("default", "shop");
        assert_eq!(recent.len(), 1);
        let m = &recent[0];
        assert_eq!(m.event_id, out.entries[0].event_id.clone().unwrap());
        assert_eq!(
            (m.source.as_str(), m.detail_type.as_str()),
            ("shop", "Order Placed")
        );
        let handed: Vec<(&str, &str)> = m
            .targets
            .iter()
            .map(|t| (t.arn.as_str(), t.result))
            .collect();
        assert_eq!(
            handed,
            [
                ("arn:aws:lambda:us-east-1:000000000000:function:f", "queued"),
                (
                    "arn:aws:lambda:us-east-1:000000000000:function:g:live",
                    "queued"
                ),
            ]
        );
        assert_eq!(m.targets[0].id.as_deref(), Some(f[0].id.as_str()));
        // A bounded ring, newest first; gone with the rule.
        for _ in 0..RECENT_MATCHES {
            bus.put_events("default", vec![entry("shop", "{}")], None)
                .await
                .unwrap();
        }
        let last = bus
            .put_events("default", vec![entry("shop", "{}")], None)
            .await
            .unwrap();
        let recent = bus.recent_matches("default", "shop");
        assert_eq!(recent.len(), RECENT_MATCHES);
        assert_eq!(Some(recent[0].event_id.clone()), last.entries[0].event_id);
        bus.delete_rule("default", "shop").await.unwrap();
        assert!(bus.recent_matches("default", "shop").is_empty());
        // An unknown bus is a per-entry error.
        let mut e = entry("shop", "{}");
        e.event_bus_name = Some("arn:aws:events:us-east-1:000000000000:event-bus/nope".into());
        let out = bus.put_events("default", vec![e], None).await.unwrap();
        assert_eq!(
            out.entries[0].error_code.as_deref(),
            Some("ResourceNotFoundException")
        );
        assert!(bus.put_events("default", vec![], None).await.is_err());
    }

    #[tokio::test]
    async fn queue_and_bus_targets() {
        use nimbus_store::{QueueSettings, QueueStore, SqliteQueueStore};
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(SqliteEventQueue::open(dir.path()).unwrap());
        let engine = AsyncEngine::new(queue.clone(), EngineConfig::default());
        let bus = EventBus::new(
            Arc::new(SqliteBusStore::open(dir.path(), 0).unwrap()),
            engine,
        );
        let queues = Arc::new(SqliteQueueStore::open(dir.path()).unwrap());
        queues
            .put_queue("inbox", &QueueSettings::default(), 0)
            .unwrap();
        bus.set_queues(crate::mapping::MappingRunner::new(
            queues.clone(),
            Default::default(),
        ));
        bus.put_bus("audit").await.unwrap();
        let r = bus
            .put_rule(
                "default",
                "fan-out",
                spec(
                    json!({"source": ["shop"]}),
                    &[
                        "arn:aws:sqs:us-east-1:000000000000:inbox",
                        "arn:aws:events:us-east-1:000000000000:event-bus/audit",
                    ],
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.targets[0].arn, "arn:aws:sqs:us-east-1:000000000000:inbox");
        // A loop back to the default bus ends after a few hops.
        bus.put_rule(
            "audit",
            "all",
            spec(
                json!({"source": ["shop"]}),
                &[
                    "auditor",
                    "arn:aws:events:us-east-1:000000000000:event-bus/default",
                ],
            ),
        )
        .await
        .unwrap();
        let out = bus
            .put_events("default", vec![entry("shop", r#"{"n":1}"#)], None)
            .await
            .unwrap();
        let id = out.entries[0].event_id.clone().unwrap();
        let got = queues
            .receive("inbox", 10, None, crate::engine::now_ms() + 1000)
            .unwrap();
        // default → audit → default → audit → default: the queue hears it three times, the
        // loop stops at the fourth bus-to-bus hop.
        assert_eq!(got.len(), 3);
        let body: Value = serde_json::from_str(&got[0].body).unwrap();
        assert_eq!(body["id"], id.as_str());
        let audited = queue.list("auditor", None, 10).unwrap();
        assert_eq!(audited.len(), 2, "one per pass through the audit bus");
        let ev: Value = serde_json::from_str(&audited[0].payload).unwrap();
        assert_eq!(ev["id"], id.as_str());
        assert!(matches!(
            TargetKind::parse("arn:aws:sqs:us-east-1:000000000000:").unwrap_err(),
            BusError::Invalid(_)
        ));
    }

    #[test]
    fn fifo_queue_targets_need_a_message_group_and_only_they_take_one() {
        let fifo = TargetKind::parse("arn:aws:sqs:us-east-1:000000000000:q.fifo").unwrap();
        let plain = TargetKind::parse("arn:aws:sqs:us-east-1:000000000000:q").unwrap();
        let function = TargetKind::parse("f").unwrap();
        assert!(check_message_group(&fifo, Some("g")).is_ok());
        assert!(check_message_group(&plain, None).is_ok());
        assert!(check_message_group(&function, None).is_ok());
        for (kind, group) in [
            (&fifo, None),
            (&fifo, Some("")),
            (&fifo, Some(&*"g".repeat(129))),
            (&plain, Some("g")),
            (&function, Some("g")),
        ] {
            assert!(
                matches!(check_message_group(kind, group), Err(BusError::Invalid(_))),
                "{kind:?} {group:?}"
            );
        }
    }
}
