use std::fmt;

/// Errors of the sim's own machinery (config, database, processes), classified by kind; callers
/// branch on [`Error::kind`], never on the message text. Canton-level refusals of admin calls
/// are [`CantonError`]s instead.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("invalid configuration")]
    Config,
    #[error("database error")]
    Database,
    #[error("the database belongs to another node")]
    WrongDatabase,
    #[error("i/o error")]
    Io,
    #[error("cannot start a node process")]
    Spawn,
    #[error("control request failed")]
    Control,
    #[error("timed out")]
    Timeout,
}

impl Error {
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Self::with_source(ErrorKind::Database, context, source)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.kind)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A refusal as Canton reports it: a gRPC status code plus Canton's error code id, which
/// Canton puts at the start of the status message (`CODE_ID(category,correlation): cause`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CantonError {
    pub code: tonic::Code,
    pub id: &'static str,
    pub cause: String,
}

impl CantonError {
    pub fn new(code: tonic::Code, id: &'static str, cause: impl Into<String>) -> Self {
        Self {
            code,
            id,
            cause: cause.into(),
        }
    }

    /// Canton's error category number for the status code (`ErrorCategory` rank), so the
    /// message has the same shape as Canton's.
    fn category(&self) -> u8 {
        match self.code {
            tonic::Code::InvalidArgument => 8,
            tonic::Code::NotFound => 11,
            tonic::Code::AlreadyExists => 10,
            tonic::Code::FailedPrecondition => 9,
            tonic::Code::OutOfRange => 12,
            tonic::Code::Unavailable => 1,
            tonic::Code::Aborted => 2,
            _ => 4,
        }
    }
}

impl fmt::Display for CantonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({},0): {}", self.id, self.category(), self.cause)
    }
}

impl std::error::Error for CantonError {}

impl From<CantonError> for tonic::Status {
    fn from(error: CantonError) -> Self {
        tonic::Status::new(error.code, error.to_string())
    }
}

/// What a service handler can fail with: a Canton refusal, or the sim's own failure (reported
/// as INTERNAL, as Canton reports storage failures).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Canton(#[from] CantonError),
    #[error(transparent)]
    Sim(#[from] Error),
}

impl From<CallError> for tonic::Status {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Canton(e) => e.into(),
            CallError::Sim(e) => tonic::Status::internal(e.to_string()),
        }
    }
}
