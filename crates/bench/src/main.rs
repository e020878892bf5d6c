//! `bench <name> [--smoke]`: one benchmark program, printing numbers and ratios to baselines
//! measured in the same run. Names: barrier, heartbeat-ingest, failure-detection, engine,
//! agent-footprint, backup-wall-time, recovery-time, consumers, coordinator-alone. `agents-host`, `light-responders`, `heartbeat-publishers` and `cpu-burn` are
//! the helper processes the programs start themselves.

use anyhow::bail;
use bench::servers::Topology;
use bench::{
    backup_wall, barrier, consumers, engine, failure, footprint, heartbeat, light, recovery,
};

const USAGE: &str =
    "usage: bench <barrier|heartbeat-ingest|failure-detection|engine|agent-footprint|backup-wall-time|recovery-time|consumers|coordinator-alone> [--smoke]
  barrier            [--sizes 10,100,1000] [--topologies r1,r3]
  failure-detection  [--kills 60] [--agents 10] [--stress]
  agent-footprint    [--window-seconds 60]
  backup-wall-time   [--database-mb 200] [--reps 5]
  recovery-time      [--runbook restore|network-dr] [--reps 5]
  consumers          [--count 10000] [--topologies r1,r3]
  coordinator-alone  [--sizes 1000,10000] [--reps 3]";

fn main() -> anyhow::Result<()> {
    // The programs that run the coordinator in-process log what it does only when asked: its
    // lines would otherwise drown the numbers.
    let _logs = std::env::var_os("RUST_LOG")
        .is_some()
        .then(|| sidecar_telemetry::init(sidecar_telemetry::LogFormat::Text));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    let smoke = rest.iter().any(|a| a == "--smoke");
    let option = |key: &str| -> Option<&String> {
        rest.iter()
            .position(|a| a == key)
            .and_then(|i| rest.get(i + 1))
    };
    match name.as_str() {
        "barrier" => {
            let mut options = if smoke {
                barrier::Options::smoke()
            } else {
                barrier::Options::full()
            };
            if let Some(sizes) = option("--sizes") {
                options.sizes = sizes.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            if let Some(topologies) = option("--topologies") {
                options.topologies = Topology::parse_list(topologies)?;
            }
            barrier::run(&options)?;
        }
        "heartbeat-ingest" => {
            let options = if smoke {
                heartbeat::Options::smoke()
            } else {
                heartbeat::Options::full()
            };
            let results = heartbeat::run(&options)?;
            if results.iter().any(|r| r.slow_consumer_events > 0) {
                bail!("SlowConsumer events while ingesting heartbeats");
            }
        }
        "failure-detection" => {
            let mut options = if smoke {
                failure::Options::smoke()
            } else {
                failure::Options::full()
            };
            if let Some(kills) = option("--kills") {
                options.kills = kills.parse()?;
            }
            if let Some(agents) = option("--agents") {
                options.agents = agents.parse()?;
            }
            options.stress = rest.iter().any(|a| a == "--stress");
            let result = failure::run(&options)?;
            if result.false_downs > 0 {
                bail!("{} false Down verdicts", result.false_downs);
            }
        }
        "engine" => {
            let options = if smoke {
                engine::Options::smoke()
            } else {
                engine::Options::full()
            };
            engine::run(&options)?;
            println!("-- divan ({}):", if smoke { "smoke" } else { "full" });
            let divan = divan::Divan::default();
            let divan = if smoke {
                divan.sample_count(2).sample_size(1).skip_regex("1000$")
            } else {
                divan.max_time(std::time::Duration::from_secs(10))
            };
            divan.run_benches();
        }
        "agent-footprint" => {
            let mut options = if smoke {
                footprint::Options::smoke()
            } else {
                footprint::Options::full()
            };
            if let Some(seconds) = option("--window-seconds") {
                options.window = std::time::Duration::from_secs(seconds.parse()?);
            }
            footprint::run(&options)?;
        }
        "backup-wall-time" => {
            let mut options = if smoke {
                backup_wall::Options::smoke()
            } else {
                backup_wall::Options::full()
            };
            if let Some(mb) = option("--database-mb") {
                options.database_mb = mb.parse()?;
            }
            if let Some(reps) = option("--reps") {
                options.reps = reps.parse()?;
            }
            backup_wall::run(&options)?;
        }
        "recovery-time" => {
            let mut options = if smoke {
                recovery::Options::smoke()
            } else {
                recovery::Options::full()
            };
            if let Some(reps) = option("--reps") {
                options.reps = reps.parse()?;
            }
            if let Some(procedure) = option("--runbook") {
                options.procedure = procedure.parse()?;
            }
            recovery::run(&options)?;
        }
        "consumers" => {
            let mut options = if smoke {
                consumers::Options::smoke()
            } else {
                consumers::Options::full()
            };
            if let Some(count) = option("--count") {
                options.count = count.parse()?;
            }
            if let Some(topologies) = option("--topologies") {
                options.topologies = Topology::parse_list(topologies)?;
            }
            consumers::run(&options)?;
        }
        "coordinator-alone" => {
            let mut options = if smoke {
                light::Options::smoke()
            } else {
                light::Options::full()
            };
            if let Some(sizes) = option("--sizes") {
                options.sizes = sizes.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            if let Some(reps) = option("--reps") {
                options.reps = reps.parse()?;
            }
            light::run(&options)?;
        }
        "light-responders" => light::host_light_responders(rest)?,
        "agents-host" => barrier::host_agents(rest)?,
        "heartbeat-publishers" => heartbeat::publish_heartbeats(rest)?,
        "cpu-burn" => failure::burn_cpu()?,
        other => bail!("unknown benchmark {other:?}\n{USAGE}"),
    }
    Ok(())
}

/// Whole backup runs through the pure engine; divan counts transitions per second.
#[divan::bench(args = [10, 100, 1000])]
fn backup_run_transitions(bencher: divan::Bencher<'_, '_>, nodes: usize) {
    let network = engine::network(nodes);
    let transitions = engine::full_backup_run(&network);
    bencher
        .counter(divan::counter::ItemsCount::new(transitions))
        .bench(|| engine::full_backup_run(divan::black_box(&network)));
}

/// The floor of a transition: cloning the run state it copies.
#[divan::bench(args = [10, 100, 1000])]
fn clone_mid_run_state(bencher: divan::Bencher<'_, '_>, nodes: usize) {
    let state = engine::mid_run_state(&engine::network(nodes));
    bencher.bench(|| divan::black_box(&state).clone());
}
