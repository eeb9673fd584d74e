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
    /// A WebAssembly component of the `wasi:http/proxy` world (`wasi-http`): HTTP requests
    /// go to it as they are; run in-process by the wasm executor, a fresh instance per request.
    WasiHttp,
    /// A WebAssembly component of Nimbus's event world (`wasm-event`, the WIT package
    /// `nimbus:function` in `wit/`): events go to its `handler.handle`.
    WasmEvent,
}

impl RuntimeFamily {
    /// Whether functions of this family are WebAssembly components (run by the wasm
    /// executor, not as processes).
    pub fn is_wasm(self) -> bool {
        matches!(self, RuntimeFamily::WasiHttp | RuntimeFamily::WasmEvent)
    }
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
    "wasi-http",
    "wasm-event",
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
        } else if self.0 == "wasi-http" {
            RuntimeFamily::WasiHttp
        } else if self.0 == "wasm-event" {
            RuntimeFamily::WasmEvent
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
            RuntimeFamily::WasiHttp | RuntimeFamily::WasmEvent => {
                // The component's file in the package, e.g. `app.wasm` or `target/app.wasm`.
                let relative = !handler.starts_with('/')
                    && handler
                        .split('/')
                        .all(|p| !p.is_empty() && p != "." && p != "..");
                if relative && handler.len() > ".wasm".len() && handler.ends_with(".wasm") {
                    Ok(())
                } else {
                    bad("name the component's .wasm file in the package, for example app.wasm")
                }
            }
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
        for id in ["wasi-http", "wasm-event"] {
            let wasm = Runtime::parse(id).unwrap();
            assert!(wasm.family().is_wasm());
            assert!(wasm.validate_handler("app.wasm").is_ok());
            assert!(wasm.validate_handler("target/app.wasm").is_ok());
            for bad in [
                "app",
                ".wasm",
                "/abs/app.wasm",
                "../app.wasm",
                "a//b.wasm",
                "./a.wasm",
            ] {
                assert!(wasm.validate_handler(bad).is_err(), "{bad}");
            }
        }
        assert!(!Runtime::parse("go").unwrap().family().is_wasm());
    }
}
