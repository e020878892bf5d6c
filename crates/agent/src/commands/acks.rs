//! Signed acks on `cs.<net>.ack.<node>.<run>`, published with a PubAck awaited and a
//! `Nats-Msg-Id` of `<command_id>/<attempt>/<status>` (Progress: `…/progress/<boot>/<n>`), so a
//! resend of the same final ack within the server's duplicate window is stored once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use prost::Message;
use proto_sidecar::{Ack, AckStatus, RejectReason};
use sidecar_bus::{Names, NodeId, valid_token};
use sidecar_trust::SigningIdentity;
use tokio_util::sync::CancellationToken;

use crate::actions::Progress;
use crate::metrics::AgentMetrics;

/// Publishes tried before giving up; the command then stays unacked and its redelivery
/// resends the journalled outcome.
const PUBLISH_ATTEMPTS: usize = 6;

/// Which command an ack answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckTarget {
    pub command_id: String,
    pub run: String,
    pub attempt: u32,
}

impl AckTarget {
    pub fn of(command: &proto_sidecar::Command) -> Self {
        Self {
            command_id: command.command_id.clone(),
            run: command.run.clone(),
            attempt: command.attempt,
        }
    }
}

/// What an ack says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckBody {
    Done {
        result: Vec<u8>,
        detail: String,
    },
    Failed {
        detail: String,
    },
    OutcomeUnknown {
        detail: String,
    },
    Rejected {
        reason: RejectReason,
        detail: String,
    },
    Progress(Progress),
}

impl AckBody {
    fn status(&self) -> AckStatus {
        match self {
            AckBody::Done { .. } => AckStatus::Done,
            AckBody::Failed { .. } => AckStatus::Failed,
            AckBody::OutcomeUnknown { .. } => AckStatus::OutcomeUnknown,
            AckBody::Rejected { .. } => AckStatus::Rejected,
            AckBody::Progress(_) => AckStatus::Progress,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            AckBody::Done { .. } => "done",
            AckBody::Failed { .. } => "failed",
            AckBody::OutcomeUnknown { .. } => "outcome_unknown",
            AckBody::Rejected { .. } => "rejected",
            AckBody::Progress(_) => "progress",
        }
    }
}

/// Why an ack was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("command {command_id}: run {run:?} cannot name an ack subject; no ack sent")]
    BadRun { command_id: String, run: String },
    #[error("command {command_id}: ack not stored after {attempts} attempts: {last}")]
    NotStored {
        command_id: String,
        attempts: usize,
        last: String,
    },
    #[error("command {command_id}: ack not sent, the agent is stopping")]
    Stopping { command_id: String },
}

/// Signs and publishes this agent's acks.
pub struct AckPublisher {
    jetstream: jetstream::Context,
    names: Names,
    node: NodeId,
    key: SigningIdentity,
    boot_id: String,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
    progress_sequence: AtomicU64,
}

impl AckPublisher {
    pub fn new(
        jetstream: jetstream::Context,
        names: Names,
        node: NodeId,
        key: SigningIdentity,
        boot_id: String,
        metrics: AgentMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            jetstream,
            names,
            node,
            key,
            boot_id,
            metrics,
            shutdown,
            progress_sequence: AtomicU64::new(0),
        }
    }

    /// The `Nats-Msg-Id` of an ack.
    pub fn message_id(&self, target: &AckTarget, body: &AckBody) -> String {
        match body {
            AckBody::Progress(_) => format!(
                "{}/{}/progress/{}/{}",
                target.command_id,
                target.attempt,
                self.boot_id,
                self.progress_sequence.fetch_add(1, Ordering::Relaxed) + 1
            ),
            _ => format!("{}/{}/{}", target.command_id, target.attempt, body.label()),
        }
    }

    fn ack(&self, target: &AckTarget, body: &AckBody, epoch: u64) -> Ack {
        let mut ack = Ack {
            network: self.names.network().as_str().to_owned(),
            command_id: target.command_id.clone(),
            node: self.node.as_str().to_owned(),
            run: target.run.clone(),
            attempt: target.attempt,
            status: body.status().into(),
            epoch,
            sent_at_unix_ms: super::unix_ms_now(),
            boot_id: self.boot_id.clone(),
            ..Ack::default()
        };
        match body {
            AckBody::Done { result, detail } => {
                ack.result = result.clone();
                ack.detail = detail.clone();
            }
            AckBody::Failed { detail } | AckBody::OutcomeUnknown { detail } => {
                ack.detail = detail.clone();
            }
            AckBody::Rejected { reason, detail } => {
                ack.reject_reason = (*reason).into();
                ack.detail = detail.clone();
            }
            AckBody::Progress(progress) => {
                ack.progress = Some(proto_sidecar::Progress {
                    done: progress.done,
                    total: progress.total,
                    unit: progress.unit.clone(),
                    message: progress.message.clone(),
                });
            }
        }
        ack
    }

    /// Signs and publishes, retrying until the server stored it (PubAck) or giving up.
    pub async fn publish(
        &self,
        target: &AckTarget,
        body: &AckBody,
        epoch: u64,
    ) -> Result<(), AckError> {
        if !valid_token(&target.run) {
            return Err(AckError::BadRun {
                command_id: target.command_id.clone(),
                run: target.run.clone(),
            });
        }
        let subject = self.names.ack(&self.node, &target.run);
        let envelope = sidecar_trust::sign_ack(&self.key, self.ack(target, body, epoch));
        let payload = Bytes::from(envelope.encode_to_vec());
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            self.message_id(target, body).as_str(),
        );
        // For tools that follow NATS headers; the coordinator needs no parent for an ack.
        sidecar_telemetry::propagation::inject_nats(&tracing::Span::current(), &mut headers);
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(3))
            .with_jitter()
            .build();
        let mut last = String::new();
        for attempt in 1..=PUBLISH_ATTEMPTS {
            let sent = self
                .jetstream
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await;
            let stored = match sent {
                Ok(pending) => pending.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match stored {
                Ok(()) => {
                    self.metrics.acks_published.increment();
                    return Ok(());
                }
                Err(error) => {
                    self.metrics.ack_publish_failures.increment();
                    tracing::warn!(command = %target.command_id, status = body.label(), attempt, %error, "ack not stored; retrying");
                    last = error;
                }
            }
            let pause = pauses.next().unwrap_or(Duration::from_secs(3));
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    return Err(AckError::Stopping { command_id: target.command_id.clone() });
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
        Err(AckError::NotStored {
            command_id: target.command_id.clone(),
            attempts: PUBLISH_ATTEMPTS,
            last,
        })
    }
}
