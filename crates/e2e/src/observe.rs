//! What the demo shows and the e2e tests assert on, read the way an operator would: heartbeats
//! from the bus, runs through `canton-ops`, ACS commitments from each participant's database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use prost::Message;
use proto_sidecar as pb;

use crate::stack::Stack;

/// Each node's latest heartbeat.
pub type Latest = BTreeMap<String, pb::Heartbeat>;

/// Collects heartbeats until `done` holds for the latest one of every node (or `deadline`
/// passes). Returns them, whether `done` held, and after how long.
pub async fn heartbeats_until(
    stack: &Stack,
    deadline: Duration,
    done: impl Fn(&pb::Heartbeat) -> bool,
) -> anyhow::Result<(Latest, bool, Duration)> {
    let nodes = stack.node_ids()?;
    let mut subscription = stack
        .network
        .client
        .subscribe(stack.names().heartbeats())
        .await?;
    let started = Instant::now();
    let mut latest = Latest::new();
    let holds = |latest: &Latest| nodes.iter().all(|n| latest.get(n).is_some_and(&done));
    while !holds(&latest) {
        let left = deadline.saturating_sub(started.elapsed());
        let Ok(Some(message)) = tokio::time::timeout(left, subscription.next()).await else {
            break;
        };
        let heartbeat =
            pb::Heartbeat::decode(message.payload.as_ref()).context("decoding a heartbeat")?;
        latest.insert(heartbeat.node.clone(), heartbeat);
    }
    let held = holds(&latest);
    Ok((latest, held, started.elapsed()))
}

pub fn condition(heartbeat: &pb::Heartbeat) -> pb::NodeCondition {
    pb::NodeCondition::try_from(heartbeat.condition).unwrap_or_default()
}

pub fn healthy(heartbeat: &pb::Heartbeat) -> bool {
    condition(heartbeat) == pb::NodeCondition::Healthy
}

/// Starts a run with `canton-ops run <args>` (no waiting) and returns its id.
pub fn start_run(stack: &Stack, organisation: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = stack
        .ops(organisation)?
        .args(["--output", "json", "run"])
        .args(args)
        .output()
        .context("running canton-ops")?;
    anyhow::ensure!(
        output.status.success(),
        "canton-ops run {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|value| find_run_id(&value))
        .with_context(|| format!("canton-ops printed no run id: {text}"))
}

fn find_run_id(value: &serde_json::Value) -> Option<String> {
    if let Some(id) = value.get("run_id").and_then(|v| v.as_str()) {
        return Some(id.to_owned());
    }
    value.as_object()?.values().find_map(find_run_id)
}

/// One participant's ACS commitments over periods that ended after some time.
#[derive(Clone, Debug)]
pub struct Commitments {
    pub database: String,
    /// Counter-participants with at least one matching period.
    pub matching_peers: usize,
    pub mismatched_periods: usize,
}

/// Each participant's commitments for periods ending after `since_micros` (sequencer time),
/// read from its own database.
pub fn commitments_since(stack: &Stack, since_micros: i64) -> anyhow::Result<Vec<Commitments>> {
    let databases: Vec<String> = stack.with_sims(|sims| {
        sims.nodes()
            .iter()
            .filter(|n| n.kind() == canton_sim::NodeKind::Participant)
            .map(|n| n.database_name().to_owned())
            .collect()
    })?;
    let query = format!(
        "SELECT count(DISTINCT counter_participant) FILTER (WHERE own = received), \
                count(*) FILTER (WHERE own <> received) \
         FROM acs_commitment WHERE period_end_micros > {since_micros} AND received IS NOT NULL"
    );
    databases
        .into_iter()
        .map(|database| {
            let answer = stack.postgres.psql(&database, &query)?;
            let mut fields = answer
                .trim()
                .split('|')
                .map(|f| f.parse::<usize>().unwrap_or(0));
            Ok(Commitments {
                database,
                matching_peers: fields.next().unwrap_or(0),
                mismatched_periods: fields.next().unwrap_or(0),
            })
        })
        .collect()
}

/// The `canton-ops approve` arguments that sign the approval of `for_step` with the
/// organisation's operator key, naming every node of the network.
pub fn signed_approval_args(
    stack: &Stack,
    organisation: &str,
    run: &str,
    approval_step: &str,
    for_step: &str,
) -> anyhow::Result<Vec<String>> {
    let every = stack.node_ids()?;
    let nodes: Vec<&str> = every.iter().map(String::as_str).collect();
    signed_approval_args_for(stack, organisation, run, [approval_step, for_step], &nodes)
}

/// [`signed_approval_args`] for an approval step of `nodes` only; `steps` = (approval step,
/// the destructive step it gates).
pub fn signed_approval_args_for(
    stack: &Stack,
    organisation: &str,
    run: &str,
    [approval_step, for_step]: [&str; 2],
    nodes: &[&str],
) -> anyhow::Result<Vec<String>> {
    let operator = stack
        .keys
        .operators
        .get(organisation)
        .with_context(|| format!("no operator key for {organisation}"))?;
    Ok([
        "approve",
        run,
        approval_step,
        "--nodes",
        &nodes.join(","),
        "--operator-key",
        &stack
            .keys
            .seed_path(operator.key_id())
            .display()
            .to_string(),
        "--key-id",
        operator.key_id(),
        "--for-step",
        for_step,
        "--network",
        stack.names().network().as_str(),
        "--organisation",
        organisation,
    ]
    .map(str::to_owned)
    .to_vec())
}
