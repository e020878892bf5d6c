//! The disaster-recovery timestamp on a network of four SV participants (organisation
//! `operator`) and a validator of another organisation: one SV participant's ACS diverges at
//! sequencer time T. An all-party quorum proposes a timestamp before T minus the margin and the
//! evidence shows the diverging participant's mismatches from T; the default ⅔ quorum agrees
//! later without it and names it outside the quorum. With two of the four agents frozen the
//! proposal fails with a quorum error naming both.
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{ORGANISATION, running_stack, wait_for};

const TOPOLOGY: &str = r#"
name = "drts"
synchronizer = "global"
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
workload = { rate_per_second = 2.0 }
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
workload = { rate_per_second = 2.0 }
[[node]]
id = "participant3"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant4"
kind = "participant"
organisation = "operator"
[[node]]
id = "validator1"
kind = "participant"
organisation = "validator"
"#;

const SV_PARTICIPANTS: [&str; 4] = [
    "participant1",
    "participant2",
    "participant3",
    "participant4",
];
const DIVERGING: &str = "participant4";
const MARGIN_MICROS: i64 = 1_000_000;

/// `canton-ops --output json dr timestamp <args>`: exit code, the JSON answer, stderr.
fn dr_timestamp(stack: &e2e::stack::Stack, args: &[&str]) -> (Option<i32>, Value, String) {
    let started = Instant::now();
    let output = tokio::task::block_in_place(|| {
        stack
            .ops(ORGANISATION)
            .expect("canton-ops command")
            .args(["--output", "json", "dr", "timestamp"])
            .args(args)
            .output()
            .expect("running canton-ops")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    eprintln!(
        "canton-ops dr timestamp {} -> {} in {:?}; stderr: {}",
        args.join(" "),
        output.status,
        started.elapsed(),
        stderr.trim()
    );
    let value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    (output.status.code(), value, stderr)
}

fn query_i64(stack: &e2e::stack::Stack, node: &str, sql: &str) -> i64 {
    let database = stack
        .with_sims(|sims| sims.node(node).map(|n| n.database_name().to_owned()))
        .expect("sims")
        .expect("node exists");
    let answer = stack.postgres.psql(&database, sql).expect("psql");
    answer.trim().parse().unwrap_or(0)
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().or_else(|| item["node"].as_str()))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dr_timestamp_names_the_diverging_participant_and_needs_a_quorum_of_answers() {
    let stack = running_stack(TOPOLOGY).await;
    let members: Vec<String> = stack
        .with_sims(|sims| {
            sims.nodes()
                .iter()
                .filter(|n| n.kind() == canton_sim::NodeKind::Participant)
                .map(|n| n.member())
                .collect()
        })
        .expect("sims");
    let matched_peers = |node: &str, after: i64| {
        query_i64(
            &stack,
            node,
            &format!(
                "SELECT count(DISTINCT counter_participant) FROM acs_commitment \
                 WHERE own = received AND period_end_micros > {after}"
            ),
        )
    };
    tokio::task::block_in_place(|| {
        wait_for(
            "every SV participant matched all peers",
            Duration::from_secs(20),
            || {
                SV_PARTICIPANTS
                    .iter()
                    .all(|node| matched_peers(node, 0) >= 4)
            },
        )
    });

    // A contract only participant4 holds, shared with every participant: its commitments to
    // everyone differ from now on.
    let stakeholders = members
        .iter()
        .map(|m| format!("'{m}'"))
        .collect::<Vec<_>>()
        .join(",");
    let database = stack
        .with_sims(|sims| sims.node(DIVERGING).map(|n| n.database_name().to_owned()))
        .expect("sims")
        .expect("node exists");
    stack
        .postgres
        .psql(
            &database,
            &format!(
                "INSERT INTO participant_contract \
                 (contract_id, stakeholders, created_by, created_ts_micros, created_offset) \
                 VALUES ('diverged-by-test', ARRAY[{stakeholders}], 'test', 0, 0)"
            ),
        )
        .expect("diverging participant4");
    let diverged_at = query_i64(
        &stack,
        DIVERGING,
        "SELECT max(last_ts_micros) FROM member_cursor",
    );
    eprintln!("participant4 diverged at sequencer time {diverged_at} µs");
    tokio::task::block_in_place(|| {
        wait_for(
            "the others see participant4's mismatches and agree among themselves after T",
            Duration::from_secs(20),
            || {
                SV_PARTICIPANTS[..3].iter().all(|node| {
                    query_i64(
                        &stack,
                        node,
                        &format!(
                            "SELECT count(*) FROM acs_commitment WHERE own <> received \
                             AND period_end_micros > {diverged_at}"
                        ),
                    ) >= 2
                        && matched_peers(node, diverged_at) >= 2
                })
            },
        )
    });

    let (code, everyone, _) = dr_timestamp(
        &stack,
        &[
            "--param",
            "quorum=4",
            "--param",
            "margin=1s",
            "--param",
            "deadline=5s",
        ],
    );
    assert_eq!(code, Some(0), "{everyone:#}");
    eprintln!("all-party proposal: {everyone}");
    let agreed = everyone["agreed_period_end_micros"]
        .as_i64()
        .expect("period end");
    let timestamp = everyone["timestamp_micros"].as_i64().expect("timestamp");
    assert!(
        agreed < diverged_at,
        "agreed {agreed} is before T {diverged_at}"
    );
    assert_eq!(timestamp, agreed - MARGIN_MICROS);
    assert!(timestamp <= diverged_at - MARGIN_MICROS);
    assert_eq!(
        names(&everyone["listed"]),
        SV_PARTICIPANTS,
        "the other organisation's validator is not listed"
    );
    let diverging_rows: Vec<&Value> = everyone["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter(|row| row["node"] == DIVERGING)
        .collect();
    assert_eq!(diverging_rows.len(), 3, "{everyone:#}");
    for row in diverging_rows {
        let last = row["last_agreed_micros"].as_i64().expect("last agreed");
        let mismatch = row["mismatch_from_micros"]
            .as_i64()
            .expect("a mismatch after");
        assert!(last < diverged_at && mismatch > last, "{row}");
    }

    let (code, two_thirds, _) =
        dr_timestamp(&stack, &["--param", "margin=1s", "--param", "deadline=5s"]);
    assert_eq!(code, Some(0), "{two_thirds:#}");
    eprintln!("two-thirds proposal: {two_thirds}");
    assert!(two_thirds["agreed_period_end_micros"].as_i64().unwrap_or(0) > diverged_at);
    assert_eq!(
        names(&two_thirds["agreeing"]),
        ["participant1", "participant2", "participant3"]
    );
    assert_eq!(names(&two_thirds["outside"]), [DIVERGING]);
    let outside_last = two_thirds["outside"][0]["last_agreed_with_quorum_micros"]
        .as_i64()
        .expect("participant4 agreed once");
    assert!(outside_last < diverged_at);

    for node in ["participant3", "participant4"] {
        stack.agents[node]
            .process
            .signal(Signal::SIGSTOP)
            .expect("freezing an agent");
    }
    let started = Instant::now();
    let (code, _, stderr) =
        dr_timestamp(&stack, &["--param", "margin=1s", "--param", "deadline=3s"]);
    eprintln!(
        "with two agents frozen the answer came after {:?}",
        started.elapsed()
    );
    assert_eq!(code, Some(4), "a quorum error is a refusal: {stderr}");
    assert!(
        stderr.contains("no quorum")
            && stderr.contains("2 of 4")
            && stderr.contains("participant3")
            && stderr.contains("participant4"),
        "{stderr}"
    );
    for node in ["participant3", "participant4"] {
        stack.agents[node]
            .process
            .signal(Signal::SIGCONT)
            .expect("thawing an agent");
    }
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
