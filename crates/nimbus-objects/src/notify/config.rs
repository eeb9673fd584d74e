//! A bucket's notification configuration (`PutBucketNotificationConfiguration`): function
//! and queue targets, each with its event names and key filter, and EventBridge on or off.
//! Validated as S3 validates it; errors are `InvalidArgument` with S3's wording.

use super::event::EventKind;
use super::target::Target;
use crate::{ObjectError, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Event names a configuration may name: Nimbus produces every event these match (`Post`
/// and `DeleteMarkerCreated` once POST uploads and versioning exist).
const SUPPORTED: &[&str] = &[
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectTagging:*",
    "s3:ObjectTagging:Put",
    "s3:ObjectTagging:Delete",
];

/// S3 event families Nimbus never produces (no restores, replication, lifecycle, storage
/// classes, ACLs or annotations): refused rather than accepted and never delivered.
const NOT_PRODUCED: &[&str] = &[
    "s3:ObjectRestore:",
    "s3:ReducedRedundancyLostObject",
    "s3:Replication:",
    "s3:LifecycleExpiration:",
    "s3:LifecycleTransition",
    "s3:IntelligentTiering",
    "s3:ObjectAcl:",
    "s3:ObjectAnnotation:",
];

/// Every event name a configured name can match, for the overlap check.
const CONCRETE: &[&str] = &[
    "ObjectCreated:Put",
    "ObjectCreated:Post",
    "ObjectCreated:Copy",
    "ObjectCreated:CompleteMultipartUpload",
    "ObjectRemoved:Delete",
    "ObjectRemoved:DeleteMarkerCreated",
    "ObjectTagging:Put",
    "ObjectTagging:Delete",
];

/// Longest prefix or suffix in a key filter (S3's 1,024, the longest key).
const MAX_FILTER_VALUE: usize = crate::MAX_KEY_BYTES;

/// A bucket's notification configuration. The default (no targets, EventBridge off) is
/// "notifications off".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationConfig {
    /// `LambdaFunctionConfigurations`: each matching event is an asynchronous invocation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<TargetConfig>,
    /// `QueueConfigurations`: each matching event is a message whose body is the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<TargetConfig>,
    /// `EventBridgeConfiguration`: every event goes to the default event bus.
    #[serde(default)]
    pub event_bridge: bool,
}

/// One function or queue configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetConfig {
    /// `Id`: the record's `configurationId`; generated when empty, as S3 does.
    pub id: String,
    /// The function's or the queue's ARN, as configured.
    pub arn: String,
    /// Event names as configured: exact (`s3:ObjectCreated:Put`) or wildcards
    /// (`s3:ObjectCreated:*`).
    pub events: Vec<String>,
    #[serde(default)]
    pub filter: KeyFilter,
}

/// A key filter: at most one prefix and one suffix, both must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

fn invalid(msg: impl Into<String>) -> ObjectError {
    ObjectError::InvalidArgument(msg.into())
}

impl KeyFilter {
    /// The filter from S3's `FilterRule`s (`Name` `prefix` or `suffix`, any case).
    pub fn from_rules<'a>(rules: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut filter = KeyFilter::default();
        for (name, value) in rules {
            let (slot, which) = if name.eq_ignore_ascii_case("prefix") {
                (&mut filter.prefix, "prefix")
            } else if name.eq_ignore_ascii_case("suffix") {
                (&mut filter.suffix, "suffix")
            } else {
                return Err(invalid("filter rule name must be either prefix or suffix"));
            };
            if slot.is_some() {
                return Err(invalid(format!(
                    "Cannot specify more than one {which} rule in a filter."
                )));
            }
            if value.len() > MAX_FILTER_VALUE {
                return Err(invalid(format!(
                    "The {which} of a filter rule must be at most {MAX_FILTER_VALUE} bytes."
                )));
            }
            *slot = Some(value.to_string());
        }
        Ok(filter)
    }

    /// `(name, value)` rules as S3 returns them (`Prefix`, `Suffix`).
    pub fn rules(&self) -> Vec<(&'static str, &str)> {
        let mut rules = Vec::new();
        if let Some(p) = &self.prefix {
            rules.push(("Prefix", p.as_str()));
        }
        if let Some(s) = &self.suffix {
            rules.push(("Suffix", s.as_str()));
        }
        rules
    }

    pub fn matches(&self, key: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.suffix.as_deref().is_none_or(|s| key.ends_with(s))
    }

    /// Whether some key could match both filters (S3's "overlapping" rule).
    fn overlaps(&self, other: &KeyFilter) -> bool {
        let (p1, p2) = (
            self.prefix.as_deref().unwrap_or(""),
            other.prefix.as_deref().unwrap_or(""),
        );
        let (s1, s2) = (
            self.suffix.as_deref().unwrap_or(""),
            other.suffix.as_deref().unwrap_or(""),
        );
        (p1.starts_with(p2) || p2.starts_with(p1)) && (s1.ends_with(s2) || s2.ends_with(s1))
    }
}

/// Whether the configured event name `pattern` (`s3:…`, maybe ending in `:*`) covers the
/// event `name` (`ObjectCreated:Put`, without `s3:`).
pub(crate) fn event_matches(pattern: &str, name: &str) -> bool {
    let Some(pattern) = pattern.strip_prefix("s3:") else {
        return false;
    };
    match pattern.strip_suffix('*') {
        Some(family) => name.starts_with(family),
        None => pattern == name,
    }
}

fn validate_event(name: &str) -> Result<()> {
    if SUPPORTED.contains(&name) {
        return Ok(());
    }
    if NOT_PRODUCED.iter().any(|f| name.starts_with(f)) {
        return Err(invalid(format!(
            "The event is not supported for notifications: Nimbus does not produce {name} events \
             (supported: s3:ObjectCreated:*, s3:ObjectRemoved:*, s3:ObjectTagging:* and their members)"
        )));
    }
    Err(invalid(format!(
        "The event is not supported for notifications: {name:?}"
    )))
}

impl TargetConfig {
    /// Whether this configuration wants `event` on `key`.
    pub fn matches(&self, event: EventKind, key: &str) -> bool {
        self.events.iter().any(|p| event_matches(p, event.name())) && self.filter.matches(key)
    }

    fn validate(&mut self) -> Result<()> {
        if self.events.is_empty() {
            return Err(invalid(format!(
                "The notification configuration for {} names no event.",
                self.arn
            )));
        }
        for e in &self.events {
            validate_event(e)?;
        }
        if self.id.is_empty() {
            // S3's generated ids are base64 of a UUID's text.
            let uuid = uuid::Uuid::new_v4().to_string();
            self.id = base64::engine::general_purpose::STANDARD.encode(uuid);
        }
        Ok(())
    }

    fn shares_event_with(&self, other: &TargetConfig) -> bool {
        CONCRETE.iter().any(|name| {
            self.events.iter().any(|p| event_matches(p, name))
                && other.events.iter().any(|p| event_matches(p, name))
        })
    }
}

impl NotificationConfig {
    /// Notifications off: nothing to record.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty() && self.queues.is_empty() && !self.event_bridge
    }

    /// Checks the configuration as S3 does (event names, ARNs, filters, overlaps) and fills
    /// in missing ids.
    pub fn validate(mut self) -> Result<Self> {
        for f in &mut self.functions {
            Target::function(&f.arn)?;
            f.validate()?;
        }
        for q in &mut self.queues {
            Target::queue(&q.arn)?;
            q.validate()?;
        }
        let all: Vec<&TargetConfig> = self.functions.iter().chain(&self.queues).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.shares_event_with(b) && a.filter.overlaps(&b.filter) {
                    return Err(invalid(
                        "Configuration is ambiguously defined. Cannot have overlapping suffixes \
                         in two rules if the prefixes are overlapping for the same event type.",
                    ));
                }
            }
        }
        Ok(self)
    }

    /// Every target that wants `event` on `key`, with the configuration id its records
    /// carry (`None` for EventBridge, which gets every event).
    pub fn targets_for(&self, event: EventKind, key: &str) -> Vec<(Target, Option<String>)> {
        let mut out = Vec::new();
        let configured = self
            .functions
            .iter()
            .map(|c| (c, Target::function(&c.arn)))
            .chain(self.queues.iter().map(|c| (c, Target::queue(&c.arn))));
        for (c, target) in configured {
            if !c.matches(event, key) {
                continue;
            }
            match target {
                Ok(target) => out.push((target, Some(c.id.clone()))),
                // Stored configurations were validated: only a corrupt row gets here.
                Err(e) => {
                    tracing::warn!(arn = %c.arn, error = %e, "skipping a notification target")
                }
            }
        }
        if self.event_bridge {
            out.push((Target::EventBridge, None));
        }
        out
    }
}
