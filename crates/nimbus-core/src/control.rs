//! Control-plane records kept beside function versions: aliases and per-function metadata
//! (reserved concurrency, tags, resource policy).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A named pointer to a numbered version (or `$LATEST`), optionally splitting traffic with
/// one more version (`routing`: version → weight in 0.0–1.0), as Lambda's aliases do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub name: String,
    pub function_version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub routing: BTreeMap<String, f64>,
    /// Changes on every write of the alias.
    pub revision_id: String,
}

/// Per-function settings that are not part of a version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FunctionMeta {
    /// Lambda's reserved concurrency: `Some(0)` throttles every invocation.
    pub reserved_concurrency: Option<u32>,
    pub tags: BTreeMap<String, String>,
    /// Resource-policy statements (`AddPermission`), in insertion order, each with a `Sid`.
    pub policy: Vec<serde_json::Value>,
    /// Changes on every write of the policy.
    pub policy_revision_id: String,
}

/// Checks an alias name: 1-128 of `[A-Za-z0-9_-]`, not all digits (that would be a version).
pub fn validate_alias_name(name: &str) -> Result<(), crate::CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(crate::CoreError::InvalidQualifier(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names() {
        assert!(validate_alias_name("live").is_ok());
        assert!(validate_alias_name("blue-green_2").is_ok());
        assert!(validate_alias_name("12").is_err());
        assert!(validate_alias_name("").is_err());
        assert!(validate_alias_name("a b").is_err());
    }
}
