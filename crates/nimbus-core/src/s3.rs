//! S3 names shared by the object store (`nimbus-objects`) and the manifest's
//! `[[functions.NAME.s3]]` triggers: bucket naming rules and the notification event names
//! Nimbus produces.

/// Event names a bucket notification configuration may name: Nimbus produces every event
/// these match (`Post` and `DeleteMarkerCreated` once POST uploads and versioning exist).
pub const NOTIFICATION_EVENTS: &[&str] = &[
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
    "s3:LifecycleExpiration:*",
    "s3:LifecycleExpiration:Delete",
    "s3:LifecycleExpiration:DeleteMarkerCreated",
];

const RESERVED_PREFIXES: &[&str] = &["xn--", "sthree-", "amzn-s3-demo-"];
const RESERVED_SUFFIXES: &[&str] = &["-s3alias", "--ol-s3", ".mrap", "--x-s3"];

/// Checks S3's bucket naming rules: 3–63 characters of `a-z0-9.-`, a letter or digit at
/// both ends, no `..`, not shaped like an IP address, no reserved prefix or suffix. The
/// error says which rule the name breaks.
pub fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err("may contain only lowercase letters, digits, '.' and '-'");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Err("must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err("must not be formatted as an IP address");
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err("uses a reserved prefix");
    }
    if RESERVED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Err("uses a reserved suffix");
    }
    Ok(())
}
