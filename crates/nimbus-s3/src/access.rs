//! Who may do what: SigV4 secrets come from Nimbus's access keys ([`KeyLookup`]), and each
//! request is checked against the signing key's policy with IAM's S3 action names on S3
//! ARNs (`arn:aws:s3:::BUCKET`, `arn:aws:s3:::BUCKET/KEY`), evaluated by `nimbus-auth`.

use nimbus_auth::{Decision, Policy};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, DeleteObjectsInput, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{s3_error, S3Request, S3Result};
use std::sync::Arc;

/// Nimbus's access keys as the S3 listener sees them.
pub trait KeyLookup: Send + Sync + 'static {
    /// The secret and the policy of an access key, if it exists.
    fn lookup(&self, access_key_id: &str) -> Option<(String, Policy)>;
    /// For temporary (session) credentials: whether `token` (the request's
    /// `X-Amz-Security-Token`) is the key's session token. Keys that are not session
    /// credentials need none.
    fn check_token(&self, access_key_id: &str, token: Option<&str>) -> TokenCheck {
        let _ = (access_key_id, token);
        TokenCheck::Valid
    }
}

/// The outcome of [`KeyLookup::check_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Not session credentials, or the right token.
    Valid,
    /// Session credentials without a token.
    Missing,
    /// Another token.
    Invalid,
    /// The credentials have expired.
    Expired,
}

/// The IAM action an S3 operation needs (IAM's names: `HeadObject` needs `s3:GetObject`,
/// the multipart steps `s3:PutObject`, listing a bucket `s3:ListBucket`).
pub fn action_of(op: &str) -> String {
    let action = match op {
        "ListBuckets" => "ListAllMyBuckets",
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => "ListBucket",
        "HeadObject" => "GetObject",
        "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "PutObject",
        "DeleteObjects" => "DeleteObject",
        "ListParts" => "ListMultipartUploadParts",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "PutBucketNotificationConfiguration" => "PutBucketNotification",
        "GetBucketNotificationConfiguration" => "GetBucketNotification",
        // S3 has no DeleteBucketCORS / DeleteLifecycleConfiguration actions.
        "PutBucketCors" | "DeleteBucketCors" => "PutBucketCORS",
        "GetBucketCors" => "GetBucketCORS",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "PutLifecycleConfiguration",
        "GetBucketLifecycleConfiguration" => "GetLifecycleConfiguration",
        // As IAM: DeleteBucketTagging needs s3:PutBucketTagging.
        "DeleteBucketTagging" => "PutBucketTagging",
        other => other,
    };
    format!("s3:{action}")
}

fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

fn resource_of(path: &S3Path) -> String {
    match path {
        S3Path::Root => "*".to_string(),
        S3Path::Bucket { bucket } => bucket_arn(bucket),
        S3Path::Object { bucket, key } => object_arn(bucket, key),
    }
}

/// Query parameters that carry a signature (SigV4 and SigV2 presigned URLs).
pub(crate) fn is_signature_param(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "AWSAccessKeyId",
        "Signature",
        "Expires",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// SigV4 secrets for `s3s`.
pub(crate) struct Auth(pub Arc<dyn KeyLookup>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key) {
            Some((secret, _)) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "the AWS access key id you provided does not exist in our records"
            )),
        }
    }
}

/// Policy checks for `s3s`.
pub(crate) struct Access(pub Arc<dyn KeyLookup>);

impl Access {
    /// Allows `action` on `resource` for the key that signed the request, or `AccessDenied`.
    fn allow(&self, access_key: Option<&str>, action: &str, resource: &str) -> S3Result<()> {
        let policy = access_key.and_then(|id| self.0.lookup(id)).map(|(_, p)| p);
        match policy.map(|p| p.evaluate(action, resource)) {
            Some(Decision::Allow) => Ok(()),
            _ => {
                tracing::debug!(action, resource, key = ?access_key, "S3 request denied");
                Err(s3_error!(
                    AccessDenied,
                    "access denied: the key's policy does not allow {action} on {resource}"
                ))
            }
        }
    }
}

fn key_of<T>(req: &S3Request<T>) -> Option<&str> {
    req.credentials.as_ref().map(|c| c.access_key.as_str())
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "a signed request is required"));
        };
        let op = cx.s3_op().name();
        // DeleteObjects names its keys in the body: checked key by key below.
        if op == "DeleteObjects" {
            return Ok(());
        }
        self.allow(
            Some(&creds.access_key),
            &action_of(op),
            &resource_of(cx.s3_path()),
        )
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        // The destination was checked as s3:PutObject; the source needs s3:GetObject.
        if let CopySource::Bucket { bucket, key, .. } = &req.input.copy_source {
            self.allow(key_of(req), "s3:GetObject", &object_arn(bucket, key))?;
        }
        Ok(())
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        // As CopyObject: s3:PutObject on the destination, s3:GetObject on the source.
        if let CopySource::Bucket { bucket, key, .. } = &req.input.copy_source {
            self.allow(key_of(req), "s3:GetObject", &object_arn(bucket, key))?;
        }
        Ok(())
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let bucket = &req.input.bucket;
        for obj in &req.input.delete.objects {
            self.allow(
                key_of(req),
                "s3:DeleteObject",
                &object_arn(bucket, &obj.key),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_iam_actions() {
        assert_eq!(action_of("GetObject"), "s3:GetObject");
        assert_eq!(action_of("HeadObject"), "s3:GetObject");
        assert_eq!(action_of("UploadPart"), "s3:PutObject");
        assert_eq!(action_of("UploadPartCopy"), "s3:PutObject");
        assert_eq!(action_of("PutBucketTagging"), "s3:PutBucketTagging");
        assert_eq!(action_of("DeleteBucketTagging"), "s3:PutBucketTagging");
        assert_eq!(action_of("ListObjectsV2"), "s3:ListBucket");
        assert_eq!(action_of("ListBuckets"), "s3:ListAllMyBuckets");
        assert_eq!(action_of("DeleteBucket"), "s3:DeleteBucket");
        assert_eq!(
            action_of("PutBucketNotificationConfiguration"),
            "s3:PutBucketNotification"
        );
        assert_eq!(
            action_of("GetBucketNotificationConfiguration"),
            "s3:GetBucketNotification"
        );
        assert_eq!(action_of("DeleteObjectTagging"), "s3:DeleteObjectTagging");
        assert_eq!(action_of("PutBucketCors"), "s3:PutBucketCORS");
        assert_eq!(action_of("DeleteBucketCors"), "s3:PutBucketCORS");
        assert_eq!(action_of("GetBucketCors"), "s3:GetBucketCORS");
        assert_eq!(
            action_of("DeleteBucketLifecycle"),
            "s3:PutLifecycleConfiguration"
        );
        assert_eq!(
            action_of("GetBucketLifecycleConfiguration"),
            "s3:GetLifecycleConfiguration"
        );
    }

    #[test]
    fn a_prefix_policy_allows_only_its_prefix() {
        let p = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":"arn:aws:s3:::b/in/*"}]}"#,
        )
        .unwrap();
        let cases = [
            ("s3:GetObject", "b", "in/x.jpg", true),
            ("s3:GetObject", "b", "out/x.jpg", false),
            ("s3:GetObject", "bb", "in/x", false),
            ("s3:PutObject", "b", "in/x", false),
        ];
        for (action, bucket, key, allowed) in cases {
            let d = p.evaluate(action, &object_arn(bucket, key));
            assert_eq!(d == Decision::Allow, allowed, "{action} {bucket}/{key}");
        }
    }

    #[test]
    fn signature_parameters_are_recognised() {
        assert!(is_signature_param("X-Amz-Signature"));
        assert!(is_signature_param("x-amz-credential"));
        assert!(!is_signature_param("uploadId"));
        assert!(!is_signature_param("list-type"));
    }
}
