//! Random interleavings of duplicate, delayed, reordered and lost acks, timeouts, approvals,
//! cancels and operator decisions, with a crash (drop the effects, `resume`) possible at every
//! transition. Every invariant is checked on every transition, and every run must finish once
//! the environment stops misbehaving.

use proptest::prelude::*;
use sidecar_core::*;

use crate::harness::*;

#[derive(Clone, Debug)]
enum Op {
    /// Ack the pick-th outstanding command (reordering comes from the pick).
    Ack {
        pick: usize,
        status: u8,
    },
    /// Re-deliver an ack already delivered (duplicate or delayed).
    Redeliver {
        pick: usize,
    },
    /// An ack for an older attempt.
    StaleAck {
        pick: usize,
    },
    /// The earliest timer fires.
    Timer,
    Approve {
        complete: bool,
    },
    Cancel,
    Decide {
        pick: usize,
        decision: u8,
    },
    /// The coordinator crashes after persisting: the effects are lost and `resume` redoes them.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<usize>(), 0u8..6).prop_map(|(pick, status)| Op::Ack { pick, status }),
        2 => any::<usize>().prop_map(|pick| Op::Redeliver { pick }),
        1 => any::<usize>().prop_map(|pick| Op::StaleAck { pick }),
        3 => Just(Op::Timer),
        1 => any::<bool>().prop_map(|complete| Op::Approve { complete }),
        1 => Just(Op::Cancel),
        1 => (any::<usize>(), 0u8..3).prop_map(|(pick, decision)| Op::Decide { pick, decision }),
        2 => Just(Op::Crash),
    ]
}

fn runbook(choice: u8, with_app: bool) -> Runbook {
    let mut all = nodes();
    if !with_app {
        all.remove(0);
    }
    match choice % 3 {
        0 => runbooks::backup("bs", &all),
        1 => runbooks::disconnect("global", &all[..2]),
        _ => Runbook::new("mixed")
            .approval("approve", "go", &all[..2])
            .action("disconnect", ActionKind::Disconnect, &all[..2])
            .compensate_with(ActionKind::Reconnect)
            .retry(2, 500)
            .done()
            .action("import", ActionKind::ImportPartyAcs, &all[1..2])
            .fix_forward()
            .done()
            .action("backup", ActionKind::Backup, &all[..all.len() - 1])
            .retry(2, 500)
            .done(),
    }
}

fn status_of(code: u8) -> AckStatus {
    match code {
        0 | 1 => done(),
        2 => AckStatus::Accepted,
        3 => AckStatus::Progress { done: 1, total: 2 },
        4 => failed(),
        _ => AckStatus::OutcomeUnknown,
    }
}

fn awaiting_decisions(state: &RunState) -> Vec<(String, String)> {
    state
        .steps
        .iter()
        .flat_map(|step| {
            step.nodes
                .values()
                .filter(|run| run.status == NodeStatus::AwaitingDecision)
                .map(|run| (step.id.clone(), run.node.id.clone()))
        })
        .collect()
}

fn step_op(driver: &mut Driver, delivered: &mut Vec<Event>, op: &Op) {
    driver.now += 1;
    let outbox: Vec<Outgoing> = driver.state.outbox.values().cloned().collect();
    match op {
        Op::Ack { pick, status } => {
            if outbox.is_empty() {
                return;
            }
            let out = &outbox[pick % outbox.len()];
            let event = Event::Ack {
                command_id: out.command_id.clone(),
                attempt: out.attempt,
                status: status_of(*status),
            };
            delivered.push(event.clone());
            driver.apply(event);
        }
        Op::Redeliver { pick } => {
            if delivered.is_empty() {
                return;
            }
            let event = delivered[pick % delivered.len()].clone();
            driver.apply(event);
        }
        Op::StaleAck { pick } => {
            if outbox.is_empty() {
                return;
            }
            let out = &outbox[pick % outbox.len()];
            driver.apply(Event::Ack {
                command_id: out.command_id.clone(),
                attempt: out.attempt.saturating_sub(1),
                status: done(),
            });
        }
        Op::Timer => {
            driver.fire_next_timer();
        }
        Op::Approve { complete } => {
            let step = driver
                .state
                .runbook
                .steps
                .get(driver.state.current)
                .cloned();
            if let Some(step) = step {
                let mut names: Vec<String> = step.nodes().iter().map(|n| n.id.clone()).collect();
                if !complete {
                    names.pop();
                }
                driver.apply(Event::Approval {
                    step: step.id,
                    nodes: names,
                });
            }
        }
        Op::Cancel => {
            driver.apply(Event::Cancel {
                reason: "test".into(),
            });
        }
        Op::Decide { pick, decision } => {
            let waiting = awaiting_decisions(&driver.state);
            if waiting.is_empty() {
                return;
            }
            let (step, node) = waiting[pick % waiting.len()].clone();
            let decision =
                [Decision::MarkDone, Decision::Retry, Decision::Abort][*decision as usize % 3];
            driver.apply(Event::Decision {
                step,
                node,
                decision,
            });
        }
        Op::Crash => {
            // Persisted state survives; the effects of the last transition did not happen.
            let json = serde_json::to_vec(&driver.state).unwrap();
            let reloaded: RunState = serde_json::from_slice(&json).unwrap();
            assert_eq!(reloaded, driver.state);
            check_resume(&reloaded, driver.now);
            driver.state = reloaded;
        }
    }
}

/// Once the environment behaves (every command answered Done, approvals complete, unknown
/// outcomes marked done), every run finishes.
fn drain(driver: &mut Driver) {
    for _ in 0..200 {
        if driver.state.status.is_finished() {
            return;
        }
        let outbox: Vec<String> = driver.outbox_ids();
        if let Some(id) = outbox.first() {
            driver.ack(id, done());
            continue;
        }
        if let Some((step, node)) = awaiting_decisions(&driver.state).first().cloned() {
            driver.apply(Event::Decision {
                step,
                node,
                decision: Decision::MarkDone,
            });
            continue;
        }
        if driver.state.status == RunStatus::AwaitingApproval {
            step_op(driver, &mut Vec::new(), &Op::Approve { complete: true });
            continue;
        }
        if driver.fire_next_timer().is_none() {
            break;
        }
    }
    assert!(
        driver.state.status.is_finished(),
        "run stuck in {:?}: {:#?}",
        driver.state.status,
        driver.state
    );
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invariants_hold_under_any_interleaving(
        choice in 0u8..3,
        with_app in any::<bool>(),
        ops in prop::collection::vec(op(), 0..30),
    ) {
        let mut driver = Driver::new(runbook(choice, with_app));
        driver.apply(Event::Started);
        let mut delivered = Vec::new();
        for op in &ops {
            step_op(&mut driver, &mut delivered, op);
        }
        drain(&mut driver);
        check_resume(&driver.state, driver.now);
    }

    /// The driver folds a batch of acks with `on_events`: cut anywhere between events of the
    /// same time, the batches give the same state and the same effects as one `on_event` each.
    #[test]
    fn a_batch_folds_like_its_events_one_by_one(
        choice in 0u8..3,
        ops in prop::collection::vec(op(), 0..30),
        cuts in prop::collection::vec(any::<bool>(), 0..80),
    ) {
        let runbook = runbook(choice, true);
        let mut driver = Driver::new(runbook.clone());
        driver.apply(Event::Started);
        let mut delivered = Vec::new();
        for op in &ops {
            step_op(&mut driver, &mut delivered, op);
        }
        drain(&mut driver);
        let mut state = Driver::new(runbook).state;
        let mut effects = Vec::new();
        let mut batch: Vec<Event> = Vec::new();
        let mut batch_now = T0;
        for (index, (event, now)) in driver.log.iter().enumerate() {
            let cut = cuts.get(index).copied().unwrap_or(false);
            if !batch.is_empty() && (*now != batch_now || cut) {
                let (next, fx) = on_events(&state, batch.drain(..), batch_now);
                state = next;
                effects.extend(fx);
            }
            batch_now = *now;
            batch.push(event.clone());
        }
        let (state, fx) = on_events(&state, batch, batch_now);
        effects.extend(fx);
        prop_assert_eq!(&state, &driver.state);
        prop_assert_eq!(&effects, &driver.effects);
    }

    /// Replaying an entire run from any persisted point gives the same outcome as never
    /// crashing: the engine's next state depends only on the persisted state and the event.
    #[test]
    fn resuming_from_any_transition_reaches_the_same_state(
        choice in 0u8..3,
        ops in prop::collection::vec(op(), 0..20),
        crash_at in any::<prop::sample::Index>(),
    ) {
        let mut driver = Driver::new(runbook(choice, true));
        driver.apply(Event::Started);
        let mut delivered = Vec::new();
        let mut history = vec![(driver.state.clone(), driver.now)];
        for op in ops.iter().filter(|op| !matches!(op, Op::Crash)) {
            step_op(&mut driver, &mut delivered, op);
            history.push((driver.state.clone(), driver.now));
        }
        let (persisted, _) = &history[crash_at.index(history.len())];
        let json = serde_json::to_string(persisted).unwrap();
        let reloaded: RunState = serde_json::from_str(&json).unwrap();
        check_resume(&reloaded, driver.now);
        prop_assert_eq!(&reloaded, persisted);
    }
}
