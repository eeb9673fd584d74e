//! IAM-like identity policies and Lambda resource-policy (`AddPermission`) statements.
//!
//! ```json
//! {"Statement": [{"Effect": "Allow", "Action": ["lambda:InvokeFunction"],
//!                 "Resource": ["arn:aws:lambda:*:*:function:orders-*"]}]}
//! ```
//!
//! Evaluation is IAM's: deny by default, an `Allow` statement matching the action and the
//! resource allows, any matching `Deny` wins over every `Allow`. Actions match
//! case-insensitively with `*` and `?` wildcards (`lambda:*`, `lambda:Get*`, `*`); an
//! `Allow` of `nimbus:Admin` (or `*`) grants every action. Resources match case-sensitively
//! with the same wildcards, and `*` spans `:` (so `…:function:orders-*` also covers qualified
//! ARNs). A resource that is not an ARN (`orders-*`) is a function name pattern: it matches
//! a function ARN by the function's name, whatever the qualifier, and other ARNs by their
//! last `:`/`/` segment (a queue's, a bus's, a secret's or a key's name).

use crate::AuthError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The action that grants everything.
pub const ADMIN: &str = "nimbus:Admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Statements {
    One(RawStatement),
    Many(Vec<RawStatement>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "Sid", default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: Effect,
    #[serde(rename = "Action")]
    action: OneOrMany,
    #[serde(rename = "Resource")]
    resource: OneOrMany,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(rename = "Statement")]
    statement: Statements,
}

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid", skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(rename = "Effect")]
    pub effect: Effect,
    #[serde(rename = "Action")]
    pub actions: Vec<String>,
    #[serde(rename = "Resource")]
    pub resources: Vec<String>,
}

/// A validated identity policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    #[serde(rename = "Version", skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A `Deny` statement matched: nothing else can allow it.
    ExplicitDeny,
    /// No statement allowed it.
    ImplicitDeny,
}

impl Policy {
    /// `nimbus:Admin` on `*`.
    pub fn admin() -> Self {
        Self {
            version: Some("2012-10-17".into()),
            statements: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                actions: vec![ADMIN.into()],
                resources: vec!["*".into()],
            }],
        }
    }

    /// Parses and validates a policy document: at least one statement; each with `Effect`,
    /// a non-empty `Action` (`*` or `service:Name`, wildcards allowed) and a non-empty
    /// `Resource`. Unknown fields (`Condition`, `Principal`, `NotAction`) are refused rather
    /// than ignored, so a policy never grants more than it reads as.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let raw: RawPolicy =
            serde_json::from_str(text).map_err(|e| AuthError::InvalidPolicy(e.to_string()))?;
        let statements = match raw.statement {
            Statements::One(s) => vec![s],
            Statements::Many(v) => v,
        };
        if statements.is_empty() {
            return Err(AuthError::InvalidPolicy(
                "a policy needs at least one statement".into(),
            ));
        }
        let mut out = Vec::with_capacity(statements.len());
        for s in statements {
            let actions = s.action.into_vec();
            let resources = s.resource.into_vec();
            if actions.is_empty() || resources.is_empty() {
                return Err(AuthError::InvalidPolicy(
                    "each statement needs at least one Action and one Resource".into(),
                ));
            }
            for a in &actions {
                let ok = a == "*"
                    || a.split_once(':').is_some_and(|(svc, name)| {
                        !svc.is_empty()
                            && !name.is_empty()
                            && svc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                            && name
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'?')
                    });
                if !ok {
                    return Err(AuthError::InvalidPolicy(format!(
                        "action {a:?} is not `*` or `service:Action` (e.g. lambda:InvokeFunction, lambda:Get*)"
                    )));
                }
            }
            if let Some(r) = resources.iter().find(|r| r.is_empty()) {
                return Err(AuthError::InvalidPolicy(format!("empty resource {r:?}")));
            }
            out.push(Statement {
                sid: s.sid,
                effect: s.effect,
                actions,
                resources,
            });
        }
        Ok(Self {
            version: raw.version,
            statements: out,
        })
    }

    /// The policy as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a policy serialises")
    }

    /// Whether the policy allows `action` on `resource` (an ARN, or `*` for actions on no
    /// particular resource such as `ListFunctions`).
    pub fn evaluate(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            let resource_matches = s.resources.iter().any(|p| resource_matches(p, resource));
            if !resource_matches {
                continue;
            }
            match s.effect {
                Effect::Deny => {
                    if s.actions.iter().any(|p| action_matches(p, action)) {
                        return Decision::ExplicitDeny;
                    }
                }
                Effect::Allow => {
                    if s.actions.iter().any(|p| {
                        action_matches(p, action) || p == "*" || p.eq_ignore_ascii_case(ADMIN)
                    }) {
                        allowed = true;
                    }
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }

    /// Whether the policy holds an `Allow` of `nimbus:Admin` (or `*`) on `*`.
    pub fn is_admin(&self) -> bool {
        self.evaluate(ADMIN, "*") == Decision::Allow
    }
}

/// `*` (any run of characters, `:` included) and `?` (one character) wildcards.
pub fn glob(pattern: &str, text: &str) -> bool {
    glob_bytes(pattern.as_bytes(), text.as_bytes(), false)
}

fn glob_bytes(p: &[u8], t: &[u8], fold: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    // Iterative matching with backtracking to the last `*`: linear in practice, never
    // exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Case-insensitive action match with wildcards.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    glob_bytes(pattern.as_bytes(), action.as_bytes(), true)
}

/// The name a non-ARN pattern is matched against: a function ARN's function name, else the
/// last `:`- or `/`-separated segment.
fn resource_name(resource: &str) -> &str {
    if let Some((_, rest)) = resource.split_once(":function:") {
        return rest.split(':').next().unwrap_or(rest);
    }
    resource.rsplit([':', '/']).next().unwrap_or(resource)
}

/// Whether the policy resource `pattern` covers `resource`.
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if resource == "*" {
        return false;
    }
    if pattern.starts_with("arn:") {
        glob(pattern, resource)
    } else {
        resource.starts_with("arn:") && glob(pattern, resource_name(resource))
    }
}

/// Whether a function's resource policy (the statements `AddPermission` stored) allows the
/// caller `user_arn` to perform `action` on `resource` (the function's ARN as invoked, with
/// its qualifier if any). A statement counts when its effect is `Allow`, its `AWS`
/// principal is `*`, the account (`000000000000` or `arn:aws:iam::000000000000:root`) or
/// the caller's user ARN, its action covers `action`, its resource covers `resource` (an
/// unqualified statement also covers `$LATEST`), and its conditions hold for a direct call
/// (`lambda:FunctionUrlAuthType` must be `url_auth_type`; statements conditioned on a
/// source ARN or organisation never match a direct call).
pub fn resource_policy_allows(
    statements: &[Value],
    user_arn: &str,
    action: &str,
    resource: &str,
    url_auth_type: Option<&str>,
) -> bool {
    let account_root = format!("arn:aws:iam::{}:root", crate::ACCOUNT);
    statements.iter().any(|s| {
        if s.get("Effect").and_then(Value::as_str) != Some("Allow") {
            return false;
        }
        let principal_ok = match s.get("Principal") {
            Some(Value::String(p)) => p == "*",
            Some(Value::Object(m)) => match m.get("AWS") {
                Some(Value::String(p)) => {
                    p == "*" || p == crate::ACCOUNT || *p == account_root || p == user_arn
                }
                _ => false,
            },
            _ => false,
        };
        if !principal_ok {
            return false;
        }
        let action_ok = strings(s.get("Action"))
            .iter()
            .any(|p| action_matches(p, action));
        let resource_ok = strings(s.get("Resource")).iter().any(|p| {
            glob(p, resource)
                || resource
                    .strip_suffix(":$LATEST")
                    .is_some_and(|r| glob(p, r))
        });
        if !(action_ok && resource_ok) {
            return false;
        }
        match s.get("Condition") {
            None => true,
            Some(Value::Object(cond)) => cond.iter().all(|(op, kv)| {
                let Some(kv) = kv.as_object() else {
                    return false;
                };
                op == "StringEquals"
                    && kv.iter().all(|(k, v)| match k.as_str() {
                        "lambda:FunctionUrlAuthType" => v.as_str() == url_auth_type,
                        "AWS:SourceAccount" => v.as_str() == Some(crate::ACCOUNT),
                        _ => false,
                    })
            }),
            Some(_) => false,
        }
    })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORDERS: &str = "arn:aws:lambda:us-east-1:000000000000:function:orders-api";
    const BILLING: &str = "arn:aws:lambda:us-east-1:000000000000:function:billing";

    #[test]
    fn deny_by_default_and_wildcards() {
        let p = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Action":"lambda:InvokeFunction",
                "Resource":"arn:aws:lambda:*:*:function:orders-*"}]}"#,
        )
        .unwrap();
        assert_eq!(p.evaluate("lambda:InvokeFunction", ORDERS), Decision::Allow);
        assert_eq!(
            p.evaluate("lambda:invokefunction", &format!("{ORDERS}:prod")),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate("lambda:InvokeFunction", BILLING),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate("lambda:CreateFunction", ORDERS),
            Decision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate("lambda:ListFunctions", "*"),
            Decision::ImplicitDeny
        );
        assert!(!p.is_admin());

        let p = Policy::parse(
            r#"{"Version":"2012-10-17","Statement":[
                {"Effect":"Allow","Action":["lambda:Get*","lambda:List*"],"Resource":"*"},
                {"Effect":"Allow","Action":"lambda:*","Resource":["orders-*"]}]}"#,
        )
        .unwrap();
        assert_eq!(p.evaluate("lambda:GetFunction", BILLING), Decision::Allow);
        assert_eq!(p.evaluate("lambda:ListFunctions", "*"), Decision::Allow);
        assert_eq!(
            p.evaluate("lambda:DeleteFunction", BILLING),
            Decision::ImplicitDeny
        );
        assert_eq!(p.evaluate("lambda:DeleteFunction", ORDERS), Decision::Allow);
        assert_eq!(
            p.evaluate("lambda:UpdateFunctionCode", &format!("{ORDERS}:7")),
            Decision::Allow
        );
        assert_eq!(
            p.evaluate(
                "nimbus:PutSecret",
                "arn:nimbus:secrets:000000000000:secret/orders-db"
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn explicit_deny_wins_and_admin_grants_everything() {
        let p = Policy::parse(
            r#"{"Statement":[
                {"Effect":"Allow","Action":"nimbus:Admin","Resource":"*"},
                {"Effect":"Deny","Action":"lambda:Delete*","Resource":"arn:aws:lambda:*:*:function:billing*"}]}"#,
        )
        .unwrap();
        assert!(p.is_admin());
        assert_eq!(
            p.evaluate("lambda:CreateFunction", BILLING),
            Decision::Allow
        );
        assert_eq!(p.evaluate("nimbus:CreateKey", "*"), Decision::Allow);
        assert_eq!(
            p.evaluate("lambda:DeleteFunction", BILLING),
            Decision::ExplicitDeny
        );
        assert_eq!(p.evaluate("lambda:DeleteFunction", ORDERS), Decision::Allow);
        assert!(Policy::admin().is_admin());
        assert_eq!(
            Policy::parse(&Policy::admin().to_json()).unwrap(),
            Policy::admin()
        );
        // An Allow of lambda:* is not admin.
        let p =
            Policy::parse(r#"{"Statement":{"Effect":"Allow","Action":"lambda:*","Resource":"*"}}"#)
                .unwrap();
        assert!(!p.is_admin());
        assert_eq!(p.evaluate("nimbus:Admin", "*"), Decision::ImplicitDeny);
    }

    #[test]
    fn invalid_policies_are_refused() {
        for bad in [
            "",
            "{}",
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"invoke","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"lambda:Invoke Function","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":""}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{}}]}"#,
        ] {
            assert!(
                matches!(Policy::parse(bad), Err(AuthError::InvalidPolicy(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("abc", "abcd"));
        assert!(glob(&"*a".repeat(20), &"a".repeat(40)));
        assert!(!glob(&"*a".repeat(30), &"ab".repeat(1000)));
        assert!(action_matches("LAMBDA:get*", "lambda:GetFunction"));
        assert!(!resource_matches("orders-*", "*"));
        assert!(resource_matches(
            "orders-*",
            "arn:aws:sqs:us-east-1:000000000000:orders-q"
        ));
    }

    #[test]
    fn resource_policy_statements() {
        let user = crate::user_arn("ci");
        let st = |principal: Value, action: &str, resource: &str| json!({"Sid":"s","Effect":"Allow","Principal":principal,"Action":action,"Resource":resource});
        let allows = |s: Vec<Value>, res: &str| {
            resource_policy_allows(&s, &user, "lambda:InvokeFunction", res, None)
        };
        assert!(allows(
            vec![st(json!({"AWS": user}), "lambda:InvokeFunction", BILLING)],
            BILLING
        ));
        assert!(allows(
            vec![st(json!({"AWS": "000000000000"}), "lambda:*", BILLING)],
            BILLING
        ));
        assert!(allows(
            vec![st(json!({"AWS": "*"}), "lambda:InvokeFunction", BILLING)],
            BILLING
        ));
        assert!(allows(
            vec![st(json!({"AWS": user}), "lambda:InvokeFunction", BILLING)],
            &format!("{BILLING}:$LATEST")
        ));
        // Another user, a service principal, another action or a qualifier not granted.
        assert!(!allows(
            vec![st(
                json!({"AWS": crate::user_arn("other")}),
                "lambda:InvokeFunction",
                BILLING
            )],
            BILLING
        ));
        assert!(!allows(
            vec![st(
                json!({"Service": "s3.amazonaws.com"}),
                "lambda:InvokeFunction",
                BILLING
            )],
            BILLING
        ));
        assert!(!allows(
            vec![st(json!({"AWS": user}), "lambda:GetFunction", BILLING)],
            BILLING
        ));
        assert!(!allows(
            vec![st(json!({"AWS": user}), "lambda:InvokeFunction", BILLING)],
            &format!("{BILLING}:prod")
        ));
        // Conditions: a source ARN never holds for a direct call; the URL auth type must match.
        let mut s = st(json!({"AWS": "*"}), "lambda:InvokeFunctionUrl", BILLING);
        s["Condition"] = json!({"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}});
        assert!(resource_policy_allows(
            &[s.clone()],
            &user,
            "lambda:InvokeFunctionUrl",
            BILLING,
            Some("AWS_IAM")
        ));
        assert!(!resource_policy_allows(
            &[s],
            &user,
            "lambda:InvokeFunctionUrl",
            BILLING,
            Some("NONE")
        ));
        let mut s = st(json!({"AWS": "*"}), "lambda:InvokeFunction", BILLING);
        s["Condition"] = json!({"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::b"}});
        assert!(!allows(vec![s], BILLING));
    }
}
