//! The README's demo: a simulated Canton network on real PostgreSQL and NATS, shown live, then
//! stopped. Ends by itself and leaves nothing running.
use std::time::Instant;

use anyhow::Context;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use sidecar_bus::{BusSettings, Names, Network, NetworkId, connect};
use testkit::{NatsServer, Postgres, binary_path};

const TOPOLOGY: &str = include_str!("../../demo/network.toml");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = sidecar_telemetry::init(sidecar_telemetry::LogFormat::Text);
    let start = Instant::now();

    step("infrastructure");
    let nats = NatsServer::start().context("starting nats-server")?;
    println!(
        "  nats-server   {} (pid {})",
        nats.url(),
        nats.pid().unwrap_or_default()
    );
    let postgres = Postgres::start().context("starting PostgreSQL")?;
    println!(
        "  postgres      {} (pid {})",
        postgres.url("postgres"),
        postgres.pid().unwrap_or_default()
    );
    let names = Names::new(NetworkId::new("demo")?);
    let client = connect(nats.url(), "canton-demo").await?;
    let _network = Network::ensure(client, names.clone(), &BusSettings::default()).await?;
    println!(
        "  bus           streams {} {} {}",
        names.command_stream(),
        names.ack_stream(),
        names.audit_stream()
    );

    step("canton network (canton-sim, one process and one database per node)");
    let spec = NetworkSpec::from_toml(TOPOLOGY).context("parsing the demo topology")?;
    let binary = binary_path("canton-sim")?;
    let launch_started = Instant::now();
    let sims = tokio::task::spawn_blocking(move || {
        SimNetwork::start(
            &spec,
            canton_sim::network::LaunchOptions {
                postgres: PostgresTarget::of(&postgres),
                binary: &binary,
                work_dir: None,
            },
        )
        .map(|network| (network, postgres))
    })
    .await?
    .context("starting the sim network")?;
    let (sims, postgres) = sims;
    println!(
        "  {} nodes ready in {:.1}s",
        sims.nodes().len(),
        launch_started.elapsed().as_secs_f64()
    );
    println!(
        "  {:<14} {:<12} {:<10} {:<22} database",
        "node", "kind", "org", "admin"
    );
    for node in sims.endpoints().nodes {
        let admin = node
            .admin
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".to_owned());
        println!(
            "  {:<14} {:<12} {:<10} {:<22} {}",
            node.id,
            format!("{:?}", node.kind).to_lowercase(),
            node.organisation,
            admin,
            node.database_name
        );
    }

    step("health");
    for node in sims.nodes() {
        let info = node
            .control()
            .info()
            .await
            .with_context(|| format!("control info of {}", node.id()))?;
        println!(
            "  {:<14} ready={} uid={}",
            info.node_id, info.ready, info.uid
        );
    }

    step("shutdown");
    tokio::task::spawn_blocking(move || sims.stop())
        .await?
        .context("stopping the sim network")?;
    drop(postgres);
    drop(nats);
    println!(
        "demo finished in {:.1}s; nothing left running",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn step(title: &str) {
    println!("\n== {title}");
}
