use std::fmt;

/// The client's error: a [`ErrorKind`] to branch on, and a context naming the node, the call and
/// what Canton said. Callers branch on [`Error::kind`], never on the text.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
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

    /// The context without the kind: node, call and Canton's message.
    pub fn context(&self) -> &str {
        &self.context
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

/// What went wrong, in the terms a runbook step decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The node cannot be reached or is not serving; retrying later may work.
    #[error("node unavailable")]
    Unavailable,
    /// The call did not finish within its timeout. The node may still apply it.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The node refused because its state does not allow the call (e.g. still connected).
    #[error("precondition failed")]
    FailedPrecondition,
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// The request was rejected as malformed; retrying the same request will not help.
    #[error("invalid argument")]
    InvalidArgument,
    /// A value outside what the node accepts now (e.g. a timestamp it has not reached yet).
    #[error("out of range")]
    OutOfRange,
    #[error("unauthenticated: check the bearer token or client certificate")]
    Unauthenticated,
    #[error("permission denied")]
    PermissionDenied,
    #[error("aborted")]
    Aborted,
    #[error("resource exhausted")]
    ResourceExhausted,
    #[error("cancelled")]
    Cancelled,
    /// The node does not serve this call (wrong node type, port or release line).
    #[error("not implemented by the node")]
    Unimplemented,
    #[error("internal error in the node")]
    Internal,
    /// The node reports a release line this client has no profile for; nothing was sent.
    #[error("unsupported Canton release line")]
    UnsupportedVersion,
    /// The node is not initialised, so it cannot serve the call (or name its release line).
    #[error("node not initialised")]
    NotInitialized,
    /// The call does not exist on this kind of node (e.g. set passive on a mediator).
    #[error("wrong node type for this call")]
    WrongNodeType,
    /// The node answered with something the contract rules out.
    #[error("unexpected response")]
    Protocol,
    /// The client configuration is unusable (endpoint URL, TLS material, token).
    #[error("invalid client configuration")]
    Config,
    #[error("unexpected gRPC status")]
    Other,
}

impl ErrorKind {
    /// Whether the same call may succeed later without changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::DeadlineExceeded
                | ErrorKind::Aborted
                | ErrorKind::ResourceExhausted
        )
    }

    pub(crate) fn from_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::Unavailable => ErrorKind::Unavailable,
            Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::InvalidArgument => ErrorKind::InvalidArgument,
            Code::OutOfRange => ErrorKind::OutOfRange,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::Aborted => ErrorKind::Aborted,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Cancelled => ErrorKind::Cancelled,
            Code::Unimplemented => ErrorKind::Unimplemented,
            Code::Internal | Code::DataLoss => ErrorKind::Internal,
            Code::Ok | Code::Unknown => ErrorKind::Other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
