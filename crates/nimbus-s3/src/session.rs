//! Temporary credentials on the S3 listener: a request signed with session credentials
//! (an instance's role credentials) must carry their token in `X-Amz-Security-Token`
//! (header, or query for presigned URLs), as S3 requires; `s3s` verifies the signature,
//! this layer the token, before anything else runs.

use crate::access::{KeyLookup, TokenCheck};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The access key id a request claims: SigV4 `Authorization` (`Credential=ID/…`), SigV2
/// `Authorization: AWS ID:SIG`, or a presigned URL's `X-Amz-Credential` / `AWSAccessKeyId`.
fn claimed_key(req: &Request) -> Option<String> {
    if let Some(a) = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some((_, cred)) = a.split_once("Credential=") {
            return cred.split('/').next().map(|s| s.trim().to_string());
        }
        if let Some(rest) = a.strip_prefix("AWS ") {
            return rest.split(':').next().map(|s| s.trim().to_string());
        }
    }
    query(req, &["X-Amz-Credential", "AWSAccessKeyId"])
        .map(|c| c.split('/').next().unwrap_or_default().to_string())
}

fn query(req: &Request, names: &[&str]) -> Option<String> {
    let q = req.uri().query()?;
    form_pairs(q)
        .find(|(k, _)| names.iter().any(|n| n.eq_ignore_ascii_case(k)))
        .map(|(_, v)| v)
}

fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .unwrap_or_default()
        .into_iter()
}

fn token(req: &Request) -> Option<String> {
    req.headers()
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query(req, &["X-Amz-Security-Token"]))
}

fn error(status: u16, code: &str, message: &str) -> Response {
    (
        axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::FORBIDDEN),
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ),
    )
        .into_response()
}

/// The layer: refuses session credentials without their token, with another token or
/// past their expiry, with S3's codes.
pub(crate) async fn check(
    State(keys): State<Arc<dyn KeyLookup>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(id) = claimed_key(&req) {
        match keys.check_token(&id, token(&req).as_deref()) {
            TokenCheck::Valid => {}
            TokenCheck::Missing => {
                return error(
                    403,
                    "InvalidAccessKeyId",
                    "The AWS Access Key Id you provided does not exist in our records.",
                )
            }
            TokenCheck::Invalid => {
                return error(
                    400,
                    "InvalidToken",
                    "The provided token is malformed or otherwise invalid.",
                )
            }
            TokenCheck::Expired => {
                return error(400, "ExpiredToken", "The provided token has expired.")
            }
        }
    }
    next.run(req).await
}
