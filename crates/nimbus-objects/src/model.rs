//! The domain types the engine and its metadata stores exchange.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub created_ms: i64,
}

/// The standard headers stored with an object and echoed on GET and HEAD.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentHeaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What a writer sets on an object besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttrs {
    #[serde(default)]
    pub headers: ContentHeaders,
    /// `x-amz-meta-*` without the prefix, lower-cased names.
    #[serde(default)]
    pub user_meta: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One stored object: where its bytes are and what was written with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub bucket: String,
    pub key: String,
    /// Hex SHA-256 of the bytes: the blob's name on disk.
    pub sha256: String,
    pub size: u64,
    /// Without quotes: hex MD5, or `HEX-N` for a multipart object.
    pub etag: String,
    pub last_modified_ms: i64,
    pub attrs: ObjectAttrs,
    /// How many parts a multipart object was assembled from.
    pub parts: Option<u32>,
    /// The sizes of those parts, in order (empty for a single-part object, and for one
    /// completed before Nimbus recorded them).
    pub part_sizes: Vec<u64>,
    /// Its `x-amz-checksum-*`, when the writer asked for one.
    pub checksum: Option<crate::Checksum>,
}

impl ObjectMeta {
    /// `(start, len)` of part `number` (GetObject/HeadObject `?partNumber=N`): a part of a
    /// multipart object, or, as S3, the whole of a single-part object as part 1.
    pub fn part_span(&self, number: u32) -> crate::Result<(u64, u64)> {
        let invalid = || crate::ObjectError::InvalidPartNumber {
            part: number,
            count: self.parts.unwrap_or(1),
        };
        if number == 0 {
            return Err(invalid());
        }
        if self.parts.is_none() {
            return if number == 1 {
                Ok((0, self.size))
            } else {
                Err(invalid())
            };
        }
        let index = (number - 1) as usize;
        let len = *self.part_sizes.get(index).ok_or_else(invalid)?;
        let start = self.part_sizes[..index].iter().sum();
        Ok((start, len))
    }
}

/// Limits on what a bucket, or the whole store, may hold; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: Option<u64>,
    pub max_objects: Option<u64>,
}

impl Quota {
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none() && self.max_objects.is_none()
    }
}

/// A write's precondition, checked atomically with the write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteCondition {
    #[default]
    None,
    /// `If-None-Match: *`: only if no object has the key.
    IfAbsent,
    /// `If-Match: ETAG`: only if the current object has this ETag.
    IfMatch(String),
}

/// One page request of [`crate::MetaStore::list_objects`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub bucket: String,
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Keys strictly after this one (ListObjectsV2 `start-after`, V1 `marker`).
    pub start_after: Option<String>,
    /// The opaque token of a previous page (wins over `start_after`).
    pub continuation: Option<String>,
    /// Keys plus common prefixes in the page (1–1000).
    pub max_keys: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub common_prefixes: Vec<String>,
    /// Set when more keys follow: pass it back as [`ListQuery::continuation`].
    pub next_continuation: Option<String>,
    /// The last key or common prefix in the page (ListObjects V1 `NextMarker`).
    pub last: Option<String>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub created_ms: i64,
    pub attrs: ObjectAttrs,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub sha256: String,
    pub size: u64,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub last_modified_ms: i64,
    /// Its `x-amz-checksum-*`, when the writer asked for one.
    pub checksum: Option<crate::Checksum>,
}
