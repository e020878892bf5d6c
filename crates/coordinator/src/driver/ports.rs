//! The driver's I/O, as small traits: the run store (CAS on run records, results, claims), the
//! command publisher, the clock and the lease. NATS implements them in [`crate::nats`]; the
//! deterministic simulation implements them in memory.

use bytes::Bytes;
use futures::future::BoxFuture;
use sidecar_core::Millis;

use super::record::ClaimRecord;

/// A stored value with the revision that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreErrorKind {
    /// The key exists (create) or moved past the expected revision (update).
    #[error("revision conflict")]
    Conflict,
    /// The write was not confirmed; it may still apply. Resolved by reading back.
    #[error("outcome unknown")]
    Unknown,
    #[error("store unavailable")]
    Unavailable,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{context}: {kind}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub context: String,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
        }
    }
}

/// Who holds a node claim when a create found one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    Taken { revision: u64 },
    Held { holder: ClaimRecord, revision: u64 },
}

/// Run records, per-node results and node claims.
pub trait RunStore: Send + Sync {
    fn load(&self, key: &str) -> BoxFuture<'_, Result<Option<Stored>, StoreError>>;
    /// Creates `key`; `Conflict` when it exists.
    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Replaces `key` if its revision is still `expected`.
    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Keys of run records (not result keys).
    fn run_keys(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// Writes an immutable result (same key, same bytes on a repeat).
    fn put_result(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;
    fn claim(
        &self,
        node: &str,
        claim: &ClaimRecord,
    ) -> BoxFuture<'_, Result<ClaimOutcome, StoreError>>;
    /// Replaces a claim whose holder run is finished.
    fn reclaim(
        &self,
        node: &str,
        claim: &ClaimRecord,
        expected: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Deletes the claim of `node` if it still has `revision`.
    fn release(&self, node: &str, revision: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("publish to {node}: {detail}")]
pub struct PublishError {
    pub node: String,
    pub detail: String,
}

/// A command envelope for one agent, with its `Nats-Msg-Id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundCommand {
    pub node: String,
    pub message_id: String,
    pub payload: Bytes,
    /// The signed body's `traceparent`, repeated as a NATS header (empty: none).
    pub traceparent: String,
}

pub trait Publisher: Send + Sync {
    /// Publishes durably (JetStream) and returns once the server stored it.
    fn publish(&self, command: OutboundCommand) -> BoxFuture<'_, Result<(), PublishError>>;
    /// Best-effort progress for watchers (the record is the truth).
    fn emit(&self, run: &str, event: &sidecar_core::RunEvent);
}

/// Where a command to a logical HA node goes. Asked once per attempt, when the engine first
/// sends it; the answer is stored in the run record before anything is published, so
/// resends and revokes of that attempt go to the same replica.
pub trait Router: Send + Sync {
    /// The replica id (`<node>.<replica>`) that should execute a new attempt on `node`, or
    /// `None` when `node` has no HA replicas.
    fn replica_for(&self, node: &str) -> Option<String>;
}

/// No node has replicas: every command goes to its node's own subject.
pub struct NoReplicas;

impl Router for NoReplicas {
    fn replica_for(&self, _node: &str) -> Option<String> {
        None
    }
}

pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Millis;
}

/// The leadership as the driver needs it.
pub trait Lease: Send + Sync {
    /// Our epoch if we are leader at this instant; checked right before every publish.
    fn epoch_now(&self) -> Option<u64>;
    /// An agent has confirmed `seen_epoch`; returns whether that deposed us.
    fn deposed(&self, seen_epoch: u64) -> bool;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
            .unwrap_or(0)
    }
}
