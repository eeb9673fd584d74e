//! Percentiles, medians and the figures one run produces.

use crate::client::Throughput;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `p`-th percentile (nearest rank) of `samples`, in milliseconds.
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    assert!(!samples.is_empty(), "percentile of no samples");
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
    ms[rank.clamp(1, ms.len()) - 1]
}

/// The median of `xs` (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    assert!(!xs.is_empty(), "median of nothing");
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// p50 and p99 of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Latency {
        Latency {
            p50: percentile_ms(samples, 50.0),
            p99: percentile_ms(samples, 99.0),
        }
    }
}

/// CPU time per request during a throughput measurement, recorded under `prefix`:
/// `server_us` (the `nimbus` gateway or the floor server), `instances_us` (the server's
/// descendants: Nimbus's instances; none for the floor), `client_us` (the load generator)
/// and `other_cores` (cores used on average by unrelated processes meanwhile: noise).
pub fn put_cpu(figs: &mut Figs, prefix: &str, t: &Throughput, duration: Duration) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / t.requests.max(1) as f64;
    figs.put(&format!("{prefix}.server_us"), per(t.cpu.target));
    figs.put(&format!("{prefix}.instances_us"), per(t.cpu.children));
    figs.put(&format!("{prefix}.client_us"), per(t.cpu.client));
    figs.put(
        &format!("{prefix}.other_cores"),
        t.cpu.other.as_secs_f64() / duration.as_secs_f64(),
    );
}

/// The figures of one run (or their medians), by name: latencies as `NAME.p50` and
/// `NAME.p99` in milliseconds, other figures in the unit their name says.
#[derive(Debug, Clone, Default)]
pub struct Figs(pub BTreeMap<String, f64>);

impl Figs {
    pub fn put(&mut self, key: &str, v: f64) {
        self.0.insert(key.to_string(), v);
    }

    pub fn put_lat(&mut self, key: &str, l: Latency) {
        self.put(&format!("{key}.p50"), l.p50);
        self.put(&format!("{key}.p99"), l.p99);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    pub fn lat(&self, key: &str) -> Option<Latency> {
        Some(Latency {
            p50: self.get(&format!("{key}.p50"))?,
            p99: self.get(&format!("{key}.p99"))?,
        })
    }

    pub fn extend(&mut self, other: &Figs) {
        self.0.extend(other.0.iter().map(|(k, v)| (k.clone(), *v)));
    }

    /// Each figure's median over the runs that have it.
    pub fn median_of(runs: &[Figs]) -> Figs {
        let mut all: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in runs {
            for (k, v) in &r.0 {
                all.entry(k.clone()).or_default().push(*v);
            }
        }
        Figs(all.into_iter().map(|(k, v)| (k, median(&v))).collect())
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), json!(round(*v, 3))))
                .collect(),
        )
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Milliseconds with 3 significant-ish digits.
pub fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&s, 50.0), 50.0);
        assert_eq!(percentile_ms(&s, 99.0), 99.0);
        let s: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&s, 99.0), 20.0);
        assert_eq!(percentile_ms(&s[..1], 50.0), 1.0);
    }

    #[test]
    fn figure_medians_skip_missing_runs() {
        let mut a = Figs::default();
        a.put("x", 1.0);
        a.put("y", 5.0);
        let mut b = Figs::default();
        b.put("x", 3.0);
        let m = Figs::median_of(&[a, b]);
        assert_eq!(m.get("x"), Some(2.0));
        assert_eq!(m.get("y"), Some(5.0));
        assert_eq!(m.get("z"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
