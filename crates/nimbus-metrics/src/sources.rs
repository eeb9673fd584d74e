//! Counters of the event sources: the event bus (events put, rule matches, targets that
//! could not be handed their event), schedules (firings, late firings, missed firings) and
//! event-source mappings (batches, records, partial failures, the age of a batch's oldest
//! record) and bucket notifications (delivered, dropped, retried). Labels are bus, rule,
//! queue, function and bucket names — things an operator created, never event contents.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BusLabels {
    bus: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabels {
    bus: String,
    rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    bucket: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MappingLabels {
    queue: String,
    function: String,
}

/// The event sources' families (see the module docs); reached through
/// [`crate::Metrics::sources`].
#[derive(Debug, Default)]
pub struct SourceMetrics {
    bus_put: Family<BusLabels, Counter>,
    bus_matched: Family<RuleLabels, Counter>,
    bus_failed: Family<RuleLabels, Counter>,
    firings: Family<RuleLabels, Counter>,
    late: Family<RuleLabels, Counter>,
    missed: Family<RuleLabels, Counter>,
    batches: Family<MappingLabels, Counter>,
    records: Family<MappingLabels, Counter>,
    failed_records: Family<MappingLabels, Counter>,
    record_age: Family<MappingLabels, Gauge<f64, AtomicU64>>,
    notifications: Family<NotificationLabels, Counter>,
    target_deliveries: Family<TargetLabels, Counter>,
}

impl SourceMetrics {
    pub(crate) fn register(r: &mut Registry) -> Self {
        let s = Self::default();
        r.register(
            "nimbus_bus_events_put",
            "Events accepted by PutEvents (valid entries), by bus",
            s.bus_put.clone(),
        );
        r.register(
            "nimbus_bus_matches",
            "Events a rule matched and handed to one of its targets, by bus and rule",
            s.bus_matched.clone(),
        );
        r.register(
            "nimbus_bus_failed_targets",
            "Matched events a target could not be handed (its queue full or gone, a store error)",
            s.bus_failed.clone(),
        );
        r.register(
            "nimbus_schedule_firings",
            "Schedule firings handed to their targets, by bus and rule",
            s.firings.clone(),
        );
        r.register(
            "nimbus_schedule_late_firings",
            "Firings handed over more than a minute after their time (after a restart or a stall)",
            s.late.clone(),
        );
        r.register(
            "nimbus_schedule_missed_firings",
            "Firings skipped while the server was down (the --missed-schedules policy)",
            s.missed.clone(),
        );
        r.register(
            "nimbus_mapping_batches",
            "Batches an event-source mapping invoked its function with",
            s.batches.clone(),
        );
        r.register(
            "nimbus_mapping_records",
            "Records in those batches",
            s.records.clone(),
        );
        r.register(
            "nimbus_mapping_failed_records",
            "Records of delivered batches left for a retry (a function error or a partial batch failure)",
            s.failed_records.clone(),
        );
        r.register_with_unit(
            "nimbus_mapping_iterator_age",
            "Age of the oldest record of the mapping's last batch when it was invoked (Lambda's IteratorAge)",
            Unit::Seconds,
            s.record_age.clone(),
        );
        r.register(
            "nimbus_s3_notifications",
            "Bucket notifications by bucket and outcome: delivered (handed to their function, queue or bus), dropped (the target is gone), retried (the target could not take it yet)",
            s.notifications.clone(),
        );
        r.register(
            "nimbus_target_deliveries",
            "Messages for external targets (NATS, RabbitMQ, Redis, MQTT) by target and outcome: delivered (the broker confirmed), failed (a publish failed; retried), dropped (undelivered after 24 h)",
            s.target_deliveries.clone(),
        );
        s
    }

    /// A message for the external target `target` was delivered, failed (and will be
    /// retried) or dropped.
    pub fn target_delivery(&self, target: &str, outcome: &'static str) {
        self.target_deliveries
            .get_or_create(&TargetLabels {
                target: target.into(),
                outcome,
            })
            .inc();
    }

    /// A notification of `bucket` was handed on (`delivered`), dropped (`dropped`) or held
    /// back for a retry (`retried`).
    pub fn s3_notification(&self, bucket: &str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                bucket: bucket.into(),
                outcome,
            })
            .inc();
    }

    /// A valid entry was put on `bus`.
    pub fn bus_put(&self, bus: &str) {
        self.bus_put
            .get_or_create(&BusLabels { bus: bus.into() })
            .inc();
    }

    fn rule(bus: &str, rule: &str) -> RuleLabels {
        RuleLabels {
            bus: bus.into(),
            rule: rule.into(),
        }
    }

    /// `rule` of `bus` matched an event and handed it to a target (`ok`) or failed to.
    pub fn bus_target(&self, bus: &str, rule: &str, ok: bool) {
        let f = if ok {
            &self.bus_matched
        } else {
            &self.bus_failed
        };
        f.get_or_create(&Self::rule(bus, rule)).inc();
    }

    /// A firing of schedule `rule` was handed over, `late` when well after its time.
    pub fn schedule_fired(&self, bus: &str, rule: &str, late: bool) {
        let l = Self::rule(bus, rule);
        self.firings.get_or_create(&l).inc();
        if late {
            self.late.get_or_create(&l).inc();
        }
    }

    /// `n` firings of schedule `rule` were skipped.
    pub fn schedule_missed(&self, bus: &str, rule: &str, n: u64) {
        if n > 0 {
            self.missed.get_or_create(&Self::rule(bus, rule)).inc_by(n);
        }
    }

    /// A batch of `records` from `queue` was delivered to `function`; `failed` of them are
    /// left for a retry; the oldest had waited `oldest`.
    pub fn mapping_batch(
        &self,
        queue: &str,
        function: &str,
        records: u64,
        failed: u64,
        oldest: Duration,
    ) {
        let l = MappingLabels {
            queue: queue.into(),
            function: function.into(),
        };
        self.batches.get_or_create(&l).inc();
        self.records.get_or_create(&l).inc_by(records);
        self.failed_records.get_or_create(&l).inc_by(failed);
        self.record_age.get_or_create(&l).set(oldest.as_secs_f64());
    }
}
