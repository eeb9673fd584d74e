//! Error types the CLI reports specially, and the "what to do next" hint for an error.

use crate::client::ApiError;
use std::fmt;

/// A local error that comes with advice.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl Hinted {
    pub fn error(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            message: message.into(),
            hint: hint.into(),
        })
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// The invoked function itself failed (`X-Amz-Function-Error`); reported without `error:`.
#[derive(Debug)]
pub struct FunctionFailed {
    /// `function error: <errorType>: <errorMessage>`
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for FunctionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FunctionFailed {}

/// The first hint found along the error's chain.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|cause| {
        if let Some(a) = cause.downcast_ref::<ApiError>() {
            a.hint().map(str::to_string)
        } else if let Some(h) = cause.downcast_ref::<Hinted>() {
            Some(h.hint.clone())
        } else if let Some(f) = cause.downcast_ref::<FunctionFailed>() {
            f.hint.clone()
        } else if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::AddrInUse => {
                    Some("another process is listening there; stop it or pick another address with --listen".into())
                }
                std::io::ErrorKind::PermissionDenied => Some("check the permissions of the path".into()),
                _ => None,
            }
        } else {
            None
        }
    })
}

/// True when stdout was closed under us (`nimbus logs f | head`), which is not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn hints_are_found_through_context() {
        let e = Err::<(), _>(Hinted::error("no nimbus.toml in x", "do y"))
            .context("outer")
            .unwrap_err();
        assert_eq!(hint(&e).as_deref(), Some("do y"));
        let api = ApiError {
            status: 404,
            kind: "ResourceNotFoundException".into(),
            message: "m".into(),
        };
        assert!(hint(&anyhow::Error::new(api))
            .unwrap()
            .contains("nimbus ls"));
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert!(hint(&anyhow::Error::new(io).context("cannot start"))
            .unwrap()
            .contains("--listen"));
        assert_eq!(hint(&anyhow::anyhow!("plain")), None);
    }

    #[test]
    fn broken_pipe() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("x")));
    }
}
