//! The coordinator against a real nats-server.
#![allow(clippy::unwrap_used)]

mod agents;
mod clock_skew;
mod corpus;
mod driver;
mod kills;
mod late_command;
mod leadership;
mod registry;
mod simulation;
mod support;

use sidecar_bus::{BusSettings, Names, Network, NetworkId, connect};

pub async fn network(url: &str, names: Names) -> Network {
    let client = connect(url, "coordinator-test").await.unwrap();
    Network::ensure(client, names, &BusSettings::default())
        .await
        .unwrap()
}

pub fn fresh_names() -> Names {
    Names::new(NetworkId::new(testkit::unique_id("c")).unwrap())
}
