//! `repair-lost-synchronizer` over real agents and canton-sim: the participants' synchronizer
//! is lost (its sequencer and mediator stopped) and a new one is deployed beside it (a second
//! sim network with its own sequencer and mediator). Forcing without saying the source is lost
//! is refused; with a signed approval every participant disconnects, migrates its contracts to
//! the new synchronizer (one MigrateSynchronizer each, in its own action log), reconnects to
//! it, and the commitment report follows. No contract is lost, the old synchronizer is no
//! longer registered, the workload goes on over the new one and the participants' commitments
//! match.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use e2e::observe;
use e2e::stack::Stack;

use crate::support::{
    ORGANISATION, final_run, method_name, node_calls, node_psql, ops_json, running_stack, wait_for,
    wait_for_matching_commitments,
};

const TOPOLOGY: &str = r#"
name = "lostsync"
synchronizer = "global"
reconciliation_interval_ms = 500
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "operator"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "operator"
[[node]]
id = "participant1"
kind = "participant"
organisation = "operator"
repair_commands_enabled = true
workload = { rate_per_second = 4.0 }
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
repair_commands_enabled = true
workload = { rate_per_second = 2.0 }
"#;

/// The new synchronizer: a sequencer and a mediator of synchronizer `global2`.
const NEW_SYNCHRONIZER: &str = r#"
name = "lostsync2"
synchronizer = "global2"
reconciliation_interval_ms = 500
[[node]]
id = "sequencer2"
kind = "sequencer"
organisation = "operator"
[[node]]
id = "mediator2"
kind = "mediator"
organisation = "operator"
"#;

const PARTICIPANTS: [&str; 2] = ["participant1", "participant2"];
const DEADLINE: Duration = Duration::from_secs(60);

fn contract_ids(stack: &Stack, node: &str, table: &str) -> BTreeSet<String> {
    node_psql(stack, node, &format!("SELECT contract_id FROM {table}"))
        .lines()
        .map(|line| line.trim().to_owned())
        .filter(|id| !id.is_empty())
        .collect()
}

/// Contracts with more than one stakeholder: with two participants, the ones they share.
fn shared_contract_ids(stack: &Stack, node: &str) -> BTreeSet<String> {
    node_psql(
        stack,
        node,
        "SELECT contract_id FROM participant_contract WHERE cardinality(stakeholders) > 1",
    )
    .lines()
    .map(|line| line.trim().to_owned())
    .filter(|id| !id.is_empty())
    .collect()
}

/// The topology's workload rates of [`PARTICIPANTS`].
const WORKLOADS: [f64; 2] = [4.0, 2.0];

async fn set_workloads(stack: &Stack, rates: [f64; 2]) {
    for (participant, rate) in PARTICIPANTS.iter().zip(rates) {
        let control = stack
            .with_sims(|sims| sims.node(participant).map(|n| n.control()))
            .expect("sims")
            .expect("participant exists");
        control
            .set_workload(rate)
            .await
            .unwrap_or_else(|e| panic!("{participant}: workload {rate}/s: {e}"));
    }
}

fn created_since(stack: &Stack, node: &str, micros: i64) -> i64 {
    node_psql(
        stack,
        node,
        &format!("SELECT count(*) FROM participant_contract WHERE created_ts_micros > {micros}"),
    )
    .parse()
    .expect("a count")
}

fn repair_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "repair-lost-synchronizer"]
        .map(str::to_owned)
        .to_vec();
    for param in [
        "source=global".to_owned(),
        "target=global2".to_owned(),
        format!("target_sequencer_urls={url}"),
    ]
    .into_iter()
    .chain(extra.iter().map(|p| (*p).to_owned()))
    {
        args.push("--param".to_owned());
        args.push(param);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participants_of_a_lost_synchronizer_move_to_a_new_one_with_every_contract() {
    let started = Instant::now();
    let stack = running_stack(TOPOLOGY).await;
    let since = e2e::now_unix_ms() * 1000;
    tokio::task::block_in_place(|| {
        wait_for("contracts on both participants", DEADLINE, || {
            PARTICIPANTS
                .iter()
                .all(|p| created_since(&stack, p, since) > 0)
        });
    });

    // The new synchronizer, beside the stack's network on the same PostgreSQL.
    let spec = NetworkSpec::from_toml(NEW_SYNCHRONIZER).expect("spec");
    let binary = testkit::binary_path("canton-sim").expect("canton-sim");
    let target = PostgresTarget::of(&stack.postgres);
    let new = tokio::task::spawn_blocking(move || {
        SimNetwork::start(
            &spec,
            LaunchOptions {
                postgres: target,
                binary: &binary,
                work_dir: None,
            },
        )
    })
    .await
    .expect("join")
    .expect("the new synchronizer");
    let url = new
        .node("sequencer2")
        .and_then(|n| n.public_url())
        .expect("sequencer2's public API");

    // Forcing needs the acknowledgement that the source is lost.
    let args = repair_args(&url, &["force=true"]);
    let (status, values) = ops_json(&stack, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!status.success(), "force without source_lost: {values:#?}");
    let (_, runs) = ops_json(&stack, &["runs"]);
    assert!(
        runs.iter()
            .all(|run| run["runbook"] != "repair-lost-synchronizer"),
        "nothing started: {runs:#?}"
    );

    // A transaction in flight at the loss would leave the participants with different shared
    // contracts, a real divergence that the commitments report as a mismatch. The workload
    // pauses and the participants settle on the same shared contracts first, so the
    // commitments on the new synchronizer must match.
    set_workloads(&stack, [0.0, 0.0]).await;
    tokio::task::block_in_place(|| {
        // Equal and unchanged over five polls (half a second): nothing was left in flight.
        let mut last = None;
        let mut unchanged = 0;
        wait_for(
            "both participants settled on the same shared contracts",
            DEADLINE,
            || {
                let now: Vec<BTreeSet<String>> = PARTICIPANTS
                    .iter()
                    .map(|p| shared_contract_ids(&stack, p))
                    .collect();
                unchanged = if now[0] == now[1] && last.as_ref() == Some(&now) {
                    unchanged + 1
                } else {
                    0
                };
                last = Some(now);
                unchanged >= 5
            },
        );
    });

    // The synchronizer is lost.
    stack
        .with_sims(|sims| {
            for node in ["sequencer1", "mediator1"] {
                sims.node_mut(node).expect(node).stop().expect("stopping");
            }
        })
        .expect("sims");
    let before: Vec<BTreeSet<String>> = PARTICIPANTS
        .iter()
        .map(|p| contract_ids(&stack, p, "participant_contract"))
        .collect();

    let args = repair_args(&url, &[]);
    let run = tokio::task::block_in_place(|| {
        observe::start_run(
            &stack,
            ORGANISATION,
            &args[1..].iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
    .expect("the run starts and waits for its approval");
    let approve = observe::signed_approval_args_for(
        &stack,
        ORGANISATION,
        &run,
        ["approve", "migrate"],
        &PARTICIPANTS,
    )
    .expect("approval args");
    let (status, values) = ops_json(
        &stack,
        &approve.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(status.success(), "signed approval: {values:#?}");
    let (_, values) = ops_json(&stack, &["watch", &run]);
    let finished = final_run(&values);
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    let reconnected = e2e::now_unix_ms() * 1000;
    set_workloads(&stack, WORKLOADS).await;

    for (participant, before) in PARTICIPANTS.iter().zip(&before) {
        let migrations: Vec<(String, String)> = node_calls(&stack, participant)
            .await
            .into_iter()
            .filter(|(method, _)| method_name(method) == "MigrateSynchronizer")
            .collect();
        assert_eq!(
            migrations,
            [(
                "/com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/MigrateSynchronizer".to_owned(),
                "OK".to_owned()
            )],
            "{participant} migrated once"
        );
        assert_eq!(
            node_psql(
                &stack,
                participant,
                "SELECT string_agg(alias, ',') FROM participant_synchronizer"
            ),
            "global2",
            "{participant} has only the new synchronizer registered"
        );
        let mut now = contract_ids(&stack, participant, "participant_contract");
        now.extend(contract_ids(
            &stack,
            participant,
            "participant_archived_contract",
        ));
        let lost: Vec<&String> = before.difference(&now).collect();
        assert!(lost.is_empty(), "{participant} lost contracts {lost:?}");
    }
    tokio::task::block_in_place(|| {
        wait_for("the workload on the new synchronizer", DEADLINE, || {
            PARTICIPANTS.iter().all(|p| {
                created_since(&stack, p, reconnected) > 0
                    && node_psql(
                        &stack,
                        p,
                        "SELECT count(*) FROM member_cursor \
                         WHERE physical_synchronizer_id LIKE 'global2::%' AND last_counter > 0",
                    ) != "0"
            })
        });
        wait_for_matching_commitments(&stack, reconnected, DEADLINE, |commitments| {
            commitments.iter().all(|c| c.matching_peers > 0)
        });
    });

    new.stop().expect("stopping the new synchronizer");
    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}
