//! One agent cut off from NATS through a TCP proxy while the rest of the network talks:
//! - a clean cut during a synchronized disconnect, a blackhole during a backup: the barrier
//!   never passes (the other nodes get no command of the next step, as their own action logs
//!   and the PostgreSQL connection log show), the run ends naming the node past its deadline,
//!   and after the heal the agent refuses every expired attempt and runs nothing;
//! - acks lost one way (commands arrive, the agent's acks never reach the server): the action
//!   runs once, its redeliveries are answered from the journal, and once the ack path heals
//!   the run completes;
//! - the coordinator's own link blackholed mid-backup: it gives up the lease and starts
//!   nothing, and after the heal it leads again under a new epoch and completes the run with
//!   each node dumped once.
use std::time::{Duration, Instant};

use e2e::stack::Stack;
use testkit::TcpProxy;

use crate::support::{
    agent_metrics, assert_backup_complete_once, backup_args, commands_settled, dump_connections,
    final_run, manifests, method_name, metric, node_calls, ops_json, ops_json_owned,
    running_stack_behind_proxy, running_stack_with_coordinator_behind_proxy, step, wait_for,
    wait_for_async,
};
use crate::verdicts::VerdictWatch;

const TOPOLOGY: &str = r#"
name = "partitions"
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "operator"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "operator"
[[node]]
id = "participant1"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant3"
kind = "participant"
organisation = "operator"
"#;

const PARTICIPANTS: [&str; 3] = ["participant1", "participant2", "participant3"];
const ISOLATED: &str = "participant3";
/// Bound on waits for what follows a heal: a reconnect (backoff capped at 5 s) and a
/// redelivery (`ack_wait` 10 s) on a loaded machine.
const AFTER_HEAL: Duration = Duration::from_secs(90);

/// How many calls each participant's own action log holds, to count from.
async fn action_marks(stack: &Stack) -> Vec<usize> {
    let mut marks = Vec::new();
    for node in PARTICIPANTS {
        marks.push(node_calls(stack, node).await.len());
    }
    marks
}

/// The method names `node` executed after `mark` (successful calls only).
async fn calls_since(stack: &Stack, node: &str, mark: usize) -> Vec<String> {
    node_calls(stack, node)
        .await
        .into_iter()
        .skip(mark)
        .filter(|(_, outcome)| outcome == "OK")
        .map(|(path, _)| method_name(&path).to_owned())
        .collect()
}

/// `(node, status, detail)` of every node of step `id`.
fn node_results(run: &serde_json::Value, id: &str) -> Vec<(String, String, String)> {
    step(run, id)["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let text = |field: &str| n[field].as_str().unwrap_or_default().to_owned();
            (text("node"), text("status"), text("detail"))
        })
        .collect()
}

/// The step's nodes all did their part except the isolated one, which the run reports as
/// past its deadline.
fn assert_only_isolated_missing(run: &serde_json::Value, id: &str) {
    let results = node_results(run, id);
    eprintln!("{id} results: {results:?}");
    let not_done: Vec<&str> = results
        .iter()
        .filter(|(_, status, _)| status != "done")
        .map(|(node, _, _)| node.as_str())
        .collect();
    assert_eq!(not_done, [ISOLATED], "{results:?}");
    assert!(
        results
            .iter()
            .any(|(node, _, detail)| node == ISOLATED && detail.contains("deadline")),
        "the run names {ISOLATED} past its deadline: {results:?}"
    );
}

/// How many attempts the run sent the isolated node in step `id` (each retry follows the
/// expiry and revoke of the attempt before it).
fn isolated_attempts(run: &serde_json::Value, id: &str) -> f64 {
    step(run, id)["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == ISOLATED))
        .and_then(|n| n["attempt"].as_f64())
        .unwrap_or_else(|| panic!("no attempt of {ISOLATED} in {:#}", step(run, id)))
}

/// Heals the proxy, waits until the isolated agent has answered everything its consumer held
/// for it, and checks it refused each of the step's `attempts` as expired and ran nothing.
async fn heal_and_check_nothing_stale_ran(
    stack: &Stack,
    proxy: &TcpProxy,
    mark: usize,
    attempts: f64,
) {
    let healed = Instant::now();
    proxy.pass();
    wait_for_async(
        &format!("{ISOLATED}'s agent answered its queued commands"),
        AFTER_HEAL,
        || async {
            commands_settled(stack, ISOLATED).await
                && metric(
                    &agent_metrics(stack, ISOLATED),
                    "canton_agent_rejections_total",
                    &[("reason", "expired")],
                ) >= attempts
        },
    )
    .await;
    eprintln!(
        "queue of {ISOLATED} settled {:?} after the heal",
        healed.elapsed()
    );
    let metrics = agent_metrics(stack, ISOLATED);
    let expired = metric(
        &metrics,
        "canton_agent_rejections_total",
        &[("reason", "expired")],
    );
    let rejected = metric(&metrics, "canton_agent_commands_rejected_total", &[]);
    let reconnects = metric(&metrics, "canton_agent_reconnects_total", &[]);
    eprintln!(
        "{ISOLATED}: rejected {rejected} (expired {expired}), reconnects {reconnects}, proxy {:?}",
        proxy.stats()
    );
    assert_eq!(expired, attempts, "every attempt was refused as expired");
    assert_eq!(rejected, attempts, "nothing else was refused");
    assert!(reconnects >= 1.0, "the agent came back on a new connection");
    let calls = calls_since(stack, ISOLATED, mark).await;
    assert!(calls.is_empty(), "{ISOLATED} executed {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_agent_holds_the_disconnect_barrier_and_runs_nothing_stale_after_the_heal() {
    let (stack, proxy) = running_stack_behind_proxy(TOPOLOGY, ISOLATED).await;
    let marks = action_marks(&stack).await;
    proxy.cut();
    // The agent noticed and tries to come back: the cut is in force.
    wait_for("a refused reconnect", Duration::from_secs(30), || {
        proxy.stats().refused >= 1
    });

    let started = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &[
            "run",
            "disconnect",
            "--param",
            "deadline=5s",
            "--param",
            "synchronizer_alias=global",
            "--param",
            "pin_manual_connect=true",
            "--wait",
        ],
    );
    eprintln!("disconnect run ended after {:?}", started.elapsed());
    assert!(!status.success(), "{values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "compensated", "{run:#}");
    assert_only_isolated_missing(run, "disconnect");
    // The barrier: the step after the disconnect never sent anything.
    assert!(
        node_results(run, "pin-manual-connect").is_empty(),
        "{:#}",
        step(run, "pin-manual-connect")
    );
    for (node, mark) in PARTICIPANTS.iter().zip(&marks) {
        let calls = calls_since(&stack, node, *mark).await;
        eprintln!("{node}: calls during the run {calls:?}");
        assert!(
            !calls.iter().any(|m| m == "ModifySynchronizer"),
            "{node} got the next step's command: {calls:?}"
        );
        if *node != ISOLATED {
            let verbs: Vec<&str> = calls
                .iter()
                .map(|m| &m[..m.find("Synchronizer").unwrap_or(m.len())])
                .collect();
            assert_eq!(verbs, ["Disconnect", "Reconnect"], "{node}: {calls:?}");
        }
    }

    let attempts = isolated_attempts(run, "disconnect");
    assert_eq!(attempts, 1.0, "the disconnect is tried once");
    heal_and_check_nothing_stale_ran(&stack, &proxy, marks[2], attempts).await;
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_agent_holds_the_backup_barrier_and_runs_nothing_stale_after_the_heal() {
    const SET: &str = "partition-set";
    let (stack, proxy) = running_stack_behind_proxy(TOPOLOGY, ISOLATED).await;
    let marks = action_marks(&stack).await;
    proxy.blackhole();

    let started = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &[
            "run",
            "backup",
            "--param",
            &format!("backup_set={SET}"),
            "--param",
            "timeout=12s",
            "--wait",
        ],
    );
    eprintln!("backup run ended after {:?}", started.elapsed());
    assert!(!status.success(), "{values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_only_isolated_missing(run, "members");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    // The barrier: no sequencer command was ever issued, and no sequencer dump connected.
    assert!(
        !values
            .iter()
            .any(|e| e["kind"] == "step_started" && e["step"] == "sequencers"),
        "the sequencer step started: {values:#?}"
    );
    let dumped: Vec<String> = manifests(&stack, SET).into_keys().collect();
    assert_eq!(dumped, ["mediator1", "participant1", "participant2"]);
    let connections = dump_connections(&stack, &run_id);
    assert!(
        !connections.contains_key("sequencer1"),
        "the sequencer was dumped: {connections:?}"
    );

    let attempts = isolated_attempts(run, "members");
    eprintln!("{ISOLATED} was sent {attempts} attempts of its dump");
    heal_and_check_nothing_stale_ran(&stack, &proxy, marks[2], attempts).await;
    let connections = dump_connections(&stack, &run_id);
    eprintln!("dump connections after the heal: {connections:?}");
    assert!(
        !connections.contains_key(ISOLATED) && !connections.contains_key("sequencer1"),
        "{connections:?}"
    );
    let dumped: Vec<String> = manifests(&stack, SET).into_keys().collect();
    assert_eq!(dumped, ["mediator1", "participant1", "participant2"]);
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_lost_one_way_are_answered_from_the_journal_once_the_ack_path_heals() {
    const LOSSY: &str = "participant1";
    const REQUEST: &str = "lossy-disconnect";
    let (stack, proxy) = running_stack_behind_proxy(TOPOLOGY, LOSSY).await;
    let marks = action_marks(&stack).await;
    let node = sidecar_bus::NodeId::new(LOSSY).expect("node id");
    let acks = stack.names().acks_of(&node);
    proxy.drop_publishes(acks.trim_end_matches('>'));
    let start = ["run", "disconnect", "--request-id", REQUEST];
    let (status, values) = ops_json(
        &stack,
        &[&start[..], &["--param", "deadline=120s"]].concat(),
    );
    assert!(status.success(), "{values:#?}");

    // Executed, its ack lost, redelivered and answered again from the journal, lost again.
    let lossy = Instant::now();
    wait_for_async(
        "a lost ack, a redelivery answered from the journal",
        AFTER_HEAL,
        || async {
            metric(
                &agent_metrics(&stack, LOSSY),
                "canton_agent_commands_resent_total",
                &[],
            ) >= 1.0
                && proxy.stats().dropped_publishes >= 2
        },
    )
    .await;
    let calls = calls_since(&stack, LOSSY, marks[0]).await;
    assert_eq!(
        calls,
        ["DisconnectAllSynchronizers"],
        "executed once so far"
    );
    let (_, pending) = ops_json(&stack, &start);
    let pending = pending
        .iter()
        .find_map(|v| v.get("run"))
        .unwrap_or_else(|| panic!("no run in {pending:#?}"));
    assert_eq!(pending["status"], "running", "{pending:#}");
    eprintln!(
        "acks of {LOSSY} lost for {:?}; proxy {:?}",
        lossy.elapsed(),
        proxy.stats()
    );

    proxy.pass();
    let healed = Instant::now();
    let (status, values) = ops_json(&stack, &[&start[..], &["--wait"]].concat());
    eprintln!("run finished {:?} after the heal", healed.elapsed());
    assert!(status.success(), "{values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let results = node_results(run, "disconnect");
    assert!(
        results.iter().all(|(_, status, _)| status == "done"),
        "{results:?}"
    );
    for (node, mark) in PARTICIPANTS.iter().zip(&marks) {
        let calls = calls_since(&stack, node, *mark).await;
        eprintln!("{node}: {calls:?}");
        assert_eq!(
            calls,
            ["DisconnectAllSynchronizers"],
            "{node} executed once"
        );
    }
    let metrics = agent_metrics(&stack, LOSSY);
    eprintln!(
        "{LOSSY}: resent {} answers, {} ack publishes failed",
        metric(&metrics, "canton_agent_commands_resent_total", &[]),
        metric(&metrics, "canton_agent_ack_publish_failures_total", &[]),
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

const NODES: [&str; 5] = [
    "mediator1",
    "participant1",
    "participant2",
    "participant3",
    "sequencer1",
];

/// `canton-ops` exits 3 when the coordinator cannot answer now (here: it does not lead).
const EXIT_UNAVAILABLE: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_blackholed_from_nats_stops_leading_and_completes_the_backup_after_the_heal()
{
    const SET: &str = "coordinator-cut";
    let (stack, proxy) = running_stack_with_coordinator_behind_proxy(TOPOLOGY).await;
    let watch = VerdictWatch::of_coordinator(&stack);
    watch.wait_for("the coordinator leads", Duration::from_secs(30), |r| {
        r.leader
    });
    let (status, values) = ops_json_owned(&stack, &backup_args(SET, SET, false));
    assert!(status.success(), "{values:#?}");
    let first_epoch = values[0]["run"]["owner_epoch"].as_u64().expect("an epoch");
    proxy.blackhole();
    let lost = watch.wait_for("the lease given up", Duration::from_secs(60), |r| !r.leader);
    eprintln!(
        "lease lost {lost:?} into the blackhole, proxy {:?}",
        proxy.stats()
    );
    // Not leading, it refuses new work instead of queueing it.
    let (status, values) = ops_json_owned(&stack, &backup_args("refused", "refused", false));
    assert_eq!(status.code(), Some(EXIT_UNAVAILABLE), "{values:#?}");

    let healed = Instant::now();
    proxy.pass();
    watch.wait_for("the coordinator leads again", AFTER_HEAL, |r| r.leader);
    eprintln!("leading again {:?} after the heal", healed.elapsed());
    let run = loop {
        let (status, values) = ops_json_owned(&stack, &backup_args(SET, SET, true));
        if status.code() == Some(EXIT_UNAVAILABLE) && healed.elapsed() < AFTER_HEAL {
            continue;
        }
        assert!(status.success(), "{values:#?}");
        break final_run(&values).clone();
    };
    eprintln!("backup finished {:?} after the heal", healed.elapsed());
    assert!(
        run["owner_epoch"].as_u64() > Some(first_epoch),
        "finished under a new tenure (started at epoch {first_epoch}): {run:#}"
    );
    assert_backup_complete_once(&stack, &run, &NODES);
    // The refused request left nothing behind: the backup is the only run.
    let (status, values) = ops_json(&stack, &["runs"]);
    assert!(status.success(), "{values:#?}");
    assert_eq!(values.len(), 1, "{values:#?}");
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
