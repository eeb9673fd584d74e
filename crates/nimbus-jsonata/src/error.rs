//! The error type: a JSONata error code, a message and the position in the expression.

use std::fmt;

/// A JSONata parse or evaluation error.
///
/// `code` is JSONata's error code (`S0201`, `T2001`, `D3030`, …; see
/// <https://docs.jsonata.org> and the reference implementation's error table).
/// `U1001` covers every budget: depth ("Stack overflow"), steps and time ("timeout"), as
/// JSONata's own test harness reports them. Nimbus adds `S0303` (a regular
/// expression the `regex` crate does not support).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Error {
    /// JSONata's error code, e.g. `"T2001"`.
    pub code: &'static str,
    /// A human-readable message.
    pub message: String,
    /// The character offset in the expression the error relates to, when known.
    pub position: Option<usize>,
    /// The offending token or value, when there is one.
    pub token: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(p) = self.position {
            write!(f, " (at position {p})")?;
        }
        Ok(())
    }
}

impl Error {
    /// An error with a code, a message and an optional position.
    pub fn new(code: &'static str, message: impl Into<String>, position: Option<usize>) -> Self {
        Error {
            code,
            message: message.into(),
            position,
            token: None,
        }
    }

    pub(crate) fn at(code: &'static str, pos: usize, message: impl Into<String>) -> Self {
        Error::new(code, message, Some(pos))
    }

    pub(crate) fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
