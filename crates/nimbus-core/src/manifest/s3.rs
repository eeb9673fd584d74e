//! `[[functions.NAME.s3]]`: bucket notifications that invoke the function.
//!
//! ```toml
//! [[functions.thumbs.s3]]
//! bucket = "uploads"
//! events = ["s3:ObjectCreated:*"]   # the default
//! prefix = "in/"                    # optional key filters
//! suffix = ".jpg"
//! id = "jpegs"                      # optional; default: the entry's position, 1, 2, …
//! ```
//!
//! `nimbus deploy` creates the bucket when missing and sets the function's configurations
//! in it; their S3 `Id` is `nimbus:FUNCTION:ID` ([`managed_id_prefix`]), by which a later
//! deploy replaces exactly them (and removes them when the section is gone) while keeping
//! configurations set through the S3 API.

use crate::CoreError;
use serde::Deserialize;

/// The longest `id` of an entry.
const MAX_ID: usize = 64;
/// The longest prefix or suffix (S3's longest key).
const MAX_FILTER: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3Trigger {
    bucket: String,
    events: Option<Vec<String>>,
    prefix: Option<String>,
    suffix: Option<String>,
    id: Option<String>,
}

/// One bucket notification of a function, from its `[[functions.NAME.s3]]` entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestS3Trigger {
    /// The function invoked.
    pub function: String,
    /// The alias invoked (the function's `alias`, or implied by `provisioned_concurrency`).
    pub qualifier: Option<String>,
    pub bucket: String,
    /// The entry's id within the function (`id`, or its 1-based position).
    pub id: String,
    /// S3 event names (`s3:ObjectCreated:*`, …).
    pub events: Vec<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

/// The S3 configuration `Id` prefix of `function`'s manifest-managed configurations
/// (`:` appears in no function name, so no function's prefix starts another's).
pub fn managed_id_prefix(function: &str) -> String {
    format!("nimbus:{function}:")
}

/// Whether `id` is a valid entry id: 1-64 letters, digits, `-` or `_`.
pub fn valid_trigger_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ManifestS3Trigger {
    /// One entry of the body of `PUT /v1/buckets/{bucket}/notifications/functions/{function}`.
    pub fn api_entry(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "id": self.id, "events": self.events });
        if let Some(p) = &self.prefix {
            v["prefix"] = p.clone().into();
        }
        if let Some(s) = &self.suffix {
            v["suffix"] = s.clone().into();
        }
        v
    }
}

/// Validates a function's entries.
pub(super) fn parse_triggers(
    function: &str,
    qualifier: Option<&str>,
    raw: Vec<RawS3Trigger>,
) -> Result<Vec<ManifestS3Trigger>, CoreError> {
    let mut out: Vec<ManifestS3Trigger> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let ctx = |m: String| {
            CoreError::InvalidManifest(format!("functions.{function}.s3[{}]: {m}", i + 1))
        };
        crate::s3::check_bucket_name(&t.bucket)
            .map_err(|why| ctx(format!("bucket {:?} {why}", t.bucket)))?;
        let events = t
            .events
            .unwrap_or_else(|| vec!["s3:ObjectCreated:*".to_string()]);
        if events.is_empty() {
            return Err(ctx(
                "events is empty: name at least one (default [\"s3:ObjectCreated:*\"])".into(),
            ));
        }
        for e in &events {
            if !crate::s3::NOTIFICATION_EVENTS.contains(&e.as_str()) {
                return Err(ctx(format!(
                    "event {e:?} is not one Nimbus produces; use one of {}",
                    crate::s3::NOTIFICATION_EVENTS.join(", ")
                )));
            }
        }
        for (which, v) in [("prefix", &t.prefix), ("suffix", &t.suffix)] {
            match v {
                Some(v) if v.is_empty() => {
                    return Err(ctx(format!(
                        "{which} is empty: leave it out to match any key"
                    )))
                }
                Some(v) if v.len() > MAX_FILTER => {
                    return Err(ctx(format!("{which} is longer than {MAX_FILTER} bytes")))
                }
                _ => {}
            }
        }
        let id = t.id.unwrap_or_else(|| (i + 1).to_string());
        if !valid_trigger_id(&id) {
            return Err(ctx(format!(
                "id {id:?}: use 1-{MAX_ID} letters, digits, '-' or '_'"
            )));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(ctx(format!(
                "id {id:?} is used by an earlier entry (entries without an id take their position)"
            )));
        }
        out.push(ManifestS3Trigger {
            function: function.to_string(),
            qualifier: qualifier.map(str::to_string),
            bucket: t.bucket,
            id,
            events,
            prefix: t.prefix,
            suffix: t.suffix,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_project;

    fn triggers(extra: &str) -> Result<Vec<ManifestS3Trigger>, String> {
        parse_project(&format!(
            "[functions.thumbs]\nruntime = \"python3.12\"\nhandler = \"app.handler\"\n{extra}\n"
        ))
        .map(|p| p.s3_triggers)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn entries_with_defaults_and_filters() {
        let t = triggers(
            "[[functions.thumbs.s3]]\nbucket = \"uploads\"\nprefix = \"in/\"\nsuffix = \".jpg\"\n\
             [[functions.thumbs.s3]]\nbucket = \"uploads\"\nevents = [\"s3:ObjectRemoved:*\", \"s3:ObjectTagging:Put\"]\nid = \"gone\"\n",
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                ManifestS3Trigger {
                    function: "thumbs".into(),
                    qualifier: None,
                    bucket: "uploads".into(),
                    id: "1".into(),
                    events: vec!["s3:ObjectCreated:*".into()],
                    prefix: Some("in/".into()),
                    suffix: Some(".jpg".into()),
                },
                ManifestS3Trigger {
                    function: "thumbs".into(),
                    qualifier: None,
                    bucket: "uploads".into(),
                    id: "gone".into(),
                    events: vec!["s3:ObjectRemoved:*".into(), "s3:ObjectTagging:Put".into()],
                    prefix: None,
                    suffix: None,
                },
            ]
        );
        assert_eq!(
            t[0].api_entry(),
            serde_json::json!({"id": "1", "events": ["s3:ObjectCreated:*"], "prefix": "in/", "suffix": ".jpg"})
        );
        assert_eq!(
            t[1].api_entry(),
            serde_json::json!({"id": "gone", "events": ["s3:ObjectRemoved:*", "s3:ObjectTagging:Put"]})
        );
        assert!(triggers("").unwrap().is_empty(), "no section, no triggers");
    }

    #[test]
    fn triggers_invoke_the_functions_alias() {
        let t = triggers(
            "provisioned_concurrency = 1\n[[functions.thumbs.s3]]\nbucket = \"uploads\"\n",
        )
        .unwrap();
        assert_eq!(t[0].qualifier.as_deref(), Some("live"));
        let t =
            triggers("alias = \"prod\"\n[[functions.thumbs.s3]]\nbucket = \"uploads\"\n").unwrap();
        assert_eq!(t[0].qualifier.as_deref(), Some("prod"));
    }

    #[test]
    fn bad_entries_are_refused_with_their_position() {
        let bad = |entry: &str| {
            triggers(&format!(
                "[[functions.thumbs.s3]]\nbucket = \"uploads\"\n[[functions.thumbs.s3]]\n{entry}\n"
            ))
            .unwrap_err()
        };
        let e = bad("bucket = \"Uploads\"");
        assert!(
            e.contains("functions.thumbs.s3[2]: bucket \"Uploads\" may contain only lowercase"),
            "{e}"
        );
        let e = bad("bucket = \"ab\"");
        assert!(e.contains("must be 3 to 63 characters long"), "{e}");
        let e = bad("bucket = \"192.168.1.1\"");
        assert!(e.contains("IP address"), "{e}");
        let e = bad("bucket = \"b22\"\nevents = []");
        assert!(e.contains("events is empty"), "{e}");
        let e = bad("bucket = \"b22\"\nevents = [\"s3:ObjectCreated:Bogus\"]");
        assert!(e.contains("event \"s3:ObjectCreated:Bogus\" is not one Nimbus produces; use one of s3:ObjectCreated:*"), "{e}");
        let e = bad("bucket = \"b22\"\nevents = [\"s3:ObjectRestore:*\"]");
        assert!(e.contains("not one Nimbus produces"), "{e}");
        let e = bad("bucket = \"b22\"\nprefix = \"\"");
        assert!(e.contains("prefix is empty"), "{e}");
        let e = bad(&format!(
            "bucket = \"b22\"\nsuffix = \"{}\"",
            "x".repeat(1025)
        ));
        assert!(e.contains("suffix is longer than 1024 bytes"), "{e}");
        let e = bad("bucket = \"b22\"\nid = \"has space\"");
        assert!(e.contains("id \"has space\": use 1-64 letters"), "{e}");
        let e = bad("bucket = \"b22\"\nid = \"1\"");
        assert!(e.contains("id \"1\" is used by an earlier entry"), "{e}");
        let e = bad("bucket = \"b22\"\nqueue = \"x\"");
        assert!(e.contains("unknown field `queue`"), "{e}");
        let e = bad("prefix = \"in/\"");
        assert!(e.contains("missing field `bucket`"), "{e}");
    }

    #[test]
    fn managed_ids_do_not_collide_across_functions() {
        assert_eq!(managed_id_prefix("thumbs"), "nimbus:thumbs:");
        let other = format!("{}1", managed_id_prefix("thumbs-x"));
        assert!(!other.starts_with(&managed_id_prefix("thumbs")));
        assert!(valid_trigger_id("a-b_9"));
        assert!(!valid_trigger_id(""));
        assert!(!valid_trigger_id("a:b"));
        assert!(!valid_trigger_id(&"a".repeat(65)));
    }
}
