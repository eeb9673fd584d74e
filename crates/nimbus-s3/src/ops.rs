//! The S3 operations, each a translation to one `nimbus-objects` call.

use crate::checksums;
use crate::convert::{
    attrs_of, byte_range, content_md5, copy_source_range, etag, fill_object_headers, list_text,
    read_conditions, timestamp, write_condition,
};
use crate::errors::OrS3;
use crate::requester::requester_of;
use nimbus_objects::{BodyChecks, ListQuery, Objects, PutOptions};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use std::collections::BTreeMap;

/// The most keys (or parts, or uploads) one list call returns, as S3.
const MAX_LIST: usize = 1000;

/// The S3 service over the object store.
pub(crate) struct NimbusS3 {
    objects: Objects,
}

impl NimbusS3 {
    pub(crate) fn new(objects: Objects) -> Self {
        Self { objects }
    }
}

/// One page of a listing, encoded for the response (`encoding-type=url`).
struct Listed {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    next: Option<String>,
    last: Option<String>,
    prefix: String,
    delimiter: Option<String>,
    max: usize,
    url: bool,
}

impl NimbusS3 {
    /// ListObjects (v1 and v2): `(bucket, prefix, delimiter, encoding-type)`.
    async fn list(
        &self,
        (bucket, prefix, delimiter, encoding): (
            &str,
            &Option<String>,
            &Option<String>,
            &Option<EncodingType>,
        ),
        max_keys: Option<i32>,
        start_after: Option<String>,
        continuation: Option<String>,
        with_owner: bool,
    ) -> S3Result<Listed> {
        let url = encoding
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let max = list_limit(max_keys)?;
        let prefix = prefix.clone().unwrap_or_default();
        let page = self
            .objects
            .list_objects(ListQuery {
                bucket: bucket.to_string(),
                prefix: prefix.clone(),
                delimiter: delimiter.clone(),
                start_after,
                continuation,
                max_keys: max,
            })
            .await
            .or_s3()?;
        let (contents, prefixes) = listing(&page, url, with_owner);
        Ok(Listed {
            contents,
            prefixes,
            next: page.next_continuation,
            last: page.last.map(|l| list_text(&l, url)),
            prefix: list_text(&prefix, url),
            delimiter: delimiter.as_ref().map(|d| list_text(d, url)),
            max,
            url,
        })
    }
}

fn ok<T>(output: T) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(output))
}

fn list_limit(max: Option<i32>) -> S3Result<usize> {
    match max {
        None => Ok(MAX_LIST),
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "the max-keys value must not be negative"
        )),
        Some(n) => Ok((n as usize).min(MAX_LIST)),
    }
}

/// A tag set as a map; every tag needs a key and a value.
fn tag_map(set: TagSet) -> S3Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    for t in set {
        let (Some(k), Some(v)) = (t.key, t.value) else {
            return Err(s3_error!(InvalidTag, "every tag needs a Key and a Value"));
        };
        tags.insert(k, v);
    }
    Ok(tags)
}

fn tag_set(tags: BTreeMap<String, String>) -> TagSet {
    tags.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

/// GetObject/HeadObject `partNumber` (1–10000); not together with `Range`, as S3.
fn part_number(part: Option<i32>, with_range: bool) -> S3Result<Option<u32>> {
    let Some(n) = part else { return Ok(None) };
    if with_range {
        return Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        ));
    }
    match u32::try_from(n) {
        Ok(n) if (1..=nimbus_objects::MAX_PARTS).contains(&n) => Ok(Some(n)),
        _ => Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        )),
    }
}

/// A `Content-Length` that is not a valid size.
fn declared_len(len: Option<i64>) -> S3Result<Option<u64>> {
    len.map(|n| u64::try_from(n).map_err(|_| s3_error!(InvalidArgument, "invalid Content-Length")))
        .transpose()
}

fn body_of(body: Option<StreamingBlob>) -> StreamingBlob {
    body.unwrap_or_else(|| {
        StreamingBlob::wrap(futures_util::stream::empty::<
            Result<bytes::Bytes, std::io::Error>,
        >())
    })
}

#[async_trait::async_trait]
impl S3 for NimbusS3 {
    // ----- buckets -----

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.objects
            .create_bucket(&req.input.bucket)
            .await
            .or_s3()?;
        ok(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.objects
            .delete_bucket(&req.input.bucket)
            .await
            .or_s3()?;
        ok(DeleteBucketOutput::default())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let requester = requester_of(&req);
        let i = req.input;
        let config = crate::notify::config_of(i.notification_configuration)?;
        let skip_check = i.skip_destination_validation.unwrap_or(false);
        self.objects
            .set_notification_config(&i.bucket, config, &requester, skip_check)
            .await
            .or_s3()?;
        ok(PutBucketNotificationConfigurationOutput::default())
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        let config = self
            .objects
            .notification_config(&req.input.bucket)
            .await
            .or_s3()?;
        ok(crate::notify::output_of(config))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let i = req.input;
        let config = crate::cors::config_of(i.cors_configuration);
        self.objects
            .set_cors_config(&i.bucket, config)
            .await
            .or_s3()?;
        ok(PutBucketCorsOutput::default())
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let config = self.objects.cors_config(&req.input.bucket).await.or_s3()?;
        ok(crate::cors::output_of(config))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.objects
            .delete_cors_config(&req.input.bucket)
            .await
            .or_s3()?;
        ok(DeleteBucketCorsOutput::default())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let i = req.input;
        let config = crate::lifecycle::config_of(i.lifecycle_configuration)?;
        self.objects
            .set_lifecycle_config(&i.bucket, config)
            .await
            .or_s3()?;
        ok(PutBucketLifecycleConfigurationOutput::default())
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let config = self
            .objects
            .lifecycle_config(&req.input.bucket)
            .await
            .or_s3()?;
        ok(crate::lifecycle::output_of(config))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.objects
            .delete_lifecycle_config(&req.input.bucket)
            .await
            .or_s3()?;
        ok(DeleteBucketLifecycleOutput::default())
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.objects.bucket(&req.input.bucket).await.or_s3()?;
        ok(HeadBucketOutput::default())
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.objects.bucket(&req.input.bucket).await.or_s3()?;
        ok(GetBucketLocationOutput::default())
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.objects.list_buckets().await.or_s3()?;
        ok(ListBucketsOutput {
            buckets: Some(
                buckets
                    .into_iter()
                    .map(|b| Bucket {
                        name: Some(b.name),
                        creation_date: Some(timestamp(b.created_ms)),
                        bucket_region: None,
                    })
                    .collect(),
            ),
            owner: Some(owner()),
            ..Default::default()
        })
    }

    // ----- objects -----

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let requester = requester_of(&req);
        let input = req.input;
        let opts = PutOptions {
            attrs: attrs_of!(input),
            condition: write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?,
            content_md5: content_md5(input.content_md5.as_ref())?,
            declared_len: declared_len(input.content_length)?,
            requester,
            checksum: checksums::request_of!(input)?,
        };
        let meta = self
            .objects
            .put_object(&input.bucket, &input.key, body_of(input.body), opts)
            .await
            .or_s3()?;
        let mut out = PutObjectOutput {
            e_tag: Some(etag(&meta)),
            size: Some(meta.size as i64),
            checksum_type: meta.checksum.as_ref().map(checksums::kind),
            ..Default::default()
        };
        checksums::fill!(out, &meta.checksum);
        ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        let conditions = read_conditions(
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        );
        let read = match part_number(i.part_number, i.range.is_some())? {
            Some(n) => self
                .objects
                .get_object_part(&i.bucket, &i.key, n, conditions)
                .await
                .or_s3()?,
            None => self
                .objects
                .get_object(
                    &i.bucket,
                    &i.key,
                    i.range.as_ref().map(byte_range),
                    conditions,
                )
                .await
                .or_s3()?,
        };
        let mut out = GetObjectOutput::default();
        fill_object_headers!(out, &read.meta);
        // The whole object's checksum, only when the whole object is read (as S3).
        if checksums::enabled(i.checksum_mode.as_ref()) && read.range.is_none() {
            out.checksum_type = read.meta.checksum.as_ref().map(checksums::kind);
            checksums::fill!(out, &read.meta.checksum);
        }
        if i.part_number.is_some() {
            out.parts_count = read.meta.parts.map(|n| n as i32);
        }
        out.tag_count =
            (!read.meta.attrs.tags.is_empty()).then_some(read.meta.attrs.tags.len() as i32);
        let len = match read.range {
            Some((start, len)) => {
                out.content_range = Some(format!(
                    "bytes {start}-{}/{}",
                    (start + len).saturating_sub(1),
                    read.meta.size
                ));
                len
            }
            None => read.meta.size,
        };
        out.content_length = Some(len as i64);
        out.body = Some(StreamingBlob::wrap(read.body));
        ok(out)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        let conditions = read_conditions(
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        );
        let part = part_number(i.part_number, i.range.is_some())?;
        let meta = self
            .objects
            .head_object(&i.bucket, &i.key, &conditions)
            .await
            .or_s3()?;
        let mut out = HeadObjectOutput::default();
        fill_object_headers!(out, &meta);
        out.content_length = Some(meta.size as i64);
        if checksums::enabled(i.checksum_mode.as_ref()) && part.is_none() {
            out.checksum_type = meta.checksum.as_ref().map(checksums::kind);
            checksums::fill!(out, &meta.checksum);
        }
        if let Some(n) = part {
            let (start, len) = meta.part_span(n).or_s3()?;
            out.content_length = Some(len as i64);
            out.parts_count = meta.parts.map(|n| n as i32);
            if meta.parts.is_some() {
                out.content_range = Some(format!(
                    "bytes {start}-{}/{}",
                    (start + len).saturating_sub(1),
                    meta.size
                ));
            }
        }
        ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.objects
            .delete_object(&req.input.bucket, &req.input.key, &requester_of(&req))
            .await
            .or_s3()?;
        ok(DeleteObjectOutput::default())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket))]
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = &req.input.bucket;
        self.objects.bucket(bucket).await.or_s3()?;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let requester = requester_of(&req);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for obj in &req.input.delete.objects {
            match self
                .objects
                .delete_object(bucket, &obj.key, &requester)
                .await
            {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(obj.key.clone()),
                    ..Default::default()
                }),
                Err(e) => {
                    let e = crate::errors::s3_error(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(obj.key.clone()),
                        message: e.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        ok(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(bucket = %req.input.bucket, key = %req.input.key))]
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = &req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &i.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ));
        };
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && src_bucket.as_ref() == i.bucket && src_key.as_ref() == i.key {
            return Err(s3_error!(
                InvalidRequest,
                "this copy request is illegal because it is trying to copy an object to itself \
                 without changing the object's metadata"
            ));
        }
        let attrs = if replace { Some(attrs_of!(*i)) } else { None };
        let source_conditions = read_conditions(
            i.copy_source_if_match.as_ref(),
            i.copy_source_if_none_match.as_ref(),
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        );
        let meta = self
            .objects
            .copy_object(
                (src_bucket, src_key),
                (&i.bucket, &i.key),
                source_conditions,
                attrs,
                nimbus_objects::WriteCondition::None,
                &requester_of(&req),
            )
            .await
            .map_err(|e| match e {
                // A source precondition that does not hold is a 412 on copy, never a 304.
                nimbus_objects::ObjectError::NotModified => s3_error!(PreconditionFailed),
                other => crate::errors::s3_error(other),
            })?;
        ok(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta)),
                last_modified: Some(timestamp(meta.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let l = self
            .list(
                (i.bucket.as_str(), &i.prefix, &i.delimiter, &i.encoding_type),
                i.max_keys,
                i.start_after.clone(),
                i.continuation_token.clone(),
                i.fetch_owner.unwrap_or(false),
            )
            .await?;
        ok(ListObjectsV2Output {
            key_count: Some((l.contents.len() + l.prefixes.len()) as i32),
            is_truncated: Some(l.next.is_some()),
            next_continuation_token: l.next,
            continuation_token: i.continuation_token,
            start_after: i.start_after.map(|s| list_text(&s, l.url)),
            name: Some(i.bucket),
            prefix: Some(l.prefix),
            delimiter: l.delimiter,
            max_keys: Some(l.max as i32),
            encoding_type: i.encoding_type,
            contents: Some(l.contents),
            common_prefixes: Some(l.prefixes),
            ..Default::default()
        })
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let marker = i.marker.clone().filter(|m| !m.is_empty());
        let l = self
            .list(
                (i.bucket.as_str(), &i.prefix, &i.delimiter, &i.encoding_type),
                i.max_keys,
                marker,
                None,
                true,
            )
            .await?;
        let truncated = l.next.is_some();
        ok(ListObjectsOutput {
            marker: i.marker.map(|m| list_text(&m, l.url)),
            is_truncated: Some(truncated),
            next_marker: l.last.filter(|_| truncated),
            name: Some(i.bucket),
            prefix: Some(l.prefix),
            delimiter: l.delimiter,
            max_keys: Some(l.max as i32),
            encoding_type: i.encoding_type,
            contents: Some(l.contents),
            common_prefixes: Some(l.prefixes),
            ..Default::default()
        })
    }

    // ----- tagging -----

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let meta = self
            .objects
            .head_object(&req.input.bucket, &req.input.key, &Default::default())
            .await
            .or_s3()?;
        ok(GetObjectTaggingOutput {
            tag_set: tag_set(meta.attrs.tags),
            version_id: None,
        })
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let i = req.input;
        let tags = tag_map(i.tagging.tag_set)?;
        self.objects
            .set_bucket_tags(&i.bucket, Some(tags))
            .await
            .or_s3()?;
        ok(PutBucketTaggingOutput::default())
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let tags = self.objects.bucket_tags(&req.input.bucket).await.or_s3()?;
        ok(GetBucketTaggingOutput {
            tag_set: tag_set(tags),
        })
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.objects
            .set_bucket_tags(&req.input.bucket, None)
            .await
            .or_s3()?;
        ok(DeleteBucketTaggingOutput::default())
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let requester = requester_of(&req);
        let tags = tag_map(req.input.tagging.tag_set)?;
        self.objects
            .set_tags(&req.input.bucket, &req.input.key, tags, &requester)
            .await
            .or_s3()?;
        ok(PutObjectTaggingOutput::default())
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.objects
            .delete_tags(&req.input.bucket, &req.input.key, &requester_of(&req))
            .await
            .or_s3()?;
        ok(DeleteObjectTaggingOutput::default())
    }

    // ----- multipart -----

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = &req.input;
        let upload = self
            .objects
            .create_upload(&i.bucket, &i.key, attrs_of!(*i))
            .await
            .or_s3()?;
        ok(CreateMultipartUploadOutput {
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.upload_id),
            ..Default::default()
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(upload = %req.input.upload_id, part = req.input.part_number))]
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let i = req.input;
        let number = u32::try_from(i.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "part number must be between 1 and 10000"))?;
        let checks = BodyChecks {
            declared_len: declared_len(i.content_length)?,
            content_md5: content_md5(i.content_md5.as_ref())?,
            checksum: checksums::request_of!(i)?,
        };
        let part = self
            .objects
            .upload_part_checked(
                (&i.bucket, &i.key, &i.upload_id),
                number,
                body_of(i.body),
                checks,
            )
            .await
            .or_s3()?;
        let mut out = UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            ..Default::default()
        };
        checksums::fill!(out, &part.checksum);
        ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(upload = %req.input.upload_id, part = req.input.part_number))]
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &i.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ));
        };
        let number = u32::try_from(i.part_number)
            .map_err(|_| s3_error!(InvalidArgument, "part number must be between 1 and 10000"))?;
        let range = i
            .copy_source_range
            .as_deref()
            .map(|r| {
                copy_source_range(r).ok_or_else(|| {
                    s3_error!(
                        InvalidArgument,
                        "The x-amz-copy-source-range value must be of the form bytes=first-last \
                         where first and last are the zero-based offsets of the first and last \
                         bytes to copy"
                    )
                })
            })
            .transpose()?;
        let source_conditions = read_conditions(
            i.copy_source_if_match.as_ref(),
            i.copy_source_if_none_match.as_ref(),
            i.copy_source_if_modified_since.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
        );
        let part = self
            .objects
            .upload_part_copy(
                (src_bucket, src_key),
                source_conditions,
                range,
                (&i.bucket, &i.key, &i.upload_id),
                number,
            )
            .await
            .map_err(|e| match e {
                // A source precondition that does not hold is a 412 on copy, never a 304.
                nimbus_objects::ObjectError::NotModified => s3_error!(PreconditionFailed),
                other => crate::errors::s3_error(other),
            })?;
        ok(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(timestamp(part.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let after = u32::try_from(i.part_number_marker.unwrap_or(0)).unwrap_or(0);
        let max = list_limit(i.max_parts)?;
        let (upload, parts, more) = self
            .objects
            .list_parts(&i.bucket, &i.key, &i.upload_id, after, max)
            .await
            .or_s3()?;
        let next = parts.last().map(|p| p.number as i32);
        ok(ListPartsOutput {
            bucket: Some(upload.bucket),
            key: Some(upload.key),
            upload_id: Some(upload.upload_id),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if more { next } else { None },
            max_parts: Some(max as i32),
            is_truncated: Some(more),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| {
                        let mut part = Part {
                            part_number: Some(p.number as i32),
                            e_tag: Some(ETag::Strong(p.etag)),
                            size: Some(p.size as i64),
                            last_modified: Some(timestamp(p.last_modified_ms)),
                            ..Default::default()
                        };
                        checksums::fill!(part, &p.checksum);
                        part
                    })
                    .collect(),
            ),
            owner: Some(owner()),
            ..Default::default()
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(upload = %req.input.upload_id))]
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let requester = requester_of(&req);
        let i = req.input;
        let condition = write_condition(i.if_match.as_ref(), i.if_none_match.as_ref())?;
        let mut requested = Vec::new();
        for p in i.multipart_upload.and_then(|m| m.parts).unwrap_or_default() {
            let (Some(n), Some(tag)) = (p.part_number, p.e_tag) else {
                return Err(s3_error!(
                    MalformedXML,
                    "every part needs a PartNumber and an ETag"
                ));
            };
            let n =
                u32::try_from(n).map_err(|_| s3_error!(InvalidPart, "invalid part number {n}"))?;
            requested.push((n, tag.value().to_string()));
        }
        let meta = self
            .objects
            .complete_upload(
                &i.bucket,
                &i.key,
                &i.upload_id,
                requested,
                condition,
                &requester,
            )
            .await
            .or_s3()?;
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(meta.bucket.clone()),
            key: Some(meta.key.clone()),
            e_tag: Some(etag(&meta)),
            location: Some(format!("/{}/{}", meta.bucket, meta.key)),
            checksum_type: meta.checksum.as_ref().map(checksums::kind),
            ..Default::default()
        };
        checksums::fill!(out, &meta.checksum);
        ok(out)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        self.objects
            .abort_upload(&i.bucket, &i.key, &i.upload_id)
            .await
            .or_s3()?;
        ok(AbortMultipartUploadOutput::default())
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let max = list_limit(i.max_uploads)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let (uploads, more) = self
            .objects
            .list_uploads(&i.bucket, &prefix, max)
            .await
            .or_s3()?;
        ok(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            max_uploads: Some(max as i32),
            is_truncated: Some(more),
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.upload_id),
                        initiated: Some(timestamp(u.created_ms)),
                        owner: Some(owner()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        })
    }
}

/// The owner every bucket and object reports: the one Nimbus account.
fn owner() -> Owner {
    Owner {
        id: Some(nimbus_auth::ACCOUNT.to_string()),
        display_name: Some("nimbus".to_string()),
    }
}

/// A listing page as S3 `Contents` and `CommonPrefixes`.
fn listing(
    page: &nimbus_objects::ListPage,
    url: bool,
    with_owner: bool,
) -> (Vec<Object>, Vec<CommonPrefix>) {
    let contents = page
        .objects
        .iter()
        .map(|m| Object {
            key: Some(list_text(&m.key, url)),
            e_tag: Some(etag(m)),
            size: Some(m.size as i64),
            last_modified: Some(timestamp(m.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(
                ObjectStorageClass::STANDARD,
            )),
            owner: with_owner.then(owner),
            ..Default::default()
        })
        .collect();
    let prefixes = page
        .common_prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(list_text(p, url)),
        })
        .collect();
    (contents, prefixes)
}
