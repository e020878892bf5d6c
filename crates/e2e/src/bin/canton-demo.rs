//! The README's demo: a simulated Canton network on real PostgreSQL and NATS with an agent
//! beside every node, shown live, then stopped. Ends by itself and leaves nothing running.
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::stack::{Stack, StackOptions};
use futures::StreamExt;
use prost::Message;
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
    show_heartbeats(&stack, Duration::from_secs(3)).await?;

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

/// Prints each node's latest heartbeat as the coordinator's registry would see it.
async fn show_heartbeats(stack: &Stack, window: Duration) -> anyhow::Result<()> {
    let mut subscription = stack
        .network
        .client
        .subscribe(stack.names().heartbeats())
        .await?;
    let mut latest = std::collections::BTreeMap::new();
    let until = Instant::now() + window;
    while let Ok(Some(message)) = tokio::time::timeout(
        until.saturating_duration_since(Instant::now()),
        subscription.next(),
    )
    .await
    {
        let heartbeat =
            pb::Heartbeat::decode(message.payload.as_ref()).context("decoding a heartbeat")?;
        latest.insert(heartbeat.node.clone(), heartbeat);
    }
    println!(
        "  {:<14} {:<10} {:>5} {:>11} {:>10}",
        "node", "condition", "seq", "ledger end", "probes ok"
    );
    for (node, heartbeat) in &latest {
        let condition = pb::NodeCondition::try_from(heartbeat.condition)
            .map(|c| {
                c.as_str_name()
                    .trim_start_matches("NODE_CONDITION_")
                    .to_lowercase()
            })
            .unwrap_or_default();
        let ok = heartbeat
            .probes
            .iter()
            .filter(|p| p.status == pb::ProbeStatus::Ok as i32)
            .count();
        println!(
            "  {:<14} {:<10} {:>5} {:>11} {:>7}/{}",
            node,
            condition,
            heartbeat.seq,
            heartbeat.progress.as_ref().map_or(0, |p| p.ledger_end),
            ok,
            heartbeat.probes.len()
        );
    }
    Ok(())
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
