//! The one error type of this crate.

use thiserror::Error;

/// Why a request was not authenticated or not authorized, or why an input was invalid.
/// Messages follow AWS's wording where clients show them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No `Authorization` header at all.
    #[error("Missing Authentication Token")]
    Missing,
    /// An `Authorization` header that is not a complete SigV4 header, or a request missing
    /// what the signature must cover (`x-amz-date`, a signed `host`).
    #[error("{0}")]
    Incomplete(String),
    /// The signature does not match the request.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    SignatureMismatch,
    /// The request's date is more than 15 minutes away from the server's clock.
    #[error("{0}")]
    Expired(String),
    /// The access key id is not known.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// Authenticated, but no policy allows the action on the resource.
    #[error("User: {user} is not authorized to perform: {action} on resource: {resource}")]
    Denied {
        user: String,
        action: String,
        resource: String,
    },
    /// A policy document that is not valid.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
}
