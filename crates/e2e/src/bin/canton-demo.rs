//! The README's demo: a simulated Canton network on real PostgreSQL and NATS with an agent
//! beside every node, shown live, then stopped. Ends by itself and leaves nothing running.
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::observe::{self, healthy};
use e2e::stack::{Stack, StackOptions};
use proto_sidecar as pb;

const TOPOLOGY: &str = include_str!("../../demo/network.toml");
/// The backup set the demo writes and restores.
const BACKUP_SET: &str = "demo-set-1";
/// The organisation that runs every node of the demo network.
const ORGANISATION: &str = "operator";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _telemetry = sidecar_telemetry::init(sidecar_telemetry::LogFormat::Text);
    match demo().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\ndemo failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn demo() -> anyhow::Result<()> {
    let start = Instant::now();

    step("infrastructure and canton network (canton-sim: one process and database per node)");
    let mut stack = Stack::start(&StackOptions {
        topology: TOPOLOGY,
        heartbeat_interval: Duration::from_millis(500),
        commands: true,
        nats_login: false,
        database_password: None,
    })
    .await?;
    println!(
        "  nats-server   {} (pid {})",
        stack.nats.url(),
        stack.nats.pid().unwrap_or_default()
    );
    println!(
        "  postgres      {} (pid {})",
        stack.postgres.url("postgres"),
        stack.postgres.pid().unwrap_or_default()
    );
    let names = stack.names().clone();
    println!(
        "  bus           streams {} {} {}",
        names.command_stream(),
        names.ack_stream(),
        names.audit_stream()
    );
    println!(
        "  {:<14} {:<12} {:<10} {:<22} database",
        "node", "kind", "org", "admin"
    );
    for node in stack.with_sims(|sims| sims.endpoints().nodes)? {
        let admin = node
            .admin
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".to_owned());
        println!(
            "  {:<14} {:<12} {:<10} {:<22} {}",
            node.id,
            format!("{:?}", node.kind).to_lowercase(),
            node.organisation,
            admin,
            node.database_name
        );
    }

    step("agents (one canton-agent beside every node)");
    let took = stack.start_agents(Duration::from_secs(60)).await?;
    println!(
        "  {} agents published node state in {:.1}s",
        stack.agents.len(),
        took.as_secs_f64()
    );
    let (all_healthy, took) = heartbeats_until(&stack, Duration::from_secs(30), healthy).await?;
    anyhow::ensure!(all_healthy, "the network did not become healthy");
    println!("  every node healthy after {:.1}s", took.as_secs_f64());

    step("coordinator (leader by lease; fences every agent of its organisation)");
    let took = stack
        .start_coordinator(ORGANISATION, Duration::from_secs(60))
        .await?;
    println!("  leader after {:.1}s", took.as_secs_f64());
    ops(&stack, &["nodes"])?;

    step("synchronized disconnect and reconnect of every participant");
    ops(&stack, &["run", "disconnect", "--wait"])?;
    ops(&stack, &["run", "reconnect", "--wait"])?;

    step("coordinated backup: apps, then participants and mediator, barrier, then the sequencer");
    let backup_started = Instant::now();
    ops(
        &stack,
        &[
            "run",
            "backup",
            "--param",
            &format!("backup_set={BACKUP_SET}"),
            "--wait",
        ],
    )?;
    println!(
        "  backup set {BACKUP_SET} written in {:.1}s under {}",
        backup_started.elapsed().as_secs_f64(),
        e2e::stack::backup_root(&stack).join(BACKUP_SET).display()
    );
    step("the set's ordering rule, checked by the coordinator (dry run of its restore)");
    ops(
        &stack,
        &[
            "plan",
            "restore",
            "--param",
            &format!("backup_set={BACKUP_SET}"),
        ],
    )?;

    step("disaster: the sequencer crashes and its database is lost");
    let sequencer_db = stack.with_sims(|sims| {
        let node = sims.node_mut("sequencer1").context("no sequencer1")?;
        node.kill();
        anyhow::Ok(node.database_name().to_owned())
    })??;
    stack.postgres.psql(
        "postgres",
        &format!("DROP DATABASE \"{sequencer_db}\" WITH (FORCE)"),
    )?;
    stack.postgres.create_database(&sequencer_db)?;
    println!("  sequencer1 killed; database {sequencer_db} dropped and created empty");
    let (noticed, took) = heartbeats_until(&stack, Duration::from_secs(20), |h| {
        h.node == "app1" || h.node == "mediator1" || !healthy(h)
    })
    .await?;
    anyhow::ensure!(noticed, "the agents did not report the lost sequencer");
    println!(
        "  the agents report the loss after {:.1}s; participants cannot reach their synchronizer",
        took.as_secs_f64()
    );

    step("restore of the whole set, approved and signed by the operator");
    let restore_started = Instant::now();
    let restore_args = ["restore", "--param", &format!("backup_set={BACKUP_SET}")];
    println!("  $ canton-ops run {}", restore_args.join(" "));
    let run = observe::start_run(&stack, ORGANISATION, &restore_args)?;
    println!("  started run {run}");
    let approve = observe::signed_approval_args(&stack, ORGANISATION, &run, "approve", "restore")?;
    ops(
        &stack,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    ops(&stack, &["watch", &run])?;
    println!(
        "  restored and reconnected in {:.1}s",
        restore_started.elapsed().as_secs_f64()
    );

    step("the network after the restore");
    let (recovered, took) = heartbeats_until(&stack, Duration::from_secs(60), |h| {
        healthy(h)
            && (h.kind != pb::NodeKind::Participant as i32
                || h.progress.as_ref().is_some_and(|p| p.ledger_end > 0))
    })
    .await?;
    anyhow::ensure!(recovered, "the network did not recover after the restore");
    println!(
        "  every node healthy and every participant processing again {:.1}s after the restore",
        took.as_secs_f64()
    );
    show_commitments(&stack, restore_started, Duration::from_secs(30)).await?;

    step("shutdown");
    let unclean = stack.shutdown().await?;
    if !unclean.is_empty() {
        anyhow::bail!("did not stop cleanly: {}", unclean.join("; "));
    }
    println!(
        "demo finished in {:.1}s; nothing left running",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until every participant has matching ACS commitments with every peer for a period
/// that ended after `since`, and prints them.
async fn show_commitments(stack: &Stack, since: Instant, deadline: Duration) -> anyhow::Result<()> {
    let since_micros = (e2e::now_unix_ms() - i64::try_from(since.elapsed().as_millis())?) * 1000;
    let peers = stack
        .with_sims(|sims| {
            sims.nodes()
                .iter()
                .filter(|n| n.kind() == canton_sim::NodeKind::Participant)
                .count()
        })?
        .saturating_sub(1);
    let started = Instant::now();
    loop {
        let rows = observe::commitments_since(stack, since_micros)?;
        let agreed = rows.iter().all(|row| row.matching_peers >= peers);
        if agreed || started.elapsed() > deadline {
            for row in &rows {
                println!(
                    "  {:<20} commitments since the restore: match with {}/{peers} peers, {} mismatched periods",
                    row.database, row.matching_peers, row.mismatched_periods
                );
            }
            anyhow::ensure!(
                agreed,
                "participants did not agree on their ACS within {deadline:?}"
            );
            println!(
                "  commitments agree ({:.1}s after the restore finished)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for `done` on every node's heartbeat and prints the latest ones.
async fn heartbeats_until(
    stack: &Stack,
    deadline: Duration,
    done: impl Fn(&pb::Heartbeat) -> bool,
) -> anyhow::Result<(bool, Duration)> {
    let (latest, held, took) = observe::heartbeats_until(stack, deadline, done).await?;
    print_heartbeats(&latest);
    Ok((held, took))
}

fn print_heartbeats(latest: &observe::Latest) {
    println!(
        "  {:<14} {:<10} {:>5} {:>11} {:>6}  why",
        "node", "condition", "seq", "ledger end", "probes"
    );
    for (node, heartbeat) in latest {
        let ok = heartbeat
            .probes
            .iter()
            .filter(|p| p.status == pb::ProbeStatus::Ok as i32)
            .count();
        let why = heartbeat
            .reasons
            .first()
            .map(|r| format!("{} {}: {}", r.probe, r.kind, r.detail))
            .unwrap_or_default();
        let why: String = why.chars().take(70).collect();
        println!(
            "  {:<14} {:<10} {:>5} {:>11} {:>4}/{}  {why}",
            node,
            observe::condition(heartbeat)
                .as_str_name()
                .trim_start_matches("NODE_CONDITION_")
                .to_lowercase(),
            heartbeat.seq,
            heartbeat.progress.as_ref().map_or(0, |p| p.ledger_end),
            ok,
            heartbeat.probes.len()
        );
    }
}

/// Runs `canton-ops <args>` against the coordinator, its output shown as it comes.
fn ops(stack: &Stack, args: &[&str]) -> anyhow::Result<()> {
    println!("  $ canton-ops {}", args.join(" "));
    let status = stack
        .ops(ORGANISATION)?
        .args(args)
        .status()
        .context("running canton-ops")?;
    anyhow::ensure!(
        status.success(),
        "canton-ops {} failed: {status}",
        args.join(" ")
    );
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}
