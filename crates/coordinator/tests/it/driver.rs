//! The driver end to end on a real nats-server: StartRun through the API, commands checked and
//! answered by the responder with signed acks, results in their own keys, claims, timeouts.

use std::time::Duration;

use proto_sidecar as pb;
use testkit::NatsServer;

use crate::support::{
    Behaviour, Harness, OPERATOR_TOKEN, READ_TOKEN, client, demo_nodes, finished, wait_for_run,
};

fn start(runbook: &str, request_id: &str, nodes: &[&str]) -> pb::StartRunRequest {
    pb::StartRunRequest {
        runbook: runbook.into(),
        nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
        parameters: vec![],
        request_id: request_id.into(),
    }
}

fn step<'a>(run: &'a pb::RunSummary, id: &str) -> &'a pb::StepSummary {
    run.steps.iter().find(|s| s.step == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_runs_members_before_sequencers_and_stores_each_manifest() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    let coordinator = harness.coordinator().await;
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;

    let started = ops
        .start_run(start("backup", "req-1", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(!started.existing);
    let run_id = started.run.unwrap().run_id;
    let run = wait_for_run(&mut ops, &run_id, "backup finished", finished).await;
    assert_eq!(run.status(), pb::RunStatus::Succeeded, "{run:#?}");

    // The barrier: every member dump was answered before any sequencer dump was sent.
    let executed = harness.responder.executed();
    let sequencer_start = executed
        .iter()
        .filter(|e| e.command_id.contains("/sequencers/"))
        .map(|e| e.at)
        .min()
        .unwrap();
    let members = step(&run, "members");
    assert!(members.finished_at_unix_ms <= sequencer_start);
    assert!(step(&run, "apps").finished_at_unix_ms <= step(&run, "members").started_at_unix_ms);
    // Each node dumped once.
    for node in ["app1", "p1", "p2", "m1", "s1"] {
        let dumps = executed
            .iter()
            .filter(|e| e.node == node && !e.command_id.contains("/verify/"))
            .count();
        assert_eq!(dumps, 1, "node {node} dumped {dumps} times");
    }
    // Manifests live in their own keys and come back with GetRun.
    let s1 = &step(&run, "sequencers").nodes[0];
    let manifest: serde_json::Value = serde_json::from_slice(&s1.result).unwrap();
    assert_eq!(manifest["node"], "s1");
    assert_eq!(manifest["backup_set"], run_id.as_str());

    // A repeated StartRun with the same request id returns the same run.
    let again = ops
        .start_run(start("backup", "req-1", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(again.existing);
    assert_eq!(again.run.unwrap().run_id, run_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronized_disconnect_reports_the_silent_node_and_reconnects_the_others() {
    let server = NatsServer::shared_or_start().unwrap();
    let mut nodes = demo_nodes();
    nodes.push(crate::support::TestNode {
        id: "p3",
        kind: pb::NodeKind::Participant,
        participant: "",
    });
    nodes.push(crate::support::TestNode {
        id: "p4",
        kind: pb::NodeKind::Participant,
        participant: "",
    });
    let harness = Harness::new(server.url(), nodes).await;
    harness.responder.set("p3", Behaviour::Silent);
    let coordinator = harness.coordinator().await;
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;
    let mut request = start("disconnect", "req-d", &["p1", "p2", "p3", "p4"]);
    request.parameters.push(pb::Parameter {
        key: "deadline".into(),
        value: "2s".into(),
    });
    let run_id = ops
        .start_run(request)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .run_id;
    let run = wait_for_run(&mut ops, &run_id, "disconnect finished", finished).await;
    assert_eq!(run.status(), pb::RunStatus::Compensated, "{run:#?}");
    let disconnect = step(&run, "disconnect");
    let silent: Vec<&str> = disconnect
        .nodes
        .iter()
        .filter(|n| n.command_id.contains("/disconnect/") && n.detail.contains("deadline"))
        .map(|n| n.node.as_str())
        .collect();
    assert_eq!(silent, ["p3"]);
    // The nodes that did disconnect were reconnected; the silent one's command was revoked
    // before that, and it never got a reconnect.
    let executed = harness.responder.executed();
    for node in ["p1", "p2", "p4"] {
        assert!(
            executed
                .iter()
                .any(|e| e.node == node && e.command_id.contains("disconnect~undo"))
        );
    }
    assert!(
        !executed
            .iter()
            .any(|e| e.node == "p3" && e.command_id.contains("~undo"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_claimed_nodes_is_refused_naming_node_and_run() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    harness.responder.set("p1", Behaviour::Silent);
    let coordinator = harness.coordinator().await;
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;
    let mut hold = start("disconnect", "hold", &["p1"]);
    // A cancel lets the in-flight command settle first: by answer or past this deadline.
    hold.parameters.push(pb::Parameter {
        key: "deadline".into(),
        value: "2s".into(),
    });
    let first = ops
        .start_run(hold)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .run_id;
    let refused = ops
        .start_run(start("reconnect", "other", &["p1", "p2"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("node p1"),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains(&first), "{}", refused.message());
    // p2's claim, taken before the conflict was found, was released again.
    ops.start_run(start("reconnect", "p2-only", &["p2"]))
        .await
        .unwrap();
    // Cancelling the holder releases p1.
    ops.cancel(pb::CancelRequest {
        run_id: first.clone(),
        reason: "test".into(),
    })
    .await
    .unwrap();
    wait_for_run(&mut ops, &first, "holder finished", finished).await;
    harness.responder.set("p1", Behaviour::Answer);
    ops.start_run(start("reconnect", "after", &["p1"]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_token_cannot_change_state_and_a_bad_token_is_refused() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    let coordinator = harness.coordinator().await;
    let mut reader = client(coordinator.api_addr, READ_TOKEN).await;
    let denied = reader
        .start_run(start("backup", "r", &[]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let plan = reader
        .plan(pb::PlanRequest {
            runbook: "backup".into(),
            nodes: vec![],
            parameters: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let order: Vec<&str> = plan.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        order,
        ["apps", "members", "members-done", "sequencers", "verify"]
    );
    let unknown = reader
        .plan(pb::PlanRequest {
            runbook: "backup".into(),
            nodes: vec!["p9".into()],
            parameters: vec![],
        })
        .await
        .unwrap_err();
    assert!(unknown.message().contains("p9"));
    let mut stranger = client(coordinator.api_addr, "not-a-token-at-all-xx").await;
    let refused = stranger
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_member_is_retried_under_its_command_id_and_no_sequencer_is_dumped() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    harness.responder.set("m1", Behaviour::Fail);
    let coordinator = harness.coordinator().await;
    let epoch = coordinator.driving().await.unwrap();
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;
    let run_id = ops
        .start_run(start("backup", "fails", &[]))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .run_id;
    let run = wait_for_run(&mut ops, &run_id, "failing backup finished", finished).await;
    assert_eq!(run.status(), pb::RunStatus::Failed, "{run:#?}");
    let executed = harness.responder.executed();
    let m1: Vec<(String, u32)> = executed
        .iter()
        .filter(|e| e.node == "m1")
        .map(|e| (e.command_id.clone(), e.attempt))
        .collect();
    let id = format!("{run_id}/members/m1");
    assert_eq!(m1, [(id.clone(), 1), (id.clone(), 2), (id, 3)]);
    assert!(executed.iter().all(|e| e.epoch == epoch));
    assert!(
        !executed
            .iter()
            .any(|e| e.command_id.contains("/sequencers/"))
    );
    let members = step(&run, "members");
    let m1 = members.nodes.iter().find(|n| n.node == "m1").unwrap();
    assert!(m1.detail.contains("refuses in this test"), "{m1:?}");

    // The StartRun is in the audit stream.
    let stream = harness
        .network
        .jetstream
        .get_stream(harness.names.audit_stream())
        .await
        .unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&harness.names.audit("start_run"))
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    assert_eq!(record["run"], run_id.as_str());
    assert_eq!(record["outcome"], "started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_waits_for_the_operator_and_mark_done_continues_the_run() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    harness.responder.set("p2", Behaviour::Unknown);
    let coordinator = harness.coordinator().await;
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;
    let run_id = ops
        .start_run(start("backup", "unknown", &[]))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .run_id;
    let waiting = wait_for_run(&mut ops, &run_id, "run waits for a decision", |run| {
        run.status() == pb::RunStatus::AwaitingDecision
    })
    .await;
    let members = step(&waiting, "members");
    assert_eq!(members.status(), pb::StepStatus::AwaitingDecision);
    // Nothing after the barrier runs while the operator has not decided.
    assert!(
        !harness
            .responder
            .executed()
            .iter()
            .any(|e| e.command_id.contains("/sequencers/"))
    );
    // A decision for a node that is not waiting is refused.
    let refused = ops
        .resume(pb::ResumeRequest {
            run_id: run_id.clone(),
            step: "members".into(),
            node: "p1".into(),
            decision: pb::Decision::MarkDone.into(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    harness.responder.set("p2", Behaviour::Answer);
    ops.resume(pb::ResumeRequest {
        run_id: run_id.clone(),
        step: "members".into(),
        node: "p2".into(),
        decision: pb::Decision::MarkDone.into(),
        comment: "checked the dump by hand".into(),
    })
    .await
    .unwrap();
    let run = wait_for_run(
        &mut ops,
        &run_id,
        "run finished after the decision",
        finished,
    )
    .await;
    assert_eq!(run.status(), pb::RunStatus::Succeeded, "{run:#?}");
    // p2's dump ran once: the decision did not send it again.
    let p2_dumps = harness
        .responder
        .executed()
        .iter()
        .filter(|e| e.command_id == format!("{run_id}/members/p2"))
        .count();
    assert_eq!(p2_dumps, 1);
}
