//! [`Objects`]: the object store's operations over a [`MetaStore`] and a [`BlobStore`].
//! Bytes stream through (never a whole object in memory); metadata calls run on the
//! blocking pool.

use crate::blobs::{file_stream, BlobStore, Digests, Pin, Staged};
use crate::checksum::{Checksum, ChecksumRequest};
use crate::conditions::{ByteRange, ReadConditions};
use crate::cors::CorsConfig;
use crate::lifecycle::{LifecycleConfig, LifecycleCounts, LifecycleRule};
use crate::model::{
    Bucket, ListPage, ListQuery, ObjectAttrs, ObjectMeta, Part, Quota, Upload, WriteCondition,
};
use crate::names::{validate_bucket_name, validate_key};
use crate::notify::{
    test_event, Destinations, EventKind, Notification, NotificationConfig, Notifier, Outgoing,
    Requester, Target, TargetConfig,
};
use crate::store::{MetaStore, Released};
use crate::{ObjectError, Result};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Limits of the object store.
#[derive(Debug, Clone)]
pub struct ObjectsConfig {
    /// Largest object a single PUT (or a part) may carry; S3's is 5 GiB.
    pub max_object_bytes: u64,
    /// Smallest part but the last in a multipart upload; S3's is 5 MiB.
    pub min_part_bytes: u64,
    /// Multipart uploads older than this are aborted by [`Objects::expire_uploads`].
    pub upload_expiry: Duration,
    /// What all buckets together may hold (`--s3-max-bytes`, `--s3-max-objects`); each
    /// bucket may have its own quota too (its `nimbus:quota-*` tags).
    pub quota: Quota,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        Self {
            max_object_bytes: 5 << 30,
            min_part_bytes: 5 << 20,
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
            quota: Quota::default(),
        }
    }
}

/// The most parts a multipart upload may have.
pub const MAX_PARTS: u32 = 10_000;

fn check_part_number(number: u32) -> Result<()> {
    if (1..=MAX_PARTS).contains(&number) {
        Ok(())
    } else {
        Err(ObjectError::InvalidArgument(format!(
            "part number must be an integer between 1 and {MAX_PARTS}, inclusive"
        )))
    }
}

/// What a writer sends besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub attrs: ObjectAttrs,
    pub condition: WriteCondition,
    /// `Content-MD5`, decoded: the bytes must hash to it (`BadDigest`).
    pub content_md5: Option<[u8; 16]>,
    /// `Content-Length` (or `x-amz-decoded-content-length`): more than the limit is refused
    /// before reading; fewer bytes received is `IncompleteBody`.
    pub declared_len: Option<u64>,
    /// Who is writing (for event notifications).
    pub requester: Requester,
    /// `x-amz-checksum-*` / `x-amz-sdk-checksum-algorithm`: computed, checked, stored.
    pub checksum: Option<ChecksumRequest>,
}

/// The checks of an uploaded body (see [`PutOptions`]).
#[derive(Debug, Clone, Default)]
pub struct BodyChecks {
    pub declared_len: Option<u64>,
    pub content_md5: Option<[u8; 16]>,
    pub checksum: Option<ChecksumRequest>,
}

/// An object being read: its metadata, the byte span and the bytes.
pub struct ObjectRead {
    pub meta: ObjectMeta,
    /// `(start, len)` when a range was asked for.
    pub range: Option<(u64, u64)>,
    pub body: std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + Sync>>,
}

/// The object store.
#[derive(Clone)]
pub struct Objects {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<BlobStore>,
    cfg: ObjectsConfig,
    notifier: Arc<Notifier>,
    destinations: Option<Arc<dyn Destinations>>,
    /// Held while a notification configuration is read, changed and written back, so a
    /// partial update ([`Objects::replace_function_configs`]) loses no concurrent change.
    config_writes: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Objects {
    /// The store over `meta` and `blobs`; removes blobs nothing refers to (left by a crash).
    pub fn new(meta: Arc<dyn MetaStore>, blobs: BlobStore, cfg: ObjectsConfig) -> Result<Self> {
        let removed = blobs.sweep(&meta.referenced_blobs()?)?;
        if removed > 0 {
            tracing::info!(removed, "removed unreferenced object blobs");
        }
        Ok(Self {
            meta,
            blobs: Arc::new(blobs),
            cfg,
            notifier: Arc::new(Notifier::default()),
            destinations: None,
            config_writes: Arc::default(),
        })
    }

    /// Checks notification targets with `destinations` when a configuration is set.
    pub fn with_destinations(mut self, destinations: Arc<dyn Destinations>) -> Self {
        self.destinations = Some(destinations);
        self
    }

    /// The default store: `DATA_DIR/objects.db` and `DATA_DIR/objects/`.
    pub fn open_sqlite(data_dir: &std::path::Path, cfg: ObjectsConfig) -> Result<Self> {
        let meta = crate::store::sqlite::SqliteMetaStore::open(data_dir)?.with_quota(cfg.quota);
        let blobs = BlobStore::open(&data_dir.join("objects"))?;
        Self::new(Arc::new(meta), blobs, cfg)
    }

    pub fn config(&self) -> &ObjectsConfig {
        &self.cfg
    }

    /// Forgets every cached notification configuration: another node of a cluster
    /// changed them (they are read again on the next write).
    pub fn forget_cached_configs(&self) {
        self.notifier.forget_all();
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| ObjectError::Database(format!("metadata task failed: {e}")))?
    }

    /// Cluster mode: deletes from the shared store the blobs no row names that nobody put
    /// or touched within the grace period ([`BlobStore::sweep_shared`]); run hourly by the
    /// server. Nothing to do on a single node.
    pub async fn sweep_shared_blobs(&self) -> Result<nimbus_blobs::Swept> {
        self.blocking(|this| {
            if !this.blobs.is_shared() {
                return Ok(nimbus_blobs::Swept::default());
            }
            let referenced = this.meta.referenced_blobs()?;
            this.blobs.sweep_shared(&referenced)
        })
        .await
    }

    /// Removes released blobs that are still unreferenced.
    fn release(&self, released: &Released) {
        self.blobs
            .release(released, |sha| self.meta.blob_referenced(sha));
    }

    /// Puts staged bytes in place, runs `commit` (the metadata write) while the blob is
    /// pinned, then removes what the commit released.
    async fn commit_blob<T: Send + 'static>(
        &self,
        staged: Staged,
        commit: impl FnOnce(&dyn MetaStore, &Digests) -> Result<(T, Released)> + Send + 'static,
    ) -> Result<T> {
        self.blocking(move |this| {
            let digests = staged.digests.clone();
            let pin = this.blobs.place(staged)?;
            let (out, released) = commit(this.meta.as_ref(), &digests)?;
            drop(pin);
            this.release(&released);
            Ok(out)
        })
        .await
    }

    // ----- buckets -----

    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        validate_bucket_name(name)?;
        let name = name.to_string();
        self.blocking(move |this| {
            this.meta.create_bucket(&name, now_ms())?;
            this.notifier.forget(&name);
            Ok(())
        })
        .await
    }

    /// Deletes an empty bucket, and its notification configuration with it.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.blocking(move |this| {
            this.meta.delete_bucket(&name)?;
            this.notifier.forget(&name);
            Ok(())
        })
        .await
    }

    pub async fn bucket(&self, name: &str) -> Result<Bucket> {
        let name = name.to_string();
        self.blocking(move |this| this.meta.bucket(&name)).await
    }

    pub async fn list_buckets(&self) -> Result<Vec<Bucket>> {
        self.blocking(|this| this.meta.list_buckets()).await
    }

    // ----- objects -----

    /// Streams `body` into a staged blob, checking the declared length, Content-MD5 and the
    /// additional checksum (returned for storing).
    async fn stage<S, E>(&self, body: S, checks: &BodyChecks) -> Result<(Staged, Option<Checksum>)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let limit = self.cfg.max_object_bytes;
        if checks.declared_len.is_some_and(|n| n > limit) {
            return Err(ObjectError::EntityTooLarge { limit });
        }
        if let Some(c) = &checks.checksum {
            c.validate()?;
        }
        let hasher = checks.checksum.as_ref().map(|c| c.algorithm.hasher());
        let staged = self.blobs.stage_with(body, limit, hasher).await?;
        let received = staged.digests.size;
        if let Some(declared) = checks.declared_len.filter(|&d| d != received) {
            return Err(ObjectError::IncompleteBody { declared, received });
        }
        if checks.content_md5.is_some_and(|m| m != staged.digests.md5) {
            return Err(ObjectError::BadDigest);
        }
        let checksum = match (&checks.checksum, &staged.digests.checksum) {
            (Some(c), Some(digest)) => Some(c.verify(digest)?),
            _ => None,
        };
        Ok((staged, checksum))
    }

    /// PutObject: the object is durable (bytes and row) when this returns.
    pub async fn put_object<S, E>(
        &self,
        bucket: &str,
        key: &str,
        body: S,
        opts: PutOptions,
    ) -> Result<ObjectMeta>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        validate_key(key)?;
        // Refuse before reading the body when the bucket is missing.
        self.bucket(bucket).await?;
        let checks = BodyChecks {
            declared_len: opts.declared_len,
            content_md5: opts.content_md5,
            checksum: opts.checksum.clone(),
        };
        let (staged, checksum) = self.stage(body, &checks).await?;
        let (bucket, key) = (bucket.to_string(), key.to_string());
        let notifier = self.notifier.clone();
        self.commit_blob(staged, move |meta, d| {
            let now = now_ms();
            let notes =
                notifier.notes(meta, (&bucket, &key), EventKind::Put, now, &opts.requester)?;
            let obj = ObjectMeta {
                bucket,
                key,
                sha256: d.sha256.clone(),
                size: d.size,
                etag: d.md5_hex(),
                last_modified_ms: now,
                attrs: opts.attrs,
                parts: None,
                part_sizes: Vec::new(),
                checksum,
            };
            let released = meta.put_object(&obj, &opts.condition, &notes)?;
            notifier.woken_by(&notes);
            Ok((obj, released))
        })
        .await
    }

    /// HeadObject (and the metadata half of GetObject), preconditions checked.
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        conditions: &ReadConditions,
    ) -> Result<ObjectMeta> {
        let (b, k) = (bucket.to_string(), key.to_string());
        let meta = self.blocking(move |this| this.meta.object(&b, &k)).await?;
        conditions.check(&meta)?;
        Ok(meta)
    }

    /// GetObject: the metadata and a stream of the (ranged) bytes.
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        conditions: ReadConditions,
    ) -> Result<ObjectRead> {
        let (b, k) = (bucket.to_string(), key.to_string());
        let (meta, file) = self.blocking(move |this| this.open_object(&b, &k)).await?;
        conditions.check(&meta)?;
        let span = range.map(|r| r.resolve(meta.size)).transpose()?;
        let (start, len) = span.unwrap_or((0, meta.size));
        Ok(ObjectRead {
            meta,
            range: span,
            body: Box::pin(file_stream(file, start, len)),
        })
    }

    /// GetObject `?partNumber=N`: the metadata and a stream of that part's bytes
    /// ([`ObjectMeta::part_span`]); `range` is the part's span (`None` for a single-part
    /// object, whose part 1 is all of it).
    pub async fn get_object_part(
        &self,
        bucket: &str,
        key: &str,
        part: u32,
        conditions: ReadConditions,
    ) -> Result<ObjectRead> {
        let (b, k) = (bucket.to_string(), key.to_string());
        let (meta, file) = self.blocking(move |this| this.open_object(&b, &k)).await?;
        conditions.check(&meta)?;
        let (start, len) = meta.part_span(part)?;
        Ok(ObjectRead {
            // A single-part object's part 1 is the whole object: a plain 200, as S3.
            range: meta.parts.is_some().then_some((start, len)),
            meta,
            body: Box::pin(file_stream(file, start, len)),
        })
    }

    /// The object's row and its open blob. The blob is pinned between the lookup and the
    /// open; if a concurrent overwrite removed it first, the lookup is repeated.
    fn open_object(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, std::fs::File)> {
        for _ in 0..3 {
            let meta = self.meta.object(bucket, key)?;
            let _pin = self.blobs.pin(&meta.sha256);
            match self.blobs.open_file(&meta.sha256) {
                Ok(f) => return Ok((meta, f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ObjectError::io(format!("opening blob {}", meta.sha256))(e)),
            }
        }
        Err(ObjectError::Corrupt(format!(
            "the blob of {bucket}/{key} is missing"
        )))
    }

    /// DeleteObject: removes the object if it exists (`Ok` either way, as S3); an
    /// `ObjectRemoved:Delete` event only when one was removed.
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        requester: &Requester,
    ) -> Result<()> {
        let (b, k, r) = (bucket.to_string(), key.to_string(), requester.clone());
        self.blocking(move |this| {
            let notes = this.notes((&b, &k), EventKind::Delete, now_ms(), &r)?;
            let released = this.meta.delete_object(&b, &k, &notes)?;
            this.notifier.woken_by(&notes);
            this.release(&released);
            Ok(())
        })
        .await
    }

    /// What a write of `kind` on `bucket/key` records in the outbox.
    fn notes(
        &self,
        at: (&str, &str),
        kind: EventKind,
        time_ms: i64,
        requester: &Requester,
    ) -> Result<crate::notify::Notes> {
        self.notifier
            .notes(self.meta.as_ref(), at, kind, time_ms, requester)
    }

    /// CopyObject: a new row pointing at the source's blob (no bytes copied). `attrs` is
    /// `Some` for `x-amz-metadata-directive: REPLACE`, else the source's are kept.
    pub async fn copy_object(
        &self,
        (src_bucket, src_key): (&str, &str),
        (bucket, key): (&str, &str),
        source_conditions: ReadConditions,
        attrs: Option<ObjectAttrs>,
        condition: WriteCondition,
        requester: &Requester,
    ) -> Result<ObjectMeta> {
        validate_key(key)?;
        let (sb, sk) = (src_bucket.to_string(), src_key.to_string());
        let (b, k, r) = (bucket.to_string(), key.to_string(), requester.clone());
        self.blocking(move |this| {
            let src = this.meta.object(&sb, &sk)?;
            source_conditions.check(&src)?;
            let _pin: Pin = this.blobs.pin(&src.sha256);
            // Cluster mode: no collector deletes the shared bytes before the row commits.
            this.blobs.retain(&src.sha256)?;
            let now = now_ms();
            let notes = this.notes((&b, &k), EventKind::Copy, now, &r)?;
            let obj = ObjectMeta {
                bucket: b,
                key: k,
                last_modified_ms: now,
                attrs: attrs.unwrap_or(src.attrs),
                ..src
            };
            let released = this.meta.put_object(&obj, &condition, &notes)?;
            this.notifier.woken_by(&notes);
            this.release(&released);
            Ok(obj)
        })
        .await
    }

    /// GetBucketTagging: `NoSuchTagSet` when the bucket has none.
    pub async fn bucket_tags(&self, bucket: &str) -> Result<BTreeMap<String, String>> {
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.bucket_tags(&b))
            .await?
            .ok_or_else(|| ObjectError::NoSuchTagSet(bucket.to_string()))
    }

    /// PutBucketTagging (`None`: DeleteBucketTagging). The `nimbus:quota-bytes` and
    /// `nimbus:quota-objects` tags set the bucket's quota (non-negative integers, else
    /// `InvalidTag`); a quota lower than what the bucket holds refuses only further growth.
    pub async fn set_bucket_tags(
        &self,
        bucket: &str,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<()> {
        if let Some(t) = &tags {
            crate::store::sqlite::quota::validate_tags(t)?;
        }
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.set_bucket_tags(&b, tags.as_ref()))
            .await
    }

    pub async fn list_objects(&self, q: ListQuery) -> Result<ListPage> {
        self.blocking(move |this| this.meta.list_objects(&q)).await
    }

    /// PutObjectTagging: replaces the object's tag set (`ObjectTagging:Put`).
    pub async fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: std::collections::BTreeMap<String, String>,
        requester: &Requester,
    ) -> Result<()> {
        self.write_tags(bucket, key, tags, EventKind::TaggingPut, requester)
            .await
    }

    /// DeleteObjectTagging: removes the object's tags (`ObjectTagging:Delete`).
    pub async fn delete_tags(&self, bucket: &str, key: &str, requester: &Requester) -> Result<()> {
        let none = std::collections::BTreeMap::new();
        self.write_tags(bucket, key, none, EventKind::TaggingDelete, requester)
            .await
    }

    async fn write_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: std::collections::BTreeMap<String, String>,
        kind: EventKind,
        requester: &Requester,
    ) -> Result<()> {
        let (b, k, r) = (bucket.to_string(), key.to_string(), requester.clone());
        self.blocking(move |this| {
            let notes = this.notes((&b, &k), kind, now_ms(), &r)?;
            this.meta.set_tags(&b, &k, &tags, &notes)?;
            this.notifier.woken_by(&notes);
            Ok(())
        })
        .await
    }

    // ----- multipart -----

    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
    ) -> Result<Upload> {
        validate_key(key)?;
        let upload = Upload {
            upload_id: uuid::Uuid::new_v4().simple().to_string(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            created_ms: now_ms(),
            attrs,
        };
        let u = upload.clone();
        self.blocking(move |this| this.meta.create_upload(&u))
            .await?;
        Ok(upload)
    }

    async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
        let (b, k, u) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        self.blocking(move |this| this.meta.upload(&b, &k, &u))
            .await
    }

    /// UploadPart: stores the part's bytes; its ETag is their MD5.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part<S, E>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: S,
        declared_len: Option<u64>,
        content_md5: Option<[u8; 16]>,
    ) -> Result<Part>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let checks = BodyChecks {
            declared_len,
            content_md5,
            checksum: None,
        };
        self.upload_part_checked((bucket, key, upload_id), number, body, checks)
            .await
    }

    /// UploadPart with every check of the body, the additional checksum included (stored
    /// with the part, for the object's composite checksum).
    pub async fn upload_part_checked<S, E>(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        number: u32,
        body: S,
        checks: BodyChecks,
    ) -> Result<Part>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        check_part_number(number)?;
        self.upload(bucket, key, upload_id).await?;
        let (staged, checksum) = self.stage(body, &checks).await?;
        let upload_id = upload_id.to_string();
        self.commit_blob(staged, move |meta, d| {
            let part = Part {
                number,
                sha256: d.sha256.clone(),
                size: d.size,
                etag: d.md5_hex(),
                last_modified_ms: now_ms(),
                checksum,
            };
            let released = meta.put_part(&upload_id, &part)?;
            Ok((part, released))
        })
        .await
    }

    /// UploadPartCopy: part `number` of the upload is the source object's bytes, or the
    /// inclusive span `range` of them (`x-amz-copy-source-range`), read from its blob and
    /// stored as an uploaded part would be (its ETag is their MD5). `conditions` are the
    /// `x-amz-copy-source-if-*` headers.
    pub async fn upload_part_copy(
        &self,
        (src_bucket, src_key): (&str, &str),
        conditions: ReadConditions,
        range: Option<(u64, u64)>,
        (bucket, key, upload_id): (&str, &str, &str),
        number: u32,
    ) -> Result<Part> {
        check_part_number(number)?;
        self.upload(bucket, key, upload_id).await?;
        let (sb, sk) = (src_bucket.to_string(), src_key.to_string());
        let (meta, file) = self
            .blocking(move |this| this.open_object(&sb, &sk))
            .await?;
        conditions.check(&meta)?;
        let (start, len) = match range {
            None => (0, meta.size),
            Some((first, last)) if first <= last && last < meta.size => (first, last - first + 1),
            Some(_) => {
                return Err(ObjectError::InvalidArgument(format!(
                    "Range specified is not valid for source object of size: {}",
                    meta.size
                )))
            }
        };
        self.upload_part(
            bucket,
            key,
            upload_id,
            number,
            file_stream(file, start, len),
            Some(len),
            None,
        )
        .await
    }

    /// ListParts: parts numbered above `after`, at most `max`, and whether more follow.
    pub async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        after: u32,
        max: usize,
    ) -> Result<(Upload, Vec<Part>, bool)> {
        let upload = self.upload(bucket, key, upload_id).await?;
        let id = upload_id.to_string();
        let (parts, more) = self
            .blocking(move |this| this.meta.list_parts(&id, after, max))
            .await?;
        Ok((upload, parts, more))
    }

    /// CompleteMultipartUpload: checks the requested `(number, etag)` list against the
    /// stored parts, concatenates them into one blob and writes the object (ETag
    /// `MD5(part MD5s)-N`).
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        requested: Vec<(u32, String)>,
        condition: WriteCondition,
        requester: &Requester,
    ) -> Result<ObjectMeta> {
        let (upload, stored, _) = self
            .list_parts(bucket, key, upload_id, 0, MAX_PARTS as usize)
            .await?;
        let parts = self.chosen_parts(&requested, &stored)?;
        let pins: Vec<Pin> = parts.iter().map(|p| self.blobs.pin(&p.sha256)).collect();
        let mut etag_md5 = Md5::new();
        for p in &parts {
            etag_md5.update(hex::decode(&p.etag).unwrap_or_default());
        }
        // Blocking: in cluster mode a part uploaded through another node is fetched first.
        let wanted: Vec<(u32, String)> =
            parts.iter().map(|p| (p.number, p.sha256.clone())).collect();
        let opened = self
            .blocking(move |this| {
                wanted
                    .iter()
                    .map(|(number, sha)| {
                        this.blobs
                            .open_file(sha)
                            .map_err(ObjectError::io(format!("opening part {number}")))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        let files: Vec<_> = opened
            .into_iter()
            .zip(&parts)
            .map(|(file, p)| file_stream(file, 0, p.size))
            .collect();
        let etag = format!("{}-{}", hex::encode(etag_md5.finalize()), parts.len());
        let body = futures_util::stream::iter(files).flatten();
        let staged = self.blobs.stage(body, u64::MAX).await?;
        drop(pins);
        let count = parts.len() as u32;
        let part_sizes: Vec<u64> = parts.iter().map(|p| p.size).collect();
        let checksums: Vec<Option<&Checksum>> = parts.iter().map(|p| p.checksum.as_ref()).collect();
        let checksum = Checksum::composite(&checksums);
        let id = upload_id.to_string();
        let (notifier, requester) = (self.notifier.clone(), requester.clone());
        self.commit_blob(staged, move |meta, d| {
            let now = now_ms();
            let at = (upload.bucket.as_str(), upload.key.as_str());
            let notes = notifier.notes(
                meta,
                at,
                EventKind::CompleteMultipartUpload,
                now,
                &requester,
            )?;
            let obj = ObjectMeta {
                bucket: upload.bucket,
                key: upload.key,
                sha256: d.sha256.clone(),
                size: d.size,
                etag,
                last_modified_ms: now,
                attrs: upload.attrs,
                parts: Some(count),
                part_sizes,
                checksum,
            };
            let released = meta.complete_upload(&id, &obj, &condition, &notes)?;
            notifier.woken_by(&notes);
            Ok((obj, released))
        })
        .await
    }

    /// The stored parts `requested` names, in order, checked: ascending numbers, matching
    /// ETags, every part but the last at least the minimum size.
    fn chosen_parts(&self, requested: &[(u32, String)], stored: &[Part]) -> Result<Vec<Part>> {
        if requested.is_empty() {
            return Err(ObjectError::InvalidPart(
                "you must specify at least one part".into(),
            ));
        }
        if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(ObjectError::InvalidPartOrder);
        }
        let mut parts = Vec::with_capacity(requested.len());
        for (number, etag) in requested {
            let part = stored
                .iter()
                .find(|p| p.number == *number && crate::etag_matches(etag, &p.etag))
                .ok_or_else(|| {
                    ObjectError::InvalidPart(format!(
                        "part {number} was not uploaded or its ETag {etag} does not match"
                    ))
                })?;
            parts.push(part.clone());
        }
        let min = self.cfg.min_part_bytes;
        if let Some(small) = parts[..parts.len() - 1].iter().find(|p| p.size < min) {
            return Err(ObjectError::EntityTooSmall {
                part: small.number,
                size: small.size,
                min,
            });
        }
        Ok(parts)
    }

    pub async fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
        let (b, k, u) = (bucket.to_string(), key.to_string(), upload_id.to_string());
        self.blocking(move |this| {
            let released = this.meta.abort_upload(&b, &k, &u)?;
            this.release(&released);
            Ok(())
        })
        .await
    }

    pub async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        max: usize,
    ) -> Result<(Vec<Upload>, bool)> {
        let (b, p) = (bucket.to_string(), prefix.to_string());
        self.blocking(move |this| this.meta.list_uploads(&b, &p, max))
            .await
    }

    // ----- notifications -----

    /// GetBucketNotificationConfiguration: the bucket's configuration (empty when none).
    pub async fn notification_config(&self, bucket: &str) -> Result<NotificationConfig> {
        let b = bucket.to_string();
        let config = self
            .blocking(move |this| this.meta.notification_config(&b))
            .await?;
        Ok(config.unwrap_or_default())
    }

    /// PutBucketNotificationConfiguration: validates `config` as S3 does, checks its
    /// targets with the [`Destinations`] (unless `skip_destination_validation`, S3's
    /// `x-amz-skip-destination-validation`), stores it (an empty one turns notifications
    /// off) and records an `s3:TestEvent` message for each queue it names, as S3 does
    /// (functions and EventBridge get none). Returns the configuration as stored (with
    /// generated ids).
    pub async fn set_notification_config(
        &self,
        bucket: &str,
        config: NotificationConfig,
        requester: &Requester,
        skip_destination_validation: bool,
    ) -> Result<NotificationConfig> {
        let config = config.validate()?;
        let (b, r) = (bucket.to_string(), requester.clone());
        self.blocking(move |this| {
            if !skip_destination_validation {
                this.check_destinations(&config)?;
            }
            let _writing = this.lock_config_writes();
            let now = now_ms();
            let mut tests: Vec<Notification> = Vec::new();
            for q in &config.queues {
                let target = Target::queue(&q.arn)?;
                if !tests.iter().any(|t| t.target == target) {
                    let payload = test_event(&b, &r, now);
                    tests.push(Notification { target, payload });
                }
            }
            this.notifier
                .set(this.meta.as_ref(), &b, &config, &tests, now)?;
            if !tests.is_empty() {
                this.notifier.wake();
            }
            Ok(config)
        })
        .await
    }

    /// Replaces the function configurations of `bucket` whose ids start with `id_prefix`
    /// by `functions` (each id must start with it), keeping every other configuration
    /// (other functions', queues, EventBridge): how a manifest's `[[functions.NAME.s3]]`
    /// entries are applied. The result is validated as a whole (an overlap with a kept
    /// configuration is refused) and only the new targets are checked with the
    /// [`Destinations`]; no test event is recorded (functions get none). Returns the
    /// bucket's configuration as stored.
    pub async fn replace_function_configs(
        &self,
        bucket: &str,
        id_prefix: &str,
        functions: Vec<TargetConfig>,
    ) -> Result<NotificationConfig> {
        if id_prefix.is_empty() {
            return Err(ObjectError::InvalidArgument(
                "the id prefix of managed configurations cannot be empty".into(),
            ));
        }
        if let Some(c) = functions.iter().find(|c| !c.id.starts_with(id_prefix)) {
            return Err(ObjectError::InvalidArgument(format!(
                "configuration id {:?} does not start with {id_prefix:?}",
                c.id
            )));
        }
        let (b, prefix) = (bucket.to_string(), id_prefix.to_string());
        self.blocking(move |this| {
            // A missing bucket is NoSuchBucket before anything about the targets.
            this.meta.bucket(&b)?;
            this.check_destinations(&NotificationConfig {
                functions: functions.clone(),
                ..NotificationConfig::default()
            })?;
            let _writing = this.lock_config_writes();
            let mut config = this.meta.notification_config(&b)?.unwrap_or_default();
            config.functions.retain(|c| !c.id.starts_with(&prefix));
            config.functions.extend(functions);
            let config = config.validate()?;
            this.notifier
                .set(this.meta.as_ref(), &b, &config, &[], now_ms())?;
            Ok(config)
        })
        .await
    }

    fn lock_config_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere leaves nothing inconsistent.
        self.config_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the [`Destinations`] (if any) about every function and queue target.
    fn check_destinations(&self, config: &NotificationConfig) -> Result<()> {
        let Some(destinations) = &self.destinations else {
            return Ok(());
        };
        let functions = config.functions.iter().map(|c| Target::function(&c.arn));
        let queues = config.queues.iter().map(|c| Target::queue(&c.arn));
        for target in functions.chain(queues) {
            let target = target?;
            destinations.check(&target).map_err(|why| {
                ObjectError::InvalidArgument(format!(
                    "Unable to validate the following destination configurations: {}: {why}",
                    target.arn()
                ))
            })?;
        }
        Ok(())
    }

    /// Recorded notifications with sequence numbers above `after` (0: from the oldest), in
    /// recording order, at most `limit`. A row stays until [`Objects::notifications_done`]
    /// removes it, so delivery is at least once: hand each on, then mark it done.
    pub async fn notifications_pending(&self, after: u64, limit: usize) -> Result<Vec<Outgoing>> {
        self.blocking(move |this| this.meta.pending_notifications(after, limit))
            .await
    }

    /// Removes notifications that were handed on.
    pub async fn notifications_done(&self, seqs: &[u64]) -> Result<()> {
        let seqs = seqs.to_vec();
        self.blocking(move |this| this.meta.remove_notifications(&seqs))
            .await
    }

    /// Resolves when notifications were recorded since the last call returned (one stored
    /// wake-up, for one consumer): read [`Objects::notifications_pending`] first, then wait,
    /// and nothing recorded in between is missed.
    pub async fn notifications_wait(&self) {
        self.notifier.wait().await;
    }

    /// Aborts uploads started more than [`ObjectsConfig::upload_expiry`] before `now_ms`;
    /// returns how many.
    pub async fn expire_uploads(&self, now_ms: i64) -> Result<usize> {
        let cutoff = now_ms - self.cfg.upload_expiry.as_millis() as i64;
        self.blocking(move |this| {
            let old = this.meta.uploads_started_before(cutoff)?;
            for u in &old {
                match this.meta.abort_upload(&u.bucket, &u.key, &u.upload_id) {
                    Ok(released) => this.release(&released),
                    // Completed or aborted meanwhile.
                    Err(ObjectError::NoSuchUpload(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(old.len())
        })
        .await
    }

    // ----- CORS -----

    /// GetBucketCors: the bucket's configuration (`NoSuchCORSConfiguration` when none).
    pub async fn cors_config(&self, bucket: &str) -> Result<CorsConfig> {
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.cors_config(&b))
            .await?
            .ok_or_else(|| ObjectError::NoSuchCorsConfiguration(bucket.to_string()))
    }

    /// The bucket's CORS configuration for answering cross-origin requests: `None` when the
    /// bucket has none or does not exist.
    pub async fn cors_rules(&self, bucket: &str) -> Result<Option<CorsConfig>> {
        match self.cors_config(bucket).await {
            Ok(c) => Ok(Some(c)),
            Err(ObjectError::NoSuchCorsConfiguration(_) | ObjectError::NoSuchBucket(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PutBucketCors: validates and stores (replaces) the configuration.
    pub async fn set_cors_config(&self, bucket: &str, config: CorsConfig) -> Result<()> {
        config.validate()?;
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.set_cors_config(&b, Some(&config)))
            .await
    }

    /// DeleteBucketCors (no error when there is none, as S3).
    pub async fn delete_cors_config(&self, bucket: &str) -> Result<()> {
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.set_cors_config(&b, None))
            .await
    }

    // ----- lifecycle -----

    /// GetBucketLifecycleConfiguration (`NoSuchLifecycleConfiguration` when none).
    pub async fn lifecycle_config(&self, bucket: &str) -> Result<LifecycleConfig> {
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.lifecycle_config(&b))
            .await?
            .ok_or_else(|| ObjectError::NoSuchLifecycleConfiguration(bucket.to_string()))
    }

    /// PutBucketLifecycleConfiguration: validates (generating missing rule IDs) and stores
    /// the configuration; returns it as stored.
    pub async fn set_lifecycle_config(
        &self,
        bucket: &str,
        mut config: LifecycleConfig,
    ) -> Result<LifecycleConfig> {
        config.validate()?;
        let b = bucket.to_string();
        self.blocking(move |this| {
            this.meta.set_lifecycle_config(&b, Some(&config))?;
            Ok(config)
        })
        .await
    }

    /// DeleteBucketLifecycle (no error when there is none, as S3).
    pub async fn delete_lifecycle_config(&self, bucket: &str) -> Result<()> {
        let b = bucket.to_string();
        self.blocking(move |this| this.meta.set_lifecycle_config(&b, None))
            .await
    }

    /// Applies every bucket's enabled lifecycle rules as of `now_ms`: deletes the objects
    /// they expire (releasing blobs as DeleteObject does, recording
    /// `s3:LifecycleExpiration:Delete` notifications) and aborts the uploads they abort.
    /// See [`crate::lifecycle`] for when things are due.
    pub async fn apply_lifecycle(&self, now_ms: i64) -> Result<LifecycleCounts> {
        self.blocking(move |this| this.apply_lifecycle_blocking(now_ms))
            .await
    }

    fn apply_lifecycle_blocking(&self, now_ms: i64) -> Result<LifecycleCounts> {
        let mut counts = LifecycleCounts::default();
        let configs = self.meta.lifecycle_configs()?;
        if configs.is_empty() {
            return Ok(counts);
        }
        let lifecycle = Requester {
            principal: "AmazonS3".to_string(),
            source_ip: "s3.amazonaws.com".to_string(),
            ..Requester::default()
        };
        for (bucket, config) in &configs {
            for rule in &config.rules {
                if !rule.enabled || rule.expiration.is_none() {
                    continue;
                }
                counts.expired += self.expire_by_rule(bucket, rule, now_ms, &lifecycle)?;
            }
        }
        let uploads = self.meta.uploads_started_before(now_ms)?;
        for u in &uploads {
            let Some((_, config)) = configs.iter().find(|(b, _)| b == &u.bucket) else {
                continue;
            };
            if !config
                .rules
                .iter()
                .any(|r| r.aborts(&u.key, u.created_ms, now_ms))
            {
                continue;
            }
            match self.meta.abort_upload(&u.bucket, &u.key, &u.upload_id) {
                Ok(released) => {
                    self.release(&released);
                    counts.aborted += 1;
                }
                Err(ObjectError::NoSuchUpload(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(counts)
    }

    /// Deletes the objects of `bucket` that `rule` expires; returns how many.
    fn expire_by_rule(
        &self,
        bucket: &str,
        rule: &LifecycleRule,
        now_ms: i64,
        requester: &Requester,
    ) -> Result<usize> {
        let mut expired = 0;
        let mut continuation = None;
        loop {
            let page = match self.meta.list_objects(&ListQuery {
                bucket: bucket.to_string(),
                prefix: rule.filter.prefix().to_string(),
                delimiter: None,
                start_after: None,
                continuation: continuation.take(),
                max_keys: 1000,
            }) {
                Ok(p) => p,
                // Deleted meanwhile.
                Err(ObjectError::NoSuchBucket(_)) => return Ok(expired),
                Err(e) => return Err(e),
            };
            for obj in page.objects.iter().filter(|o| rule.expires(o, now_ms)) {
                let notes = self.notes(
                    (bucket, &obj.key),
                    EventKind::LifecycleExpiration,
                    now_ms,
                    requester,
                )?;
                let removed =
                    self.meta
                        .expire_object(bucket, &obj.key, obj.last_modified_ms, &notes)?;
                if let Some(released) = removed {
                    self.notifier.woken_by(&notes);
                    self.release(&released);
                    expired += 1;
                }
            }
            match page.next_continuation {
                Some(next) => continuation = Some(next),
                None => return Ok(expired),
            }
        }
    }
}
