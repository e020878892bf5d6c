//! What happens to each delivery. In the consumer's order, one at a time:
//!
//! 1. `trust::check_command` against the journal (body hash per attempt, revocations) and the
//!    confirmed epoch. A refusal is counted by reason, answered with a signed Rejected ack when
//!    the command's signature verified, and terminated (never redelivered); nothing runs.
//! 2. `Fence` raises the confirmed epoch, `Revoke` closes attempts: journalled, then acked Done.
//! 3. An action, by what the journal and this process know of its attempt:
//!    - running in this process (a redelivery while it runs, e.g. `ack_wait` shorter than the
//!      action): a signed Progress ack and a "working" ack to the server; it is not run again;
//!    - Done / Failed / OutcomeUnknown: the recorded outcome is sent again;
//!    - Started by an earlier boot (interrupted): unguardable → OutcomeUnknown; otherwise
//!      `already_done()` decides between reporting Done and running again;
//!    - unknown: refused if issued before a journal loss, else run.
//!
//! Running: mutating actions take the node's lock (one at a time), then journal Started (fsync),
//! run, journal the outcome, publish the signed ack (PubAck awaited), and double-ack the latest
//! delivery. An action interrupted by shutdown stays Started and is not acked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::Subject;
use async_nats::jetstream::{self, AckKind, message::Acker};
use futures::future::BoxFuture;
use proto_sidecar::{RejectReason, action::Kind};
use sidecar_core::Idempotency;
use sidecar_trust::{BodyHash, CheckContext, CheckedCommand, Rejection, check_command};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::acks::{AckBody, AckPublisher, AckTarget};
use super::children::{kernel_boot_id, process_start};
use super::journal::Record;
use super::state::{CommandLog, EntryState, JournalState};
use super::{CommandPath, crash_points, verified_command};
use crate::actions::{
    ActionContext, ActionError, ActionHandler, ActionHooks, ActionOutput, ActionRegistry, Progress,
};
use crate::config::CommandsConfig;
use crate::context::Context;

/// Signed Progress acks of one command are published at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain values replaced whole; a panic elsewhere cannot leave them half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The latest delivery of a command: acks go to its reply subject.
struct Delivery {
    reply: Mutex<Option<Subject>>,
}

impl Delivery {
    fn new(reply: Option<Subject>) -> Arc<Self> {
        Arc::new(Self {
            reply: Mutex::new(reply),
        })
    }
}

type AttemptKey = (String, u32);

/// Bound on the leader-epoch read before each command.
const EPOCH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    context: Context,
    log: CommandLog,
    trust: super::TrustMaterial,
    settings: CommandsConfig,
    registry: ActionRegistry,
    acks: AckPublisher,
    running: Mutex<HashMap<AttemptKey, Arc<Delivery>>>,
    node_lock: Arc<tokio::sync::Mutex<()>>,
    tasks: TaskTracker,
}

impl Dispatcher {
    pub fn new(context: Context, log: CommandLog, path: CommandPath) -> Self {
        let acks = AckPublisher::new(
            context.jetstream.clone(),
            context.names.clone(),
            context.identity.node.clone(),
            path.trust.ack_key.clone(),
            context.identity.boot_id.clone(),
            context.metrics.clone(),
            context.shutdown.clone(),
        );
        Self {
            shared: Arc::new(Shared {
                context,
                log,
                trust: path.trust,
                settings: path.settings,
                registry: path.registry,
                acks,
                running: Mutex::new(HashMap::new()),
                node_lock: Arc::new(tokio::sync::Mutex::new(())),
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub fn settings(&self) -> CommandsConfig {
        self.shared.settings.clone()
    }

    /// Waits for the command tasks (they stop on the shutdown token).
    pub async fn stop(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    pub async fn dispatch(&self, message: jetstream::Message) {
        let shared = &self.shared;
        shared.check_clock(&message);
        // `split` moves the reply subject into the acker; acks are made from a copy of it.
        let delivery = Delivery::new(message.reply.clone());
        let (message, _) = message.split();
        shared.context.metrics.commands_received.increment();
        shared.refresh_epoch().await;
        let node = &shared.context.identity.node;
        let verdict = shared.log.read(|journal| {
            check_command(
                &message.payload,
                &CheckContext {
                    network: shared.context.names.network().as_str(),
                    organisation: &shared.trust.organisation,
                    node: node.logical(),
                    replica: node.replica(),
                    confirmed_epoch: journal.highest_epoch(),
                    now_unix_ms: shared.context.clock.now_unix_ms(),
                    max_clock_skew_ms: shared.trust.max_clock_skew_ms,
                    keys: &shared.trust.network.keys,
                    policy: &shared.trust.policy,
                    journal,
                    revoked: journal,
                },
            )
        });
        match verdict {
            Err(rejection) => {
                let command = rejection
                    .command_id
                    .is_some()
                    .then(|| verified_command(&message.payload))
                    .flatten();
                Arc::clone(shared).reject(rejection, command, delivery);
            }
            Ok(checked) => Arc::clone(shared).accept(checked, delivery).await,
        }
    }
}

impl Shared {
    /// A first delivery cannot have been stored after we received it: a server timestamp
    /// ahead of our clock by more than the skew bound means one of the clocks is off, and the
    /// expiry checks with it.
    fn check_clock(&self, message: &jetstream::Message) {
        let Ok(info) = message.info() else {
            return;
        };
        if info.delivered != 1 {
            return;
        }
        let published_ms =
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let ahead_ms = published_ms.saturating_sub(self.context.clock.now_unix_ms());
        if ahead_ms > self.trust.max_clock_skew_ms {
            self.context.metrics.clock_skew_warnings.increment();
            tracing::warn!(
                ahead_ms,
                bound_ms = self.trust.max_clock_skew_ms,
                "the NATS server's clock is ahead of this agent's by more than the skew bound; check time sync on both hosts"
            );
        }
    }

    /// Raises the confirmed epoch to the leader bucket's before a command is checked. A new
    /// leader advances `epoch.<org>` before it publishes anything, so a command of a deposed
    /// leader that reaches us late — ahead of the new leader's fence on our subject, say after
    /// this agent was frozen — is refused as stale instead of run. A failed read keeps the
    /// journal's epoch (the fence still raises it) and is logged.
    async fn refresh_epoch(&self) {
        let organisation = &self.trust.organisation;
        let read = tokio::time::timeout(
            EPOCH_READ_TIMEOUT,
            super::fetch_epoch(&self.context, organisation),
        )
        .await;
        match read {
            Ok(Ok(epoch)) if epoch > self.confirmed_epoch() => {
                if self.journal(Record::Epoch { epoch }).await {
                    tracing::info!(epoch, "confirmed the leader epoch read before a command");
                    self.confirmed_epoch();
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(
                super::EpochReadError::Unreachable(error)
                | super::EpochReadError::Undecodable(error),
            )) => {
                tracing::warn!(%error, "cannot re-read the leader epoch; checking with the confirmed one");
            }
            Err(_) => {
                tracing::warn!(
                    "re-reading the leader epoch timed out; checking with the confirmed one"
                );
            }
        }
    }

    fn confirmed_epoch(&self) -> u64 {
        let epoch = self.log.read(JournalState::highest_epoch);
        self.context.metrics.confirmed_epoch.set(epoch);
        epoch
    }

    /// Counts, logs and answers a refused command; terminates its delivery.
    fn reject(
        self: Arc<Self>,
        rejection: Rejection,
        command: Option<proto_sidecar::Command>,
        delivery: Arc<Delivery>,
    ) {
        let label = rejection.reason.as_str();
        self.refuse(
            label,
            rejection.reason.to_proto(),
            rejection.to_string(),
            command,
            delivery,
        );
    }

    fn refuse(
        self: Arc<Self>,
        label: &'static str,
        reason: RejectReason,
        detail: String,
        command: Option<proto_sidecar::Command>,
        delivery: Arc<Delivery>,
    ) {
        self.context.metrics.count_rejection(label);
        tracing::warn!(reason = label, %detail, "command rejected; nothing executed");
        // An ack for a command naming another node would not verify as this node's.
        let node = &self.context.identity.node;
        let command = command.filter(|c| c.node == node.as_str() || c.node == node.logical());
        let shared = Arc::clone(&self);
        self.tasks.spawn(async move {
            if let Some(command) = command {
                let target = AckTarget::of(&command);
                let body = AckBody::Rejected { reason, detail };
                if let Err(error) = shared
                    .acks
                    .publish(&target, &body, shared.confirmed_epoch())
                    .await
                {
                    tracing::warn!(%error, "rejection ack not sent");
                }
            }
            shared.settle(&delivery, AckKind::Term).await;
        });
    }

    async fn accept(self: Arc<Self>, checked: CheckedCommand, delivery: Arc<Delivery>) {
        let command = checked.command;
        if !sidecar_bus::valid_token(&command.run) {
            // No ack subject can name this run, so nothing run for it could be reported.
            let detail = format!(
                "command {} rejected: run id {:?} is not 1-128 of [A-Za-z0-9_-]; nothing was executed and no ack can be sent",
                command.command_id, command.run
            );
            self.refuse("malformed", RejectReason::Malformed, detail, None, delivery);
            return;
        }
        let target = AckTarget::of(&command);
        match command.action.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(Kind::Fence(fence)) => {
                let epoch = fence.epoch;
                if epoch > self.confirmed_epoch() && !self.journal(Record::Epoch { epoch }).await {
                    return;
                }
                self.context
                    .metrics
                    .confirmed_epoch
                    .set(self.confirmed_epoch());
                tracing::info!(epoch, "fence: epoch confirmed");
                let body = AckBody::Done {
                    result: Vec::new(),
                    detail: format!("confirmed epoch {}", self.confirmed_epoch()),
                };
                self.spawn_finish(target, body, delivery, None);
            }
            Some(Kind::Revoke(revoke)) => {
                let up_to_attempt = sidecar_trust::revoked_up_to(revoke);
                let record = Record::Revoked {
                    command_id: revoke.command_id.clone(),
                    up_to_attempt,
                    at_unix_ms: self.context.clock.now_unix_ms(),
                };
                if !self.journal(record).await {
                    return;
                }
                let still_running = lock(&self.running)
                    .keys()
                    .any(|(id, attempt)| *id == revoke.command_id && *attempt <= up_to_attempt);
                if still_running {
                    tracing::warn!(command = %revoke.command_id, up_to_attempt, "revoked while an attempt still runs here; it finishes and reports");
                }
                let body = AckBody::Done {
                    result: Vec::new(),
                    detail: format!(
                        "revoked {} up to attempt {up_to_attempt}",
                        revoke.command_id
                    ),
                };
                self.spawn_finish(target, body, delivery, None);
            }
            _ => self.accept_action(command, checked.action, checked.body_hash, delivery),
        }
    }

    fn accept_action(
        self: Arc<Self>,
        command: proto_sidecar::Command,
        action: sidecar_trust::ActionName,
        body_hash: BodyHash,
        delivery: Arc<Delivery>,
    ) {
        let Some(handler) = self.registry.get(action) else {
            let detail = format!(
                "command {} rejected: action {action} is not supported by this agent (no handler); nothing was executed",
                command.command_id
            );
            self.refuse(
                "not_supported",
                RejectReason::Unspecified,
                detail,
                Some(command),
                delivery,
            );
            return;
        };
        let key: AttemptKey = (command.command_id.clone(), command.attempt);
        let running = lock(&self.running).get(&key).cloned();
        if let Some(current) = running {
            *lock(&current.reply) = lock(&delivery.reply).clone();
            self.context
                .metrics
                .commands_redelivered_running
                .increment();
            tracing::info!(command = %key.0, attempt = key.1, "redelivered while running; not run again");
            let shared = Arc::clone(&self);
            self.tasks.spawn(async move {
                let body = AckBody::Progress(Progress {
                    message: "in progress".to_owned(),
                    ..Progress::default()
                });
                let target = AckTarget::of(&command);
                if let Err(error) = shared
                    .acks
                    .publish(&target, &body, shared.confirmed_epoch())
                    .await
                {
                    tracing::warn!(%error, "progress ack not sent");
                }
                shared.working(&current).await;
            });
            return;
        }
        let recorded = self
            .log
            .read(|journal| journal.entry(&key.0, key.1).map(|e| e.state.clone()));
        let recovering = match recorded {
            Some(EntryState::Started) => true,
            Some(final_state) => {
                self.context.metrics.commands_resent.increment();
                let body = match final_state {
                    EntryState::Done { result, detail } => AckBody::Done { result, detail },
                    EntryState::Failed { detail } => AckBody::Failed { detail },
                    EntryState::OutcomeUnknown { detail } => AckBody::OutcomeUnknown { detail },
                    EntryState::Started => return,
                };
                tracing::info!(command = %key.0, attempt = key.1, "redelivered after it finished; resending the recorded outcome");
                self.spawn_finish(AckTarget::of(&command), body, delivery, None);
                return;
            }
            None => {
                let lost_before = self.log.read(JournalState::lost_before_unix_ms);
                if let Some(lost_before) = lost_before
                    && command.issued_at_unix_ms < lost_before
                {
                    let detail = format!(
                        "command {} rejected: issued at {} before the journal of node {} was lost (at {lost_before}); this agent cannot tell whether it ran. Nothing was executed; check the node and issue a new command",
                        command.command_id, command.issued_at_unix_ms, self.context.identity.node
                    );
                    self.refuse(
                        "lost_journal",
                        RejectReason::LostJournal,
                        detail,
                        Some(command),
                        delivery,
                    );
                    return;
                }
                false
            }
        };
        lock(&self.running).insert(key, Arc::clone(&delivery));
        let span = self.action_span(&command, action);
        let shared = Arc::clone(&self);
        self.tasks.spawn(
            async move {
                shared
                    .execute(command, body_hash, handler, delivery, recovering)
                    .await
            }
            .instrument(span),
        );
    }

    /// The span of one action run: a child of the coordinator's step span named by the
    /// `traceparent` inside the signed body (a NATS header could be forged, the body cannot).
    fn action_span(
        &self,
        command: &proto_sidecar::Command,
        action: sidecar_trust::ActionName,
    ) -> tracing::Span {
        let span = tracing::info_span!(
            "action",
            otel.name = %format_args!("action {action}"),
            node = %self.context.identity.node,
            organisation = %command.organisation,
            kind = %action,
            runbook = tracing::field::Empty,
            run = %command.run,
            step = %command.step,
            command_id = %command.command_id,
            attempt = command.attempt,
            outcome = tracing::field::Empty,
        );
        // A fence belongs to no runbook; an older coordinator sends none.
        if !command.runbook.is_empty() {
            span.record("runbook", command.runbook.as_str());
        }
        sidecar_telemetry::propagation::set_parent(&span, &command.traceparent);
        span
    }

    /// Appends a record; false (logged) when the journal refused it.
    async fn journal(&self, record: Record) -> bool {
        match self.log.append(record).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, "journal write failed; the command stays unacked and is redelivered");
                false
            }
        }
    }

    async fn execute(
        self: Arc<Self>,
        command: proto_sidecar::Command,
        body_hash: BodyHash,
        handler: Arc<dyn ActionHandler>,
        delivery: Arc<Delivery>,
        recovering: bool,
    ) {
        let key: AttemptKey = (command.command_id.clone(), command.attempt);
        let _turn = if handler.read_only() {
            None
        } else {
            tokio::select! {
                () = self.context.shutdown.cancelled() => {
                    lock(&self.running).remove(&key);
                    return;
                }
                turn = Arc::clone(&self.node_lock).lock_owned() => Some(turn),
            }
        };
        if !handler.read_only() {
            match self.verify_claim(&command).await {
                ClaimVerdict::Holds => {}
                ClaimVerdict::Refused(detail) => {
                    lock(&self.running).remove(&key);
                    let reason = sidecar_trust::RejectionReason::InvalidClaim;
                    Arc::clone(&self).refuse(
                        reason.as_str(),
                        reason.to_proto(),
                        detail,
                        Some(command),
                        delivery,
                    );
                    return;
                }
                ClaimVerdict::Unknown(error) => {
                    lock(&self.running).remove(&key);
                    tracing::warn!(command = %key.0, %error, "cannot read the node's claim; the command is retried");
                    self.retry_later(&delivery).await;
                    return;
                }
            }
        }
        let started = Instant::now();
        let outcome = self
            .attempt(&command, body_hash, &handler, &delivery, recovering)
            .await;
        let Some(outcome) = outcome else {
            lock(&self.running).remove(&key);
            return;
        };
        let label = match &outcome {
            Ok(_) => "done",
            Err(ActionError::OutcomeUnknown(_)) => "outcome_unknown",
            Err(_) => "failed",
        };
        tracing::Span::current().record("outcome", label);
        // Inside the action span: the line carries the trace and span ids in JSON logs.
        tracing::info!(
            outcome = label,
            took_ms = started.elapsed().as_millis() as u64,
            "action finished"
        );
        self.context.metrics.instruments.command_finished(
            handler.kind().as_str(),
            label,
            started.elapsed(),
        );
        if handler.kind() == sidecar_trust::ActionName::Backup {
            let size = outcome
                .as_ref()
                .ok()
                .and_then(|output| manifest_size(&output.result));
            self.context
                .metrics
                .instruments
                .backup_finished(label, started.elapsed(), size);
        }
        let at_unix_ms = self.context.clock.now_unix_ms();
        let (record, body) = match outcome {
            Ok(output) => {
                crash_points::here(crash_points::AFTER_ACTION);
                self.context.metrics.commands_done.increment();
                (
                    Record::Done {
                        command_id: key.0.clone(),
                        attempt: key.1,
                        result: output.result.clone(),
                        detail: output.detail.clone(),
                        at_unix_ms,
                    },
                    AckBody::Done {
                        result: output.result,
                        detail: output.detail,
                    },
                )
            }
            Err(ActionError::OutcomeUnknown(detail)) => {
                self.context.metrics.commands_outcome_unknown.increment();
                (
                    Record::OutcomeUnknown {
                        command_id: key.0.clone(),
                        attempt: key.1,
                        detail: detail.clone(),
                        at_unix_ms,
                    },
                    AckBody::OutcomeUnknown { detail },
                )
            }
            Err(error) => {
                self.context.metrics.commands_failed.increment();
                let detail = error.to_string();
                (
                    Record::Failed {
                        command_id: key.0.clone(),
                        attempt: key.1,
                        detail: detail.clone(),
                        at_unix_ms,
                    },
                    AckBody::Failed { detail },
                )
            }
        };
        if !self.journal(record).await {
            lock(&self.running).remove(&key);
            return;
        }
        crash_points::here(crash_points::AFTER_DONE);
        self.finish(AckTarget::of(&command), body, delivery, Some(key))
            .await;
    }

    /// A command carrying a claim runs only while the claims bucket shows that claim held by
    /// the command's run for this organisation (the run may have finished, or another taken
    /// the node, since the command was signed).
    async fn verify_claim(&self, command: &proto_sidecar::Command) -> ClaimVerdict {
        let Some(claim) = &command.claim else {
            return ClaimVerdict::Holds;
        };
        let node = self.context.identity.node.logical();
        let bucket = self.context.names.bucket(sidecar_bus::Bucket::Claims);
        let key = self.context.names.claim_key(node);
        let stored = match self.context.jetstream.get_key_value(&bucket).await {
            Ok(store) => store.get(&key).await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let refused = |detail: String| {
            ClaimVerdict::Refused(format!(
                "command {} rejected (invalid_claim): {detail}; nothing was executed",
                command.command_id
            ))
        };
        match stored {
            Err(error) => ClaimVerdict::Unknown(format!("claims bucket {bucket}: {error}")),
            Ok(None) => refused(format!(
                "node {node} is not claimed (run {} holds no claim in {bucket}); claim the node before sending mutating commands",
                claim.run
            )),
            Ok(Some(value)) => match serde_json::from_slice::<ClaimValue>(&value) {
                Err(error) => refused(format!("the claim of node {node} does not decode: {error}")),
                Ok(held)
                    if held.run != claim.run || held.organisation != self.trust.organisation =>
                {
                    refused(format!(
                        "node {node} is claimed by run {:?} of {:?}, not by run {:?}",
                        held.run, held.organisation, claim.run
                    ))
                }
                Ok(_) => ClaimVerdict::Holds,
            },
        }
    }

    /// Asks the server to deliver the command again a little later.
    async fn retry_later(&self, delivery: &Delivery) {
        let reply = lock(&delivery.reply).clone();
        let acker = Acker::new(self.context.jetstream.clone(), reply);
        if let Err(error) = acker
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await
        {
            tracing::debug!(%error, "nak not sent; the command comes back after ack_wait");
        }
    }

    /// Decides and runs one attempt; `None` = leave it Started and unacked (stopping, or the
    /// journal refused the Started record).
    async fn attempt(
        self: &Arc<Self>,
        command: &proto_sidecar::Command,
        body_hash: BodyHash,
        handler: &Arc<dyn ActionHandler>,
        delivery: &Arc<Delivery>,
        recovering: bool,
    ) -> Option<Result<ActionOutput, ActionError>> {
        if recovering {
            if handler.idempotency() == Idempotency::Unguardable {
                tracing::warn!(command = %command.command_id, attempt = command.attempt, "interrupted unguardable action: outcome unknown, an operator decides");
                return Some(Err(ActionError::OutcomeUnknown(format!(
                    "node {}: {} of command {} attempt {} was started before the agent restarted and cannot be checked or safely repeated; inspect the node, then mark it done, retry or abort",
                    self.context.identity.node,
                    handler.kind(),
                    command.command_id,
                    command.attempt
                ))));
            }
            match handler.already_done(command).await {
                Ok(Some(output)) => {
                    tracing::info!(command = %command.command_id, attempt = command.attempt, "interrupted action had taken effect; not run again");
                    return Some(Ok(output));
                }
                Ok(None) => {}
                Err(error) => {
                    return Some(Err(ActionError::Failed(format!(
                        "node {}: cannot tell whether interrupted command {} took effect: {error}",
                        self.context.identity.node, command.command_id
                    ))));
                }
            }
        }
        crash_points::here(crash_points::BEFORE_STARTED);
        let started = Record::Started {
            command_id: command.command_id.clone(),
            attempt: command.attempt,
            body_hash,
            boot_id: self.context.identity.boot_id.clone(),
            action: handler.kind().to_string(),
            expires_at_unix_ms: command.expires_at_unix_ms,
            at_unix_ms: self.context.clock.now_unix_ms(),
        };
        if !self.journal(started).await {
            return None;
        }
        crash_points::here(crash_points::AFTER_STARTED);
        let hooks = Arc::new(CommandHooks {
            shared: Arc::clone(self),
            target: AckTarget::of(command),
            delivery: Arc::clone(delivery),
            last_progress: Mutex::new(None),
        });
        let context = ActionContext::new(
            command.command_id.clone(),
            command.attempt,
            hooks,
            self.context.shutdown.child_token(),
        );
        let result = handler.run(command.clone(), context).await;
        match result {
            Err(ActionError::Interrupted) => None,
            Err(_) if self.context.shutdown.is_cancelled() => None,
            other => Some(other),
        }
    }

    fn spawn_finish(
        self: Arc<Self>,
        target: AckTarget,
        body: AckBody,
        delivery: Arc<Delivery>,
        key: Option<AttemptKey>,
    ) {
        let shared = Arc::clone(&self);
        self.tasks
            .spawn(async move { shared.finish(target, body, delivery, key).await });
    }

    /// Publishes the final ack, then double-acks the latest delivery. A failed publish leaves
    /// the command unacked: its redelivery resends the journalled outcome.
    async fn finish(
        &self,
        target: AckTarget,
        body: AckBody,
        delivery: Arc<Delivery>,
        key: Option<AttemptKey>,
    ) {
        let published = self
            .acks
            .publish(&target, &body, self.confirmed_epoch())
            .await;
        if let Some(key) = &key {
            lock(&self.running).remove(key);
        }
        match published {
            Ok(()) => self.settle(&delivery, AckKind::Ack).await,
            Err(error) => {
                tracing::warn!(%error, "ack not stored; the command is redelivered and the ack resent")
            }
        }
    }

    /// Double-acks (waits for the server's confirmation) the latest delivery.
    async fn settle(&self, delivery: &Delivery, kind: AckKind) {
        let reply = lock(&delivery.reply).clone();
        let acker = Acker::new(self.context.jetstream.clone(), reply);
        if let Err(error) = acker.double_ack_with(kind).await {
            tracing::warn!(%error, "command ack not confirmed by the server; it may be redelivered (answered from the journal)");
        }
    }

    /// Tells the server the command is still being worked on (resets its `ack_wait`).
    async fn working(&self, delivery: &Delivery) {
        let reply = lock(&delivery.reply).clone();
        let acker = Acker::new(self.context.jetstream.clone(), reply);
        if let Err(error) = acker.ack_with(AckKind::Progress).await {
            tracing::debug!(%error, "in-progress signal not sent");
        }
    }
}

enum ClaimVerdict {
    Holds,
    Refused(String),
    Unknown(String),
}

/// The claim record the coordinator keeps per node (other fields are ignored).
#[derive(serde::Deserialize)]
struct ClaimValue {
    run: String,
    #[serde(default)]
    organisation: String,
}

/// The command path's side of [`ActionContext`].
struct CommandHooks {
    shared: Arc<Shared>,
    target: AckTarget,
    delivery: Arc<Delivery>,
    last_progress: Mutex<Option<Instant>>,
}

impl ActionHooks for CommandHooks {
    fn progress(&self, progress: Progress) {
        {
            let mut last = lock(&self.last_progress);
            if last.is_some_and(|at| at.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let shared = Arc::clone(&self.shared);
        let target = self.target.clone();
        let delivery = Arc::clone(&self.delivery);
        self.shared.tasks.spawn(async move {
            let body = AckBody::Progress(progress);
            if let Err(error) = shared
                .acks
                .publish(&target, &body, shared.confirmed_epoch())
                .await
            {
                tracing::debug!(%error, "progress ack not sent");
            }
            shared.working(&delivery).await;
        });
    }

    fn record_child(&self, pgid: i32) -> BoxFuture<'static, Result<(), ActionError>> {
        let shared = Arc::clone(&self.shared);
        let target = self.target.clone();
        Box::pin(async move {
            let record = Record::Child {
                command_id: target.command_id.clone(),
                attempt: target.attempt,
                pgid,
                leader_start: process_start(pgid),
                kernel_boot: kernel_boot_id(),
            };
            shared.log.append(record).await.map_err(|error| {
                ActionError::Failed(format!(
                    "node {}: child process group {pgid} of command {} not journalled ({error}); stop the child",
                    shared.context.identity.node, target.command_id
                ))
            })
        })
    }
}

/// `size_bytes` of a backup manifest (the backup action's result).
fn manifest_size(result: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(result)
        .ok()?
        .get("size_bytes")?
        .as_u64()
}
