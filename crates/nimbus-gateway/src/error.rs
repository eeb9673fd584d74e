//! The single mapping from errors to HTTP responses, shared by every surface.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_core::CoreError;
use nimbus_pool::PoolError;
use nimbus_store::StoreError;
use thiserror::Error;

/// Every error an HTTP handler can answer with. Each maps to one Lambda error type.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidRequestContent(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// `GetProvisionedConcurrencyConfig` of a qualifier that has none.
    #[error("{0}")]
    ProvisionedConfigNotFound(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    AccessDenied(String),
    /// No `Authorization` header on a request that needs one.
    #[error("{0}")]
    MissingAuthenticationToken(String),
    /// A malformed or incomplete SigV4 `Authorization` header.
    #[error("{0}")]
    IncompleteSignature(String),
    /// A signature that does not match, or a date too far from the server's clock.
    #[error("{0}")]
    InvalidSignature(String),
    /// An access key id the server does not know.
    #[error("{0}")]
    UnrecognizedClient(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{message}")]
    Throttled {
        message: String,
        reason: &'static str,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A function behind a function URL or route failed or answered something unusable.
    #[error("{0}")]
    FunctionFailed(String),
    /// An internal failure: logged in full, reported to the client without details.
    #[error("internal error")]
    Internal(String),
    /// An error of the SQS API, answered in SQS's shape for the request's protocol.
    #[error("{error}")]
    Sqs {
        error: nimbus_sqs::SqsError,
        protocol: nimbus_sqs::Protocol,
    },
    /// An error of the IAM API, answered in IAM's XML shape.
    #[error("{0}")]
    Iam(crate::iam::IamError),
}

impl ApiError {
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidParameter(_) => "InvalidParameterValueException",
            ApiError::InvalidRequestContent(_) => "InvalidRequestContentException",
            ApiError::NotFound(_) => "ResourceNotFoundException",
            ApiError::Conflict(_) => "ResourceConflictException",
            ApiError::ProvisionedConfigNotFound(_) => {
                "ProvisionedConcurrencyConfigNotFoundException"
            }
            ApiError::PreconditionFailed(_) => "PreconditionFailedException",
            ApiError::AccessDenied(_) => "AccessDeniedException",
            ApiError::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
            ApiError::IncompleteSignature(_) => "IncompleteSignatureException",
            ApiError::InvalidSignature(_) => "InvalidSignatureException",
            ApiError::UnrecognizedClient(_) => "UnrecognizedClientException",
            ApiError::TooLarge(_) => "RequestTooLargeException",
            ApiError::Throttled { .. } => "TooManyRequestsException",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaTypeException",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailableException",
            ApiError::FunctionFailed(_) => "FunctionError",
            ApiError::Internal(_) => "ServiceException",
            ApiError::Sqs { error, .. } => error.shape(),
            ApiError::Iam(e) => e.code,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParameter(_) | ApiError::InvalidRequestContent(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) | ApiError::ProvisionedConfigNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::AccessDenied(_)
            | ApiError::MissingAuthenticationToken(_)
            | ApiError::IncompleteSignature(_)
            | ApiError::InvalidSignature(_)
            | ApiError::UnrecognizedClient(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::FunctionFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Sqs { error, .. } => {
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Iam(e) => StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        if let ApiError::Sqs { error, protocol } = &self {
            let r = error.render(*protocol, &request_id);
            let mut resp = (
                self.status(),
                [("content-type", r.content_type)],
                axum::body::Body::from(r.body),
            )
                .into_response();
            for (k, v) in r.headers {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    resp.headers_mut().insert(k, v);
                }
            }
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            return resp;
        }
        if let ApiError::Iam(e) = &self {
            let mut resp = (
                self.status(),
                [("content-type", "text/xml")],
                e.to_xml(&request_id),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            return resp;
        }
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(request_id, "internal error: {detail}");
                format!("internal error (request id {request_id}); the server log has the details")
            }
            other => other.to_string(),
        };
        let error_type = self.error_type();
        let mut body = serde_json::json!({
            "type": error_type, "message": message, "Type": "User", "Message": message,
        });
        let mut resp = (
            self.status(),
            [("content-type", "application/json")],
            String::new(),
        )
            .into_response();
        if let ApiError::Throttled { reason, .. } = &self {
            body["Reason"] = (*reason).into();
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        *resp.body_mut() = axum::body::Body::from(body.to_string());
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-amzn-requestid", v);
        }
        resp
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError::InvalidParameter(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_not_found() {
            ApiError::NotFound(e.to_string())
        } else if e.is_conflict() {
            ApiError::Conflict(e.to_string())
        } else if e.is_precondition_failed() {
            ApiError::PreconditionFailed(e.to_string())
        } else if e.is_invalid_input() {
            ApiError::InvalidParameter(e.to_string())
        } else if e.is_full() {
            ApiError::Throttled {
                message: e.to_string(),
                reason: "BacklogLimitExceeded",
            }
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Throttled { reason, .. } => ApiError::Throttled {
                message: format!("Rate Exceeded: {e}"),
                reason: reason.lambda_reason(),
            },
            // Retryable like any throttle: busy instances finish and free the budget.
            PoolError::MemoryExhausted { .. } => ApiError::Throttled {
                message: format!("Rate Exceeded: {e}"),
                reason: "ConcurrentInvocationLimitExceeded",
            },
            PoolError::ShuttingDown => ApiError::ServiceUnavailable(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("task failed: {e}"))
    }
}
