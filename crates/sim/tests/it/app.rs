//! `--kind app`: the processed offset in the app's own database and the Splice admin HTTP
//! endpoints with their documented status codes.

use std::time::{Duration, SystemTime};

use canton_sim::control::http_request;
use serde_json::Value;

use crate::backup::{dump, restore};
use crate::support::{eventually, start, wait_connected};

async fn get(app: &canton_sim::SimNode, path: &str) -> (u16, Value) {
    let (status, body) = http_request(app.http_addr().unwrap(), "GET", path, None)
        .await
        .unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn iso(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_app_follows_its_participant_and_answers_splice_dumps_with_documented_codes() {
    let mut net = start(
        r#"
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
id = "validator1"
kind = "app"
participant = "participant1"
poll_interval_ms = 100
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let participant = net.net.node("participant1").unwrap();
    let participant_uid = participant.uid();
    wait_connected(participant, "global").await;
    let app = net.net.node("validator1").unwrap();
    let control = app.control();
    eventually(
        "the app processed some offsets",
        Duration::from_secs(30),
        || {
            let control = control.clone();
            async move {
                let state = control.app_state().await.ok()?;
                (state.processed_offset >= 5).then_some(())
            }
        },
    )
    .await;
    let backup = dump(&net, "participant1", dir.path(), "p1");

    // Identities.
    let (status, identities) = get(app, "/api/validator/v0/admin/participant/identities").await;
    assert_eq!(status, 200, "{identities}");
    assert_eq!(identities["id"], participant_uid.as_str());
    assert!(!identities["keys"].as_array().unwrap().is_empty());
    let (status, sv) = get(app, "/api/sv/v0/admin/domain/identities-dump").await;
    assert_eq!(status, 200, "{sv}");
    assert!(
        sv["identities"]["domain_id"]
            .as_str()
            .unwrap()
            .starts_with("global::1220")
    );
    assert_eq!(
        sv["identities"]["sequencer"]["id"],
        net.net.node("sequencer1").unwrap().uid().as_str()
    );
    assert_eq!(
        sv["identities"]["participant"]["id"],
        participant_uid.as_str()
    );

    // Data snapshots: 400 without or with a bad timestamp, 429 not caught up, force, 200.
    let snapshot = "/api/sv/v0/admin/domain/data-snapshot";
    assert_eq!(get(app, snapshot).await.0, 400);
    assert_eq!(
        get(app, &format!("{snapshot}?timestamp=yesterday")).await.0,
        400
    );
    let future = iso(SystemTime::now() + Duration::from_secs(3600));
    let (status, body) = get(app, &format!("{snapshot}?timestamp={future}")).await;
    assert_eq!(status, 429, "{body}");
    let (status, forced) = get(app, &format!("{snapshot}?timestamp={future}&force=true")).await;
    assert_eq!(status, 200, "{forced}");
    assert!(
        !forced["data_snapshot"]["acs_snapshot"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let now = iso(SystemTime::now());
    let (status, body) = eventually("a snapshot at a past time", Duration::from_secs(30), || {
        let path = format!("/api/validator/v0/admin/domain/data-snapshot?timestamp={now}");
        async move {
            let answer = get(app, &path).await;
            (answer.0 != 429).then_some(answer)
        }
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data_snapshot"]["identities"]["participant"]["id"],
        participant_uid.as_str()
    );

    // Pruned past the timestamp: 400.
    let before_pruning = iso(SystemTime::now() - Duration::from_secs(1));
    let ledger_end = {
        let mut ledger =
            proto_canton::ledger::v2::state_service_client::StateServiceClient::connect(
                participant.ledger_url().unwrap(),
            )
            .await
            .unwrap();
        ledger
            .get_ledger_end(proto_canton::ledger::v2::GetLedgerEndRequest {})
            .await
            .unwrap()
            .into_inner()
            .offset
    };
    proto_canton::ledger::v2::admin::participant_pruning_service_client::ParticipantPruningServiceClient::connect(
        participant.ledger_url().unwrap(),
    )
    .await
    .unwrap()
    .prune(proto_canton::ledger::v2::admin::PruneRequest {
        prune_up_to: ledger_end,
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, body) = get(app, &format!("{snapshot}?timestamp={before_pruning}")).await;
    assert_eq!(status, 400, "{body}");
    // A dump reads the ACS at the ledger end, which the workload moves past the pruning point.
    let ledger_url = participant.ledger_url().unwrap();
    eventually(
        "the ledger end past the pruning point",
        Duration::from_secs(30),
        || {
            let ledger_url = ledger_url.clone();
            async move {
                let end =
                    proto_canton::ledger::v2::state_service_client::StateServiceClient::connect(
                        ledger_url,
                    )
                    .await
                    .ok()?
                    .get_ledger_end(proto_canton::ledger::v2::GetLedgerEndRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .offset;
                (end > ledger_end).then_some(())
            }
        },
    )
    .await;

    // Migration dump.
    let (status, dump_now) = get(app, "/api/sv/v0/admin/domain/migration-dump").await;
    assert_eq!(status, 200, "{dump_now}");
    assert_eq!(
        dump_now["identities"]["participant"]["id"],
        participant_uid.as_str()
    );
    let (status, _) = http_request(
        app.http_addr().unwrap(),
        "POST",
        "/api/sv/v0/admin/domain/migration-dump",
        Some(r#"{"migration_id": 1}"#.to_owned()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let actions = app.control().actions(0).await.unwrap();
    assert!(
        actions
            .iter()
            .any(|a| a.method.ends_with("/migration-dump") && a.detail == "migration_id=1")
    );

    // The participant goes back to an older backup: the app is now ahead of it. The sequencer
    // holds events back meanwhile, so the participant cannot catch up before the app looks.
    let processed = app.control().app_state().await.unwrap().processed_offset;
    let sequencer = net.net.node("sequencer1").unwrap().control();
    sequencer.set_processing_stopped(true).await.unwrap();
    net.net.node_mut("participant1").unwrap().stop().unwrap();
    restore(&net, "participant1", &backup);
    net.net.node_mut("participant1").unwrap().start().unwrap();
    let app = net.net.node("validator1").unwrap();
    let state = eventually(
        "the app sees the restored participant",
        Duration::from_secs(30),
        || {
            let control = app.control();
            async move {
                let state = control.app_state().await.ok()?;
                state.ahead_of_participant.then_some(state)
            }
        },
    )
    .await;
    assert!(
        state.processed_offset >= processed,
        "the app never goes back"
    );
    assert!(state.participant_ledger_end < state.processed_offset);
    sequencer.set_processing_stopped(false).await.unwrap();
}
