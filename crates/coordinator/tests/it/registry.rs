//! The registry with real NATS: heartbeats published by the test, one node falls silent.

use std::time::Duration;

use canton_coordinator::registry::{DetectorConfig, Health, Registry};
use prost::Message;
use proto_sidecar::{Heartbeat, Role};
use sidecar_bus::{NodeId, connect};
use testkit::{NatsServer, wait_until};

use crate::fresh_names;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_suspect_then_down_while_the_others_stay_alive() {
    let server = NatsServer::shared_or_start().unwrap();
    let names = fresh_names();
    let client = connect(server.url(), "registry-test").await.unwrap();
    let config = DetectorConfig {
        heartbeat_interval: Duration::from_millis(200),
        failure_timeout: Duration::from_secs(2),
        max_tick_lateness: Duration::from_millis(500),
    };
    let registry = Registry::start(client.clone(), &names, config, None)
        .await
        .unwrap();

    let nodes = ["p1.a", "p1.b", "m1"].map(|id| NodeId::new(id).unwrap());
    let silent = nodes[0].clone();
    let publisher = client.clone();
    let hb_names = names.clone();
    let hb_nodes = nodes.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = tokio::spawn(async move {
        let mut seq = 0;
        loop {
            seq += 1;
            for node in &hb_nodes {
                if node == &hb_nodes[0] && *stop_rx.borrow() {
                    continue;
                }
                let role = match node.replica() {
                    Some("a") => Role::Active,
                    Some(_) => Role::Passive,
                    None => Role::Standalone,
                };
                let heartbeat = Heartbeat {
                    node: node.logical().into(),
                    replica: node.replica().unwrap_or_default().into(),
                    seq,
                    role: role as i32,
                    interval_ms: 200,
                    ..Default::default()
                };
                publisher
                    .publish(hb_names.heartbeat(node), heartbeat.encode_to_vec().into())
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let took = wait_until("all alive", Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| registry.health(n) == Some(Health::Alive))
    })
    .unwrap();
    eprintln!("all alive after {took:?}");
    let view = registry.view();
    assert_eq!(view.len(), 2);
    assert_eq!(view[1].logical, "p1");
    assert_eq!(view[1].active, Some(silent.clone()));

    let took = wait_until("verdicts trusted", Duration::from_secs(30), || {
        !registry.suspended()
    })
    .unwrap();
    eprintln!("verdicts trusted after {took:?}");

    stop_tx.send(true).unwrap();
    let suspect = wait_until("silent node suspect", Duration::from_secs(30), || {
        registry.health(&silent) == Some(Health::Suspect)
    })
    .unwrap();
    let down = wait_until("silent node down", Duration::from_secs(30), || {
        registry.health(&silent) == Some(Health::Down)
    })
    .unwrap();
    eprintln!("suspect after {suspect:?}, down {down:?} later");
    assert!(
        suspect + down >= Duration::from_millis(1500),
        "down too early"
    );
    for node in &nodes[1..] {
        assert_eq!(registry.health(node), Some(Health::Alive), "{node}");
    }
    assert_eq!(
        registry.view()[1].active,
        None,
        "the silent active replica is not active"
    );
    sender.abort();
}
