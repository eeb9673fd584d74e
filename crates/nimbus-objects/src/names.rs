//! Bucket-name and key rules. Keys are opaque names: they are never turned into file paths
//! (object bytes are stored by content hash), so `../` is a legal key like any other.

use crate::{ObjectError, Result};

/// The longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks S3's bucket naming rules ([`nimbus_core::s3::check_bucket_name`]).
pub fn validate_bucket_name(name: &str) -> Result<()> {
    nimbus_core::s3::check_bucket_name(name).map_err(|reason| ObjectError::InvalidBucketName {
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

/// Checks a key: 1–1024 bytes, no NUL (UTF-8 is guaranteed by `&str`).
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(ObjectError::InvalidArgument(
            "the object key must not be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ObjectError::KeyTooLong(key.len()));
    }
    if key.contains('\0') {
        return Err(ObjectError::InvalidArgument(
            "the object key must not contain NUL characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket.2026", "a1b", &"a".repeat(63)] {
            assert!(validate_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Upper",
            "under_score",
            "-start",
            "end-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "sthree-x",
            "b-s3alias",
            "x.mrap",
        ] {
            assert!(
                matches!(
                    validate_bucket_name(bad),
                    Err(ObjectError::InvalidBucketName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_are_opaque_but_bounded() {
        for ok in [
            "../etc/passwd",
            "/abs",
            "a//b",
            "ünï/cødé",
            &"k".repeat(1024),
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        assert!(matches!(
            validate_key(&"k".repeat(1025)),
            Err(ObjectError::KeyTooLong(1025))
        ));
        assert!(validate_key("a\0b").is_err());
        assert!(validate_key("").is_err());
    }
}
