//! Authentication and authorization for Nimbus: AWS Signature Version 4 verification
//! ([`sigv4::verify`]) and signing ([`sigv4::sign`]), access key generation
//! ([`keys::generate`]) and IAM-like policies ([`Policy`]) with Lambda's resource-policy
//! principals.
//!
//! No I/O: the gateway (`nimbus-gateway`) stores keys, calls [`sigv4::verify`] on each request
//! and [`Policy::evaluate`] with the route's action and resource; the CLI signs with
//! [`sigv4::sign`].

mod error;
pub mod keys;
pub mod policy;
pub mod sigv4;

pub use error::AuthError;
pub use policy::{Decision, Policy};

/// The account id every Nimbus ARN carries.
pub const ACCOUNT: &str = "000000000000";

/// The IAM user ARN of the access key named `name`: `arn:aws:iam::000000000000:user/NAME`.
pub fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}
