//! `bench backup-wall-time`: the coordinated `backup` runbook against what an operator scripts
//! today, on the same sim network and PostgreSQL server, in the same run. Four sim nodes
//! (sequencer, mediator, two participants), each database filled to about the configured size;
//! per repetition, interleaved so noise hits every variant:
//!
//! - the runbook: `canton-ops run backup --wait` (coordinator, agents, signed commands, the
//!   ordering barrier, hashing, fsync and manifests included);
//! - a parallel shell script: the three members' `pg_dump`s in the background, `wait`, then the
//!   sequencer's (the ordering an operator must keep by hand);
//! - a sequential shell script, one `pg_dump` after the other, which also gives each node's
//!   dump time alone (the slowest of them is the floor of any ordering-preserving backup, plus
//!   the sequencer after it).
//!
//! Every script uses the agent's own `pg_dump` flags (`--format=custom`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use e2e::stack::Stack;
use serde_json::Value;

use crate::measure::{self, Summary};
use crate::sim_stack::measure_on_stack;

/// Sequencer, mediator and two participants of one organisation; no workload, so every
/// repetition dumps the same data.
const TOPOLOGY: &str = r#"
name = "benchbackup"
synchronizer = "global"

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
"#;
const ORGANISATION: &str = "operator";
const SEQUENCER: &str = "sequencer1";

#[derive(Clone, Debug)]
pub struct Options {
    /// Counted repetitions (one more warms caches first).
    pub reps: usize,
    /// Approximate size each node's database is filled to.
    pub database_mb: u64,
}

impl Options {
    pub fn full() -> Self {
        Self {
            reps: 5,
            database_mb: 200,
        }
    }

    pub fn smoke() -> Self {
        Self {
            reps: 1,
            database_mb: 4,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BackupWallResult {
    pub database_bytes: Vec<(String, u64)>,
    pub runbook_ms: Summary,
    pub parallel_ms: Summary,
    pub sequential_ms: Summary,
    /// The slowest node's dump alone, per repetition.
    pub slowest_alone_ms: Summary,
    /// Slowest member alone plus the sequencer alone: the ordering barrier's floor.
    pub barrier_floor_ms: Summary,
}

pub fn run(options: &Options) -> anyhow::Result<BackupWallResult> {
    measure::heading(
        "backup-wall-time",
        "backup runbook on 4 sim nodes vs parallel and sequential pg_dump scripts",
    );
    let outcome = measure_on_stack(TOPOLOGY, ORGANISATION, false, |stack| {
        measure_on(stack, options)
    });
    let result = outcome?;
    print(&result);
    Ok(result)
}

/// One node's database as the scripts reach it.
struct Database {
    node: String,
    name: String,
    conninfo: String,
}

fn measure_on(stack: &Stack, options: &Options) -> anyhow::Result<BackupWallResult> {
    let databases = stack.with_sims(|sims| {
        sims.nodes()
            .iter()
            .map(|node| Database {
                node: node.id().to_owned(),
                name: node.database_name().to_owned(),
                conninfo: node.database().to_owned(),
            })
            .collect::<Vec<_>>()
    })?;
    let filling = Instant::now();
    for database in &databases {
        fill(stack, database, options.database_mb)?;
    }
    let database_bytes = databases
        .iter()
        .map(|d| {
            let bytes = stack
                .postgres
                .psql(&d.name, &format!("SELECT pg_database_size('{}')", d.name))?
                .trim()
                .parse::<u64>()
                .context("pg_database_size")?;
            anyhow::Ok((d.node.clone(), bytes))
        })
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "  filled {} databases in {:.1} s: {}",
        databases.len(),
        filling.elapsed().as_secs_f64(),
        database_bytes
            .iter()
            .map(|(node, bytes)| format!("{node} {:.1} MB", *bytes as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let scratch = tempfile::Builder::new()
        .prefix("cs-bench-backup-")
        .tempdir()?;
    let pg_dump = testkit::pg_bin("pg_dump")?;
    let parallel = write_script(scratch.path(), "parallel.sh", &pg_dump, &databases, true)?;
    let sequential = write_script(scratch.path(), "sequential.sh", &pg_dump, &databases, false)?;
    println!(
        "  scripts: {} and {}",
        parallel.display(),
        sequential.display()
    );

    let mut samples = Samples::default();
    for rep in 0..=options.reps {
        let runbook = backup_runbook(stack, rep)?;
        let (parallel_took, _) = run_script(&parallel)?;
        let (sequential_took, per_node) = run_sequential(&sequential)?;
        println!(
            "  rep {rep}{}: runbook {:.0} ms, parallel script {:.0} ms, sequential script {:.0} ms ({})",
            if rep == 0 {
                " (warm-up, not counted)"
            } else {
                ""
            },
            ms(runbook),
            ms(parallel_took),
            ms(sequential_took),
            per_node
                .iter()
                .map(|(node, took)| format!("{node} {:.0}", ms(*took)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if rep > 0 {
            samples.add(runbook, parallel_took, sequential_took, &per_node);
        }
        std::fs::remove_dir_all(scratch.path().join("dumps")).ok();
    }
    samples.result(database_bytes)
}

/// Adds one table of incompressible-looking rows until the database is about `mb` large.
fn fill(stack: &Stack, database: &Database, mb: u64) -> anyhow::Result<()> {
    // Two md5 strings and a number per row: about 100 bytes on disk with the tuple header.
    let rows = mb * 1_000_000 / 100;
    stack
        .postgres
        .psql(
            &database.name,
            &format!(
                "CREATE TABLE IF NOT EXISTS bench_filler AS \
                 SELECT g AS id, md5(g::text) AS a, md5((g::bigint * 7919)::text) AS b \
                 FROM generate_series(1, {rows}) AS g"
            ),
        )
        .with_context(|| format!("filling {}'s database", database.node))?;
    Ok(())
}

fn write_script(
    dir: &Path,
    name: &str,
    pg_dump: &Path,
    databases: &[Database],
    parallel: bool,
) -> anyhow::Result<PathBuf> {
    let dump = |d: &Database| {
        format!(
            "{} --format=custom --no-password --file=\"$out/{}.dump\" --dbname='{}'",
            pg_dump.display(),
            d.node,
            d.conninfo
        )
    };
    let mut script = format!(
        "#!/usr/bin/env bash\nset -euo pipefail\nout={}/dumps\nmkdir -p \"$out\"\n",
        dir.display()
    );
    let (members, sequencers): (Vec<&Database>, Vec<&Database>) =
        databases.iter().partition(|d| d.node != SEQUENCER);
    if parallel {
        // Members first, all at once; the sequencer only after every member finished.
        for (index, member) in members.iter().enumerate() {
            script.push_str(&format!("{} &\npid{index}=$!\n", dump(member)));
        }
        for index in 0..members.len() {
            script.push_str(&format!("wait \"$pid{index}\"\n"));
        }
    } else {
        // Each dump is timed on its own (milliseconds on stdout) so one run also gives every
        // node's time alone.
        for member in &members {
            script.push_str(&timed(&member.node, &dump(member)));
        }
    }
    for sequencer in sequencers {
        if parallel {
            script.push_str(&format!("{}\n", dump(sequencer)));
        } else {
            script.push_str(&timed(&sequencer.node, &dump(sequencer)));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn timed(node: &str, command: &str) -> String {
    format!(
        "start=$(date +%s%N)\n{command}\necho \"{node} $(( ($(date +%s%N) - start) / 1000 ))\"\n"
    )
}

/// Runs `script` with bash to completion; its wall time and standard output.
fn run_script(script: &Path) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((took, String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The sequential script's wall time and each node's dump time (microseconds it printed).
fn run_sequential(script: &Path) -> anyhow::Result<(Duration, Vec<(String, Duration)>)> {
    let (took, stdout) = run_script(script)?;
    let per_node = stdout
        .lines()
        .filter_map(|line| {
            let (node, micros) = line.split_once(' ')?;
            Some((
                node.to_owned(),
                Duration::from_micros(micros.trim().parse().ok()?),
            ))
        })
        .collect::<Vec<_>>();
    Ok((took, per_node))
}

/// `canton-ops run backup --wait`, from the command's start to its exit after RUN_FINISHED.
fn backup_runbook(stack: &Stack, rep: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = stack
        .ops(ORGANISATION)?
        .args(["--output", "json", "run", "backup", "--param"])
        .arg(format!("backup_set=bench-{rep}"))
        .arg("--wait")
        .output()?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The final summary rides on the RUN_FINISHED event.
    let status = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .rev()
        .find(|value| value["kind"] == "run_finished")
        .and_then(|value| value["run"]["status"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if !output.status.success() || status != "succeeded" {
        bail!(
            "backup run {rep} ended {status:?} ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(took)
}

#[derive(Default)]
struct Samples {
    runbook: Vec<Duration>,
    parallel: Vec<Duration>,
    sequential: Vec<Duration>,
    slowest_alone: Vec<Duration>,
    barrier_floor: Vec<Duration>,
}

impl Samples {
    fn add(
        &mut self,
        runbook: Duration,
        parallel: Duration,
        sequential: Duration,
        per_node: &[(String, Duration)],
    ) {
        self.runbook.push(runbook);
        self.parallel.push(parallel);
        self.sequential.push(sequential);
        let alone = |sequencer: bool| {
            per_node
                .iter()
                .filter(|(node, _)| (node == SEQUENCER) == sequencer)
                .map(|(_, took)| *took)
                .max()
                .unwrap_or_default()
        };
        self.slowest_alone.push(alone(false).max(alone(true)));
        self.barrier_floor.push(alone(false) + alone(true));
    }

    fn result(self, database_bytes: Vec<(String, u64)>) -> anyhow::Result<BackupWallResult> {
        let summary = |samples: &[Duration], what: &str| {
            Summary::of_durations(samples).with_context(|| format!("no {what} samples"))
        };
        Ok(BackupWallResult {
            database_bytes,
            runbook_ms: summary(&self.runbook, "runbook")?,
            parallel_ms: summary(&self.parallel, "parallel")?,
            sequential_ms: summary(&self.sequential, "sequential")?,
            slowest_alone_ms: summary(&self.slowest_alone, "slowest node")?,
            barrier_floor_ms: summary(&self.barrier_floor, "barrier floor")?,
        })
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn print(result: &BackupWallResult) {
    println!(
        "{}",
        measure::line("backup runbook", &result.runbook_ms, "ms")
    );
    println!(
        "{}",
        measure::line(
            "parallel script (members &, wait, sequencer)",
            &result.parallel_ms,
            "ms"
        )
    );
    println!(
        "{}",
        measure::line("sequential script", &result.sequential_ms, "ms")
    );
    println!(
        "{}",
        measure::line("slowest node alone", &result.slowest_alone_ms, "ms")
    );
    println!(
        "{}",
        measure::line(
            "slowest member alone + sequencer alone",
            &result.barrier_floor_ms,
            "ms"
        )
    );
    println!(
        "{}",
        measure::ratio_line(
            "runbook / (slowest member + sequencer)",
            result.runbook_ms.median,
            result.barrier_floor_ms.median,
            Some(1.05),
        )
    );
    println!(
        "{}",
        measure::ratio_line(
            "runbook / parallel script",
            result.runbook_ms.median,
            result.parallel_ms.median,
            None,
        )
    );
    println!(
        "{}",
        measure::ratio_line(
            "runbook / sequential script",
            result.runbook_ms.median,
            result.sequential_ms.median,
            None,
        )
    );
}
