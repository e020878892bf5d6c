//! canton-ops against a live coordinator on a real nats-server, in text and JSON.
#![allow(clippy::unwrap_used)]

#[path = "../../../coordinator/tests/it/support.rs"]
#[allow(dead_code)]
mod support;

mod cli;

use sidecar_bus::{BusSettings, Names, Network, NetworkId, connect};

pub async fn network(url: &str, names: Names) -> Network {
    let client = connect(url, "ops-test").await.unwrap();
    Network::ensure(client, names, &BusSettings::default())
        .await
        .unwrap()
}

pub fn fresh_names() -> Names {
    Names::new(NetworkId::new(testkit::unique_id("o")).unwrap())
}
