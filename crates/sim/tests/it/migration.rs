//! Network disaster recovery on the sim: dumps at a recovery time taken from the apps, a new
//! synchronizer, every participant redeployed on an empty database and initialised from its
//! dump by `canton-sim migrate`, then connected to the new synchronizer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use canton_sim::SimNode;
use canton_sim::app::MigrateRequest;
use canton_sim::control::http_request;
use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_inspection_service_client::ParticipantInspectionServiceClient;
use proto_canton::protocol::v30 as protocol;
use proto_canton::topology::admin::v30::topology_manager_write_service_client::TopologyManagerWriteServiceClient;
use serde_json::Value;

use crate::party::authorize;
use crate::support::{Net, connected, connectivity, eventually, registered, sql, start};

const DR_NETWORK: &str = r#"
reconciliation_interval_ms = 1000

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "mediator1"
kind = "mediator"

[[node]]
id = "participant1"
kind = "participant"
workload = { rate_per_second = 20.0 }

[[node]]
id = "participant2"
kind = "participant"
workload = { rate_per_second = 20.0 }

[[node]]
id = "sv1"
kind = "app"
participant = "participant1"
poll_interval_ms = 100

[[node]]
id = "validator1"
kind = "app"
participant = "participant2"
poll_interval_ms = 100
"#;

const DEADLINE: Duration = Duration::from_secs(60);

fn now_micros() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

fn rfc3339(micros: i64) -> String {
    humantime::format_rfc3339_micros(
        UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap()),
    )
    .to_string()
}

async fn get(app: &SimNode, path: &str) -> (u16, Value) {
    let (status, body) = http_request(app.http_addr().unwrap(), "GET", path, None)
        .await
        .unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// A 200 answer of `path`, retrying while the app answers 429 (not caught up yet).
async fn caught_up(app: &SimNode, path: &str) -> Value {
    let what = format!("{} answers {path}", app.id());
    let (status, body) = eventually(&what, DEADLINE, || async {
        let answer = get(app, path).await;
        (answer.0 != 429).then_some(answer)
    })
    .await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Contract id → creation time (µs) of `sql`'s `contract_id|created_ts_micros` rows.
fn contracts(net: &Net, node: &SimNode, query: &str) -> BTreeMap<String, i64> {
    sql(net, node, query)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (id, ts) = line.split_once('|').unwrap();
            (id.to_owned(), ts.parse().unwrap())
        })
        .collect()
}

fn active_contracts(net: &Net, node: &SimNode) -> BTreeMap<String, i64> {
    contracts(
        net,
        node,
        "SELECT contract_id, created_ts_micros FROM participant_contract",
    )
}

/// The contracts active at record time `at` by the node's own ledger: created at or before it
/// and not archived by then (archived later, or not at all).
fn active_at(net: &Net, node: &SimNode, at: i64) -> BTreeMap<String, i64> {
    contracts(
        net,
        node,
        &format!(
            "SELECT contract_id, created_ts_micros FROM participant_contract WHERE created_ts_micros <= {at}
             UNION ALL
             SELECT a.contract_id, a.created_ts_micros FROM participant_archived_contract a
             JOIN participant_offset o ON o.ledger_offset = a.archived_offset
             WHERE a.created_ts_micros <= {at} AND o.record_time_micros > {at}"
        ),
    )
}

fn count(net: &Net, node: &SimNode, query: &str) -> i64 {
    sql(net, node, query).parse().unwrap()
}

/// The contracts of a dump's ACS snapshot, with their stakeholders.
fn dump_contracts(dump: &Value) -> Vec<canton_sim::acs::Contract> {
    let encoded = dump["data_snapshot"]["acs_snapshot"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    canton_sim::acs::decode(&bytes).unwrap()
}

/// Runs the real `canton-sim migrate` for a participant and its app.
async fn run_migrate(
    participant: &SimNode,
    app: &SimNode,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
) -> Output {
    let mut command = std::process::Command::new(testkit::binary_path("canton-sim").unwrap());
    command
        .arg("migrate")
        .arg("--participant-control")
        .arg(participant.control_addr().to_string())
        .arg("--app-control")
        .arg(format!("http://{}", app.control_addr()))
        .args(args)
        .env_remove("CS_MIGRATION_DUMP")
        .env_remove("CS_MIGRATION_ID")
        .envs(env);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "canton-sim migrate for {} took {:?}: {:?}\nstdout: {}\nstderr: {}",
        participant.id(),
        started.elapsed(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn output_line(output: &Output) -> Value {
    assert!(output.status.success(), "canton-sim migrate failed");
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

fn write(path: &Path, dump: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(dump).unwrap()).unwrap();
}

async fn ledger_end(node: &SimNode) -> i64 {
    proto_canton::ledger::v2::state_service_client::StateServiceClient::connect(
        node.ledger_url().unwrap(),
    )
    .await
    .unwrap()
    .get_ledger_end(proto_canton::ledger::v2::GetLedgerEndRequest {})
    .await
    .unwrap()
    .into_inner()
    .offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_network_disaster_recovery_restores_each_participant_to_its_acs_at_the_recovery_time()
{
    let test_started = Instant::now();
    let mut net = start(DR_NETWORK);
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (
        net.net.node("participant1").unwrap(),
        net.net.node("participant2").unwrap(),
    );
    let (p1_uid, p2_uid) = (p1.uid(), p2.uid());
    for node in [p1, p2] {
        crate::support::wait_connected(node, "global").await;
    }
    let synchronizer_id = sql(
        &net,
        p1,
        "SELECT synchronizer_id FROM participant_synchronizer",
    );

    // A party of participant1's namespace, hosted there: the workload adds it to contracts.
    let alice = format!("alice::{}", p1.config().fingerprint());
    let alice_on_p1 = || {
        protocol::topology_mapping::Mapping::PartyToParticipant(protocol::PartyToParticipant {
            party: alice.clone(),
            threshold: 1,
            participants: vec![protocol::party_to_participant::HostingParticipant {
                participant_uid: p1_uid.clone(),
                permission: protocol::enums::ParticipantPermission::Submission as i32,
                onboarding: None,
            }],
            party_signing_keys: None,
        })
    };
    TopologyManagerWriteServiceClient::connect(p1.admin_url().unwrap())
        .await
        .unwrap()
        .authorize(authorize(&synchronizer_id, 0, alice_on_p1(), true))
        .await
        .unwrap();

    // A redeploy is refused while the participant is connected, and changes nothing.
    let refused = p1.control().reset_database(Some(1)).await.unwrap_err();
    assert!(
        refused.to_string().contains("409") && refused.to_string().contains("connected"),
        "{refused}"
    );
    assert!(!connected(&mut connectivity(p1).await).await.is_empty());
    let not_participant = net
        .net
        .node("sv1")
        .unwrap()
        .control()
        .reset_database(None)
        .await
        .unwrap_err();
    assert!(
        not_participant.to_string().contains("404"),
        "{not_participant}"
    );

    // Traffic before the recovery time T, then more after it.
    let with_alice =
        format!("SELECT count(*) FROM participant_contract WHERE '{alice}' = ANY(stakeholders)");
    eventually("contracts with alice on both", DEADLINE, || {
        let enough = [p1, p2].iter().all(|n| count(&net, n, &with_alice) >= 2);
        async move { enough.then_some(()) }
    })
    .await;
    let t = now_micros();
    let t_text = rfc3339(t);
    eventually(
        "contracts created and archived after T on both",
        DEADLINE,
        || {
            let after = [p1, p2].iter().all(|n| {
                count(
                    &net,
                    n,
                    &format!(
                        "SELECT count(*) FROM participant_contract WHERE created_ts_micros > {t}"
                    ),
                ) >= 5
                    && count(
                        &net,
                        n,
                        &format!(
                            "SELECT count(*) FROM participant_archived_contract a
                             JOIN participant_offset o ON o.ledger_offset = a.archived_offset
                             WHERE a.created_ts_micros <= {t} AND o.record_time_micros > {t}"
                        ),
                    ) >= 3
            });
            async move { after.then_some(()) }
        },
    )
    .await;

    // The dumps at T. SV: the identities dump merged with the data snapshot; validator: the
    // data_snapshot object of its data-snapshot answer (forced).
    let sv = net.net.node("sv1").unwrap();
    let validator = net.net.node("validator1").unwrap();
    let snapshot = caught_up(
        sv,
        &format!("/api/sv/v0/admin/domain/data-snapshot?timestamp={t_text}&migration_id=1"),
    )
    .await;
    let (status, identities) = get(sv, "/api/sv/v0/admin/domain/identities-dump").await;
    assert_eq!(status, 200, "{identities}");
    let mut sv_dump = identities.as_object().unwrap().clone();
    sv_dump.extend(snapshot.as_object().unwrap().clone());
    let sv_dump = Value::Object(sv_dump);
    let validator_answer = caught_up(
        validator,
        &format!(
            "/api/validator/v0/admin/domain/data-snapshot?timestamp={t_text}&migration_id=1&force=true"
        ),
    )
    .await;
    let validator_dump = validator_answer["data_snapshot"].clone();
    for (dump, uid) in [(&sv_dump, &p1_uid), (&validator_dump, &p2_uid)] {
        assert_eq!(dump["migration_id"], 1, "{dump}");
        assert!(dump["created_at"].is_string(), "{dump}");
        let participant = &dump["identities"]["participant"];
        assert_eq!(participant["id"], uid.as_str());
        let keys = participant["keys"].as_array().unwrap();
        assert!(!keys.is_empty() && keys.iter().all(|k| k["keyPair"].is_string()));
        let data = &dump["data_snapshot"];
        assert!(data["acs_snapshot"].is_string());
        assert_eq!(data["acs_timestamp"], t_text.as_str());
        assert_eq!(data["dars"], Value::Array(Vec::new()));
        assert!(data["genesis_state"].is_null());
    }
    assert!(sv_dump["identities"]["domain_id"].is_string());
    assert!(sv_dump["identities"]["sequencer"]["id"].is_string());

    // Each dump holds exactly what its participant had active at T, creation times kept.
    let mut expected = BTreeMap::new();
    let mut parties_at_t = BTreeMap::new();
    for (id, dump) in [
        ("participant1", &sv_dump),
        ("participant2", &validator_dump),
    ] {
        let node = net.net.node(id).unwrap();
        let at_t = active_at(&net, node, t);
        let in_dump = dump_contracts(dump);
        let dumped: BTreeMap<String, i64> = in_dump
            .iter()
            .map(|c| (c.contract_id.clone(), c.created_ts_micros))
            .collect();
        assert_eq!(dumped, at_t, "{id}: the dump is the ACS at T");
        assert!(at_t.values().all(|&ts| ts <= t));
        let archived_later = count(
            &net,
            node,
            &format!(
                "SELECT count(*) FROM participant_archived_contract a
                 JOIN participant_offset o ON o.ledger_offset = a.archived_offset
                 WHERE a.created_ts_micros <= {t} AND o.record_time_micros > {t}"
            ),
        );
        assert!(
            archived_later >= 3,
            "{id}: contracts archived after T are in the dump"
        );
        assert!(
            active_contracts(&net, node).values().any(|&ts| ts > t),
            "{id}: contracts created after T exist and are not in the dump"
        );
        let parties: BTreeSet<String> = in_dump.into_iter().flat_map(|c| c.stakeholders).collect();
        assert!(parties.contains(&alice) && parties.contains(&node.member()));
        eprintln!("{id}: {} contracts at T, parties {parties:?}", at_t.len());
        expected.insert(id, at_t);
        parties_at_t.insert(id, parties);
    }
    let sv_file = dir.path().join("sv1-dump.json");
    let validator_file = dir.path().join("validator1-dump.json");
    write(&sv_file, &sv_dump);
    write(&validator_file, &validator_dump);

    // The synchronizer is lost: a new one (sequencer and mediator) at the same address.
    let started = Instant::now();
    net.net
        .node_mut("sequencer1")
        .unwrap()
        .redeploy_fresh()
        .unwrap();
    net.net
        .node_mut("mediator1")
        .unwrap()
        .redeploy_fresh()
        .unwrap();
    eprintln!("new synchronizer deployed in {:?}", started.elapsed());
    let (p1, p2) = (
        net.net.node("participant1").unwrap(),
        net.net.node("participant2").unwrap(),
    );
    let (sv, validator) = (
        net.net.node("sv1").unwrap(),
        net.net.node("validator1").unwrap(),
    );
    let ledger_end_before = ledger_end(p1).await;

    // Another participant's dump is refused before anything changes.
    let wrong = run_migrate(p1, sv, dump_flags(&validator_file), Vec::new()).await;
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.starts_with("canton-sim migrate: "), "{stderr}");
    assert!(
        stderr.contains(&p2_uid)
            && stderr.contains(&p1_uid)
            && stderr.contains("Nothing was changed"),
        "{stderr}"
    );
    assert!(wrong.stdout.is_empty());
    assert_eq!(count(&net, p1, "SELECT count(*) FROM sim_redeploy"), 0);
    assert_eq!(ledger_end(p1).await, ledger_end_before);
    assert_eq!(sv.control().app_state().await.unwrap().migration_id, 0);
    // The app itself refuses to import into a participant that still has its ledger.
    let not_empty = sv
        .control()
        .migrate(&MigrateRequest {
            dump: Some(sv_dump.clone()),
            migration_id: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        not_empty.to_string().contains("409") && not_empty.to_string().contains("reset it first"),
        "{not_empty}"
    );

    // The redeploy hook: flags for participant1, the agent's environment for participant2.
    let done1 = output_line(&run_migrate(p1, sv, dump_flags(&sv_file), Vec::new()).await);
    let done2 = output_line(
        &run_migrate(
            p2,
            validator,
            Vec::new(),
            vec![
                ("CS_MIGRATION_DUMP", validator_file.display().to_string()),
                ("CS_MIGRATION_ID", "1".to_owned()),
            ],
        )
        .await,
    );
    for (done, id) in [(&done1, "participant1"), (&done2, "participant2")] {
        assert_eq!(done["migration_id"], 1, "{done}");
        assert_eq!(done["already"], false, "{done}");
        assert_eq!(done["contracts_imported"], expected[id].len(), "{done}");
    }

    // Each participant holds exactly its ACS at T, is disconnected, and the apps moved on.
    for (id, app) in [("participant1", sv), ("participant2", validator)] {
        let node = net.net.node(id).unwrap();
        assert_eq!(
            active_contracts(&net, node),
            expected[id],
            "{id}: the ACS at T"
        );
        let mut client = connectivity(node).await;
        assert!(
            connected(&mut client).await.is_empty(),
            "{id} is not connected"
        );
        let aliases: Vec<String> = registered(&mut client)
            .await
            .into_iter()
            .filter_map(|r| r.config.map(|c| c.synchronizer_alias))
            .collect();
        assert_eq!(aliases, vec!["global".to_owned()]);
        let state = app.control().app_state().await.unwrap();
        assert_eq!(state.migration_id, 1);
        assert_eq!(state.processed_offset, ledger_end(node).await);
        assert_eq!(
            node.control().redeploy_state().await.unwrap().migration_id,
            Some(1)
        );
        let log = node.control().actions(0).await.unwrap();
        assert_eq!(log[0].method, canton_sim::redeploy::RESET_METHOD);
        assert!(
            log.iter()
                .any(|a| a.method.ends_with("/ImportAcs") && a.outcome == "OK")
        );
        let app_log = app.control().actions(0).await.unwrap();
        assert!(
            app_log
                .iter()
                .any(|a| a.method == canton_sim::app::MIGRATE_METHOD
                    && a.outcome == "OK"
                    && a.detail.contains("migration_id=1"))
        );
    }

    // A rerun is a no-op.
    let again = output_line(&run_migrate(p1, sv, dump_flags(&sv_file), Vec::new()).await);
    assert_eq!(again["already"], true, "{again}");
    assert_eq!(again["migration_id"], 1, "{again}");
    assert_eq!(active_contracts(&net, p1), expected["participant1"]);
    assert_eq!(count(&net, p1, "SELECT count(*) FROM sim_redeploy"), 1);

    // Connect to the new synchronizer: no fork, the same parties, traffic and commitments again.
    let connected_at = now_micros();
    for node in [p1, p2] {
        connectivity(node)
            .await
            .reconnect_synchronizers(admin::ReconnectSynchronizersRequest {
                ignore_failures: false,
            })
            .await
            .unwrap();
    }
    for node in [p1, p2] {
        let what = format!("{} healthy on the new synchronizer", node.id());
        let client = connectivity(node).await;
        eventually(&what, DEADLINE, || {
            let mut client = client.clone();
            async move {
                connected(&mut client)
                    .await
                    .iter()
                    .any(|c| c.synchronizer_alias == "global" && c.healthy)
                    .then_some(())
            }
        })
        .await;
    }
    for node in [p1, p2] {
        let log = sql(
            &net,
            node,
            "SELECT count(*) FROM sim_action_log WHERE outcome = 'FORK_HAPPENED'",
        );
        assert_eq!(log, "0", "{}: no fork", node.id());
    }
    let sequencer = net.net.node("sequencer1").unwrap();
    let mediator_uid = net.net.node("mediator1").unwrap().uid();
    let mut status = proto_canton::admin::sequencer::v30::sequencer_status_service_client::SequencerStatusServiceClient::connect(
        sequencer.admin_url().unwrap(),
    )
    .await
    .unwrap();
    eventually(
        "the new sequencer serves both participants and the mediator",
        DEADLINE,
        || {
            let mut status = status.clone();
            let (p1_uid, p2_uid, mediator_uid) =
                (p1_uid.clone(), p2_uid.clone(), mediator_uid.clone());
            async move {
                let reply = status
                    .sequencer_status(
                        proto_canton::admin::sequencer::v30::SequencerStatusRequest {},
                    )
                    .await
                    .ok()?
                    .into_inner();
                let Some(
                    proto_canton::admin::sequencer::v30::sequencer_status_response::Kind::Status(s),
                ) = reply.kind
                else {
                    return None;
                };
                let participants: Vec<String> = s
                    .connected_participants
                    .into_iter()
                    .map(|p| p.uid)
                    .collect();
                let mediators: Vec<String> =
                    s.connected_mediators.into_iter().map(|m| m.uid).collect();
                (participants.contains(&p1_uid)
                    && participants.contains(&p2_uid)
                    && mediators.contains(&mediator_uid))
                .then_some(())
            }
        },
    )
    .await;
    let _ = &mut status;

    // The same party ids: participant1's identity is unchanged, so it can host alice again on
    // the new synchronizer (which starts without the old topology), and the imported contracts
    // name the parties they named at T.
    assert_eq!(p1.control().info().await.unwrap().uid, p1_uid);
    assert_eq!(p2.control().info().await.unwrap().uid, p2_uid);
    TopologyManagerWriteServiceClient::connect(p1.admin_url().unwrap())
        .await
        .unwrap()
        .authorize(authorize(&synchronizer_id, 0, alice_on_p1(), true))
        .await
        .unwrap();
    for id in ["participant1", "participant2"] {
        let node = net.net.node(id).unwrap();
        let stakeholders: BTreeSet<String> = sql(
            &net,
            node,
            &format!(
                "SELECT DISTINCT unnest(stakeholders) FROM participant_contract WHERE created_ts_micros <= {t}"
            ),
        )
        .lines()
        .map(str::to_owned)
        .collect();
        assert!(
            stakeholders.is_subset(&parties_at_t[id]),
            "{id}: {stakeholders:?}"
        );
    }
    eventually("new contracts with alice after the recovery", DEADLINE, || {
        let flowing = [p1, p2].iter().all(|n| {
            count(
                &net,
                n,
                &format!(
                    "SELECT count(*) FROM participant_contract WHERE created_ts_micros > {connected_at} AND '{alice}' = ANY(stakeholders)"
                ),
            ) >= 2
        });
        async move { flowing.then_some(()) }
    })
    .await;

    // Commitments of periods after the reconnection match between the migrated participants.
    for (node, counter) in [(p1, p2_uid.clone()), (p2, p1_uid.clone())] {
        let what = format!(
            "{} matches its counter-participant after the recovery",
            node.id()
        );
        let client = ParticipantInspectionServiceClient::connect(node.admin_url().unwrap())
            .await
            .unwrap();
        eventually(&what, DEADLINE, || {
            let mut client = client.clone();
            let counter = counter.clone();
            async move {
                let reply = client
                    .lookup_received_acs_commitments(admin::LookupReceivedAcsCommitmentsRequest {
                        time_ranges: vec![],
                        counter_participant_ids: vec![counter],
                        commitment_state: vec![admin::ReceivedCommitmentState::Match as i32],
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner();
                reply
                    .received
                    .iter()
                    .flat_map(|s| &s.received)
                    .any(|c| {
                        c.interval
                            .as_ref()
                            .and_then(|i| i.start_tick_exclusive.as_ref())
                            .is_some_and(|ts| {
                                ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000) >= connected_at
                            })
                    })
                    .then_some(())
            }
        })
        .await;
    }
    for node in [p1, p2] {
        let mismatched = ParticipantInspectionServiceClient::connect(node.admin_url().unwrap())
            .await
            .unwrap()
            .lookup_received_acs_commitments(admin::LookupReceivedAcsCommitmentsRequest {
                time_ranges: vec![],
                counter_participant_ids: vec![],
                commitment_state: vec![admin::ReceivedCommitmentState::Mismatch as i32],
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .received
            .into_iter()
            .flat_map(|s| s.received)
            .count();
        assert_eq!(mismatched, 0, "{}: no commitment mismatches", node.id());
    }
    eprintln!("disaster recovery test took {:?}", test_started.elapsed());
}

/// `--dump <file> --migration-id 1`.
fn dump_flags(file: &std::path::Path) -> Vec<String> {
    vec![
        "--dump".to_owned(),
        file.display().to_string(),
        "--migration-id".to_owned(),
        "1".to_owned(),
    ]
}
