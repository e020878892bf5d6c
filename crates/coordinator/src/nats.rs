//! The driver's ports on NATS: run records and claims in KV by CAS, commands through
//! JetStream with `Nats-Msg-Id`, the lease from [`Election`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use sidecar_bus::{Bucket, Kv, KvErrorKind, Names, Network, NodeId};

use crate::driver::ports::{
    ClaimOutcome, Lease, OutboundCommand, PublishError, Publisher, RunStore, StoreError,
    StoreErrorKind, Stored,
};
use crate::driver::record::ClaimRecord;
use crate::leadership::Election;

fn store_error(error: sidecar_bus::Error<KvErrorKind>) -> StoreError {
    let kind = match error.kind() {
        KvErrorKind::Conflict => StoreErrorKind::Conflict,
        KvErrorKind::Unknown => StoreErrorKind::Unknown,
        KvErrorKind::InvalidKey | KvErrorKind::Request => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, error.to_string())
}

/// Runs and claims buckets of one network.
#[derive(Clone)]
pub struct NatsStore {
    runs: Kv,
    claims: Kv,
}

impl NatsStore {
    pub fn new(network: &Network) -> Self {
        Self {
            runs: network.kv(Bucket::Runs).clone(),
            claims: network.kv(Bucket::Claims).clone(),
        }
    }

    async fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = self.runs.store().keys().await.map_err(|error| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("listing runs: {error}"),
            )
        })?;
        let mut runs = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("listing runs: {error}"),
                )
            })?;
            if !key.contains('.') {
                runs.push(key);
            }
        }
        runs.sort();
        Ok(runs)
    }
}

/// The key listing follows an ordered consumer, which async-nats recreates without end while
/// the bucket's stream has no leader; a take-over must fail (and be tried again) instead.
const LISTING_TIMEOUT: Duration = Duration::from_secs(15);

impl RunStore for NatsStore {
    fn load(&self, key: &str) -> BoxFuture<'_, Result<Option<Stored>, StoreError>> {
        let key = key.to_owned();
        Box::pin(async move {
            Ok(self
                .runs
                .get(&key)
                .await
                .map_err(store_error)?
                .map(|v| Stored {
                    value: v.value,
                    revision: v.revision,
                }))
        })
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, StoreError>> {
        let key = key.to_owned();
        Box::pin(async move { self.runs.create(&key, value).await.map_err(store_error) })
    }

    fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let key = key.to_owned();
        Box::pin(async move {
            self.runs
                .update(&key, value, expected)
                .await
                .map_err(store_error)
        })
    }

    fn run_keys(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            tokio::time::timeout(LISTING_TIMEOUT, self.list_runs())
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::new(
                        StoreErrorKind::Unavailable,
                        format!("listing runs: no answer within {LISTING_TIMEOUT:?}"),
                    ))
                })
        })
    }

    fn put_result(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = key.to_owned();
        Box::pin(async move {
            // Results are immutable and written only by the run's owner: an existing equal
            // value is a repeat of our own earlier write.
            match self.runs.get(&key).await.map_err(store_error)? {
                Some(existing) if existing.value == value => Ok(()),
                _ => self
                    .runs
                    .put(&key, value)
                    .await
                    .map(|_| ())
                    .map_err(store_error),
            }
        })
    }

    fn claim(
        &self,
        node: &str,
        claim: &ClaimRecord,
    ) -> BoxFuture<'_, Result<ClaimOutcome, StoreError>> {
        let node = node.to_owned();
        let value = serde_json::to_vec(claim).map(Bytes::from);
        Box::pin(async move {
            let value = value.map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("encoding a claim: {error}"),
                )
            })?;
            match self.claims.create(&node, value).await {
                Ok(revision) => Ok(ClaimOutcome::Taken { revision }),
                Err(error) if error.kind() == KvErrorKind::Conflict => {
                    let Some(current) = self.claims.get(&node).await.map_err(store_error)? else {
                        return Err(StoreError::new(
                            StoreErrorKind::Conflict,
                            format!("claim of {node} changed while reading it; try again"),
                        ));
                    };
                    let holder: ClaimRecord =
                        serde_json::from_slice(&current.value).map_err(|error| {
                            StoreError::new(
                                StoreErrorKind::Unavailable,
                                format!("claim of node {node} does not decode: {error}"),
                            )
                        })?;
                    Ok(ClaimOutcome::Held {
                        holder,
                        revision: current.revision,
                    })
                }
                Err(error) => Err(store_error(error)),
            }
        })
    }

    fn reclaim(
        &self,
        node: &str,
        claim: &ClaimRecord,
        expected: u64,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let node = node.to_owned();
        let value = serde_json::to_vec(claim).map(Bytes::from);
        Box::pin(async move {
            let value = value.map_err(|error| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("encoding a claim: {error}"),
                )
            })?;
            self.claims
                .update(&node, value, expected)
                .await
                .map_err(store_error)
        })
    }

    fn release(&self, node: &str, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let node = node.to_owned();
        Box::pin(async move {
            match self.claims.get(&node).await.map_err(store_error)? {
                Some(current) if current.revision == revision => self
                    .claims
                    .store()
                    .delete_expect_revision(&node, Some(revision))
                    .await
                    .map_err(|error| {
                        StoreError::new(
                            StoreErrorKind::Unavailable,
                            format!("releasing the claim of {node}: {error}"),
                        )
                    }),
                // Already released, or taken over after our run finished.
                _ => Ok(()),
            }
        })
    }
}

/// Commands through JetStream; progress events on core NATS.
#[derive(Clone)]
pub struct NatsPublisher {
    names: Names,
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    ack_timeout: Duration,
}

impl NatsPublisher {
    pub fn new(network: &Network, ack_timeout: Duration) -> Self {
        Self {
            names: network.names.clone(),
            client: network.client.clone(),
            jetstream: network.jetstream.clone(),
            ack_timeout,
        }
    }
}

/// Publishes to JetStream, waiting for the stored ack; a repeat after a timeout keeps the
/// message id, so the duplicate window stores it once.
pub async fn publish_durable(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    message_id: &str,
    payload: Bytes,
    ack_timeout: Duration,
) -> Result<(), String> {
    publish_durable_traced(jetstream, subject, message_id, payload, "", ack_timeout).await
}

/// [`publish_durable`] with a `traceparent` header (none when empty).
pub async fn publish_durable_traced(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    message_id: &str,
    payload: Bytes,
    traceparent: &str,
    ack_timeout: Duration,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let mut message = PublishMessage::build()
            .payload(payload.clone())
            .message_id(message_id);
        if !traceparent.is_empty() {
            message = message.header(sidecar_telemetry::propagation::TRACEPARENT, traceparent);
        }
        let outcome = tokio::time::timeout(ack_timeout, async {
            jetstream
                .send_publish(subject.clone(), message)
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) => last = error.to_string(),
            Err(_) => last = format!("no ack within {ack_timeout:?}"),
        }
    }
    Err(last)
}

impl Publisher for NatsPublisher {
    fn publish(&self, command: OutboundCommand) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let node = NodeId::new(command.node.clone()).map_err(|error| PublishError {
                node: command.node.clone(),
                detail: error.to_string(),
            })?;
            publish_durable_traced(
                &self.jetstream,
                self.names.command(&node),
                &command.message_id,
                command.payload,
                &command.traceparent,
                self.ack_timeout,
            )
            .await
            .map_err(|detail| PublishError {
                node: command.node.clone(),
                detail,
            })
        })
    }

    fn emit(&self, run: &str, event: &sidecar_core::RunEvent) {
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        let client = self.client.clone();
        let subject = self.names.run_events(run);
        tokio::spawn(async move {
            let _ = client.publish(subject, Bytes::from(payload)).await;
        });
    }
}

/// The lease of a running [`Election`].
pub struct ElectionLease(pub Arc<Election>);

impl Lease for ElectionLease {
    fn epoch_now(&self) -> Option<u64> {
        self.0.epoch_now()
    }

    fn deposed(&self, seen_epoch: u64) -> bool {
        self.0.deposed(seen_epoch)
    }
}
