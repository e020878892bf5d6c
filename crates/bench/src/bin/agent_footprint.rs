//! Idle footprint of one `canton-agent` beside a canton-sim participant with every probe on:
//! resident memory and CPU share over a measurement window. Targets: ≤ 15 MB RSS, < 0.5 % CPU.
//!
//! `cargo run -p bench --bin agent_footprint [-- <seconds>]` (build the workspace binaries first).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use sidecar_bus::{BusSettings, Names, Network, NetworkId, connect};
use testkit::{NatsServer, Postgres, binary_path};

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

const RSS_TARGET_KB: u64 = 15 * 1024;
const CPU_TARGET_PERCENT: f64 = 0.5;

fn main() -> anyhow::Result<()> {
    let window = std::env::args()
        .nth(1)
        .map(|s| s.parse::<u64>())
        .transpose()
        .context("the argument is the measurement window in seconds")?
        .unwrap_or(30);
    let nats = NatsServer::start()?;
    let postgres = Postgres::start()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = connect(nats.url(), "bench").await?;
        Network::ensure(
            client,
            Names::new(NetworkId::new("bench")?),
            &BusSettings::default(),
        )
        .await?;
        anyhow::Ok(())
    })?;
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
    let url = |addr: Option<std::net::SocketAddr>| addr.map(|a| format!("http://{a}"));
    let mut text = format!(
        "network = \"bench\"\nnode = \"participant1\"\nkind = \"participant\"\n[nats]\nurl = \"{}\"\n[database]\nurl = \"{}\"\n[canton]\nadmin_url = \"{}\"\ngrpc_health_url = \"http://{}\"\n",
        nats.url(),
        endpoints.database,
        url(endpoints.admin).context("participant without admin API")?,
        endpoints.grpc_health,
    );
    if let Some(ledger) = url(endpoints.ledger) {
        text.push_str(&format!("ledger_api_url = \"{ledger}\"\n"));
    }
    if let Some(http) = endpoints.http_health {
        text.push_str(&format!("http_health_url = \"http://{http}/health\"\n"));
    }
    std::fs::write(&config, text)?;

    let mut agent = Command::new(binary_path("canton-agent")?)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let pid = agent.id();
    // Let connections, probes and the first state write settle before measuring.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu_start, wall_start) = (cpu_ticks(pid)?, Instant::now());
    let mut peak_rss_kb = 0;
    while wall_start.elapsed() < Duration::from_secs(window) {
        peak_rss_kb = peak_rss_kb.max(rss_kb(pid)?);
        std::thread::sleep(Duration::from_millis(500));
    }
    let ticks = cpu_ticks(pid)? - cpu_start;
    let elapsed = wall_start.elapsed().as_secs_f64();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu_percent = ticks as f64 / ticks_per_second / elapsed * 100.0;
    let _ = agent.kill();
    let _ = agent.wait();
    println!(
        "canton-agent idle footprint over {elapsed:.1} s (participant, 6 probes, 1 s heartbeats)"
    );
    println!(
        "  peak RSS  {:>8.1} MB   target <= {:.1} MB   ratio {:.2}",
        peak_rss_kb as f64 / 1024.0,
        RSS_TARGET_KB as f64 / 1024.0,
        peak_rss_kb as f64 / RSS_TARGET_KB as f64
    );
    println!(
        "  CPU       {cpu_percent:>8.3} %    target <  {CPU_TARGET_PERCENT:.1} %    ratio {:.2}",
        cpu_percent / CPU_TARGET_PERCENT
    );
    drop(sims);
    Ok(())
}

/// Resident set size in kB from `/proc/<pid>/status`.
fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}

/// User + system CPU time in clock ticks from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 2..])
        .context("bad stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}
