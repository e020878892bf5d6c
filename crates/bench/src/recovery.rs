//! `bench recovery-time`: the wall time of a recovery runbook (`restore`, or `network-dr`
//! with `--runbook network-dr`, see [`crate::network_dr`]), without the operator's own waits,
//! against the sum of its steps' minimum times measured in the same run.
//!
//! A step's minimum is what its slowest node spent on the step's own action: the agents time
//! each action against the node (`canton_agent_command_duration_seconds`, read from every
//! agent's `/metrics` before and after the run), which is what an operator typing the same
//! commands with every node of a step in parallel would wait for at the least. The sum over the
//! steps, in the runbook's order, is the floor of the procedure, with one wait no operator can
//! skip: apps start only once sequencer time passed the participants' stop point by the
//! ledger-time-record-time tolerance, so the `dedup-safe` step's minimum is at least what is
//! left of the tolerance after the minimum times of the steps from the stop on. The rest of the
//! runbook's time is coordination (signed commands, the barrier, acks, the record written
//! before each step, the check's one-second polling).
//!
//! The network: sequencer, mediator, two participants and an app in front of participant1. One
//! backup is taken first; every repetition restores it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use e2e::observe;
use e2e::prometheus_text;
use e2e::stack::Stack;
use serde_json::Value;

use crate::measure::{self, Summary};
use crate::sim_stack::measure_on_stack;

/// The tolerance is set low so the wait for it is visible without dominating the run.
const TOPOLOGY: &str = r#"
name = "benchrecovery"
synchronizer = "global"
ledger_time_record_time_tolerance_ms = 5000

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
id = "app1"
kind = "app"
organisation = "operator"
participant = "participant1"
"#;
const ORGANISATION: &str = "operator";
const BACKUP_SET: &str = "bench-recovery";
/// The topology's `ledger_time_record_time_tolerance_ms`.
const TOLERANCE: Duration = Duration::from_secs(5);
/// The check that waits for the tolerance past the participants' stop point.
const DEDUP_STEP: &str = "dedup-safe";
/// The step after which the participants process nothing until the restore.
const STOP_STEP: &str = "stop-members";
const COMMAND_DURATION_SUM: &str = "canton_agent_command_duration_seconds_sum";

/// The recovery runbooks the program measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Procedure {
    Restore,
    NetworkDr,
}

impl std::str::FromStr for Procedure {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "restore" => Ok(Self::Restore),
            "network-dr" => Ok(Self::NetworkDr),
            other => bail!("--runbook {other:?}: expected restore or network-dr"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Counted repetitions (one more warms caches first).
    pub reps: usize,
    pub procedure: Procedure,
}

impl Options {
    pub fn full() -> Self {
        Self {
            reps: 5,
            procedure: Procedure::Restore,
        }
    }

    pub fn smoke() -> Self {
        Self {
            reps: 1,
            procedure: Procedure::Restore,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RecoveryResult {
    /// The run's own time: from its start (or the operator's approval) to its end, without
    /// the operator's waits.
    pub runbook_ms: Summary,
    /// The sum over steps of the slowest node's action time (the dedup step at least the rest
    /// of the tolerance).
    pub floor_ms: Summary,
    /// Each action step's slowest node, per repetition: (step, milliseconds).
    pub steps: Vec<(String, Summary)>,
    /// What the operator did while the run waited, not counted in `runbook_ms`.
    pub excluded: Option<(String, Summary)>,
}

/// One step of the plan an agent acts in.
pub(crate) struct PlannedStep {
    pub step: String,
    pub action: String,
    pub nodes: Vec<String>,
}

/// One measured run of a recovery runbook.
pub(crate) struct Rep {
    /// The run's own time.
    pub took: Duration,
    /// Each step's wall time in the run record.
    pub walls: BTreeMap<String, Duration>,
    /// The operator's part while the run waited.
    pub excluded: Option<Duration>,
}

pub fn run(options: &Options) -> anyhow::Result<RecoveryResult> {
    if options.procedure == Procedure::NetworkDr {
        return crate::network_dr::run(options);
    }
    measure::heading(
        "recovery-time",
        "restore runbook vs the sum of its steps' minimum times",
    );
    // The agents stop and start nodes through this hook; without it every stop fails at once.
    testkit::binary_path("sim-lifecycle").context(
        "the lifecycle hook sim-lifecycle is not built beside this program: cargo build --release -p e2e --bin sim-lifecycle",
    )?;
    let outcome = measure_on_stack(TOPOLOGY, ORGANISATION, true, |stack| {
        measure_on(stack, options)
    });
    let result = outcome?;
    print("restore runbook (approval to end)", &result);
    Ok(result)
}

fn measure_on(stack: &Stack, options: &Options) -> anyhow::Result<RecoveryResult> {
    let backup = ops_json(
        stack,
        &[
            "run",
            "backup",
            "--param",
            &format!("backup_set={BACKUP_SET}"),
            "--wait",
        ],
    )?;
    ensure_succeeded(&backup, "backup")?;
    let plan = plan(
        stack,
        &["restore", "--param", &format!("backup_set={BACKUP_SET}")],
    )?;
    measure_reps(
        stack,
        &plan,
        options.reps,
        |_| restore_runbook(stack),
        with_tolerance_wait,
    )
}

/// Runs `once` for a warm-up and `reps` counted repetitions, each measured against the sum
/// of the slowest node's action time per planned step (raised by `floor_of` where a step has
/// a wait of its own).
pub(crate) fn measure_reps(
    stack: &Stack,
    plan: &[PlannedStep],
    reps: usize,
    mut once: impl FnMut(usize) -> anyhow::Result<Rep>,
    floor_of: impl Fn(Vec<(String, Duration)>) -> Vec<(String, Duration)>,
) -> anyhow::Result<RecoveryResult> {
    println!(
        "  plan: {}",
        plan.iter()
            .map(|s| format!("{} ({} × {})", s.step, s.action, s.nodes.len()))
            .collect::<Vec<_>>()
            .join(" → ")
    );

    let mut runbook = Vec::new();
    let mut floor = Vec::new();
    let mut excluded = Vec::new();
    let mut per_step: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for rep in 0..=reps {
        let before = action_times(stack)?;
        let Rep {
            took,
            walls,
            excluded: operator,
        } = once(rep)?;
        let after = action_times(stack)?;
        let slowest = floor_of(slowest_per_step(plan, &before, &after)?);
        let sum: Duration = slowest.iter().map(|(_, took)| *took).sum();
        println!(
            "  rep {rep}{}: runbook {:.0} ms{}, floor {:.0} ms (step: slowest action/step wall ms: {})",
            if rep == 0 {
                " (warm-up, not counted)"
            } else {
                ""
            },
            ms(took),
            operator.map_or(String::new(), |wait| format!(
                " (+ {:.0} ms operator's part, not counted)",
                ms(wait)
            )),
            ms(sum),
            slowest
                .iter()
                .map(|(step, took)| format!(
                    "{step} {:.0}/{:.0}",
                    ms(*took),
                    walls.get(step).map_or(f64::NAN, |wall| ms(*wall))
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if rep > 0 {
            runbook.push(took);
            floor.push(sum);
            excluded.extend(operator);
            for (step, took) in slowest {
                per_step.entry(step).or_default().push(took);
            }
        }
    }
    let summary = |samples: &[Duration], what: &str| {
        Summary::of_durations(samples).with_context(|| format!("no {what} samples"))
    };
    let steps = plan
        .iter()
        .filter_map(|s| {
            let samples = per_step.get(&s.step)?;
            Some((s.step.clone(), Summary::of_durations(samples)?))
        })
        .collect();
    Ok(RecoveryResult {
        runbook_ms: summary(&runbook, "runbook")?,
        floor_ms: summary(&floor, "floor")?,
        steps,
        excluded: Summary::of_durations(&excluded)
            .map(|wait| ("the operator's part while the run waited".to_owned(), wait)),
    })
}

/// `canton-ops --output json <args>`: every JSON line it printed; an error if it failed.
pub(crate) fn ops_json(stack: &Stack, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let output = stack
        .ops(ORGANISATION)?
        .args(["--output", "json"])
        .args(args)
        .output()
        .context("running canton-ops")?;
    if !output.status.success() {
        bail!(
            "canton-ops {} exited {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

/// The status the run's RUN_FINISHED event carried must be `succeeded`.
pub(crate) fn ensure_succeeded(events: &[Value], what: &str) -> anyhow::Result<()> {
    let status = events
        .iter()
        .rev()
        .find(|event| event["kind"] == "run_finished")
        .and_then(|event| event["run"]["status"].as_str())
        .unwrap_or("unknown");
    if status != "succeeded" {
        bail!("the {what} run ended {status}");
    }
    Ok(())
}

/// The steps of `canton-ops plan <runbook args>` that send an action to agents.
pub(crate) fn plan(stack: &Stack, runbook: &[&str]) -> anyhow::Result<Vec<PlannedStep>> {
    let args: Vec<&str> = std::iter::once("plan")
        .chain(runbook.iter().copied())
        .collect();
    let lines = ops_json(stack, &args)?;
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let steps: Vec<PlannedStep> = lines
        .iter()
        .filter(|line| line["action"].as_str().is_some_and(|a| !a.is_empty()))
        .map(|line| PlannedStep {
            step: line["step"].as_str().unwrap_or_default().to_owned(),
            action: line["action"].as_str().unwrap_or_default().to_owned(),
            nodes: strings(&line["nodes"]),
        })
        .filter(|step| !step.nodes.is_empty())
        .collect();
    if steps.is_empty() {
        bail!("the {} plan has no action steps: {lines:?}", runbook[0]);
    }
    Ok(steps)
}

/// Starts a restore, approves it with the operator's signature and waits for its end: the
/// time from the approval to the end, and each step's wall time in the run record.
fn restore_runbook(stack: &Stack) -> anyhow::Result<Rep> {
    let run = observe::start_run(
        stack,
        ORGANISATION,
        &["restore", "--param", &format!("backup_set={BACKUP_SET}")],
    )?;
    let approve = observe::signed_approval_args(stack, ORGANISATION, &run, "approve", "restore")?;
    let approve: Vec<&str> = approve.iter().map(String::as_str).collect();
    let started = Instant::now();
    ops_json(stack, &approve)?;
    let events = ops_json(stack, &["watch", &run])?;
    let took = started.elapsed();
    ensure_succeeded(&events, &format!("restore {run}"))?;
    Ok(Rep {
        took,
        walls: step_walls(&events),
        excluded: None,
    })
}

/// Each step's time from its start to its end, from the run summary RUN_FINISHED carried.
pub(crate) fn step_walls(events: &[Value]) -> BTreeMap<String, Duration> {
    let steps = events
        .iter()
        .rev()
        .find(|event| event["kind"] == "run_finished")
        .and_then(|event| event["run"]["steps"].as_array().cloned())
        .unwrap_or_default();
    steps
        .iter()
        .filter_map(|step| {
            let started = step["started_at_unix_ms"].as_i64()?;
            let finished = step["finished_at_unix_ms"].as_i64()?;
            let millis = u64::try_from(finished - started).ok()?;
            Some((
                step["step"].as_str()?.to_owned(),
                Duration::from_millis(millis),
            ))
        })
        .collect()
}

/// Seconds every agent has spent per action so far: (node, action) → seconds.
fn action_times(stack: &Stack) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let mut times = BTreeMap::new();
    for (node, agent) in &stack.agents {
        let url = agent
            .metrics_url
            .as_deref()
            .with_context(|| format!("agent {node} serves no metrics"))?;
        let (status, body) = prometheus_text::scrape(url)?;
        if status != 200 {
            bail!("{url} answered {status}");
        }
        let exposition = prometheus_text::parse(&body)
            .map_err(|e| anyhow::anyhow!("{url} is not Prometheus text: {e}"))?;
        let sums = exposition
            .samples
            .iter()
            .filter(|sample| sample.name == COMMAND_DURATION_SUM);
        for sample in sums {
            if let Some(action) = sample.labels.get("action") {
                *times.entry((node.clone(), action.clone())).or_insert(0.0) += sample.value;
            }
        }
    }
    Ok(times)
}

/// Each planned step with its slowest node's time on the step's action during the run.
fn slowest_per_step(
    plan: &[PlannedStep],
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> anyhow::Result<Vec<(String, Duration)>> {
    plan.iter()
        .map(|step| {
            let mut slowest = 0.0_f64;
            for node in &step.nodes {
                let key = (node.clone(), step.action.clone());
                let spent = after.get(&key).copied().unwrap_or(0.0)
                    - before.get(&key).copied().unwrap_or(0.0);
                if spent <= 0.0 {
                    bail!(
                        "agent {node} recorded no {} action for step {}",
                        step.action,
                        step.step
                    );
                }
                slowest = slowest.max(spent);
            }
            Ok((step.step.clone(), Duration::from_secs_f64(slowest)))
        })
        .collect()
}

/// Raises the dedup step's minimum to what is left of the tolerance after the steps from the
/// participants' stop up to the dedup step took their minimum times.
fn with_tolerance_wait(mut slowest: Vec<(String, Duration)>) -> Vec<(String, Duration)> {
    let from_stop = slowest.iter().position(|(step, _)| step == STOP_STEP);
    let dedup = slowest.iter().position(|(step, _)| step == DEDUP_STEP);
    if let (Some(from_stop), Some(dedup)) = (from_stop, dedup) {
        let elapsed: Duration = slowest[from_stop + 1..dedup]
            .iter()
            .map(|(_, took)| *took)
            .sum();
        let left = TOLERANCE.saturating_sub(elapsed);
        slowest[dedup].1 = slowest[dedup].1.max(left);
    }
    slowest
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub(crate) fn print(runbook: &str, result: &RecoveryResult) {
    println!("{}", measure::line(runbook, &result.runbook_ms, "ms"));
    if let Some((what, summary)) = &result.excluded {
        println!("{}", measure::line(what, summary, "ms"));
    }
    println!(
        "{}",
        measure::line("sum of the steps' minimum times", &result.floor_ms, "ms")
    );
    for (step, summary) in &result.steps {
        println!(
            "{}",
            measure::line(&format!("  step {step}"), summary, "ms")
        );
    }
    println!(
        "{}",
        measure::ratio_line(
            "runbook / sum of the steps' minimum times",
            result.runbook_ms.median,
            result.floor_ms.median,
            None,
        )
    );
}
