//! The manifest's execution roles (`[roles.NAME]`, and `fn-NAME` for a function's inline
//! `policy`), applied by `deploy` and `up` before the functions through the IAM API
//! (IAM's query protocol at `POST /`, signed for service `iam`): a missing role is created
//! with Lambda's trust policy, and its policy is put as the inline policy
//! `nimbus-manifest` (which takes effect at once for running instances).

use crate::client::Client;
use anyhow::{bail, Result};
use nimbus_core::manifest::{ManifestRole, ROLE_POLICY_NAME};
use std::path::Path;

/// The trust policy of roles the manifest creates: Lambda may assume them.
const LAMBDA_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// The roles `dir`'s manifest (and the ones it includes) declare.
pub fn manifest_roles(dir: &Path) -> Result<Vec<ManifestRole>> {
    Ok(super::deploy::manifest_projects(dir)?
        .into_iter()
        .flat_map(|p| p.roles)
        .collect())
}

/// The `<Code>` of an IAM error reply.
fn error_code(xml: &str) -> Option<&str> {
    let start = xml.find("<Code>")? + "<Code>".len();
    let end = xml[start..].find("</Code>")? + start;
    Some(&xml[start..end])
}

/// One IAM call: `Ok(Ok(xml))`, or `Ok(Err(code))` for an IAM error reply.
async fn call(client: &Client, params: &[(&str, &str)]) -> Result<Result<String, String>> {
    let (status, body) = client.iam(params).await?;
    if (200..300).contains(&status) {
        Ok(Ok(body))
    } else {
        Ok(Err(error_code(&body)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"))))
    }
}

/// Creates or updates each role; returns one line per role.
pub async fn apply_roles(client: &Client, roles: &[ManifestRole]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for r in roles {
        let max = r.max_session_s.map(|m| m.to_string());
        let exists = match call(client, &[("Action", "GetRole"), ("RoleName", &r.name)]).await? {
            Ok(_) => true,
            Err(code) if code == "NoSuchEntity" => false,
            Err(code) => bail!("cannot read role {}: {code}", r.name),
        };
        let mut params = vec![
            ("Action", if exists { "UpdateRole" } else { "CreateRole" }),
            ("RoleName", r.name.as_str()),
        ];
        if !exists {
            params.push(("AssumeRolePolicyDocument", LAMBDA_TRUST));
        }
        if let Some(d) = &r.description {
            params.push(("Description", d));
        }
        if let Some(m) = &max {
            params.push(("MaxSessionDuration", m));
        }
        if let Err(code) = call(client, &params).await? {
            bail!("cannot save role {}: {code}", r.name);
        }
        let put = [
            ("Action", "PutRolePolicy"),
            ("RoleName", r.name.as_str()),
            ("PolicyName", ROLE_POLICY_NAME),
            ("PolicyDocument", r.policy.as_str()),
        ];
        if let Err(code) = call(client, &put).await? {
            bail!("cannot put the policy of role {}: {code}", r.name);
        }
        lines.push(format!(
            "role {}: {}",
            r.name,
            if exists { "policy updated" } else { "created" }
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_codes() {
        assert_eq!(
            super::error_code("<ErrorResponse><Error><Type>Sender</Type><Code>NoSuchEntity</Code></Error></ErrorResponse>"),
            Some("NoSuchEntity")
        );
        assert_eq!(super::error_code("nope"), None);
    }
}
