//! Alarms over the per-minute history: `/v1/alarms` (list with states, put, get, delete)
//! and the background evaluator, which puts a `Nimbus Alarm State Change` event (shaped
//! like CloudWatch's `CloudWatch Alarm State Change`) on the default bus at every change.

use crate::history::{history, now_ms};
use crate::lambda_api::blocking;
use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use nimbus_core::alarm::validate_alarm_name;
use nimbus_core::arn::{ACCOUNT, REGION};
use nimbus_core::{AlarmSpec, AlarmState};
use nimbus_events::bus::PutEventsEntry;
use nimbus_metrics::MinuteStats;
use nimbus_store::{Alarm, DEFAULT_BUS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The event source and detail type of state changes.
pub const ALARM_SOURCE: &str = "nimbus.alarms";
pub const ALARM_DETAIL_TYPE: &str = "Nimbus Alarm State Change";

pub(crate) fn alarm_arn(name: &str) -> String {
    format!("arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}")
}

/// CloudWatch's state timestamp format, `2019-10-02T17:04:40.985+0000`.
fn timestamp(ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(FORMAT)
        .unwrap_or_default()
}

fn alarm_json(a: &Alarm) -> Value {
    let mut v = serde_json::to_value(&a.spec).unwrap_or_else(|_| json!({}));
    v["name"] = json!(a.name);
    v["arn"] = json!(alarm_arn(&a.name));
    v["datapoints_to_alarm"] = json!(a.spec.datapoints());
    v["state"] = json!(a.state.as_str());
    v["state_reason"] = json!(a.reason);
    v["state_updated_ms"] = json!(a.state_ms);
    v["created_ms"] = json!(a.created_ms);
    v
}

/// `GET /v1/alarms`.
pub(crate) async fn list(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let store = history(&gw)?.store.clone();
    let alarms = blocking(move || store.list_alarms()).await?;
    Ok(Json(
        json!({"alarms": alarms.iter().map(alarm_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/alarms/{name}`.
pub(crate) async fn get(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = history(&gw)?.store.clone();
    let a = blocking(move || store.get_alarm(&name)).await?;
    Ok(Json(alarm_json(&a)))
}

/// `PUT /v1/alarms/{name}` with an [`AlarmSpec`] body.
pub(crate) async fn put(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    validate_alarm_name(&name)?;
    let spec: AlarmSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid alarm: {e}")))?;
    spec.validate()?;
    let store = history(&gw)?.store.clone();
    let a = blocking(move || store.put_alarm(&name, &spec, now_ms())).await?;
    info!(alarm = %a.name, function = %a.spec.function, metric = %a.spec.metric, "alarm put");
    Ok(Json(alarm_json(&a)))
}

/// `DELETE /v1/alarms/{name}`.
pub(crate) async fn delete(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = history(&gw)?.store.clone();
    blocking(move || store.delete_alarm(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The value of `metric` over one period, `None` when missing.
fn value(metric: &str, s: Option<&MinuteStats>) -> Option<f64> {
    let s = s.filter(|s| !s.is_empty())?;
    let ran = (s.invocations > 0).then_some(());
    Some(match metric {
        "invocations" => s.invocations as f64,
        "errors" => s.errors as f64,
        "error_rate" => ran.map(|_| s.errors as f64 * 100.0 / s.invocations as f64)?,
        "throttles" => s.throttles as f64,
        "timeouts" => s.timeouts as f64,
        "cold_starts" => s.cold_starts as f64,
        "max_concurrency" => s.max_concurrency as f64,
        "duration_p50" => s.durations.percentile_ms(0.5)?,
        "duration_p90" => s.durations.percentile_ms(0.9)?,
        "duration_p99" => s.durations.percentile_ms(0.99)?,
        _ => return None,
    })
}

impl Gateway {
    /// Evaluates every alarm periodically (every 10 s, or a quarter of the test hook's
    /// minute); runs until aborted.
    pub async fn run_alarms(self: Arc<Self>) {
        let Some(h) = self.history.get() else {
            return;
        };
        let every = Duration::from_millis((h.minute_ms / 4).clamp(50, 10_000) as u64);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.evaluate_alarms().await {
                warn!("cannot evaluate the alarms: {e}");
            }
        }
    }

    /// One evaluation of every alarm; state changes are stored and put on the bus.
    pub(crate) async fn evaluate_alarms(&self) -> Result<(), ApiError> {
        let h = history(self)?.clone();
        let store = h.store.clone();
        let alarms = blocking(move || store.list_alarms()).await?;
        if alarms.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // Each alarm looks at its last `evaluation_periods` complete periods, and at the
        // same window shifted onto the current (incomplete) period, which can only make it
        // go to ALARM sooner: a period returns an alarm to OK once it is complete.
        let window = |a: &Alarm| {
            let p = h.period_ms(a.spec.period);
            let current = now.div_euclid(p) * p;
            (
                p,
                current,
                current - i64::from(a.spec.evaluation_periods) * p,
            )
        };
        let mut from: HashMap<&str, i64> = HashMap::new();
        for a in &alarms {
            let f = from.entry(a.spec.function.as_str()).or_insert(i64::MAX);
            *f = (*f).min(window(a).2);
        }
        let mut minutes: HashMap<&str, Vec<(i64, MinuteStats)>> = HashMap::new();
        for (f, start) in from {
            let (rows, _) = self.minutes_since(Some(f), start).await?;
            minutes.insert(
                f,
                rows.into_iter().map(|r| (r.minute_ms, r.stats)).collect(),
            );
        }
        for a in &alarms {
            let (p, current, start) = window(a);
            let n = a.spec.evaluation_periods as usize;
            let all: Vec<Option<f64>> = if a.spec.metric == "dead_letters" {
                // A gauge read now: every datapoint of the window is this reading.
                let (q, f) = (self.events.queue().clone(), a.spec.function.clone());
                let dead = blocking(move || q.counts(&f)).await?;
                vec![Some(dead.get("dead").copied().unwrap_or(0) as f64); n + 1]
            } else {
                let mut by: BTreeMap<i64, MinuteStats> = BTreeMap::new();
                for (t, s) in minutes.get(a.spec.function.as_str()).into_iter().flatten() {
                    if *t >= start && *t < current + p {
                        by.entry(t.div_euclid(p) * p).or_default().merge(s);
                    }
                }
                (0..=n)
                    .map(|k| value(&a.spec.metric, by.get(&(start + k as i64 * p))))
                    .collect()
            };
            let (complete, live) = (&all[..n], &all[1..]);
            let (mut state, mut reason) = a.spec.evaluate(complete, a.state);
            let mut points = complete;
            let (live_state, live_reason) = a.spec.evaluate(live, a.state);
            if live_state == AlarmState::Alarm {
                (state, reason, points) = (live_state, live_reason, live);
            }
            if state != a.state {
                self.alarm_changed(a, state, &reason, points, now).await?;
            }
        }
        Ok(())
    }

    async fn alarm_changed(
        &self,
        a: &Alarm,
        state: AlarmState,
        reason: &str,
        points: &[Option<f64>],
        now: i64,
    ) -> Result<(), ApiError> {
        let store = history(self)?.store.clone();
        let (name, r) = (a.name.clone(), reason.to_string());
        blocking(move || store.set_alarm_state(&name, state, &r, now)).await?;
        info!(alarm = %a.name, from = a.state.as_str(), to = state.as_str(), "{reason}");
        let Some(bus) = self.bus.get() else {
            return Ok(());
        };
        let s = &a.spec;
        let reason_data = json!({
            "version": "1.0",
            "queryDate": timestamp(now),
            "statistic": s.metric,
            "period": s.period,
            "recentDatapoints": points,
            "threshold": s.threshold,
            "evaluatedDatapoints": points.len(),
        });
        let detail = json!({
            "alarmName": a.name,
            "state": {
                "value": state.as_str(),
                "reason": reason,
                "reasonData": reason_data.to_string(),
                "timestamp": timestamp(now),
            },
            "previousState": {
                "value": a.state.as_str(),
                "reason": a.reason,
                "timestamp": timestamp(a.state_ms),
            },
            "configuration": {
                "description": s.description,
                "metrics": [{
                    "id": "m1",
                    "metricStat": {
                        "metric": {
                            "namespace": "Nimbus/Functions",
                            "name": s.metric,
                            "dimensions": {"FunctionName": s.function},
                        },
                        "period": s.period,
                    },
                    "returnData": true,
                }],
                "comparison": s.comparison,
                "threshold": s.threshold,
                "evaluationPeriods": s.evaluation_periods,
                "datapointsToAlarm": s.datapoints(),
                "treatMissingData": s.treat_missing_data,
            },
        });
        let entry = PutEventsEntry {
            source: Some(ALARM_SOURCE.into()),
            detail_type: Some(ALARM_DETAIL_TYPE.into()),
            detail: Some(detail.to_string()),
            event_bus_name: None,
            resources: vec![alarm_arn(&a.name)],
            time: None,
        };
        match bus.put_events(DEFAULT_BUS, vec![entry]).await {
            Ok(out) if out.failed_entry_count == 0 => {}
            Ok(out) => {
                warn!(alarm = %a.name, "the state change event was refused: {:?}", out.entries)
            }
            Err(e) => warn!(alarm = %a.name, "cannot put the state change event: {e}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_timestamps() {
        let mut s = MinuteStats {
            invocations: 4,
            errors: 1,
            ..Default::default()
        };
        s.durations.record_ms(10.0);
        assert_eq!(value("error_rate", Some(&s)), Some(25.0));
        assert_eq!(value("errors", Some(&s)), Some(1.0));
        assert!(value("duration_p99", Some(&s)).unwrap() > 9.0);
        assert_eq!(value("errors", None), None);
        let throttled = MinuteStats {
            throttles: 2,
            ..Default::default()
        };
        assert_eq!(value("error_rate", Some(&throttled)), None);
        assert_eq!(value("throttles", Some(&throttled)), Some(2.0));
        assert_eq!(timestamp(1_570_035_880_985), "2019-10-02T17:04:40.985+0000");
    }
}
