//! Failure detection: real `canton-agent` processes (kind app, 1 s heartbeats) watched by the
//! coordinator's registry in this process with the deploy detector settings (Down after 5 s of
//! silence). In rounds, half of the agents are SIGKILLed at staggered instants; each kill→Down
//! is measured from the kill and from the last heartbeat the registry had received from that
//! node; the victims are restarted and must come back Alive. Every poll also checks that no
//! other node is Down or Suspect (false downs must be 0).
//!
//! `--stress` runs the same kills while busy-loop processes (one per core, from this program's
//! own binary) saturate the CPU for the whole run, and judges the p99 of kill→Down against the
//! failure timeout plus one check period of the detector (its tick, a quarter heartbeat).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use canton_coordinator::registry::{DetectorConfig, Health, Registry};
use nix::sys::signal::Signal;
use sidecar_bus::{Names, NetworkId, NodeId};
use testkit::ChildProcess;

use crate::measure::{self, Summary};
use crate::servers::{self, Servers, Topology};

#[derive(Clone, Debug)]
pub struct Options {
    pub agents: usize,
    pub kills: usize,
    /// Saturate every core with busy-loop processes during the kills.
    pub stress: bool,
}

impl Options {
    pub fn full() -> Self {
        Self {
            agents: 10,
            kills: 60,
            stress: false,
        }
    }

    pub fn smoke() -> Self {
        Self {
            agents: 2,
            kills: 1,
            stress: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FailureResult {
    pub kills: usize,
    pub from_kill_ms: Summary,
    pub from_last_heartbeat_ms: Summary,
    pub false_downs: usize,
    pub false_suspects: usize,
    pub failure_timeout: Duration,
    /// How often the detector re-evaluates (its tick).
    pub check_period: Duration,
    pub restart_to_alive_ms: Summary,
    /// Busy-loop processes that ran beside the kills.
    pub burners: usize,
}

struct Node {
    id: NodeId,
    config: std::path::PathBuf,
    process: Option<ChildProcess>,
}

fn start_agent(node: &Node, dir: &std::path::Path) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(testkit::binary_path("canton-agent")?);
    command
        .arg("--config")
        .arg(&node.config)
        .env("RUST_LOG", "warn");
    Ok(ChildProcess::spawn(
        "canton-agent",
        command,
        &dir.join(format!("{}.log", node.id)),
        Signal::SIGTERM,
    )?)
}

pub fn run(options: &Options) -> anyhow::Result<FailureResult> {
    measure::heading(
        "failure-detection",
        if options.stress {
            "SIGKILL of real agent processes until the registry says Down, every core saturated by busy loops (deploy settings: 1 s heartbeats, 5 s failure timeout)"
        } else {
            "SIGKILL of real agent processes until the registry says Down (deploy settings: 1 s heartbeats, 5 s failure timeout)"
        },
    );
    let servers = Servers::start(Topology::R1)?;
    let url = servers.urls().first().context("no server")?.clone();
    let network = NetworkId::new(testkit::unique_id("benchfd"))?;
    let names = Names::new(network.clone());
    let dir = tempfile::Builder::new().prefix("cs-bench-fd-").tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _bus = runtime.block_on(servers::ensure_network(&url, &network, 1))?;
    let detector = DetectorConfig::default();
    let registry = runtime.block_on(async {
        let (client, events) = crate::fixture::registry_connection(&url, &names).await?;
        anyhow::Ok(Registry::start(client, &names, detector, Some(events), None).await?)
    })?;

    let mut nodes = Vec::new();
    for index in 0..options.agents {
        let id = NodeId::new(format!("a{index}"))?;
        let config = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "network = \"{network}\"\nnode = \"{id}\"\nkind = \"app\"\n[nats]\nurl = \"{url}\"\n[heartbeat]\ninterval = \"{}ms\"\n",
                detector.heartbeat_interval.as_millis()
            ),
        )?;
        let mut node = Node {
            id,
            config,
            process: None,
        };
        node.process = Some(start_agent(&node, dir.path())?);
        nodes.push(node);
    }
    let all: Vec<usize> = (0..nodes.len()).collect();
    wait_alive(&registry, &nodes, &all, Duration::from_secs(60))?;
    // Trust comes only after a full failure timeout of health (it also covers the start).
    std::thread::sleep(detector.failure_timeout);
    let burners = if options.stress {
        start_burners(dir.path())?
    } else {
        Vec::new()
    };

    let (mut from_kill, mut from_heartbeat, mut back) = (Vec::new(), Vec::new(), Vec::new());
    let (mut false_downs, mut false_suspects) = (0usize, 0usize);
    let per_round = (nodes.len() / 2).max(1);
    let mut round = 0usize;
    while from_kill.len() < options.kills {
        let victims: Vec<usize> = (0..per_round)
            .map(|k| (round * per_round + k) % nodes.len())
            .collect();
        // Staggered so kills land at every phase of the heartbeat interval: the first after a
        // shift that changes each round, the others evenly spread over one interval.
        let mut killed_at = BTreeMap::new();
        let shift = detector.heartbeat_interval * (round as u32 * 7 % 10) / 10;
        for (k, &victim) in victims.iter().enumerate() {
            std::thread::sleep(if k == 0 {
                shift
            } else {
                detector.heartbeat_interval / per_round as u32
            });
            if let Some(mut process) = nodes[victim].process.take() {
                process.kill();
            }
            killed_at.insert(victim, Instant::now());
        }
        let mut down_at: BTreeMap<usize, (Instant, Option<Duration>)> = BTreeMap::new();
        let deadline = Instant::now() + detector.failure_timeout * 4;
        while down_at.len() < victims.len() {
            if Instant::now() > deadline {
                bail!(
                    "killed agents not Down within {:?}",
                    detector.failure_timeout * 4
                );
            }
            let view = registry.view();
            let now = Instant::now();
            for logical in &view {
                for replica in &logical.replicas {
                    let Some(index) = nodes.iter().position(|n| n.id == replica.node) else {
                        continue;
                    };
                    if killed_at.contains_key(&index) {
                        if replica.health == Health::Down && !down_at.contains_key(&index) {
                            down_at.insert(index, (now, replica.heartbeat_age));
                        }
                    } else if replica.health == Health::Down {
                        false_downs += 1;
                        eprintln!("   false Down: {}", replica.node);
                    } else if replica.health == Health::Suspect {
                        false_suspects += 1;
                        eprintln!("   false Suspect: {}", replica.node);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (&victim, &(down, age)) in &down_at {
            from_kill.push(down - killed_at[&victim]);
            if let Some(age) = age {
                from_heartbeat.push(age);
            }
        }
        let restarted = Instant::now();
        for &victim in &victims {
            nodes[victim].process = Some(start_agent(&nodes[victim], dir.path())?);
        }
        wait_alive(&registry, &nodes, &victims, Duration::from_secs(60))?;
        back.push(restarted.elapsed());
        round += 1;
    }
    let burner_count = burners.len();
    drop(burners);
    for node in &mut nodes {
        if let Some(mut process) = node.process.take() {
            process.stop(Duration::from_secs(5));
        }
    }
    drop(registry);
    let result = FailureResult {
        kills: from_kill.len(),
        from_kill_ms: Summary::of_durations(&from_kill).context("no kills")?,
        from_last_heartbeat_ms: Summary::of_durations(&from_heartbeat)
            .context("no heartbeat ages")?,
        false_downs,
        false_suspects,
        failure_timeout: detector.failure_timeout,
        check_period: detector.heartbeat_interval / 4,
        restart_to_alive_ms: Summary::of_durations(&back).context("no restarts")?,
        burners: burner_count,
    };
    print(&result, options.agents);
    Ok(result)
}

/// One busy-loop process per core, each dying with this program.
fn start_burners(dir: &std::path::Path) -> anyhow::Result<Vec<ChildProcess>> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (0..cores)
        .map(|index| {
            servers::spawn_helper(&format!("cpu-burn-{index}"), &["cpu-burn".to_owned()], dir)
        })
        .collect()
}

/// The `cpu-burn` helper: spins on one core until its parent dies (or it is killed).
pub fn burn_cpu() -> anyhow::Result<()> {
    servers::die_with_parent()?;
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

fn wait_alive(
    registry: &Registry,
    nodes: &[Node],
    which: &[usize],
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let alive = which
            .iter()
            .all(|&i| registry.health(&nodes[i].id) == Some(Health::Alive));
        if alive {
            return Ok(started.elapsed());
        }
        if started.elapsed() > deadline {
            bail!("agents not Alive within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn print(result: &FailureResult, agents: usize) {
    let timeout_ms = result.failure_timeout.as_secs_f64() * 1e3;
    println!(
        " {} SIGKILLs of {agents} agent processes, failure timeout {} ms{}",
        result.kills,
        timeout_ms,
        if result.burners > 0 {
            format!(
                ", {} busy-loop processes saturating the cores",
                result.burners
            )
        } else {
            String::new()
        }
    );
    println!(
        "{}",
        measure::line("kill → Down", &result.from_kill_ms, "ms")
    );
    println!(
        "{}",
        measure::line(
            "last heartbeat → Down",
            &result.from_last_heartbeat_ms,
            "ms"
        )
    );
    println!(
        "{}",
        measure::ratio_line(
            "median (last heartbeat → Down) / timeout",
            result.from_last_heartbeat_ms.median,
            timeout_ms,
            None
        )
    );
    println!(
        "{}",
        measure::line(
            "restart → Alive again (per round)",
            &result.restart_to_alive_ms,
            "ms"
        )
    );
    let bound_ms = timeout_ms + result.check_period.as_secs_f64() * 1e3;
    println!(
        "{}",
        measure::target_line(
            "p99 kill → Down (≤ timeout + check period)",
            result.from_kill_ms.p99,
            "ms",
            bound_ms
        )
    );
    println!(
        "  distribution of kill → Down: {}",
        distribution(&result.from_kill_ms, timeout_ms)
    );
    println!(
        "  false Down verdicts {} (must be 0); false Suspect readings {}",
        result.false_downs, result.false_suspects
    );
}

/// Where the samples fall relative to the timeout: min, median, p99, max and the share past it.
fn distribution(summary: &Summary, timeout_ms: f64) -> String {
    format!(
        "min {:.0} / median {:.0} / p99 {:.0} / max {:.0} ms over {} kills (timeout {timeout_ms:.0} ms)",
        summary.min, summary.median, summary.p99, summary.max, summary.count
    )
}
