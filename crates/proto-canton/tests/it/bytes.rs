//! Encoded bytes of Canton messages equal bytes written by hand from the appendix's field
//! numbers (tag = field number << 3 | wire type; 0 = varint, 2 = length-delimited).

use prost::Message;
use proto_canton::admin::participant::v30 as participant;
use proto_canton::admin::sequencer::v30::SequencerConnectionValidation;
use std::fmt::Debug;

/// Encoding gives exactly `bytes`, and decoding `bytes` gives the message back.
fn assert_wire<M: Message + Default + PartialEq + Debug>(message: M, bytes: &[u8]) {
    assert_eq!(message.encode_to_vec(), bytes, "encoding of {message:?}");
    assert_eq!(M::decode(bytes).unwrap(), message, "decoding");
}

#[test]
fn modify_synchronizer_request_3_4_numbering() {
    let request = participant::ModifySynchronizerRequest {
        physical_synchronizer_id: Some("ps".into()),
        new_config: Some(participant::SynchronizerConnectionConfig {
            synchronizer_alias: "g".into(),
            manual_connect: true,
            ..Default::default()
        }),
        sequencer_connection_validation: SequencerConnectionValidation::All as i32,
    };
    // physical_synchronizer_id = 1, new_config = 2 { alias = 1, manual_connect = 3 }, validation = 3.
    assert_wire(request, b"\x0a\x02ps\x12\x05\x0a\x01g\x18\x01\x18\x03");
    // `opt`: an explicitly empty id is sent (field present), unlike an absent one.
    let empty_id = participant::ModifySynchronizerRequest {
        physical_synchronizer_id: Some(String::new()),
        ..Default::default()
    };
    assert_wire(empty_id, b"\x0a\x00");
}

#[test]
fn list_connected_synchronizers_response_has_healthy_at_four() {
    let response = participant::ListConnectedSynchronizersResponse {
        connected_synchronizers: vec![participant::list_connected_synchronizers_response::Result {
            synchronizer_alias: "a".into(),
            synchronizer_id: "s::1".into(),
            physical_synchronizer_id: "s::1::34-0".into(),
            healthy: true,
        }],
    };
    assert_wire(
        response,
        b"\x0a\x17\x0a\x01a\x12\x04s::1\x1a\x0as::1::34-0\x20\x01",
    );
}

#[test]
fn import_party_acs_request_differs_between_3_4_and_3_5() {
    let line_3_4 = participant::ImportPartyAcsRequest {
        acs_snapshot: vec![1, 2],
        workflow_id_prefix: "w".into(),
        contract_import_mode: participant::ContractImportMode::Validation as i32,
        representative_package_id_override: None,
    };
    let line_3_4_bytes = b"\x0a\x02\x01\x02\x12\x01w\x18\x02";
    assert_wire(line_3_4, line_3_4_bytes);

    use proto_canton::line_3_5::admin::participant::v30 as participant_3_5;
    let line_3_5 = participant_3_5::ImportPartyAcsRequest {
        acs_snapshot: vec![1, 2],
        synchronizer_id: Some("s".into()),
        workflow_id_prefix: Some("w".into()),
        contract_import_mode: Some(participant_3_5::ContractImportMode::Validation as i32),
        representative_package_id_override: None,
        party_id: Some("p".into()),
    };
    assert_wire(
        line_3_5,
        b"\x0a\x02\x01\x02\x12\x01s\x1a\x01w\x20\x02\x32\x01p",
    );
    // 3.4 bytes read as 3.5 fail: field 3 is a varint mode in 3.4 and a string prefix in 3.5.
    // This is why the client picks a profile before sending.
    let misread = participant_3_5::ImportPartyAcsRequest::decode(&line_3_4_bytes[..]);
    assert!(misread.is_err(), "3.4 bytes decoded as 3.5: {misread:?}");
}

#[test]
fn clear_party_onboarding_flag_request_and_response() {
    let request = participant::ClearPartyOnboardingFlagRequest {
        party_id: "p".into(),
        synchronizer_id: "s".into(),
        begin_offset_exclusive: 300,
        wait_for_activation_timeout: Some(prost_types::Duration {
            seconds: 120,
            nanos: 0,
        }),
    };
    // 300 = 0b10_0101100 → 0xac 0x02; Duration { seconds = 1 } inside field 4.
    assert_wire(request, b"\x0a\x01p\x12\x01s\x18\xac\x02\x22\x02\x08\x78");
    let still_set = participant::ClearPartyOnboardingFlagResponse {
        onboarded: false,
        earliest_retry_timestamp: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
    };
    assert_wire(still_set, b"\x12\x02\x08\x01");
}

#[test]
fn set_passive_request_is_empty_on_both_lines() {
    assert_wire(participant::SetPassiveRequest {}, b"");
    assert_wire(
        proto_canton::line_3_5::admin::participant::v30::SetPassiveRequest {},
        b"",
    );
}

#[test]
fn export_party_acs_request() {
    let request = participant::ExportPartyAcsRequest {
        party_id: "p".into(),
        synchronizer_id: "s".into(),
        target_participant_uid: "t".into(),
        begin_offset_exclusive: 5,
        wait_for_activation_timeout: None,
    };
    assert_wire(request, b"\x0a\x01p\x12\x01s\x1a\x01t\x20\x05");
}

#[test]
fn disable_member_request() {
    let request = proto_canton::sequencer::admin::v30::DisableMemberRequest {
        member: "MED::m::f".into(),
    };
    assert_wire(request, b"\x0a\x09MED::m::f");
}

#[test]
fn ignore_events_request_takes_sequencer_counters() {
    let request = participant::IgnoreEventsRequest {
        physical_synchronizer_id: "s".into(),
        from_inclusive: 10,
        to_inclusive: 20,
        force: true,
    };
    assert_wire(request, b"\x0a\x01s\x10\x0a\x18\x14\x20\x01");
}

#[test]
fn ledger_end_offset_is_field_one_int64() {
    let response = proto_canton::ledger::v2::GetLedgerEndResponse { offset: 150 };
    assert_wire(response, b"\x08\x96\x01");
}

#[test]
fn participant_status_response_variants() {
    use participant::participant_status_response::{Kind, ParticipantStatusResponseStatus};
    use proto_canton::admin::health::v30::{NotInitialized, Status};
    let running = participant::ParticipantStatusResponse {
        kind: Some(Kind::Status(ParticipantStatusResponseStatus {
            common_status: Some(Status {
                version: "3.4.11".into(),
                ..Default::default()
            }),
            active: true,
            ..Default::default()
        })),
    };
    // status = 1 { common_status = 1 { version = 7 }, active = 3 }.
    assert_wire(running, b"\x0a\x0c\x0a\x08\x3a\x063.4.11\x18\x01");
    let waiting = participant::ParticipantStatusResponse {
        kind: Some(Kind::NotInitialized(NotInitialized {
            active: true,
            waiting_for_external_input: 0,
        })),
    };
    assert_wire(waiting, b"\x12\x02\x08\x01");
}

#[test]
fn participant_prune_request() {
    let request = participant::PruneRequest {
        prune_up_to: 1000,
        counter_participants_commitments_state: Some(
            participant::SafeToPruneCommitmentState::Match as i32,
        ),
    };
    assert_wire(request, b"\x08\xe8\x07\x10\x01");
}

#[test]
fn set_participant_schedule_request() {
    use proto_canton::admin::pruning::v30 as pruning;
    let request = pruning::SetParticipantScheduleRequest {
        schedule: Some(pruning::ParticipantPruningSchedule {
            schedule: Some(pruning::PruningSchedule {
                cron: "c".into(),
                max_duration: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                retention: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
            }),
            prune_internally_only: true,
        }),
    };
    assert_wire(
        request,
        b"\x0a\x10\x0a\x0c\x0a\x01c\x12\x02\x08\x3c\x1a\x03\x08\x90\x1c\x10\x01",
    );
}

#[test]
fn grpc_health_response() {
    use proto_canton::grpc_health::v1::{
        HealthCheckResponse, health_check_response::ServingStatus,
    };
    let response = HealthCheckResponse {
        status: ServingStatus::NotServing as i32,
    };
    assert_wire(response, b"\x08\x02");
}

#[test]
fn authorize_request_by_transaction_hash() {
    use proto_canton::topology::admin::v30 as topology;
    let request = topology::AuthorizeRequest {
        r#type: Some(topology::authorize_request::Type::TransactionHash(
            "ab".into(),
        )),
        must_fully_authorize: true,
        store: Some(topology::StoreId {
            store: Some(topology::store_id::Store::Synchronizer(
                topology::Synchronizer {
                    kind: Some(topology::synchronizer::Kind::Id("s".into())),
                },
            )),
        }),
        ..Default::default()
    };
    assert_wire(request, b"\x12\x02ab\x18\x01\x32\x05\x12\x03\x0a\x01s");
}
