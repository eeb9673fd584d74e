//! Per-minute history: the background flusher that moves each function's minute from
//! memory ([`nimbus_metrics::Metrics::take_minutes`]) to the history store, and
//! `GET /v1/functions/{name}/metrics` and `GET /v1/metrics/summary`, which merge stored
//! minutes with the current one still in memory.

use crate::lambda_api::blocking;
use crate::{ApiError, Gateway};
use axum::extract::{Path, Query, State};
use axum::Json;
use nimbus_core::FunctionName;
use nimbus_metrics::MinuteStats;
use nimbus_store::{HistoryLimits, HistoryStore, MinuteRow};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Flushes between two prunings of old minutes.
const PRUNE_EVERY: u32 = 10;

/// The history store and the length of a minute.
pub struct History {
    pub(crate) store: Arc<dyn HistoryStore>,
    /// 60,000 ms, except under the test hook `NIMBUS_TEST_MINUTE_MS`.
    pub(crate) minute_ms: i64,
    pub(crate) limits: HistoryLimits,
    /// Held (write) while a flush moves a minute from memory to the store, and (read)
    /// while a query reads both: else a query between the two steps would find the
    /// minute in neither (seen: a function missing from the summary at a minute boundary).
    flushing: tokio::sync::RwLock<()>,
}

impl History {
    pub fn new(store: Arc<dyn HistoryStore>, minute_ms: i64) -> Arc<Self> {
        let minute_ms = minute_ms.max(1);
        let mut limits = HistoryLimits::default();
        // A shortened minute shortens the retention alike (14 days of minutes).
        limits.retention_ms = limits.retention_ms / 60_000 * minute_ms;
        Arc::new(Self {
            store,
            minute_ms,
            limits,
            flushing: tokio::sync::RwLock::new(()),
        })
    }

    /// The start of the minute holding `ms`.
    pub(crate) fn minute_of(&self, ms: i64) -> i64 {
        ms.div_euclid(self.minute_ms) * self.minute_ms
    }

    /// The length of a `period` (API seconds, a multiple of 60) in ms of this clock.
    pub(crate) fn period_ms(&self, period_s: u32) -> i64 {
        i64::from(period_s / 60).max(1) * self.minute_ms
    }
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn history(gw: &Gateway) -> Result<&Arc<History>, ApiError> {
    gw.history
        .get()
        .ok_or_else(|| ApiError::ServiceUnavailable("history is not enabled on this server".into()))
}

impl Gateway {
    /// Keeps the per-minute history: at each minute boundary moves the minute that ended
    /// from memory to the store (and prunes old minutes now and then). Runs until aborted;
    /// call [`Gateway::flush_history`] once more at shutdown.
    pub async fn run_history(self: Arc<Self>) {
        let Some(h) = self.history.get().cloned() else {
            return;
        };
        let mut flushes = 0u32;
        loop {
            let now = now_ms();
            let next = h.minute_of(now) + h.minute_ms;
            tokio::time::sleep(Duration::from_millis((next - now).max(1) as u64)).await;
            self.flush_history().await;
            flushes += 1;
            if flushes % PRUNE_EVERY == 1 {
                let (store, limits) = (h.store.clone(), h.limits);
                match blocking(move || store.prune(now_ms(), limits)).await {
                    Ok(0) => {}
                    Ok(n) => debug!(rows = n, "pruned the history"),
                    Err(e) => warn!("cannot prune the history: {e}"),
                }
            }
        }
    }

    /// Writes what memory holds as the minute in progress just before now (called at
    /// each minute boundary and at shutdown).
    pub async fn flush_history(&self) {
        let Some(h) = self.history.get() else {
            return;
        };
        let _flushing = h.flushing.write().await;
        let minute = h.minute_of(now_ms() - 1);
        let rows = self.cfg.metrics.take_minutes();
        if rows.is_empty() {
            return;
        }
        let store = h.store.clone();
        if let Err(e) = blocking(move || store.add_minutes(minute, &rows)).await {
            warn!("cannot write the history of minute {minute}: {e}");
        }
    }

    /// Stored minutes since `from_ms` plus the current minute from memory, of one function
    /// or of every one; with the invocations in flight of each function now.
    pub(crate) async fn minutes_since(
        &self,
        function: Option<&str>,
        from_ms: i64,
    ) -> Result<(Vec<MinuteRow>, BTreeMap<String, u64>), ApiError> {
        let h = history(self)?;
        let _flushing = h.flushing.read().await;
        let (store, f) = (h.store.clone(), function.map(str::to_string));
        let mut rows = blocking(move || store.minutes(f.as_deref(), from_ms, i64::MAX)).await?;
        let current = h.minute_of(now_ms());
        let mut in_flight = BTreeMap::new();
        for (name, stats, n) in self.cfg.metrics.peek_minutes() {
            if function.is_some_and(|f| f != name) {
                continue;
            }
            in_flight.insert(name.clone(), n);
            if !stats.is_empty() || n > 0 {
                let mut stats = stats;
                stats.max_concurrency = stats.max_concurrency.max(n);
                rows.push(MinuteRow {
                    function: name,
                    minute_ms: current,
                    stats,
                });
            }
        }
        Ok((rows, in_flight))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WindowQuery {
    since: Option<String>,
    period: Option<u32>,
}

/// `since` (`15m`, `1h`, `24h`, `14d`, `90s`, or RFC 3339) as the epoch ms it names.
pub(crate) fn parse_since(since: &str, now_ms: i64) -> Result<i64, ApiError> {
    let t = crate::logs::parse_time("since", since, now_ms)?;
    // A duration reaches at most ten years back (the store keeps 14 days).
    let relative = since.ends_with(['s', 'm', 'h', 'd']);
    if relative && now_ms.saturating_sub(t) > 3_660 * 86_400_000 {
        return Err(ApiError::InvalidParameter(format!(
            "since {since:?} reaches more than ten years back"
        )));
    }
    Ok(t)
}

impl WindowQuery {
    /// `(from_ms aligned to the period, period_s, period_ms)`.
    fn window(&self, h: &History) -> Result<(i64, u32, i64), ApiError> {
        let period = self.period.unwrap_or(60);
        if period == 0 || !period.is_multiple_of(60) || period > 86_400 {
            return Err(ApiError::InvalidParameter(format!(
                "period {period} is not a multiple of 60 seconds up to 86400"
            )));
        }
        let p_ms = h.period_ms(period);
        let from = match self.since.as_deref() {
            None => now_ms() - 60 * h.minute_ms,
            // Durations count in minutes of this server's clock (shortened by the test hook).
            Some(s) if s.ends_with(['s', 'm', 'h', 'd']) => {
                now_ms() - (now_ms() - parse_since(s, now_ms())?) / 60_000 * h.minute_ms
            }
            Some(s) => parse_since(s, now_ms())?,
        };
        Ok((from.div_euclid(p_ms) * p_ms, period, p_ms))
    }
}

fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0))
}

/// One point of the contract's shape.
fn point(t: i64, s: &MinuteStats) -> Value {
    let mut v = stats_json(s);
    v["t"] = json!(t);
    v["duration_p90_ms"] = ms(s.durations.percentile_ms(0.9));
    v
}

fn stats_json(s: &MinuteStats) -> Value {
    json!({
        "invocations": s.invocations,
        "errors": s.errors,
        "throttles": s.throttles,
        "timeouts": s.timeouts,
        "cold_starts": s.cold_starts,
        "duration_p50_ms": ms(s.durations.percentile_ms(0.5)),
        "duration_p99_ms": ms(s.durations.percentile_ms(0.99)),
        "max_concurrency": s.max_concurrency,
    })
}

/// Merges rows into periods of `p_ms` (ascending), each period's minutes merged with
/// [`MinuteStats::merge`]; rows are expected per minute of one series.
fn periods(rows: impl IntoIterator<Item = (i64, MinuteStats)>, p_ms: i64) -> Vec<Value> {
    let mut by: BTreeMap<i64, MinuteStats> = BTreeMap::new();
    for (t, s) in rows {
        by.entry(t.div_euclid(p_ms) * p_ms).or_default().merge(&s);
    }
    by.iter().map(|(t, s)| point(*t, s)).collect()
}

/// `GET /v1/functions/{name}/metrics?since=1h&period=60`.
pub(crate) async fn function_metrics(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    let name = FunctionName::parse(&name)?;
    crate::metrics::require_on(&gw.cfg.metrics)?;
    let h = history(&gw)?.clone();
    let (from, period, p_ms) = q.window(&h)?;
    let (store, n) = (gw.store.clone(), name.clone());
    blocking(move || store.get(&n, None)).await?;
    let (rows, _) = gw.minutes_since(Some(name.as_str()), from).await?;
    let points = periods(rows.into_iter().map(|r| (r.minute_ms, r.stats)), p_ms);
    Ok(Json(
        json!({"function": name.as_str(), "period": period, "points": points}),
    ))
}

/// `GET /v1/metrics/summary?since=1h&period=60`: every function summed per period (their
/// concurrencies added per minute), and each function's totals over the window.
pub(crate) async fn summary(
    State(gw): State<Arc<Gateway>>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    crate::metrics::require_on(&gw.cfg.metrics)?;
    let h = history(&gw)?.clone();
    let (from, period, p_ms) = q.window(&h)?;
    let (rows, in_flight) = gw.minutes_since(None, from).await?;
    let mut per_minute: BTreeMap<i64, MinuteStats> = BTreeMap::new();
    let mut per_function: BTreeMap<String, MinuteStats> = BTreeMap::new();
    for r in rows {
        let m = per_minute.entry(r.minute_ms).or_default();
        let concurrency = m.max_concurrency + r.stats.max_concurrency;
        m.merge(&r.stats);
        m.max_concurrency = concurrency;
        per_function.entry(r.function).or_default().merge(&r.stats);
    }
    let mut functions: Vec<(String, MinuteStats)> = per_function.into_iter().collect();
    functions.sort_by(|a, b| b.1.invocations.cmp(&a.1.invocations).then(a.0.cmp(&b.0)));
    let functions: Vec<Value> = functions
        .iter()
        .map(|(name, s)| {
            let mut v = stats_json(s);
            v["function"] = json!(name);
            v["in_flight"] = json!(in_flight.get(name).copied().unwrap_or(0));
            v
        })
        .collect();
    Ok(Json(json!({
        "period": period,
        "points": periods(per_minute, p_ms),
        "functions": functions,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_times() {
        let now = 1_764_864_000_000;
        assert_eq!(parse_since("15m", now).unwrap(), now - 900_000);
        assert_eq!(parse_since("14d", now).unwrap(), now - 14 * 86_400_000);
        assert_eq!(
            parse_since("2025-12-04T16:00:00Z", now).unwrap(),
            1_764_864_000_000
        );
        for bad in ["", "h", "-1h", "1y", "yesterday", "99999999d"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_merge_minutes() {
        let s = |n: u64, ms: f64| {
            let mut s = MinuteStats {
                invocations: n,
                max_concurrency: n,
                ..Default::default()
            };
            for _ in 0..n {
                s.durations.record_ms(ms);
            }
            s
        };
        let p = periods(
            vec![(0, s(1, 1.0)), (60_000, s(3, 100.0)), (120_000, s(2, 1.0))],
            120_000,
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0]["t"], 0);
        assert_eq!(p[0]["invocations"], 4);
        assert_eq!(p[0]["max_concurrency"], 3);
        assert!(p[0]["duration_p99_ms"].as_f64().unwrap() > 90.0);
        assert_eq!(p[1]["t"], 120_000);
        assert!(p[1]["duration_p50_ms"].as_f64().unwrap() < 1.1);
    }
}
