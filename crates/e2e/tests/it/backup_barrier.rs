//! A coordinated backup over the demo network keeps the ordering barrier, and the intervals the
//! agents recorded in the manifests show it: every sequencer dump starts (in sequencer time)
//! after every member's ended, and each app's dump ends at or before its participant's starts.
use std::time::Instant;

use serde_json::Value;

use crate::support::{DEMO_TOPOLOGY, bound, final_run, manifests, ops_json, running_stack};

const SET: &str = "barrier-set";

fn kind(manifest: &Value) -> &str {
    manifest["kind"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_intervals_show_the_barrier() {
    let stack = running_stack(DEMO_TOPOLOGY).await;
    let started = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &[
            "run",
            "backup",
            "--param",
            &format!("backup_set={SET}"),
            "--wait",
        ],
    );
    eprintln!("backup run took {:?}", started.elapsed());
    assert!(status.success(), "backup failed: {values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "succeeded", "{run:#}");

    let manifests = manifests(&stack, SET);
    let nodes: Vec<&str> = manifests.keys().map(String::as_str).collect();
    assert_eq!(
        nodes,
        [
            "app1",
            "mediator1",
            "participant1",
            "participant2",
            "participant3",
            "sequencer1"
        ],
        "one manifest per node"
    );
    let members: Vec<(&String, &Value)> = manifests
        .iter()
        .filter(|(_, m)| matches!(kind(m), "participant" | "mediator"))
        .collect();
    let latest_member = members
        .iter()
        .map(|(node, m)| (bound(m, "sequencer_time_micros", "after"), *node))
        .max()
        .expect("members were dumped");
    for (node, manifest) in manifests.iter().filter(|(_, m)| kind(m) == "sequencer") {
        let before = bound(manifest, "sequencer_time_micros", "before");
        eprintln!(
            "{node} from {before} µs; latest member {} up to {} µs (margin {} µs)",
            latest_member.1,
            latest_member.0,
            before - latest_member.0
        );
        assert!(
            before >= latest_member.0,
            "sequencer {node} starts at {before} µs, before member {} ending at {} µs",
            latest_member.1,
            latest_member.0
        );
    }
    // The workload runs during the backup: the intervals are real readings, not zeros.
    for (node, manifest) in &members {
        assert!(
            bound(manifest, "sequencer_time_micros", "before") > 0,
            "{node}: {manifest:#}"
        );
    }
    for (node, app) in manifests.iter().filter(|(_, m)| kind(m) == "app") {
        let participant = app["participant"]
            .as_str()
            .expect("an app names its participant");
        let after = bound(app, "ledger_offset", "after");
        let participant_before = bound(&manifests[participant], "ledger_offset", "before");
        eprintln!("{node} up to offset {after}; {participant} from offset {participant_before}");
        assert!(
            after <= participant_before,
            "app {node} ends at offset {after}, after {participant} starts at {participant_before}"
        );
    }

    assert_no_sequencer_command_before_members_done(&values, run);

    // The coordinator's own assessment of the set agrees.
    let (status, plan) = ops_json(
        &stack,
        &["plan", "restore", "--param", &format!("backup_set={SET}")],
    );
    assert!(status.success(), "{plan:#?}");
    let warnings: Vec<&str> = plan.iter().filter_map(|v| v["warning"].as_str()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&format!("backup set {SET} is consistent"))),
        "{warnings:?}"
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

/// WatchRun event order (`seq` follows record revisions) and the recorded step times: the
/// sequencer step, whose start puts the sequencer commands in the outbox, starts only after
/// every member's Done.
fn assert_no_sequencer_command_before_members_done(events: &[Value], run: &Value) {
    let sequencers_started = events
        .iter()
        .find(|e| e["kind"] == "step_started" && e["step"] == "sequencers")
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or_else(|| panic!("no step_started of sequencers in {events:#?}"));
    let member_nodes: Vec<String> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "members")
        .expect("a members step")["nodes"]
        .as_array()
        .expect("member nodes")
        .iter()
        .map(|n| n["node"].as_str().expect("node").to_owned())
        .collect();
    assert_eq!(member_nodes.len(), 4, "{run:#}");
    for node in &member_nodes {
        let done = events
            .iter()
            .find(|e| {
                e["kind"] == "node_finished"
                    && e["step"] == "members"
                    && e["node"] == node.as_str()
                    && e["node_result"]["status"] == "done"
            })
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or_else(|| panic!("no Done of member {node} in {events:#?}"));
        assert!(
            done < sequencers_started,
            "member {node} Done (seq {done}) after the sequencer step started (seq {sequencers_started})"
        );
    }
    let step_time = |name: &str, field: &str| {
        run["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["step"] == name))
            .and_then(|s| s[field].as_i64())
            .unwrap_or_else(|| panic!("step {name} has no {field}: {run:#}"))
    };
    assert!(
        step_time("members", "finished_at_unix_ms")
            <= step_time("sequencers", "started_at_unix_ms"),
        "{run:#}"
    );
}
