//! A manifest's `[[functions.NAME.s3]]` triggers, applied by `nimbus deploy` and `nimbus up`
//! over the native bucket API (`docs/api.md`, Buckets): each named bucket is created when
//! missing, each function's configurations are set bucket by bucket, and a function's
//! configurations in buckets its manifest no longer names are removed. Configurations set
//! through the S3 API, or for functions of other manifests, are left alone.

use crate::client::{ApiError, Client};
use anyhow::{Context, Result};
use nimbus_core::manifest::{managed_id_prefix, ManifestS3Trigger};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Applies `triggers` for the manifest's `functions` (every function it declares, so that
/// one whose section was removed loses its configurations); returns one line per change.
/// Without an object store on the server: nothing to do when there are no triggers, an
/// error saying how to turn it on when there are.
pub async fn apply(
    client: &Client,
    functions: &[String],
    triggers: &[ManifestS3Trigger],
) -> Result<Vec<String>> {
    let listed = client
        .json(client.request(Method::GET, &["v1", "buckets"]))
        .await;
    let listed = match listed {
        Ok(v) => v,
        // No triggers to set: nothing to do on a server without an object store, or for a
        // key that may not list buckets (it could not have set any either).
        Err(e) if triggers.is_empty() && (store_off(&e) || denied(&e)) => return Ok(Vec::new()),
        Err(e) => {
            let names: BTreeSet<&str> = triggers.iter().map(|t| t.function.as_str()).collect();
            let names: Vec<&str> = names.into_iter().collect();
            return Err(e.context(format!(
                "cannot apply the S3 triggers of {}",
                names.join(", ")
            )));
        }
    };
    let existing: BTreeSet<String> = listed["buckets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut wanted: BTreeMap<(&str, &str), Wanted> = BTreeMap::new();
    for t in triggers {
        wanted
            .entry((t.bucket.as_str(), t.function.as_str()))
            .or_insert_with(|| (t.qualifier.as_deref(), Vec::new()))
            .1
            .push(t.api_entry());
    }
    // Stale: a manifest function's configurations in a bucket it no longer names.
    let mut stale = Vec::new();
    for bucket in &existing {
        let config = client
            .json(client.request(Method::GET, &["v1", "buckets", bucket, "notifications"]))
            .await
            .with_context(|| format!("cannot read the notifications of bucket {bucket}"))?;
        let ids: Vec<&str> = config["functions"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["id"].as_str()).collect())
            .unwrap_or_default();
        for f in functions {
            let prefix = managed_id_prefix(f);
            if ids.iter().any(|id| id.starts_with(&prefix))
                && !wanted.contains_key(&(bucket.as_str(), f.as_str()))
            {
                stale.push((bucket.clone(), f.clone()));
            }
        }
    }
    for (bucket, f) in &stale {
        put_configs(client, bucket, f, None, &[]).await?;
        lines.push(format!("s3 triggers of {f} removed from bucket {bucket}"));
    }
    for ((bucket, f), (qualifier, entries)) in &wanted {
        if !existing.contains(*bucket) {
            client
                .send(client.request(Method::PUT, &["v1", "buckets", bucket]))
                .await
                .with_context(|| format!("cannot create bucket {bucket}"))?;
            lines.push(format!("bucket {bucket} created"));
        }
        put_configs(client, bucket, f, *qualifier, entries).await?;
        for e in entries {
            lines.push(format!(
                "s3 trigger: bucket {bucket} ({}) → {f}",
                describe(e)
            ));
        }
    }
    Ok(lines)
}

/// What one function wants in one bucket: the qualifier its notifications invoke and the
/// entries of `PUT /v1/buckets/{bucket}/notifications/functions/{function}`.
type Wanted<'a> = (Option<&'a str>, Vec<Value>);

/// Sets `function`'s configurations in `bucket` (none: removes them).
async fn put_configs(
    client: &Client,
    bucket: &str,
    function: &str,
    qualifier: Option<&str>,
    entries: &[Value],
) -> Result<()> {
    let mut body = json!({ "configurations": entries });
    if let Some(q) = qualifier {
        body["qualifier"] = q.into();
    }
    client
        .send(
            client
                .request(
                    Method::PUT,
                    &[
                        "v1",
                        "buckets",
                        bucket,
                        "notifications",
                        "functions",
                        function,
                    ],
                )
                .json(&body),
        )
        .await
        .with_context(|| format!("cannot set the s3 triggers of {function} on bucket {bucket}"))?;
    Ok(())
}

/// `s3:ObjectCreated:* on in/…​.jpg` for a line.
fn describe(entry: &Value) -> String {
    let events: Vec<&str> = entry["events"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let prefix = entry["prefix"].as_str().unwrap_or("");
    let suffix = entry["suffix"].as_str().unwrap_or("");
    if prefix.is_empty() && suffix.is_empty() {
        events.join(", ")
    } else {
        format!("{} on {prefix}*{suffix}", events.join(", "))
    }
}

/// Whether the server answered that it has no object store (`--s3-listen` off).
fn store_off(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.status == 503 && a.kind == "ServiceUnavailableException")
}

/// Whether the key may not do this (`AccessDeniedException`).
fn denied(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.kind == "AccessDeniedException")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_describe_events_and_filters() {
        assert_eq!(
            describe(
                &json!({"id": "1", "events": ["s3:ObjectCreated:*"], "prefix": "in/", "suffix": ".jpg"})
            ),
            "s3:ObjectCreated:* on in/*.jpg"
        );
        assert_eq!(
            describe(&json!({"id": "1", "events": ["s3:ObjectRemoved:*", "s3:ObjectTagging:Put"]})),
            "s3:ObjectRemoved:*, s3:ObjectTagging:Put"
        );
    }

    #[test]
    fn only_a_503_service_unavailable_means_the_store_is_off() {
        let err = |status, kind: &str| {
            anyhow::Error::new(ApiError {
                status,
                kind: kind.into(),
                message: "m".into(),
            })
        };
        assert!(store_off(&err(503, "ServiceUnavailableException")));
        assert!(!store_off(&err(404, "ResourceNotFoundException")));
        assert!(!store_off(&err(503, "HTTP 503")));
        assert!(!store_off(&anyhow::anyhow!("connection refused")));
    }
}
