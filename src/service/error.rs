//! The service error: what went wrong, in words that know no protocol. `http` maps the kind to a
//! status and the JSON envelope in one place; the CLI prints the message.

use std::borrow::Cow;
use std::fmt;

use crate::store::StoreError;

/// What kind of failure, for whoever maps it to a protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input breaks a rule; the message names the field.
    Invalid,
    NotFound,
    /// The caller may not do this to this record (a lease held by another token).
    Forbidden,
    /// The request conflicts with the current state (a name taken, a job already finished).
    Conflict,
    /// Well-formed input that an outside party (a provider) refused.
    Rejected,
    /// Too many requests; `retry_after_secs` says when to come back.
    RateLimited,
    /// A dependency did not answer; try again later.
    Unavailable,
    /// A failure the caller cannot fix.
    Internal,
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// Stable snake_case code, e.g. `invalid_name`, `not_found`, `conflict`.
    pub code: Cow<'static, str>,
    /// Human-readable explanation naming the offending input.
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(
        kind: ErrorKind,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
            retry_after_secs: None,
        }
    }
    pub fn invalid(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, "conflict", message)
    }
    pub fn rejected(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Rejected, code, message)
    }
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(ErrorKind::RateLimited, "too_many_requests", message)
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, "unavailable", message)
    }
    /// An unexpected failure: logged in full, reported without details.
    pub fn internal(error: impl fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            ErrorKind::Internal,
            "internal",
            "internal error; see the server log",
        )
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
    pub fn is_conflict(&self) -> bool {
        self.kind == ErrorKind::Conflict
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::not_found("no such record"),
            StoreError::Conflict(what) => {
                Error::conflict(format!("conflicts with an existing record ({what})"))
            }
            StoreError::Other(e) => Error::internal(e),
        }
    }
}

/// `Option`-returning lookups and `StoreError::NotFound` become a not-found naming the record.
pub fn not_found(what: String) -> impl FnOnce(StoreError) -> Error {
    move |e| match e {
        StoreError::NotFound => Error::not_found(what),
        other => other.into(),
    }
}
