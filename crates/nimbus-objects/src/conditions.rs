//! Conditional requests (RFC 9110 §13 as S3 applies them) and byte ranges.

use crate::model::ObjectMeta;
use crate::{ObjectError, Result};

/// Whether an `If-Match`/`If-None-Match` value (`*`, or a comma-separated list of quoted or
/// bare, possibly weak, ETags) matches `etag` (stored without quotes).
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.trim_start_matches("W/").trim_matches('"') == etag
    })
}

/// A read's preconditions; times are Unix seconds (HTTP dates have whole seconds).
#[derive(Debug, Clone, Default)]
pub struct ReadConditions {
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

impl ReadConditions {
    /// `PreconditionFailed` (412) or `NotModified` (304) when the object should not be
    /// returned. `If-Unmodified-Since` counts only without `If-Match`, `If-Modified-Since`
    /// only without `If-None-Match`, as S3 and RFC 9110 do.
    pub fn check(&self, obj: &ObjectMeta) -> Result<()> {
        let modified = obj.last_modified_ms.div_euclid(1000);
        match (&self.if_match, self.if_unmodified_since) {
            (Some(m), _) if !etag_matches(m, &obj.etag) => {
                return Err(ObjectError::PreconditionFailed)
            }
            (None, Some(t)) if modified > t => return Err(ObjectError::PreconditionFailed),
            _ => {}
        }
        match (&self.if_none_match, self.if_modified_since) {
            (Some(m), _) if etag_matches(m, &obj.etag) => Err(ObjectError::NotModified),
            (None, Some(t)) if modified <= t => Err(ObjectError::NotModified),
            _ => Ok(()),
        }
    }
}

/// A `Range: bytes=…` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-` or `first-last` (inclusive).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// `(start, len)` within an object of `size` bytes, or `InvalidRange`.
    pub fn resolve(self, size: u64) -> Result<(u64, u64)> {
        let invalid = Err(ObjectError::InvalidRange { size });
        match self {
            ByteRange::From { first, last } => {
                if first >= size || last.is_some_and(|l| l < first) {
                    return invalid;
                }
                let end = last.map_or(size - 1, |l| l.min(size - 1));
                Ok((first, end - first + 1))
            }
            ByteRange::Suffix(0) => invalid,
            ByteRange::Suffix(_) if size == 0 => invalid,
            ByteRange::Suffix(n) => {
                let len = n.min(size);
                Ok((size - len, len))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectAttrs;

    fn obj(etag: &str, modified_s: i64) -> ObjectMeta {
        ObjectMeta {
            bucket: "b".into(),
            key: "k".into(),
            sha256: String::new(),
            size: 10,
            etag: etag.into(),
            last_modified_ms: modified_s * 1000 + 500,
            attrs: ObjectAttrs::default(),
            parts: None,
            part_sizes: Vec::new(),
            checksum: None,
        }
    }

    #[test]
    fn etag_lists_and_wildcards_match() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("W/\"abc\"", "abc"));
        assert!(etag_matches("\"x\", \"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }

    #[test]
    fn read_conditions_follow_s3_precedence() {
        let o = obj("e", 100);
        let c = |m: Option<&str>, nm: Option<&str>, ims: Option<i64>, ius: Option<i64>| {
            ReadConditions {
                if_match: m.map(str::to_string),
                if_none_match: nm.map(str::to_string),
                if_modified_since: ims,
                if_unmodified_since: ius,
            }
            .check(&o)
        };
        assert!(c(Some("\"e\""), None, None, None).is_ok());
        assert!(matches!(
            c(Some("\"x\""), None, None, None),
            Err(ObjectError::PreconditionFailed)
        ));
        // If-Match true wins over a failing If-Unmodified-Since.
        assert!(c(Some("\"e\""), None, None, Some(50)).is_ok());
        assert!(matches!(
            c(None, None, None, Some(50)),
            Err(ObjectError::PreconditionFailed)
        ));
        assert!(
            c(None, None, None, Some(100)).is_ok(),
            "same second is not modified since"
        );
        assert!(matches!(
            c(None, Some("\"e\""), None, None),
            Err(ObjectError::NotModified)
        ));
        assert!(matches!(
            c(None, None, Some(100), None),
            Err(ObjectError::NotModified)
        ));
        assert!(c(None, None, Some(99), None).is_ok());
        // If-None-Match false wins over If-Modified-Since.
        assert!(c(None, Some("\"x\""), Some(200), None).is_ok());
    }

    #[test]
    fn ranges_resolve_like_s3() {
        let r = |first, last| ByteRange::From { first, last };
        assert_eq!(r(0, Some(3)).resolve(10).unwrap(), (0, 4));
        assert_eq!(r(5, None).resolve(10).unwrap(), (5, 5));
        assert_eq!(r(5, Some(100)).resolve(10).unwrap(), (5, 5));
        assert_eq!(ByteRange::Suffix(3).resolve(10).unwrap(), (7, 3));
        assert_eq!(ByteRange::Suffix(30).resolve(10).unwrap(), (0, 10));
        assert!(r(10, None).resolve(10).is_err());
        assert!(r(0, None).resolve(0).is_err());
        assert!(ByteRange::Suffix(0).resolve(10).is_err());
    }
}
