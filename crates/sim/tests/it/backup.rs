//! Backup fidelity: node databases dumped and restored with pg_dump/pg_restore while traffic flows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_inspection_service_client::ParticipantInspectionServiceClient;
use tonic::Code;

use crate::support::{Net, connected, connectivity, eventually, start, wait_connected};

const THREE_NODES_WITH_TRAFFIC: &str = r#"
reconciliation_interval_ms = 1000

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
workload = { rate_per_second = 20.0 }

[[node]]
id = "participant2"
kind = "participant"
workload = { rate_per_second = 20.0 }
"#;

pub fn dump(net: &Net, node: &str, dir: &Path, label: &str) -> PathBuf {
    let node = net.net.node(node).unwrap();
    let file = dir.join(format!("{label}.dump"));
    let status = Command::new(testkit::pg_bin("pg_dump").unwrap())
        .args(["-F", "c", "-f"])
        .arg(&file)
        .arg(net.pg.url(node.database_name()))
        .status()
        .unwrap();
    assert!(status.success(), "pg_dump of {label}");
    file
}

/// Replaces the (stopped) node's database with the dump.
pub fn restore(net: &Net, node: &str, file: &Path) {
    let db = net.net.node(node).unwrap().database_name().to_owned();
    net.pg
        .psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .unwrap();
    net.pg.create_database(&db).unwrap();
    let status = Command::new(testkit::pg_bin("pg_restore").unwrap())
        .args(["--no-owner", "-d"])
        .arg(net.pg.url(&db))
        .arg(file)
        .status()
        .unwrap();
    assert!(status.success(), "pg_restore into {db}");
}

fn number(net: &Net, node: &str, sql: &str) -> i64 {
    let node = net.net.node(node).unwrap();
    let text = net.pg.psql(node.database_name(), sql).unwrap();
    text.parse().unwrap_or(-1)
}

fn ledger_end(net: &Net, node: &str) -> i64 {
    number(net, node, "SELECT ledger_end FROM participant_ledger")
}

fn cursor(net: &Net, node: &str) -> i64 {
    number(
        net,
        node,
        "SELECT coalesce(max(last_counter), -1) FROM member_cursor",
    )
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, Duration::from_secs(60), || {
        let holds = check();
        async move { holds.then_some(()) }
    })
    .await;
}

/// Contract ids `node` shares with `peer`, sorted.
fn shared_acs(net: &Net, node: &str, peer: &str) -> String {
    let peer_member = net.net.node(peer).unwrap().member();
    let node = net.net.node(node).unwrap();
    net.pg
        .psql(
            node.database_name(),
            &format!(
                "SELECT string_agg(contract_id, ',' ORDER BY contract_id) FROM participant_contract WHERE '{peer_member}' = ANY(stakeholders)"
            ),
        )
        .unwrap()
}

async fn stop_workloads(net: &Net) {
    for id in ["participant1", "participant2"] {
        net.net
            .node(id)
            .unwrap()
            .control()
            .set_workload(0.0)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_restored_participant_catches_up_to_the_same_acs_as_its_peers() {
    let mut net = start(THREE_NODES_WITH_TRAFFIC);
    let dir = tempfile::tempdir().unwrap();
    wait_for("participant1 has traffic", || {
        ledger_end(&net, "participant1") >= 10
    })
    .await;
    let backup = dump(&net, "participant1", dir.path(), "p1");
    let at_backup = ledger_end(&net, "participant1");
    wait_for("more traffic after the backup", || {
        ledger_end(&net, "participant1") >= at_backup + 10
    })
    .await;

    net.net.node_mut("participant1").unwrap().stop().unwrap();
    let before_restore = ledger_end(&net, "participant1");
    restore(&net, "participant1", &backup);
    let restored = ledger_end(&net, "participant1");
    assert!(
        restored < before_restore,
        "the restore went back: {restored} < {before_restore}"
    );
    net.net.node_mut("participant1").unwrap().start().unwrap();
    wait_connected(net.net.node("participant1").unwrap(), "global").await;
    wait_for(
        "participant1 replayed past its pre-restore ledger end",
        || ledger_end(&net, "participant1") > before_restore,
    )
    .await;

    stop_workloads(&net).await;
    wait_for("participant1 and participant2 share the same ACS", || {
        let a = shared_acs(&net, "participant1", "participant2");
        let b = shared_acs(&net, "participant2", "participant1");
        !a.is_empty() && a == b
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_sequencer_backup_older_than_a_member_forks_and_a_newer_one_works() {
    let mut net = start(THREE_NODES_WITH_TRAFFIC);
    let dir = tempfile::tempdir().unwrap();
    wait_for("traffic", || cursor(&net, "participant1") >= 10).await;
    let sequencer_old = dump(&net, "sequencer1", dir.path(), "seq-old");
    let p1_member = net.net.node("participant1").unwrap().member();
    let old_max = number(
        &net,
        "sequencer1",
        &format!("SELECT max(counter) FROM sequencer_delivery WHERE member = '{p1_member}'"),
    );
    wait_for("participant1 moves past the old sequencer backup", || {
        cursor(&net, "participant1") > old_max + 10
    })
    .await;
    let participant_backup = dump(&net, "participant1", dir.path(), "p1");
    let p1_at_backup = cursor(&net, "participant1");
    wait_for("more traffic", || {
        cursor(&net, "participant1") > p1_at_backup + 10
    })
    .await;
    let sequencer_new = dump(&net, "sequencer1", dir.path(), "seq-new");

    // The sequencer goes back to before what participant1 has processed: a fork.
    net.net.node_mut("sequencer1").unwrap().stop().unwrap();
    restore(&net, "sequencer1", &sequencer_old);
    net.net.node_mut("sequencer1").unwrap().start().unwrap();
    let participant = net.net.node("participant1").unwrap();
    let mut client = connectivity(participant).await;
    eventually(
        "participant1's connection turns unhealthy",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            async move {
                connected(&mut client)
                    .await
                    .iter()
                    .all(|c| !c.healthy)
                    .then_some(())
            }
        },
    )
    .await;
    client
        .disconnect_synchronizer(admin::DisconnectSynchronizerRequest {
            synchronizer_alias: "global".to_owned(),
        })
        .await
        .unwrap();
    let fork = client
        .reconnect_synchronizer(admin::ReconnectSynchronizerRequest {
            synchronizer_alias: "global".to_owned(),
            retry: false,
        })
        .await
        .unwrap_err();
    assert_eq!(fork.code(), Code::FailedPrecondition);
    assert!(
        fork.message().starts_with("FORK_HAPPENED("),
        "{}",
        fork.message()
    );
    assert!(
        fork.message().contains("ForkHappened"),
        "{}",
        fork.message()
    );
    assert!(connected(&mut client).await.is_empty());

    // A participant backup older than the sequencer's state catches up.
    net.net.node_mut("participant1").unwrap().stop().unwrap();
    net.net.node_mut("sequencer1").unwrap().stop().unwrap();
    restore(&net, "participant1", &participant_backup);
    restore(&net, "sequencer1", &sequencer_new);
    net.net.node_mut("sequencer1").unwrap().start().unwrap();
    net.net.node_mut("participant1").unwrap().start().unwrap();
    let participant = net.net.node("participant1").unwrap();
    wait_connected(participant, "global").await;
    let restored_at = cursor(&net, "participant1");
    wait_for("participant1 processes new events", || {
        cursor(&net, "participant1") > restored_at + 5
    })
    .await;
    let mut client = connectivity(participant).await;
    assert!(connected(&mut client).await.iter().all(|c| c.healthy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_commitments_match_and_mismatch_after_tampering() {
    let net = start(THREE_NODES_WITH_TRAFFIC);
    let p1 = net.net.node("participant1").unwrap();
    let p2 = net.net.node("participant2").unwrap();
    let p2_uid = p2.uid();
    let mut inspect1 = ParticipantInspectionServiceClient::connect(p1.admin_url().unwrap())
        .await
        .unwrap();
    let mut inspect2 = ParticipantInspectionServiceClient::connect(p2.admin_url().unwrap())
        .await
        .unwrap();
    let received = |state: admin::ReceivedCommitmentState, counter: String| {
        admin::LookupReceivedAcsCommitmentsRequest {
            time_ranges: vec![],
            counter_participant_ids: vec![counter],
            commitment_state: vec![state as i32],
            verbose: true,
        }
    };
    eventually(
        "participant1 matches participant2",
        Duration::from_secs(30),
        || {
            let mut client = inspect1.clone();
            let request = received(admin::ReceivedCommitmentState::Match, p2_uid.clone());
            async move {
                let reply = client
                    .lookup_received_acs_commitments(request)
                    .await
                    .ok()?
                    .into_inner();
                (!reply.received.first()?.received.is_empty()).then_some(())
            }
        },
    )
    .await;
    // The sequencer's order: per member, counters without gaps and timestamps rising with them.
    let disorder = number(
        &net,
        "sequencer1",
        "SELECT count(*) FROM (SELECT counter, ts_micros,
                lag(counter) OVER w AS previous_counter, lag(ts_micros) OVER w AS previous_ts
             FROM sequencer_delivery WINDOW w AS (PARTITION BY member ORDER BY counter)) d
         WHERE previous_counter IS NOT NULL AND (counter <> previous_counter + 1 OR ts_micros <= previous_ts)",
    );
    assert_eq!(disorder, 0, "every member's events are in order");
    assert!(
        number(
            &net,
            "sequencer1",
            "SELECT count(DISTINCT member) FROM sequencer_delivery"
        ) >= 2
    );
    stop_workloads(&net).await;
    wait_for("the shared ACS settles", || {
        let a = shared_acs(&net, "participant1", "participant2");
        !a.is_empty() && a == shared_acs(&net, "participant2", "participant1")
    })
    .await;
    let mismatches_before = inspect1
        .lookup_received_acs_commitments(received(
            admin::ReceivedCommitmentState::Mismatch,
            String::new(),
        ))
        .await
        .unwrap()
        .into_inner()
        .received[0]
        .received
        .len();
    assert_eq!(mismatches_before, 0, "honest participants never mismatch");

    // Delete a shared contract from participant2's database behind its back.
    let victim = shared_acs(&net, "participant2", "participant1")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    net.pg
        .psql(
            p2.database_name(),
            &format!("DELETE FROM participant_contract WHERE contract_id = '{victim}'"),
        )
        .unwrap();
    let mismatch = eventually(
        "participant1 sees a mismatch from participant2",
        Duration::from_secs(30),
        || {
            let mut client = inspect1.clone();
            let request = received(admin::ReceivedCommitmentState::Mismatch, p2_uid.clone());
            async move {
                let reply = client
                    .lookup_received_acs_commitments(request)
                    .await
                    .ok()?
                    .into_inner();
                reply.received.first()?.received.first().cloned()
            }
        },
    )
    .await;
    assert_eq!(mismatch.origin_counter_participant_uid, p2_uid);
    assert_ne!(mismatch.own_commitment, mismatch.received_commitment);
    let interval = mismatch.interval.unwrap();
    let end = interval.end_tick_inclusive.unwrap();
    let start = interval.start_tick_exclusive.unwrap();
    assert_eq!(
        end.seconds - start.seconds,
        1,
        "one reconciliation interval"
    );
    let sent = inspect2
        .lookup_sent_acs_commitments(admin::LookupSentAcsCommitmentsRequest {
            time_ranges: vec![],
            counter_participant_ids: vec![p1.uid()],
            commitment_state: vec![admin::SentCommitmentState::Mismatch as i32],
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !sent.sent[0].sent.is_empty(),
        "participant2's sent commitment to participant1 mismatches too"
    );

    let offset = inspect1
        .lookup_offset_by_time(admin::LookupOffsetByTimeRequest {
            timestamp: Some(end),
        })
        .await
        .unwrap()
        .into_inner()
        .offset
        .unwrap();
    assert!(offset > 0 && offset <= ledger_end(&net, "participant1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_pruned_sequencer_refuses_catch_up_from_an_old_backup() {
    let mut net = start(THREE_NODES_WITH_TRAFFIC);
    let dir = tempfile::tempdir().unwrap();
    wait_for("traffic", || cursor(&net, "participant1") >= 10).await;
    let backup = dump(&net, "participant1", dir.path(), "p1");
    let at_backup = cursor(&net, "participant1");
    wait_for("more traffic", || {
        cursor(&net, "participant1") > at_backup + 20
    })
    .await;
    let sequencer = net.net.node("sequencer1").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let status_client = canton_client::CantonClient::new(canton_client::ClientConfig::new(
        "sequencer1",
        canton_client::NodeKind::Sequencer,
        sequencer.admin_url().unwrap(),
    ))
    .unwrap();
    let before = status_client.sequencer_pruning_status().await.unwrap();
    assert!(before.earliest_event_micros < now);
    let pruned = sequencer.control().prune_sequencer(now).await.unwrap();
    assert!(pruned > 0);
    let after = status_client.sequencer_pruning_status().await.unwrap();
    assert!(
        after.earliest_event_micros >= now,
        "PruningStatus reports the earliest event left: {} < {now}",
        after.earliest_event_micros
    );

    net.net.node_mut("participant1").unwrap().stop().unwrap();
    restore(&net, "participant1", &backup);
    let restored = cursor(&net, "participant1");
    net.net.node_mut("participant1").unwrap().start().unwrap();
    let participant = net.net.node("participant1").unwrap();
    let mut client = connectivity(participant).await;
    let refused = client
        .reconnect_synchronizer(admin::ReconnectSynchronizerRequest {
            synchronizer_alias: "global".to_owned(),
            retry: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("SEQUENCER_EVENTS_PRUNED("),
        "{}",
        refused.message()
    );
    assert!(
        refused
            .message()
            .contains("restore the member from a newer backup")
    );
    assert!(connected(&mut client).await.is_empty());
    assert_eq!(
        cursor(&net, "participant1"),
        restored,
        "nothing was applied"
    );
}
