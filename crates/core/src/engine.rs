//! The transition function. Every path works on a clone of the state and a list of effects;
//! nothing here reads a clock or performs I/O.

use std::collections::BTreeMap;

use crate::runbook::effective_attempts;
use crate::{
    AckStatus, Decision, Effect, Event, Idempotency, Millis, NodeRef, NodeRun, NodeStatus,
    Outgoing, Revocation, RunEvent, RunState, RunStatus, Runbook, StepKind, StepState, StepStatus,
    TimerId, command_id, compensation_step_id,
};

/// A new run, not started yet (send [`Event::Started`] to begin).
pub fn start_run(run_id: &str, runbook: Runbook, owner_epoch: u64, skew_ms: Millis) -> RunState {
    let steps = runbook
        .steps
        .iter()
        .map(|step| StepState {
            id: step.id.clone(),
            status: StepStatus::Pending,
            nodes: BTreeMap::new(),
            compensations: BTreeMap::new(),
            started_at: None,
            finished_at: None,
        })
        .collect();
    RunState {
        run_id: run_id.to_owned(),
        runbook,
        owner_epoch,
        skew_ms,
        status: RunStatus::Pending,
        current: 0,
        steps,
        outbox: BTreeMap::new(),
        timers: BTreeMap::new(),
        revoked: BTreeMap::new(),
        ending: None,
        compensate: Vec::new(),
        detail: String::new(),
        transitions: 0,
    }
}

/// Applies one event. The caller persists the returned state before performing the effects.
pub fn on_event(state: &RunState, event: Event, now: Millis) -> (RunState, Vec<Effect>) {
    on_events(state, std::iter::once(event), now)
}

/// Applies events in order, exactly as the same sequence of [`on_event`] calls would (the
/// effects are concatenated), but clones the state once: with a thousand nodes the clone costs
/// more than the transition, and a batch of acks is folded in one go.
pub fn on_events(
    state: &RunState,
    events: impl IntoIterator<Item = Event>,
    now: Millis,
) -> (RunState, Vec<Effect>) {
    let mut machine = Machine {
        s: state.clone(),
        fx: Vec::new(),
        now,
    };
    for event in events {
        if !machine.s.status.is_finished() {
            machine.apply(event);
            machine.refresh_status();
        }
        machine.s.transitions += 1;
    }
    (machine.s, machine.fx)
}

/// The effects to perform again after loading a persisted state (crash recovery): revokes,
/// every outstanding command verbatim, every timer, and pending operator requests.
pub fn resume(state: &RunState, _now: Millis) -> Vec<Effect> {
    let mut effects = Vec::new();
    if state.status.is_finished() {
        effects.push(Effect::Finish {
            status: state.status,
        });
        return effects;
    }
    for (command_id, revocation) in &state.revoked {
        effects.push(Effect::Revoke {
            command_id: command_id.clone(),
            node: revocation.node.clone(),
            up_to_attempt: revocation.up_to_attempt,
        });
    }
    for outgoing in state.outbox.values() {
        effects.push(Effect::Send(outgoing.clone()));
    }
    for (timer, at) in &state.timers {
        effects.push(Effect::SetTimer {
            timer: timer.clone(),
            at: *at,
        });
    }
    if let (Some(step), Some(def)) = (
        state.steps.get(state.current),
        state.runbook.steps.get(state.current),
    ) && step.status == StepStatus::AwaitingApproval
        && let StepKind::Approval { nodes, prompt } = &def.kind
    {
        effects.push(Effect::AwaitApproval {
            step: def.id.clone(),
            nodes: nodes.iter().map(|n| n.id.clone()).collect(),
            prompt: prompt.clone(),
        });
    }
    for step in &state.steps {
        for run in step.nodes.values() {
            if run.status == NodeStatus::AwaitingDecision {
                effects.push(Effect::AwaitDecision {
                    step: step.id.clone(),
                    node: run.node.id.clone(),
                    detail: "outcome unknown".to_owned(),
                });
            }
        }
    }
    effects
}

/// Where a command id lives in the state.
#[derive(Clone, Copy)]
struct Slot<'a> {
    step: usize,
    node: &'a str,
    compensation: bool,
}

struct Machine {
    s: RunState,
    fx: Vec<Effect>,
    now: Millis,
}

impl Machine {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Started => {
                if self.s.status == RunStatus::Pending {
                    self.s.status = RunStatus::Running;
                    self.enter_step();
                }
            }
            Event::Ack {
                command_id,
                attempt,
                status,
            } => self.on_ack(&command_id, attempt, status),
            Event::Timeout { timer } => self.on_timer(timer),
            Event::Approval { step, nodes } => self.on_approval(&step, &nodes),
            Event::Cancel { reason } => {
                if self.s.status == RunStatus::Pending {
                    self.finish(RunStatus::Cancelled);
                } else if self.s.ending.is_none() {
                    self.s.detail = format!("cancelled: {reason}");
                    self.begin_settling(RunStatus::Cancelled);
                }
            }
            Event::Decision {
                step,
                node,
                decision,
            } => self.on_decision(&step, &node, decision),
            Event::NodeStateChanged { node, summary } => self.emit(RunEvent::Message {
                text: format!("node {node}: {summary}"),
            }),
        }
    }

    fn emit(&mut self, event: RunEvent) {
        self.fx.push(Effect::Emit(event));
    }

    fn node_run(&self, slot: Slot<'_>) -> Option<&NodeRun> {
        let step = self.s.steps.get(slot.step)?;
        if slot.compensation {
            step.compensations.get(slot.node)
        } else {
            step.nodes.get(slot.node)
        }
    }

    fn node_run_mut(
        &mut self,
        step: usize,
        node: &str,
        compensation: bool,
    ) -> Option<&mut NodeRun> {
        let step = self.s.steps.get_mut(step)?;
        if compensation {
            step.compensations.get_mut(node)
        } else {
            step.nodes.get_mut(node)
        }
    }

    fn set_status(&mut self, step: usize, node: &str, compensation: bool, status: NodeStatus) {
        if let Some(run) = self.node_run_mut(step, node, compensation) {
            run.status = status.clone();
        }
        if !matches!(status, NodeStatus::Sent | NodeStatus::Accepted) {
            let step_id = self.s.steps[step].id.clone();
            self.emit(RunEvent::NodeFinished {
                step: step_id,
                node: node.to_owned(),
                status,
            });
        }
    }

    /// Finds the step and node a command id belongs to (ids are `<run>/<step>/<node>`).
    fn locate(&self, command_id: &str) -> Option<(usize, String, bool)> {
        for (index, step) in self.s.steps.iter().enumerate() {
            for (node, run) in &step.nodes {
                if run.command_id == command_id {
                    return Some((index, node.clone(), false));
                }
            }
            for (node, run) in &step.compensations {
                if run.command_id == command_id {
                    return Some((index, node.clone(), true));
                }
            }
        }
        None
    }

    /// Removes a command from the outbox and its expiry timer: it has a final outcome.
    fn settle_command(&mut self, run: &NodeRun) {
        self.s.outbox.remove(&run.command_id);
        self.s.timers.remove(&TimerId::Expiry {
            command_id: run.command_id.clone(),
            attempt: run.attempt,
        });
    }

    fn issue(&mut self, step: usize, node: &NodeRef, attempt: u32, compensation: bool) {
        let def = &self.s.runbook.steps[step];
        let action = if compensation {
            def.compensation().cloned()
        } else {
            def.sent_action().cloned()
        };
        let Some(action) = action else { return };
        let step_id = if compensation {
            compensation_step_id(&def.id)
        } else {
            def.id.clone()
        };
        let id = command_id(&self.s.run_id, &step_id, &node.id);
        let expires_at = self.now.saturating_add(def.timeout_ms);
        let outgoing = Outgoing {
            command_id: id.clone(),
            run: self.s.run_id.clone(),
            step: step_id,
            node: node.clone(),
            attempt,
            action,
            epoch: self.s.owner_epoch,
            issued_at: self.now,
            expires_at,
            compensation,
        };
        let run = NodeRun {
            node: node.clone(),
            command_id: id.clone(),
            attempt,
            status: NodeStatus::Sent,
            issued_at: self.now,
            expires_at,
        };
        let state = &mut self.s.steps[step];
        if compensation {
            state.compensations.insert(node.id.clone(), run);
        } else {
            state.nodes.insert(node.id.clone(), run);
        }
        let timer = TimerId::Expiry {
            command_id: id.clone(),
            attempt,
        };
        let deadline = expires_at.saturating_add(self.s.skew_ms);
        self.s.timers.insert(timer.clone(), deadline);
        self.s.outbox.insert(id, outgoing.clone());
        self.fx.push(Effect::Send(outgoing));
        self.fx.push(Effect::SetTimer {
            timer,
            at: deadline,
        });
    }

    fn revoke(&mut self, run: &NodeRun) {
        let revocation = Revocation {
            node: run.node.clone(),
            up_to_attempt: run.attempt,
        };
        self.s.revoked.insert(run.command_id.clone(), revocation);
        self.fx.push(Effect::Revoke {
            command_id: run.command_id.clone(),
            node: run.node.clone(),
            up_to_attempt: run.attempt,
        });
    }

    /// Revokes the current attempt, then sends the next one under the same command id.
    fn retry(&mut self, step: usize, node: &str) {
        let Some(run) = self.s.steps[step].nodes.get(node).cloned() else {
            return;
        };
        self.settle_command(&run);
        self.s.timers.remove(&TimerId::Retry {
            command_id: run.command_id.clone(),
        });
        self.revoke(&run);
        self.issue(step, &run.node, run.attempt + 1, false);
    }

    fn enter_step(&mut self) {
        loop {
            let index = self.s.current;
            let Some(def) = self.s.runbook.steps.get(index).cloned() else {
                self.finish(RunStatus::Succeeded);
                return;
            };
            self.s.steps[index].started_at = Some(self.now);
            self.emit(RunEvent::StepStarted {
                step: def.id.clone(),
            });
            match &def.kind {
                StepKind::Barrier => {
                    debug_assert!(
                        self.s.steps[..index]
                            .iter()
                            .all(|s| s.status == StepStatus::Done),
                        "a barrier is reached only after every earlier step is done"
                    );
                    self.step_done(index);
                }
                StepKind::Approval { nodes, prompt } => {
                    self.s.steps[index].status = StepStatus::AwaitingApproval;
                    self.fx.push(Effect::AwaitApproval {
                        step: def.id.clone(),
                        nodes: nodes.iter().map(|n| n.id.clone()).collect(),
                        prompt: prompt.clone(),
                    });
                    return;
                }
                StepKind::Action { nodes, .. } | StepKind::Check { nodes, .. } => {
                    if nodes.is_empty() {
                        self.step_done(index);
                        continue;
                    }
                    self.s.steps[index].status = StepStatus::Running;
                    for node in nodes {
                        self.issue(index, node, 1, false);
                    }
                    return;
                }
            }
        }
    }

    fn step_done(&mut self, index: usize) {
        let step = &mut self.s.steps[index];
        step.status = StepStatus::Done;
        step.finished_at = Some(self.now);
        let id = step.id.clone();
        self.emit(RunEvent::StepFinished {
            step: id,
            status: StepStatus::Done,
        });
        self.s.current = index + 1;
    }

    /// After any change to the current step: advance, fail, or keep waiting.
    fn evaluate_current(&mut self) {
        if self.s.ending.is_some() {
            self.try_compensate();
            return;
        }
        let index = self.s.current;
        let Some(step) = self.s.steps.get(index) else {
            return;
        };
        if step.status != StepStatus::Running {
            return;
        }
        let all_done = step
            .nodes
            .values()
            .all(|run| matches!(run.status, NodeStatus::Done { .. }));
        let failed = step.nodes.values().any(|run| {
            matches!(
                run.status,
                NodeStatus::Failed { .. }
                    | NodeStatus::Rejected { .. }
                    | NodeStatus::TimedOut
                    | NodeStatus::Abandoned
            )
        });
        let best_effort_settled = self.s.runbook.steps[index].best_effort
            && step.nodes.values().all(|run| {
                matches!(
                    run.status,
                    NodeStatus::Done { .. }
                        | NodeStatus::Failed { .. }
                        | NodeStatus::Rejected { .. }
                        | NodeStatus::TimedOut
                        | NodeStatus::Abandoned
                )
            });
        if all_done || best_effort_settled {
            self.step_done(index);
            self.enter_step();
        } else if failed && !self.s.runbook.steps[index].best_effort {
            if self.s.detail.is_empty() {
                self.s.detail = format!("step {} failed", step.id);
            }
            self.begin_settling(RunStatus::Failed);
        }
    }

    fn begin_settling(&mut self, ending: RunStatus) {
        self.s.ending = Some(ending);
        let index = self.s.current;
        if let Some(step) = self.s.steps.get(index) {
            let awaiting_approval = step.status == StepStatus::AwaitingApproval;
            let parked: Vec<(String, NodeRun)> = step
                .nodes
                .iter()
                .filter(|(_, run)| {
                    matches!(
                        run.status,
                        NodeStatus::RetryAt { .. } | NodeStatus::AwaitingDecision
                    )
                })
                .map(|(node, run)| (node.clone(), run.clone()))
                .collect();
            for (node, run) in parked {
                self.s.timers.remove(&TimerId::Retry {
                    command_id: run.command_id.clone(),
                });
                self.set_status(index, &node, false, NodeStatus::Abandoned);
            }
            if awaiting_approval {
                self.s.steps[index].status = StepStatus::Failed;
            }
        }
        self.try_compensate();
    }

    /// Starts compensation once every command of the failing step has a final outcome or is
    /// past its expiry plus skew; revokes every command of that step that is not final first.
    fn try_compensate(&mut self) {
        if !self.s.compensate.is_empty() || self.s.status == RunStatus::Compensating {
            self.continue_compensation();
            return;
        }
        let index = self.s.current;
        if let Some(step) = self.s.steps.get(index) {
            if step.nodes.values().any(|run| !run.status.is_settled()) {
                return;
            }
            let to_revoke: Vec<NodeRun> = step
                .nodes
                .values()
                .filter(|run| {
                    !matches!(
                        run.status,
                        NodeStatus::Done { .. }
                            | NodeStatus::Failed { .. }
                            | NodeStatus::Rejected { .. }
                    )
                })
                .cloned()
                .collect();
            for run in to_revoke {
                self.settle_command(&run);
                self.revoke(&run);
            }
            if self.s.steps[index].status != StepStatus::Done {
                self.s.steps[index].status = StepStatus::Failed;
                self.s.steps[index].finished_at = Some(self.now);
            }
        }
        // Walk back from the failing step, stopping at a completed fix-forward step.
        let mut order = Vec::new();
        let last = index.min(self.s.steps.len().saturating_sub(1));
        for candidate in (0..=last).rev() {
            let def = &self.s.runbook.steps[candidate];
            let state = &self.s.steps[candidate];
            if def.fix_forward && state.status == StepStatus::Done {
                self.s.detail.push_str(&format!(
                    "; not rolled back past fix-forward step {}",
                    def.id
                ));
                break;
            }
            let has_done = state
                .nodes
                .values()
                .any(|run| matches!(run.status, NodeStatus::Done { .. }));
            if def.compensation().is_some() && has_done {
                order.push(candidate);
            }
        }
        if order.is_empty() {
            let ending = self.s.ending.unwrap_or(RunStatus::Failed);
            self.finish(ending);
            return;
        }
        self.s.compensate = order;
        self.s.status = RunStatus::Compensating;
        self.start_next_compensation();
    }

    fn start_next_compensation(&mut self) {
        while let Some(&index) = self.s.compensate.first() {
            let targets: Vec<NodeRef> = self.s.steps[index]
                .nodes
                .values()
                .filter(|run| matches!(run.status, NodeStatus::Done { .. }))
                .map(|run| run.node.clone())
                .collect();
            if targets.is_empty() {
                self.s.compensate.remove(0);
                continue;
            }
            let undo = compensation_step_id(&self.s.steps[index].id);
            self.emit(RunEvent::StepStarted { step: undo });
            for node in &targets {
                self.issue(index, node, 1, true);
            }
            return;
        }
        let ending = match self.s.ending {
            Some(RunStatus::Cancelled) => RunStatus::Cancelled,
            _ => RunStatus::Compensated,
        };
        self.finish(ending);
    }

    fn continue_compensation(&mut self) {
        let Some(&index) = self.s.compensate.first() else {
            return;
        };
        let step = &self.s.steps[index];
        if step
            .compensations
            .values()
            .any(|run| !run.status.is_settled())
        {
            return;
        }
        let all_done = step
            .compensations
            .values()
            .all(|run| matches!(run.status, NodeStatus::Done { .. }));
        let id = step.id.clone();
        if !all_done {
            self.s.detail.push_str(&format!(
                "; compensation of step {id} did not finish on every node: repair by hand"
            ));
            self.s.compensate.clear();
            self.finish(RunStatus::Failed);
            return;
        }
        self.s.steps[index].status = StepStatus::Compensated;
        self.emit(RunEvent::StepFinished {
            step: id,
            status: StepStatus::Compensated,
        });
        self.s.compensate.remove(0);
        self.start_next_compensation();
    }

    fn finish(&mut self, status: RunStatus) {
        debug_assert!(
            self.s.outbox.is_empty(),
            "a run finishes with an empty outbox"
        );
        self.s.status = status;
        self.s.timers.clear();
        self.fx.push(Effect::Finish { status });
    }

    fn on_ack(&mut self, command_id: &str, attempt: u32, status: AckStatus) {
        let Some((step, node, compensation)) = self.locate(command_id) else {
            return;
        };
        let slot = Slot {
            step,
            node: &node,
            compensation,
        };
        let Some(run) = self.node_run(slot).cloned() else {
            return;
        };
        // Acks of older attempts and duplicates of final answers change nothing.
        if run.attempt != attempt {
            return;
        }
        if run.status.is_settled() {
            self.late_answer(step, &node, compensation, &run, status);
            return;
        }
        match status {
            AckStatus::Accepted => {
                self.set_status(step, &node, compensation, NodeStatus::Accepted);
            }
            AckStatus::Progress { done, total } => {
                self.set_status(step, &node, compensation, NodeStatus::Accepted);
                let step_id = self.s.steps[step].id.clone();
                self.emit(RunEvent::NodeProgress {
                    step: step_id,
                    node: node.clone(),
                    done,
                    total,
                });
            }
            AckStatus::Done { result_hash } => {
                self.settle_command(&run);
                self.set_status(step, &node, compensation, NodeStatus::Done { result_hash });
                self.after_change(compensation);
            }
            AckStatus::Rejected {
                stale_epoch: true, ..
            } => {
                self.fx.push(Effect::Deposed {
                    command_id: command_id.to_owned(),
                });
            }
            AckStatus::Failed { reason } | AckStatus::Rejected { reason, .. } => {
                self.settle_command(&run);
                self.node_failed(
                    step,
                    &node,
                    compensation,
                    &run,
                    NodeStatus::Failed { reason },
                );
            }
            AckStatus::OutcomeUnknown => {
                self.settle_command(&run);
                self.node_unknown(step, &node, compensation);
            }
        }
    }

    /// A final answer for a command already settled by its expiry: only a `Done` for a node
    /// the run could not classify is taken, and only while the run is still going forward.
    fn late_answer(
        &mut self,
        step: usize,
        node: &str,
        compensation: bool,
        run: &NodeRun,
        status: AckStatus,
    ) {
        let unclassified = matches!(run.status, NodeStatus::AwaitingDecision);
        if let (AckStatus::Done { result_hash }, true, false, None) =
            (status, unclassified, compensation, self.s.ending)
        {
            self.set_status(step, node, false, NodeStatus::Done { result_hash });
            self.evaluate_current();
        }
    }

    fn after_change(&mut self, compensation: bool) {
        if compensation {
            self.continue_compensation();
        } else {
            self.evaluate_current();
        }
    }

    fn node_failed(
        &mut self,
        step: usize,
        node: &str,
        compensation: bool,
        run: &NodeRun,
        failure: NodeStatus,
    ) {
        if compensation || self.s.ending.is_some() {
            self.set_status(step, node, compensation, failure);
            self.after_change(compensation);
            return;
        }
        let def = &self.s.runbook.steps[step];
        if run.attempt < effective_attempts(def) {
            let at = self.now.saturating_add(def.retry.backoff_ms);
            let timer = TimerId::Retry {
                command_id: run.command_id.clone(),
            };
            self.s.timers.insert(timer.clone(), at);
            self.fx.push(Effect::SetTimer { timer, at });
            self.set_status(step, node, false, NodeStatus::RetryAt { at });
            return;
        }
        self.set_status(step, node, false, failure);
        self.evaluate_current();
    }

    fn node_unknown(&mut self, step: usize, node: &str, compensation: bool) {
        if compensation || self.s.ending.is_some() {
            self.set_status(step, node, compensation, NodeStatus::OutcomeUnknown);
            self.after_change(compensation);
            return;
        }
        self.set_status(step, node, false, NodeStatus::AwaitingDecision);
        let step_id = self.s.steps[step].id.clone();
        self.fx.push(Effect::AwaitDecision {
            step: step_id,
            node: node.to_owned(),
            detail: "the agent cannot tell whether the action applied; check the node and decide"
                .to_owned(),
        });
    }

    fn on_timer(&mut self, timer: TimerId) {
        if self.s.timers.remove(&timer).is_none() {
            return;
        }
        match timer {
            TimerId::Expiry {
                command_id,
                attempt,
            } => {
                let Some((step, node, compensation)) = self.locate(&command_id) else {
                    return;
                };
                let Some(run) = self
                    .node_run(Slot {
                        step,
                        node: &node,
                        compensation,
                    })
                    .cloned()
                else {
                    return;
                };
                if run.attempt != attempt || run.status.is_settled() {
                    return;
                }
                self.s.outbox.remove(&command_id);
                let def = &self.s.runbook.steps[step];
                let unguardable = def
                    .sent_action()
                    .is_some_and(|a| a.kind.idempotency() == Idempotency::Unguardable);
                let retry_left = run.attempt < effective_attempts(def);
                if !compensation && self.s.ending.is_none() && unguardable {
                    // No answer from an unguardable action: only an operator may decide.
                    self.node_unknown(step, &node, false);
                } else if !compensation && self.s.ending.is_none() && retry_left {
                    // Past expires_at + skew: the agent refuses the old attempt now.
                    self.retry(step, &node);
                } else {
                    self.set_status(step, &node, compensation, NodeStatus::TimedOut);
                    self.after_change(compensation);
                }
            }
            TimerId::Retry { command_id } => {
                let Some((step, node, false)) = self.locate(&command_id) else {
                    return;
                };
                let due = matches!(
                    self.s.steps[step].nodes.get(&node).map(|r| &r.status),
                    Some(NodeStatus::RetryAt { .. })
                );
                if due && self.s.ending.is_none() {
                    self.retry(step, &node);
                }
            }
        }
    }

    fn on_approval(&mut self, step_id: &str, nodes: &[String]) {
        let index = self.s.current;
        let (Some(step), Some(def)) = (self.s.steps.get(index), self.s.runbook.steps.get(index))
        else {
            return;
        };
        if step.status != StepStatus::AwaitingApproval
            || def.id != step_id
            || self.s.ending.is_some()
        {
            self.emit(RunEvent::Message {
                text: format!("approval for step {step_id} ignored: the run is not waiting for it"),
            });
            return;
        }
        let missing: Vec<String> = def
            .nodes()
            .iter()
            .filter(|node| !nodes.contains(&node.id))
            .map(|node| node.id.clone())
            .collect();
        if !missing.is_empty() {
            self.emit(RunEvent::Message {
                text: format!(
                    "approval for step {step_id} ignored: it must name every affected node; missing {}",
                    missing.join(", ")
                ),
            });
            return;
        }
        self.step_done(index);
        self.enter_step();
    }

    fn on_decision(&mut self, step_id: &str, node: &str, decision: Decision) {
        let Some(step) = self.s.runbook.step_index(step_id) else {
            return;
        };
        let awaiting = matches!(
            self.s.steps[step].nodes.get(node).map(|r| &r.status),
            Some(NodeStatus::AwaitingDecision)
        );
        if !awaiting || self.s.ending.is_some() {
            return;
        }
        match decision {
            Decision::MarkDone => {
                self.set_status(
                    step,
                    node,
                    false,
                    NodeStatus::Done {
                        result_hash: Vec::new(),
                    },
                );
                self.evaluate_current();
            }
            Decision::Retry => self.retry(step, node),
            Decision::Abort => {
                self.set_status(step, node, false, NodeStatus::Abandoned);
                self.evaluate_current();
            }
        }
    }

    fn refresh_status(&mut self) {
        if self.s.status.is_finished() || self.s.status == RunStatus::Pending {
            return;
        }
        self.s.status = if self.s.ending.is_some() {
            if self.s.compensate.is_empty() {
                RunStatus::Settling
            } else {
                RunStatus::Compensating
            }
        } else if self.s.steps.get(self.s.current).is_some_and(|step| {
            step.nodes
                .values()
                .any(|run| run.status == NodeStatus::AwaitingDecision)
        }) {
            RunStatus::AwaitingDecision
        } else if self
            .s
            .steps
            .get(self.s.current)
            .is_some_and(|step| step.status == StepStatus::AwaitingApproval)
        {
            RunStatus::AwaitingApproval
        } else {
            RunStatus::Running
        };
    }
}
