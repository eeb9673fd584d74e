//! `[[workflows]]`: Step Functions state machines deployed with the project.
//!
//! ```toml
//! [[workflows]]
//! name = "orders"
//! definition = "flow.asl.json"      # relative to the manifest's directory
//! type = "STANDARD"                 # or "EXPRESS" (default STANDARD)
//! role = "orders-flow"              # a role name ([roles.NAME]) or a role ARN (optional)
//! definition_substitutions = { Queue = "orders" }
//! ```
//!
//! The definition text may name `${Key}` (SAM's `DefinitionSubstitutions`: replaced by
//! `definition_substitutions`' value, as plain text) and `${fn:NAME}` or
//! `${fn:NAME:QUALIFIER}` (replaced by the function's ARN, so a definition names the
//! manifest's functions without hard-coding ARNs). A `${…}` whose key is not set is an
//! error, so that a typo does not reach the server. Without a `role`, the machine runs as
//! [`DEFAULT_ROLE`]. The CLI reads the file and checks that it is JSON; the server
//! validates the state machine when it is created or updated.

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
    #[serde(default)]
    definition_substitutions: BTreeMap<String, String>,
}

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

pub(super) fn parse_workflows(raw: Vec<RawWorkflow>) -> Result<Vec<ManifestWorkflow>, CoreError> {
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
        let role_arn = match w.role {
            Some(r) if r.starts_with("arn:") => r,
            Some(r) if crate::arn::is_iam_name(&r, 64) => super::role_arn(&r),
            Some(r) => {
                return Err(ctx(format!(
                    "role {r:?} is neither a role name nor a role ARN"
                )))
            }
            None => super::role_arn(DEFAULT_ROLE),
        };
        for key in w.definition_substitutions.keys() {
            if !valid_key(key) {
                return Err(ctx(format!(
                    "definition_substitutions key {key:?}: use letters, digits, '_', '-' or '.'"
                )));
            }
        }
        out.push(ManifestWorkflow {
            name,
            definition: w.definition,
            machine_type,
            role_arn,
            substitutions: w.definition_substitutions,
        });
    }
    Ok(out)
}

impl ManifestWorkflow {
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
