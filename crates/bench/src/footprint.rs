//! Idle footprint of one `canton-agent` process beside a canton-sim participant with every
//! probe on: peak resident memory and CPU share over a window, after the start has settled.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use testkit::{Postgres, binary_path};

use crate::measure::{self, CpuMeter, Summary};
use crate::servers::{self, Servers, Topology};

const TOPOLOGY: &str = r#"
name = "bench"
[[node]]
id = "sequencer1"
kind = "sequencer"
[[node]]
id = "mediator1"
kind = "mediator"
[[node]]
id = "participant1"
kind = "participant"
"#;

pub const RSS_TARGET_MB: f64 = 15.0;
pub const CPU_TARGET_PERCENT: f64 = 0.5;

#[derive(Clone, Debug)]
pub struct Options {
    pub settle: Duration,
    pub window: Duration,
}

impl Options {
    pub fn full() -> Self {
        Self {
            settle: Duration::from_secs(5),
            window: Duration::from_secs(60),
        }
    }

    pub fn smoke() -> Self {
        Self {
            settle: Duration::from_secs(2),
            window: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Debug)]
pub struct FootprintResult {
    pub rss_mb: Summary,
    pub cpu_percent: f64,
    pub window: Duration,
}

pub fn run(options: &Options) -> anyhow::Result<FootprintResult> {
    measure::heading(
        "agent-footprint",
        "idle canton-agent beside a canton-sim participant, six probes, 1 s heartbeats",
    );
    let servers = Servers::start(Topology::R1)?;
    let url = servers.urls().first().context("no server")?.clone();
    let postgres = Postgres::start()?;
    let network = sidecar_bus::NetworkId::new(testkit::unique_id("benchfp"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(servers::ensure_network(&url, &network, 1))?;
    let sims = SimNetwork::start(
        &NetworkSpec::from_toml(TOPOLOGY)?,
        LaunchOptions {
            postgres: PostgresTarget::of(&postgres),
            binary: &binary_path("canton-sim")?,
            work_dir: None,
        },
    )?;
    let Some(participant) = sims.node("participant1") else {
        bail!("the topology has no participant1");
    };
    let endpoints = participant.endpoints();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    let http = |addr: Option<std::net::SocketAddr>| addr.map(|a| format!("http://{a}"));
    let mut text = format!(
        "network = \"{network}\"\nnode = \"participant1\"\nkind = \"participant\"\n[nats]\nurl = \"{url}\"\n[database]\nurl = \"{}\"\n[canton]\nadmin_url = \"{}\"\ngrpc_health_url = \"http://{}\"\n",
        endpoints.database,
        http(endpoints.admin).context("participant without admin API")?,
        endpoints.grpc_health,
    );
    if let Some(ledger) = http(endpoints.ledger) {
        text.push_str(&format!("ledger_api_url = \"{ledger}\"\n"));
    }
    if let Some(health) = endpoints.http_health {
        text.push_str(&format!("http_health_url = \"http://{health}/health\"\n"));
    }
    std::fs::write(&config, text)?;

    let mut agent = Command::new(binary_path("canton-agent")?)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let pid = agent.id();
    // Connections, probes and the first state write settle before measuring.
    std::thread::sleep(options.settle);
    let meter = CpuMeter::start(pid)?;
    let started = Instant::now();
    let mut rss = Vec::new();
    while started.elapsed() < options.window {
        rss.push(measure::rss_kb(pid)? as f64 / 1024.0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu_percent = meter.percent()?;
    let still_running = matches!(agent.try_wait(), Ok(None));
    let _ = agent.kill();
    let _ = agent.wait();
    drop(sims);
    if !still_running {
        bail!("the agent exited during the measurement");
    }
    let result = FootprintResult {
        rss_mb: Summary::of(&rss).context("no RSS samples")?,
        cpu_percent,
        window: options.window,
    };
    println!(
        " one agent over {:.0} s after {:.0} s of settling",
        result.window.as_secs_f64(),
        options.settle.as_secs_f64()
    );
    println!("{}", measure::line("resident memory", &result.rss_mb, "MB"));
    println!(
        "{}",
        measure::target_line("peak RSS", result.rss_mb.max, "MB", RSS_TARGET_MB)
    );
    println!(
        "{}",
        measure::target_line("CPU", result.cpu_percent, "%", CPU_TARGET_PERCENT)
    );
    Ok(result)
}
