//! A driver for tests: applies events, checks every invariant on every transition, and
//! records what was sent.

use sidecar_core::invariants::*;
use sidecar_core::*;

pub const T0: Millis = 1_800_000_000_000;
pub const SKEW: Millis = 1_000;

pub fn nodes() -> Vec<NodeRef> {
    vec![
        NodeRef::new("app1", NodeKind::App),
        NodeRef::new("p1", NodeKind::Participant),
        NodeRef::new("m1", NodeKind::Mediator),
        NodeRef::new("s1", NodeKind::Sequencer),
    ]
}

pub struct Driver {
    pub state: RunState,
    pub now: Millis,
    pub sent: Vec<Outgoing>,
    pub effects: Vec<Effect>,
    /// Every event applied, with the time it was applied at.
    pub log: Vec<(Event, Millis)>,
}

impl Driver {
    pub fn new(runbook: Runbook) -> Self {
        Self {
            state: start_run("r1", runbook, 4, SKEW),
            now: T0,
            sent: Vec::new(),
            effects: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Applies one event and asserts every invariant of the transition.
    pub fn apply(&mut self, event: Event) -> Vec<Effect> {
        let retry_decision = matches!(
            event,
            Event::Decision {
                decision: Decision::Retry,
                ..
            }
        );
        self.log.push((event.clone(), self.now));
        let (after, effects) = on_event(&self.state, event.clone(), self.now);
        check_transition(
            &self.state,
            &after,
            &effects,
            self.now,
            retry_decision,
            &event,
        );
        for effect in &effects {
            if let Effect::Send(out) = effect {
                self.sent.push(out.clone());
            }
        }
        self.state = after;
        self.effects.extend(effects.clone());
        effects
    }

    pub fn outbox_ids(&self) -> Vec<String> {
        self.state.outbox.keys().cloned().collect()
    }

    pub fn ack(&mut self, command_id: &str, status: AckStatus) -> Vec<Effect> {
        let attempt = self
            .state
            .outbox
            .get(command_id)
            .map(|o| o.attempt)
            .unwrap_or(1);
        self.apply(Event::Ack {
            command_id: command_id.to_owned(),
            attempt,
            status,
        })
    }

    pub fn done_all(&mut self) {
        for id in self.outbox_ids() {
            self.ack(&id, done());
        }
    }

    /// Fires the earliest timer, moving time forward to it.
    pub fn fire_next_timer(&mut self) -> Option<TimerId> {
        let (timer, at) = self
            .state
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (t.clone(), *at))?;
        self.now = self.now.max(at);
        self.apply(Event::Timeout {
            timer: timer.clone(),
        });
        Some(timer)
    }
}

pub fn done() -> AckStatus {
    AckStatus::Done {
        result_hash: vec![1, 2, 3],
    }
}

pub fn failed() -> AckStatus {
    AckStatus::Failed {
        reason: "boom".into(),
    }
}

pub fn check_transition(
    before: &RunState,
    after: &RunState,
    effects: &[Effect],
    now: Millis,
    retry_decision: bool,
    event: &Event,
) {
    let context = || format!("event {event:?}\neffects {effects:#?}");
    assert!(
        no_sequencer_backup_before_members_done(after, effects),
        "{}",
        context()
    );
    assert!(
        no_send_before_earlier_steps_done(after, effects),
        "{}",
        context()
    );
    assert!(no_resend_under_new_command_id(effects), "{}", context());
    assert!(
        no_compensation_before_final_outcome(after, effects),
        "{}",
        context()
    );
    assert!(
        retry_only_after_final_outcome_and_revoke(before, after, effects, now),
        "{}",
        context()
    );
    assert!(
        unguardable_never_retried_automatically(effects, retry_decision),
        "{}",
        context()
    );
    assert!(outbox_matches_node_states(after), "{}", context());
    assert!(finished_runs_are_quiet(after), "{}", context());
    // Every command sent in this transition and still outstanding is in the outbox verbatim,
    // so a crash before the send is repaired by `resume`.
    for effect in effects {
        if let Effect::Send(out) = effect
            && let Some(kept) = after.outbox.get(&out.command_id)
        {
            assert_eq!(kept, out);
        }
    }
}

/// What `resume` must reproduce: every outstanding command verbatim, every timer.
pub fn check_resume(state: &RunState, now: Millis) {
    let effects = resume(state, now);
    let resent: Vec<&Outgoing> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(out) => Some(out),
            _ => None,
        })
        .collect();
    assert_eq!(resent.len(), state.outbox.len());
    for out in resent {
        assert_eq!(state.outbox.get(&out.command_id), Some(out));
    }
    let timers = effects
        .iter()
        .filter(|e| matches!(e, Effect::SetTimer { .. }))
        .count();
    assert_eq!(timers, state.timers.len());
    if state.status.is_finished() {
        assert_eq!(
            effects,
            vec![Effect::Finish {
                status: state.status
            }]
        );
    }
}
