//! `ignore-events` and its rollback `unignore-events` over real agents and canton-sim
//! participants: refused without the technical-support acknowledgement, gated by a signed
//! approval, then disconnect → ignore (force = false) → reconnect → commitment report, as the
//! participant's own action log and database show. On a participant without repair commands
//! the repair is refused by the node, the run is compensated (the participant reconnects) and
//! the report says how to enable them.
use std::time::{Duration, Instant};

use e2e::observe;
use e2e::stack::Stack;
use serde_json::Value;

use crate::support::{
    ORGANISATION, final_run, method_name, node_calls, node_psql, ops_json, running_stack, step,
};

const TOPOLOGY: &str = r#"
name = "repair"
reconciliation_interval_ms = 500
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
repair_commands_enabled = true
workload = { rate_per_second = 2.0 }
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
"#;

/// The node's physical synchronizer id and the last sequencer counter it processed.
fn cursor(stack: &Stack, node: &str) -> (String, i64) {
    let line = node_psql(
        stack,
        node,
        "SELECT physical_synchronizer_id || '|' || last_counter FROM member_cursor",
    );
    let (id, counter) = line
        .split_once('|')
        .unwrap_or_else(|| panic!("{node} has no member cursor: {line:?}"));
    (id.to_owned(), counter.parse().expect("counter"))
}

fn ignored(stack: &Stack, node: &str) -> i64 {
    node_psql(
        stack,
        node,
        "SELECT count(*) FROM participant_ignored_event",
    )
    .parse()
    .expect("count")
}

/// Waits until `node` processes past `counter` (it is connected and receiving again).
fn wait_until_processing_past(stack: &Stack, node: &str, counter: i64) {
    let started = Instant::now();
    while cursor(stack, node).1 <= counter {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{node} did not process past counter {counter} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{node} processing past {counter} after {:?}",
        started.elapsed()
    );
}

/// The node's repair calls with their outcomes, as its own action log records them.
async fn repair_calls(stack: &Stack, node: &str) -> Vec<(String, String)> {
    node_calls(stack, node)
        .await
        .into_iter()
        .filter(|(method, _)| method.contains("ParticipantRepairService"))
        .map(|(method, outcome)| (method_name(&method).to_owned(), outcome))
        .collect()
}

/// Starts `runbook` on `node`, approves its repair step with the operator's signature and
/// waits for the end; the final run summary.
fn approved_run(stack: &Stack, runbook: &str, node: &str, params: &[String]) -> Value {
    let mut args = vec![runbook, "--node", node];
    for param in params {
        args.extend(["--param", param]);
    }
    let run = tokio::task::block_in_place(|| observe::start_run(stack, ORGANISATION, &args))
        .expect("the run starts and waits for its approval");
    let approve = observe::signed_approval_args_for(
        stack,
        ORGANISATION,
        &run,
        ["approve", "repair"],
        &[node],
    )
    .expect("approval args");
    let (status, values) = ops_json(
        stack,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(status.success(), "signed approval: {values:#?}");
    let (_, values) = ops_json(stack, &["watch", &run]);
    final_run(&values).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ignore_events_runs_gated_and_rolls_back_and_a_refused_repair_leaves_the_node_connected() {
    let started = Instant::now();
    let stack = running_stack(TOPOLOGY).await;
    let (synchronizer, processed) = cursor(&stack, "participant1");
    // Counters far ahead of what the participant has processed: `force = false` allows them.
    let (from, to) = (processed + 100_000, processed + 100_004);
    let params = |extra: &[&str]| -> Vec<String> {
        [
            format!("synchronizer_id={synchronizer}"),
            format!("from={from}"),
            format!("to={to}"),
        ]
        .into_iter()
        .chain(extra.iter().map(|p| (*p).to_owned()))
        .collect()
    };

    let unacknowledged = params(&[]);
    let mut args = vec!["run", "ignore-events", "--node", "participant1"];
    for param in &unacknowledged {
        args.extend(["--param", param]);
    }
    let (status, values) = ops_json(&stack, &args);
    assert!(
        !status.success(),
        "refused without with_technical_support: {values:#?}"
    );
    let (_, runs) = ops_json(&stack, &["runs"]);
    assert!(
        runs.iter().all(|run| run["runbook"] != "ignore-events"),
        "nothing started: {runs:#?}"
    );

    let run = approved_run(
        &stack,
        "ignore-events",
        "participant1",
        &params(&["with_technical_support=true"]),
    );
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(ignored(&stack, "participant1"), 5, "counters {from}..={to}");
    assert_eq!(
        step(&run, "commitments")["status"],
        "done",
        "the commitment report: {run:#}"
    );
    tokio::task::block_in_place(|| {
        wait_until_processing_past(&stack, "participant1", cursor(&stack, "participant1").1);
    });

    let run = approved_run(
        &stack,
        "unignore-events",
        "participant1",
        &params(&["with_technical_support=true"]),
    );
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(ignored(&stack, "participant1"), 0, "rolled back");
    assert_eq!(
        repair_calls(&stack, "participant1").await,
        [
            ("IgnoreEvents".to_owned(), "OK".to_owned()),
            ("UnignoreEvents".to_owned(), "OK".to_owned()),
        ]
    );

    // participant2 has no repair commands: the node refuses, the disconnect is compensated.
    let (synchronizer2, processed2) = cursor(&stack, "participant2");
    let run = approved_run(
        &stack,
        "ignore-events",
        "participant2",
        &[
            format!("synchronizer_id={synchronizer2}"),
            format!("from={}", processed2 + 100_000),
            format!("to={}", processed2 + 100_000),
            "with_technical_support=true".to_owned(),
        ],
    );
    assert_eq!(run["status"], "compensated", "{run:#}");
    let repair = step(&run, "repair").to_string();
    assert!(
        repair.contains("enable-repair-commands"),
        "the report says how to enable repair commands: {repair}"
    );
    assert_eq!(ignored(&stack, "participant2"), 0);
    tokio::task::block_in_place(|| {
        wait_until_processing_past(&stack, "participant2", cursor(&stack, "participant2").1);
    });

    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}
