//! Reading function logs: `GET /v1/functions/{name}/logs` and `GET /v1/logs` (every
//! function the caller may read the logs of, `nimbus:GetLogs` per function), paged by
//! cursor (`after`/`next`) and filtered by time (`since`, `until`: RFC 3339 or relative
//! `15m`), minimum `level`, `request_id` and `grep`; with `follow=true` a live tail as
//! server-sent events (`data: <LogEntry JSON>` per line, `: keep-alive` every 15 s).

use crate::{ApiError, Caller, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_body::Frame;
use nimbus_core::{arn, FunctionName, LogLevel};
use nimbus_store::{LogPage, LogQuery};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Most lines per page (default 1000).
const PAGE_MAX: i64 = 10_000;
/// How often a live tail looks for new lines (they are committed within 25 ms of being
/// written, so a line reaches the stream well within a second).
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// A comment line at least this often keeps proxies and clients from timing out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query parameters of a log read.
struct LogParams {
    query: LogQuery,
    follow: bool,
    /// The caller set `after` or `since`: a live tail starts there, not at the end.
    from_given: bool,
}

fn params(q: &HashMap<String, String>, now_ms: i64) -> Result<LogParams, ApiError> {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let int = |k: &str, default: i64| -> Result<i64, ApiError> {
        get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::InvalidParameter(format!("{k} must be an integer")))
            })
            .unwrap_or(Ok(default))
    };
    let time = |k: &str| get(k).map(|v| parse_time(k, v, now_ms)).transpose();
    let min_level = get("level")
        .map(|l| {
            LogLevel::parse_loose(l).ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "level {l:?} is not a log level: use trace, debug, info, warn, error or fatal"
                ))
            })
        })
        .transpose()?;
    let follow = match get("follow") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "follow must be true or false, not {other:?}"
            )))
        }
    };
    let query = LogQuery {
        after: int("after", 0)?,
        since_ms: time("since")?,
        until_ms: time("until")?,
        min_level,
        request_id: get("request_id").map(str::to_string),
        grep: get("grep").map(str::to_string),
        limit: int("limit", 1000)?.clamp(1, PAGE_MAX) as usize,
    };
    Ok(LogParams {
        from_given: get("after").is_some() || query.since_ms.is_some(),
        query,
        follow,
    })
}

/// An RFC 3339 time (`2026-12-04T10:00:00Z`) or a duration before now (`30s`, `15m`, `2h`,
/// `7d`), as milliseconds since the epoch.
pub(crate) fn parse_time(field: &str, v: &str, now_ms: i64) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::InvalidParameter(format!(
            "{field} {v:?} is neither an RFC 3339 time (2026-12-04T10:00:00Z) nor a duration \
             before now (30s, 15m, 2h, 7d)"
        ))
    };
    let (num, unit) = v.split_at(v.len().saturating_sub(1));
    if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        return Ok(now_ms.saturating_sub(n.saturating_mul(secs * 1000)));
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `GET /v1/functions/{name}/logs`
pub(crate) async fn function_logs(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = FunctionName::parse(&name)?;
    gw.store.get(&name, None)?;
    let p = params(&q, now_ms())?;
    let span = tracing::info_span!("logs", function = %name, follow = p.follow);
    read(gw, Some(vec![name.to_string()]), p)
        .instrument(span)
        .await
}

/// `GET /v1/logs`: the logs of every function the caller may read them of.
pub(crate) async fn all_logs(
    State(gw): State<Arc<Gateway>>,
    caller: Option<Extension<Caller>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let p = params(&q, now_ms())?;
    let span = tracing::info_span!("logs", function = "*", follow = p.follow);
    async move {
        let functions = readable_functions(&gw, caller.as_ref().map(|c| &c.0)).await?;
        read(gw, functions, p).await
    }
    .instrument(span)
    .await
}

/// The functions whose logs `caller` may read (`None`: every function, auth being off).
async fn readable_functions(
    gw: &Arc<Gateway>,
    caller: Option<&Caller>,
) -> Result<Option<Vec<String>>, ApiError> {
    if !crate::auth::enabled(gw) {
        return Ok(None);
    }
    let Some(caller) = caller else {
        return Err(ApiError::AccessDenied("the request is not signed".into()));
    };
    let store = gw.store.clone();
    let all = crate::lambda_api::blocking(move || store.list()).await?;
    let total = all.len();
    let allowed: Vec<String> = all
        .into_iter()
        .map(|v| v.name.to_string())
        .filter(|n| crate::auth::allows(gw, caller, "nimbus:GetLogs", &arn::function_arn(n, None)))
        .collect();
    if allowed.is_empty() && total > 0 {
        return Err(ApiError::AccessDenied(format!(
            "User: {} is not authorized to perform: nimbus:GetLogs on any function",
            caller.0.user_arn
        )));
    }
    Ok(Some(allowed))
}

async fn read(
    gw: Arc<Gateway>,
    functions: Option<Vec<String>>,
    p: LogParams,
) -> Result<Response, ApiError> {
    if p.follow {
        return follow(gw, functions, p).await;
    }
    let page = query(&gw, functions, p.query).await?;
    Ok(Json(json!({ "logs": page.entries, "next": page.next })).into_response())
}

async fn query(
    gw: &Arc<Gateway>,
    functions: Option<Vec<String>>,
    q: LogQuery,
) -> Result<LogPage, ApiError> {
    let store = gw.store.clone();
    crate::lambda_api::blocking(move || store.query_logs(functions.as_deref(), &q)).await
}

/// The live tail: lines as they are stored, from `after`/`since` or else from now.
async fn follow(
    gw: Arc<Gateway>,
    functions: Option<Vec<String>>,
    p: LogParams,
) -> Result<Response, ApiError> {
    let mut q = p.query;
    if !p.from_given {
        // Start at the end: a read of nothing returns the newest seq as its cursor.
        let end = LogQuery {
            limit: 0,
            ..LogQuery::default()
        };
        q.after = query(&gw, None, end).await?.next;
    }
    let (tx, body) = crate::streaming::channel_body();
    let mut end = gw.tails_end.subscribe();
    tokio::spawn(async move {
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let page = match query(&gw, functions.clone(), q.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("live log tail: {e}");
                    return;
                }
            };
            let full = page.entries.len() >= q.limit;
            for e in &page.entries {
                let Ok(text) = serde_json::to_string(e) else {
                    continue;
                };
                let event = Bytes::from(format!("data: {text}\n\n"));
                if tx.send(Ok(Frame::data(event))).await.is_err() {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            q.after = page.next;
            if full {
                continue;
            }
            if quiet_since.elapsed() >= KEEP_ALIVE {
                let ping = Bytes::from_static(b": keep-alive\n\n");
                if tx.send(Ok(Frame::data(ping))).await.is_err() {
                    return;
                }
                quiet_since = tokio::time::Instant::now();
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
                _ = end.wait_for(|e| *e) => return,
            }
        }
    });
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_relative() {
        let now = 1_764_864_000_000;
        assert_eq!(parse_time("since", "15m", now).unwrap(), now - 900_000);
        assert_eq!(parse_time("since", "2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_time("since", "7d", now).unwrap(), now - 604_800_000);
        assert_eq!(parse_time("since", "30s", now).unwrap(), now - 30_000);
        assert_eq!(
            parse_time("until", "2025-12-04T16:00:00Z", now).unwrap(),
            1_764_864_000_000
        );
        assert_eq!(
            parse_time("until", "2025-12-04T17:00:00.5+01:00", now).unwrap(),
            1_764_864_000_500
        );
        for bad in ["", "15", "m", "-5m", "15y", "yesterday", "2025-12-04"] {
            assert!(parse_time("since", bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_parse_and_refuse_bad_values() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let p = params(
            &q(&[("level", "warn"), ("grep", "x"), ("follow", "true")]),
            0,
        )
        .unwrap();
        assert_eq!(p.query.min_level, Some(LogLevel::Warn));
        assert_eq!(p.query.grep.as_deref(), Some("x"));
        assert_eq!(p.query.limit, 1000);
        assert!(p.follow && !p.from_given);
        let p = params(&q(&[("after", "7"), ("limit", "999999")]), 0).unwrap();
        assert_eq!((p.query.after, p.query.limit), (7, 10_000));
        assert!(p.from_given);
        assert!(params(&q(&[("level", "loud")]), 0).is_err());
        assert!(params(&q(&[("follow", "yes")]), 0).is_err());
        assert!(params(&q(&[("after", "x")]), 0).is_err());
    }
}
