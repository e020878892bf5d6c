//! Topology as the nodes serve it: synchronizer parameters from the sequencer's database, read
//! through `TopologyManagerReadService` with `canton-client`.

use std::time::Duration;

use canton_client::{CantonClient, ClientConfig, NodeKind};

use crate::support::{sql, start, wait_connected};

fn client(node: &canton_sim::SimNode, kind: NodeKind) -> CantonClient {
    CantonClient::new(ClientConfig::new(
        node.id(),
        kind,
        node.admin_url().unwrap(),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronizer_parameters_come_from_the_network_file_through_the_sequencers_database() {
    let net = start(
        r#"
reconciliation_interval_ms = 2000
ledger_time_record_time_tolerance_ms = 45000
confirmation_response_timeout_ms = 7000

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
"#,
    );
    let sequencer = net.net.node("sequencer1").unwrap();
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let synchronizer_id = sql(
        &net,
        participant,
        "SELECT synchronizer_id FROM participant_synchronizer",
    );

    for (node, kind) in [
        (sequencer, NodeKind::Sequencer),
        (participant, NodeKind::Participant),
    ] {
        let periods = client(node, kind)
            .synchronizer_parameters(&synchronizer_id)
            .await
            .unwrap();
        assert_eq!(periods.len(), 1, "{}: {periods:?}", node.id());
        let current = &periods[0];
        assert_eq!(
            current.ledger_time_record_time_tolerance,
            Duration::from_secs(45)
        );
        assert_eq!(current.reconciliation_interval, Duration::from_secs(2));
        assert_eq!(
            current.confirmation_response_timeout,
            Duration::from_secs(7)
        );
        assert_eq!(current.serial, 1);
        assert!(current.valid_from.is_some() && current.valid_until.is_none());
    }
    assert_eq!(
        sql(
            &net,
            sequencer,
            "SELECT count(*) FROM topology_transaction WHERE mapping_code = 'synchronizer_parameters_state' AND NOT proposal"
        ),
        "1",
        "the parameters live in the sequencer's database"
    );
    let other = client(participant, NodeKind::Participant)
        .synchronizer_parameters("other::1220ab")
        .await
        .unwrap();
    assert!(
        other.is_empty(),
        "another synchronizer has no parameters here"
    );
}
