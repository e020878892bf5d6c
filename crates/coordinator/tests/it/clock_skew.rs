//! Agents whose clocks are 30 s off, driven by a real coordinator beside a canton-sim
//! participant. The agent runs in-process on an injected clock (the host's clock is left
//! alone): 30 s ahead it refuses a command already expired by its clock, 30 s behind one not yet
//! valid; the run names the node and the reason, the agent counts the refusal and warns of the
//! skew (its node state's server stamp, and behind also the commands' stamps), and the
//! participant is never touched. Commands whose window covers the skew run exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use canton_agent::AgentMetrics;
use canton_agent::clock::SkewedClock;
use proto_sidecar as pb;
use testkit::{NatsServer, Postgres};

use crate::agents::{
    AgentClock, AgentTask, PARTICIPANT, connectivity_calls, last_action, participant,
    start_agent_with_clock, start_sims, wait_connected, wait_for_node_state,
};
use crate::support::{
    Client, OPERATOR_TOKEN, TestNode, client, config, finished, wait_driving, wait_for_run,
};

const SKEW_MS: i64 = 30_000;

/// Starts `runbook` with a `deadline` (the commands' validity window) and waits for its end.
async fn run(ops: &mut Client, runbook: &str, deadline: &str, request_id: &str) -> pb::RunSummary {
    let started = Instant::now();
    let run_id = ops
        .start_run(pb::StartRunRequest {
            runbook: runbook.into(),
            nodes: vec![],
            parameters: vec![pb::Parameter {
                key: "deadline".into(),
                value: deadline.into(),
            }],
            request_id: request_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .run_id;
    let run = wait_for_run(ops, &run_id, request_id, finished).await;
    eprintln!(
        "{request_id}: {runbook} (deadline {deadline}) ended {:?} in {:?}",
        run.status(),
        started.elapsed()
    );
    run
}

/// The participant's result in the run's only step.
fn node_result(run: &pb::RunSummary) -> &pb::NodeResult {
    let node = &run.steps[0].nodes[0];
    assert_eq!(node.node, PARTICIPANT, "{run:#?}");
    node
}

/// Asserts that the run failed on the participant for `reason` and the participant was not
/// touched after action `mark`.
async fn assert_refused(
    run: &pb::RunSummary,
    reason: pb::RejectReason,
    sims: &canton_sim::SimNetwork,
    mark: i64,
) {
    assert_eq!(run.status(), pb::RunStatus::Failed, "{run:#?}");
    let node = node_result(run);
    eprintln!("coordinator reports {}: {}", node.node, node.detail);
    // The engine keeps a refusal as the node's failure, its reason leading the detail.
    assert_eq!(node.status(), pb::AckStatus::Failed, "{node:#?}");
    assert!(
        node.detail.starts_with(reason.as_str_name()),
        "{reason:?} in {node:#?}"
    );
    let calls = connectivity_calls(sims, mark).await;
    assert!(calls.is_empty(), "the participant was touched: {calls:?}");
}

/// Runs `runbook`, expects it to succeed with exactly one matching call on the participant.
async fn assert_runs_once(
    ops: &mut Client,
    sims: &canton_sim::SimNetwork,
    runbook: &str,
    deadline: &str,
    request_id: &str,
) {
    let mark = last_action(sims).await;
    let run = run(ops, runbook, deadline, request_id).await;
    assert_eq!(run.status(), pb::RunStatus::Succeeded, "{run:#?}");
    assert_eq!(node_result(&run).attempt, 1);
    let calls = connectivity_calls(sims, mark).await;
    let verb = if runbook == "disconnect" {
        "Disconnect"
    } else {
        "Reconnect"
    };
    assert_eq!(
        calls.iter().filter(|m| m.starts_with(verb)).count(),
        1,
        "{request_id}: {calls:?}"
    );
    let want_connected = runbook == "reconnect";
    wait_connected(
        &participant(sims),
        &format!("participant after {request_id}"),
        |n| (n > 0) == want_connected,
    )
    .await;
}

async fn stop(agent: AgentTask) {
    let (shutdown, task) = agent;
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_agents_30_s_off_refuse_commands_outside_their_window_and_run_the_rest_once() {
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = start_sims(&postgres);
    wait_connected(&participant(&sims), "participant connected", |n| n > 0).await;
    let names = crate::fresh_names();
    let network = crate::network(nats.url(), names.clone()).await;
    let nodes = vec![TestNode {
        id: PARTICIPANT,
        kind: pb::NodeKind::Participant,
        participant: "",
    }];
    let coordinator_config = config(&names, nats.url(), &nodes);
    let dir = tempfile::tempdir().unwrap();
    let start_agent = |offset_ms: i64, max_clock_skew: Duration, metrics: &AgentMetrics| {
        eprintln!("agent clock off by {offset_ms} ms, skew bound {max_clock_skew:?}");
        start_agent_with_clock(
            &names,
            nats.url(),
            &sims,
            &coordinator_config.network_config,
            dir.path(),
            metrics.clone(),
            &AgentClock {
                clock: Arc::new(SkewedClock { offset_ms }),
                max_clock_skew,
            },
        )
    };
    let bound = Duration::from_secs(2);

    // 30 s ahead: a command valid for 20 s is expired on arrival by the agent's clock.
    let ahead = AgentMetrics::default();
    let agent = start_agent(SKEW_MS, bound, &ahead);
    wait_for_node_state(&network).await;
    let coordinator = canton_coordinator::service::Coordinator::start(coordinator_config.clone())
        .await
        .unwrap();
    wait_driving(&coordinator).await;
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;
    let mark = last_action(&sims).await;
    let refused = run(&mut ops, "disconnect", "20s", "ahead-expired").await;
    assert_refused(&refused, pb::RejectReason::Expired, &sims, mark).await;
    assert!(
        node_result(&refused).detail.contains("expired at"),
        "{refused:#?}"
    );
    assert_eq!(ahead.rejections.get("expired"), 1);
    // A command's server stamp cannot reveal a clock ahead (it looks like a command that
    // waited); the node state's read-back can: the server stamped it 30 s before our send.
    let warnings = ahead.clock_skew_warnings.get();
    eprintln!("clock skew warnings of the agent ahead: {warnings}");
    assert!(warnings >= 1, "the agent 30 s ahead was not noticed");
    // Valid for 60 s, the same command's window covers the skew.
    assert_runs_once(&mut ops, &sims, "disconnect", "60s", "ahead-within").await;
    assert_runs_once(&mut ops, &sims, "reconnect", "60s", "ahead-back").await;
    assert_eq!(ahead.commands_rejected.get(), 1, "nothing else refused");
    stop(agent).await;

    // 30 s behind: every command the coordinator issues now is dated in the agent's future,
    // and the server's delivery stamps are ahead of the agent's clock.
    let behind = AgentMetrics::default();
    let agent = start_agent(-SKEW_MS, bound, &behind);
    let mark = last_action(&sims).await;
    let refused = run(&mut ops, "disconnect", "60s", "behind-not-yet-valid").await;
    assert_refused(&refused, pb::RejectReason::NotYetValid, &sims, mark).await;
    assert!(
        node_result(&refused)
            .detail
            .contains("ahead of this agent's clock"),
        "{refused:#?}"
    );
    assert_eq!(behind.rejections.get("not_yet_valid"), 1);
    let warnings = behind.clock_skew_warnings.get();
    eprintln!("clock skew warnings of the agent behind: {warnings}");
    assert!(warnings >= 1, "the server stamp 30 s ahead was not noticed");
    stop(agent).await;

    // Within the bound (45 s here), 30 s behind changes nothing: each command runs once.
    let tolerant = AgentMetrics::default();
    let agent = start_agent(-SKEW_MS, Duration::from_secs(45), &tolerant);
    assert_runs_once(&mut ops, &sims, "disconnect", "60s", "behind-within").await;
    assert_runs_once(&mut ops, &sims, "reconnect", "60s", "behind-back").await;
    assert_eq!(tolerant.commands_rejected.get(), 0);
    stop(agent).await;
}
