//! Durable command consumers at scale: creating the consumers of N agents (each with the exact
//! settings an agent binds: its own filter subject, explicit acks, ack wait 30 s, 20
//! deliveries, 64 pending) on the command stream, and the server's memory with N of them.
//!
//! Baseline in the same run, interleaved in batches: a PubAck'ed publish to the same stream
//! (one `sync_interval: always` write), the unit a consumer creation is compared against.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sidecar_bus::{Names, NetworkId, NodeId};

use crate::measure::{self, Summary};
use crate::servers::{self, Servers, Topology};

#[derive(Clone, Debug)]
pub struct Options {
    pub topologies: Vec<Topology>,
    pub count: usize,
    /// Creations in flight at once (agents starting together).
    pub in_flight: usize,
}

impl Options {
    pub fn full() -> Self {
        Self {
            topologies: vec![Topology::R1, Topology::R3],
            count: 10_000,
            in_flight: 16,
        }
    }

    pub fn smoke() -> Self {
        Self {
            topologies: vec![Topology::R1],
            count: 50,
            in_flight: 4,
        }
    }
}

/// The numbers of one topology.
#[derive(Clone, Debug)]
pub struct ConsumersResult {
    pub topology: Topology,
    pub count: usize,
    pub total: Duration,
    pub first_thousand_ms: Summary,
    pub last_thousand_ms: Summary,
    pub publish_ms: Summary,
    /// Creations asked again after a timeout (counted in their time).
    pub retries: u32,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
}

/// Agents' consumers created per batch before the baseline publishes its share.
const BATCH: usize = 500;

pub fn run(options: &Options) -> anyhow::Result<Vec<ConsumersResult>> {
    measure::heading(
        "consumers",
        "durable command consumers of N agents created on the command stream; server memory",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for &topology in &options.topologies {
        let servers = Servers::start(topology)?;
        let result = runtime.block_on(one_topology(&servers, topology, options))?;
        print_result(&result);
        results.push(result);
    }
    Ok(results)
}

fn largest_rss_mb(servers: &Servers) -> f64 {
    servers
        .pids()
        .iter()
        .filter_map(|&pid| measure::rss_kb(pid).ok())
        .max()
        .unwrap_or(0) as f64
        / 1024.0
}

async fn one_topology(
    servers: &Servers,
    topology: Topology,
    options: &Options,
) -> anyhow::Result<ConsumersResult> {
    let urls = servers.urls();
    let first_url = urls.first().context("no server")?;
    let network_id = NetworkId::new(testkit::unique_id("benchcons"))?;
    let network = servers::ensure_network(first_url, &network_id, topology.replicas()).await?;
    let names = Names::new(network_id);
    let stream = names.command_stream();
    let jetstream = network.jetstream.clone();
    let rss_before_mb = largest_rss_mb(servers);

    let started = Instant::now();
    let mut creations = Vec::with_capacity(options.count);
    let mut publishes = Vec::new();
    let mut retries = 0;
    let mut next = 0;
    while next < options.count {
        let batch_end = (next + BATCH).min(options.count);
        let mut pending: FuturesUnordered<_> = FuturesUnordered::new();
        for index in next..batch_end {
            if pending.len() >= options.in_flight
                && let Some(created) = pending.next().await
            {
                let created: Creation = created?;
                retries += created.attempts - 1;
                creations.push(created.took);
            }
            pending.push(create_consumer(&jetstream, &names, &stream, index));
        }
        while let Some(created) = pending.next().await {
            let created: Creation = created?;
            retries += created.attempts - 1;
            creations.push(created.took);
        }
        // The baseline's share of this batch: publishes to a subject no agent filters on.
        for sample in 0..options.in_flight {
            let subject = names.command(&NodeId::new(format!("baseline{next}x{sample}"))?);
            let publish_started = Instant::now();
            jetstream
                .publish(subject, Bytes::from_static(&[b'c'; 420]))
                .await?
                .await
                .context("baseline publish")?;
            publishes.push(publish_started.elapsed());
        }
        next = batch_end;
        if next % 2_000 == 0 || next == options.count {
            println!(
                "   {next} consumers after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let total = started.elapsed();
    let info = jetstream
        .get_stream(&stream)
        .await?
        .info()
        .await
        .context("stream info")?
        .clone();
    anyhow::ensure!(
        info.state.consumer_count >= options.count,
        "the stream holds {} consumers, not {}",
        info.state.consumer_count,
        options.count
    );
    // Memory once the server has settled with every consumer bound.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_mb = largest_rss_mb(servers);
    let thousand = options.count.min(1_000);
    Ok(ConsumersResult {
        topology,
        count: options.count,
        total,
        first_thousand_ms: Summary::of_durations(&creations[..thousand]).context("no creations")?,
        last_thousand_ms: Summary::of_durations(&creations[creations.len() - thousand..])
            .context("no creations")?,
        publish_ms: Summary::of_durations(&publishes).context("no publishes")?,
        retries,
        rss_before_mb,
        rss_after_mb,
    })
}

/// Creates agent `index`'s command consumer with the agent's settings.
pub(crate) async fn create_consumer(
    jetstream: &jetstream::Context,
    names: &Names,
    stream: &str,
    index: usize,
) -> anyhow::Result<Creation> {
    let node = NodeId::new(crate::fixture::node_id(index))?;
    let config = consumer::pull::Config {
        durable_name: Some(names.agent_consumer(&node)),
        filter_subject: names.command(&node),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 20,
        max_ack_pending: 64,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    // As an agent does (`bind_consumer`): a creation that timed out is asked again; one that
    // applied anyway answers the repeat with the same consumer.
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let created: Result<consumer::PullConsumer, _> = jetstream
            .create_consumer_on_stream(config.clone(), stream)
            .await;
        match created {
            Ok(consumer) => {
                return Ok(Creation {
                    consumer,
                    took: started.elapsed(),
                    attempts: attempt,
                });
            }
            Err(error) if attempt < CREATION_ATTEMPTS => {
                eprintln!(
                    "   consumer of {node}: attempt {attempt} failed ({error}); asking again"
                );
                attempt += 1;
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("consumer of {node}, {attempt} attempts"));
            }
        }
    }
}

/// Attempts at one consumer before the program gives up.
const CREATION_ATTEMPTS: u32 = 5;

/// One consumer's creation: from the first request to its answer, and how many requests.
pub(crate) struct Creation {
    pub(crate) consumer: consumer::PullConsumer,
    pub(crate) took: Duration,
    pub(crate) attempts: u32,
}

fn print_result(result: &ConsumersResult) {
    println!(
        "-- {}: {} consumers in {:.1} s ({:.0}/s), {} creations asked again after a timeout",
        result.topology.label(),
        result.count,
        result.total.as_secs_f64(),
        result.count as f64 / result.total.as_secs_f64(),
        result.retries
    );
    println!(
        "{}",
        measure::line("creation, first 1,000", &result.first_thousand_ms, "ms")
    );
    println!(
        "{}",
        measure::line("creation, last 1,000", &result.last_thousand_ms, "ms")
    );
    println!(
        "{}",
        measure::line("baseline PubAck'ed publish", &result.publish_ms, "ms")
    );
    println!(
        "{}",
        measure::ratio_line(
            "median creation (last 1,000) / publish",
            result.last_thousand_ms.median,
            result.publish_ms.median,
            None
        )
    );
    println!(
        "{}",
        measure::ratio_line(
            "median creation last / first 1,000",
            result.last_thousand_ms.median,
            result.first_thousand_ms.median,
            None
        )
    );
    println!(
        "  largest nats-server RSS {:.1} MB before, {:.1} MB with {} consumers ({:.1} kB per consumer)",
        result.rss_before_mb,
        result.rss_after_mb,
        result.count,
        (result.rss_after_mb - result.rss_before_mb) * 1024.0 / result.count as f64
    );
}
