//! The NATS servers a benchmark runs on (deploy settings: `sync_interval: always`) and the
//! helper processes it starts from its own binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use sidecar_bus::{BusSettings, Names, Network, NetworkId};
use testkit::{ChildProcess, NatsCluster, NatsOptions, NatsServer};

/// One server (streams R1) or a three-server cluster (streams R3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    R1,
    R3,
}

impl Topology {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        match text {
            "r1" | "R1" => Ok(Self::R1),
            "r3" | "R3" => Ok(Self::R3),
            other => anyhow::bail!("unknown topology {other:?}; expected r1 or r3"),
        }
    }

    /// `r1,r3`.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<Self>> {
        text.split(',').map(Self::parse).collect()
    }

    pub fn replicas(self) -> usize {
        match self {
            Self::R1 => 1,
            Self::R3 => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::R1 => "R1 (1 server)",
            Self::R3 => "R3 (3-server cluster)",
        }
    }
}

/// Running servers; dropped = stopped.
pub enum Servers {
    One(NatsServer),
    Cluster(NatsCluster),
}

impl Servers {
    pub fn start(topology: Topology) -> anyhow::Result<Self> {
        let options = NatsOptions {
            sync_always: true,
            ..NatsOptions::default()
        };
        Ok(match topology {
            Topology::R1 => Self::One(NatsServer::start_with(options)?),
            Topology::R3 => Self::Cluster(NatsCluster::start(3, options)?),
        })
    }

    pub fn urls(&self) -> Vec<String> {
        match self {
            Self::One(server) => vec![server.url().to_owned()],
            Self::Cluster(cluster) => cluster.urls(),
        }
    }

    /// Process ids of the servers, for their memory.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::One(server) => server.pid().into_iter().collect(),
            Self::Cluster(cluster) => (0..3)
                .filter_map(|i| cluster.member(i).and_then(NatsServer::pid))
                .collect(),
        }
    }
}

/// Creates the network's streams and buckets, waiting for a cluster to elect its JetStream
/// meta leader first (creation fails until then).
pub async fn ensure_network(
    url: &str,
    network: &NetworkId,
    replicas: usize,
) -> anyhow::Result<Network> {
    let started = Instant::now();
    loop {
        let attempt = async {
            let client = sidecar_bus::connect(url, "bench").await?;
            Network::ensure(
                client,
                Names::new(network.clone()),
                &BusSettings {
                    replicas,
                    ..BusSettings::default()
                },
            )
            .await
        };
        match attempt.await {
            Ok(network) => return Ok(network),
            Err(error) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("   (network setup not ready yet: {error})");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("network setup within 60 s"),
        }
    }
}

/// Starts `bench <args>` (this program's own binary) as a helper process logging into `dir`.
pub fn spawn_helper(name: &str, args: &[String], dir: &Path) -> anyhow::Result<ChildProcess> {
    let binary = testkit::binary_path("bench")?;
    let mut command = Command::new(binary);
    command.args(args).env("RUST_LOG", "warn");
    Ok(ChildProcess::spawn(
        name,
        command,
        &dir.join(format!("{name}.log")),
        Signal::SIGTERM,
    )?)
}

/// Waits for `key=<number>` on a line starting with `ready` in a helper's log.
pub fn wait_ready(helper: &mut ChildProcess, deadline: Duration, key: &str) -> anyhow::Result<f64> {
    let prefix = format!("{key}=");
    Ok(helper.wait_for_log(deadline, |log| {
        log.lines()
            .filter(|l| l.starts_with("ready"))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(prefix.as_str()))?
                    .parse::<f64>()
                    .ok()
            })
    })?)
}

/// Makes a helper die with its parent, so an interrupted benchmark leaves nothing behind.
pub fn die_with_parent() -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")
}
