//! A bucket's notification configuration (`PutBucketNotificationConfiguration`): function
//! and queue targets, each with its event names and key filter, and EventBridge on or off.
//! Validated as S3 validates it; errors are `InvalidArgument` with S3's wording.

use super::event::EventKind;
use super::target::Target;
use crate::{ObjectError, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Event names a configuration may name (shared with the manifest's triggers).
const SUPPORTED: &[&str] = nimbus_core::s3::NOTIFICATION_EVENTS;

/// S3 event families Nimbus never produces (no restores, replication, lifecycle transitions, storage
/// classes, ACLs or annotations): refused rather than accepted and never delivered.
const NOT_PRODUCED: &[&str] = &[
    "s3:ObjectRestore:",
    "s3:ReducedRedundancyLostObject",
    "s3:Replication:",
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
    "LifecycleExpiration:Delete",
    "LifecycleExpiration:DeleteMarkerCreated",
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
            if value.is_empty() {
                return Err(invalid("filter value cannot be empty"));
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
             (supported: s3:ObjectCreated:*, s3:ObjectRemoved:*, s3:ObjectTagging:*, s3:LifecycleExpiration:* and their members)"
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

#[cfg(test)]
mod tests {
    use super::*;

    const FN: &str = "arn:aws:lambda:us-east-1:000000000000:function:thumbs";
    const Q: &str = "arn:aws:sqs:us-east-1:000000000000:uploads";

    fn target(
        arn: &str,
        events: &[&str],
        prefix: Option<&str>,
        suffix: Option<&str>,
    ) -> TargetConfig {
        TargetConfig {
            id: String::new(),
            arn: arn.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            filter: KeyFilter {
                prefix: prefix.map(str::to_string),
                suffix: suffix.map(str::to_string),
            },
        }
    }

    fn err(r: Result<NotificationConfig>) -> String {
        match r {
            Err(ObjectError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn event_names_match_exactly_or_by_family() {
        assert!(event_matches("s3:ObjectCreated:*", "ObjectCreated:Put"));
        assert!(event_matches(
            "s3:ObjectCreated:*",
            "ObjectCreated:CompleteMultipartUpload"
        ));
        assert!(event_matches("s3:ObjectCreated:Copy", "ObjectCreated:Copy"));
        assert!(!event_matches("s3:ObjectCreated:Copy", "ObjectCreated:Put"));
        assert!(!event_matches("s3:ObjectCreated:*", "ObjectRemoved:Delete"));
        assert!(event_matches("s3:ObjectRemoved:*", "ObjectRemoved:Delete"));
        assert!(event_matches("s3:ObjectTagging:*", "ObjectTagging:Delete"));
        assert!(
            !event_matches("ObjectCreated:Put", "ObjectCreated:Put"),
            "needs s3:"
        );
    }

    #[test]
    fn key_filters_need_both_prefix_and_suffix() {
        let f = KeyFilter::from_rules([("prefix", "img/"), ("Suffix", ".jpg")]).unwrap();
        assert!(f.matches("img/cat.jpg"));
        assert!(!f.matches("img/cat.png"));
        assert!(!f.matches("doc/cat.jpg"));
        assert!(!f.matches("IMG/cat.jpg"), "case-sensitive, as S3");
        assert!(KeyFilter::default().matches("anything"));
        assert_eq!(f.rules(), vec![("Prefix", "img/"), ("Suffix", ".jpg")]);
        let c = target(FN, &["s3:ObjectCreated:*"], Some("img/"), None);
        assert!(c.matches(EventKind::Put, "img/a"));
        assert!(c.matches(EventKind::Copy, "img/a"));
        assert!(!c.matches(EventKind::Delete, "img/a"));
        assert!(!c.matches(EventKind::Put, "doc/a"));
    }

    #[test]
    fn filter_rules_are_validated_as_s3_does() {
        let e = KeyFilter::from_rules([("prefix", "a"), ("prefix", "b")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot specify more than one prefix rule in a filter."
        );
        let e = KeyFilter::from_rules([("suffix", "a"), ("SUFFIX", "b")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot specify more than one suffix rule in a filter."
        );
        let e = KeyFilter::from_rules([("contains", "a")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "filter rule name must be either prefix or suffix"
        );
        let e = KeyFilter::from_rules([("prefix", "")]).unwrap_err();
        assert_eq!(e.to_string(), "filter value cannot be empty");
        let long = "x".repeat(1025);
        assert!(KeyFilter::from_rules([("prefix", long.as_str())]).is_err());
    }

    #[test]
    fn configurations_are_validated() {
        let cfg = |functions: Vec<TargetConfig>, queues: Vec<TargetConfig>| NotificationConfig {
            functions,
            queues,
            event_bridge: false,
        };
        let ok = cfg(
            vec![target(FN, &["s3:ObjectCreated:*"], Some("img/"), None)],
            vec![target(Q, &["s3:ObjectRemoved:Delete"], None, None)],
        )
        .validate()
        .unwrap();
        assert!(!ok.functions[0].id.is_empty(), "an id is generated");
        assert_ne!(ok.functions[0].id, ok.queues[0].id);

        let m = err(cfg(
            vec![target(FN, &["s3:ObjectCreated:Bogus"], None, None)],
            vec![],
        )
        .validate());
        assert!(
            m.starts_with("The event is not supported for notifications"),
            "{m}"
        );
        let m = err(cfg(
            vec![target(FN, &["s3:ObjectRestore:*"], None, None)],
            vec![],
        )
        .validate());
        assert!(
            m.contains("Nimbus does not produce s3:ObjectRestore:*"),
            "{m}"
        );
        let m = err(cfg(vec![target(FN, &[], None, None)], vec![]).validate());
        assert!(m.contains("names no event"), "{m}");

        for bad in [
            "thumbs",
            "arn:aws:lambda:us-east-1:000000000000:thumbs",
            "arn:aws:lambda:us-east-1:0000:function:thumbs",
            "arn:aws:lambda::000000000000:function:thumbs",
            "arn:aws:lambda:us-east-1:000000000000:function:bad name",
            "arn:aws:lambda:us-east-1:000000000000:function:f:bad/q",
            "arn:aws:sqs:us-east-1:000000000000:q",
        ] {
            let m = err(cfg(
                vec![target(bad, &["s3:ObjectCreated:*"], None, None)],
                vec![],
            )
            .validate());
            assert!(m.starts_with("The ARN could not be parsed"), "{bad}: {m}");
        }
        for bad in [
            "arn:aws:sqs:us-east-1:000000000000:",
            "arn:aws:sqs:us-east-1:000000000000:a:b",
            "arn:aws:lambda:us-east-1:000000000000:function:f",
        ] {
            let m = err(cfg(
                vec![],
                vec![target(bad, &["s3:ObjectCreated:*"], None, None)],
            )
            .validate());
            assert!(m.starts_with("The ARN could not be parsed"), "{bad}: {m}");
        }
        let m = err(cfg(
            vec![],
            vec![target(
                "arn:aws:sqs:us-east-1:000000000000:q.fifo",
                &["s3:ObjectCreated:*"],
                None,
                None,
            )],
        )
        .validate());
        assert!(m.contains("FIFO"), "{m}");
    }

    #[test]
    fn overlapping_configurations_are_refused() {
        let overlap = |a: TargetConfig, b: TargetConfig| {
            NotificationConfig {
                functions: vec![a],
                queues: vec![b],
                event_bridge: false,
            }
            .validate()
            .is_err()
        };
        // Same event, filters a key could satisfy both of.
        assert!(overlap(
            target(FN, &["s3:ObjectCreated:*"], Some("img/"), None),
            target(Q, &["s3:ObjectCreated:Put"], Some("img/raw/"), None),
        ));
        assert!(overlap(
            target(FN, &["s3:ObjectCreated:Put"], None, Some(".jpg")),
            target(Q, &["s3:ObjectCreated:Put"], None, None),
        ));
        // Disjoint prefixes, disjoint suffixes or disjoint events do not overlap.
        assert!(!overlap(
            target(FN, &["s3:ObjectCreated:*"], Some("img/"), None),
            target(Q, &["s3:ObjectCreated:*"], Some("doc/"), None),
        ));
        assert!(!overlap(
            target(FN, &["s3:ObjectCreated:*"], None, Some(".jpg")),
            target(Q, &["s3:ObjectCreated:*"], None, Some(".png")),
        ));
        assert!(!overlap(
            target(FN, &["s3:ObjectCreated:*"], None, None),
            target(Q, &["s3:ObjectRemoved:*"], None, None),
        ));
    }

    #[test]
    fn targets_for_an_event() {
        let c = NotificationConfig {
            functions: vec![TargetConfig {
                id: "f1".into(),
                ..target(
                    "arn:aws:lambda:us-east-1:000000000000:function:thumbs:live",
                    &["s3:ObjectCreated:*"],
                    None,
                    Some(".jpg"),
                )
            }],
            queues: vec![TargetConfig {
                id: "q1".into(),
                ..target(Q, &["s3:ObjectRemoved:*"], None, None)
            }],
            event_bridge: true,
        };
        let t = c.targets_for(EventKind::Put, "a.jpg");
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            (
                Target::Function {
                    arn: "arn:aws:lambda:us-east-1:000000000000:function:thumbs:live".into(),
                    name: "thumbs".into(),
                    qualifier: Some("live".into()),
                },
                Some("f1".into())
            )
        );
        assert_eq!(t[1], (Target::EventBridge, None));
        let t = c.targets_for(EventKind::Put, "a.png");
        assert_eq!(
            t,
            vec![(Target::EventBridge, None)],
            "EventBridge gets every event"
        );
        let t = c.targets_for(EventKind::Delete, "a.png");
        assert_eq!(
            t[0],
            (
                Target::Queue {
                    arn: Q.into(),
                    name: "uploads".into()
                },
                Some("q1".into())
            )
        );
    }
}
