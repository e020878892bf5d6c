//! Offline party replication on the sim: topology proposals, party ACS export and import, the
//! onboarding flag.

use std::time::{Duration, SystemTime};

use canton_client::types::{ContractImportMode, OnboardingFlag, PartyAcsExport, PartyAcsImport};
use canton_client::{CantonClient, ClientConfig, NodeKind};
use futures::StreamExt;
use proto_canton::protocol::v30 as protocol;
use proto_canton::topology::admin::v30 as topo;
use proto_canton::topology::admin::v30::topology_manager_read_service_client::TopologyManagerReadServiceClient;
use proto_canton::topology::admin::v30::topology_manager_write_service_client::TopologyManagerWriteServiceClient;
use tonic::Code;

use crate::support::{Net, eventually, sql, start, wait_connected};

const THREE_PARTICIPANTS: &str = r#"
confirmation_response_timeout_ms = 1000
mediator_reaction_timeout_ms = 500

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
workload = { rate_per_second = 30.0 }

[[node]]
id = "participant2"
kind = "participant"

[[node]]
id = "participant3"
kind = "participant"
"#;

pub fn client(node: &canton_sim::SimNode, kind: NodeKind) -> CantonClient {
    CantonClient::new(ClientConfig::new(
        node.id(),
        kind,
        node.admin_url().unwrap(),
    ))
    .unwrap()
}

pub fn store(synchronizer_id: &str) -> topo::StoreId {
    topo::StoreId {
        store: Some(topo::store_id::Store::Synchronizer(topo::Synchronizer {
            kind: Some(topo::synchronizer::Kind::Id(synchronizer_id.to_owned())),
        })),
    }
}

fn hosting(
    uid: &str,
    permission: protocol::enums::ParticipantPermission,
    onboarding: bool,
) -> protocol::party_to_participant::HostingParticipant {
    protocol::party_to_participant::HostingParticipant {
        participant_uid: uid.to_owned(),
        permission: permission as i32,
        onboarding: onboarding
            .then_some(protocol::party_to_participant::hosting_participant::Onboarding {}),
    }
}

pub fn authorize(
    synchronizer_id: &str,
    serial: u32,
    mapping: protocol::topology_mapping::Mapping,
    must_fully_authorize: bool,
) -> topo::AuthorizeRequest {
    topo::AuthorizeRequest {
        r#type: Some(topo::authorize_request::Type::Proposal(
            topo::authorize_request::Proposal {
                change: protocol::enums::TopologyChangeOp::AddReplace as i32,
                serial,
                mapping: Some(protocol::TopologyMapping {
                    mapping: Some(mapping),
                }),
            },
        )),
        must_fully_authorize,
        store: Some(store(synchronizer_id)),
        ..Default::default()
    }
}

async fn party_mappings(
    node: &canton_sim::SimNode,
    synchronizer_id: &str,
    party: &str,
    proposals: bool,
) -> Vec<topo::list_party_to_participant_response::Result> {
    TopologyManagerReadServiceClient::connect(node.admin_url().unwrap())
        .await
        .unwrap()
        .list_party_to_participant(topo::ListPartyToParticipantRequest {
            base_query: Some(topo::BaseQuery {
                store: Some(store(synchronizer_id)),
                proposals,
                time_query: Some(topo::base_query::TimeQuery::HeadState(())),
                ..Default::default()
            }),
            filter_party: party.to_owned(),
            filter_participant: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .results
}

fn party_contracts(net: &Net, node: &str, party: &str) -> Vec<String> {
    let node = net.net.node(node).unwrap();
    let listed = sql(
        net,
        node,
        &format!(
            "SELECT coalesce(string_agg(contract_id, ',' ORDER BY contract_id), '') FROM participant_contract WHERE '{party}' = ANY(stakeholders)"
        ),
    );
    listed
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_party_moves_between_participants_with_its_contracts_and_onboarding_flag() {
    use protocol::enums::ParticipantPermission as Permission;
    use protocol::topology_mapping::Mapping;
    let net = start(THREE_PARTICIPANTS);
    let p1 = net.net.node("participant1").unwrap();
    let p2 = net.net.node("participant2").unwrap();
    wait_connected(p1, "global").await;
    wait_connected(p2, "global").await;
    let synchronizer_id = sql(
        &net,
        p1,
        "SELECT synchronizer_id FROM participant_synchronizer",
    );
    let party = format!("alice::{}", p1.config().fingerprint());
    let mut write1 = TopologyManagerWriteServiceClient::connect(p1.admin_url().unwrap())
        .await
        .unwrap();
    let mut write2 = TopologyManagerWriteServiceClient::connect(p2.admin_url().unwrap())
        .await
        .unwrap();

    // participant1 owns the party's namespace and hosts it: fully authorized at once.
    let enabled = write1
        .authorize(authorize(
            &synchronizer_id,
            0,
            Mapping::PartyToParticipant(protocol::PartyToParticipant {
                party: party.clone(),
                threshold: 1,
                participants: vec![hosting(&p1.uid(), Permission::Submission, false)],
                party_signing_keys: None,
            }),
            true,
        ))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert!(!enabled.proposal);
    eventually(
        "participant1 has contracts of the party",
        Duration::from_secs(30),
        || {
            let count = party_contracts(&net, "participant1", &party).len();
            async move { (count >= 5).then_some(()) }
        },
    )
    .await;

    // Quiet traffic, so what participant2 holds only changes by the import.
    p1.control().set_workload(0.0).await.unwrap();
    let (m1, m2) = (p1.member(), p2.member());
    eventually("participant2 holds what it shares with participant1", Duration::from_secs(30), || {
        let shared = |node: &str, peer: &str| {
            sql(
                &net,
                net.net.node(node).unwrap(),
                &format!("SELECT coalesce(string_agg(contract_id, ',' ORDER BY contract_id), '') FROM participant_contract WHERE '{peer}' = ANY(stakeholders)"),
            )
        };
        let settled = shared("participant1", &m2) == shared("participant2", &m1);
        async move { settled.then_some(()) }
    })
    .await;

    // Adding participant2 needs both sides; a different proposal for the same serial is not merged.
    let replicated = protocol::PartyToParticipant {
        party: party.clone(),
        threshold: 1,
        participants: vec![
            hosting(&p1.uid(), Permission::Submission, false),
            hosting(&p2.uid(), Permission::Observation, true),
        ],
        party_signing_keys: None,
    };
    let proposed = write1
        .authorize(authorize(
            &synchronizer_id,
            2,
            Mapping::PartyToParticipant(replicated.clone()),
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert!(proposed.proposal, "participant2 has not agreed yet");
    let mut different = replicated.clone();
    different.participants[1].permission = Permission::Confirmation as i32;
    let other = write2
        .authorize(authorize(
            &synchronizer_id,
            2,
            Mapping::PartyToParticipant(different),
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert!(
        other.proposal,
        "a different proposal is not merged into the first"
    );
    let open = party_mappings(p2, &synchronizer_id, &party, true).await;
    assert_eq!(open.len(), 2, "two separate proposals: {open:?}");
    assert!(
        open.iter()
            .all(|p| p.context.as_ref().unwrap().signed_by_fingerprints.len() == 1)
    );
    let current = party_mappings(p2, &synchronizer_id, &party, false).await;
    assert_eq!(current[0].context.as_ref().unwrap().serial, 1);
    let refused = write2
        .authorize(authorize(
            &synchronizer_id,
            5,
            Mapping::PartyToParticipant(replicated.clone()),
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("TOPOLOGY_SERIAL_MISMATCH("),
        "{}",
        refused.message()
    );

    // participant2 signs participant1's proposal by its hash: now fully authorized.
    let hash = open
        .iter()
        .map(|p| p.context.as_ref().unwrap())
        .find(|c| c.signed_by_fingerprints == [p1.config().fingerprint()])
        .unwrap()
        .transaction_hash
        .clone();
    let accepted = write2
        .authorize(topo::AuthorizeRequest {
            r#type: Some(topo::authorize_request::Type::TransactionHash(hex::encode(
                hash,
            ))),
            must_fully_authorize: true,
            store: Some(store(&synchronizer_id)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .transaction
        .unwrap();
    assert!(!accepted.proposal);
    let current = party_mappings(p1, &synchronizer_id, &party, false).await;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].context.as_ref().unwrap().serial, 2);
    assert_eq!(current[0].item.as_ref().unwrap(), &replicated);
    assert!(
        party_mappings(p2, &synchronizer_id, &party, true)
            .await
            .is_empty(),
        "the other proposal is obsolete"
    );

    // Export from participant1 at the activation, import on participant2 only while disconnected.
    let source = client(p1, NodeKind::Participant);
    let target = client(p2, NodeKind::Participant);
    let mut chunks = source
        .export_party_acs(&PartyAcsExport {
            party_id: party.clone(),
            synchronizer_id: synchronizer_id.clone(),
            target_participant_uid: p2.uid(),
            begin_offset_exclusive: 0,
            wait_for_activation_timeout: Some(Duration::from_secs(5)),
        })
        .await
        .unwrap();
    let mut snapshot = Vec::new();
    while let Some(chunk) = chunks.next().await {
        snapshot.extend(chunk.unwrap());
    }
    let exported: Vec<String> = canton_sim::acs::decode(&snapshot)
        .unwrap()
        .into_iter()
        .map(|c| c.contract_id)
        .collect();
    assert!(exported.len() >= 5, "{exported:?}");
    let import = PartyAcsImport {
        synchronizer_id: synchronizer_id.clone(),
        party_id: Some(party.clone()),
        workflow_id_prefix: "import-test".to_owned(),
        mode: ContractImportMode::Validation,
    };
    let chunks_of = |bytes: &[u8]| {
        futures::stream::iter(bytes.chunks(100).map(<[u8]>::to_vec).collect::<Vec<_>>())
    };
    // participant2 already sees the party's contracts it is a stakeholder of itself.
    let before_import = party_contracts(&net, "participant2", &party);
    let connected_import = target
        .import_party_acs(&import, chunks_of(&snapshot))
        .await
        .unwrap_err();
    assert!(
        connected_import
            .to_string()
            .contains("SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE"),
        "{connected_import}"
    );
    assert_eq!(
        party_contracts(&net, "participant2", &party),
        before_import,
        "the refused import changed nothing"
    );
    assert!(
        exported.iter().any(|id| !before_import.contains(id)),
        "the export carries contracts participant2 did not have"
    );
    target.disconnect_synchronizer("global").await.unwrap();
    target
        .import_party_acs(&import, chunks_of(&snapshot))
        .await
        .unwrap();
    let mut expected = exported.clone();
    expected.extend(before_import.iter().cloned());
    expected.sort();
    expected.dedup();
    assert_eq!(party_contracts(&net, "participant2", &party), expected);
    let log = p2.control().actions(0).await.unwrap();
    let imports: Vec<&str> = log
        .iter()
        .filter(|a| a.method.ends_with("/ImportPartyAcs"))
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(
        imports,
        ["SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE", "OK"]
    );

    // The onboarding flag stays until the earliest safe time, then clears.
    assert!(
        target
            .reconnect_synchronizer("global", false)
            .await
            .unwrap()
    );
    let first = target
        .clear_party_onboarding_flag(&party, &synchronizer_id, 0, None)
        .await
        .unwrap();
    let OnboardingFlag::Set { retry_after } = first else {
        panic!("the flag is set right after onboarding: {first:?}");
    };
    let cleared_at = eventually(
        "the onboarding flag clears",
        Duration::from_secs(30),
        || {
            let target = &target;
            let party = party.clone();
            let synchronizer_id = synchronizer_id.clone();
            async move {
                match target
                    .clear_party_onboarding_flag(&party, &synchronizer_id, 0, None)
                    .await
                    .unwrap()
                {
                    OnboardingFlag::Cleared => Some(SystemTime::now()),
                    OnboardingFlag::Set { .. } => None,
                }
            }
        },
    )
    .await;
    assert!(
        cleared_at >= retry_after,
        "cleared only after the earliest safe time"
    );
    let current = party_mappings(p2, &synchronizer_id, &party, false).await;
    let item = current[0].item.as_ref().unwrap();
    assert!(item.participants.iter().all(|p| p.onboarding.is_none()));
    assert_eq!(current[0].context.as_ref().unwrap().serial, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_commands_need_the_flag_and_a_disconnected_participant() {
    let net = start(
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"

[[node]]
id = "participant2"
kind = "participant"
repair_commands_enabled = true
"#,
    );
    let p1 = net.net.node("participant1").unwrap();
    let p2 = net.net.node("participant2").unwrap();
    wait_connected(p1, "global").await;
    wait_connected(p2, "global").await;
    let physical = sql(
        &net,
        p2,
        "SELECT physical_synchronizer_id FROM participant_synchronizer",
    );
    let (plain, repairable) = (
        client(p1, NodeKind::Participant),
        client(p2, NodeKind::Participant),
    );
    let refused = |result: canton_client::Result<()>| result.unwrap_err().to_string();

    let disabled = refused(plain.ignore_events(&physical, 1000, 1001, false).await);
    assert!(disabled.contains("REPAIR_COMMANDS_DISABLED"), "{disabled}");
    let online = refused(repairable.ignore_events(&physical, 1000, 1001, false).await);
    assert!(
        online.contains("SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE"),
        "{online}"
    );

    repairable.disconnect_synchronizer("global").await.unwrap();
    let processed: i64 = sql(&net, p2, "SELECT last_counter FROM member_cursor")
        .parse()
        .unwrap();
    let past = refused(
        repairable
            .ignore_events(&physical, processed, processed + 2, false)
            .await,
    );
    assert!(past.contains("REPAIR_IGNORE_EVENTS_ERROR"), "{past}");
    repairable
        .ignore_events(&physical, processed + 1, processed + 2, false)
        .await
        .unwrap();
    assert_eq!(
        sql(&net, p2, "SELECT count(*) FROM participant_ignored_event"),
        "2"
    );
    repairable
        .unignore_events(&physical, processed + 2, processed + 5, false)
        .await
        .unwrap();
    assert_eq!(
        sql(&net, p2, "SELECT count(*) FROM participant_ignored_event"),
        "1"
    );

    // The ignored counter is stepped over when the participant reconnects.
    assert!(
        repairable
            .reconnect_synchronizer("global", false)
            .await
            .unwrap()
    );
    eventually(
        "participant2 moves past the ignored event",
        Duration::from_secs(30),
        || {
            let cursor: i64 = sql(&net, p2, "SELECT last_counter FROM member_cursor")
                .parse()
                .unwrap_or(-1);
            async move { (cursor > processed + 2).then_some(()) }
        },
    )
    .await;

    let outcomes: Vec<(String, String)> = p2
        .control()
        .actions(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.method.contains("ParticipantRepairService"))
        .map(|a| (a.method.rsplit('/').next().unwrap().to_owned(), a.outcome))
        .collect();
    let expected: Vec<(String, String)> = [
        ("IgnoreEvents", "SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE"),
        ("IgnoreEvents", "REPAIR_IGNORE_EVENTS_ERROR"),
        ("IgnoreEvents", "OK"),
        ("UnignoreEvents", "OK"),
    ]
    .iter()
    .map(|(m, o)| ((*m).to_owned(), (*o).to_owned()))
    .collect();
    assert_eq!(outcomes, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_migrate_synchronizer_moves_a_disconnected_participant_to_another_synchronizer() {
    use proto_canton::admin::participant::v30 as admin;
    use proto_canton::admin::participant::v30::participant_repair_service_client::ParticipantRepairServiceClient;

    let net = start(
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
repair_commands_enabled = true
"#,
    );
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    // A second synchronizer: its own sequencer on its own database.
    let mut config = net.net.node("sequencer1").unwrap().config().clone();
    config.id = "sequencer2".to_owned();
    config.ports = Default::default();
    config.synchronizer.as_mut().unwrap().name = "other".to_owned();
    let database = testkit::unique_id("other");
    net.pg.create_database(&database).unwrap();
    config.database = canton_sim::PostgresTarget::of(&net.pg).conninfo(&database);
    let dir = tempfile::tempdir().unwrap();
    let binary = testkit::binary_path("canton-sim").unwrap();
    let mut other = canton_sim::SimNode::prepare(config, &binary, dir.path(), &database).unwrap();
    other.start().unwrap();

    let mut repair = ParticipantRepairServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap();
    let migrate = |alias: &str, url: &str| admin::MigrateSynchronizerRequest {
        source_synchronizer_alias: "global".to_owned(),
        target_synchronizer_connection_config: Some(crate::support::connection_config(
            alias, url, false,
        )),
        force: false,
    };
    let other_url = other.public_url().unwrap();
    let online = repair
        .migrate_synchronizer(migrate("other", &other_url))
        .await
        .unwrap_err();
    assert_eq!(online.code(), Code::FailedPrecondition);
    assert!(
        online
            .message()
            .starts_with("SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE("),
        "{}",
        online.message()
    );
    let contracts_before = sql(
        &net,
        participant,
        "SELECT count(*) FROM participant_contract",
    );

    client(participant, NodeKind::Participant)
        .disconnect_synchronizer("global")
        .await
        .unwrap();
    let same_url = net.net.node("sequencer1").unwrap().public_url().unwrap();
    let same = repair
        .migrate_synchronizer(migrate("again", &same_url))
        .await
        .unwrap_err();
    assert_eq!(same.code(), Code::InvalidArgument, "{}", same.message());
    repair
        .migrate_synchronizer(migrate("other", &other_url))
        .await
        .unwrap();
    assert_eq!(
        sql(
            &net,
            participant,
            "SELECT string_agg(alias || '=' || split_part(synchronizer_id, '::', 1), ',') FROM participant_synchronizer"
        ),
        "other=other"
    );
    assert_eq!(
        sql(
            &net,
            participant,
            "SELECT count(*) FROM participant_contract"
        ),
        contracts_before
    );
    assert!(
        client(participant, NodeKind::Participant)
            .reconnect_synchronizer("other", false)
            .await
            .unwrap()
    );
    other.stop().unwrap();
}
