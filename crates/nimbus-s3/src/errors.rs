//! The one mapping from the object store's errors to S3 error codes (and so to S3's XML
//! error body and HTTP status, which `s3s` writes).

use axum::response::{IntoResponse, Response};
use nimbus_objects::ObjectError;
use s3s::{S3Error, S3ErrorCode};

/// The S3 error for an object-store error. Internal failures are logged in full and
/// answered with a generic `InternalError`.
pub(crate) fn s3_error(e: ObjectError) -> S3Error {
    use ObjectError as E;
    let code = match &e {
        E::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        E::NoSuchKey(_) => S3ErrorCode::NoSuchKey,
        E::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        E::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        E::BucketAlreadyOwnedByYou(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        E::InvalidBucketName { .. } => S3ErrorCode::InvalidBucketName,
        E::KeyTooLong(_) => S3ErrorCode::KeyTooLongError,
        E::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
        E::InvalidRequest(_) => S3ErrorCode::InvalidRequest,
        E::MalformedXml(_) => S3ErrorCode::MalformedXML,
        E::NotImplemented(_) => S3ErrorCode::NotImplemented,
        E::NoSuchCorsConfiguration(_) => S3ErrorCode::NoSuchCORSConfiguration,
        E::NoSuchLifecycleConfiguration(_) => S3ErrorCode::NoSuchLifecycleConfiguration,
        E::InvalidPart(_) => S3ErrorCode::InvalidPart,
        E::InvalidTag(_) => S3ErrorCode::InvalidTag,
        E::NoSuchTagSet(_) => S3ErrorCode::NoSuchTagSet,
        E::QuotaExceeded(_) => {
            // Nimbus's own (S3 has no quotas): 403, as MinIO's bucket quota error.
            let mut err =
                S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), e.to_string());
            err.set_status_code(axum::http::StatusCode::FORBIDDEN);
            return err;
        }
        E::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        E::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        E::EntityTooLarge { .. } => S3ErrorCode::EntityTooLarge,
        E::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
        E::BadDigest | E::BadChecksum(_) => S3ErrorCode::BadDigest,
        E::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        E::NotModified => S3ErrorCode::NotModified,
        E::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        E::InvalidPartNumber { .. } => {
            // Not among s3s's codes: S3's code and status.
            let mut err = S3Error::with_message(
                S3ErrorCode::Custom("InvalidPartNumber".into()),
                e.to_string(),
            );
            err.set_status_code(axum::http::StatusCode::RANGE_NOT_SATISFIABLE);
            return err;
        }
        E::Body(_) => S3ErrorCode::IncompleteBody,
        E::Io { .. } | E::Database(_) | E::Corrupt(_) => {
            tracing::error!(error = %e, "object store failure");
            return S3Error::with_message(
                S3ErrorCode::InternalError,
                "we encountered an internal error; please try again",
            );
        }
    };
    S3Error::with_message(code, e.to_string())
}

/// `?` on object-store results inside the S3 operations.
pub(crate) trait OrS3<T> {
    fn or_s3(self) -> s3s::S3Result<T>;
}

impl<T> OrS3<T> for Result<T, ObjectError> {
    fn or_s3(self) -> s3s::S3Result<T> {
        self.map_err(s3_error)
    }
}

/// The answer when `s3s` itself fails at the HTTP level (rare: a response it cannot build).
pub(crate) fn internal_error_response() -> Response {
    (
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
         <Message>we encountered an internal error; please try again</Message></Error>",
    )
        .into_response()
}
