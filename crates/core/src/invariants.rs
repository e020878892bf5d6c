//! Invariants as reusable predicates over one transition: the state before, the event's
//! effects and the state after. The property tests check them on every transition; the
//! coordinator may check them in debug builds.

use crate::{Effect, Idempotency, NodeKind, NodeStatus, RunState, StepKind, command_id};

fn sends(effects: &[Effect]) -> impl Iterator<Item = &crate::Outgoing> {
    effects.iter().filter_map(|effect| match effect {
        Effect::Send(outgoing) => Some(outgoing),
        _ => None,
    })
}

/// No sequencer backup is sent before every member (participant, mediator, app) backup of the
/// run is done.
pub fn no_sequencer_backup_before_members_done(after: &RunState, effects: &[Effect]) -> bool {
    let sequencer_backup_sent = sends(effects).any(|out| {
        !out.compensation
            && out.node.kind == NodeKind::Sequencer
            && out.action.kind == crate::ActionKind::Backup
    });
    if !sequencer_backup_sent {
        return true;
    }
    after
        .runbook
        .steps
        .iter()
        .zip(&after.steps)
        .all(|(def, state)| {
            let member_backup = matches!(&def.kind, StepKind::Action { action, nodes, .. }
            if action.kind == crate::ActionKind::Backup
                && nodes.iter().any(|n| n.kind != NodeKind::Sequencer));
            !member_backup
                || def
                    .nodes()
                    .iter()
                    .filter(|n| n.kind != NodeKind::Sequencer)
                    .all(|n| {
                        matches!(
                            state.nodes.get(&n.id).map(|r| &r.status),
                            Some(NodeStatus::Done { .. })
                        )
                    })
        })
}

/// Steps run in order: a command for step i is sent only when every earlier step is done.
pub fn no_send_before_earlier_steps_done(after: &RunState, effects: &[Effect]) -> bool {
    sends(effects).filter(|out| !out.compensation).all(|out| {
        let Some(index) = after.runbook.step_index(&out.step) else {
            return false;
        };
        after.steps[..index].iter().all(|step| {
            step.status == crate::StepStatus::Done || step.status == crate::StepStatus::Compensated
        })
    })
}

/// Every command id is `<run>/<step>/<node>`: a resend or retry never gets a new id.
pub fn no_resend_under_new_command_id(effects: &[Effect]) -> bool {
    sends(effects).all(|out| out.command_id == command_id(&out.run, &out.step, &out.node.id))
}

/// A compensation is sent only when the command it undoes is done (a final outcome) and no
/// command of its step is still in flight.
pub fn no_compensation_before_final_outcome(after: &RunState, effects: &[Effect]) -> bool {
    sends(effects).filter(|out| out.compensation).all(|out| {
        let step_id = out.step.trim_end_matches("~undo");
        let Some(index) = after.runbook.step_index(step_id) else {
            return false;
        };
        let original = after.steps[index].nodes.get(&out.node.id);
        let in_flight = after.steps[index]
            .nodes
            .values()
            .any(|run| !run.status.is_settled() || after.outbox.contains_key(&run.command_id));
        matches!(original.map(|r| &r.status), Some(NodeStatus::Done { .. })) && !in_flight
    })
}

/// A retry (attempt > 1) is sent only after the previous attempt had a final outcome or was
/// past `expires_at` + skew at `now`, and after a revoke of the previous attempt.
pub fn retry_only_after_final_outcome_and_revoke(
    before: &RunState,
    after: &RunState,
    effects: &[Effect],
    now: i64,
) -> bool {
    sends(effects).filter(|out| out.attempt > 1).all(|out| {
        let revoked = effects.iter().any(|effect| {
            matches!(effect, Effect::Revoke { command_id, up_to_attempt, .. }
                if *command_id == out.command_id && *up_to_attempt + 1 == out.attempt)
        }) && after
            .revoked
            .get(&out.command_id)
            .is_some_and(|r| r.up_to_attempt + 1 == out.attempt);
        let previous = before
            .steps
            .iter()
            .flat_map(|step| step.nodes.values())
            .find(|run| run.command_id == out.command_id);
        let settled = previous.is_some_and(|run| {
            run.attempt + 1 == out.attempt
                && (run.status.is_settled() || now >= run.expires_at + before.skew_ms)
        });
        revoked && settled
    })
}

/// Unguardable actions are retried only on an operator's decision.
pub fn unguardable_never_retried_automatically(
    effects: &[Effect],
    event_is_retry_decision: bool,
) -> bool {
    event_is_retry_decision
        || sends(effects).all(|out| {
            out.attempt == 1 || out.action.kind.idempotency() != Idempotency::Unguardable
        })
}

/// The outbox holds exactly the commands still in flight, and each has an expiry timer.
pub fn outbox_matches_node_states(state: &RunState) -> bool {
    let in_flight: Vec<&str> = state
        .steps
        .iter()
        .flat_map(|step| step.nodes.values().chain(step.compensations.values()))
        .filter(|run| !run.status.is_settled())
        .map(|run| run.command_id.as_str())
        .collect();
    in_flight.len() == state.outbox.len()
        && in_flight.iter().all(|id| state.outbox.contains_key(*id))
        && state.outbox.values().all(|out| {
            state.timers.contains_key(&crate::TimerId::Expiry {
                command_id: out.command_id.clone(),
                attempt: out.attempt,
            })
        })
}

/// A finished run has nothing outstanding.
pub fn finished_runs_are_quiet(state: &RunState) -> bool {
    !state.status.is_finished() || (state.outbox.is_empty() && state.timers.is_empty())
}
