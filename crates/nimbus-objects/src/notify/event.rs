//! The events Nimbus produces and their messages, exactly in S3's formats: the event record
//! (`{"Records":[…]}`, versions 2.1 and 2.3) for functions and queues, the `s3:TestEvent`
//! message, and EventBridge's `Object Created`/`Object Deleted`/`Object Tags …` events as
//! `PutEvents` entries.

use crate::model::ObjectMeta;
use nimbus_core::arn::{ACCOUNT, REGION};
use serde::Serialize;

/// Who made the request that caused an event (from the S3 layer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// The `x-amz-request-id` the response carries.
    pub request_id: String,
    /// The `x-amz-id-2` the response carries.
    pub host_id: String,
    /// The access key id that signed the request, or `anonymous`.
    pub principal: String,
    /// The client's IP address.
    pub source_ip: String,
}

/// An event Nimbus produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// PutObject.
    Put,
    /// CopyObject.
    Copy,
    /// CompleteMultipartUpload.
    CompleteMultipartUpload,
    /// DeleteObject (and each key of DeleteObjects) removing an object.
    Delete,
    /// A lifecycle rule expiring an object ([`crate::Objects::apply_lifecycle`]).
    LifecycleExpiration,
    /// PutObjectTagging.
    TaggingPut,
    /// DeleteObjectTagging.
    TaggingDelete,
}

impl EventKind {
    /// The record's `eventName` (the configured name without `s3:`).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Put => "ObjectCreated:Put",
            EventKind::Copy => "ObjectCreated:Copy",
            EventKind::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
            EventKind::Delete => "ObjectRemoved:Delete",
            EventKind::LifecycleExpiration => "LifecycleExpiration:Delete",
            EventKind::TaggingPut => "ObjectTagging:Put",
            EventKind::TaggingDelete => "ObjectTagging:Delete",
        }
    }

    fn created(self) -> bool {
        matches!(
            self,
            EventKind::Put | EventKind::Copy | EventKind::CompleteMultipartUpload
        )
    }

    fn removed(self) -> bool {
        matches!(self, EventKind::Delete | EventKind::LifecycleExpiration)
    }

    fn tagging(self) -> bool {
        matches!(self, EventKind::TaggingPut | EventKind::TaggingDelete)
    }

    /// S3 writes tagging events as record version 2.3, the others as 2.1.
    fn record_version(self) -> &'static str {
        if self.tagging() {
            "2.3"
        } else {
            "2.1"
        }
    }

    /// EventBridge's `detail-type`.
    fn detail_type(self) -> &'static str {
        match self {
            EventKind::Put | EventKind::Copy | EventKind::CompleteMultipartUpload => {
                "Object Created"
            }
            EventKind::Delete | EventKind::LifecycleExpiration => "Object Deleted",
            EventKind::TaggingPut => "Object Tags Added",
            EventKind::TaggingDelete => "Object Tags Deleted",
        }
    }

    /// EventBridge's `reason`: the API that created or deleted the object.
    fn reason(self) -> Option<&'static str> {
        match self {
            EventKind::Put => Some("PutObject"),
            EventKind::Copy => Some("CopyObject"),
            EventKind::CompleteMultipartUpload => Some("CompleteMultipartUpload"),
            EventKind::Delete => Some("DeleteObject"),
            EventKind::LifecycleExpiration => Some("Lifecycle Expiration"),
            EventKind::TaggingPut | EventKind::TaggingDelete => None,
        }
    }
}

/// S3's `eventTime`: `1970-01-01T00:00:00.000Z`.
pub(crate) fn event_time(ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// The `sequencer` of the `n`th event: fixed-width upper-case hex, so text order is event
/// order (S3 compares sequencers of one key as padded hex strings).
pub fn sequencer(n: u64) -> String {
    format!("{n:018X}")
}

/// The key as S3 puts it in records: `application/x-www-form-urlencoded` (`red flower.jpg`
/// is `red+flower.jpg`) except `/`, which stays (`images/red+flower.jpg`: S3's own examples
/// filter on a prefix `images/`, matched against this form).
pub fn record_key(key: &str) -> String {
    key.split('/')
        .map(|part| form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

// ----- the event record (functions, queues) -----

#[derive(Serialize)]
struct Records<'a> {
    #[serde(rename = "Records")]
    records: [Record<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    event_version: &'static str,
    event_source: &'static str,
    aws_region: &'static str,
    event_time: String,
    event_name: &'static str,
    user_identity: Principal<'a>,
    request_parameters: RequestParameters<'a>,
    response_elements: ResponseElements<'a>,
    s3: S3Entity<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Principal<'a> {
    principal_id: &'a str,
}

#[derive(Serialize)]
struct RequestParameters<'a> {
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
}

#[derive(Serialize)]
struct ResponseElements<'a> {
    #[serde(rename = "x-amz-request-id")]
    request_id: &'a str,
    #[serde(rename = "x-amz-id-2")]
    host_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct S3Entity<'a> {
    s3_schema_version: &'static str,
    configuration_id: &'a str,
    bucket: BucketEntity<'a>,
    object: ObjectEntity,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BucketEntity<'a> {
    name: &'a str,
    owner_identity: Principal<'static>,
    arn: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectEntity {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequencer: Option<String>,
}

/// One event as the facts its messages are built from.
#[derive(Debug, Clone)]
pub(crate) struct Event<'a> {
    pub kind: EventKind,
    pub time_ms: i64,
    pub requester: &'a Requester,
    /// The object written, tagged, or (for `Delete`) removed.
    pub object: &'a ObjectMeta,
    pub sequencer: String,
}

impl Event<'_> {
    /// `{"Records":[…]}` for a function or a queue; `configuration_id` is the matching
    /// configuration's `Id`.
    pub fn record(&self, configuration_id: &str) -> String {
        let k = self.kind;
        let object = ObjectEntity {
            key: record_key(&self.object.key),
            size: k.created().then_some(self.object.size),
            e_tag: (!k.removed()).then(|| self.object.etag.clone()),
            sequencer: (!k.tagging()).then(|| self.sequencer.clone()),
        };
        let r = Records {
            records: [Record {
                event_version: k.record_version(),
                event_source: "aws:s3",
                aws_region: REGION,
                event_time: event_time(self.time_ms),
                event_name: k.name(),
                user_identity: Principal {
                    principal_id: &self.requester.principal,
                },
                request_parameters: RequestParameters {
                    source_ip_address: &self.requester.source_ip,
                },
                response_elements: ResponseElements {
                    request_id: &self.requester.request_id,
                    host_id: &self.requester.host_id,
                },
                s3: S3Entity {
                    s3_schema_version: "1.0",
                    configuration_id,
                    bucket: BucketEntity {
                        name: &self.object.bucket,
                        owner_identity: Principal {
                            principal_id: ACCOUNT,
                        },
                        arn: bucket_arn(&self.object.bucket),
                    },
                    object,
                },
            }],
        };
        to_json(&r)
    }

    /// The `PutEvents` entry for the default event bus.
    pub fn bus_entry(&self) -> String {
        let k = self.kind;
        let requester = if self.requester.principal == ANONYMOUS {
            ANONYMOUS
        } else {
            ACCOUNT
        };
        let detail = Detail {
            version: "0",
            bucket: DetailBucket {
                name: &self.object.bucket,
            },
            object: DetailObject {
                key: &self.object.key,
                size: k.created().then_some(self.object.size),
                etag: (!k.removed()).then_some(self.object.etag.as_str()),
                sequencer: (!k.tagging()).then_some(self.sequencer.as_str()),
            },
            request_id: &self.requester.request_id,
            requester,
            source_ip_address: &self.requester.source_ip,
            reason: k.reason(),
            deletion_type: k.removed().then_some("Permanently Deleted"),
        };
        to_json(&BusEntry {
            source: "aws.s3",
            detail_type: k.detail_type(),
            detail: to_json(&detail),
            resources: [bucket_arn(&self.object.bucket)],
            time: event_time(self.time_ms),
            event_bus_name: nimbus_store::DEFAULT_BUS,
        })
    }
}

/// The principal of an unsigned request.
pub const ANONYMOUS: &str = "anonymous";

// ----- EventBridge -----

/// A `PutEvents` request entry (EventBridge's field names).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BusEntry {
    source: &'static str,
    detail_type: &'static str,
    /// The detail object as JSON text, as `PutEvents` takes it.
    detail: String,
    resources: [String; 1],
    time: String,
    event_bus_name: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Detail<'a> {
    version: &'static str,
    bucket: DetailBucket<'a>,
    object: DetailObject<'a>,
    request_id: &'a str,
    requester: &'a str,
    source_ip_address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_type: Option<&'static str>,
}

#[derive(Serialize)]
struct DetailBucket<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct DetailObject<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequencer: Option<&'a str>,
}

// ----- the test event -----

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TestEvent<'a> {
    service: &'static str,
    event: &'static str,
    time: String,
    bucket: &'a str,
    request_id: &'a str,
    host_id: &'a str,
}

/// The `s3:TestEvent` message S3 sends to a queue when a configuration is set.
pub(crate) fn test_event(bucket: &str, requester: &Requester, time_ms: i64) -> String {
    to_json(&TestEvent {
        service: "Amazon S3",
        event: "s3:TestEvent",
        time: event_time(time_ms),
        bucket,
        request_id: &requester.request_id,
        host_id: &requester.host_id,
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Serialising these structs (strings, numbers) cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}
