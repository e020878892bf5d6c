use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use bytes::Bytes;

use crate::error::{Error, KvErrorKind};

/// A value with the bucket-wide revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub revision: u64,
}

/// How hard a write tries to learn its own outcome after timeouts.
#[derive(Clone, Debug)]
pub struct CasOptions {
    /// Writes attempted (the first one included) before giving up with `Unknown`.
    pub attempts: u32,
    /// Pause between a timed-out write and the read-back that follows it.
    pub pause: Duration,
}

impl Default for CasOptions {
    fn default() -> Self {
        Self {
            attempts: 8,
            pause: Duration::from_millis(200),
        }
    }
}

/// A KV bucket with compare-and-set writes that survive timeouts.
///
/// A write that times out may still be applied later (the request sits in a buffer or in the
/// server's Raft log). Every write here is conditional on a revision, so re-sending it cannot
/// apply twice; after a timeout the key is read back, and a value equal to ours at a newer
/// revision counts as our write. Callers make values unique (they carry a writer id or epoch),
/// so another writer's equal value is not mistaken for ours.
#[derive(Clone)]
pub struct Kv {
    store: Store,
    bucket: String,
    options: CasOptions,
    timeouts: Arc<AtomicU64>,
}

type KvError = Error<KvErrorKind>;

impl Kv {
    pub(crate) fn new(store: Store, bucket: String, options: CasOptions) -> Self {
        Self {
            store,
            bucket,
            options,
            timeouts: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying store, for watches.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes that timed out so far (each one resolved by read-back or reported `Unknown`).
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// The current value of `key`, or `None` when absent or deleted.
    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, KvError> {
        let entry =
            self.store.entry(key).await.map_err(|e| {
                Error::with_source(KvErrorKind::Request, self.context("read", key), e)
            })?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Versioned {
                value: e.value,
                revision: e.revision,
            }))
    }

    /// Unconditional write; for data with a single writer (a node's own state).
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.store.put(key, value).await.map_err(|e| {
            let kind = match e.kind() {
                kv::PutErrorKind::InvalidKey => KvErrorKind::InvalidKey,
                _ => KvErrorKind::Request,
            };
            Error::with_source(kind, self.context("put", key), e)
        })
    }

    /// Creates `key`; `Conflict` when it already holds a value.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.write(key, value, None).await
    }

    /// Replaces `key` if its revision is still `expected`; `Conflict` otherwise.
    pub async fn update(&self, key: &str, value: Bytes, expected: u64) -> Result<u64, KvError> {
        self.write(key, value, Some(expected)).await
    }

    async fn write(&self, key: &str, value: Bytes, expected: Option<u64>) -> Result<u64, KvError> {
        let what = if expected.is_some() {
            "update"
        } else {
            "create"
        };
        for attempt in 1..=self.options.attempts {
            let outcome = match expected {
                Some(revision) => self
                    .store
                    .update(key, value.clone(), revision)
                    .await
                    .map_err(classify_update),
                None => self
                    .store
                    .create(key, value.clone())
                    .await
                    .map_err(classify_create),
            };
            match outcome {
                Ok(revision) => return Ok(revision),
                Err((KvErrorKind::Unknown, _)) => {
                    self.timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bucket = %self.bucket, key, attempt, "kv {what} timed out; reading back");
                    tokio::time::sleep(self.options.pause).await;
                    if let Ok(Some(current)) = self.get(key).await
                        && current.value == value
                        && expected.is_none_or(|rev| current.revision > rev)
                    {
                        return Ok(current.revision);
                    }
                    // Not visible yet: re-send the same conditional write. If the first one
                    // applies in between, this one fails with a conflict and the read-back
                    // below recognises our value.
                }
                Err((KvErrorKind::Conflict, source)) => {
                    if attempt > 1
                        && let Ok(Some(current)) = self.get(key).await
                        && current.value == value
                    {
                        return Ok(current.revision);
                    }
                    return Err(Error::with_boxed(
                        KvErrorKind::Conflict,
                        self.context(what, key),
                        source,
                    ));
                }
                Err((kind, source)) => {
                    return Err(Error::with_boxed(kind, self.context(what, key), source));
                }
            }
        }
        Err(Error::new(
            KvErrorKind::Unknown,
            format!(
                "{} after {} attempts",
                self.context(what, key),
                self.options.attempts
            ),
        ))
    }

    fn context(&self, what: &str, key: &str) -> String {
        format!("kv {what} {}/{key}", self.bucket)
    }
}

type Classified = (KvErrorKind, async_nats::Error);

fn classify_update(error: kv::UpdateError) -> Classified {
    let kind = match error.kind() {
        kv::UpdateErrorKind::WrongLastRevision => KvErrorKind::Conflict,
        kv::UpdateErrorKind::TimedOut => KvErrorKind::Unknown,
        kv::UpdateErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        _ => KvErrorKind::Request,
    };
    (kind, Box::new(error))
}

fn classify_create(error: kv::CreateError) -> Classified {
    let kind = match error.kind() {
        kv::CreateErrorKind::AlreadyExists => KvErrorKind::Conflict,
        kv::CreateErrorKind::Publish | kv::CreateErrorKind::Ack => KvErrorKind::Unknown,
        kv::CreateErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        _ => KvErrorKind::Request,
    };
    (kind, Box::new(error))
}
