use thiserror::Error;

/// Failures of the object store. Each variant is one S3 error code (the protocol layer maps
/// them one to one); callers decide by variant, never by message text.
#[derive(Debug, Error)]
pub enum ObjectError {
    #[error("the specified bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("the specified key does not exist: {0}")]
    NoSuchKey(String),
    #[error("the specified multipart upload does not exist: {0}")]
    NoSuchUpload(String),
    #[error("the bucket you tried to delete is not empty: {0}")]
    BucketNotEmpty(String),
    #[error("you already own the bucket {0}")]
    BucketAlreadyOwnedByYou(String),
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName { name: String, reason: String },
    #[error("your key is too long: {0} bytes (at most 1024)")]
    KeyTooLong(usize),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    MalformedXml(String),
    /// An S3 feature Nimbus refuses (a lifecycle transition, versioning actions).
    #[error("{0}")]
    NotImplemented(String),
    #[error("the CORS configuration does not exist: {0}")]
    NoSuchCorsConfiguration(String),
    #[error("the lifecycle configuration does not exist: {0}")]
    NoSuchLifecycleConfiguration(String),
    #[error("{0}")]
    InvalidPart(String),
    /// A bucket tag Nimbus gives a meaning to (`nimbus:quota-*`) with a bad value.
    #[error("{0}")]
    InvalidTag(String),
    /// The bucket has no tags (GetBucketTagging).
    #[error("the TagSet does not exist: {0}")]
    NoSuchTagSet(String),
    /// A write would take a bucket or the store past its quota (HTTP 403).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("part {part} is {size} bytes: every part but the last must be at least {min} bytes")]
    EntityTooSmall { part: u32, size: u64, min: u64 },
    #[error("your proposed upload exceeds the maximum allowed size ({limit} bytes)")]
    EntityTooLarge { limit: u64 },
    #[error("you did not provide the number of bytes specified by the Content-Length header ({declared} declared, {received} received)")]
    IncompleteBody { declared: u64, received: u64 },
    #[error("the Content-MD5 you specified did not match what we received")]
    BadDigest,
    /// An `x-amz-checksum-*` that does not match the bytes (S3's `BadDigest`).
    #[error("The {0} you specified did not match the calculated checksum.")]
    BadChecksum(&'static str),
    #[error("at least one of the preconditions you specified did not hold")]
    PreconditionFailed,
    /// A read precondition (`If-None-Match`, `If-Modified-Since`) says the client's copy is
    /// current: HTTP 304, no body.
    #[error("not modified")]
    NotModified,
    /// GetObject/HeadObject `?partNumber=N` beyond the object's parts (HTTP 416).
    #[error("The requested partnumber is not satisfiable (the object has {count} parts)")]
    InvalidPartNumber { part: u32, count: u32 },
    #[error("the requested range is not satisfiable (object size {size})")]
    InvalidRange { size: u64 },
    /// Reading the request body failed (the client went away, a framing error).
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata database: {0}")]
    Database(String),
    #[error("corrupt object store: {0}")]
    Corrupt(String),
}

impl ObjectError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ObjectError {
        let context = context.into();
        move |source| ObjectError::Io { context, source }
    }
}

impl From<rusqlite::Error> for ObjectError {
    fn from(e: rusqlite::Error) -> Self {
        ObjectError::Database(e.to_string())
    }
}

impl From<nimbus_pg::PgError> for ObjectError {
    /// PostgreSQL failures are the metadata database's, as SQLite's are.
    fn from(e: nimbus_pg::PgError) -> Self {
        ObjectError::Database(e.to_string())
    }
}

pub type Result<T, E = ObjectError> = std::result::Result<T, E>;
