//! The registry with real NATS: heartbeats published by the test, one node falls silent.

use std::time::Duration;

use canton_coordinator::registry::{DetectorConfig, Health, QuorumProbe, Registry};
use prost::Message;
use proto_sidecar::{Heartbeat, Role};
use sidecar_bus::{Bucket, BusSettings, Names, Network, NodeId, connect};
use testkit::{NatsCluster, NatsOptions, NatsServer, wait_until};

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
    let registry = Registry::start(client.clone(), &names, config, None, None)
        .await
        .unwrap();

    let nodes = ["p1.a", "p1.b", "m1"].map(|id| NodeId::new(id).unwrap());
    let silent = nodes[0].clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender = spawn_heartbeats(client.clone(), names.clone(), nodes.to_vec(), stop_rx);

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

/// Heartbeats every 200 ms for `nodes` (replica `a` active, other replicas passive); the first
/// node falls silent once `silence_first` turns true.
fn spawn_heartbeats(
    publisher: async_nats::Client,
    names: Names,
    nodes: Vec<NodeId>,
    silence_first: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            seq += 1;
            for node in &nodes {
                if node == &nodes[0] && *silence_first.borrow() {
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
                // A publish fails only while the client reconnects; the next beat retries.
                let _ = publisher
                    .publish(names.heartbeat(node), heartbeat.encode_to_vec().into())
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The coordinator's server loses both of its peers: it is now a minority of one. The node it
/// stops hearing from may be alive on the majority's side, so no verdict may call it down;
/// once the peers are back and the probe commits again, the same silence does give a verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_no_down_verdict_from_a_nats_minority_until_the_quorum_is_back() {
    let mut cluster = NatsCluster::start(3, NatsOptions::default()).unwrap();
    let url = cluster.member(0).unwrap().url().to_owned();
    let client = connect(&url, "registry-minority-test").await.unwrap();
    let names = crate::fresh_names();
    let network = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            // Streams can be created once the cluster has elected its meta leader.
            match Network::ensure(
                client.clone(),
                names.clone(),
                &BusSettings {
                    replicas: 3,
                    ..BusSettings::default()
                },
            )
            .await
            {
                Ok(network) => break network,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the cluster accepts R3 buckets within 60 s");
    let config = DetectorConfig {
        heartbeat_interval: Duration::from_millis(200),
        failure_timeout: Duration::from_secs(2),
        max_tick_lateness: Duration::from_millis(500),
    };
    let probe = QuorumProbe {
        store: network.kv(Bucket::Leader).store().clone(),
        key: names.quorum_probe_key("org-a"),
    };
    let registry = Registry::start(client.clone(), &names, config, None, Some(probe))
        .await
        .unwrap();
    let nodes = vec![NodeId::new("p1").unwrap(), NodeId::new("p2").unwrap()];
    let silent = nodes[0].clone();
    let (silence, silenced) = tokio::sync::watch::channel(false);
    let sender = spawn_heartbeats(client.clone(), names.clone(), nodes.clone(), silenced);
    let took = wait_until(
        "verdicts trusted with both nodes alive",
        Duration::from_secs(30),
        || {
            !registry.suspended()
                && nodes
                    .iter()
                    .all(|n| registry.health(n) == Some(Health::Alive))
        },
    )
    .unwrap();
    eprintln!("trusted with a quorum after {took:?}");

    for peer in [1, 2] {
        cluster.member_mut(peer).unwrap().kill();
    }
    let took = wait_until(
        "verdicts suspended in the minority",
        Duration::from_secs(30),
        || registry.suspended(),
    )
    .unwrap();
    eprintln!("suspended {took:?} after the peers died");
    silence.send(true).unwrap();
    // Watch for three failure timeouts: a verdict from the minority would show as Down.
    let watched = std::time::Instant::now();
    while watched.elapsed() < config.failure_timeout * 3 {
        let health = registry.health(&silent);
        assert!(
            matches!(health, Some(Health::Alive | Health::Unknown)),
            "a minority gave the verdict {health:?} after {:?}",
            watched.elapsed()
        );
        assert!(registry.suspended(), "verdicts resumed without a quorum");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for peer in [1, 2] {
        cluster.member_mut(peer).unwrap().restart().unwrap();
    }
    let took = wait_until(
        "the silent node down once the quorum is back",
        Duration::from_secs(60),
        || registry.health(&silent) == Some(Health::Down),
    )
    .unwrap();
    eprintln!("down {took:?} after the peers restarted");
    assert_eq!(registry.health(&nodes[1]), Some(Health::Alive));
    sender.abort();
}
