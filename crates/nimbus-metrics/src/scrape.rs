//! Gauges read when scraped: what a store or the pool knows now (queue depths, backlogs,
//! instances by state, database sizes…), never kept in the registry between scrapes, so a
//! deleted queue or function leaves no stale series behind. A count the pool keeps itself
//! (stem cell refill failures) is served the same way, typed as a counter.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::sync::{Arc, Mutex};

/// One gauge family as read at a scrape: its samples, each with its label pairs.
#[derive(Debug, Clone)]
pub struct GaugeFamily {
    /// The family name (`nimbus_…`, without the unit suffix when `unit` is set, without
    /// `_total` for a counter).
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    /// A monotonic count kept by its source ([`GaugeFamily::counter`]), not a gauge.
    pub counter: bool,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl GaugeFamily {
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            unit: None,
            counter: false,
            samples: Vec::new(),
        }
    }

    /// The same family typed as a counter (its samples gain `_total`): for counts that
    /// only grow, kept by the source.
    pub fn counter(mut self) -> Self {
        self.counter = true;
        self
    }

    /// The same family measured in `unit` (its name gains the unit's suffix).
    pub fn with_unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// Adds a sample; a sample with the same labels as an earlier one is added to it (so
    /// functions past the label limit sum up under `_other`).
    pub fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        match self.samples.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, v)) => *v += value,
            None => self.samples.push((labels, value)),
        }
    }
}

/// What a scrape source reads: any number of families.
pub(crate) type Source = Box<dyn Fn() -> Vec<GaugeFamily> + Send + Sync>;

/// Registered once; reads every source at each scrape.
#[derive(Default, Clone)]
pub(crate) struct ScrapeGauges(pub(crate) Arc<Mutex<Vec<Source>>>);

impl std::fmt::Debug for ScrapeGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeGauges")
    }
}

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for family in sources.iter().flat_map(|s| s()) {
            let kind = if family.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut e =
                encoder.encode_descriptor(family.name, family.help, family.unit.as_ref(), kind)?;
            let sample = |value: f64, e: MetricEncoder| {
                if family.counter {
                    ConstCounter::new(value).encode(e)
                } else {
                    ConstGauge::new(value).encode(e)
                }
            };
            if let [(labels, value)] = family.samples.as_slice() {
                if labels.is_empty() {
                    // One series without labels: `name value`, not `name{} value`.
                    sample(*value, e)?;
                    continue;
                }
            }
            for (labels, value) in &family.samples {
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                sample(*value, e.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
