//! HA participant replicas on one database: the advisory lock decides the active replica.

use std::time::Duration;

use canton_client::NodeKind;
use canton_sim::control::http_request;

use crate::party::client;
use crate::support::{eventually, start, wait_connected};

async fn role(node: &canton_sim::SimNode) -> String {
    node.control()
        .info()
        .await
        .map(|i| i.role)
        .unwrap_or_default()
}

async fn health(node: &canton_sim::SimNode) -> u16 {
    http_request(node.http_health_addr().unwrap(), "GET", "/health", None)
        .await
        .map(|(status, _)| status)
        .unwrap_or(0)
}

/// Waits until `active` is active and every node of `passive` passive, on role and `/health`.
async fn wait_roles(net: &canton_sim::SimNetwork, active: &str, passive: &[&str]) {
    let what = format!("{active} active, {passive:?} passive");
    eventually(&what, Duration::from_secs(30), || async {
        let active_node = net.node(active).unwrap();
        let mut holds = role(active_node).await == "active" && health(active_node).await == 200;
        for id in passive {
            let node = net.node(id).unwrap();
            holds &= role(node).await == "passive" && health(node).await == 503;
        }
        holds.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_set_passive_moves_the_active_role_and_a_killed_active_hands_over() {
    let mut net = start(
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
replicas = ["a", "b"]
"#,
    );
    let first = eventually(
        "one replica takes the lock",
        Duration::from_secs(30),
        || async {
            for id in ["participant1.a", "participant1.b"] {
                if role(net.net.node(id).unwrap()).await == "active" {
                    return Some(id);
                }
            }
            None
        },
    )
    .await;
    let second = if first == "participant1.a" {
        "participant1.b"
    } else {
        "participant1.a"
    };
    wait_roles(&net.net, first, &[second]).await;
    let a = net.net.node(first).unwrap();
    let b = net.net.node(second).unwrap();
    assert_eq!(a.uid(), b.uid(), "replicas share the node's identity");
    assert_eq!(a.database_name(), b.database_name());
    wait_connected(a, "global").await;
    let status = client(b, NodeKind::Participant).status().await.unwrap();
    assert!(!status.active, "the passive replica reports itself passive");

    // SetPassive hands over to the waiting replica.
    client(a, NodeKind::Participant)
        .set_passive()
        .await
        .unwrap();
    wait_roles(&net.net, second, &[first]).await;
    wait_connected(b, "global").await;
    assert!(
        client(b, NodeKind::Participant)
            .status()
            .await
            .unwrap()
            .active
    );
    let refused = client(a, NodeKind::Participant)
        .disconnect_synchronizer("global")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("NODE_IS_PASSIVE_REPLICA"),
        "{refused}"
    );

    // Killing the active lets the passive take the lock.
    net.net.node_mut(second).unwrap().kill();
    let a = net.net.node(first).unwrap();
    eventually(
        "the passive replica takes over",
        Duration::from_secs(30),
        || async { (role(a).await == "active" && health(a).await == 200).then_some(()) },
    )
    .await;
    wait_connected(a, "global").await;

    // With no passive replica, SetPassive leaves the active in place.
    let alone = client(a, NodeKind::Participant)
        .set_passive()
        .await
        .unwrap_err();
    assert!(
        alone
            .to_string()
            .contains("NO_PASSIVE_REPLICA_TO_TAKE_OVER"),
        "{alone}"
    );
    assert_eq!(role(a).await, "active");
    assert_eq!(health(a).await, 200);
    let log = a.control().actions(0).await.unwrap();
    let outcomes: Vec<&str> = log
        .iter()
        .filter(|entry| entry.method.ends_with("/SetPassive"))
        .map(|entry| entry.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["OK", "NO_PASSIVE_REPLICA_TO_TAKE_OVER"]);
}
