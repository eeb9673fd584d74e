//! Conversions between `s3s` DTOs and the object store's types.

use base64::Engine;
use nimbus_objects::{ByteRange, ObjectMeta, ReadConditions, WriteCondition};
use s3s::dto::{ETag, ETagCondition, Range, Timestamp};
use s3s::{s3_error, S3Result};
use std::collections::BTreeMap;

/// A time in milliseconds since the epoch as an S3 timestamp.
pub(crate) fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn unix_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

pub(crate) fn etag(meta: &ObjectMeta) -> ETag {
    ETag::Strong(meta.etag.clone())
}

fn condition_text(c: &ETagCondition) -> String {
    match c {
        ETagCondition::Any => "*".into(),
        ETagCondition::ETag(ETag::Strong(s) | ETag::Weak(s)) => format!("\"{s}\""),
    }
}

/// `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` of a read.
pub(crate) fn read_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> ReadConditions {
    ReadConditions {
        if_match: if_match.map(condition_text),
        if_none_match: if_none_match.map(condition_text),
        if_modified_since: if_modified_since.map(unix_secs),
        if_unmodified_since: if_unmodified_since.map(unix_secs),
    }
}

/// A write's `If-None-Match: *` or `If-Match: ETAG`.
pub(crate) fn write_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<WriteCondition> {
    match (if_match, if_none_match) {
        (None, None) => Ok(WriteCondition::None),
        (None, Some(ETagCondition::Any)) => Ok(WriteCondition::IfAbsent),
        (Some(m), None) => Ok(WriteCondition::IfMatch(condition_text(m))),
        (None, Some(_)) => Err(s3_error!(
            NotImplemented,
            "a conditional write supports If-None-Match: * only"
        )),
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidArgument,
            "If-Match and If-None-Match cannot both be set on a write"
        )),
    }
}

pub(crate) fn byte_range(r: &Range) -> ByteRange {
    match *r {
        Range::Int { first, last } => ByteRange::From { first, last },
        Range::Suffix { length } => ByteRange::Suffix(length),
    }
}

/// `x-amz-copy-source-range: bytes=first-last` (both offsets, inclusive, as S3 requires
/// for UploadPartCopy); `None` when it is not of that form.
pub(crate) fn copy_source_range(value: &str) -> Option<(u64, u64)> {
    let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// `Content-MD5` (base64 of the 16 digest bytes).
pub(crate) fn content_md5(value: Option<&String>) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = value else { return Ok(None) };
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Some)
        .ok_or_else(|| s3_error!(InvalidDigest, "the Content-MD5 you specified is not valid"))
}

/// `x-amz-tagging: k1=v1&k2=v2` (URL-encoded).
pub(crate) fn tagging(header: Option<&String>) -> S3Result<BTreeMap<String, String>> {
    let Some(h) = header else {
        return Ok(BTreeMap::new());
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(h).map_err(|_| {
        s3_error!(
            InvalidArgument,
            "the tag header is not URL-encoded key=value pairs"
        )
    })?;
    Ok(pairs.into_iter().collect())
}

/// `encoding-type=url`: keys and prefixes percent-encoded (all but unreserved and `/`).
pub(crate) fn list_text(s: &str, url: bool) -> String {
    if url {
        nimbus_auth::sigv4::uri_encode(s.as_bytes(), true)
    } else {
        s.to_string()
    }
}

/// The attributes a write request carries: content headers, `x-amz-meta-*`, tags. Works on
/// every input with those fields (PutObject, CreateMultipartUpload, CopyObject).
macro_rules! attrs_of {
    ($input:expr) => {{
        let input = &$input;
        nimbus_objects::ObjectAttrs {
            headers: nimbus_objects::ContentHeaders {
                content_type: input.content_type.clone(),
                content_encoding: input.content_encoding.clone(),
                content_disposition: input.content_disposition.clone(),
                content_language: input.content_language.clone(),
                cache_control: input.cache_control.clone(),
                expires: None,
            },
            user_meta: input
                .metadata
                .iter()
                .flatten()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            tags: $crate::convert::tagging(input.tagging.as_ref())?,
        }
    }};
}
pub(crate) use attrs_of;

/// Fills the object headers of a GetObject or HeadObject output from the metadata.
macro_rules! fill_object_headers {
    ($out:expr, $meta:expr) => {{
        let m: &nimbus_objects::ObjectMeta = $meta;
        let h = &m.attrs.headers;
        $out.content_type = h.content_type.clone();
        $out.content_encoding = h.content_encoding.clone();
        $out.content_disposition = h.content_disposition.clone();
        $out.content_language = h.content_language.clone();
        $out.cache_control = h.cache_control.clone();
        $out.e_tag = Some($crate::convert::etag(m));
        $out.last_modified = Some($crate::convert::timestamp(m.last_modified_ms));
        $out.accept_ranges = Some("bytes".into());
        if !m.attrs.user_meta.is_empty() {
            $out.metadata = Some(m.attrs.user_meta.clone().into_iter().collect());
        }
        $out.parts_count = m.parts.map(|p| p as i32);
    }};
}
pub(crate) use fill_object_headers;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding_of_listed_keys_round_trips_through_unquote_plus() {
        assert_eq!(list_text("dir/d e+f.txt", true), "dir/d%20e%2Bf.txt");
        assert_eq!(list_text("dir/d e.txt", false), "dir/d e.txt");
    }

    #[test]
    fn tags_and_digests_parse() {
        let t = tagging(Some(&"env=test&team=core%20a".to_string())).unwrap();
        assert_eq!(t["team"], "core a");
        assert!(content_md5(Some(&"not base64!".to_string())).is_err());
        let md5 = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert_eq!(content_md5(Some(&md5)).unwrap(), Some([7u8; 16]));
    }

    #[test]
    fn only_if_none_match_star_is_a_conditional_create() {
        assert_eq!(
            write_condition(None, Some(&ETagCondition::Any)).unwrap(),
            WriteCondition::IfAbsent
        );
        let e = ETagCondition::ETag(ETag::Strong("abc".into()));
        assert_eq!(
            write_condition(Some(&e), None).unwrap(),
            WriteCondition::IfMatch("\"abc\"".into())
        );
        assert!(write_condition(None, Some(&e)).is_err());
    }

    #[test]
    fn copy_source_ranges_need_both_offsets() {
        assert_eq!(copy_source_range("bytes=0-9"), Some((0, 9)));
        assert_eq!(copy_source_range("bytes=5-5"), Some((5, 5)));
        for bad in [
            "bytes=5-",
            "bytes=-5",
            "bytes=9-0",
            "0-9",
            "bytes=a-b",
            "bytes=+1-2",
            "",
        ] {
            assert_eq!(copy_source_range(bad), None, "{bad}");
        }
    }
}
