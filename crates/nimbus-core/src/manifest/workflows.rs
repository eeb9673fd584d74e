//! `[[workflows]]`: Step Functions state machines deployed with the project.
//!
//! ```toml
//! [[workflows]]
//! name = "orders"
//! definition = "flow.asl.json"      # relative to the manifest's directory
//! routes = ["POST /orders"]         # optional: EXPRESS answers, STANDARD starts (202)
//! type = "STANDARD"                 # or "EXPRESS" (default STANDARD)
//! role = "orders-flow"              # a role name ([roles.NAME]) or a role ARN (optional)
//! # policy = '''{ IAM JSON }'''     # or the role's policy inline: makes the role wf-NAME
//! definition_substitutions = { Queue = "orders" }
//! ```
//!
//! The definition text may name `${Key}` (SAM's `DefinitionSubstitutions`: replaced by
//! `definition_substitutions`' value, as plain text) and `${fn:NAME}` or
//! `${fn:NAME:QUALIFIER}` (replaced by the function's ARN, so a definition names the
//! manifest's functions without hard-coding ARNs). A `${…}` whose key is not set is an
//! error, so that a typo does not reach the server.
//!
//! The machine's Task states act as its role: with authentication on, the role must allow
//! what they do (`lambda:InvokeFunction` on the functions, `sqs:SendMessage`, …), else the
//! Task fails with `States.Permissions`. `policy` writes that policy inline (the role
//! `wf-NAME` is made with it, as a function's `policy` makes `fn-NAME`); without `role` or
//! `policy` the machine runs as [`DEFAULT_ROLE`]. The CLI reads the file and checks that
//! it is JSON; the server validates the state machine when it is created or updated.

use crate::CoreError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The role a workflow without `role` is created with.
pub const DEFAULT_ROLE: &str = "nimbus-workflows";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    name: String,
    definition: String,
    #[serde(rename = "type")]
    machine_type: Option<String>,
    role: Option<String>,
    policy: Option<String>,
    #[serde(default)]
    definition_substitutions: BTreeMap<String, String>,
    /// User routes served by the workflow (`"POST /orders"`): an EXPRESS machine answers
    /// them synchronously, a STANDARD one is started (202).
    #[serde(default)]
    routes: Vec<String>,
}

/// The tag that carries a machine's routes to the server (`nimbus:route`).
pub const ROUTE_TAG: &str = "nimbus:route";

/// A state machine declared with `[[workflows]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWorkflow {
    pub name: String,
    /// The definition file, relative to the manifest's directory.
    pub definition: String,
    /// `STANDARD` or `EXPRESS`.
    pub machine_type: String,
    /// The execution role's ARN.
    pub role_arn: String,
    /// `${Key}` → value.
    pub substitutions: BTreeMap<String, String>,
    /// Route keys (`"POST /orders"`), checked.
    pub routes: Vec<String>,
}

/// `arn:aws:states:REGION:ACCOUNT:stateMachine:NAME`.
pub fn state_machine_arn(name: &str) -> String {
    format!(
        "arn:aws:states:{}:{}:stateMachine:{name}",
        crate::arn::REGION,
        crate::arn::ACCOUNT
    )
}

/// `arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME`.
pub fn execution_arn(machine: &str, name: &str) -> String {
    format!(
        "arn:aws:states:{}:{}:execution:{machine}:{name}",
        crate::arn::REGION,
        crate::arn::ACCOUNT
    )
}

/// Step Functions' names of machines and executions: 1-80 characters, none of them
/// whitespace, control characters, wildcards, brackets or the other reserved ones.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=80).contains(&n)
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c))
}

/// A substitution key: letters, digits, `_`, `-` or `.`.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 256
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses the `[[workflows]]`; a workflow's inline `policy` adds its role `wf-NAME` to
/// `roles` (`declared_roles` are the manifest's `[roles.NAME]`).
pub(super) fn parse_workflows(
    raw: Vec<RawWorkflow>,
    declared_roles: &BTreeMap<String, super::RawRole>,
    roles: &mut Vec<super::ManifestRole>,
) -> Result<Vec<ManifestWorkflow>, CoreError> {
    let mut out: Vec<ManifestWorkflow> = Vec::new();
    for w in raw {
        let name = w.name;
        let ctx = |m: String| CoreError::InvalidManifest(format!("workflows.{name}: {m}"));
        if !valid_name(&name) {
            return Err(CoreError::InvalidManifest(format!(
                "workflows: name {name:?} is not a state machine name (1-80 characters, no \
                 whitespace and none of <>{{}}[]?*\"#%\\^|~`$&,;:/)"
            )));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(ctx("declared twice".into()));
        }
        if w.definition.is_empty() || std::path::Path::new(&w.definition).is_absolute() {
            return Err(ctx(format!(
                "definition {:?}: use a file path relative to the manifest",
                w.definition
            )));
        }
        let machine_type = match w.machine_type.as_deref().map(str::to_ascii_uppercase) {
            None => "STANDARD".to_string(),
            Some(t) if t == "STANDARD" || t == "EXPRESS" => t,
            Some(_) => return Err(ctx("type must be \"STANDARD\" or \"EXPRESS\"".into())),
        };
        let role_arn = match (w.role, w.policy) {
            (Some(_), Some(_)) => {
                return Err(ctx(format!(
                    "set role or policy, not both (policy makes the role wf-{name})"
                )))
            }
            (Some(r), None) if r.starts_with("arn:") => r,
            (Some(r), None) if crate::arn::is_iam_name(&r, 64) => super::role_arn(&r),
            (Some(r), None) => {
                return Err(ctx(format!(
                    "role {r:?} is neither a role name nor a role ARN"
                )))
            }
            (None, Some(policy)) => {
                let role = format!("wf-{name}");
                if !crate::arn::is_iam_name(&role, 64) {
                    return Err(ctx(format!(
                        "policy makes the role {role:?}, which is not a role name (1-64 \
                         letters, digits or _+=,.@-): declare [roles.NAME] and set role = \"NAME\""
                    )));
                }
                super::check_policy_json(&format!("workflows.{name}"), &policy)?;
                if declared_roles.contains_key(&role) || roles.iter().any(|r| r.name == role) {
                    return Err(ctx(format!(
                        "policy makes the role {role}, which [roles.{role}] declares too"
                    )));
                }
                roles.push(super::ManifestRole {
                    name: role.clone(),
                    policy,
                    description: Some(format!("the inline policy of workflow {name}")),
                    max_session_s: None,
                });
                super::role_arn(&role)
            }
            (None, None) => super::role_arn(DEFAULT_ROLE),
        };
        for key in w.definition_substitutions.keys() {
            if !valid_key(key) {
                return Err(ctx(format!(
                    "definition_substitutions key {key:?}: use letters, digits, '_', '-' or '.'"
                )));
            }
        }
        for r in &w.routes {
            crate::RouteSpec::parse(r).map_err(|e| ctx(format!("routes: {e}")))?;
        }
        out.push(ManifestWorkflow {
            name,
            definition: w.definition,
            machine_type,
            role_arn,
            substitutions: w.definition_substitutions,
            routes: w.routes,
        });
    }
    Ok(out)
}

impl ManifestWorkflow {
    /// The value of the machine's [`ROUTE_TAG`] (`None`: no routes).
    pub fn route_tag(&self) -> Option<String> {
        (!self.routes.is_empty()).then(|| self.routes.join(","))
    }

    /// The definition text with `${Key}` and `${fn:NAME}` replaced.
    pub fn substitute(&self, text: &str) -> Result<String, CoreError> {
        let ctx = |m: String| CoreError::InvalidManifest(format!("workflows.{}: {m}", self.name));
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let key = &after[..end];
            if let Some(f) = key.strip_prefix("fn:") {
                let (name, qualifier) = crate::arn::parse_function_ref(f).map_err(|_| {
                    ctx(format!(
                        "the definition names ${{{key}}}, but {f:?} is not a function name"
                    ))
                })?;
                out.push_str(&crate::arn::function_arn(
                    name.as_str(),
                    qualifier.as_deref(),
                ));
            } else if valid_key(key) {
                let value = self.substitutions.get(key).ok_or_else(|| {
                    ctx(format!(
                        "the definition names ${{{key}}}, which definition_substitutions does not set"
                    ))
                })?;
                out.push_str(value);
            } else {
                // Not a placeholder (`${` followed by other text): kept as written, and
                // the text after it is scanned on.
                out.push_str("${");
                rest = after;
                continue;
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_project;

    const FN: &str = "[functions.validate]\nruntime = \"python3.12\"\nhandler = \"app.handler\"\n";

    fn project(extra: &str) -> Result<super::super::Project, String> {
        parse_project(&format!("{FN}{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn workflow_routes_are_checked_and_carried_in_one_tag() {
        let p = project(
            "[[workflows]]\nname = \"api\"\ndefinition = \"a.json\"\ntype = \"EXPRESS\"\n\
             routes = [\"POST /orders\", \"GET /orders/{id}\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.workflows[0].route_tag().as_deref(),
            Some("POST /orders,GET /orders/{id}")
        );
        let e = project(
            "[[workflows]]\nname = \"api\"\ndefinition = \"a.json\"\nroutes = [\"orders\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("workflows.api: routes"), "{e}");
        let none = project("[[workflows]]\nname = \"w\"\ndefinition = \"w.json\"\n").unwrap();
        assert_eq!(none.workflows[0].route_tag(), None);
    }

    #[test]
    fn workflows_parse_with_defaults_and_roles() {
        let p = project(
            "[[workflows]]\nname = \"orders\"\ndefinition = \"flows/orders.asl.json\"\n\
             [[workflows]]\nname = \"fast\"\ndefinition = \"fast.json\"\ntype = \"express\"\n\
             role = \"flow-role\"\ndefinition_substitutions = { Queue = \"q1\", \"a.b\" = \"x\" }\n\
             [[workflows]]\nname = \"arn\"\ndefinition = \"a.json\"\n\
             role = \"arn:aws:iam::123456789012:role/r\"\n",
        )
        .unwrap();
        let w = &p.workflows;
        assert_eq!(w.len(), 3);
        assert_eq!(
            (w[0].name.as_str(), w[0].definition.as_str()),
            ("orders", "flows/orders.asl.json")
        );
        assert_eq!(w[0].machine_type, "STANDARD");
        assert_eq!(
            w[0].role_arn,
            "arn:aws:iam::000000000000:role/nimbus-workflows"
        );
        assert_eq!(w[1].machine_type, "EXPRESS");
        assert_eq!(w[1].role_arn, "arn:aws:iam::000000000000:role/flow-role");
        assert_eq!(w[1].substitutions["Queue"], "q1");
        assert_eq!(w[2].role_arn, "arn:aws:iam::123456789012:role/r");
        // An inline policy makes the role wf-NAME.
        let p = project(
            "[[workflows]]\nname = \"orders\"\ndefinition = \"a.json\"\n\
             policy = '{\"Version\": \"2012-10-17\", \"Statement\": []}'\n",
        )
        .unwrap();
        assert_eq!(
            p.workflows[0].role_arn,
            "arn:aws:iam::000000000000:role/wf-orders"
        );
        assert_eq!(p.roles.len(), 1);
        assert_eq!(p.roles[0].name, "wf-orders");
        assert!(p.roles[0].policy.contains("2012-10-17"));
        // A manifest may declare workflows only.
        let only = parse_project("[[workflows]]\nname = \"w\"\ndefinition = \"w.json\"\n").unwrap();
        assert_eq!(only.workflows.len(), 1);
        assert!(only.functions.is_empty());
    }

    #[test]
    fn workflow_errors_name_the_workflow() {
        let err = |extra: &str| project(extra).unwrap_err();
        let e = err("[[workflows]]\nname = \"bad name\"\ndefinition = \"a.json\"\n");
        assert!(
            e.contains("\"bad name\"") && e.contains("state machine name"),
            "{e}"
        );
        let e = err("[[workflows]]\nname = \"w\"\ndefinition = \"/abs.json\"\n");
        assert!(e.contains("workflows.w: definition \"/abs.json\""), "{e}");
        let e = err("[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\ntype = \"SLOW\"\n");
        assert!(e.contains("workflows.w: type must be"), "{e}");
        let e = err("[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\nrole = \"a role\"\n");
        assert!(e.contains("workflows.w: role \"a role\""), "{e}");
        let e = err("[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\n\
             [[workflows]]\nname = \"w\"\ndefinition = \"b.json\"\n");
        assert!(e.contains("workflows.w: declared twice"), "{e}");
        let e = err("[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\n\
             definition_substitutions = { \"a b\" = \"x\" }\n");
        assert!(e.contains("definition_substitutions key \"a b\""), "{e}");
        let e = err(
            "[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\nrole = \"r\"\npolicy = '{}'\n",
        );
        assert!(
            e.contains("workflows.w: set role or policy, not both"),
            "{e}"
        );
        let e = err("[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\npolicy = 'nope'\n");
        assert!(e.contains("workflows.w: policy is not valid JSON"), "{e}");
        let e = err("[roles.wf-w]\npolicy = '{}'\n\
             [[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\npolicy = '{}'\n");
        assert!(e.contains("[roles.wf-w] declares too"), "{e}");
        assert!(project("[[workflows]]\nname = \"w\"\n").is_err());
        assert!(project("[[workflows]]\nname = \"w\"\ndefinition = \"a\"\nbogus = 1\n").is_err());
    }

    #[test]
    fn substitutions_and_function_arns() {
        let p = project(
            "[[workflows]]\nname = \"w\"\ndefinition = \"a.json\"\n\
             definition_substitutions = { Queue = \"orders\", Greeting = \"hi\" }\n",
        )
        .unwrap();
        let w = &p.workflows[0];
        let text = r#"{"A":"${fn:validate}","B":"${fn:validate:live}","Q":"${Queue}-${Greeting}","J":"{% $x %}","K":"${not a key}","L":"${","M":"${ ${Queue}}"}"#;
        assert_eq!(
            w.substitute(text).unwrap(),
            r#"{"A":"arn:aws:lambda:us-east-1:000000000000:function:validate","B":"arn:aws:lambda:us-east-1:000000000000:function:validate:live","Q":"orders-hi","J":"{% $x %}","K":"${not a key}","L":"${","M":"${ orders}"}"#
        );
        let e = w.substitute("${Missing}").unwrap_err().to_string();
        assert!(
            e.contains("workflows.w") && e.contains("${Missing}") && e.contains("does not set"),
            "{e}"
        );
        let e = w.substitute("${fn:bad name}").unwrap_err().to_string();
        assert!(e.contains("not a function name"), "{e}");
        assert_eq!(w.substitute("no placeholders").unwrap(), "no placeholders");
    }

    #[test]
    fn arns() {
        assert_eq!(
            super::state_machine_arn("orders"),
            "arn:aws:states:us-east-1:000000000000:stateMachine:orders"
        );
        assert_eq!(
            super::execution_arn("orders", "e1"),
            "arn:aws:states:us-east-1:000000000000:execution:orders:e1"
        );
    }
}
