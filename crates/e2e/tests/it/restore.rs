//! The restore runbook end to end: a backup set restored after the sequencer's database was
//! lost brings the network back with matching ACS commitments; the restore needs a signed
//! approval; apps start only past the dedup point.
use std::time::{Duration, Instant};

use e2e::observe::{self, healthy};
use e2e::stack::{Stack, StackOptions};

const ORG: &str = "operator";
const TOLERANCE_MS: i64 = 6_000;

fn topology() -> String {
    format!(
        r#"
name = "restore"
reconciliation_interval_ms = 1000
ledger_time_record_time_tolerance_ms = {TOLERANCE_MS}
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "{ORG}"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "{ORG}"
[[node]]
id = "participant1"
kind = "participant"
organisation = "{ORG}"
workload = {{ rate_per_second = 5.0 }}
[[node]]
id = "participant2"
kind = "participant"
organisation = "{ORG}"
workload = {{ rate_per_second = 5.0 }}
[[node]]
id = "app1"
kind = "app"
organisation = "{ORG}"
participant = "participant1"
"#
    )
}

fn ops(stack: &Stack, args: &[&str]) -> std::process::Output {
    stack
        .ops(ORG)
        .expect("coordinator")
        .args(args)
        .output()
        .expect("canton-ops runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_losing_the_sequencer_waits_for_the_dedup_point_before_apps() {
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
    stack
        .start_agents(Duration::from_secs(60))
        .await
        .expect("agents");
    stack
        .start_coordinator(ORG, Duration::from_secs(60))
        .await
        .expect("coordinator");
    let backup = ops(
        &stack,
        &["run", "backup", "--param", "backup_set=bs1", "--wait"],
    );
    assert!(backup.status.success(), "backup: {backup:?}");

    // The disaster: the sequencer dies and its database is lost.
    let sequencer_db = stack
        .with_sims(|sims| {
            let node = sims.node_mut("sequencer1").expect("sequencer1");
            node.kill();
            node.database_name().to_owned()
        })
        .expect("sims");
    stack
        .postgres
        .psql(
            "postgres",
            &format!("DROP DATABASE \"{sequencer_db}\" WITH (FORCE)"),
        )
        .expect("drop");
    stack
        .postgres
        .create_database(&sequencer_db)
        .expect("create");
    let disaster_ms = e2e::now_unix_ms();

    let run = observe::start_run(&stack, ORG, &["restore", "--param", "backup_set=bs1"])
        .expect("restore starts and waits for approval");
    let nodes = stack.node_ids().expect("nodes").join(",");
    let unsigned = ops(&stack, &["approve", &run, "approve", "--nodes", &nodes]);
    assert_eq!(unsigned.status.code(), Some(4), "{unsigned:?}");
    let refusal = String::from_utf8_lossy(&unsigned.stderr);
    assert!(
        refusal.contains("--operator-key") && refusal.contains("restore"),
        "{refusal}"
    );

    let approve = observe::signed_approval_args(&stack, ORG, &run, "approve", "restore")
        .expect("approval args");
    let signed = ops(
        &stack,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(signed.status.success(), "signed approval: {signed:?}");
    let started = Instant::now();
    let watched = ops(&stack, &["watch", &run]);
    assert!(
        watched.status.success(),
        "restore run: {watched:?}\nlogs:{}",
        stack.log_tails(40)
    );
    eprintln!(
        "restore run finished {:?} after its approval",
        started.elapsed()
    );

    // Apps started only once every participant had processed past its stop point plus the
    // tolerance. The sim's sequencer time is this host's clock, so the orchestrator's wall
    // clock of the app start compares with it.
    let floors: Vec<i64> = ["participant1", "participant2"]
        .iter()
        .map(|id| {
            let db = stack
                .with_sims(|sims| sims.node(id).map(|n| n.database_name().to_owned()))
                .expect("sims")
                .expect("participant");
            let floor = stack
                .postgres
                .psql(
                    &db,
                    "SELECT max(stop_point_micros) FROM sidecar_restore.dedup_floor",
                )
                .expect("floor");
            floor.trim().parse::<i64>().expect("a recorded floor")
        })
        .collect();
    let history = stack.orchestrator.timed_history();
    let app_started_ms = history
        .iter()
        .find(|(_, line)| line.starts_with("start app1"))
        .map(|(at, _)| *at)
        .expect("app1 was started");
    for floor in &floors {
        assert!(
            *floor / 1000 >= disaster_ms - 5_000,
            "the floor is the stop point, not the older backup: {floor}"
        );
        assert!(
            app_started_ms * 1000 > floor + TOLERANCE_MS * 1000,
            "app1 started at {app_started_ms} ms, before floor {floor} µs + tolerance"
        );
    }
    let app_stop_ms = history
        .iter()
        .find(|(_, line)| line.starts_with("stop app1"))
        .map(|(at, _)| *at)
        .expect("app1 was stopped");
    assert!(app_stop_ms < app_started_ms);

    // The network is back: healthy, processing, and the participants agree on their ACS.
    let (_, recovered, took) = observe::heartbeats_until(&stack, Duration::from_secs(60), healthy)
        .await
        .expect("heartbeats");
    assert!(recovered, "every node healthy again");
    eprintln!("healthy {took:?} after the run");
    let since = e2e::now_unix_ms() * 1000;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = observe::commitments_since(&stack, since).expect("commitments");
        if rows
            .iter()
            .all(|r| r.matching_peers >= 1 && r.mismatched_periods == 0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "commitments did not match: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A set without the app: its restore would leave app1 ahead of participant1.
    let without_app = ops(
        &stack,
        &[
            "run",
            "backup",
            "--param",
            "backup_set=bs2",
            "--node",
            "sequencer1",
            "--node",
            "mediator1",
            "--node",
            "participant1",
            "--node",
            "participant2",
            "--wait",
        ],
    );
    assert!(
        without_app.status.success(),
        "backup without the app: {without_app:?}"
    );
    let plan = ops(&stack, &["plan", "restore", "--param", "backup_set=bs2"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("app app1 is not in set bs2") && text.contains("reset the app"),
        "{text}"
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
