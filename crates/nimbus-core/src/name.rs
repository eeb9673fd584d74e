use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated function name: 1-64 characters of `[A-Za-z0-9_-]`, as Lambda requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

impl FunctionName {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(CoreError::InvalidName(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FunctionName {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self, CoreError> {
        Self::parse(&s)
    }
}
impl From<FunctionName> for String {
    fn from(n: FunctionName) -> String {
        n.0
    }
}
impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl AsRef<str> for FunctionName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lambda_names() {
        for n in ["a", "hello-world", "Fn_1", &"x".repeat(64)] {
            assert!(FunctionName::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "",
            "has space",
            "dot.name",
            "slash/x",
            "ünï",
            &"x".repeat(65),
            "a:b",
        ] {
            assert!(FunctionName::parse(n).is_err(), "{n}");
        }
    }
}
