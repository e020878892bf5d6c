//! Smoke versions of every benchmark program (tiny sizes, seconds each), in the extras tier so
//! the programs cannot rot. They assert that each program measures what it claims: runs that
//! succeed, answers from every agent, no dropped heartbeats, Down verdicts for killed agents only.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn extras_barrier_smoke_runs_the_disconnect_runbook_and_the_raw_baseline() {
    let results = bench::barrier::run(&bench::barrier::Options::smoke()).unwrap();
    assert_eq!(results.len(), 1);
    let result = &results[0];
    assert_eq!(result.run_ms.count, 2);
    assert!(result.run_ms.min > 0.0 && result.baseline_ms.min > 0.0);
    // Every command and ack crossed the coordinator's own connection.
    assert!(result.coordinator_bytes_per_node > 100.0, "{result:?}");
    assert!(result.coordinator_cpu_ms_per_run > 0.0, "{result:?}");
}

#[test]
fn extras_heartbeat_ingest_smoke_keeps_every_node_alive_without_drops() {
    let results = bench::heartbeat::run(&bench::heartbeat::Options::smoke()).unwrap();
    let result = &results[0];
    assert_eq!(result.slow_consumer_events, 0);
    // Alive verdicts stand even while an overloaded machine makes the detector distrust its
    // own late ticks (`suspended`), so every node must be Alive either way.
    assert_eq!(result.alive, result.rate, "{result:?}");
    assert!(
        result.received_per_s > result.rate as f64 * 0.8,
        "{result:?}"
    );
}

#[test]
fn extras_failure_detection_smoke_sees_the_killed_agent_down_and_no_other() {
    let result = bench::failure::run(&bench::failure::Options::smoke()).unwrap();
    assert!(result.kills >= 1);
    assert_eq!(result.false_downs, 0);
    let timeout_ms = result.failure_timeout.as_secs_f64() * 1e3;
    // Down means a full failure timeout of silence, and not much more.
    assert!(
        result.from_last_heartbeat_ms.min >= timeout_ms * 0.95,
        "{result:?}"
    );
    assert!(result.from_kill_ms.max <= timeout_ms * 2.0, "{result:?}");
}

#[test]
fn extras_engine_smoke_prints_transitions_per_second_and_the_divan_table() {
    let output = Command::new(testkit::binary_path("bench").unwrap())
        .args(["engine", "--smoke"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("transitions/s"), "{stdout}");
    assert!(stdout.contains("backup_run_transitions"), "{stdout}");
    assert!(stdout.contains("transition / clone"), "{stdout}");
}

#[test]
fn extras_agent_footprint_smoke_measures_a_running_agent() {
    let result = bench::footprint::run(&bench::footprint::Options::smoke()).unwrap();
    assert!(result.rss_mb.min > 1.0, "{result:?}");
    assert!(result.cpu_percent >= 0.0);
}

#[test]
fn extras_backup_wall_time_smoke_runs_the_runbook_and_both_scripts() {
    let result = bench::backup_wall::run(&bench::backup_wall::Options::smoke()).unwrap();
    assert_eq!(result.database_bytes.len(), 4, "{result:?}");
    assert!(
        result
            .database_bytes
            .iter()
            .all(|(_, bytes)| *bytes > 4_000_000),
        "every database was filled: {result:?}"
    );
    assert_eq!(result.runbook_ms.count, 1);
    // The sequential script dumps the same four databases one after the other, so it cannot be
    // faster than its slowest dump alone.
    assert!(
        result.sequential_ms.min >= result.slowest_alone_ms.min,
        "{result:?}"
    );
    assert!(result.parallel_ms.min > 0.0, "{result:?}");
}

#[test]
fn extras_recovery_time_smoke_restores_and_measures_every_action_step() {
    let result = bench::recovery::run(&bench::recovery::Options::smoke()).unwrap();
    assert_eq!(result.runbook_ms.count, 1);
    let steps: Vec<&str> = result.steps.iter().map(|(step, _)| step.as_str()).collect();
    for step in ["stop-members", "restore", "start-members", "reconnect"] {
        assert!(steps.contains(&step), "{step} measured: {result:?}");
    }
    // The runbook runs every one of those actions, one step after the other, so it cannot end
    // sooner than their sum.
    assert!(result.runbook_ms.min >= result.floor_ms.min, "{result:?}");
}

#[test]
fn extras_recovery_time_network_dr_smoke_recovers_twice_and_measures_every_action_step() {
    let options = bench::recovery::Options {
        procedure: bench::recovery::Procedure::NetworkDr,
        ..bench::recovery::Options::smoke()
    };
    let result = bench::recovery::run(&options).unwrap();
    assert_eq!(result.runbook_ms.count, 1);
    let steps: Vec<&str> = result.steps.iter().map(|(step, _)| step.as_str()).collect();
    for step in ["disconnect", "dump-svs", "redeploy", "reconnect"] {
        assert!(steps.contains(&step), "{step} measured: {result:?}");
    }
    let (_, operator) = result
        .excluded
        .as_ref()
        .expect("the operator's deploy time");
    assert!(operator.min > 0.0, "{result:?}");
    assert!(result.runbook_ms.min >= result.floor_ms.min, "{result:?}");
}

#[test]
fn extras_consumers_smoke_binds_every_agent_consumer_and_measures_the_server() {
    let results = bench::consumers::run(&bench::consumers::Options::smoke()).unwrap();
    let result = &results[0];
    assert_eq!(result.count, 50);
    assert_eq!(result.first_thousand_ms.count, 50);
    assert!(result.publish_ms.min > 0.0, "{result:?}");
    assert!(
        result.rss_after_mb >= result.rss_before_mb * 0.5 && result.rss_after_mb > 1.0,
        "{result:?}"
    );
}

#[test]
fn extras_coordinator_alone_smoke_answers_every_node_at_both_sizes() {
    let results = bench::light::run(&bench::light::Options::smoke()).unwrap();
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(result.run_ms.count, 1, "{result:?}");
        assert!(result.coordinator_cpu_ms_per_run > 0.0, "{result:?}");
        assert!(result.coordinator_bytes_per_node > 100.0, "{result:?}");
    }
}
