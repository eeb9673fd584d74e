//! SQS's errors and their two wire shapes: the JSON protocol's
//! `{"__type":"com.amazonaws.sqs#Name","message":…}` with `x-amzn-query-error: CODE;Sender`
//! (botocore takes the code from that header), and the query protocol's `<ErrorResponse>`.

use crate::{xml_escape, Protocol};
use thiserror::Error;

/// Every error the SQS API answers with. Messages are SQS's where the reference gives one.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SqsError {
    #[error("The specified queue does not exist.")]
    QueueDoesNotExist,
    #[error("{0}")]
    QueueNameExists(String),
    #[error("{0}")]
    InvalidAttributeName(String),
    #[error("{0}")]
    InvalidAttributeValue(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    MissingParameter(String),
    #[error("{0}")]
    InvalidMessageContents(String),
    #[error("{0}")]
    ReceiptHandleIsInvalid(String),
    #[error("{0}")]
    MessageNotInflight(String),
    #[error("There should be at least one entry in the request.")]
    EmptyBatchRequest,
    #[error("Maximum number of entries per request are 10. You have sent {0}.")]
    TooManyEntriesInBatchRequest(usize),
    #[error("Id {0} repeated.")]
    BatchEntryIdsNotDistinct(String),
    #[error("{0}")]
    InvalidBatchEntryId(String),
    #[error("{0}")]
    BatchRequestTooLong(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("{0}")]
    ResourceNotFound(String),
    /// An operation SQS does not have.
    #[error("{0}")]
    InvalidAction(String),
    /// A body that is not JSON (JSON protocol) or not a form (query protocol).
    #[error("{0}")]
    Malformed(String),
    /// The queues are full (the server's backlog limit).
    #[error("{0}")]
    OverLimit(String),
    #[error("{0}")]
    AccessDenied(String),
    /// A request that is not signed, or not signed right: `code` is SQS's
    /// (`MissingAuthenticationToken`, `IncompleteSignature`, `SignatureDoesNotMatch`,
    /// `InvalidClientTokenId`).
    #[error("{message}")]
    NotAuthenticated { code: &'static str, message: String },
    /// Details are logged by the caller, never sent.
    #[error("We encountered an internal error. Please try again.")]
    Internal,
}

impl SqsError {
    /// `MissingParameter` for the request field `field`, in SQS's words.
    pub fn missing(field: &str) -> Self {
        SqsError::MissingParameter(format!("The request must contain the parameter {field}."))
    }

    /// The JSON protocol's `__type` shape name (after `com.amazonaws.sqs#`).
    pub fn shape(&self) -> &'static str {
        match self {
            SqsError::QueueDoesNotExist => "QueueDoesNotExist",
            SqsError::QueueNameExists(_) => "QueueNameExists",
            SqsError::InvalidAttributeName(_) => "InvalidAttributeName",
            SqsError::InvalidAttributeValue(_) => "InvalidAttributeValue",
            SqsError::InvalidParameterValue(_) => "InvalidParameterValue",
            SqsError::MissingParameter(_) => "MissingParameter",
            SqsError::InvalidMessageContents(_) => "InvalidMessageContents",
            SqsError::ReceiptHandleIsInvalid(_) => "ReceiptHandleIsInvalid",
            SqsError::MessageNotInflight(_) => "MessageNotInflight",
            SqsError::EmptyBatchRequest => "EmptyBatchRequest",
            SqsError::TooManyEntriesInBatchRequest(_) => "TooManyEntriesInBatchRequest",
            SqsError::BatchEntryIdsNotDistinct(_) => "BatchEntryIdsNotDistinct",
            SqsError::InvalidBatchEntryId(_) => "InvalidBatchEntryId",
            SqsError::BatchRequestTooLong(_) => "BatchRequestTooLong",
            SqsError::UnsupportedOperation(_) => "UnsupportedOperation",
            SqsError::ResourceNotFound(_) => "ResourceNotFoundException",
            SqsError::InvalidAction(_) => "InvalidAction",
            SqsError::Malformed(_) => "SerializationException",
            SqsError::OverLimit(_) => "OverLimit",
            SqsError::AccessDenied(_) => "AccessDenied",
            SqsError::NotAuthenticated { code, .. } => code,
            SqsError::Internal => "InternalError",
        }
    }

    /// The code botocore reports for this error in `protocol`: the JSON protocol's
    /// `x-amzn-query-error` code is the query protocol's, except for a body that is not JSON.
    pub fn code_in(&self, protocol: Protocol) -> &'static str {
        match (self, protocol) {
            (SqsError::Malformed(_), Protocol::Json) => self.shape(),
            _ => self.code(),
        }
    }

    /// The query protocol's `Code` (also the JSON protocol's `x-amzn-query-error` code).
    pub fn code(&self) -> &'static str {
        match self {
            SqsError::QueueDoesNotExist => "AWS.SimpleQueueService.NonExistentQueue",
            SqsError::QueueNameExists(_) => "QueueAlreadyExists",
            SqsError::MessageNotInflight(_) => "AWS.SimpleQueueService.MessageNotInflight",
            SqsError::EmptyBatchRequest => "AWS.SimpleQueueService.EmptyBatchRequest",
            SqsError::TooManyEntriesInBatchRequest(_) => {
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
            }
            SqsError::BatchEntryIdsNotDistinct(_) => {
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
            }
            SqsError::InvalidBatchEntryId(_) => "AWS.SimpleQueueService.InvalidBatchEntryId",
            SqsError::BatchRequestTooLong(_) => "AWS.SimpleQueueService.BatchRequestTooLong",
            SqsError::UnsupportedOperation(_) => "AWS.SimpleQueueService.UnsupportedOperation",
            SqsError::Malformed(_) => "MalformedQueryString",
            other => other.shape(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            SqsError::OverLimit(_)
            | SqsError::AccessDenied(_)
            | SqsError::NotAuthenticated { .. } => 403,
            SqsError::ResourceNotFound(_) => 404,
            SqsError::Internal => 500,
            _ => 400,
        }
    }

    /// `Sender` (the client's fault) or `Receiver`.
    pub fn fault(&self) -> &'static str {
        if matches!(self, SqsError::Internal) {
            "Receiver"
        } else {
            "Sender"
        }
    }

    /// Whether a batch entry failing with this error is the sender's fault.
    pub fn sender_fault(&self) -> bool {
        self.fault() == "Sender"
    }

    /// The response: status, headers and body in `protocol`'s error shape.
    pub fn render(&self, protocol: Protocol, request_id: &str) -> crate::Rendered {
        let message = self.to_string();
        match protocol {
            Protocol::Json => {
                let body = serde_json::json!({
                    "__type": format!("com.amazonaws.sqs#{}", self.shape()),
                    "message": message,
                });
                crate::Rendered {
                    status: self.status(),
                    content_type: crate::JSON_CONTENT_TYPE,
                    headers: vec![(
                        "x-amzn-query-error",
                        format!("{};{}", self.code_in(protocol), self.fault()),
                    )],
                    body: body.to_string().into_bytes(),
                }
            }
            Protocol::Query => {
                let body = format!(
                    "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{ns}\"><Error><Type>{t}</Type><Code>{c}</Code><Message>{m}</Message><Detail/></Error><RequestId>{r}</RequestId></ErrorResponse>",
                    ns = crate::XMLNS,
                    t = self.fault(),
                    c = self.code(),
                    m = xml_escape(&message),
                    r = xml_escape(request_id),
                );
                crate::Rendered {
                    status: self.status(),
                    content_type: "text/xml",
                    headers: Vec::new(),
                    body: body.into_bytes(),
                }
            }
        }
    }
}

/// `InvalidParameterValue` with SQS's wording.
pub fn invalid(param: &str, value: impl std::fmt::Display, reason: &str) -> SqsError {
    SqsError::InvalidParameterValue(format!(
        "Value {value} for parameter {param} is invalid. Reason: {reason}"
    ))
}
