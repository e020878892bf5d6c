use sidecar_core::*;

use crate::harness::*;

fn sent_steps(driver: &Driver) -> Vec<(String, String, u32)> {
    driver
        .sent
        .iter()
        .map(|o| (o.step.clone(), o.node.id.clone(), o.attempt))
        .collect()
}

#[test]
fn backup_runs_apps_then_members_then_sequencers_then_verify() {
    let mut driver = Driver::new(runbooks::backup("bs1", &nodes()));
    driver.apply(Event::Started);
    assert_eq!(driver.outbox_ids(), ["r1/apps/app1"]);
    driver.done_all();
    assert_eq!(driver.outbox_ids(), ["r1/members/m1", "r1/members/p1"]);
    driver.ack("r1/members/p1", done());
    assert_eq!(
        driver.outbox_ids(),
        ["r1/members/m1"],
        "sequencers wait for every member"
    );
    driver.ack("r1/members/m1", done());
    assert_eq!(driver.outbox_ids(), ["r1/sequencers/s1"]);
    driver.done_all();
    assert_eq!(driver.state.outbox.len(), 4, "verify runs on every node");
    driver.done_all();
    assert_eq!(driver.state.status, RunStatus::Succeeded);
    assert!(driver.effects.contains(&Effect::Finish {
        status: RunStatus::Succeeded
    }));
    let backup_set = &driver.sent[0].action.params["backup_set"];
    assert_eq!(backup_set, "bs1");
}

#[test]
fn duplicate_and_stale_acks_change_nothing() {
    let mut driver = Driver::new(runbooks::backup("bs1", &nodes()));
    driver.apply(Event::Started);
    driver.ack("r1/apps/app1", done());
    let before = driver.state.clone();
    driver.apply(Event::Ack {
        command_id: "r1/apps/app1".into(),
        attempt: 1,
        status: failed(),
    });
    driver.apply(Event::Ack {
        command_id: "r1/members/p1".into(),
        attempt: 7,
        status: done(),
    });
    driver.apply(Event::Ack {
        command_id: "r9/nowhere/x".into(),
        attempt: 1,
        status: done(),
    });
    let mut after = driver.state.clone();
    after.transitions = before.transitions;
    assert_eq!(after, before);
}

#[test]
fn a_failed_attempt_is_revoked_and_retried_under_the_same_id_after_its_backoff() {
    let runbook = Runbook::new("b")
        .action("members", ActionKind::Backup, &nodes()[1..2])
        .retry(3, 5_000)
        .done();
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    let effects = driver.ack("r1/members/p1", failed());
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Send(_))),
        "no retry before the backoff"
    );
    let timer = driver.fire_next_timer().unwrap();
    assert!(matches!(timer, TimerId::Retry { .. }));
    assert_eq!(driver.now, T0 + 5_000);
    let revoke_at = driver.effects.iter().position(|e| {
        matches!(
            e,
            Effect::Revoke {
                up_to_attempt: 1,
                ..
            }
        )
    });
    let send_at = driver
        .effects
        .iter()
        .rposition(|e| matches!(e, Effect::Send(o) if o.attempt == 2));
    assert!(
        revoke_at.unwrap() < send_at.unwrap(),
        "the revoke comes first"
    );
    assert_eq!(
        sent_steps(&driver),
        [
            ("members".into(), "p1".into(), 1),
            ("members".into(), "p1".into(), 2)
        ]
    );
    driver.ack("r1/members/p1", done());
    assert_eq!(driver.state.status, RunStatus::Succeeded);
}

#[test]
fn silence_past_expiry_plus_skew_retries_a_guarded_action() {
    let runbook = Runbook::new("b")
        .action("members", ActionKind::Backup, &nodes()[1..2])
        .timeout_ms(10_000)
        .done();
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.fire_next_timer().unwrap();
    assert_eq!(driver.now, T0 + 10_000 + SKEW);
    assert_eq!(driver.state.outbox["r1/members/p1"].attempt, 2);
    assert_eq!(driver.state.revoked["r1/members/p1"].up_to_attempt, 1);
}

#[test]
fn an_unguardable_action_is_never_retried_without_an_operator() {
    let runbook = Runbook::new("import")
        .action("import", ActionKind::ImportPartyAcs, &nodes()[1..2])
        .retry(5, 1_000)
        .done();
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.fire_next_timer().unwrap();
    assert_eq!(driver.state.status, RunStatus::AwaitingDecision);
    assert!(driver.state.outbox.is_empty());
    assert!(
        driver
            .effects
            .iter()
            .any(|e| matches!(e, Effect::AwaitDecision { node, .. } if node == "p1"))
    );
    assert!(driver.state.timers.is_empty(), "nothing fires by itself");

    driver.apply(Event::Decision {
        step: "import".into(),
        node: "p1".into(),
        decision: Decision::Retry,
    });
    assert_eq!(driver.state.outbox["r1/import/p1"].attempt, 2);
    driver.ack("r1/import/p1", AckStatus::OutcomeUnknown);
    assert_eq!(driver.state.status, RunStatus::AwaitingDecision);
    driver.apply(Event::Decision {
        step: "import".into(),
        node: "p1".into(),
        decision: Decision::MarkDone,
    });
    assert_eq!(driver.state.status, RunStatus::Succeeded);
}

#[test]
fn a_failure_compensates_only_after_every_command_of_the_step_is_final() {
    let runbook = runbooks::disconnect("global", &nodes()[..2]);
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.ack("r1/disconnect/app1", done());
    // p1 fails three times (default retry policy), then the step fails.
    for _ in 0..2 {
        driver.ack("r1/disconnect/p1", failed());
        driver.fire_next_timer();
    }
    driver.ack("r1/disconnect/p1", failed());
    assert_eq!(driver.state.status, RunStatus::Compensating);
    let undo: Vec<&Outgoing> = driver.sent.iter().filter(|o| o.compensation).collect();
    assert_eq!(undo.len(), 1);
    assert_eq!(undo[0].command_id, "r1/disconnect~undo/app1");
    assert_eq!(undo[0].action.kind, ActionKind::Reconnect);
    driver.done_all();
    assert_eq!(driver.state.status, RunStatus::Compensated);
}

#[test]
fn compensation_waits_for_in_flight_commands_to_expire_and_revokes_them() {
    let runbook = runbooks::disconnect("global", &nodes()[..2]);
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.ack("r1/disconnect/app1", done());
    driver.apply(Event::Cancel {
        reason: "operator".into(),
    });
    assert_eq!(driver.state.status, RunStatus::Settling);
    assert!(
        !driver.sent.iter().any(|o| o.compensation),
        "p1 is still in flight"
    );
    driver.fire_next_timer();
    assert!(driver.effects.iter().any(
        |e| matches!(e, Effect::Revoke { command_id, .. } if command_id == "r1/disconnect/p1")
    ));
    assert!(
        driver
            .sent
            .iter()
            .any(|o| o.compensation && o.node.id == "app1")
    );
    driver.done_all();
    assert_eq!(driver.state.status, RunStatus::Cancelled);
}

#[test]
fn an_approval_must_name_every_affected_node() {
    let runbook = Runbook::new("restore")
        .approval("approve", "restore the sequencer", &nodes())
        .action("restore", ActionKind::Restore, &nodes()[3..])
        .done();
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    assert_eq!(driver.state.status, RunStatus::AwaitingApproval);
    driver.apply(Event::Approval {
        step: "approve".into(),
        nodes: vec!["s1".into()],
    });
    assert_eq!(driver.state.status, RunStatus::AwaitingApproval);
    driver.apply(Event::Approval {
        step: "approve".into(),
        nodes: nodes().iter().map(|n| n.id.clone()).collect(),
    });
    assert_eq!(driver.outbox_ids(), ["r1/restore/s1"]);
}

#[test]
fn cancel_while_awaiting_approval_ends_the_run() {
    let runbook = Runbook::new("restore").approval("approve", "go", &nodes());
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.apply(Event::Cancel {
        reason: "no".into(),
    });
    assert_eq!(driver.state.status, RunStatus::Cancelled);
}

#[test]
fn a_stale_epoch_rejection_means_deposed_not_failed() {
    let mut driver = Driver::new(runbooks::backup("bs1", &nodes()));
    driver.apply(Event::Started);
    let before = driver.state.clone();
    let effects = driver.ack(
        "r1/apps/app1",
        AckStatus::Rejected {
            reason: "stale epoch".into(),
            stale_epoch: true,
        },
    );
    assert_eq!(
        effects,
        [Effect::Deposed {
            command_id: "r1/apps/app1".into()
        }]
    );
    assert_eq!(driver.state.outbox, before.outbox);
    assert_eq!(driver.state.status, RunStatus::Running);
}

#[test]
fn no_rollback_past_a_fix_forward_step() {
    let runbook = Runbook::new("party-replicate")
        .action("disconnect", ActionKind::Disconnect, &nodes()[1..2])
        .compensate_with(ActionKind::Reconnect)
        .done()
        .action("import", ActionKind::ImportPartyAcs, &nodes()[1..2])
        .fix_forward()
        .done()
        .action("reconnect", ActionKind::Reconnect, &nodes()[1..2])
        .retry(1, 0)
        .done();
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.done_all();
    driver.done_all();
    driver.ack("r1/reconnect/p1", failed());
    assert_eq!(driver.state.status, RunStatus::Failed);
    assert!(!driver.sent.iter().any(|o| o.compensation));
    assert!(
        driver.state.detail.contains("fix-forward step import"),
        "{}",
        driver.state.detail
    );
}

#[test]
fn run_state_round_trips_through_json() {
    let mut driver = Driver::new(runbooks::backup("bs1", &nodes()));
    driver.apply(Event::Started);
    driver.ack("r1/apps/app1", done());
    driver.ack("r1/members/p1", failed());
    let json = serde_json::to_string(&driver.state).unwrap();
    let back: RunState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, driver.state);
}

#[test]
fn restore_stops_everything_before_restoring_and_starts_apps_last() {
    let all = nodes();
    let mut driver = Driver::new(runbooks::restore("bs1", &all));
    driver.apply(Event::Started);
    assert_eq!(driver.state.status, RunStatus::AwaitingApproval);
    let prompt = driver.effects.iter().find_map(|e| match e {
        Effect::AwaitApproval { prompt, .. } => Some(prompt.clone()),
        _ => None,
    });
    assert!(
        prompt
            .as_deref()
            .is_some_and(|p| p.contains("p1") && p.contains("sequencer")),
        "the approval names the participants forced back: {prompt:?}"
    );
    driver.apply(Event::Approval {
        step: "approve".into(),
        nodes: all.iter().map(|n| n.id.clone()).collect(),
    });
    let mut order = Vec::new();
    while !driver.state.status.is_finished() {
        let outbox = driver.outbox_ids();
        assert!(!outbox.is_empty(), "stuck in {:?}", driver.state.status);
        order.push(outbox.join(" "));
        driver.done_all();
    }
    assert_eq!(driver.state.status, RunStatus::Succeeded);
    assert_eq!(
        order,
        [
            "r1/stop-apps/app1",
            "r1/stop-members/m1 r1/stop-members/p1",
            "r1/stop-sequencers/s1",
            "r1/restore/app1 r1/restore/m1 r1/restore/p1 r1/restore/s1",
            "r1/start-sequencers/s1",
            "r1/start-members/m1 r1/start-members/p1",
            "r1/reconnect/p1",
            "r1/dedup-safe/p1",
            "r1/start-apps/app1",
        ]
    );
}

#[test]
fn an_ha_restore_stops_and_starts_every_replica_and_restores_once() {
    let all = nodes();
    let replicas = std::collections::BTreeMap::from([(
        "p1".to_owned(),
        vec!["p1.a".to_owned(), "p1.b".to_owned()],
    )]);
    let mut driver = Driver::new(runbooks::restore_replicated("bs1", &all, &replicas));
    driver.apply(Event::Started);
    driver.apply(Event::Approval {
        step: "approve".into(),
        nodes: all.iter().map(|n| n.id.clone()).collect(),
    });
    let mut order = Vec::new();
    while !driver.state.status.is_finished() {
        order.push(driver.outbox_ids().join(" "));
        driver.done_all();
    }
    assert_eq!(driver.state.status, RunStatus::Succeeded);
    assert_eq!(
        order[1],
        "r1/stop-members/m1 r1/stop-members/p1.a r1/stop-members/p1.b"
    );
    assert_eq!(
        order[3],
        "r1/restore/app1 r1/restore/m1 r1/restore/p1 r1/restore/s1"
    );
    assert_eq!(
        order[5],
        "r1/start-members/m1 r1/start-members/p1.a r1/start-members/p1.b"
    );
    assert_eq!(order[6], "r1/reconnect/p1");
}

#[test]
fn restore_waits_on_the_dedup_check_by_retrying_it() {
    let mut driver = Driver::new(runbooks::restore("bs1", &nodes()));
    driver.apply(Event::Started);
    driver.apply(Event::Approval {
        step: "approve".into(),
        nodes: nodes().iter().map(|n| n.id.clone()).collect(),
    });
    while driver.outbox_ids() != ["r1/dedup-safe/p1"] {
        driver.done_all();
    }
    driver.ack("r1/dedup-safe/p1", failed());
    assert!(
        driver.outbox_ids().is_empty(),
        "the retry waits for its backoff"
    );
    while driver.outbox_ids().is_empty() {
        driver.fire_next_timer().expect("a retry timer");
    }
    assert_eq!(driver.state.outbox["r1/dedup-safe/p1"].attempt, 2);
    driver.done_all();
    driver.done_all();
    assert_eq!(driver.state.status, RunStatus::Succeeded);
}

#[test]
fn a_best_effort_step_ends_with_every_answer_and_records_the_silent_node() {
    let participants = &nodes()[1..2];
    let mut with_second = participants.to_vec();
    with_second.push(NodeRef::new("p2", NodeKind::Participant));
    let runbook = Runbook::new("evidence")
        .check("evidence", "commitments", &with_second)
        .retry(1, 0)
        .timeout_ms(3_000)
        .best_effort()
        .done()
        .barrier("after");
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.ack("r1/evidence/p1", done());
    assert_eq!(
        driver.state.status,
        RunStatus::Running,
        "p2 may still answer"
    );
    let timer = driver.fire_next_timer().unwrap();
    assert!(matches!(timer, TimerId::Expiry { .. }));
    assert_eq!(driver.state.status, RunStatus::Succeeded);
    assert_eq!(
        driver.state.steps[0].nodes["p2"].status,
        NodeStatus::TimedOut,
        "the silent node is recorded as such"
    );
    assert!(driver.state.outbox.is_empty());
}

#[test]
fn a_failing_node_fails_a_step_that_is_not_best_effort() {
    let runbook = Runbook::new("evidence")
        .check("evidence", "commitments", &nodes()[1..2])
        .retry(1, 0)
        .done();
    let mut driver = Driver::new(runbook);
    driver.apply(Event::Started);
    driver.ack("r1/evidence/p1", failed());
    assert_eq!(driver.state.status, RunStatus::Failed);
}
