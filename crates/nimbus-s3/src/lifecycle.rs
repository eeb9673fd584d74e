//! `LifecycleConfiguration` between S3's XML shapes (`s3s` DTOs) and the engine's
//! [`LifecycleConfig`]. The XML's structure is checked here (one filter form per rule,
//! `Days` or `Date`); the rules' values are validated by the engine. What Nimbus cannot do
//! (transitions: one storage class; noncurrent versions and delete markers: no versioning)
//! is refused with `NotImplemented`.

use nimbus_objects::{Expiration, LifecycleConfig, LifecycleFilter, LifecycleRule};
use s3s::dto::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    GetBucketLifecycleConfigurationOutput, LifecycleExpiration, LifecycleRule as RuleDto,
    LifecycleRuleAndOperator, LifecycleRuleFilter, Tag, Timestamp,
};
use s3s::{s3_error, S3Result};

/// The engine's configuration from a `PutBucketLifecycleConfiguration` body.
pub(crate) fn config_of(c: Option<BucketLifecycleConfiguration>) -> S3Result<LifecycleConfig> {
    let Some(c) = c else {
        return Err(s3_error!(
            MalformedXML,
            "the request needs a LifecycleConfiguration body"
        ));
    };
    let rules = c.rules.into_iter().map(rule_of).collect::<S3Result<_>>()?;
    Ok(LifecycleConfig { rules })
}

fn not_implemented(what: &str) -> s3s::S3Error {
    s3_error!(
        NotImplemented,
        "{what} is not supported: Nimbus has one storage class and no versioning (lifecycle \
         rules may use Expiration with Days or Date, and AbortIncompleteMultipartUpload)"
    )
}

fn rule_of(r: RuleDto) -> S3Result<LifecycleRule> {
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(not_implemented("Transition"));
    }
    if r.noncurrent_version_transitions
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        return Err(not_implemented("NoncurrentVersionTransition"));
    }
    if r.noncurrent_version_expiration.is_some() {
        return Err(not_implemented("NoncurrentVersionExpiration"));
    }
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        other => {
            return Err(s3_error!(
                MalformedXML,
                "Status must be Enabled or Disabled, not {other:?}"
            ))
        }
    };
    let filter = match (r.prefix, r.filter) {
        (Some(_), Some(_)) => {
            return Err(s3_error!(
                MalformedXML,
                "a rule has either a Filter or a (legacy) Prefix, not both"
            ))
        }
        (Some(prefix), None) => LifecycleFilter {
            legacy: true,
            prefix: Some(prefix),
            ..Default::default()
        },
        (None, Some(f)) => filter_of(f)?,
        // Neither: S3 requires one of them.
        (None, None) => {
            return Err(s3_error!(
                MalformedXML,
                "a rule needs a Filter (or the legacy Prefix)"
            ))
        }
    };
    let expiration = match r.expiration {
        None => None,
        Some(e) => expiration_of(e)?,
    };
    let abort_upload_days = match r.abort_incomplete_multipart_upload {
        None => None,
        Some(a) => Some(positive(a.days_after_initiation, "DaysAfterInitiation")?),
    };
    Ok(LifecycleRule {
        id: r.id.unwrap_or_default(),
        enabled,
        filter,
        expiration,
        abort_upload_days,
    })
}

/// `Days`/`DaysAfterInitiation`: a positive integer.
fn positive(days: Option<i32>, name: &str) -> S3Result<u32> {
    match days {
        Some(d) if d > 0 => Ok(d as u32),
        _ => Err(s3_error!(
            InvalidArgument,
            "'{name}' must be a positive integer"
        )),
    }
}

fn expiration_of(e: LifecycleExpiration) -> S3Result<Option<Expiration>> {
    if e.expired_object_delete_marker.is_some() {
        return Err(not_implemented("ExpiredObjectDeleteMarker"));
    }
    match (e.days, e.date) {
        (Some(_), Some(_)) => Err(s3_error!(
            MalformedXML,
            "Expiration has either Days or Date, not both"
        )),
        (Some(d), None) => Ok(Some(Expiration::Days(positive(Some(d), "Days")?))),
        (None, Some(date)) => {
            let t = time::OffsetDateTime::from(date);
            let ms = t.unix_timestamp_nanos() / 1_000_000;
            Ok(Some(Expiration::Date(ms as i64)))
        }
        (None, None) => Err(s3_error!(MalformedXML, "Expiration needs Days or Date")),
    }
}

fn tag_of(t: Tag) -> S3Result<(String, String)> {
    match (t.key, t.value) {
        (Some(k), v) => Ok((k, v.unwrap_or_default())),
        (None, _) => Err(s3_error!(MalformedXML, "a Tag needs a Key")),
    }
}

fn size(n: Option<i64>) -> S3Result<Option<u64>> {
    n.map(|n| {
        u64::try_from(n)
            .map_err(|_| s3_error!(InvalidArgument, "object size filters must not be negative"))
    })
    .transpose()
}

fn filter_of(f: LifecycleRuleFilter) -> S3Result<LifecycleFilter> {
    let forms = [
        f.prefix.is_some(),
        f.tag.is_some(),
        f.and.is_some(),
        f.object_size_greater_than.is_some(),
        f.object_size_less_than.is_some(),
    ];
    if forms.iter().filter(|&&x| x).count() > 1 {
        return Err(s3_error!(
            MalformedXML,
            "a Filter has one of Prefix, Tag, ObjectSizeGreaterThan, ObjectSizeLessThan or \
             And (use And to combine them)"
        ));
    }
    if let Some(and) = f.and {
        let tags = and
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(tag_of)
            .collect::<S3Result<Vec<_>>>()?;
        return Ok(LifecycleFilter {
            and: true,
            prefix: and.prefix,
            tags,
            size_greater_than: size(and.object_size_greater_than)?,
            size_less_than: size(and.object_size_less_than)?,
            ..Default::default()
        });
    }
    Ok(LifecycleFilter {
        prefix: f.prefix,
        tags: f.tag.map(tag_of).transpose()?.into_iter().collect(),
        size_greater_than: size(f.object_size_greater_than)?,
        size_less_than: size(f.object_size_less_than)?,
        ..Default::default()
    })
}

fn tag_dto((k, v): &(String, String)) -> Tag {
    Tag {
        key: Some(k.clone()),
        value: Some(v.clone()),
    }
}

fn filter_dto(f: &LifecycleFilter) -> LifecycleRuleFilter {
    let size = |n: Option<u64>| n.map(|n| n as i64);
    if f.and {
        return LifecycleRuleFilter {
            and: Some(LifecycleRuleAndOperator {
                prefix: f.prefix.clone(),
                tags: (!f.tags.is_empty()).then(|| f.tags.iter().map(tag_dto).collect()),
                object_size_greater_than: size(f.size_greater_than),
                object_size_less_than: size(f.size_less_than),
            }),
            ..Default::default()
        };
    }
    LifecycleRuleFilter {
        prefix: f.prefix.clone(),
        tag: f.tags.first().map(tag_dto),
        object_size_greater_than: size(f.size_greater_than),
        object_size_less_than: size(f.size_less_than),
        ..Default::default()
    }
}

/// The `GetBucketLifecycleConfiguration` answer.
pub(crate) fn output_of(c: LifecycleConfig) -> GetBucketLifecycleConfigurationOutput {
    let rules = c
        .rules
        .iter()
        .map(|r| RuleDto {
            id: Some(r.id.clone()),
            status: ExpirationStatus::from(
                if r.enabled {
                    ExpirationStatus::ENABLED
                } else {
                    ExpirationStatus::DISABLED
                }
                .to_string(),
            ),
            prefix: r.filter.legacy.then(|| r.filter.prefix().to_string()),
            filter: (!r.filter.legacy).then(|| filter_dto(&r.filter)),
            expiration: r.expiration.map(|e| match e {
                Expiration::Days(d) => LifecycleExpiration {
                    days: Some(d as i32),
                    ..Default::default()
                },
                Expiration::Date(ms) => LifecycleExpiration {
                    date: time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(ms) * 1_000_000,
                    )
                    .ok()
                    .map(Timestamp::from),
                    ..Default::default()
                },
            }),
            abort_incomplete_multipart_upload: r.abort_upload_days.map(|d| {
                AbortIncompleteMultipartUpload {
                    days_after_initiation: Some(d as i32),
                }
            }),
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            transitions: None,
        })
        .collect();
    GetBucketLifecycleConfigurationOutput {
        rules: Some(rules),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::dto::{Transition, TransitionList};

    fn rule(filter: Option<LifecycleRuleFilter>, prefix: Option<&str>) -> RuleDto {
        RuleDto {
            id: Some("r".into()),
            status: ExpirationStatus::from("Enabled".to_string()),
            filter,
            prefix: prefix.map(str::to_string),
            expiration: Some(LifecycleExpiration {
                days: Some(3),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            transitions: None,
        }
    }

    fn roundtrip(r: RuleDto) -> RuleDto {
        let c = config_of(Some(BucketLifecycleConfiguration { rules: vec![r] })).unwrap();
        output_of(c).rules.unwrap().remove(0)
    }

    #[test]
    fn filter_forms_read_back_as_written() {
        let legacy = roundtrip(rule(None, Some("logs/")));
        assert_eq!(legacy.prefix.as_deref(), Some("logs/"));
        assert!(legacy.filter.is_none());
        let tag = Tag {
            key: Some("k".into()),
            value: Some("v".into()),
        };
        let f = roundtrip(rule(
            Some(LifecycleRuleFilter {
                tag: Some(tag.clone()),
                ..Default::default()
            }),
            None,
        ))
        .filter
        .unwrap();
        assert_eq!(f.tag.unwrap().key.as_deref(), Some("k"));
        let f = roundtrip(rule(
            Some(LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some("a/".into()),
                    tags: Some(vec![tag]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            None,
        ))
        .filter
        .unwrap();
        let and = f.and.unwrap();
        assert_eq!(and.prefix.as_deref(), Some("a/"));
        assert_eq!(and.tags.unwrap().len(), 1);
        let empty = roundtrip(rule(Some(LifecycleRuleFilter::default()), None));
        assert!(empty.filter.is_some() && empty.prefix.is_none());
    }

    #[test]
    fn versioning_and_storage_class_actions_are_refused() {
        let mut r = rule(Some(LifecycleRuleFilter::default()), None);
        r.transitions = Some(TransitionList::from(vec![Transition {
            days: Some(30),
            ..Default::default()
        }]));
        let e = config_of(Some(BucketLifecycleConfiguration { rules: vec![r] })).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::NotImplemented);
        let both = rule(Some(LifecycleRuleFilter::default()), Some("x"));
        let e = config_of(Some(BucketLifecycleConfiguration { rules: vec![both] })).unwrap_err();
        assert_eq!(e.code(), &s3s::S3ErrorCode::MalformedXML);
        assert_eq!(
            config_of(None).unwrap_err().code(),
            &s3s::S3ErrorCode::MalformedXML
        );
    }
}
