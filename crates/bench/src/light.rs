//! The coordinator side alone at N agents: the `disconnect` runbook through the real
//! coordinator (API, claims, driver, CAS, signed commands, ack verification), answered by light
//! responders in a helper process: one task per node on its own durable command consumer that
//! decodes the command and publishes a signed Done ack, without the agent's signature check,
//! journal or fsync. What the coordinator spends per node is then its own, not the agents'.
//!
//! Baseline in the same run: the same program at a tenth of the size; the coordinator's CPU per
//! node at N against at N / 10 says whether its work grows linearly.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message as _;
use proto_sidecar as pb;
use proto_sidecar::action::Kind;
use sidecar_bus::{Bucket, Names, NetworkId, NodeId};

use crate::barrier::{leading_coordinator, metered_run};
use crate::consumers::create_consumer;
use crate::fixture;
use crate::measure::{self, Summary};
use crate::servers::{self, Servers, Topology};

#[derive(Clone, Debug)]
pub struct Options {
    /// The sizes, smallest first; the first is the baseline of the others.
    pub sizes: Vec<usize>,
    pub reps: usize,
}

impl Options {
    pub fn full() -> Self {
        Self {
            sizes: vec![1_000, 10_000],
            reps: 3,
        }
    }

    pub fn smoke() -> Self {
        Self {
            sizes: vec![3, 30],
            reps: 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LightResult {
    pub agents: usize,
    pub consumers_ready_ms: f64,
    pub takeover_ms: f64,
    pub run_ms: Summary,
    pub step_ms: Summary,
    pub coordinator_cpu_ms_per_run: f64,
    pub coordinator_bytes_per_node: f64,
}

pub fn run(options: &Options) -> anyhow::Result<Vec<LightResult>> {
    measure::heading(
        "coordinator-alone",
        "disconnect runbook through the real coordinator, answered by light responders",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results: Vec<LightResult> = Vec::new();
    for &agents in &options.sizes {
        let servers = Servers::start(Topology::R1)?;
        let result = one_size(&runtime, &servers, agents, options.reps)?;
        print_size(&result, results.first());
        results.push(result);
    }
    Ok(results)
}

fn one_size(
    runtime: &tokio::runtime::Runtime,
    servers: &Servers,
    agents: usize,
    reps: usize,
) -> anyhow::Result<LightResult> {
    let url = servers.urls().first().context("no server")?.clone();
    let network_id = NetworkId::new(testkit::unique_id("benchlight"))?;
    let network = runtime.block_on(servers::ensure_network(&url, &network_id, 1))?;
    runtime.block_on(write_inventory(&network, agents))?;
    let dir = tempfile::Builder::new()
        .prefix("cs-bench-light-")
        .tempdir()?;
    let mut host = servers::spawn_helper(
        "light-responders",
        &[
            "light-responders".to_owned(),
            url.clone(),
            network_id.as_str().to_owned(),
            agents.to_string(),
        ],
        dir.path(),
    )?;
    let consumers_ready_ms = servers::wait_ready(&mut host, Duration::from_secs(900), "ms")?;
    let config = fixture::coordinator_config(&network_id, &url, 1, agents)?;
    let outcome = runtime.block_on(async {
        let (coordinator, takeover_ms, mut ops) = leading_coordinator(config, agents).await?;
        let statistics = coordinator.shared.network.client.statistics();
        let (mut runs, mut steps, mut cpu, mut bytes) = (Vec::new(), Vec::new(), 0.0, 0u64);
        for rep in 0..=reps {
            let run = metered_run(&statistics, &mut ops, rep, agents).await?;
            // Rep 0 warms caches and connections; it is not counted.
            if rep > 0 {
                runs.push(run.took);
                steps.push(run.step);
                cpu += run.cpu_seconds;
                bytes += run.bytes;
            }
        }
        drop(coordinator);
        anyhow::Ok((takeover_ms, runs, steps, cpu, bytes))
    });
    host.stop(Duration::from_secs(10));
    let (takeover_ms, runs, steps, cpu, bytes) = outcome?;
    let counted = runs.len().max(1) as f64;
    Ok(LightResult {
        agents,
        consumers_ready_ms,
        takeover_ms,
        run_ms: Summary::of_durations(&runs).context("no runs")?,
        step_ms: Summary::of(&steps).context("no steps")?,
        coordinator_cpu_ms_per_run: cpu * 1e3 / counted,
        coordinator_bytes_per_node: bytes as f64 / counted / agents as f64,
    })
}

/// The node states the agents would write: participants of the benchmark's organisation.
async fn write_inventory(network: &sidecar_bus::Network, agents: usize) -> anyhow::Result<()> {
    let store = network.kv(Bucket::Nodes).store().clone();
    let mut pending = FuturesUnordered::new();
    for index in 0..agents {
        let store = store.clone();
        let state = pb::NodeState {
            node: fixture::node_id(index),
            kind: pb::NodeKind::Participant.into(),
            organisation: fixture::ORG.into(),
            network: network.names.network().to_string(),
            role: pb::Role::Standalone.into(),
            ..Default::default()
        };
        pending.push(async move {
            store
                .put(state.node.clone(), Bytes::from(state.encode_to_vec()))
                .await
        });
        if pending.len() >= 64 {
            pending.next().await.transpose()?;
        }
    }
    while let Some(put) = pending.next().await {
        put?;
    }
    Ok(())
}

fn print_size(result: &LightResult, baseline: Option<&LightResult>) {
    println!(
        " N = {} light responders (R1): consumers bound in {:.0} ms, leadership + fence of every node in {:.0} ms",
        result.agents, result.consumers_ready_ms, result.takeover_ms
    );
    println!(
        "{}",
        measure::line("barrier run (StartRun→finished)", &result.run_ms, "ms")
    );
    println!(
        "{}",
        measure::line("  step span (record, ms clock)", &result.step_ms, "ms")
    );
    let per_node = result.coordinator_cpu_ms_per_run / result.agents as f64;
    println!(
        "  coordinator CPU {:.1} ms per run ({per_node:.3} ms per node); coordinator traffic {:.0} bytes per node",
        result.coordinator_cpu_ms_per_run, result.coordinator_bytes_per_node
    );
    if let Some(baseline) = baseline {
        let baseline_per_node = baseline.coordinator_cpu_ms_per_run / baseline.agents as f64;
        println!(
            "{}",
            measure::ratio_line(
                &format!("CPU per node at {} / at {}", result.agents, baseline.agents),
                per_node,
                baseline_per_node,
                None
            )
        );
        println!(
            "{}",
            measure::ratio_line(
                &format!(
                    "run median per node at {} / at {}",
                    result.agents, baseline.agents
                ),
                result.run_ms.median / result.agents as f64,
                baseline.run_ms.median / baseline.agents as f64,
                None
            )
        );
    }
}

/// The helper process: `agents` light responders; prints `ready ms=<t>` once every consumer
/// exists, then answers until its parent stops it.
pub fn host_light_responders(args: &[String]) -> anyhow::Result<()> {
    servers::die_with_parent()?;
    let [url, network, agents] = args else {
        bail!("usage: bench light-responders <url> <network> <agents>");
    };
    let names = Names::new(NetworkId::new(network.clone())?);
    let agents: usize = agents.parse().context("agents")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let client = sidecar_bus::connect(url, "bench-light-responders").await?;
        let jetstream = jetstream::new(client);
        let stream = names.command_stream();
        let mut consumers = Vec::with_capacity(agents);
        let mut pending = FuturesUnordered::new();
        // Creations finish in any order; each consumer keeps the index of its node.
        let create = |index| {
            let (jetstream, names, stream) = (&jetstream, &names, &stream);
            async move {
                (
                    index,
                    create_consumer(jetstream, names, stream, index).await,
                )
            }
        };
        for index in 0..agents {
            pending.push(create(index));
            if pending.len() >= 16
                && let Some((index, created)) = pending.next().await
            {
                consumers.push((index, created?.consumer));
            }
        }
        while let Some((index, created)) = pending.next().await {
            consumers.push((index, created?.consumer));
        }
        println!("ready ms={}", started.elapsed().as_millis());
        for (index, consumer) in consumers {
            let jetstream = jetstream.clone();
            let names = names.clone();
            tokio::spawn(async move {
                let node = fixture::node_id(index);
                let signer = fixture::agent_key(index);
                let Ok(mut messages) = consumer.messages().await else {
                    eprintln!("{node}: no message stream");
                    return;
                };
                while let Some(Ok(message)) = messages.next().await {
                    if let Some((subject, ack)) = answer(&names, &node, &signer, &message.payload)
                        && let Ok(published) = jetstream.publish(subject, ack).await
                    {
                        let _ = published.await;
                    }
                    let _ = message.ack().await;
                }
            });
        }
        // The parent's SIGTERM (or its death) ends this process.
        std::future::pending::<()>().await;
        anyhow::Ok(())
    })
}

/// A Done ack for the command in `raw`, signed by the node's key, and its subject.
fn answer(
    names: &Names,
    node: &str,
    signer: &sidecar_trust::SigningIdentity,
    raw: &[u8],
) -> Option<(String, Bytes)> {
    let envelope = sidecar_trust::decode_envelope(raw).ok()?;
    let command = pb::Command::decode(envelope.body.as_slice()).ok()?;
    let epoch = match command.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(Kind::Fence(fence)) => fence.epoch,
        _ => command.epoch,
    };
    let ack = pb::Ack {
        network: names.network().to_string(),
        command_id: command.command_id.clone(),
        node: node.to_owned(),
        run: command.run.clone(),
        attempt: command.attempt,
        sent_at_unix_ms: fixture::now_ms(),
        status: pb::AckStatus::Done.into(),
        epoch,
        ..Default::default()
    };
    let subject = names.ack(&NodeId::new(node).ok()?, &command.run);
    let envelope = sidecar_trust::sign_ack(signer, ack);
    Some((subject, Bytes::from(envelope.encode_to_vec())))
}
