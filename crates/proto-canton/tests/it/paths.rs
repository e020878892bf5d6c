//! The golden table of every gRPC path we define, checked against what we compile and against
//! the paths the appendix lists.

use crate::descriptors::{Method, compiled};
use crate::facts::{appendix, appendix_paths, notes};
use std::collections::BTreeSet;

const P: &str = "com.digitalasset.canton.admin.participant.v30";

/// `(path, shape)`; shape is "unary", "server stream" or "client stream".
fn golden_3_4() -> Vec<(String, &'static str)> {
    let mut table: Vec<(String, &'static str)> = Vec::new();
    let mut add = |service: &str, methods: &[(&str, &'static str)]| {
        for (method, shape) in methods {
            table.push((format!("/{service}/{method}"), shape));
        }
    };
    add(
        "com.daml.ledger.api.v2.StateService",
        &[("GetLedgerEnd", "unary")],
    );
    add(
        "com.daml.ledger.api.v2.admin.ParticipantPruningService",
        &[("Prune", "unary")],
    );
    add(
        "com.digitalasset.canton.connection.v30.ApiInfoService",
        &[("GetApiInfo", "unary")],
    );
    add(
        "com.digitalasset.canton.admin.health.v30.StatusService",
        &[
            ("HealthDump", "server stream"),
            ("SetLogLevel", "unary"),
            ("GetLastErrors", "unary"),
            ("GetLastErrorTrace", "unary"),
        ],
    );
    add(
        &format!("{P}.ParticipantStatusService"),
        &[("ParticipantStatus", "unary")],
    );
    add(
        "com.digitalasset.canton.admin.sequencer.v30.SequencerStatusService",
        &[("SequencerStatus", "unary")],
    );
    add(
        "com.digitalasset.canton.admin.mediator.v30.MediatorStatusService",
        &[("MediatorStatus", "unary")],
    );
    add(
        &format!("{P}.EnterpriseParticipantReplicationService"),
        &[("SetPassive", "unary")],
    );
    add(&format!("{P}.PingService"), &[("Ping", "unary")]);
    add(
        &format!("{P}.SynchronizerConnectivityService"),
        &[
            ("ConnectSynchronizer", "unary"),
            ("RegisterSynchronizer", "unary"),
            ("ReconnectSynchronizers", "unary"),
            ("ReconnectSynchronizer", "unary"),
            ("ModifySynchronizer", "unary"),
            ("DisconnectSynchronizer", "unary"),
            ("DisconnectAllSynchronizers", "unary"),
            ("Logout", "unary"),
            ("ListConnectedSynchronizers", "unary"),
            ("ListRegisteredSynchronizers", "unary"),
            ("GetSynchronizerId", "unary"),
        ],
    );
    add(
        &format!("{P}.PartyManagementService"),
        &[
            ("ExportPartyAcs", "server stream"),
            ("ImportPartyAcs", "client stream"),
            ("GetHighestOffsetByTimestamp", "unary"),
            ("ClearPartyOnboardingFlag", "unary"),
        ],
    );
    add(
        &format!("{P}.ParticipantRepairService"),
        &[
            ("ExportAcs", "server stream"),
            ("ImportAcs", "client stream"),
            ("PurgeContracts", "unary"),
            ("MigrateSynchronizer", "unary"),
            ("ChangeAssignation", "unary"),
            ("PurgeDeactivatedSynchronizer", "unary"),
            ("IgnoreEvents", "unary"),
            ("UnignoreEvents", "unary"),
        ],
    );
    add(
        &format!("{P}.ParticipantInspectionService"),
        &[
            ("LookupOffsetByTime", "unary"),
            ("LookupSentAcsCommitments", "unary"),
            ("LookupReceivedAcsCommitments", "unary"),
            ("GetIntervalsBehindForCounterParticipants", "unary"),
            ("CountInFlight", "unary"),
        ],
    );
    add(
        &format!("{P}.PruningService"),
        &[
            ("Prune", "unary"),
            ("GetSafePruningOffset", "unary"),
            ("SetSchedule", "unary"),
            ("SetParticipantSchedule", "unary"),
            ("SetCron", "unary"),
            ("SetMaxDuration", "unary"),
            ("SetRetention", "unary"),
            ("ClearSchedule", "unary"),
            ("GetSchedule", "unary"),
            ("GetParticipantSchedule", "unary"),
            ("SetNoWaitCommitmentsFrom", "unary"),
            ("ResetNoWaitCommitmentsFrom", "unary"),
            ("GetNoWaitCommitmentsFrom", "unary"),
        ],
    );
    add(
        "com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService",
        &[
            ("Prune", "unary"),
            ("SetSchedule", "unary"),
            ("SetCron", "unary"),
            ("SetMaxDuration", "unary"),
            ("SetRetention", "unary"),
            ("ClearSchedule", "unary"),
            ("GetSchedule", "unary"),
            ("FindPruningTimestamp", "unary"),
        ],
    );
    add(
        "com.digitalasset.canton.sequencer.admin.v30.SequencerAdministrationService",
        &[("PruningStatus", "unary"), ("DisableMember", "unary")],
    );
    add(
        "com.digitalasset.canton.topology.admin.v30.IdentityInitializationService",
        &[("GetId", "unary"), ("CurrentTime", "unary")],
    );
    add(
        "com.digitalasset.canton.topology.admin.v30.TopologyAggregationService",
        &[("ListParties", "unary")],
    );
    add(
        "com.digitalasset.canton.topology.admin.v30.TopologyManagerReadService",
        &[
            ("ListOwnerToKeyMapping", "unary"),
            ("ListSynchronizerTrustCertificate", "unary"),
            ("ListParticipantSynchronizerPermission", "unary"),
            ("ListPartyToParticipant", "unary"),
            ("ListSynchronizerParametersState", "unary"),
            ("ListMediatorSynchronizerState", "unary"),
            ("ListSequencerSynchronizerState", "unary"),
            ("ListAvailableStores", "unary"),
        ],
    );
    add(
        "com.digitalasset.canton.topology.admin.v30.TopologyManagerWriteService",
        &[
            ("Authorize", "unary"),
            ("AddTransactions", "unary"),
            ("SignTransactions", "unary"),
        ],
    );
    // Outside the appendix (see SUPPLEMENT_PATHS).
    add(
        "grpc.health.v1.Health",
        &[("Check", "unary"), ("Watch", "server stream")],
    );
    add(
        "com.digitalasset.canton.crypto.admin.v30.VaultService",
        &[
            ("ListMyKeys", "unary"),
            ("GenerateSigningKey", "unary"),
            ("GenerateEncryptionKey", "unary"),
            ("ExportKeyPair", "unary"),
        ],
    );
    add(
        "com.digitalasset.canton.mediator.admin.v30.SequencerConnectionService",
        &[
            ("GetConnection", "unary"),
            ("SetConnection", "unary"),
            ("Logout", "unary"),
        ],
    );
    table
}

/// Paths the 3.5 tree defines: the replication rename, ImportPartyAcs with the 3.5 request, and
/// the status services again (same paths; their NotInitialized carries the 3.5 version field).
fn golden_3_5() -> Vec<(String, &'static str)> {
    vec![
        (
            format!("/{P}.ParticipantStatusService/ParticipantStatus"),
            "unary",
        ),
        (
            "/com.digitalasset.canton.admin.sequencer.v30.SequencerStatusService/SequencerStatus"
                .into(),
            "unary",
        ),
        (
            "/com.digitalasset.canton.admin.mediator.v30.MediatorStatusService/MediatorStatus"
                .into(),
            "unary",
        ),
        (
            format!("/{P}.ParticipantReplicationService/SetPassive"),
            "unary",
        ),
        (
            format!("/{P}.PartyManagementService/ImportPartyAcs"),
            "client stream",
        ),
    ]
}

/// Services whose paths are not in the appendix, and why they are still right.
const SUPPLEMENT_PATHS: &[(&str, &str)] = &[
    (
        "/grpc.health.v1.",
        "the standard gRPC health protocol (notes §6.3)",
    ),
    (
        "/com.digitalasset.canton.crypto.admin.v30.VaultService/",
        "notes §8.4",
    ),
    (
        "/com.digitalasset.canton.mediator.admin.v30.SequencerConnectionService/",
        "the mediator's connection service (README provenance)",
    ),
];

fn shape(method: &Method) -> &'static str {
    match (method.client_streaming, method.server_streaming) {
        (false, false) => "unary",
        (false, true) => "server stream",
        (true, false) => "client stream",
        (true, true) => "bidi stream",
    }
}

fn compiled_table(encoded: &[u8]) -> BTreeSet<(String, &'static str)> {
    compiled(encoded)
        .methods
        .iter()
        .map(|method| (method.path.clone(), shape(method)))
        .collect()
}

#[test]
fn golden_table_equals_what_we_compile() {
    let golden: BTreeSet<_> = golden_3_4().into_iter().collect();
    assert_eq!(golden.len(), golden_3_4().len(), "duplicate golden rows");
    assert_eq!(compiled_table(proto_canton::LINE_3_4_DESCRIPTORS), golden);
    let golden_3_5: BTreeSet<_> = golden_3_5().into_iter().collect();
    assert_eq!(
        compiled_table(proto_canton::LINE_3_5_DESCRIPTORS),
        golden_3_5
    );
}

#[test]
fn every_golden_path_is_in_the_appendix_with_its_streaming_shape() {
    let appendix = appendix();
    let listed: BTreeSet<String> = appendix_paths(&appendix).into_iter().collect();
    assert!(
        listed.len() > 100,
        "appendix parse found {} paths",
        listed.len()
    );
    let mut from_appendix = 0;
    for (path, shape) in golden_3_4() {
        if SUPPLEMENT_PATHS
            .iter()
            .any(|(prefix, _)| path.starts_with(prefix))
        {
            assert!(
                !listed.contains(&path),
                "{path} is in the appendix; drop its exemption"
            );
            continue;
        }
        assert!(listed.contains(&path), "{path} is not in the appendix");
        let line = appendix
            .lines()
            .find(|line| line.starts_with(&format!("- `{path}`")))
            .unwrap();
        let appendix_shape = if line.ends_with("(server stream)") {
            "server stream"
        } else if line.ends_with("(client stream)") {
            "client stream"
        } else {
            "unary"
        };
        assert_eq!(shape, appendix_shape, "{path}");
        from_appendix += 1;
    }
    eprintln!("{from_appendix} paths found in the appendix");
}

#[test]
fn line_3_5_paths_are_the_ones_the_notes_give() {
    let notes = notes();
    let appendix_paths: BTreeSet<String> = appendix_paths(&appendix()).into_iter().collect();
    let renamed = format!("/{P}.ParticipantReplicationService/SetPassive");
    assert!(
        notes.contains(&format!("`{renamed}` (3.5+)")),
        "notes §6.1 no longer gives {renamed}"
    );
    assert!(!appendix_paths.contains(&renamed), "3.4 has no {renamed}");
    assert!(appendix_paths.contains(&format!(
        "/{P}.EnterpriseParticipantReplicationService/SetPassive"
    )));
    assert!(appendix_paths.contains(&format!("/{P}.PartyManagementService/ImportPartyAcs")));
}

#[test]
fn generated_services_carry_the_profile_dependent_names() {
    // tonic builds each request path from these names; the two SetPassive services differ.
    use proto_canton::admin::participant::v30::enterprise_participant_replication_service_server as line_3_4;
    use proto_canton::line_3_5::admin::participant::v30::participant_replication_service_server as line_3_5;
    assert_eq!(
        line_3_4::SERVICE_NAME,
        format!("{P}.EnterpriseParticipantReplicationService")
    );
    assert_eq!(
        line_3_5::SERVICE_NAME,
        format!("{P}.ParticipantReplicationService")
    );
}
