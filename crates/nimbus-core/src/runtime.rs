use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The language family a runtime identifier maps to on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeFamily {
    /// Runs the host `node` with Nimbus's Node bootstrap.
    Node,
    /// Runs the host `python3` with Nimbus's Python bootstrap.
    Python,
    /// Runs the package's own `bootstrap` executable.
    Provided,
}

/// A Lambda runtime identifier accepted by Nimbus (`nodejs20.x`, `python3.12`, `provided.al2023`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Runtime(&'static str);

impl Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Runtime::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Every identifier Nimbus accepts, in documentation order.
pub const RUNTIMES: &[&str] = &[
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "provided",
    "provided.al2",
    "provided.al2023",
];

impl Runtime {
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        RUNTIMES
            .iter()
            .find(|r| **r == s)
            .map(|r| Runtime(r))
            .ok_or_else(|| CoreError::UnknownRuntime(s.to_string(), RUNTIMES.join(", ")))
    }
    pub fn as_str(&self) -> &'static str {
        self.0
    }
    pub fn family(&self) -> RuntimeFamily {
        if self.0.starts_with("nodejs") {
            RuntimeFamily::Node
        } else if self.0.starts_with("python") {
            RuntimeFamily::Python
        } else {
            RuntimeFamily::Provided
        }
    }
    /// Checks that `handler` has the shape this runtime expects.
    pub fn validate_handler(&self, handler: &str) -> Result<(), CoreError> {
        let bad = |why: &str| {
            Err(CoreError::InvalidHandler(
                handler.to_string(),
                why.to_string(),
            ))
        };
        if handler.len() > 128 {
            return bad("at most 128 characters");
        }
        if handler.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("no whitespace allowed");
        }
        match self.family() {
            RuntimeFamily::Provided => Ok(()),
            RuntimeFamily::Node | RuntimeFamily::Python => {
                if handler.contains("..") {
                    return bad("'..' is not allowed");
                }
                match handler.rsplit_once('.') {
                    Some((module, func)) if !module.is_empty() && !func.is_empty() => Ok(()),
                    _ => bad("use MODULE.FUNCTION, for example index.handler"),
                }
            }
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(
            Runtime::parse("nodejs22.x").unwrap().family(),
            RuntimeFamily::Node
        );
        assert_eq!(
            Runtime::parse("python3.9").unwrap().family(),
            RuntimeFamily::Python
        );
        assert_eq!(
            Runtime::parse("provided.al2023").unwrap().family(),
            RuntimeFamily::Provided
        );
        assert!(Runtime::parse("nodejs16.x").is_err());
        assert!(Runtime::parse("cobol").is_err());
    }

    #[test]
    fn handlers() {
        let node = Runtime::parse("nodejs20.x").unwrap();
        assert!(node.validate_handler("index.handler").is_ok());
        assert!(node.validate_handler("src/app.main").is_ok());
        assert!(node.validate_handler("index").is_err());
        assert!(node.validate_handler("../x.handler").is_err());
        let provided = Runtime::parse("provided").unwrap();
        assert!(provided.validate_handler("anything").is_ok());
    }
}
