use std::fmt;

/// The crate's error: a [`ErrorKind`] to branch on and a context that names the node, the file
/// or the command and what to do. Callers branch on [`Error::kind`], never on the text.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::with_source(ErrorKind::Io, context, source)
    }

    pub(crate) fn db(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Self::with_source(ErrorKind::Database, context, source)
    }

    pub(crate) fn config(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, context)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The context without the kind.
    pub fn context(&self) -> &str {
        &self.context
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.context)?;
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

/// What went wrong, in the terms an agent decides on (retry, refuse, ask an operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The configuration or a request is unusable; nothing was done.
    #[error("invalid configuration")]
    Config,
    /// No PostgreSQL client programs of the server's major version are installed.
    #[error("missing PostgreSQL client programs")]
    MissingClient,
    /// A query on the node's database failed.
    #[error("database error")]
    Database,
    /// A child process (pg_dump, pg_restore, a hook) could not start or failed.
    #[error("command failed")]
    Command,
    /// Reading or writing a backup file failed.
    #[error("file error")]
    Io,
    /// The caller cancelled; the child's process group was killed and no file was published.
    #[error("cancelled")]
    Cancelled,
    /// Refused because a replica, a writer or a connection of the node still runs.
    #[error("refused: the node is not stopped")]
    NotStopped,
    /// A dump or manifest does not match its checksum (or cannot be read as one).
    #[error("backup corrupted")]
    Corrupt,
    /// The backup (dump or manifest) asked for does not exist.
    #[error("backup not found")]
    NotFound,
    /// A lifecycle hook ran but the node did not reach the state within the wait.
    #[error("timed out")]
    Timeout,
    /// The caller's observer failed to record a child process; the child was killed.
    #[error("could not record the child process")]
    Observer,
}
