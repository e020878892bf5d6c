use std::fmt;

/// One error type per module, classified by a kind enum (the pattern of async-nats): callers
/// branch on [`Error::kind`], never on the message text.
#[derive(Debug)]
pub struct Error<Kind> {
    kind: Kind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl<Kind: Copy> Error<Kind> {
    pub(crate) fn new(kind: Kind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: Kind,
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            context: context.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn with_boxed(
        kind: Kind,
        context: impl Into<String>,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Self {
        Self {
            kind,
            context: context.into(),
            source: Some(source),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl<Kind: fmt::Display> fmt::Display for Error<Kind> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.kind)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl<Kind: fmt::Display + fmt::Debug> std::error::Error for Error<Kind> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// A network or node id that cannot be used in NATS names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameErrorKind {
    #[error("network id must be 1-32 of [a-z0-9-], starting with a letter or digit")]
    InvalidNetworkId,
    #[error(
        "node id must be `<node>` or `<node>.<replica>`, each 1-63 of [a-z0-9-] starting with a letter or digit"
    )]
    InvalidNodeId,
    #[error("token must be 1-128 of [A-Za-z0-9_-]")]
    InvalidToken,
}

/// Connecting and creating streams and buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupErrorKind {
    #[error("cannot connect to NATS")]
    Connect,
    /// The credential or CA file cannot be used.
    #[error("unusable NATS credentials")]
    Credentials,
    #[error(
        "nats-server is older than 2.11; upgrade it (the project needs per-message TTL and sync_interval)"
    )]
    ServerTooOld,
    #[error("cannot create or update a stream")]
    Stream,
    #[error("cannot create or open a KV bucket")]
    Bucket,
}

/// KV reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvErrorKind {
    /// The key exists (create) or moved past the expected revision (update).
    #[error("revision conflict")]
    Conflict,
    /// The server did not confirm the write and read-backs could not tell whether it applied.
    #[error("outcome unknown after timeouts")]
    Unknown,
    #[error("invalid key")]
    InvalidKey,
    #[error("request failed")]
    Request,
}
