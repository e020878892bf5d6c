//! Rehydration of a participant from a never-pruned synchronizer: its database reset (as a
//! redeploy on an empty database with the same identity) and reconnected to the same
//! sequencer, the participant replays every event addressed to it from the first counter and
//! ends up with the same ledger: the same contracts at the same offsets, the same commitments
//! for the periods it had seen, and commitments that match its counter-participant's after.
//! After the sequencer is pruned its `PruningStatus` lower bound passes the participant's
//! registration, and the same reset leaves the participant unable to reconnect.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto_canton::admin::participant::v30 as admin;

use crate::support::{Net, connectivity, eventually, sql, start, wait_connected};

const NETWORK: &str = r#"
reconciliation_interval_ms = 500

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "mediator1"
kind = "mediator"

[[node]]
id = "participant1"
kind = "participant"
workload = { rate_per_second = 10.0 }

[[node]]
id = "participant2"
kind = "participant"
workload = { rate_per_second = 10.0 }
"#;

const DEADLINE: Duration = Duration::from_secs(60);

fn number(net: &Net, node: &canton_sim::SimNode, query: &str) -> i64 {
    let text = sql(net, node, query);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{query}: {text:?}"))
}

/// `contract_id|created_offset|created_ts_micros` of the contracts active at ledger offset
/// `at` by the node's own ledger (created by then, archived later or not at all).
fn active_at_offset(net: &Net, node: &canton_sim::SimNode, at: i64) -> Vec<String> {
    let rows = sql(
        net,
        node,
        &format!(
            "SELECT contract_id || '|' || created_offset || '|' || created_ts_micros FROM (
                 SELECT contract_id, created_offset, created_ts_micros FROM participant_contract
                 WHERE created_offset <= {at}
                 UNION ALL
                 SELECT contract_id, created_offset, created_ts_micros FROM participant_archived_contract
                 WHERE created_offset <= {at} AND archived_offset > {at}
             ) c ORDER BY contract_id"
        ),
    );
    rows.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `contract_id|archived_offset` of the contracts archived at or before offset `at`.
fn archived_by(net: &Net, node: &canton_sim::SimNode, at: i64) -> Vec<String> {
    sql(
        net,
        node,
        &format!(
            "SELECT contract_id || '|' || archived_offset FROM participant_archived_contract
             WHERE archived_offset <= {at} ORDER BY contract_id"
        ),
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_owned)
    .collect()
}

/// Period end → own commitment (hex) towards `peer`, for periods ending at or before `until`.
fn own_commitments(
    net: &Net,
    node: &canton_sim::SimNode,
    peer: &str,
    until: i64,
) -> BTreeMap<i64, String> {
    sql(
        net,
        node,
        &format!(
            "SELECT period_end_micros || '|' || encode(own, 'hex') FROM acs_commitment
             WHERE counter_participant = '{peer}' AND own IS NOT NULL
               AND period_end_micros <= {until} ORDER BY period_end_micros"
        ),
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|line| {
        let (end, own) = line.split_once('|').unwrap();
        (end.parse().unwrap(), own.to_owned())
    })
    .collect()
}

/// Runs the real `canton-sim reset-database` for `node`, expecting `uid`.
async fn reset_database(node: &canton_sim::SimNode, uid: &str) -> std::process::Output {
    let mut command = std::process::Command::new(testkit::binary_path("canton-sim").unwrap());
    command
        .arg("reset-database")
        .arg("--participant-control")
        .arg(format!("http://{}", node.control_addr()))
        .arg("--expect-uid")
        .arg(uid)
        .env_remove("CS_PARTICIPANT_UID");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "canton-sim reset-database: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_reset_participant_reconnected_to_its_never_pruned_sequencer_replays_its_ledger() {
    let test_started = Instant::now();
    let net = start(NETWORK);
    let (p1, p2) = (
        net.net.node("participant1").unwrap(),
        net.net.node("participant2").unwrap(),
    );
    for node in [p1, p2] {
        wait_connected(node, "global").await;
    }
    let (m1, m2) = (p1.member(), p2.member());

    // History worth replaying: contracts of both creators, some archived already.
    eventually("contracts of both, some archived", DEADLINE, || {
        let enough = number(
            &net,
            p1,
            &format!("SELECT count(*) FROM participant_contract WHERE created_by = '{m2}'"),
        ) >= 5
            && number(
                &net,
                p1,
                "SELECT count(*) FROM participant_archived_contract",
            ) >= 5
            && number(&net, p1, "SELECT count(*) FROM acs_commitment") >= 4;
        async move { enough.then_some(()) }
    })
    .await;

    let mut client = connectivity(p1).await;
    client
        .disconnect_all_synchronizers(admin::DisconnectAllSynchronizersRequest {})
        .await
        .unwrap();
    let counter_before = number(&net, p1, "SELECT max(last_counter) FROM member_cursor");
    let ts_before = number(&net, p1, "SELECT max(last_ts_micros) FROM member_cursor");
    let ledger_end_before = number(&net, p1, "SELECT ledger_end FROM participant_ledger");
    let acs_before = active_at_offset(&net, p1, ledger_end_before);
    let archived_before = archived_by(&net, p1, ledger_end_before);
    let commitments_before = own_commitments(&net, p1, &m2, ts_before);
    assert!(!acs_before.is_empty() && !archived_before.is_empty());
    eprintln!(
        "before the reset: counter {counter_before}, ledger end {ledger_end_before}, {} active, \
         {} archived, {} commitment periods",
        acs_before.len(),
        archived_before.len(),
        commitments_before.len()
    );

    // The hook refuses another participant's uid, then resets.
    let wrong = reset_database(p1, "participant9::1220ff").await;
    assert_eq!(wrong.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.starts_with("canton-sim reset-database: ") && stderr.contains("Nothing was changed"),
        "{stderr}"
    );
    assert_eq!(
        number(&net, p1, "SELECT ledger_end FROM participant_ledger"),
        ledger_end_before
    );
    let reset = reset_database(p1, &p1.uid()).await;
    assert!(reset.status.success());
    let line: serde_json::Value = serde_json::from_slice(&reset.stdout).unwrap();
    assert_eq!(line["uid"], p1.uid().as_str());
    assert!(line["tables_dropped"].as_u64().unwrap() > 0, "{line}");
    assert_eq!(line["registered"], serde_json::json!(["global"]));
    for (what, query) in [
        ("contracts", "SELECT count(*) FROM participant_contract"),
        ("cursor", "SELECT count(*) FROM member_cursor"),
        ("ledger end", "SELECT ledger_end FROM participant_ledger"),
    ] {
        assert_eq!(number(&net, p1, query), 0, "{what} after the reset");
    }

    // Reconnected to the same sequencer, the participant starts from counter 0.
    let reconnected = Instant::now();
    client
        .reconnect_synchronizers(admin::ReconnectSynchronizersRequest {
            ignore_failures: false,
        })
        .await
        .unwrap();
    eventually(
        "participant1 replayed past its old counter",
        DEADLINE,
        || {
            let done = number(
                &net,
                p1,
                "SELECT coalesce(max(last_counter), -1) FROM member_cursor",
            ) >= counter_before;
            async move { done.then_some(()) }
        },
    )
    .await;
    eprintln!(
        "replayed {} events in {:?}",
        counter_before + 1,
        reconnected.elapsed()
    );
    assert_eq!(
        active_at_offset(&net, p1, ledger_end_before),
        acs_before,
        "the same contracts, at the same offsets, at the old ledger end"
    );
    assert_eq!(archived_by(&net, p1, ledger_end_before), archived_before);
    assert_eq!(
        own_commitments(&net, p1, &m2, ts_before),
        commitments_before,
        "the replay computes the same commitments for the periods seen before"
    );
    let info = p1.control().info().await.unwrap();
    assert_eq!(info.uid, p1.uid(), "same identity");
    let forks = sql(
        &net,
        p1,
        "SELECT count(*) FROM sim_action_log WHERE outcome <> 'OK'",
    );
    assert_eq!(forks.trim(), "0", "no refusal after the reset");

    // Afterwards both sides agree on new periods and nobody saw a mismatch.
    let now = number(&net, p1, "SELECT max(last_ts_micros) FROM member_cursor");
    let agreeing = |node: &canton_sim::SimNode, peer: &str| {
        number(
            &net,
            node,
            &format!(
                "SELECT count(*) FROM acs_commitment WHERE counter_participant = '{peer}'
                 AND period_end_micros > {now} AND own = received"
            ),
        ) >= 2
    };
    eventually("matching commitments after the replay", DEADLINE, || {
        let done = agreeing(p1, &m2) && agreeing(p2, &m1);
        async move { done.then_some(()) }
    })
    .await;
    for (node, peer) in [(p1, &m2), (p2, &m1)] {
        let mismatched = number(
            &net,
            node,
            &format!(
                "SELECT count(*) FROM acs_commitment WHERE counter_participant = '{peer}'
                 AND own IS NOT NULL AND received IS NOT NULL AND own <> received"
            ),
        );
        assert_eq!(mismatched, 0, "{}: no mismatched period", node.id());
    }

    // Once the sequencer is pruned, its lower bound passes the participant's registration and
    // a participant on an empty database cannot get its history back.
    let sequencer = net.net.node("sequencer1").unwrap();
    let status_client = canton_client::CantonClient::new(canton_client::ClientConfig::new(
        "sequencer1",
        canton_client::NodeKind::Sequencer,
        sequencer.admin_url().unwrap(),
    ))
    .unwrap();
    let registered_at = |status: &canton_client::types::SequencerPruningStatus| {
        status
            .members
            .iter()
            .find(|m| m.member == m1)
            .map(|m| m.registered_at_micros)
            .unwrap()
    };
    let unpruned = status_client.sequencer_pruning_status().await.unwrap();
    assert!(
        unpruned.earliest_event_micros <= registered_at(&unpruned),
        "never pruned: the lower bound {} is not after participant1's registration {}",
        unpruned.earliest_event_micros,
        registered_at(&unpruned)
    );
    let prune_at = number(&net, p1, "SELECT max(last_ts_micros) FROM member_cursor");
    assert!(sequencer.control().prune_sequencer(prune_at).await.unwrap() > 0);
    let pruned = status_client.sequencer_pruning_status().await.unwrap();
    assert_eq!(pruned.earliest_event_micros, prune_at);
    assert!(pruned.earliest_event_micros > registered_at(&pruned));
    client
        .disconnect_all_synchronizers(admin::DisconnectAllSynchronizersRequest {})
        .await
        .unwrap();
    assert!(reset_database(p1, &p1.uid()).await.status.success());
    let refused = client
        .reconnect_synchronizers(admin::ReconnectSynchronizersRequest {
            ignore_failures: false,
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("SEQUENCER_EVENTS_PRUNED"),
        "{refused:?}"
    );
    eprintln!("test took {:?}", test_started.elapsed());
}
