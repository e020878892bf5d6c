//! Heartbeat ingest: the coordinator's registry (subscription, decode, failure detector, tick,
//! quorum probe) in this process while a helper process publishes `rate` heartbeats/s from
//! `rate` nodes (one per second each, the deploy interval), encoded like an agent's with six
//! probe results. Measured: this process's CPU share and resident memory, `SlowConsumer`
//! events, and that every node is Alive at the end. Baseline in the same run: a bare
//! subscriber that only counts the same messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use canton_coordinator::registry::{DetectorConfig, Health, QuorumProbe, Registry};
use futures::StreamExt;
use prost::Message as _;
use proto_sidecar as pb;
use sidecar_bus::{Bucket, Names, NetworkId, NodeId};

use crate::measure::{self, CpuMeter};
use crate::servers::{self, Servers, Topology};

#[derive(Clone, Debug)]
pub struct Options {
    pub rates: Vec<usize>,
    /// Measuring window per rate and per side (registry, bare subscriber).
    pub window: Duration,
}

impl Options {
    pub fn full() -> Self {
        Self {
            rates: vec![1_000, 10_000],
            window: Duration::from_secs(20),
        }
    }

    pub fn smoke() -> Self {
        Self {
            rates: vec![200],
            window: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RateResult {
    pub rate: usize,
    pub received_per_s: f64,
    pub registry_cpu_percent: f64,
    pub bare_cpu_percent: f64,
    pub rss_mb: f64,
    pub rss_growth_mb: f64,
    pub slow_consumer_events: u64,
    pub alive: usize,
    pub suspended: bool,
}

pub fn run(options: &Options) -> anyhow::Result<Vec<RateResult>> {
    measure::heading(
        "heartbeat-ingest",
        "coordinator registry ingesting heartbeats from a publisher process vs a bare subscriber",
    );
    let servers = Servers::start(Topology::R1)?;
    let url = servers.urls().first().context("no server")?.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for &rate in &options.rates {
        let result = one_rate(&runtime, &url, rate, options.window)?;
        print_rate(&result, options.window);
        results.push(result);
    }
    Ok(results)
}

fn one_rate(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    rate: usize,
    window: Duration,
) -> anyhow::Result<RateResult> {
    let network = NetworkId::new(testkit::unique_id("benchhb"))?;
    let names = Names::new(network.clone());
    let bus = runtime.block_on(servers::ensure_network(url, &network, 1))?;
    let dir = tempfile::Builder::new().prefix("cs-bench-hb-").tempdir()?;
    let detector = DetectorConfig::default();
    // Warm-up (one failure timeout, after which the detector trusts itself) plus both windows.
    let publish_for = detector.failure_timeout + window * 2 + Duration::from_secs(10);
    let mut publishers = servers::spawn_helper(
        "heartbeat-publishers",
        &[
            "heartbeat-publishers".to_owned(),
            url.to_owned(),
            network.as_str().to_owned(),
            rate.to_string(),
            publish_for.as_secs().to_string(),
        ],
        dir.path(),
    )?;
    servers::wait_ready(&mut publishers, Duration::from_secs(60), "nodes")?;
    let pid = std::process::id();

    let outcome = runtime.block_on(async {
        // The bare floor: subscribe and count.
        let bare_client = sidecar_bus::connect(url, "bench-bare").await?;
        let mut bare = bare_client.subscribe(names.heartbeats()).await?;
        let counted = Arc::new(AtomicU64::new(0));
        let counting = counted.clone();
        let bare_task = tokio::spawn(async move {
            while bare.next().await.is_some() {
                counting.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let meter = CpuMeter::start(pid)?;
        let counted_start = counted.load(Ordering::Relaxed);
        tokio::time::sleep(window).await;
        let bare_cpu_percent = meter.percent()?;
        let received_per_s =
            (counted.load(Ordering::Relaxed) - counted_start) as f64 / meter.read()?.1;
        bare_task.abort();
        drop(bare_client);

        let rss_before = measure::rss_kb(pid)? as f64 / 1024.0;
        let (client, events) = crate::fixture::registry_connection(url, &names).await?;
        let (forward, forwarded) = tokio::sync::mpsc::unbounded_channel();
        let slow = Arc::new(AtomicU64::new(0));
        let slow_seen = slow.clone();
        let mut events = events;
        let tee = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if matches!(event, async_nats::Event::SlowConsumer(_)) {
                    slow_seen.fetch_add(1, Ordering::Relaxed);
                }
                let _ = forward.send(event);
            }
        });
        let registry = Registry::start(
            client.clone(),
            &names,
            detector,
            Some(forwarded),
            Some(QuorumProbe {
                store: bus.kv(Bucket::Leader).store().clone(),
                key: names.quorum_probe_key("org-bench"),
            }),
        )
        .await?;
        tokio::time::sleep(detector.failure_timeout).await;
        let meter = CpuMeter::start(pid)?;
        let started = Instant::now();
        let mut rss_peak = 0.0f64;
        while started.elapsed() < window {
            rss_peak = rss_peak.max(measure::rss_kb(pid)? as f64 / 1024.0);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let registry_cpu_percent = meter.percent()?;
        let alive = (0..rate)
            .filter(|&i| {
                NodeId::new(node(i))
                    .ok()
                    .and_then(|id| registry.health(&id))
                    == Some(Health::Alive)
            })
            .count();
        let suspended = registry.suspended();
        drop(registry);
        tee.abort();
        anyhow::Ok(RateResult {
            rate,
            received_per_s,
            registry_cpu_percent,
            bare_cpu_percent,
            rss_mb: rss_peak,
            rss_growth_mb: rss_peak - rss_before,
            slow_consumer_events: slow.load(Ordering::Relaxed),
            alive,
            suspended,
        })
    });
    publishers.stop(Duration::from_secs(5));
    outcome
}

fn print_rate(result: &RateResult, window: Duration) {
    println!(
        " {} heartbeats/s offered ({} nodes at 1 s), {:.0}/s received by the bare subscriber, window {} s",
        result.rate,
        result.rate,
        result.received_per_s,
        window.as_secs()
    );
    println!(
        "  registry process CPU              {:>8.2} % of one core   bare subscriber {:.2} %",
        result.registry_cpu_percent, result.bare_cpu_percent
    );
    println!(
        "{}",
        measure::ratio_line(
            "registry CPU / bare subscriber CPU",
            result.registry_cpu_percent,
            result.bare_cpu_percent,
            None
        )
    );
    if result.rate >= 10_000 {
        println!(
            "{}",
            measure::target_line(
                "registry CPU at 10,000/s",
                result.registry_cpu_percent,
                "%",
                25.0
            )
        );
    }
    println!(
        "  resident memory                   {:>8.1} MB peak (+{:.1} MB for the registry)",
        result.rss_mb, result.rss_growth_mb
    );
    println!(
        "  SlowConsumer events {} (must be 0); Alive {}/{}; verdicts suspended at the end: {}",
        result.slow_consumer_events, result.alive, result.rate, result.suspended
    );
}

pub fn node(index: usize) -> String {
    format!("h{index}")
}

/// The helper process: `nodes` nodes heartbeating once a second for `seconds`, spread evenly
/// over the second, from four connections. Prints `ready nodes=<n>` when connected.
pub fn publish_heartbeats(args: &[String]) -> anyhow::Result<()> {
    servers::die_with_parent()?;
    let [url, network, nodes, seconds] = args else {
        bail!("usage: bench heartbeat-publishers <url> <network> <nodes> <seconds>");
    };
    let names = Names::new(NetworkId::new(network.clone())?);
    let nodes: usize = nodes.parse().context("nodes")?;
    let seconds: u64 = seconds.parse().context("seconds")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        const CONNECTIONS: usize = 4;
        const SLOTS_PER_SECOND: usize = 50;
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(sidecar_bus::connect(url, "bench-heartbeats").await?);
        }
        println!("ready nodes={nodes}");
        let subjects: Vec<String> = (0..nodes)
            .map(|i| NodeId::new(node(i)).map(|id| names.heartbeat(&id)))
            .collect::<Result<_, _>>()?;
        let boot = format!("boot-{}", std::process::id());
        let slot = Duration::from_secs(1) / SLOTS_PER_SECOND as u32;
        let started = tokio::time::Instant::now();
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(slot);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut slot_index = 0usize;
        while started.elapsed() < Duration::from_secs(seconds) {
            tick.tick().await;
            if slot_index.is_multiple_of(SLOTS_PER_SECOND) {
                seq += 1;
            }
            let this_slot = slot_index % SLOTS_PER_SECOND;
            for index in (this_slot..nodes).step_by(SLOTS_PER_SECOND) {
                let payload = heartbeat(&names, index, seq, &boot).encode_to_vec();
                clients[index % CONNECTIONS]
                    .publish(subjects[index].clone(), Bytes::from(payload))
                    .await?;
            }
            slot_index += 1;
        }
        for client in &clients {
            client.flush().await?;
        }
        anyhow::Ok(())
    })
}

/// A heartbeat as an agent of a participant sends it: six probe results, counters, versions.
fn heartbeat(names: &Names, index: usize, seq: u64, boot: &str) -> pb::Heartbeat {
    let probe = |name: &str| pb::ProbeResult {
        name: name.into(),
        status: pb::ProbeStatus::Ok.into(),
        reason: String::new(),
        age_ms: 120,
        latency_ms: 3,
    };
    pb::Heartbeat {
        node: node(index),
        replica: String::new(),
        kind: pb::NodeKind::Participant.into(),
        organisation: "org-bench".into(),
        seq,
        role: pb::Role::Standalone.into(),
        versions: Some(pb::Versions {
            agent: "0.1.0".into(),
            canton: "3.4.0".into(),
            release_line: "3.4".into(),
            protocol_versions: vec!["33".into()],
        }),
        probes: [
            "status",
            "grpc_health",
            "http_health",
            "synchronizers",
            "progress",
            "database",
        ]
        .into_iter()
        .map(probe)
        .collect(),
        counters: Some(pb::Counters {
            heartbeats_sent: seq,
            ..Default::default()
        }),
        network: names.network().to_string(),
        boot_id: boot.into(),
        sent_at_unix_ms: crate::fixture::now_ms(),
        interval_ms: 1000,
        confirmed_epoch: 1,
        condition: pb::NodeCondition::Healthy.into(),
        reasons: vec![],
        progress: None,
    }
}
