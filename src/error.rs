//! The daemon's one error type. Every handler returns it; [`Error::status`] is the single place
//! where a failure becomes one of Docker's status codes (moby `httpstatus.FromError`).

use std::fmt;

/// A failure with the class Docker would give it. The message is what the client prints after
/// `Error response from daemon: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// 404: the named object does not exist.
    NotFound(String),
    /// 400: the request itself is wrong.
    InvalidParameter(String),
    /// 409: the request clashes with current state.
    Conflict(String),
    /// 401
    Unauthorized(String),
    /// 403
    Forbidden(String),
    /// 503
    Unavailable(String),
    /// 408: the client stopped sending its request (what proxies in front of dockerd answer).
    RequestTimeout(String),
    /// 501
    NotImplemented(String),
    /// 500: what moby returns for untyped errors; also our own I/O failures.
    System(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::NotFound(_) => 404,
            Error::InvalidParameter(_) => 400,
            Error::Conflict(_) => 409,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::Unavailable(_) => 503,
            Error::RequestTimeout(_) => 408,
            Error::NotImplemented(_) => 501,
            Error::System(_) => 500,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::InvalidParameter(m)
            | Error::Conflict(m)
            | Error::Unauthorized(m)
            | Error::Forbidden(m)
            | Error::Unavailable(m)
            | Error::RequestTimeout(m)
            | Error::NotImplemented(m)
            | Error::System(m) => m,
        }
    }

    /// Prefix the message, keeping the class (moby's `errors.Wrap` on a typed error).
    pub fn context(self, prefix: impl fmt::Display) -> Error {
        let wrap = |m: String| format!("{prefix}: {m}");
        match self {
            Error::NotFound(m) => Error::NotFound(wrap(m)),
            Error::InvalidParameter(m) => Error::InvalidParameter(wrap(m)),
            Error::Conflict(m) => Error::Conflict(wrap(m)),
            Error::Unauthorized(m) => Error::Unauthorized(wrap(m)),
            Error::Forbidden(m) => Error::Forbidden(wrap(m)),
            Error::Unavailable(m) => Error::Unavailable(wrap(m)),
            Error::RequestTimeout(m) => Error::RequestTimeout(wrap(m)),
            Error::NotImplemented(m) => Error::NotImplemented(wrap(m)),
            Error::System(m) => Error::System(wrap(m)),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::System(e.to_string())
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<Error>() {
            Ok(typed) => typed,
            Err(e) => Error::System(format!("{e:#}")),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
