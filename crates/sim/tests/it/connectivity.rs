use std::time::Duration;

use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_status_service_client::ParticipantStatusServiceClient;
use proto_canton::admin::participant::v30::pruning_service_client::PruningServiceClient;
use proto_canton::admin::pruning::v30 as pruning;
use proto_canton::admin::sequencer::v30::sequencer_status_service_client::SequencerStatusServiceClient;
use proto_canton::connection::v30::api_info_service_client::ApiInfoServiceClient;
use proto_canton::ledger::v2::state_service_client::StateServiceClient;
use proto_canton::sequencer::admin::v30 as seq_admin;
use proto_canton::sequencer::admin::v30::sequencer_administration_service_client::SequencerAdministrationServiceClient;
use tonic::Code;

use crate::support::{
    SEQ_AND_PARTICIPANT, connected, connection_config, connectivity, eventually, registered, sql,
    start, wait_connected,
};

const CONNECTIVITY: &str =
    "/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_rpcs_return_what_the_state_says() {
    let net = start(SEQ_AND_PARTICIPANT);
    let sequencer = net.net.node("sequencer1").unwrap();
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let mut client = connectivity(participant).await;

    let sequencer_status = SequencerStatusServiceClient::connect(sequencer.admin_url().unwrap())
        .await
        .unwrap()
        .sequencer_status(proto_canton::admin::sequencer::v30::SequencerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(proto_canton::admin::sequencer::v30::sequencer_status_response::Kind::Status(seq)) =
        sequencer_status.kind
    else {
        panic!("sequencer not initialised")
    };
    let physical = seq.physical_synchronizer_id.clone();
    assert!(physical.starts_with("global::1220"), "{physical}");
    assert_eq!(seq.common_status.as_ref().unwrap().uid, sequencer.uid());

    let registered_now = registered(&mut client).await;
    assert_eq!(registered_now.len(), 1);
    let entry = &registered_now[0];
    let config = entry.config.as_ref().unwrap();
    assert_eq!(config.synchronizer_alias, "global");
    assert!(!config.manual_connect);
    assert!(entry.connected);
    assert_eq!(
        entry.physical_synchronizer_id.as_deref(),
        Some(physical.as_str())
    );
    assert_eq!(
        sql(
            &net,
            participant,
            "SELECT alias || ':' || manual_connect || ':' || physical_synchronizer_id FROM participant_synchronizer"
        ),
        format!("global:false:{physical}")
    );

    let live = connected(&mut client).await;
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].physical_synchronizer_id, physical);
    assert!(live[0].healthy);
    let ids = client
        .get_synchronizer_id(admin::GetSynchronizerIdRequest {
            synchronizer_alias: "global".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids.physical_synchronizer_id, physical);
    assert!(physical.starts_with(&ids.synchronizer_id));

    let status = ParticipantStatusServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap()
        .participant_status(admin::ParticipantStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let Some(admin::participant_status_response::Kind::Status(status)) = status.kind else {
        panic!("participant not initialised")
    };
    let common = status.common_status.unwrap();
    assert_eq!(common.uid, participant.uid());
    assert_eq!(common.version, "3.4.11");
    assert!(common.active && status.active);
    assert_eq!(
        common.ports.get("admin").copied(),
        participant.admin_addr().map(|a| i32::from(a.port()))
    );
    assert_eq!(status.connected_synchronizers.len(), 1);
    assert_eq!(
        status.connected_synchronizers[0].physical_synchronizer_id,
        physical
    );

    let ledger_end = StateServiceClient::connect(participant.ledger_url().unwrap())
        .await
        .unwrap()
        .get_ledger_end(proto_canton::ledger::v2::GetLedgerEndRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ledger_end.offset.to_string(),
        sql(
            &net,
            participant,
            "SELECT ledger_end FROM participant_ledger"
        )
    );
    for (url, name) in [
        (participant.admin_url().unwrap(), "admin-api"),
        (participant.ledger_url().unwrap(), "ledger-api"),
    ] {
        let info = ApiInfoServiceClient::connect(url)
            .await
            .unwrap()
            .get_api_info(proto_canton::connection::v30::GetApiInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.name, name);
    }

    // The sequencer registered the participant as a member at handshake.
    let pruning_status =
        SequencerAdministrationServiceClient::connect(sequencer.admin_url().unwrap())
            .await
            .unwrap()
            .pruning_status(seq_admin::PruningStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .pruning_status
            .unwrap();
    assert!(
        pruning_status
            .members
            .iter()
            .any(|m| m.member == participant.member() && m.enabled)
    );

    // Disconnect and reconnect change what is listed, and each is logged once.
    let before = participant.control().actions(0).await.unwrap();
    let after_seq = before.last().map_or(0, |a| a.seq);
    client
        .disconnect_synchronizer(admin::DisconnectSynchronizerRequest {
            synchronizer_alias: "global".to_owned(),
        })
        .await
        .unwrap();
    assert!(connected(&mut client).await.is_empty());
    assert!(!registered(&mut client).await[0].connected);
    let reconnected = client
        .reconnect_synchronizer(admin::ReconnectSynchronizerRequest {
            synchronizer_alias: "global".to_owned(),
            retry: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reconnected.connected_successfully);
    assert_eq!(connected(&mut client).await.len(), 1);
    let actions = participant.control().actions(after_seq).await.unwrap();
    let methods: Vec<&str> = actions.iter().map(|a| a.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            format!("{CONNECTIVITY}DisconnectSynchronizer"),
            format!("{CONNECTIVITY}ReconnectSynchronizer")
        ]
    );
    assert!(actions.iter().all(|a| a.outcome == "OK"));

    // Pruning schedules round-trip through the database.
    let mut pruning_client = PruningServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap();
    let none = pruning_client
        .get_participant_schedule(pruning::GetParticipantScheduleRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(none.schedule.is_none());
    pruning_client
        .set_participant_schedule(pruning::SetParticipantScheduleRequest {
            schedule: Some(pruning::ParticipantPruningSchedule {
                schedule: Some(pruning::PruningSchedule {
                    cron: "0 0 2 * * ?".to_owned(),
                    max_duration: Some(prost_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    retention: Some(prost_types::Duration {
                        seconds: 86_400,
                        nanos: 0,
                    }),
                }),
                prune_internally_only: true,
            }),
        })
        .await
        .unwrap();
    pruning_client
        .set_cron(pruning::SetCronRequest {
            cron: "0 30 3 * * ?".to_owned(),
        })
        .await
        .unwrap();
    let schedule = pruning_client
        .get_participant_schedule(pruning::GetParticipantScheduleRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert!(schedule.prune_internally_only);
    let inner = schedule.schedule.unwrap();
    assert_eq!(inner.cron, "0 30 3 * * ?");
    assert_eq!(inner.max_duration.unwrap().seconds, 3600);
    assert_eq!(inner.retention.unwrap().seconds, 86_400);
    assert_eq!(
        sql(
            &net,
            participant,
            "SELECT cron || '|' || retention_ms FROM pruning_schedule"
        ),
        "0 30 3 * * ?|86400000"
    );
    pruning_client
        .clear_schedule(pruning::ClearScheduleRequest {})
        .await
        .unwrap();
    assert!(
        pruning_client
            .get_schedule(pruning::GetScheduleRequest {})
            .await
            .unwrap()
            .into_inner()
            .schedule
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modify_replaces_the_whole_config() {
    let net = start(SEQ_AND_PARTICIPANT);
    let sequencer = net.net.node("sequencer1").unwrap();
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let mut client = connectivity(participant).await;
    let mut config = registered(&mut client).await[0].config.clone().unwrap();
    config.initial_retry_delay = Some(prost_types::Duration {
        seconds: 7,
        nanos: 0,
    });
    config.priority = 5;
    client
        .modify_synchronizer(admin::ModifySynchronizerRequest {
            physical_synchronizer_id: None,
            new_config: Some(config.clone()),
            sequencer_connection_validation: 3,
        })
        .await
        .unwrap();
    assert_eq!(
        registered(&mut client).await[0].config.as_ref(),
        Some(&config)
    );

    // A new config without the retry delay drops it: the old config is not merged in.
    let replacement = connection_config("global", &sequencer.public_url().unwrap(), true);
    client
        .modify_synchronizer(admin::ModifySynchronizerRequest {
            physical_synchronizer_id: None,
            new_config: Some(replacement.clone()),
            sequencer_connection_validation: 1,
        })
        .await
        .unwrap();
    let stored = registered(&mut client).await[0].config.clone().unwrap();
    assert_eq!(stored, replacement);
    assert!(stored.initial_retry_delay.is_none());
    assert_eq!(stored.priority, 0);
}

/// Runs a call and returns its status code and Canton error id (the message's prefix).
fn refusal<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => {
            let id = status
                .message()
                .split_once('(')
                .map(|(id, _)| id.to_owned())
                .unwrap_or_default();
            (status.code(), id)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_fail_with_cantons_status_codes_and_change_nothing() {
    let net = start(SEQ_AND_PARTICIPANT);
    let sequencer = net.net.node("sequencer1").unwrap();
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let mut c = connectivity(participant).await;
    let url = sequencer.public_url().unwrap();
    let unreachable = format!("http://127.0.0.1:{}", testkit::free_port().unwrap());
    let registered_before = registered(&mut c).await;
    let log_before = participant.control().actions(0).await.unwrap().len();
    let alias = |a: &str| a.to_owned();
    let mut pruning_client = PruningServiceClient::connect(participant.admin_url().unwrap())
        .await
        .unwrap();
    let mut seq_admin_client =
        SequencerAdministrationServiceClient::connect(sequencer.admin_url().unwrap())
            .await
            .unwrap();

    let mut pinned = connection_config("global", &url, false);
    pinned.physical_synchronizer_id = "other::1220ab::34-0".to_owned();
    let cases: Vec<(&str, (Code, String), Code, &str)> = vec![
        (
            "reconnect an unknown alias",
            refusal(
                c.reconnect_synchronizer(admin::ReconnectSynchronizerRequest {
                    synchronizer_alias: alias("nope"),
                    retry: false,
                })
                .await,
            ),
            Code::NotFound,
            "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER",
        ),
        (
            "disconnect an unknown alias",
            refusal(
                c.disconnect_synchronizer(admin::DisconnectSynchronizerRequest {
                    synchronizer_alias: alias("nope"),
                })
                .await,
            ),
            Code::NotFound,
            "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER",
        ),
        (
            "logout of an unknown alias",
            refusal(
                c.logout(admin::LogoutRequest {
                    synchronizer_alias: alias("nope"),
                })
                .await,
            ),
            Code::NotFound,
            "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER",
        ),
        (
            "synchronizer id of an unknown alias",
            refusal(
                c.get_synchronizer_id(admin::GetSynchronizerIdRequest {
                    synchronizer_alias: alias("nope"),
                })
                .await,
            ),
            Code::NotFound,
            "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER",
        ),
        (
            "modify an unregistered synchronizer",
            refusal(
                c.modify_synchronizer(admin::ModifySynchronizerRequest {
                    physical_synchronizer_id: None,
                    new_config: Some(connection_config("nope", &url, false)),
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::NotFound,
            "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER",
        ),
        (
            "modify naming another physical synchronizer",
            refusal(
                c.modify_synchronizer(admin::ModifySynchronizerRequest {
                    physical_synchronizer_id: Some("other::1220ab::34-0".to_owned()),
                    new_config: Some(connection_config("global", &url, true)),
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::NotFound,
            "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER",
        ),
        (
            "modify pinning another synchronizer id",
            refusal(
                c.modify_synchronizer(admin::ModifySynchronizerRequest {
                    physical_synchronizer_id: None,
                    new_config: Some(pinned.clone()),
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::FailedPrecondition,
            "SYNC_SERVICE_SYNCHRONIZER_ID_MISMATCH",
        ),
        (
            "connect while connected",
            refusal(
                c.connect_synchronizer(admin::ConnectSynchronizerRequest {
                    config: Some(connection_config("global", &url, false)),
                    sequencer_connection_validation: 3,
                })
                .await,
            ),
            Code::AlreadyExists,
            "SYNC_SERVICE_ALREADY_ADDED",
        ),
        (
            "register an existing alias",
            refusal(
                c.register_synchronizer(admin::RegisterSynchronizerRequest {
                    config: Some(connection_config("global", &url, true)),
                    synchronizer_connection: 1,
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::AlreadyExists,
            "SYNC_SERVICE_ALREADY_ADDED",
        ),
        (
            "register without a config",
            refusal(
                c.register_synchronizer(admin::RegisterSynchronizerRequest {
                    config: None,
                    synchronizer_connection: 1,
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "register with an empty alias",
            refusal(
                c.register_synchronizer(admin::RegisterSynchronizerRequest {
                    config: Some(connection_config("", &url, false)),
                    synchronizer_connection: 1,
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "register with an unspecified connection mode",
            refusal(
                c.register_synchronizer(admin::RegisterSynchronizerRequest {
                    config: Some(connection_config("second", &url, false)),
                    synchronizer_connection: 0,
                    sequencer_connection_validation: 1,
                })
                .await,
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "connect with an unspecified validation",
            refusal(
                c.connect_synchronizer(admin::ConnectSynchronizerRequest {
                    config: Some(connection_config("second", &url, false)),
                    sequencer_connection_validation: 0,
                })
                .await,
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "connect to an unreachable sequencer with validation ALL",
            refusal(
                c.connect_synchronizer(admin::ConnectSynchronizerRequest {
                    config: Some(connection_config("second", &unreachable, false)),
                    sequencer_connection_validation: 3,
                })
                .await,
            ),
            Code::Unavailable,
            "SYNC_SERVICE_FAILED_SYNCHRONIZER_CONNECTION",
        ),
        (
            "set cron without a schedule",
            refusal(
                pruning_client
                    .set_cron(pruning::SetCronRequest {
                        cron: "0 0 1 * * ?".to_owned(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "NO_PRUNING_SCHEDULE",
        ),
        (
            "set a schedule with a five-field cron",
            refusal(
                pruning_client
                    .set_schedule(pruning::SetScheduleRequest {
                        schedule: Some(pruning::PruningSchedule {
                            cron: "0 2 * * *".to_owned(),
                            max_duration: Some(prost_types::Duration {
                                seconds: 60,
                                nanos: 0,
                            }),
                            retention: Some(prost_types::Duration {
                                seconds: 60,
                                nanos: 0,
                            }),
                        }),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "prune after the ledger end",
            refusal(
                pruning_client
                    .prune(admin::PruneRequest {
                        prune_up_to: 10,
                        counter_participants_commitments_state: None,
                    })
                    .await,
            ),
            Code::FailedPrecondition,
            "OFFSET_OUT_OF_RANGE",
        ),
        (
            "disable an unknown member",
            refusal(
                seq_admin_client
                    .disable_member(seq_admin::DisableMemberRequest {
                        member: "PAR::ghost::1220ff".to_owned(),
                    })
                    .await,
            ),
            Code::NotFound,
            "SEQUENCER_UNKNOWN_MEMBER",
        ),
    ];
    let mut failures = Vec::new();
    for (name, (code, id), want_code, want_id) in &cases {
        if code != want_code || id != want_id {
            failures.push(format!(
                "{name}: got {code:?} {id}, want {want_code:?} {want_id}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing changed, and every refused mutating call is in the action log with its id.
    assert_eq!(registered(&mut c).await, registered_before);
    assert_eq!(connected(&mut c).await.len(), 1);
    let log = participant.control().actions(0).await.unwrap();
    let refused: Vec<_> = log[log_before..]
        .iter()
        .filter(|a| a.outcome != "OK")
        .collect();
    assert_eq!(refused.len(), 16, "{refused:#?}");
    assert!(
        refused
            .iter()
            .any(|a| a.outcome == "SYNC_SERVICE_ALREADY_ADDED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_connect_survives_a_restart_without_reconnecting() {
    let mut net = start(
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
"#,
    );
    for id in ["participant1", "participant2"] {
        wait_connected(net.net.node(id).unwrap(), "global").await;
    }
    // The console's read-modify-write of manual_connect.
    let participant = net.net.node("participant1").unwrap();
    let mut client = connectivity(participant).await;
    let mut config = registered(&mut client).await[0].config.clone().unwrap();
    config.manual_connect = true;
    client
        .modify_synchronizer(admin::ModifySynchronizerRequest {
            physical_synchronizer_id: None,
            new_config: Some(config),
            sequencer_connection_validation: 3,
        })
        .await
        .unwrap();
    drop(client);

    let (first, second) = std::thread::scope(|scope| {
        let nodes = net.net.nodes_mut();
        let (left, right) = nodes.split_at_mut(2);
        let p1 = &mut left[1];
        let p2 = &mut right[0];
        let a = scope.spawn(|| p1.restart().unwrap());
        let b = scope.spawn(|| p2.restart().unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("restarts took {first:?} and {second:?}");
    // participant2 (manual_connect = false) reconnects on its own; by then participant1 has
    // had the same chance and must not have taken it.
    wait_connected(net.net.node("participant2").unwrap(), "global").await;
    let participant = net.net.node("participant1").unwrap();
    let mut client = connectivity(participant).await;
    assert!(connected(&mut client).await.is_empty());
    let listed = registered(&mut client).await;
    assert!(listed[0].config.as_ref().unwrap().manual_connect);
    assert!(!listed[0].connected);
    // An explicit reconnect still works.
    let reply = client
        .reconnect_synchronizer(admin::ReconnectSynchronizerRequest {
            synchronizer_alias: "global".to_owned(),
            retry: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.connected_successfully);
    let after = eventually(
        "participant1 listed connected",
        Duration::from_secs(5),
        || {
            let mut client = client.clone();
            async move { Some(connected(&mut client).await).filter(|c| !c.is_empty()) }
        },
    )
    .await;
    assert_eq!(after[0].synchronizer_alias, "global");
}

/// Racing reconnects of one alias (Canton's start-up retry and an operator's
/// ReconnectSynchronizers) must leave one live connection that still sends: the participant's
/// time keeps advancing through its own ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_reconnects_leave_one_connection_that_keeps_sending() {
    let net = start(SEQ_AND_PARTICIPANT);
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let client = connectivity(participant).await;
    for _ in 0..5 {
        client
            .clone()
            .disconnect_all_synchronizers(admin::DisconnectAllSynchronizersRequest {})
            .await
            .unwrap();
        let racing = (0..4).map(|_| {
            let mut client = client.clone();
            async move {
                client
                    .reconnect_synchronizers(admin::ReconnectSynchronizersRequest {
                        ignore_failures: false,
                    })
                    .await
            }
        });
        for reply in futures::future::join_all(racing).await {
            reply.unwrap();
        }
    }
    let processed = || {
        sql(
            &net,
            participant,
            "SELECT coalesce(max(last_ts_micros), 0) FROM member_cursor",
        )
        .trim()
        .parse::<i64>()
        .unwrap()
    };
    let after_the_race = processed();
    let started = std::time::Instant::now();
    eventually(
        "participant1 processing its own ticks after the race",
        Duration::from_secs(30),
        || async { (processed() > after_the_race + 1_000_000).then_some(()) },
    )
    .await;
    eprintln!(
        "time advanced 1 s past the race after {:?}",
        started.elapsed()
    );
    let mut client = client.clone();
    assert_eq!(connected(&mut client).await.len(), 1);
}
