//! A bucket's lifecycle configuration (`PutBucketLifecycleConfiguration`): rules that
//! expire objects and abort incomplete multipart uploads, applied by
//! [`crate::Objects::apply_lifecycle`].
//!
//! Nimbus has one storage class and no versioning, so transitions, noncurrent-version
//! actions and `ExpiredObjectDeleteMarker` are refused (`NotImplemented`, by the S3 layer).
//!
//! **When an object expires** (as S3): at the first midnight UTC at least `Days` days
//! after its last-modified time (`ceil_to_midnight(last_modified + Days × 24 h)`); with
//! `Date`, every matching object expires from that date (midnight UTC) on. An upload is
//! aborted at the first midnight UTC at least `DaysAfterInitiation` days after it started.

use crate::model::ObjectMeta;
use crate::{ObjectError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most rules a configuration may have (S3's limit).
pub const MAX_LIFECYCLE_RULES: usize = 1000;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Which objects a rule applies to. `legacy` is the old top-level `<Prefix>` form and
/// `and` the `<Filter><And>` form, kept so the configuration reads back as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleFilter {
    #[serde(default)]
    pub legacy: bool,
    #[serde(default)]
    pub and: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Every one must be on the object (`Tag`, or the `Tag`s of `And`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<u64>,
}

impl LifecycleFilter {
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }

    /// Whether the filter selects `obj` (prefix, every tag, sizes strictly within bounds).
    pub fn matches(&self, obj: &ObjectMeta) -> bool {
        obj.key.starts_with(self.prefix())
            && self
                .tags
                .iter()
                .all(|(k, v)| obj.attrs.tags.get(k) == Some(v))
            && self.size_greater_than.is_none_or(|n| obj.size > n)
            && self.size_less_than.is_none_or(|n| obj.size < n)
    }
}

/// An `Expiration` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiration {
    /// `Days` after the object's last-modified time, rounded up to midnight UTC.
    Days(u32),
    /// From this instant (ms since the epoch, a midnight UTC) on.
    Date(i64),
}

/// One lifecycle `Rule`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// Generated when the request has none, as S3.
    pub id: String,
    pub enabled: bool,
    #[serde(default)]
    pub filter: LifecycleFilter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Expiration>,
    /// `AbortIncompleteMultipartUpload` `DaysAfterInitiation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_upload_days: Option<u32>,
}

/// A bucket's lifecycle configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleConfig {
    pub rules: Vec<LifecycleRule>,
}

/// The first midnight UTC at or after `ms`.
pub fn ceil_to_midnight(ms: i64) -> i64 {
    (ms + DAY_MS - 1).div_euclid(DAY_MS) * DAY_MS
}

/// When something made at `created_ms` is due under a `days` rule (S3's rounding).
pub fn due_after_days(created_ms: i64, days: u32) -> i64 {
    ceil_to_midnight(created_ms + i64::from(days) * DAY_MS)
}

/// How many objects and uploads one [`crate::Objects::apply_lifecycle`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleCounts {
    pub expired: usize,
    pub aborted: usize,
}

impl LifecycleRule {
    /// Whether this rule expires `obj` at `now_ms`.
    pub fn expires(&self, obj: &ObjectMeta, now_ms: i64) -> bool {
        if !self.enabled || !self.filter.matches(obj) {
            return false;
        }
        match self.expiration {
            Some(Expiration::Days(d)) => due_after_days(obj.last_modified_ms, d) <= now_ms,
            Some(Expiration::Date(at)) => at <= now_ms,
            None => false,
        }
    }

    /// Whether this rule aborts an upload of `key` started at `created_ms`, at `now_ms`.
    pub fn aborts(&self, key: &str, created_ms: i64, now_ms: i64) -> bool {
        self.enabled
            && key.starts_with(self.filter.prefix())
            && self
                .abort_upload_days
                .is_some_and(|d| due_after_days(created_ms, d) <= now_ms)
    }
}

fn invalid(msg: impl Into<String>) -> ObjectError {
    ObjectError::InvalidArgument(msg.into())
}

impl LifecycleConfig {
    /// Checks (and completes: generated IDs) the configuration as S3 does.
    pub fn validate(&mut self) -> Result<()> {
        if self.rules.is_empty() {
            return Err(ObjectError::MalformedXml(
                "the lifecycle configuration must have at least one Rule".into(),
            ));
        }
        if self.rules.len() > MAX_LIFECYCLE_RULES {
            return Err(invalid(format!(
                "the lifecycle configuration has {} rules: at most {MAX_LIFECYCLE_RULES} are \
                 allowed",
                self.rules.len()
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for r in &mut self.rules {
            if r.id.is_empty() {
                r.id = uuid::Uuid::new_v4().simple().to_string();
            }
            if r.id.chars().count() > 255 {
                return Err(invalid("ID length should not exceed allowed limit of 255"));
            }
            if !ids.insert(r.id.clone()) {
                return Err(invalid(
                    "Rule ID must be unique. Found same ID for more than one rule",
                ));
            }
            if r.expiration.is_none() && r.abort_upload_days.is_none() {
                return Err(ObjectError::InvalidRequest(
                    "At least one action needs to be specified in a rule".into(),
                ));
            }
            match r.expiration {
                Some(Expiration::Days(0)) => {
                    return Err(invalid(
                        "'Days' for Expiration action must be a positive integer",
                    ))
                }
                Some(Expiration::Date(ms)) if ms.rem_euclid(DAY_MS) != 0 => {
                    return Err(invalid("'Date' must be at midnight GMT"))
                }
                _ => {}
            }
            if r.abort_upload_days == Some(0) {
                return Err(invalid(
                    "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a \
                     positive integer",
                ));
            }
            let f = &r.filter;
            if r.abort_upload_days.is_some()
                && (!f.tags.is_empty()
                    || f.size_greater_than.is_some()
                    || f.size_less_than.is_some())
            {
                return Err(ObjectError::InvalidRequest(
                    "AbortIncompleteMultipartUpload cannot be specified with Tags or object \
                     size filters"
                        .into(),
                ));
            }
            let mut keys = BTreeMap::new();
            for (k, v) in &f.tags {
                if keys.insert(k, v).is_some() {
                    return Err(invalid("Duplicate Tag Keys are not allowed."));
                }
            }
            if let (Some(gt), Some(lt)) = (f.size_greater_than, f.size_less_than) {
                if lt <= gt {
                    return Err(invalid(
                        "ObjectSizeLessThan must be greater than ObjectSizeGreaterThan",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectAttrs;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn obj(key: &str, modified: i64, tags: &[(&str, &str)], size: u64) -> ObjectMeta {
        ObjectMeta {
            bucket: "b".into(),
            key: key.into(),
            sha256: String::new(),
            size,
            etag: String::new(),
            last_modified_ms: modified,
            attrs: ObjectAttrs {
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            parts: None,
            part_sizes: Vec::new(),
            checksum: None,
        }
    }

    #[test]
    fn expiry_is_the_first_midnight_after_the_days() {
        assert_eq!(T0 % DAY_MS, 0);
        // Created 10:30 on Jan 1, 1 day: due at midnight starting Jan 3.
        let created = T0 + 10 * 3600 * 1000 + 30 * 60 * 1000;
        assert_eq!(due_after_days(created, 1), T0 + 2 * DAY_MS);
        // Created exactly at midnight: due exactly Days later.
        assert_eq!(due_after_days(T0, 1), T0 + DAY_MS);
        assert_eq!(due_after_days(T0 + 1, 30), T0 + 31 * DAY_MS);
        let r = LifecycleRule {
            id: "r".into(),
            enabled: true,
            expiration: Some(Expiration::Days(1)),
            ..Default::default()
        };
        let o = obj("k", created, &[], 1);
        assert!(!r.expires(&o, T0 + 2 * DAY_MS - 1));
        assert!(r.expires(&o, T0 + 2 * DAY_MS));
        let off = LifecycleRule {
            enabled: false,
            ..r.clone()
        };
        assert!(!off.expires(&o, T0 + 100 * DAY_MS));
        let dated = LifecycleRule {
            expiration: Some(Expiration::Date(T0 + 5 * DAY_MS)),
            ..r
        };
        assert!(!dated.expires(&o, T0 + 5 * DAY_MS - 1));
        assert!(dated.expires(&o, T0 + 5 * DAY_MS));
    }

    #[test]
    fn filters_match_prefix_tags_and_sizes() {
        let f = LifecycleFilter {
            and: true,
            prefix: Some("logs/".into()),
            tags: vec![("tmp".into(), "1".into())],
            size_greater_than: Some(10),
            size_less_than: Some(100),
            ..Default::default()
        };
        assert!(f.matches(&obj("logs/a", T0, &[("tmp", "1"), ("x", "y")], 50)));
        assert!(!f.matches(&obj("logs/a", T0, &[("tmp", "2")], 50)));
        assert!(!f.matches(&obj("data/a", T0, &[("tmp", "1")], 50)));
        assert!(!f.matches(&obj("logs/a", T0, &[("tmp", "1")], 10)));
        assert!(!f.matches(&obj("logs/a", T0, &[("tmp", "1")], 100)));
        assert!(LifecycleFilter::default().matches(&obj("anything", T0, &[], 0)));
    }

    #[test]
    fn validation_follows_s3() {
        let rule = |id: &str, exp: Option<Expiration>, abort: Option<u32>| LifecycleRule {
            id: id.into(),
            enabled: true,
            expiration: exp,
            abort_upload_days: abort,
            ..Default::default()
        };
        let check = |rules: Vec<LifecycleRule>| LifecycleConfig { rules }.validate();
        assert!(matches!(check(vec![]), Err(ObjectError::MalformedXml(_))));
        assert!(matches!(
            check(vec![rule("a", None, None)]),
            Err(ObjectError::InvalidRequest(_))
        ));
        assert!(matches!(
            check(vec![rule("a", Some(Expiration::Days(0)), None)]),
            Err(ObjectError::InvalidArgument(_))
        ));
        assert!(matches!(
            check(vec![rule("a", Some(Expiration::Date(T0 + 1)), None)]),
            Err(ObjectError::InvalidArgument(_))
        ));
        assert!(matches!(
            check(vec![rule("a", None, Some(0))]),
            Err(ObjectError::InvalidArgument(_))
        ));
        assert!(matches!(
            check(vec![
                rule("a", Some(Expiration::Days(1)), None),
                rule("a", None, Some(1))
            ]),
            Err(ObjectError::InvalidArgument(_))
        ));
        let mut tagged = rule("a", None, Some(1));
        tagged.filter.tags = vec![("k".into(), "v".into())];
        assert!(matches!(
            check(vec![tagged]),
            Err(ObjectError::InvalidRequest(_))
        ));
        let mut c = LifecycleConfig {
            rules: vec![rule("", Some(Expiration::Date(T0)), Some(7))],
        };
        c.validate().unwrap();
        assert_eq!(c.rules[0].id.len(), 32, "generated");
    }
}
