//! `bench recovery-time --runbook network-dr`: the wall time of the `network-dr` runbook on a
//! one-organisation Splice network whose synchronizer is lost, against the sum of its steps'
//! minimum times measured in the same run (see [`crate::recovery`] for how a minimum is read
//! off the agents).
//!
//! A repetition: the workload runs; the sequencer and mediator stop (the incident); the run
//! starts at a recovery timestamp one second back, disconnects the participants and has every
//! SV app write its migration dump; at the approval the operator deploys a new synchronizer
//! (a sequencer and mediator on new, empty databases) and approves; the run redeploys every
//! participant through its app, reconnects it and reads the commitments. The run's own time is
//! start → approval wait plus approval → end; the operator's deploy is printed beside it and
//! not counted. Each repetition moves the network one migration id on.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use e2e::observe;
use e2e::stack::Stack;

use crate::measure;
use crate::recovery::{
    Options, RecoveryResult, Rep, ensure_succeeded, measure_reps, ops_json, plan, print, step_walls,
};
use crate::sim_stack::measure_on_stack;

const TOPOLOGY: &str = r#"
name = "benchnetdr"
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
workload = { rate_per_second = 4.0 }

[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
workload = { rate_per_second = 2.0 }

[[node]]
id = "sv1-app"
kind = "app"
organisation = "operator"
participant = "participant1"

[[node]]
id = "sv2-app"
kind = "app"
organisation = "operator"
participant = "participant2"
"#;
const ORGANISATION: &str = "operator";
const APPS: [&str; 2] = ["sv1-app", "sv2-app"];
/// The synchronizer's nodes, lost and deployed anew each repetition.
const SYNCHRONIZER: [&str; 2] = ["sequencer1", "mediator1"];
const APPROVAL_STEP: &str = "new-synchronizer";
const GATED_STEP: &str = "redeploy";
/// How far back of the incident the recovery timestamp is.
const MARGIN: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(120);

pub fn run(options: &Options) -> anyhow::Result<RecoveryResult> {
    measure::heading(
        "recovery-time --runbook network-dr",
        "network-dr runbook vs the sum of its steps' minimum times",
    );
    let outcome = measure_on_stack(TOPOLOGY, ORGANISATION, true, |stack| {
        let args = runbook_args(SystemTime::now() - MARGIN, 1);
        let planned = plan(stack, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        measure_reps(
            stack,
            &planned,
            options.reps,
            |rep| recover_once(stack, rep as i64 + 1),
            |slowest| slowest,
        )
    });
    let result = outcome?;
    print("network-dr runbook (its own time)", &result);
    Ok(result)
}

fn runbook_args(timestamp: SystemTime, migration_id: i64) -> Vec<String> {
    vec![
        "network-dr".to_owned(),
        "--param".to_owned(),
        format!("timestamp={}", humantime::format_rfc3339_micros(timestamp)),
        "--param".to_owned(),
        format!("migration_id={migration_id}"),
    ]
}

/// Loses the synchronizer, recovers the network to `migration_id` and reports the run's own
/// time, the operator's part apart.
fn recover_once(stack: &Stack, migration_id: i64) -> anyhow::Result<Rep> {
    wait_for_new_contracts(stack)?;
    on_synchronizer(stack, |node| Ok(node.stop()?))?;
    let args = runbook_args(SystemTime::now() - MARGIN, migration_id);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let run = observe::start_run(stack, ORGANISATION, &args)?;
    wait_until("the run waiting for the new synchronizer", || {
        awaits_approval(stack, &run)
    })?;
    let before_approval = started.elapsed();

    let deploying = Instant::now();
    on_synchronizer(stack, |node| Ok(node.redeploy_fresh().map(drop)?))?;
    let approve = observe::signed_approval_args_for(
        stack,
        ORGANISATION,
        &run,
        [APPROVAL_STEP, GATED_STEP],
        &APPS,
    )?;
    let operator = deploying.elapsed();
    let approved = Instant::now();
    ops_json(
        stack,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    let events = ops_json(stack, &["watch", &run])?;
    let took = before_approval + approved.elapsed();
    ensure_succeeded(&events, &format!("network-dr {run}"))?;
    Ok(Rep {
        took,
        walls: step_walls(&events),
        excluded: Some(operator),
    })
}

/// Applies `act` to each node of [`SYNCHRONIZER`].
fn on_synchronizer(
    stack: &Stack,
    mut act: impl FnMut(&mut canton_sim::network::SimNode) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    stack.with_sims(|sims| {
        SYNCHRONIZER.iter().try_for_each(|node| {
            act(sims
                .node_mut(node)
                .with_context(|| format!("no sim node {node}"))?)
        })
    })?
}

/// The run of the organisation waits for the operator at the approval step.
fn awaits_approval(stack: &Stack, run: &str) -> anyhow::Result<bool> {
    let runs = ops_json(stack, &["runs", "--status", "awaiting_approval"])?;
    Ok(runs
        .iter()
        .any(|r| r["run_id"] == run && r["current_step"] == APPROVAL_STEP))
}

/// participant1 committed contracts on the current synchronizer after the margin: the
/// recovery timestamp then lies on it, with data before it.
fn wait_for_new_contracts(stack: &Stack) -> anyhow::Result<()> {
    let since_micros = e2e::now_unix_ms() * 1000 + MARGIN.as_micros() as i64;
    let database = stack
        .with_sims(|sims| {
            sims.node("participant1")
                .map(|node| node.database_name().to_owned())
        })?
        .context("no sim node participant1")?;
    let sql = format!(
        "SELECT count(*) FROM participant_contract WHERE created_ts_micros > {since_micros}"
    );
    wait_until("participant1's workload past the margin", || {
        let count = stack.postgres.psql(&database, &sql)?;
        Ok(count.trim().parse::<i64>().unwrap_or(0) > 0)
    })
}

/// Waits for `holds`; an error after [`DEADLINE`]. A failed read counts as not yet (the
/// coordinator or a database may be between states).
fn wait_until(what: &str, mut holds: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let took = testkit::wait_until(what, DEADLINE, || holds().unwrap_or(false))?;
    eprintln!("  {what} after {took:?}");
    Ok(())
}
