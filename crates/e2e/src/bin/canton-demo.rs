//! The README's demo: starts the infrastructure of a demo network, shows it, and stops it.
use std::time::Instant;

use anyhow::Context;
use sidecar_bus::{BusSettings, Names, Network, NetworkId, connect};
use testkit::{NatsServer, Postgres};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = sidecar_telemetry::init(sidecar_telemetry::LogFormat::Text);
    let start = Instant::now();

    let nats = NatsServer::start().context("starting nats-server")?;
    println!(
        "nats-server   {} (pid {})",
        nats.url(),
        nats.pid().unwrap_or_default()
    );
    let postgres = Postgres::start().context("starting PostgreSQL")?;
    println!(
        "postgres      {} (pid {})",
        postgres.url("postgres"),
        postgres.pid().unwrap_or_default()
    );

    let names = Names::new(NetworkId::new("demo")?);
    let client = connect(nats.url(), "canton-demo").await?;
    let network = Network::ensure(client, names.clone(), &BusSettings::default()).await?;
    println!(
        "streams       {} {} {}",
        names.command_stream(),
        names.ack_stream(),
        names.audit_stream()
    );
    println!("heartbeats    {}", names.heartbeats());
    drop(network);

    println!(
        "demo finished in {:.1}s; stopping everything",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
