use std::collections::HashSet;
use std::time::Duration;

use canton_sim::NodeKind;
use canton_sim::network::SimNode;
use proto_canton::admin::mediator::v30 as mediator;
use proto_canton::admin::mediator::v30::mediator_status_service_client::MediatorStatusServiceClient;

use crate::support::{eventually, start, wait_connected};

const SIX_NODES: &str = r#"
synchronizer = "global"

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "mediator1"
kind = "mediator"

[[node]]
id = "participant1"
kind = "participant"

[[node]]
id = "participant2"
kind = "participant"
organisation = "org2"

[[node]]
id = "participant3"
kind = "participant"
http_health = false

[[node]]
id = "validator1"
kind = "app"
participant = "participant1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_network_of_six_nodes_starts_and_stops_cleanly() {
    let net = start(SIX_NODES);
    let endpoints = net.net.endpoints();
    assert_eq!(endpoints.nodes.len(), 6);
    let ports: Vec<u16> = endpoints
        .nodes
        .iter()
        .flat_map(|n| {
            [
                n.admin,
                n.ledger,
                n.public,
                Some(n.grpc_health),
                n.http_health,
                Some(n.control),
            ]
        })
        .flatten()
        .map(|a| a.port())
        .collect();
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        ports.len(),
        "ports are distinct"
    );
    let databases: HashSet<_> = endpoints
        .nodes
        .iter()
        .map(|n| n.database_name.clone())
        .collect();
    assert_eq!(databases.len(), 6);

    for node in net.net.nodes() {
        let info = eventually(
            &format!("{} ready", node.id()),
            Duration::from_secs(15),
            || async { node.control().info().await.ok().filter(|i| i.ready) },
        )
        .await;
        assert_eq!(info.uid, node.uid());
        assert_eq!(
            net.pg
                .psql(
                    node.database_name(),
                    "SELECT node_id || ':' || kind FROM sim_node"
                )
                .unwrap(),
            format!("{}:{}", node.id(), node.kind())
        );
    }
    // Different organisations give different identities.
    let p1 = net.net.node("participant1").unwrap();
    let p2 = net.net.node("participant2").unwrap();
    assert_ne!(p1.uid().split("::").nth(1), p2.uid().split("::").nth(1));
    for participant in net
        .net
        .nodes()
        .iter()
        .filter(|n| n.kind() == NodeKind::Participant)
    {
        wait_connected(participant, "global").await;
    }
    let mediator_node = net.net.first(NodeKind::Mediator).unwrap();
    let physical = eventually(
        "mediator knows its synchronizer",
        Duration::from_secs(15),
        || async {
            let reply = MediatorStatusServiceClient::connect(mediator_node.admin_url()?)
                .await
                .ok()?
                .mediator_status(mediator::MediatorStatusRequest {})
                .await
                .ok()?
                .into_inner();
            match reply.kind? {
                mediator::mediator_status_response::Kind::Status(s)
                    if !s.physical_synchronizer_id.is_empty() =>
                {
                    Some(s.physical_synchronizer_id)
                }
                _ => None,
            }
        },
    )
    .await;
    assert!(physical.starts_with("global::"));
    assert!(net.net.node("validator1").unwrap().admin_addr().is_none());

    let pids: Vec<u32> = net.net.nodes().iter().filter_map(SimNode::pid).collect();
    assert_eq!(pids.len(), 6);
    let crate::support::Net { net, pg } = net;
    net.stop().unwrap();
    for pid in pids {
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
        assert!(!alive, "pid {pid} still alive after stop");
    }
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_another_nodes_database() {
    let net = start(
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"
"#,
    );
    let sequencer = net.net.node("sequencer1").unwrap();
    let mut config = sequencer.config().clone();
    config.id = "intruder".to_owned();
    config.ports = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let binary = testkit::binary_path("canton-sim").unwrap();
    let mut intruder =
        SimNode::prepare(config, &binary, dir.path(), sequencer.database_name()).unwrap();
    let error = intruder.start().unwrap_err().to_string();
    assert!(
        error.contains("database holds sequencer sequencer1, not sequencer intruder"),
        "{error}"
    );
}
