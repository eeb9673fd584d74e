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
    /// Runs the package's own `bootstrap` executable (also `go`: a Go binary named bootstrap).
    Provided,
    /// Runs the host `java` with Nimbus's Java bootstrap.
    Java,
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
    "go",
    "java17",
    "java21",
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
        } else if self.0.starts_with("java") {
            RuntimeFamily::Java
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
            RuntimeFamily::Java => {
                // `package.Class::method`, or `package.Class` (method handleRequest).
                let (class, method) = handler
                    .split_once("::")
                    .unwrap_or((handler, "handleRequest"));
                let ident = |s: &str| {
                    !s.is_empty()
                        && s.split('.').all(|p| {
                            p.chars()
                                .next()
                                .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
                                && p.chars()
                                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
                        })
                };
                if ident(class) && ident(method) && !method.contains('.') {
                    Ok(())
                } else {
                    bad("use package.Class::method, for example example.Hello::handleRequest")
                }
            }
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
        let java = Runtime::parse("java21").unwrap();
        assert_eq!(java.family(), RuntimeFamily::Java);
        assert!(java
            .validate_handler("example.Hello::handleRequest")
            .is_ok());
        assert!(java.validate_handler("example.Hello").is_ok());
        assert!(java.validate_handler("example.Hello::").is_err());
        assert!(java.validate_handler("1bad.Class::m").is_err());
        assert_eq!(
            Runtime::parse("go").unwrap().family(),
            RuntimeFamily::Provided
        );
    }
}
