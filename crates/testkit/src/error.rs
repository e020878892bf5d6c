use std::fmt;

/// What went wrong, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A required program is not installed.
    MissingBinary,
    /// An installed program is older than we support.
    TooOld,
    /// A child could not be started or did not become ready.
    Spawn,
    /// A child exited or failed while we used it.
    Child,
    /// Preparing files or directories failed.
    Filesystem,
    /// A wait ran past its deadline.
    Timeout,
}

/// Error of the test harness. The message is written for the person running the tests and ends
/// with what to do about it where that is known.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<std::io::Error>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn io(kind: ErrorKind, what: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            kind,
            message: what.into(),
            source: Some(source),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
