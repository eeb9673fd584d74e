//! Bucket-name and key rules. Keys are opaque names: they are never turned into file paths
//! (object bytes are stored by content hash), so `../` is a legal key like any other.

use crate::{ObjectError, Result};

/// The longest key S3 accepts, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3"];

/// Checks S3's bucket naming rules: 3–63 characters of `a-z0-9.-`, a letter or digit at
/// both ends, no `..`, not shaped like an IP address, no reserved prefix or suffix.
pub fn validate_bucket_name(name: &str) -> Result<()> {
    let fail = |reason: &str| {
        Err(ObjectError::InvalidBucketName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if !(3..=63).contains(&name.len()) {
        return fail("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return fail("may contain only lowercase letters, digits, '.' and '-'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return fail("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return fail("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return fail("must not be formatted as an IP address");
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return fail("uses a reserved prefix");
    }
    if RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return fail("uses a reserved suffix");
    }
    Ok(())
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
