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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_topology_state_keys_and_parameter_changes_follow_canton_rules() {
    use proto_canton::crypto::admin::v30 as vault;
    use proto_canton::protocol::v30 as protocol;
    use proto_canton::protocol::v30::topology_mapping::Mapping;
    use proto_canton::topology::admin::v30 as topo;
    use proto_canton::topology::admin::v30::topology_manager_read_service_client::TopologyManagerReadServiceClient;
    use proto_canton::topology::admin::v30::topology_manager_write_service_client::TopologyManagerWriteServiceClient;
    use tonic::Code;

    use crate::party::{authorize, store};

    let net = start(
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "mediator1"
kind = "mediator"

[[node]]
id = "participant1"
kind = "participant"
"#,
    );
    let sequencer = net.net.node("sequencer1").unwrap();
    let mediator = net.net.node("mediator1").unwrap();
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let synchronizer_id = sql(
        &net,
        participant,
        "SELECT synchronizer_id FROM participant_synchronizer",
    );
    let head = || {
        Some(topo::BaseQuery {
            store: Some(store(&synchronizer_id)),
            time_query: Some(topo::base_query::TimeQuery::HeadState(())),
            ..Default::default()
        })
    };
    let mut read = TopologyManagerReadServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap();

    // Sequencer and mediator synchronizer state, the participant's permission.
    let sequencers = read
        .list_sequencer_synchronizer_state(topo::ListSequencerSynchronizerStateRequest {
            base_query: head(),
            filter_synchronizer_id: synchronizer_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        sequencers[0].item.as_ref().unwrap().active,
        [sequencer.member()]
    );
    let mediators = crate::support::eventually(
        "the mediator joined group 0",
        Duration::from_secs(30),
        || {
            let mut read = read.clone();
            let request = topo::ListMediatorSynchronizerStateRequest {
                base_query: head(),
                filter_synchronizer_id: String::new(),
            };
            let member = mediator.member();
            async move {
                let results = read
                    .list_mediator_synchronizer_state(request)
                    .await
                    .ok()?
                    .into_inner()
                    .results;
                let item = results.first()?.item.clone()?;
                item.active.contains(&member).then_some(item)
            }
        },
    )
    .await;
    assert_eq!((mediators.group, mediators.threshold), (0, 1));
    let permissions = read
        .list_participant_synchronizer_permission(
            topo::ListParticipantSynchronizerPermissionRequest {
                base_query: head(),
                filter_uid: participant.uid(),
            },
        )
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        permissions[0].item.as_ref().unwrap().permission,
        protocol::enums::ParticipantPermission::Submission as i32
    );

    // A key generated in the vault becomes the participant's owner-to-key mapping.
    let mut vault_client =
        vault::vault_service_client::VaultServiceClient::connect(participant.admin_url().unwrap())
            .await
            .unwrap();
    let key = match vault_client
        .generate_signing_key(vault::GenerateSigningKeyRequest {
            key_spec: 0,
            name: "rotated".to_owned(),
            usage_v30: vec![proto_canton::crypto::v30::SigningKeyUsage::Protocol as i32],
        })
        .await
        .unwrap()
        .into_inner()
        .public_key
    {
        Some(vault::generate_signing_key_response::PublicKey::V30(key)) => key,
        None => panic!("no key generated"),
    };
    let listed = vault_client
        .list_my_keys(vault::ListMyKeysRequest { filters: None })
        .await
        .unwrap()
        .into_inner()
        .private_keys_metadata;
    assert_eq!(listed.len(), 2, "namespace key and the new one");
    let mut write = TopologyManagerWriteServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap();
    let keys = write
        .authorize(authorize(
            &synchronizer_id,
            0,
            Mapping::OwnerToKeyMapping(protocol::OwnerToKeyMapping {
                member: participant.member(),
                public_keys: vec![proto_canton::crypto::v30::PublicKey {
                    key: Some(
                        proto_canton::crypto::v30::public_key::Key::SigningPublicKey(key.clone()),
                    ),
                }],
            }),
            true,
        ))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert!(!keys.proposal);
    let mut sequencer_read =
        TopologyManagerReadServiceClient::connect(sequencer.admin_url().unwrap())
            .await
            .unwrap();
    let owners = sequencer_read
        .list_owner_to_key_mapping(topo::ListOwnerToKeyMappingRequest {
            base_query: head(),
            filter_key_owner_type: "PAR".to_owned(),
            filter_key_owner_uid: participant.uid(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].item.as_ref().unwrap().public_keys.len(), 1);

    // Vetted packages are the participant's own decision.
    write
        .authorize(authorize(
            &synchronizer_id,
            0,
            Mapping::VettedPackages(protocol::VettedPackages {
                participant_uid: participant.uid(),
                package_ids: Vec::new(),
                packages: vec![protocol::vetted_packages::VettedPackage {
                    package_id: "pkg1".to_owned(),
                    valid_from_inclusive: None,
                    valid_until_exclusive: None,
                }],
            }),
            true,
        ))
        .await
        .unwrap();
    assert_eq!(
        sql(
            &net,
            sequencer,
            "SELECT count(*) FROM topology_transaction WHERE mapping_code = 'vetted_packages' AND NOT proposal"
        ),
        "1"
    );

    // Parameters belong to the synchronizer owner; raising the tolerance needs the force flag.
    let current = read
        .list_synchronizer_parameters_state(topo::ListSynchronizerParametersStateRequest {
            base_query: None,
            filter_synchronizer_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .results[0]
        .item;
    let mut parameters = protocol::SynchronizerParametersState {
        synchronizer_id: synchronizer_id.clone(),
        synchronizer_parameters: current,
    };
    parameters
        .synchronizer_parameters
        .as_mut()
        .unwrap()
        .ledger_time_record_time_tolerance = Some(prost_types::Duration {
        seconds: 120,
        nanos: 0,
    });
    let not_owner = write
        .authorize(authorize(
            &synchronizer_id,
            0,
            Mapping::SynchronizerParametersState(parameters.clone()),
            true,
        ))
        .await
        .unwrap_err();
    assert_eq!(not_owner.code(), Code::PermissionDenied);
    assert!(
        not_owner
            .message()
            .starts_with("TOPOLOGY_UNAUTHORIZED_TRANSACTION("),
        "{}",
        not_owner.message()
    );
    let mut owner = TopologyManagerWriteServiceClient::connect(sequencer.admin_url().unwrap())
        .await
        .unwrap();
    let unforced = owner
        .authorize(authorize(
            &synchronizer_id,
            0,
            Mapping::SynchronizerParametersState(parameters.clone()),
            true,
        ))
        .await
        .unwrap_err();
    assert_eq!(unforced.code(), Code::FailedPrecondition);
    assert!(
        unforced
            .message()
            .starts_with("TOPOLOGY_LEDGER_TIME_RECORD_TIME_TOLERANCE_INCREASE("),
        "{}",
        unforced.message()
    );
    let mut forced = authorize(
        &synchronizer_id,
        0,
        Mapping::SynchronizerParametersState(parameters),
        true,
    );
    forced.force_changes = vec![topo::ForceFlag::LedgerTimeRecordTimeToleranceIncrease as i32];
    owner.authorize(forced).await.unwrap();
    let periods = crate::support::eventually(
        "the participant sees the new parameters",
        Duration::from_secs(30),
        || {
            let client = client(participant, NodeKind::Participant);
            let synchronizer_id = synchronizer_id.clone();
            async move {
                let periods = client
                    .synchronizer_parameters(&synchronizer_id)
                    .await
                    .ok()?;
                (periods.first()?.serial == 2).then_some(periods)
            }
        },
    )
    .await;
    assert_eq!(
        periods[0].ledger_time_record_time_tolerance,
        Duration::from_secs(120)
    );
    let log = sequencer.control().actions(0).await.unwrap();
    let outcomes: Vec<&str> = log
        .iter()
        .filter(|a| a.method.ends_with("TopologyManagerWriteService/Authorize"))
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(
        outcomes,
        ["TOPOLOGY_LEDGER_TIME_RECORD_TIME_TOLERANCE_INCREASE", "OK"]
    );
}
