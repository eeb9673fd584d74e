//! Percentiles, medians and the figures one run produces.

use crate::client::Throughput;
use serde_json::{json, Value};
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

    fn median_of(xs: &[Latency]) -> Latency {
        Latency {
            p50: median(&xs.iter().map(|l| l.p50).collect::<Vec<_>>()),
            p99: median(&xs.iter().map(|l| l.p99).collect::<Vec<_>>()),
        }
    }

    fn to_json(self) -> Value {
        json!({ "p50_ms": round(self.p50, 3), "p99_ms": round(self.p99, 3) })
    }
}

/// CPU time per request during the throughput measurement, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuPerRequest {
    /// The server process (the `nimbus` gateway, or the floor server).
    pub server_us: f64,
    /// The server's children (Nimbus's function instances; none for the floor).
    pub instances_us: f64,
    /// The load generator.
    pub client_us: f64,
    /// Cores used on average by unrelated processes meanwhile (noise on a shared machine).
    pub other_cores: f64,
}

impl CpuPerRequest {
    pub fn of(t: &Throughput, duration: Duration) -> CpuPerRequest {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / t.requests.max(1) as f64;
        CpuPerRequest {
            server_us: per(t.cpu.target),
            instances_us: per(t.cpu.children),
            client_us: per(t.cpu.client),
            other_cores: t.cpu.other.as_secs_f64() / duration.as_secs_f64(),
        }
    }

    fn median_of(xs: &[CpuPerRequest]) -> CpuPerRequest {
        let m = |f: fn(&CpuPerRequest) -> f64| median(&xs.iter().map(f).collect::<Vec<_>>());
        CpuPerRequest {
            server_us: m(|c| c.server_us),
            instances_us: m(|c| c.instances_us),
            client_us: m(|c| c.client_us),
            other_cores: m(|c| c.other_cores),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "server_us": round(self.server_us, 1), "instances_us": round(self.instances_us, 1),
            "client_us": round(self.client_us, 1), "other_cores": round(self.other_cores, 2),
        })
    }
}

/// What one run measures of one target (Nimbus or its floor).
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub cold: Latency,
    pub warm: Latency,
    pub rps: f64,
    pub cpu: CpuPerRequest,
}

impl Figures {
    /// Each figure's median over runs.
    pub fn median_of(runs: &[Figures]) -> Figures {
        let pick = |f: fn(&Figures) -> Latency| {
            Latency::median_of(&runs.iter().map(f).collect::<Vec<_>>())
        };
        Figures {
            cold: pick(|f| f.cold),
            warm: pick(|f| f.warm),
            rps: median(&runs.iter().map(|f| f.rps).collect::<Vec<_>>()),
            cpu: CpuPerRequest::median_of(&runs.iter().map(|f| f.cpu).collect::<Vec<_>>()),
        }
    }

    pub fn to_json(self) -> Value {
        json!({ "cold_start": self.cold.to_json(), "warm": self.warm.to_json(), "throughput_rps": round(self.rps, 1),
               "throughput_cpu_per_request": self.cpu.to_json() })
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// A Nimbus figure beside its floor.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub nimbus: Figures,
    pub floor: Figures,
}

impl Pair {
    pub fn median_of(runs: &[Pair]) -> Pair {
        Pair {
            nimbus: Figures::median_of(&runs.iter().map(|p| p.nimbus).collect::<Vec<_>>()),
            floor: Figures::median_of(&runs.iter().map(|p| p.floor).collect::<Vec<_>>()),
        }
    }

    pub fn to_json(self) -> Value {
        json!({ "nimbus": self.nimbus.to_json(), "floor": self.floor.to_json() })
    }

    /// The table of one language.
    pub fn table(&self, title: &str) -> String {
        let (n, f) = (self.nimbus, self.floor);
        let mut out = format!(
            "{title:<18}{:>11}{:>9}{:>12}{:>9}{:>13}\n",
            "nimbus p50", "p99", "floor p50", "p99", "ratio(p50)"
        );
        let mut row = |label: &str, n: Latency, f: Latency| {
            out += &format!(
                "{label:<18}{:>11}{:>9}{:>12}{:>9}{:>12.1}x\n",
                ms(n.p50),
                ms(n.p99),
                ms(f.p50),
                ms(f.p99),
                n.p50 / f.p50
            );
        };
        row("cold start (ms)", n.cold, f.cold);
        row("warm (ms)", n.warm, f.warm);
        out += &format!(
            "{:<18}{:>11.0}{:>9}{:>12.0}{:>9}{:>12.2}x\n",
            "throughput (rps)",
            n.rps,
            "-",
            f.rps,
            "-",
            n.rps / f.rps
        );
        out += &format!(
            "CPU per request at throughput (us): nimbus {:.0} gateway + {:.0} instances, floor {:.0}; \
             client {:.0} / {:.0}; other load {:.1} / {:.1} cores\n",
            n.cpu.server_us,
            n.cpu.instances_us,
            f.cpu.server_us,
            n.cpu.client_us,
            f.cpu.client_us,
            n.cpu.other_cores,
            f.cpu.other_cores
        );
        out
    }
}

/// Milliseconds with 3 significant-ish digits.
fn ms(x: f64) -> String {
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
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
