//! `nimbus stats NAME [--since 1h] [--period S]`: a function's per-minute history
//! (`GET /v1/functions/{name}/metrics`) as a small table with a sparkline per series.

use crate::cli::StatsArgs;
use crate::client::Client;
use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

/// Sparklines are at most this wide; longer series are merged (maximum per column).
const WIDTH: usize = 60;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub async fn run(client: &Client, args: StatsArgs, json: bool) -> Result<()> {
    let mut req = client
        .request(Method::GET, &["v1", "functions", &args.name, "metrics"])
        .query(&[("since", args.since.as_str())]);
    if let Some(p) = args.period {
        req = req.query(&[("period", p.to_string())]);
    }
    let v = client.json(req).await?;
    if json {
        return super::print_json(&v);
    }
    super::print(render(&v, &args.since))
}

/// Each series, in order: (label, JSON field, summed over the window or its maximum).
const SERIES: [(&str, &str, bool); 9] = [
    ("invocations", "invocations", true),
    ("errors", "errors", true),
    ("throttles", "throttles", true),
    ("timeouts", "timeouts", true),
    ("cold starts", "cold_starts", true),
    ("p50 ms", "duration_p50_ms", false),
    ("p90 ms", "duration_p90_ms", false),
    ("p99 ms", "duration_p99_ms", false),
    ("concurrency", "max_concurrency", false),
];

/// A sparkline of `values` (gaps as spaces), scaled to its own maximum.
pub(crate) fn sparkline(values: &[Option<f64>]) -> String {
    let cols = values.len().div_ceil(WIDTH).max(1);
    let merged: Vec<Option<f64>> = values
        .chunks(cols)
        .map(|c| c.iter().flatten().copied().reduce(f64::max))
        .collect();
    let max = merged.iter().flatten().copied().fold(0.0, f64::max);
    merged
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max <= 0.0 => BARS[0],
            Some(v) => BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

pub(crate) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

fn render(v: &Value, since: &str) -> String {
    let period = v["period"].as_i64().unwrap_or(60).max(1);
    let points = v["points"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{} · since {since} · {} s per point · {} points with data\n",
        v["function"].as_str().unwrap_or("?"),
        period,
        points.len()
    );
    if points.is_empty() {
        out.push_str("no invocations in this window\n");
        return out;
    }
    // Gaps between points are filled, so the sparkline's time axis is regular.
    let first = points[0]["t"].as_i64().unwrap_or(0);
    let last = points[points.len() - 1]["t"].as_i64().unwrap_or(first);
    let step = points
        .windows(2)
        .map(|w| w[1]["t"].as_i64().unwrap_or(0) - w[0]["t"].as_i64().unwrap_or(0))
        .filter(|d| *d > 0)
        // (under the server's test hook a "minute" is shorter than the period says)
        .chain([period * 1000])
        .min()
        .unwrap_or(60_000);
    let slots = ((last - first) / step + 1).clamp(1, 100_000) as usize;
    out.push_str(&format!("{:<12}  {:>12}  TREND\n", "SERIES", "TOTAL/MAX"));
    for (label, field, summed) in SERIES {
        let mut values = vec![None; slots];
        for p in &points {
            let i = ((p["t"].as_i64().unwrap_or(first) - first) / step) as usize;
            if let (Some(slot), Some(x)) = (values.get_mut(i), p[field].as_f64()) {
                *slot = Some(x);
            }
        }
        if summed {
            // Counts are 0 where there is no point; durations are absent there.
            values = values.into_iter().map(|x| x.or(Some(0.0))).collect();
        }
        let present = values.iter().flatten().copied();
        let total = if summed {
            present.sum::<f64>()
        } else {
            present.fold(f64::NAN, f64::max)
        };
        let shown = if total.is_nan() {
            "-".to_string()
        } else if summed {
            number(total)
        } else {
            format!("max {}", number(total))
        };
        out.push_str(&format!(
            "{label:<12}  {shown:>12}  {}\n",
            sparkline(&values)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sparklines_scale_and_merge() {
        assert_eq!(sparkline(&[Some(0.0), Some(7.0), None, Some(3.5)]), "▁█ ▅");
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)]), "▁▁");
        let long: Vec<Option<f64>> = (0..120).map(|i| Some(i as f64)).collect();
        assert_eq!(sparkline(&long).chars().count(), 60);
    }

    #[test]
    fn renders_totals_and_gaps() {
        let v = json!({"function": "hello", "period": 60, "points": [
            {"t": 0, "invocations": 3, "errors": 1, "throttles": 0, "timeouts": 0, "cold_starts": 1,
             "duration_p50_ms": 1.5, "duration_p90_ms": 2.0, "duration_p99_ms": 9.0, "max_concurrency": 2},
            {"t": 120000, "invocations": 1, "errors": 0, "throttles": 1, "timeouts": 0, "cold_starts": 0,
             "duration_p50_ms": 4.0, "duration_p90_ms": 4.0, "duration_p99_ms": 4.0, "max_concurrency": 1}
        ]});
        let text = render(&v, "1h");
        let row = |label: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(label)).unwrap();
            line[label.len()..]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        assert_eq!(row("invocations"), ["4", "█▁▃"], "{text}");
        assert_eq!(row("throttles"), ["1", "▁▁█"], "{text}");
        // Durations leave gaps where nothing ran.
        assert!(text.contains("max 9  █ ▄"), "{text}");
    }
}
