//! `rehydrate-participant` (DESIGN §6 repairs) over real agents and canton-sim: refused without
//! the technical-support acknowledgement (nothing starts); with it, the sequencer's history of
//! participant1 is checked, a signed approval gates the rehydration, app1 is stopped, the
//! participant disconnected and backed up, its database replaced by the agent's hook
//! (`canton-sim reset-database`), and after the reconnect it replays the never-pruned
//! sequencer's events: the same contracts at the same offsets, the same uid, commitments that
//! match participant2's; app1 starts only once the participant is past its stop point plus
//! the tolerance. A participant whose agent has no hook is refused at the rehydrate step and
//! rolled back (reconnected, untouched). Once the sequencer is pruned, the run fails its
//! first step and nothing is stopped.
use std::time::{Duration, Instant};

use e2e::observe;
use e2e::stack::{Stack, StackOptions};
use serde_json::Value;

use crate::support::{ORGANISATION, final_run, manifests, node_calls, node_psql, ops_json, step};

const TOLERANCE_MS: i64 = 1_500;

fn topology() -> String {
    format!(
        r#"
name = "rehydrate"
reconciliation_interval_ms = 500
ledger_time_record_time_tolerance_ms = {TOLERANCE_MS}
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "{ORGANISATION}"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "{ORGANISATION}"
[[node]]
id = "participant1"
kind = "participant"
organisation = "{ORGANISATION}"
workload = {{ rate_per_second = 5.0 }}
[[node]]
id = "participant2"
kind = "participant"
organisation = "{ORGANISATION}"
workload = {{ rate_per_second = 5.0 }}
[[node]]
id = "app1"
kind = "app"
organisation = "{ORGANISATION}"
participant = "participant1"
"#
    )
}

/// Polls `check` every 100 ms until it holds, failing after `deadline`; logs how long it took.
fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{what}: after {:?}", started.elapsed());
}

fn number(stack: &Stack, node: &str, sql: &str) -> i64 {
    let text = node_psql(stack, node, sql);
    text.parse()
        .unwrap_or_else(|_| panic!("{node}: {sql}: {text:?}"))
}

/// `contract_id|created_offset` of the contracts active at ledger offset `at` by the node's own
/// ledger (created by then and archived later or not at all), sorted.
fn active_at_offset(stack: &Stack, node: &str, at: i64) -> Vec<String> {
    node_psql(
        stack,
        node,
        &format!(
            "SELECT contract_id || '|' || created_offset FROM (
                 SELECT contract_id, created_offset FROM participant_contract
                 WHERE created_offset <= {at}
                 UNION ALL
                 SELECT contract_id, created_offset FROM participant_archived_contract
                 WHERE created_offset <= {at} AND archived_offset > {at}
             ) c ORDER BY contract_id"
        ),
    )
    .lines()
    .filter(|line| !line.is_empty())
    .map(str::to_owned)
    .collect()
}

fn last_counter(stack: &Stack, node: &str) -> i64 {
    number(
        stack,
        node,
        "SELECT coalesce(max(last_counter), -1) FROM member_cursor",
    )
}

fn step_result<'a>(run: &'a Value, id: &str) -> &'a Value {
    &step(run, id)["nodes"][0]["result"]
}

/// Starts a rehydration of `node`, approves it with the operator's signature naming
/// `approvers`, and follows it to the end; the final run summary.
fn approved_rehydration(stack: &Stack, node: &str, approvers: &[&str]) -> Value {
    let run = tokio::task::block_in_place(|| {
        observe::start_run(
            stack,
            ORGANISATION,
            &[
                "rehydrate-participant",
                "--node",
                node,
                "--param",
                "with_technical_support=true",
            ],
        )
    })
    .expect("the run starts");
    // The history is checked before anyone is asked to approve.
    tokio::task::block_in_place(|| {
        wait_until(
            "the run waits for its approval",
            Duration::from_secs(30),
            || {
                let output = crate::support::ops_output(
                    stack,
                    &["--output", "json", "runs", "--status", "awaiting_approval"],
                );
                String::from_utf8_lossy(&output.stdout).contains(&run)
            },
        );
    });
    let approve = observe::signed_approval_args_for(
        stack,
        ORGANISATION,
        &run,
        ["approve", "rehydrate"],
        approvers,
    )
    .expect("approval args");
    let (status, values) = ops_json(
        stack,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(status.success(), "signed approval: {values:#?}");
    let started = Instant::now();
    let (_, values) = ops_json(stack, &["watch", &run]);
    eprintln!(
        "{node}: the run ended {:?} after its approval",
        started.elapsed()
    );
    assert!(!final_run(&values).is_null());
    shown(stack, &run)
}

/// The run with its node results (`canton-ops show`).
fn shown(stack: &Stack, run: &str) -> Value {
    let (status, values) = ops_json(stack, &["show", run]);
    assert!(status.success(), "{values:#?}");
    let run = values.last().cloned().expect("the run");
    for step in run["steps"].as_array().into_iter().flatten() {
        let node = &step["nodes"][0];
        eprintln!(
            "  {:<16} {:<10} attempt {} {}",
            step["step"].as_str().unwrap_or_default(),
            step["status"].as_str().unwrap_or_default(),
            node["attempt"],
            node["detail"].as_str().unwrap_or_default()
        );
    }
    run
}

/// The orchestrator's time (Unix ms) of the first request starting with `prefix`.
fn orchestrated(stack: &Stack, prefix: &str) -> Option<i64> {
    stack
        .orchestrator
        .timed_history()
        .iter()
        .find(|(_, line)| line.starts_with(prefix))
        .map(|(at, _)| *at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rehydrate_participant_replays_the_never_pruned_synchronizer_with_the_app_held_back() {
    let test_started = Instant::now();
    let topology = topology();
    let mut stack = Stack::start(&StackOptions {
        topology: &topology,
        heartbeat_interval: Duration::from_millis(500),
        commands: true,
        nats_login: false,
        database_password: None,
    })
    .await
    .expect("stack");
    // participant2's agent gets no rehydrate hook: its rehydration must be refused.
    let p2_config = stack.agent_config_path("participant2");
    let text = std::fs::read_to_string(&p2_config).expect("participant2's agent config");
    let cut = text.find("\n[rehydrate]").expect("a [rehydrate] section");
    std::fs::write(&p2_config, &text[..cut]).expect("rewriting the config");
    let took = stack
        .start_agents(Duration::from_secs(60))
        .await
        .expect("agents");
    eprintln!("agents published node state in {took:?}");
    let took = stack
        .start_coordinator(ORGANISATION, Duration::from_secs(60))
        .await
        .expect("coordinator");
    eprintln!("coordinator leads after {took:?}");

    let (p1_member, p2_member) = stack
        .with_sims(|sims| {
            let member = |id: &str| sims.node(id).map(|n| n.member()).expect("participant");
            (member("participant1"), member("participant2"))
        })
        .expect("sims");
    let p1_control = stack
        .with_sims(|sims| sims.node("participant1").map(|n| n.control()))
        .expect("sims")
        .expect("participant1");
    let uid_before = p1_control.info().await.expect("info").uid;
    tokio::task::block_in_place(|| {
        wait_until("history worth replaying", Duration::from_secs(30), || {
            let created_by = |member: &str| {
                number(
                    &stack,
                    "participant1",
                    &format!(
                        "SELECT count(*) FROM participant_contract WHERE created_by = '{member}'"
                    ),
                )
            };
            created_by(&p1_member) >= 3
                && created_by(&p2_member) >= 3
                && number(
                    &stack,
                    "participant1",
                    "SELECT count(*) FROM participant_archived_contract",
                ) >= 1
        });
    });

    // Without the acknowledgement nothing starts.
    let (status, _) = ops_json(
        &stack,
        &["run", "rehydrate-participant", "--node", "participant1"],
    );
    assert!(!status.success(), "refused without with_technical_support");
    let refusal = crate::support::ops_output(
        &stack,
        &["run", "rehydrate-participant", "--node", "participant1"],
    );
    assert!(
        String::from_utf8_lossy(&refusal.stderr).contains("with_technical_support"),
        "{refusal:?}"
    );
    let (_, runs) = ops_json(&stack, &["runs"]);
    assert!(
        runs.iter()
            .all(|run| run["runbook"] != "rehydrate-participant"),
        "nothing started: {runs:#?}"
    );
    assert!(stack.orchestrator.history().is_empty(), "nothing stopped");

    // What participant1 holds before: the ACS at its ledger end, by offsets.
    let ledger_end = number(
        &stack,
        "participant1",
        "SELECT ledger_end FROM participant_ledger",
    );
    let acs_before = active_at_offset(&stack, "participant1", ledger_end);
    let counter_before = last_counter(&stack, "participant1");
    assert!(!acs_before.is_empty());
    let run_started_micros = e2e::now_unix_ms() * 1000;

    let run = approved_rehydration(&stack, "participant1", &["participant1", "app1"]);
    assert_eq!(
        run["status"],
        "succeeded",
        "{run:#}\n{}",
        stack.log_tails(30)
    );
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let history = step_result(&run, "history");
    assert_eq!(
        history["sequencer_history"]["complete"], true,
        "{history:#}"
    );
    let rehydrated = step_result(&run, "rehydrate");
    assert_eq!(rehydrated["uid"], uid_before.as_str(), "{rehydrated:#}");
    assert_eq!(rehydrated["backup_set"], run_id.as_str());
    let stop_point = rehydrated["stop_point_micros"]
        .as_i64()
        .expect("a stop point");

    // The recovery point: participant1's dump in a set named after the run.
    let set = manifests(&stack, &run_id);
    assert_eq!(
        set.keys().collect::<Vec<_>>(),
        ["participant1"],
        "backup set {run_id}"
    );
    assert_eq!(set["participant1"]["sha256"], rehydrated["backup_sha256"]);

    // The database was replaced: its action log starts with the reset, and it replayed from
    // counter 0 past where it was.
    let calls = node_calls(&stack, "participant1").await;
    assert_eq!(
        calls.first().map(|(method, _)| method.as_str()),
        Some(canton_sim::redeploy::RESET_METHOD),
        "{calls:?}"
    );
    assert_eq!(
        number(&stack, "participant1", "SELECT count(*) FROM sim_redeploy"),
        1
    );
    assert!(last_counter(&stack, "participant1") > counter_before);
    assert_eq!(
        active_at_offset(&stack, "participant1", ledger_end),
        acs_before,
        "the same contracts at the same offsets, replayed"
    );
    assert_eq!(p1_control.info().await.expect("info").uid, uid_before);

    // app1 was stopped before the database went and started only once participant1 had
    // processed past its stop point plus the tolerance (the sim's sequencer time is this
    // host's clock, like the orchestrator's).
    let stopped_ms = orchestrated(&stack, "stop app1").expect("app1 was stopped");
    let started_ms = orchestrated(&stack, "start app1").expect("app1 was started");
    let step_ms = |id: &str, field: &str| step(&run, id)[field].as_i64().expect(field);
    assert!(stopped_ms <= step_ms("rehydrate", "started_at_unix_ms"));
    assert!(step_ms("caught-up", "finished_at_unix_ms") <= started_ms);
    assert!(
        started_ms * 1000 > stop_point + TOLERANCE_MS * 1000,
        "app1 started at {started_ms} ms, before the stop point {stop_point} µs + tolerance"
    );
    let floor = number(
        &stack,
        "participant1",
        "SELECT max(stop_point_micros) FROM sidecar_restore.dedup_floor",
    );
    assert_eq!(floor, stop_point);
    eprintln!("app1 was stopped for {} ms", started_ms - stopped_ms);

    // Commitments with participant2 match after the replay, and none mismatched since the run
    // started.
    let since = e2e::now_unix_ms() * 1000;
    tokio::task::block_in_place(|| {
        wait_until("matching commitments", Duration::from_secs(30), || {
            let after = observe::commitments_since(&stack, since).expect("commitments");
            let during =
                observe::commitments_since(&stack, run_started_micros).expect("commitments");
            after.iter().all(|c| c.matching_peers >= 1)
                && during.iter().all(|c| c.mismatched_periods == 0)
        });
    });

    // participant2's agent has no hook: refused at the rehydrate step, rolled back.
    let p2_counter = last_counter(&stack, "participant2");
    let run = approved_rehydration(&stack, "participant2", &["participant2"]);
    assert_eq!(run["status"], "compensated", "{run:#}");
    let refused = step(&run, "rehydrate").to_string();
    assert!(
        refused.contains("[rehydrate]") && refused.contains("nothing was changed"),
        "the report says what to configure: {refused}"
    );
    assert!(
        node_calls(&stack, "participant2")
            .await
            .iter()
            .all(|(method, _)| method != canton_sim::redeploy::RESET_METHOD),
        "participant2's database was not touched"
    );
    tokio::task::block_in_place(|| {
        wait_until(
            "participant2 processing again",
            Duration::from_secs(30),
            || last_counter(&stack, "participant2") > p2_counter + 5,
        );
    });

    // Once the sequencer is pruned the first step refuses: nothing is stopped or changed.
    let sequencer = stack
        .with_sims(|sims| sims.node("sequencer1").map(|n| n.control()))
        .expect("sims")
        .expect("sequencer1");
    sequencer
        .prune_sequencer(e2e::now_unix_ms() * 1000)
        .await
        .expect("prune");
    let requests = stack.orchestrator.history().len();
    let (status, values) = ops_json(
        &stack,
        &[
            "run",
            "rehydrate-participant",
            "--node",
            "participant1",
            "--param",
            "with_technical_support=true",
            "--wait",
        ],
    );
    assert!(!status.success());
    let run = shown(
        &stack,
        final_run(&values)["run_id"].as_str().expect("run id"),
    );
    let run = &run;
    assert_eq!(run["status"], "failed", "{run:#}");
    let history = step(run, "history").to_string();
    assert!(
        history.contains("pruned") && history.contains("restore the participant from a backup"),
        "{history}"
    );
    assert_eq!(step(run, "approve")["status"], "pending", "{run:#}");
    assert_eq!(
        stack.orchestrator.history().len(),
        requests,
        "nothing stopped"
    );

    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", test_started.elapsed());
}
