//! The durable driver around the pure engine.
//!
//! Every change to a run goes the same way: fold the inputs through
//! [`sidecar_core::on_event`], write the new record by CAS on its revision, and only then
//! perform the effects (publish commands and revokes, emit progress, release claims). A crash
//! between the write and the effects is repaired by [`sidecar_core::resume`]: every effect of
//! a persisted state can be performed again, byte for byte, and agents answer a redelivery
//! from their journal. The lease is checked right before every write and every publish.
//!
//! All I/O goes through the traits in [`ports`], so the same driver runs on NATS and inside
//! the deterministic simulation.

pub mod ports;
pub mod record;
mod spans;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use sidecar_core::{
    AckStatus, Effect, Event, Millis, Outgoing, RunState, RunStatus, Runbook, on_event, on_events,
    resume, start_run,
};
use sidecar_trust::{SigningIdentity, sign_command};

use ports::{
    ClaimOutcome, Clock, Lease, NoReplicas, OutboundCommand, Publisher, Router, RunStore,
    StoreError, StoreErrorKind,
};
use record::{ClaimRecord, ProgressMark, RevokeStamp, RunRecord, result_key, run_key};
use spans::RunSpans;
use wire::{AckMeaning, CommandContext};

use crate::metrics::CoordinatorMetrics;

/// Failpoint names (the `fail` crate; configure with the `FAILPOINTS` environment variable or
/// `fail::cfg`). The `return` action makes the driver stop right there as if the process died.
pub mod failpoints {
    /// After a run record was written, before any of its effects.
    pub const AFTER_CAS: &str = "driver-after-cas";
    /// After the first command of a transition was published, before anything else.
    pub const AFTER_PUBLISH: &str = "driver-after-publish";
    /// A record write that applied but whose answer was lost.
    pub const CAS_TIMEOUT_APPLIED: &str = "driver-cas-timeout-applied";
    /// The take-over's listing of runs fails as if the bucket had no leader.
    pub const TAKE_OVER_LISTING_UNAVAILABLE: &str = "driver-take-over-listing-unavailable";
}

fn failpoint(name: &str) -> Result<(), DriverError> {
    match fail::eval(name, |_| ()) {
        Some(()) => Err(DriverError::new(
            DriverErrorKind::Crashed,
            format!("failpoint {name}"),
        )),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverErrorKind {
    #[error("not the leader")]
    NotLeader,
    /// A newer tenure owns the run or an agent confirmed a higher epoch: stop at once.
    #[error("deposed")]
    Deposed,
    #[error("node claimed by another run")]
    Claimed,
    #[error("unknown run")]
    UnknownRun,
    #[error("invalid request")]
    Invalid,
    /// The record moved under a CAS (resolved inside the driver by folding again).
    #[error("write conflict")]
    Conflict,
    #[error("run store")]
    Store,
    #[error("publish")]
    Publish,
    /// A failpoint stopped the driver (tests and kill drills).
    #[error("stopped by a failpoint")]
    Crashed,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{detail}: {kind}")]
pub struct DriverError {
    pub kind: DriverErrorKind,
    pub detail: String,
}

impl DriverError {
    pub fn new(kind: DriverErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl From<StoreError> for DriverError {
    fn from(error: StoreError) -> Self {
        Self::new(DriverErrorKind::Store, error.to_string())
    }
}

/// Settings of one organisation's driver.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub network: String,
    pub organisation: String,
    /// The bound on coordinator/agent clock disagreement.
    pub skew_ms: Millis,
    /// How long a revoke stays valid (it must outlive every attempt it closes).
    pub revoke_ttl_ms: Millis,
    /// How long a fence stays valid in the command stream.
    pub fence_ttl_ms: Millis,
    /// CAS conflicts tolerated in one transition before giving up.
    pub max_conflicts: u32,
}

impl DriverConfig {
    pub fn new(network: &str, organisation: &str) -> Self {
        Self {
            network: network.to_owned(),
            organisation: organisation.to_owned(),
            skew_ms: 2_000,
            revoke_ttl_ms: 24 * 3_600_000,
            fence_ttl_ms: 24 * 3_600_000,
            max_conflicts: 16,
        }
    }
}

/// A run to start, built by the catalogue.
#[derive(Clone, Debug)]
pub struct StartRequest {
    pub run_id: String,
    pub request_id: String,
    pub runbook: Runbook,
    pub parameters: BTreeMap<String, String>,
    pub nodes: Vec<String>,
    /// Mutating runs claim their nodes.
    pub claims_nodes: bool,
}

/// One verified answer of an agent.
#[derive(Clone, Debug)]
pub struct AgentAnswer {
    pub ack: proto_sidecar::Ack,
}

/// What changes a run: engine events, and acks (which also carry progress and detail).
#[derive(Clone, Debug)]
pub enum Input {
    Event(Event),
    Ack(Box<AgentAnswer>),
    /// An operator's signed approval (encoded envelope) of the destructive step `step`,
    /// attached to that step's commands; recorded in the same write as the approval event.
    SignedApproval {
        step: String,
        envelope: Vec<u8>,
    },
}

#[derive(Clone)]
struct Cached {
    record: RunRecord,
    revision: u64,
}

/// The driver of one organisation's runs for the current tenure.
pub struct Driver {
    config: DriverConfig,
    signer: SigningIdentity,
    store: Arc<dyn RunStore>,
    publisher: Arc<dyn Publisher>,
    clock: Arc<dyn Clock>,
    lease: Arc<dyn Lease>,
    router: Arc<dyn Router>,
    /// The epoch this driver took over with; `None` until [`Driver::take_over`].
    tenure: Option<u64>,
    active: BTreeMap<String, Cached>,
    /// Runs whose effects could not all be performed; resumed on the next tick.
    unfinished_effects: BTreeSet<String>,
    metrics: CoordinatorMetrics,
    /// Open run and step spans of this tenure, by run id.
    spans: BTreeMap<String, RunSpans>,
    /// Runs that finished since [`Driver::take_finished`] was last called.
    finished: Vec<FinishedRun>,
}

/// A run this tenure saw finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedRun {
    pub run: String,
    pub runbook: String,
    pub status: RunStatus,
}

impl Driver {
    pub fn new(
        config: DriverConfig,
        signer: SigningIdentity,
        store: Arc<dyn RunStore>,
        publisher: Arc<dyn Publisher>,
        clock: Arc<dyn Clock>,
        lease: Arc<dyn Lease>,
    ) -> Self {
        Self {
            config,
            signer,
            store,
            publisher,
            clock,
            lease,
            router: Arc::new(NoReplicas),
            tenure: None,
            active: BTreeMap::new(),
            unfinished_effects: BTreeSet::new(),
            metrics: CoordinatorMetrics::default(),
            spans: BTreeMap::new(),
            finished: Vec::new(),
        }
    }

    /// Records runs, steps and backups on `metrics` (instruments that record nothing otherwise).
    pub fn with_metrics(mut self, metrics: CoordinatorMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The runs that finished since the last call (what follows a finished run, such as
    /// backup retention, is the caller's).
    pub fn take_finished(&mut self) -> Vec<FinishedRun> {
        std::mem::take(&mut self.finished)
    }

    /// Routes commands to logical HA nodes through `router` (default: no node has replicas).
    pub fn with_router(mut self, router: Arc<dyn Router>) -> Self {
        self.router = router;
        self
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    pub fn tenure(&self) -> Option<u64> {
        self.tenure
    }

    /// Runs this tenure drives.
    pub fn active_runs(&self) -> impl Iterator<Item = &RunRecord> {
        self.active.values().map(|cached| &cached.record)
    }

    /// The epoch we may act under right now: our tenure's, and only while the lease holds.
    fn epoch(&self) -> Result<u64, DriverError> {
        match (self.tenure, self.lease.epoch_now()) {
            (Some(ours), Some(now)) if ours == now => Ok(ours),
            (Some(ours), Some(now)) if now > ours => Err(DriverError::new(
                DriverErrorKind::Deposed,
                format!("tenure {ours} ended; the lease is at epoch {now}"),
            )),
            _ => Err(DriverError::new(
                DriverErrorKind::NotLeader,
                "the lease is not held",
            )),
        }
    }

    /// Ends the tenure: nothing more is written or published by this driver.
    pub fn stop(&mut self) {
        self.tenure = None;
        self.active.clear();
        self.unfinished_effects.clear();
        self.spans.clear();
    }

    /// Starts a tenure at `epoch` (after the fence): claims every unfinished run of the
    /// organisation by CAS on `owner_epoch`, re-signs its outstanding commands under the new
    /// epoch, and performs its resumed effects. Fails with `Deposed` if a newer tenure owns a run.
    pub async fn take_over(&mut self, epoch: u64) -> Result<Vec<String>, DriverError> {
        self.tenure = Some(epoch);
        self.active.clear();
        self.unfinished_effects.clear();
        self.spans.clear();
        self.epoch()?;
        self.metrics.took_over();
        let mut claimed = Vec::new();
        if fail::eval(failpoints::TAKE_OVER_LISTING_UNAVAILABLE, |_| ()).is_some() {
            return Err(DriverError::new(
                DriverErrorKind::Store,
                "listing runs: failpoint",
            ));
        }
        for key in self.store.run_keys().await? {
            let Some((record, revision)) = self.load(&key).await? else {
                continue;
            };
            if record.organisation != self.config.organisation {
                continue;
            }
            if record.state.status.is_finished() {
                if let Some(at) = record.finished_at
                    && record.state.runbook.name == "backup"
                    && record.state.status == RunStatus::Succeeded
                {
                    self.metrics.backup_succeeded(at);
                }
                // Claims are released after the finishing write; do it again in case the
                // previous owner stopped in between (a release is idempotent).
                self.release_claims(&record).await;
                continue;
            }
            let run = record.run_id().to_owned();
            self.adopt(record, revision, epoch).await?;
            claimed.push(run);
        }
        Ok(claimed)
    }

    async fn adopt(
        &mut self,
        mut record: RunRecord,
        revision: u64,
        epoch: u64,
    ) -> Result<(), DriverError> {
        let run = record.run_id().to_owned();
        if record.state.owner_epoch > epoch {
            return Err(DriverError::new(
                DriverErrorKind::Deposed,
                format!(
                    "run {run} is owned by epoch {}, ours is {epoch}",
                    record.state.owner_epoch
                ),
            ));
        }
        let mut revision = revision;
        if record.state.owner_epoch < epoch {
            record.state.owner_epoch = epoch;
            for outgoing in record.state.outbox.values_mut() {
                if outgoing.epoch != epoch {
                    outgoing.epoch = epoch;
                    record.resends.insert(outgoing.command_id.clone(), epoch);
                }
            }
            for stamp in record.revokes.values_mut() {
                if stamp.epoch != epoch {
                    stamp.epoch = epoch;
                    stamp.resend = Some(epoch);
                }
            }
            let outstanding: Vec<Outgoing> = record.state.outbox.values().cloned().collect();
            self.route(&mut record, outstanding.iter());
            record.updated_at = self.clock.now_ms();
            revision = self.write(&record, Some(revision)).await?;
        }
        let effects = resume(&record.state, self.clock.now_ms());
        self.active.insert(
            run.clone(),
            Cached {
                record: record.clone(),
                revision,
            },
        );
        self.perform_with(&record, effects).await
    }

    /// Starts a run, or returns the existing one with the same id (`true`).
    pub async fn start(&mut self, request: StartRequest) -> Result<(RunRecord, bool), DriverError> {
        let epoch = self.epoch()?;
        if let Some((record, revision)) = self.load(&run_key(&request.run_id)).await? {
            // A run of ours this tenure does not drive (a create whose answer was lost) is
            // adopted now rather than left to stall until the next take-over.
            if !record.state.status.is_finished()
                && record.organisation == self.config.organisation
                && !self.active.contains_key(record.run_id())
            {
                self.adopt(record.clone(), revision, epoch).await?;
            }
            return Ok((record, true));
        }
        let claims = if request.claims_nodes {
            self.claim_nodes(&request.run_id, &request.nodes, epoch)
                .await?
        } else {
            BTreeMap::new()
        };
        let now = self.clock.now_ms();
        let initial = start_run(&request.run_id, request.runbook, epoch, self.config.skew_ms);
        let (state, effects) = on_event(&initial, Event::Started, now);
        let mut record = RunRecord {
            state,
            organisation: self.config.organisation.clone(),
            request_id: request.request_id,
            parameters: request.parameters,
            nodes: request.nodes,
            claims,
            claim_epoch: epoch,
            revokes: BTreeMap::new(),
            resends: BTreeMap::new(),
            progress: BTreeMap::new(),
            answers: BTreeMap::new(),
            approvals: BTreeMap::new(),
            trace: record::TraceRecord::default(),
            routes: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let run_spans = RunSpans::start(&record);
        record.trace.run = run_spans.traceparent();
        self.spans.insert(record.run_id().to_owned(), run_spans);
        self.stamp(&mut record, &effects, now, epoch);
        self.route(&mut record, sends(&effects));
        let revision = match self.write(&record, None).await {
            Ok(revision) => revision,
            Err(error) => {
                // Created concurrently under the same id (a retried StartRun)?
                if error.kind == DriverErrorKind::Conflict
                    && let Ok(Some((existing, _))) = self.load(&run_key(record.run_id())).await
                {
                    return Ok((existing, true));
                }
                self.release_claims(&record).await;
                self.spans.remove(record.run_id());
                return Err(error);
            }
        };
        let run = record.run_id().to_owned();
        self.active.insert(
            run.clone(),
            Cached {
                record: record.clone(),
                revision,
            },
        );
        failpoint(failpoints::AFTER_CAS)?;
        self.perform_with(&record, effects).await?;
        Ok((record, false))
    }

    async fn claim_nodes(
        &self,
        run: &str,
        nodes: &[String],
        epoch: u64,
    ) -> Result<BTreeMap<String, u64>, DriverError> {
        let claim = ClaimRecord {
            run: run.to_owned(),
            epoch,
            organisation: self.config.organisation.clone(),
        };
        let mut taken = BTreeMap::new();
        for node in nodes {
            let outcome = self.store.claim(node, &claim).await;
            let revision = match outcome {
                Ok(ClaimOutcome::Taken { revision }) => Ok(revision),
                Ok(ClaimOutcome::Held { holder, revision }) if holder.run == run => Ok(revision),
                Ok(ClaimOutcome::Held { holder, revision }) => {
                    match self.load(&run_key(&holder.run)).await {
                        Ok(Some((other, _))) if !other.state.status.is_finished() => {
                            Err(DriverError::new(
                                DriverErrorKind::Claimed,
                                format!(
                                    "node {node} is claimed by run {} ({}); wait for it to finish or cancel it",
                                    holder.run, other.state.runbook.name
                                ),
                            ))
                        }
                        Ok(_) => self
                            .store
                            .reclaim(node, &claim, revision)
                            .await
                            .map_err(DriverError::from),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error.into()),
            };
            match revision {
                Ok(revision) => {
                    taken.insert(node.clone(), revision);
                }
                Err(error) => {
                    for (node, revision) in &taken {
                        let _ = self.store.release(node, *revision).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(taken)
    }

    async fn release_claims(&self, record: &RunRecord) {
        for (node, revision) in &record.claims {
            if let Err(error) = self.store.release(node, *revision).await {
                tracing::warn!(run = record.run_id(), node, %error, "releasing a claim failed; it is retried when the run is next resumed");
            }
        }
    }

    /// Applies inputs to a run this tenure owns: fold, CAS, then effects.
    pub async fn apply(&mut self, run: &str, inputs: Vec<Input>) -> Result<RunRecord, DriverError> {
        let epoch = self.epoch()?;
        let mut cached = match self.active.get(run) {
            Some(cached) => cached.clone(),
            None => self.fresh(run, epoch).await?,
        };
        let mut conflicts = 0;
        loop {
            if cached.record.state.status.is_finished() {
                // Late answers (duplicates, revoke acks) change nothing in a finished run.
                return Ok(cached.record);
            }
            let now = self.clock.now_ms();
            let (mut record, effects) = self.fold(&cached.record, &inputs, now).await?;
            self.stamp(&mut record, &effects, now, epoch);
            self.route(&mut record, sends(&effects));
            match self.write(&record, Some(cached.revision)).await {
                Ok(revision) => {
                    if record.state.status.is_finished() {
                        self.active.remove(run);
                    } else {
                        self.active.insert(
                            run.to_owned(),
                            Cached {
                                record: record.clone(),
                                revision,
                            },
                        );
                    }
                    failpoint(failpoints::AFTER_CAS)?;
                    self.perform_with(&record, effects).await?;
                    return Ok(record);
                }
                Err(error) if error.kind == DriverErrorKind::Conflict => {
                    conflicts += 1;
                    if conflicts > self.config.max_conflicts {
                        return Err(DriverError::new(
                            DriverErrorKind::Store,
                            format!("run {run}: {conflicts} write conflicts in a row"),
                        ));
                    }
                    self.active.remove(run);
                    cached = self.fresh(run, epoch).await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Reads a run from the store and checks this tenure owns it (adopting an older owner's).
    async fn fresh(&mut self, run: &str, epoch: u64) -> Result<Cached, DriverError> {
        let Some((record, revision)) = self.load(&run_key(run)).await? else {
            return Err(DriverError::new(
                DriverErrorKind::UnknownRun,
                format!("no run {run}"),
            ));
        };
        if record.organisation != self.config.organisation {
            return Err(DriverError::new(
                DriverErrorKind::UnknownRun,
                format!("run {run} belongs to organisation {}", record.organisation),
            ));
        }
        match record.state.owner_epoch.cmp(&epoch) {
            std::cmp::Ordering::Greater => Err(DriverError::new(
                DriverErrorKind::Deposed,
                format!(
                    "run {run} is owned by epoch {}, ours is {epoch}",
                    record.state.owner_epoch
                ),
            )),
            std::cmp::Ordering::Equal => Ok(Cached { record, revision }),
            std::cmp::Ordering::Less if record.state.status.is_finished() => {
                Ok(Cached { record, revision })
            }
            std::cmp::Ordering::Less => {
                self.adopt(record, revision, epoch).await?;
                self.active.get(run).cloned().ok_or_else(|| {
                    DriverError::new(DriverErrorKind::UnknownRun, format!("run {run} finished"))
                })
            }
        }
    }

    /// Folds inputs into a new record; acks with results store the result first.
    async fn fold(
        &self,
        record: &RunRecord,
        inputs: &[Input],
        now: Millis,
    ) -> Result<(RunRecord, Vec<Effect>), DriverError> {
        let mut next = record.clone();
        let mut events = Vec::with_capacity(inputs.len());
        for input in inputs {
            match input {
                Input::Event(event) => events.push(event.clone()),
                Input::SignedApproval { step, envelope } => {
                    next.approvals.insert(step.clone(), envelope.clone());
                }
                Input::Ack(answer) => {
                    // Reads only the owner epoch and the routes, which no event of the batch
                    // changes, so the events can be folded together afterwards.
                    if let Some(event) = self.ack_event(&mut next, answer).await? {
                        events.push(event);
                    }
                }
            }
        }
        let (state, effects) = on_events(&next.state, events, now);
        next.state = state;
        next.updated_at = now;
        if next.state.status.is_finished() && next.finished_at.is_none() {
            next.finished_at = Some(now);
        }
        Ok((next, effects))
    }

    async fn ack_event(
        &self,
        record: &mut RunRecord,
        answer: &AgentAnswer,
    ) -> Result<Option<Event>, DriverError> {
        let ack = &answer.ack;
        if let Some(routed) = record.route(&ack.command_id, ack.attempt)
            && routed != ack.node
        {
            tracing::warn!(
                command = %ack.command_id,
                attempt = ack.attempt,
                from = %ack.node,
                routed,
                "ack from a replica the attempt was not routed to; dropped"
            );
            return Ok(None);
        }
        let status = match wire::ack_meaning(ack, record.state.owner_epoch) {
            AckMeaning::Ignore => return Ok(None),
            AckMeaning::Deposed { seen_epoch } => {
                self.lease.deposed(seen_epoch);
                return Err(DriverError::new(
                    DriverErrorKind::Deposed,
                    format!(
                        "agent {} confirmed epoch {seen_epoch} (command {})",
                        ack.node, ack.command_id
                    ),
                ));
            }
            AckMeaning::Event(status) => status,
        };
        match &status {
            AckStatus::Progress { done, total } => {
                record.progress.insert(
                    ack.command_id.clone(),
                    ProgressMark {
                        done: *done,
                        total: *total,
                    },
                );
            }
            AckStatus::Done { .. } => {
                if !ack.result.is_empty()
                    && let Some((run, step, node)) = wire::split_command_id(&ack.command_id)
                {
                    // Before the CAS that records the Done, so a recorded Done always has
                    // its result.
                    self.store
                        .put_result(
                            &result_key(run, step, node),
                            Bytes::from(ack.result.clone()),
                        )
                        .await?;
                }
                if !ack.detail.is_empty() {
                    record
                        .answers
                        .insert(ack.command_id.clone(), ack.detail.clone());
                }
            }
            AckStatus::Failed { .. } | AckStatus::Rejected { .. } | AckStatus::OutcomeUnknown => {
                record
                    .answers
                    .insert(ack.command_id.clone(), ack.detail.clone());
            }
            AckStatus::Accepted => {}
        }
        Ok(Some(Event::Ack {
            command_id: ack.command_id.clone(),
            attempt: ack.attempt,
            status,
        }))
    }

    /// Records the issue time of every new revoke and the trace context of every new command,
    /// so resends sign the same body.
    fn stamp(&mut self, record: &mut RunRecord, effects: &[Effect], now: Millis, epoch: u64) {
        let spans = self
            .spans
            .entry(record.run_id().to_owned())
            .or_insert_with(|| RunSpans::resume(record));
        for effect in effects {
            match effect {
                Effect::Emit(sidecar_core::RunEvent::StepStarted { step }) => {
                    spans.step(record, step);
                }
                Effect::Send(outgoing)
                    if !record.trace.commands.contains_key(&outgoing.command_id) =>
                {
                    let traceparent = spans.step(record, &outgoing.step);
                    record
                        .trace
                        .commands
                        .insert(outgoing.command_id.clone(), traceparent);
                }
                _ => {}
            }
        }
        for effect in effects {
            if let Effect::Revoke {
                command_id,
                up_to_attempt,
                ..
            } = effect
            {
                let current = record.revokes.get(command_id);
                if current.is_none_or(|stamp| stamp.up_to_attempt < *up_to_attempt) {
                    record.revokes.insert(
                        command_id.clone(),
                        RevokeStamp {
                            up_to_attempt: *up_to_attempt,
                            issued_at: now,
                            expires_at: now.saturating_add(self.config.revoke_ttl_ms),
                            epoch,
                            resend: None,
                        },
                    );
                }
            }
        }
    }

    /// Chooses the replica of every new attempt on an HA node, before the record that sends it
    /// is written. An attempt keeps its replica for good: a command reaches another replica
    /// only as a new attempt, which the engine issues only after the earlier one settled (a
    /// final answer, or past its expiry plus skew) and was revoked on the replica that had it.
    fn route<'a>(&self, record: &mut RunRecord, sends: impl Iterator<Item = &'a Outgoing>) {
        for outgoing in sends {
            if record
                .route(&outgoing.command_id, outgoing.attempt)
                .is_some()
            {
                continue;
            }
            if let Some(replica) = self.router.replica_for(&outgoing.node.id) {
                tracing::info!(
                    command = %outgoing.command_id,
                    attempt = outgoing.attempt,
                    %replica,
                    "routing to replica"
                );
                record
                    .routes
                    .entry(outgoing.command_id.clone())
                    .or_default()
                    .insert(outgoing.attempt, replica);
            }
        }
    }

    /// Runs due timers and resumes runs whose effects were interrupted.
    pub async fn tick(&mut self) -> Result<(), DriverError> {
        let now = self.clock.now_ms();
        let due: Vec<(String, Vec<Input>)> = self
            .active
            .iter()
            .filter_map(|(run, cached)| {
                let timers: Vec<Input> = cached
                    .record
                    .state
                    .timers
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(timer, _)| {
                        Input::Event(Event::Timeout {
                            timer: timer.clone(),
                        })
                    })
                    .collect();
                (!timers.is_empty()).then(|| (run.clone(), timers))
            })
            .collect();
        for (run, inputs) in due {
            self.apply(&run, inputs).await?;
        }
        let unfinished: Vec<String> = std::mem::take(&mut self.unfinished_effects)
            .into_iter()
            .collect();
        for run in unfinished {
            if let Some(cached) = self.active.get(&run).cloned() {
                let effects = resume(&cached.record.state, now);
                self.perform_with(&cached.record, effects).await?;
            }
        }
        Ok(())
    }

    /// The earliest timer among active runs.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.active
            .values()
            .filter_map(|cached| cached.record.next_deadline())
            .min()
    }

    async fn load(&self, key: &str) -> Result<Option<(RunRecord, u64)>, DriverError> {
        let Some(stored) = self.store.load(key).await? else {
            return Ok(None);
        };
        let record = RunRecord::decode(&stored.value).map_err(|error| {
            DriverError::new(
                DriverErrorKind::Store,
                format!("run record {key} does not decode: {error}"),
            )
        })?;
        Ok(Some((record, stored.revision)))
    }

    /// One CAS write (create when `expected` is `None`). A conflict is `Invalid`; a write
    /// whose answer was lost is resolved by reading it back.
    async fn write(&self, record: &RunRecord, expected: Option<u64>) -> Result<u64, DriverError> {
        // Right before the write: a coordinator that lost its lease writes nothing.
        self.epoch()?;
        let key = run_key(record.run_id());
        let value = Bytes::from(record.encode().map_err(|error| {
            DriverError::new(
                DriverErrorKind::Store,
                format!("encoding run {key}: {error}"),
            )
        })?);
        let outcome = match expected {
            Some(revision) => self.store.update(&key, value.clone(), revision).await,
            None => self.store.create(&key, value.clone()).await,
        };
        let outcome = match outcome {
            Ok(revision) if fail::eval(failpoints::CAS_TIMEOUT_APPLIED, |_| ()).is_some() => {
                tracing::warn!(run = %key, revision, "failpoint: dropping the answer of an applied write");
                Err(StoreError::new(StoreErrorKind::Unknown, "failpoint"))
            }
            other => other,
        };
        match outcome {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind == StoreErrorKind::Conflict => Err(DriverError::new(
                DriverErrorKind::Conflict,
                format!("run {key} changed under us: {error}"),
            )),
            Err(error) if error.kind == StoreErrorKind::Unknown => {
                match self.store.load(&key).await? {
                    Some(stored) if stored.value == value => Ok(stored.revision),
                    _ => Err(DriverError::new(
                        DriverErrorKind::Conflict,
                        format!("run {key}: a write without an answer did not apply"),
                    )),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn perform_with(
        &mut self,
        record: &RunRecord,
        effects: Vec<Effect>,
    ) -> Result<(), DriverError> {
        let run = record.run_id().to_owned();
        let outcome = self.perform_all(record, effects).await;
        if let Err(error) = &outcome
            && error.kind == DriverErrorKind::Publish
        {
            tracing::warn!(run, %error, "effects interrupted; resumed on the next tick");
            self.unfinished_effects.insert(run);
            return Ok(());
        }
        outcome
    }

    async fn perform_all(
        &mut self,
        record: &RunRecord,
        effects: Vec<Effect>,
    ) -> Result<(), DriverError> {
        let mut published = false;
        let mut effects = effects.into_iter().peekable();
        while let Some(effect) = effects.next() {
            match effect {
                Effect::Send(outgoing) => {
                    if published {
                        // A step's fan-out: the commands go out together and their stored acks
                        // are awaited together, so N nodes cost about one fsync round trip,
                        // not N. Only consecutive sends are joined; every other effect keeps
                        // its place after them.
                        let mut batch = vec![outgoing];
                        while let Some(Effect::Send(next)) =
                            effects.next_if(|effect| matches!(effect, Effect::Send(_)))
                        {
                            batch.push(next);
                        }
                        futures::future::try_join_all(
                            batch.iter().map(|outgoing| self.send(record, outgoing)),
                        )
                        .await?;
                    } else {
                        // The first publish alone, so a crash right after it (the failpoint)
                        // leaves the rest of the fan-out unsent, as a real crash could.
                        self.send(record, &outgoing).await?;
                        published = true;
                        failpoint(failpoints::AFTER_PUBLISH)?;
                    }
                }
                Effect::Revoke { command_id, .. } => {
                    self.send_revoke(record, &command_id).await?;
                }
                Effect::Emit(event) => {
                    if let sidecar_core::RunEvent::StepFinished { step, status } = &event {
                        self.step_finished(record, step, *status);
                    }
                    self.publisher.emit(record.run_id(), &event);
                }
                Effect::AwaitApproval {
                    step,
                    nodes,
                    prompt,
                } => {
                    self.publisher.emit(
                        record.run_id(),
                        &sidecar_core::RunEvent::Message {
                            text: format!(
                                "step {step} waits for an approval naming {}: {prompt}",
                                nodes.join(", ")
                            ),
                        },
                    );
                }
                Effect::AwaitDecision { step, node, detail } => {
                    self.publisher.emit(
                        record.run_id(),
                        &sidecar_core::RunEvent::Message {
                            text: format!("step {step} on {node} needs a decision: {detail}"),
                        },
                    );
                }
                Effect::Deposed { command_id } => {
                    return Err(DriverError::new(
                        DriverErrorKind::Deposed,
                        format!("stale-epoch rejection of {command_id}"),
                    ));
                }
                Effect::Finish { status } => {
                    self.run_finished(record, status);
                    self.release_claims(record).await;
                    self.active.remove(record.run_id());
                    self.finished.push(FinishedRun {
                        run: record.run_id().to_owned(),
                        runbook: record.state.runbook.name.clone(),
                        status: record.state.status,
                    });
                    tracing::info!(run = record.run_id(), ?status, "run finished");
                }
                Effect::SetTimer { .. } => {}
            }
        }
        Ok(())
    }

    fn step_finished(&mut self, record: &RunRecord, step: &str, status: sidecar_core::StepStatus) {
        let outcome = crate::metrics::status_label(status);
        if let Some(spans) = self.spans.get_mut(record.run_id()) {
            spans.finish_step(step, &outcome);
        }
        let started = record
            .state
            .steps
            .iter()
            .find(|s| s.id == step)
            .and_then(|s| s.started_at);
        if let Some(started) = started {
            let took = self.clock.now_ms().saturating_sub(started).max(0);
            self.metrics.step_finished(
                &record.state.runbook.name,
                step,
                &outcome,
                std::time::Duration::from_millis(took.unsigned_abs()),
            );
        }
    }

    fn run_finished(&mut self, record: &RunRecord, status: RunStatus) {
        let outcome = crate::metrics::status_label(status);
        if let Some(spans) = self.spans.remove(record.run_id()) {
            spans.finish(&outcome);
        }
        let now = self.clock.now_ms();
        let took = now.saturating_sub(record.created_at).max(0);
        self.metrics.run_finished(
            &record.state.runbook.name,
            &outcome,
            std::time::Duration::from_millis(took.unsigned_abs()),
        );
        if record.state.runbook.name == "backup" && status == RunStatus::Succeeded {
            self.metrics
                .backup_succeeded(record.finished_at.unwrap_or(now));
        }
    }

    fn context<'a>(&'a self, record: &'a RunRecord) -> CommandContext<'a> {
        let claim = (!record.claims.is_empty()).then(|| proto_sidecar::Claim {
            run: record.run_id().to_owned(),
            epoch: record.claim_epoch,
            revision: 0,
        });
        CommandContext {
            network: &self.config.network,
            organisation: &self.config.organisation,
            claim,
            runbook: &record.state.runbook.name,
        }
    }

    async fn send(&self, record: &RunRecord, outgoing: &Outgoing) -> Result<(), DriverError> {
        let ctx = self.context(record);
        let mut command = wire::command(&ctx, outgoing).map_err(|error| {
            DriverError::new(
                DriverErrorKind::Invalid,
                format!("command {}: {error}", outgoing.command_id),
            )
        })?;
        if let Some(claim) = &mut command.claim {
            claim.revision = record.claims.get(&outgoing.node.id).copied().unwrap_or(0);
        }
        if let Some(envelope) = record.approvals.get(&outgoing.step) {
            command.approval = proto_sidecar::SignedEnvelope::decode(envelope.as_slice()).ok();
        }
        if let Some(traceparent) = record.trace.commands.get(&outgoing.command_id) {
            command.traceparent = traceparent.clone();
        }
        let message_id = wire::message_id(
            &outgoing.command_id,
            outgoing.attempt,
            record.resends.get(&outgoing.command_id).copied(),
        );
        let replica = record.route(&outgoing.command_id, outgoing.attempt);
        self.publish(&command, replica, message_id).await
    }

    async fn send_revoke(&self, record: &RunRecord, revoked: &str) -> Result<(), DriverError> {
        let Some(stamp) = record.revokes.get(revoked) else {
            return Ok(());
        };
        let ctx = self.context(record);
        let Some(command) = wire::revoke_command(&ctx, revoked, stamp.epoch, stamp) else {
            return Err(DriverError::new(
                DriverErrorKind::Invalid,
                format!("revoked command id {revoked:?} is not <run>/<step>/<node>"),
            ));
        };
        let message_id = wire::message_id(&command.command_id, 1, stamp.resend);
        let replicas = record.routed_replicas(revoked, stamp.up_to_attempt);
        if replicas.is_empty() {
            return self.publish(&command, None, message_id).await;
        }
        // Each replica that had an attempt gets its own revoke (its own journal closes the
        // door); distinct message ids keep the stream from dropping all but the first.
        for replica in replicas {
            self.publish(&command, Some(replica), format!("{message_id}@{replica}"))
                .await?;
        }
        Ok(())
    }

    /// Signs and publishes `command`; with `replica` (`<node>.<replica>`) the body names that
    /// replica and goes to its subject only.
    async fn publish(
        &self,
        command: &proto_sidecar::Command,
        replica: Option<&str>,
        message_id: String,
    ) -> Result<(), DriverError> {
        let mut command = command.clone();
        let target = match replica {
            Some(replica) => {
                command.replica = replica
                    .split_once('.')
                    .map(|(_, name)| name.to_owned())
                    .unwrap_or_default();
                replica.to_owned()
            }
            None => command.node.clone(),
        };
        let envelope = sign_command(&self.signer, &command);
        let outbound = OutboundCommand {
            node: target,
            message_id,
            payload: Bytes::from(envelope.encode_to_vec()),
            traceparent: command.traceparent.clone(),
        };
        // Right before the publish: a deposed coordinator sends nothing.
        let epoch = self.epoch()?;
        if command.epoch != epoch {
            return Err(DriverError::new(
                DriverErrorKind::Deposed,
                format!(
                    "command {} carries epoch {}, our tenure is {epoch}",
                    command.command_id, command.epoch
                ),
            ));
        }
        self.publisher
            .publish(outbound)
            .await
            .map_err(|error| DriverError::new(DriverErrorKind::Publish, error.to_string()))
    }

    /// Publishes the fence of `epoch` to each of `nodes`.
    pub async fn send_fences(&self, epoch: u64, nodes: &[String]) -> Result<(), DriverError> {
        let now = self.clock.now_ms();
        for node in nodes {
            let command = wire::fence_command(
                &self.config.network,
                &self.config.organisation,
                node,
                epoch,
                now,
                now.saturating_add(self.config.fence_ttl_ms),
            );
            let message_id = wire::message_id(&command.command_id, 1, None);
            let envelope = sign_command(&self.signer, &command);
            if self.lease.epoch_now() != Some(epoch) {
                return Err(DriverError::new(
                    DriverErrorKind::NotLeader,
                    "lease lost while fencing",
                ));
            }
            self.publisher
                .publish(OutboundCommand {
                    node: node.clone(),
                    message_id,
                    payload: Bytes::from(envelope.encode_to_vec()),
                    traceparent: String::new(),
                })
                .await
                .map_err(|error| DriverError::new(DriverErrorKind::Publish, error.to_string()))?;
        }
        Ok(())
    }

    /// Reads a run record (any organisation's) for the API.
    pub async fn read(&self, run: &str) -> Result<Option<RunRecord>, DriverError> {
        Ok(self.load(&run_key(run)).await?.map(|(record, _)| record))
    }
}

fn sends(effects: &[Effect]) -> impl Iterator<Item = &Outgoing> {
    effects.iter().filter_map(|effect| match effect {
        Effect::Send(outgoing) => Some(outgoing),
        _ => None,
    })
}

/// Whether a state is waiting for the operator.
pub fn awaiting_operator(state: &RunState) -> bool {
    matches!(
        state.status,
        RunStatus::AwaitingApproval | RunStatus::AwaitingDecision
    )
}
