//! SQS's wire protocol, with no I/O: both protocols SQS speaks decoded into one
//! [`Request`] enum ([`decode`]), SQS's MD5 digests ([`digest`]), message attribute rules
//! ([`attributes`]), the error codes and both error shapes ([`SqsError`]), and output in
//! either protocol ([`render_ok`]).
//!
//! - The JSON protocol (AWS JSON 1.0, what botocore ≥ 1.34.90 and the AWS CLI v2 send):
//!   `POST /`, `X-Amz-Target: AmazonSQS.<Op>`, a JSON body.
//! - The query protocol (older SDKs): a form `Action=<Op>&Version=2012-11-05&…` with
//!   flattened lists (`Attribute.1.Name`, `SendMessageBatchRequestEntry.1.Id`, …), answered
//!   in XML. The form is folded into the JSON protocol's shape first, so one decoder serves
//!   both; JSON output is unfolded into XML the same way.
//!
//! Used by `nimbus-gateway`'s SQS handler, which runs the requests on the built-in queues.

pub mod attributes;
pub mod digest;
mod error;
mod request;
mod wire;

pub use error::{invalid, SqsError};
pub use request::*;
pub use wire::{decode, render_ok, xml_escape};

/// Which protocol a request came in (and its answer goes out) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Json,
    Query,
}

/// The query protocol's XML namespace.
pub const XMLNS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";
/// The JSON protocol's content type.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// The `X-Amz-Target` prefix of the JSON protocol.
pub const TARGET_PREFIX: &str = "AmazonSQS.";

/// An encoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}
