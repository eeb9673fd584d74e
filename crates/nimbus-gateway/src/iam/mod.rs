//! The IAM API subset for execution roles on the main listener: IAM's query protocol
//! (`POST /`, a form signed for service `iam`, `Version=2010-05-08`) decoded by
//! [`wire`], run on the roles in `secrets.db` ([`nimbus_store::RoleStore`]), answered in
//! IAM's XML. Authorised as `iam:<Op>` on the role's ARN (`auth.rs`). Policy changes and
//! deletions reach live instance credentials at once (`sessions.rs`).

mod wire;

pub use wire::IamError;

use crate::auth::Check;
use crate::{ApiError, Gateway};
use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use nimbus_store::{Role, RoleStore, RoleUpdate, StoreError};
use std::sync::Arc;
use wire::Request as Op;

/// Largest IAM request body (policy documents are at most 10 KiB each).
const BODY_MAX: usize = 256 * 1024;

/// Whether a request is for the IAM API: `POST /` with a form signed for service `iam`.
pub(crate) fn is_iam(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if method != Method::POST || path != "/" {
        return false;
    }
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    form && headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split_once("Credential=")?.1.split([',', ' ']).next())
        .is_some_and(|cred| cred.split('/').nth(3) == Some("iam"))
}

/// A form posted to `/` without a signature (only looked at with authentication off).
pub(crate) fn may_be_unsigned_iam(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    method == Method::POST
        && path == "/"
        && !headers.contains_key(axum::http::header::AUTHORIZATION)
        && headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
}

/// Whether a form body is an IAM request (`Version=2010-05-08`).
pub(crate) fn is_iam_form(body: &[u8]) -> bool {
    form_urlencoded::parse(body).any(|(k, v)| k == "Version" && v == wire::VERSION)
}

/// The ARN a request acts on: the role's (with its stored path when it exists), `*` for
/// ListRoles.
fn resource(gw: &Gateway, req: &Op) -> String {
    let Some(name) = req.role_name() else {
        return "*".into();
    };
    let path = match req {
        Op::CreateRole { path, .. } => path.clone(),
        _ => gw
            .auth
            .get()
            .and_then(|a| a.store.role(name).ok().flatten())
            .map_or_else(|| "/".to_string(), |r| r.path),
    };
    wire::role_arn(&path, name)
}

/// What an IAM request needs authorised: `iam:<Op>` on the role's ARN. A body that does
/// not decode needs any valid key; the handler refuses it.
pub(crate) fn checks(gw: &Gateway, body: &[u8]) -> Vec<Check> {
    match wire::decode(body) {
        Ok(r) => vec![Check {
            action: format!("iam:{}", r.op()),
            resource: resource(gw, &r),
        }],
        Err(_) => Vec::new(),
    }
}

/// An authentication or authorization refusal in IAM's shape.
pub(crate) fn auth_error(e: ApiError) -> IamError {
    let message = e.to_string();
    match e {
        ApiError::AccessDenied(_) => IamError::new("AccessDenied", 403, message),
        ApiError::MissingAuthenticationToken(_) => {
            IamError::new("MissingAuthenticationToken", 403, message)
        }
        ApiError::IncompleteSignature(_) => IamError::new("IncompleteSignature", 400, message),
        ApiError::InvalidSignature(_) => IamError::new("SignatureDoesNotMatch", 403, message),
        ApiError::UnrecognizedClient(_) => IamError::new("InvalidClientTokenId", 403, message),
        ApiError::Iam(e) => e,
        ApiError::Internal(detail) => {
            tracing::error!("iam: internal error: {detail}");
            IamError::new("ServiceFailure", 500, "internal error")
        }
        _ => IamError::new("InvalidInput", 400, message),
    }
}

fn store_error(e: StoreError, conflict: &'static str) -> ApiError {
    ApiError::Iam(match e {
        StoreError::NotFound(m) => IamError::no_such_entity(m),
        StoreError::Conflict(m) => IamError::new(conflict, 409, m),
        StoreError::InvalidInput(m) => IamError::new("InvalidInput", 400, m),
        other => return ApiError::internal(other),
    })
}

fn no_role(name: &str) -> ApiError {
    ApiError::Iam(IamError::no_such_entity(format!(
        "The role with name {name} cannot be found."
    )))
}

/// An identity policy Nimbus can evaluate, else `MalformedPolicyDocument`.
fn check_policy(doc: &str) -> Result<(), ApiError> {
    nimbus_auth::Policy::parse(doc).map(drop).map_err(|e| {
        ApiError::Iam(IamError::malformed_policy(format!(
            "Syntax errors in policy: {e}"
        )))
    })
}

/// A trust policy is stored as given, but must be a JSON object.
fn check_trust_policy(doc: &str) -> Result<(), ApiError> {
    match serde_json::from_str::<serde_json::Value>(doc) {
        Ok(v) if v.is_object() => Ok(()),
        _ => Err(ApiError::Iam(IamError::malformed_policy(
            "This policy contains invalid Json",
        ))),
    }
}

/// Decodes an IAM body and renders what it would answer without a store: the request's
/// role (a CreateRole's, or one named as requested) or its error (the fuzz target's entry).
pub(crate) fn render_without_store(body: &[u8]) -> String {
    match wire::decode(body) {
        Ok(Op::CreateRole {
            name,
            path,
            trust_policy,
            description,
            max_session_s,
            tags,
        }) => {
            let r = Role {
                name,
                path,
                id: wire::new_role_id(),
                trust_policy,
                description,
                max_session_s,
                tags,
                created_ms: 0,
            };
            wire::response("CreateRole", Some(&wire::role_xml("Role", &r, true)), "rid")
        }
        Ok(other) => {
            let _ = check_policy(match &other {
                Op::PutRolePolicy { document, .. } => document,
                _ => "{}",
            });
            wire::response(
                other.op(),
                Some(&wire::members_xml(
                    "Names",
                    &[other.role_name().unwrap_or("").to_string()],
                )),
                "rid",
            )
        }
        Err(e) => e.to_xml("rid"),
    }
}

/// `POST /` for IAM: decode, run, answer.
pub(crate) async fn handle(gw: Arc<Gateway>, req: Request) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), BODY_MAX)
        .await
        .map_err(|e| {
            ApiError::Iam(IamError::new(
                "InvalidInput",
                400,
                format!("request body: {e}"),
            ))
        })?;
    let request = wire::decode(&body).map_err(ApiError::Iam)?;
    let op = request.op();
    let span = tracing::info_span!("iam", op, role = request.role_name().unwrap_or(""));
    let auth = gw
        .auth
        .get()
        .cloned()
        .ok_or_else(|| ApiError::internal("no identity store"))?;
    // The store's writes are durable (fsync): off the async workers.
    let result = tokio::task::spawn_blocking(move || span.in_scope(|| run(&auth, request)))
        .await
        .map_err(ApiError::internal)??;
    let request_id = uuid::Uuid::new_v4().to_string();
    let xml = wire::response(op, result.as_deref(), &request_id);
    Ok((
        [
            ("content-type", "text/xml"),
            ("x-amzn-requestid", request_id.as_str()),
        ],
        xml,
    )
        .into_response())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Runs one operation; the `<OpResult>` body, `None` for operations without one.
fn run(auth: &crate::Auth, request: Op) -> Result<Option<String>, ApiError> {
    let store = &auth.store;
    let role = |name: &str| -> Result<Role, ApiError> {
        store
            .role(name)
            .map_err(ApiError::internal)?
            .ok_or_else(|| no_role(name))
    };
    Ok(match request {
        Op::CreateRole {
            name,
            path,
            trust_policy,
            description,
            max_session_s,
            tags,
        } => {
            check_trust_policy(&trust_policy)?;
            let r = Role {
                name,
                path,
                id: wire::new_role_id(),
                trust_policy,
                description,
                max_session_s,
                tags,
                created_ms: now_ms(),
            };
            store
                .create_role(&r)
                .map_err(|e| store_error(e, "EntityAlreadyExists"))?;
            tracing::info!(role = %r.name, "role created");
            Some(wire::role_xml("Role", &r, true))
        }
        Op::GetRole { name } => Some(wire::role_xml("Role", &role(&name)?, true)),
        Op::DeleteRole { name } => {
            let _g = auth.roles_lock.lock().unwrap_or_else(|e| e.into_inner());
            store
                .delete_role(&name)
                .map_err(|e| store_error(e, "DeleteConflict"))?;
            auth.revoke_role(&name);
            tracing::info!(role = %name, "role deleted; its live credentials are revoked");
            None
        }
        Op::ListRoles {
            path_prefix,
            marker,
            max_items,
        } => {
            let all: Vec<Role> = store
                .roles()
                .map_err(ApiError::internal)?
                .into_iter()
                .filter(|r| r.path.starts_with(&path_prefix))
                .filter(|r| marker.as_ref().is_none_or(|m| &r.name > m))
                .collect();
            let truncated = all.len() > max_items;
            let page = &all[..all.len().min(max_items)];
            let mut out = String::from("<Roles>");
            for r in page {
                out.push_str(&wire::role_xml("member", r, false));
            }
            out.push_str("</Roles>");
            out.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
            if truncated {
                if let Some(last) = page.last() {
                    out.push_str(&format!("<Marker>{}</Marker>", wire::esc(&last.name)));
                }
            }
            Some(out)
        }
        Op::UpdateRole {
            name,
            description,
            max_session_s,
        } => {
            store
                .update_role(
                    &name,
                    &RoleUpdate {
                        description,
                        max_session_s,
                    },
                )
                .map_err(|e| store_error(e, "ConcurrentModification"))?;
            Some(String::new())
        }
        Op::PutRolePolicy {
            name,
            policy,
            document,
        } => {
            check_policy(&document)?;
            let _g = auth.roles_lock.lock().unwrap_or_else(|e| e.into_inner());
            store
                .put_role_policy(&name, &policy, &document)
                .map_err(|e| store_error(e, "ConcurrentModification"))?;
            auth.refresh_role(&name).map_err(ApiError::internal)?;
            tracing::info!(role = %name, policy = %policy, "role policy put");
            None
        }
        Op::GetRolePolicy { name, policy } => {
            let r = role(&name)?;
            let doc = store
                .role_policies(&r.name)
                .map_err(ApiError::internal)?
                .into_iter()
                .find(|(p, _)| *p == policy)
                .map(|(_, d)| d)
                .ok_or_else(|| {
                    ApiError::Iam(IamError::no_such_entity(format!(
                        "The role policy with name {policy} cannot be found."
                    )))
                })?;
            Some(format!(
                "<RoleName>{}</RoleName><PolicyName>{}</PolicyName><PolicyDocument>{}</PolicyDocument>",
                wire::esc(&r.name),
                wire::esc(&policy),
                wire::encode_document(&doc)
            ))
        }
        Op::DeleteRolePolicy { name, policy } => {
            let _g = auth.roles_lock.lock().unwrap_or_else(|e| e.into_inner());
            store
                .delete_role_policy(&name, &policy)
                .map_err(|e| store_error(e, "ConcurrentModification"))?;
            auth.refresh_role(&name).map_err(ApiError::internal)?;
            tracing::info!(role = %name, policy = %policy, "role policy deleted");
            None
        }
        Op::ListRolePolicies {
            name,
            marker,
            max_items,
        } => {
            let r = role(&name)?;
            let names: Vec<String> = store
                .role_policies(&r.name)
                .map_err(ApiError::internal)?
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| marker.as_ref().is_none_or(|m| p > m))
                .collect();
            let truncated = names.len() > max_items;
            let page = &names[..names.len().min(max_items)];
            let mut out = wire::members_xml("PolicyNames", page);
            out.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
            if truncated {
                if let Some(last) = page.last() {
                    out.push_str(&format!("<Marker>{}</Marker>", wire::esc(last)));
                }
            }
            Some(out)
        }
        Op::TagRole { name, tags } => {
            let r = role(&name)?;
            let mut keys: Vec<&String> = r.tags.iter().map(|(k, _)| k).collect();
            keys.extend(tags.iter().map(|(k, _)| k));
            keys.sort();
            keys.dedup();
            if keys.len() > 50 {
                return Err(ApiError::Iam(IamError::new(
                    "LimitExceeded",
                    409,
                    "a role has at most 50 tags",
                )));
            }
            store
                .tag_role(&name, &tags)
                .map_err(|e| store_error(e, "ConcurrentModification"))?;
            None
        }
        Op::UntagRole { name, keys } => {
            store
                .untag_role(&name, &keys)
                .map_err(|e| store_error(e, "ConcurrentModification"))?;
            None
        }
        Op::ListRoleTags { name } => Some(wire::list_tags_xml(&role(&name)?.tags)),
    })
}
