//! Barrier fan-out + acks: the `disconnect` runbook (one step on every participant, finished
//! when every agent answered) through the real coordinator (API, claims, driver, CAS, signed
//! commands) and real agents (signature check, fsynced journal, signed ack) run as tasks of
//! one helper process. The action itself is a no-op, so what is measured is the machinery.
//!
//! Baseline in the same run, interleaved rep by rep: raw JetStream on the same servers with
//! the same settings: publish N (one per node subject, PubAcks awaited), N durable consumers
//! each answer on an ack stream (PubAck awaited) and ack, one consumer reads the N answers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use proto_sidecar as pb;
use proto_sidecar::coordinator_service_client::CoordinatorServiceClient;
use sidecar_bus::NetworkId;
use tokio_util::sync::CancellationToken;

use crate::fixture::{self, OPERATOR_TOKEN};
use crate::measure::{self, CpuMeter, Summary};
use crate::servers::{self, Servers, Topology};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub topologies: Vec<Topology>,
    pub sizes: Vec<usize>,
    /// Measured repetitions per size (after one warm-up run).
    pub reps: fn(usize) -> usize,
    /// Agents' heartbeat interval (the deploy default is 1 s).
    pub heartbeat: Duration,
}

impl Options {
    pub fn full() -> Self {
        Self {
            topologies: vec![Topology::R1, Topology::R3],
            sizes: vec![10, 100, 1000],
            reps: |n| match n {
                0..=10 => 30,
                11..=100 => 15,
                _ => 7,
            },
            heartbeat: Duration::from_secs(1),
        }
    }

    pub fn smoke() -> Self {
        Self {
            topologies: vec![Topology::R1],
            sizes: vec![3],
            reps: |_| 2,
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// The numbers of one (topology, N).
#[derive(Clone, Debug)]
pub struct SizeResult {
    pub topology: Topology,
    pub agents: usize,
    pub consumers_ready_ms: f64,
    pub takeover_ms: f64,
    pub run_ms: Summary,
    pub step_ms: Summary,
    pub baseline_ms: Summary,
    pub coordinator_cpu_ms_per_run: f64,
    pub coordinator_bytes_per_node: f64,
    pub server_rss_mb: f64,
}

/// Runs every (topology, size) and prints the report; returns the numbers.
pub fn run(options: &Options) -> anyhow::Result<Vec<SizeResult>> {
    measure::heading(
        "barrier",
        "disconnect runbook on N agents (real coordinator + agents) vs raw JetStream publish/consume/ack",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for &topology in &options.topologies {
        let servers = Servers::start(topology)?;
        println!("-- {}", topology.label());
        for &agents in &options.sizes {
            let result = one_size(&runtime, &servers, topology, agents, options)?;
            print_size(&result);
            results.push(result);
        }
    }
    print_fit(&results);
    Ok(results)
}

fn one_size(
    runtime: &tokio::runtime::Runtime,
    servers: &Servers,
    topology: Topology,
    agents: usize,
    options: &Options,
) -> anyhow::Result<SizeResult> {
    let urls = servers.urls();
    let first_url = urls.first().context("no server")?.clone();
    let network_id = NetworkId::new(testkit::unique_id("bench"))?;
    let network = runtime.block_on(servers::ensure_network(
        &first_url,
        &network_id,
        topology.replicas(),
    ))?;
    let dir = tempfile::Builder::new().prefix("cs-bench-").tempdir()?;
    let config = fixture::coordinator_config(&network_id, &first_url, topology.replicas(), agents)?;
    let network_config_path = dir.path().join("network.cfg");
    std::fs::write(&network_config_path, &config.network_config)?;

    let mut host = servers::spawn_helper(
        "agents-host",
        &[
            "agents-host".to_owned(),
            urls.join(","),
            network_id.as_str().to_owned(),
            agents.to_string(),
            dir.path().display().to_string(),
            options.heartbeat.as_millis().to_string(),
        ],
        dir.path(),
    )?;
    let consumers_ready_ms = servers::wait_ready(&mut host, Duration::from_secs(900), "ms")?;

    let reps = (options.reps)(agents);
    let outcome = runtime.block_on(async {
        let (coordinator, takeover_ms, mut ops) = leading_coordinator(config, agents).await?;
        let mut baseline =
            Baseline::start(&network.jetstream, &urls, &network_id, agents, topology).await?;
        let statistics = coordinator.shared.network.client.statistics();
        let (mut runs, mut steps, mut floors) = (Vec::new(), Vec::new(), Vec::new());
        let (mut cpu, mut bytes) = (0.0, 0u64);
        for rep in 0..=reps {
            let run = metered_run(&statistics, &mut ops, rep, agents).await?;
            let floor = baseline.round(rep).await?;
            // Rep 0 warms caches and connections on both paths; it is not counted.
            if rep > 0 {
                runs.push(run.took);
                steps.push(run.step);
                floors.push(floor);
                cpu += run.cpu_seconds;
                bytes += run.bytes;
            }
        }
        baseline.stop().await;
        drop(coordinator);
        anyhow::Ok((takeover_ms, runs, steps, floors, cpu, bytes))
    });
    let server_rss_mb = servers
        .pids()
        .iter()
        .filter_map(|&pid| measure::rss_kb(pid).ok())
        .max()
        .unwrap_or(0) as f64
        / 1024.0;
    host.stop(Duration::from_secs(10));
    let (takeover_ms, runs, steps, floors, cpu, bytes) = outcome?;
    let counted = runs.len().max(1) as f64;
    Ok(SizeResult {
        topology,
        agents,
        consumers_ready_ms,
        takeover_ms,
        run_ms: Summary::of_durations(&runs).context("no runs")?,
        step_ms: Summary::of(&steps).context("no steps")?,
        baseline_ms: Summary::of_durations(&floors).context("no baseline rounds")?,
        coordinator_cpu_ms_per_run: cpu * 1e3 / counted,
        coordinator_bytes_per_node: bytes as f64 / counted / agents as f64,
        server_rss_mb,
    })
}

/// Starts the coordinator, waits until it leads and fenced every node (the time it took, in
/// ms) and until its inventory knows every participant; returns it with an operator client.
pub(crate) async fn leading_coordinator(
    config: canton_coordinator::config::Config,
    agents: usize,
) -> anyhow::Result<(canton_coordinator::service::Coordinator, f64, Operator)> {
    let takeover_started = Instant::now();
    let coordinator = canton_coordinator::service::Coordinator::start(config)
        .await
        .map_err(|e| anyhow::anyhow!("coordinator: {e}"))?;
    while coordinator.driving().await.is_none() {
        if takeover_started.elapsed() > Duration::from_secs(300) {
            bail!("the coordinator did not lead and fence {agents} nodes within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover_ms = takeover_started.elapsed().as_secs_f64() * 1e3;
    let mut ops = operator_client(coordinator.api_addr).await?;
    wait_for_inventory(&mut ops, agents).await?;
    Ok((coordinator, takeover_ms, ops))
}

/// A run plans over the participants in the inventory, known by their published node state:
/// on a loaded machine the last agents' first state can arrive after the fence, and a run
/// started then would skip them.
pub(crate) async fn wait_for_inventory(ops: &mut Operator, agents: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let listed = ops
            .list_nodes(pb::ListNodesRequest {})
            .await?
            .into_inner()
            .nodes
            .iter()
            .filter(|view| {
                view.state
                    .as_ref()
                    .is_some_and(|state| state.kind() == pb::NodeKind::Participant)
            })
            .count();
        if listed >= agents {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the inventory knows {listed} of {agents} participants after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub(crate) type Operator = CoordinatorServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>,
>;

pub(crate) async fn operator_client(addr: std::net::SocketAddr) -> anyhow::Result<Operator> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {OPERATOR_TOKEN}").parse()?;
    let auth: Auth = Box::new(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        Ok(request)
    });
    Ok(CoordinatorServiceClient::with_interceptor(channel, auth))
}

/// One [`one_run`] with what this process (the coordinator's) spent on it.
pub(crate) struct MeteredRun {
    pub took: Duration,
    /// The step's span in the record, ms.
    pub step: f64,
    pub cpu_seconds: f64,
    /// Bytes in and out on the coordinator's NATS connection.
    pub bytes: u64,
}

pub(crate) async fn metered_run(
    statistics: &async_nats::Statistics,
    ops: &mut Operator,
    rep: usize,
    agents: usize,
) -> anyhow::Result<MeteredRun> {
    let traffic = || {
        statistics.in_bytes.load(Ordering::Relaxed) + statistics.out_bytes.load(Ordering::Relaxed)
    };
    let meter = CpuMeter::start(std::process::id())?;
    let before = traffic();
    let (took, step) = one_run(ops, rep, agents).await?;
    let bytes = traffic() - before;
    let (cpu_seconds, _) = meter.read()?;
    Ok(MeteredRun {
        took,
        step,
        cpu_seconds,
        bytes,
    })
}

/// One `disconnect` run from StartRun to RUN_FINISHED (WatchRun); also the step's own span as
/// the record has it (ms resolution).
pub(crate) async fn one_run(
    ops: &mut Operator,
    rep: usize,
    agents: usize,
) -> anyhow::Result<(Duration, f64)> {
    let started = Instant::now();
    let response = ops
        .start_run(pb::StartRunRequest {
            runbook: "disconnect".into(),
            nodes: vec![],
            parameters: vec![
                pb::Parameter {
                    key: "deadline".into(),
                    value: "120s".into(),
                },
                pb::Parameter {
                    key: "compensate".into(),
                    value: "false".into(),
                },
            ],
            request_id: format!("bench-{rep}"),
        })
        .await?
        .into_inner();
    let run_id = response.run.context("StartRun without a run")?.run_id;
    let mut events = ops
        .watch_run(pb::WatchRunRequest {
            run_id: run_id.clone(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    let mut finished = None;
    while let Some(event) = events.next().await {
        let event = event?;
        let summary = event.run.clone();
        let done = event.kind() == pb::RunEventKind::RunFinished
            || summary.as_ref().is_some_and(|run| {
                event.kind() == pb::RunEventKind::Snapshot
                    && run.status() == pb::RunStatus::Succeeded
            });
        if done {
            finished = summary;
            break;
        }
    }
    let took = started.elapsed();
    let run = finished.context("WatchRun ended before the run finished")?;
    if run.status() != pb::RunStatus::Succeeded {
        let failed: Vec<String> = run
            .steps
            .iter()
            .flat_map(|step| step.nodes.iter())
            .filter(|node| !node.detail.is_empty())
            .take(3)
            .map(|node| format!("{}: {}", node.node, node.detail))
            .collect();
        bail!(
            "run {run_id} ended {:?}: {}; first nodes: {failed:?}",
            run.status(),
            run.detail
        );
    }
    let step = run
        .steps
        .iter()
        .find(|s| s.step == "disconnect")
        .context("no disconnect step")?;
    if step.nodes.len() < agents {
        bail!("step answered by {} of {agents} agents", step.nodes.len());
    }
    Ok((
        took,
        (step.finished_at_unix_ms - step.started_at_unix_ms) as f64,
    ))
}

/// Raw JetStream fan-out and answers on the same servers and settings.
struct Baseline {
    jetstream: jetstream::Context,
    subject_prefix: String,
    agents: usize,
    answers: tokio::sync::mpsc::Receiver<u64>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Payload of the size of a signed command envelope.
const COMMAND_BYTES: usize = 420;
const ACK_BYTES: usize = 260;

impl Baseline {
    async fn start(
        jetstream: &jetstream::Context,
        urls: &[String],
        network: &NetworkId,
        agents: usize,
        topology: Topology,
    ) -> anyhow::Result<Self> {
        let prefix = format!("benchraw.{}", network.as_str());
        let stream_name =
            |kind: &str| format!("BENCHRAW_{}_{kind}", network.as_str().to_uppercase());
        for kind in ["CMD", "ACK"] {
            jetstream
                .create_or_update_stream(stream::Config {
                    name: stream_name(kind),
                    subjects: vec![format!("{prefix}.{}.>", kind.to_lowercase())],
                    storage: stream::StorageType::File,
                    num_replicas: topology.replicas(),
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("baseline stream {kind}"))?;
        }
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for index in 0..agents {
            let client = sidecar_bus::connect(&urls[index % urls.len()], "bench-raw").await?;
            let own = jetstream::new(client);
            let node = fixture::node_id(index);
            let consumer: consumer::PullConsumer = own
                .create_consumer_on_stream(
                    consumer::pull::Config {
                        durable_name: Some(format!("raw_{node}")),
                        filter_subject: format!("{prefix}.cmd.{node}"),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                    stream_name("CMD"),
                )
                .await
                .with_context(|| format!("baseline consumer {node}"))?;
            let ack_subject = format!("{prefix}.ack.{node}");
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let Some(mut messages) = pull_messages(&consumer, &stop).await else {
                    return;
                };
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = messages.next() => next,
                    };
                    let message = match next {
                        Some(Ok(message)) => message,
                        // A cluster still settling its leaders: pull again.
                        other => {
                            eprintln!(
                                "   (baseline consumer {node}: {:?}; pulling again)",
                                other.map(|r| r.err())
                            );
                            let Some(again) = pull_messages(&consumer, &stop).await else {
                                return;
                            };
                            messages = again;
                            continue;
                        }
                    };
                    let answer = own
                        .publish(ack_subject.clone(), Bytes::from(vec![b'a'; ACK_BYTES]))
                        .await;
                    if let Ok(pending) = answer {
                        let _ = pending.await;
                    }
                    let _ = message.double_ack().await;
                }
            }));
        }
        let collector: consumer::PullConsumer = jetstream
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some("raw_collector".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
                stream_name("ACK"),
            )
            .await
            .context("baseline collector")?;
        let (sender, answers) = tokio::sync::mpsc::channel(agents.max(1) * 2);
        let collecting = stop.clone();
        tasks.push(tokio::spawn(async move {
            let Some(mut messages) = pull_messages(&collector, &collecting).await else {
                return;
            };
            loop {
                let next = tokio::select! {
                    () = collecting.cancelled() => return,
                    next = messages.next() => next,
                };
                let message = match next {
                    Some(Ok(message)) => message,
                    other => {
                        eprintln!(
                            "   (baseline collector: {:?}; pulling again)",
                            other.map(|r| r.err())
                        );
                        let Some(again) = pull_messages(&collector, &collecting).await else {
                            return;
                        };
                        messages = again;
                        continue;
                    }
                };
                let _ = message.ack().await;
                if sender.send(1).await.is_err() {
                    return;
                }
            }
        }));
        Ok(Self {
            jetstream: jetstream.clone(),
            subject_prefix: prefix,
            agents,
            answers,
            stop,
            tasks,
        })
    }

    /// One fan-out round: N publishes (acks awaited), N answers collected.
    async fn round(&mut self, rep: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut pending = Vec::with_capacity(self.agents);
        for index in 0..self.agents {
            let subject = format!("{}.cmd.{}", self.subject_prefix, fixture::node_id(index));
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("r{rep}/{index}").as_str());
            pending.push(
                self.jetstream
                    .publish_with_headers(subject, headers, Bytes::from(vec![b'c'; COMMAND_BYTES]))
                    .await?,
            );
        }
        for ack in pending {
            ack.await?;
        }
        for _ in 0..self.agents {
            tokio::time::timeout(Duration::from_secs(120), self.answers.recv())
                .await
                .context("baseline answers not within 120 s")?
                .context("baseline collector stopped")?;
        }
        Ok(started.elapsed())
    }

    async fn stop(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// The consumer's message stream, asked again every 500 ms while the server cannot serve it
/// (a cluster electing the stream's leader); `None` once stopped.
async fn pull_messages(
    consumer: &consumer::PullConsumer,
    stop: &CancellationToken,
) -> Option<consumer::pull::Stream> {
    loop {
        match consumer.messages().await {
            Ok(messages) => return Some(messages),
            Err(error) => eprintln!("   (baseline pull not served yet: {error})"),
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn print_size(result: &SizeResult) {
    println!(
        " N = {} agents ({}): consumers bound in {:.0} ms, leadership + fence of every agent in {:.0} ms",
        result.agents,
        result.topology.label(),
        result.consumers_ready_ms,
        result.takeover_ms
    );
    println!(
        "{}",
        measure::line("barrier run (StartRun→finished)", &result.run_ms, "ms")
    );
    println!(
        "{}",
        measure::line("  step span (record, ms clock)", &result.step_ms, "ms")
    );
    println!(
        "{}",
        measure::line("baseline publish/consume/ack", &result.baseline_ms, "ms")
    );
    println!(
        "{}",
        measure::ratio_line(
            "median run / median baseline",
            result.run_ms.median,
            result.baseline_ms.median,
            Some(2.0)
        )
    );
    if result.topology == Topology::R1 && result.agents == 1000 {
        println!(
            "{}",
            measure::target_line("N=1000 R1 median", result.run_ms.median, "ms", 20.0)
        );
    }
    println!(
        "  coordinator CPU {:.1} ms per run ({:.3} ms per node); coordinator traffic {:.0} bytes per node; largest nats-server RSS {:.0} MB",
        result.coordinator_cpu_ms_per_run,
        result.coordinator_cpu_ms_per_run / result.agents as f64,
        result.coordinator_bytes_per_node,
        result.server_rss_mb
    );
}

fn print_fit(results: &[SizeResult]) {
    for topology in [Topology::R1, Topology::R3] {
        let points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.topology == topology)
            .map(|r| (r.agents as f64, r.run_ms.median))
            .collect();
        let floor: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.topology == topology)
            .map(|r| (r.agents as f64, r.baseline_ms.median))
            .collect();
        if let (Some((intercept, slope)), Some((floor_intercept, floor_slope))) =
            (measure::fit_line(&points), measure::fit_line(&floor))
        {
            println!(
                "-- {} fit of the medians: run = {intercept:.1} ms + {slope:.3} ms/agent → 10,000 agents ≈ {:.0} ms; baseline = {floor_intercept:.1} ms + {floor_slope:.3} ms/agent → 10,000 ≈ {:.0} ms (extrapolated, not measured)",
                topology.label(),
                intercept + slope * 10_000.0,
                floor_intercept + floor_slope * 10_000.0,
            );
        }
    }
}

/// The helper process: `agents` real agents as tasks; prints `ready ms=<t>` once every agent's
/// durable consumer exists, then runs until its parent stops it.
pub fn host_agents(args: &[String]) -> anyhow::Result<()> {
    servers::die_with_parent()?;
    let [urls, network, agents, dir, heartbeat_ms] = args else {
        bail!("usage: bench agents-host <urls> <network> <agents> <dir> <heartbeat-ms>");
    };
    let network = NetworkId::new(network.clone())?;
    let agents: usize = agents.parse().context("agents")?;
    let heartbeat = Duration::from_millis(heartbeat_ms.parse().context("heartbeat-ms")?);
    let dir = std::path::PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let shutdown = CancellationToken::new();
        let _agents = fixture::spawn_agents(
            &network,
            urls,
            &dir.join("network.cfg"),
            &dir,
            agents,
            heartbeat,
            &shutdown,
        )?;
        let first = urls.split(',').next().context("no url")?;
        let client = sidecar_bus::connect(first, "bench-agents-host").await?;
        let jetstream = jetstream::new(client);
        let names = sidecar_bus::Names::new(network.clone());
        loop {
            if let Ok(mut stream) = jetstream.get_stream(names.command_stream()).await
                && let Ok(info) = stream.info().await
                && info.state.consumer_count >= agents
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(900) {
                bail!("{agents} agents did not bind their consumers within 900 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("ready ms={}", started.elapsed().as_millis());
        // The parent's SIGTERM (or its death) ends this process; nothing to clean up here.
        std::future::pending::<()>().await;
        anyhow::Ok(())
    })?;
    Ok(())
}
