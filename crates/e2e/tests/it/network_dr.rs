//! Network disaster recovery (DESIGN §6 `network-dr`) over real agents, two organisations'
//! coordinators and canton-sim: four SV participants with their SV apps (organisation
//! `operator`, which runs the synchronizer) and a validator with its app (organisation
//! `validator`). The recovery timestamp T comes from commitments and is proposed; a run is
//! refused until the validator accepts. The synchronizer is then lost; each organisation runs
//! network-dr on its own nodes: disconnect, migration dumps at T (SVs, then the validator with
//! `force`), approval once the new synchronizer is deployed, redeploy of every participant on a
//! new database through the app's hook, reconnect, commitments. The SV coordinator is killed
//! while the run waits for the approval and again right after it: the runs resume, and no
//! dump is taken twice and no participant migrated twice. Afterwards no contract created after
//! T exists, the participants keep their ids, the apps are at migration 1 and the workload
//! flows on the new synchronizer.
//!
//! On a one-organisation network a dump at a timestamp the participant is pruned past fails
//! with the app's 400 reason, and the run is rolled back: the participant reconnects and
//! nothing was redeployed.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use e2e::observe;
use e2e::stack::{Stack, backup_root};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    ORGANISATION, final_run, node_calls, node_psql, ops_json_of, ops_ok_of, ops_output_of,
    running_stack, running_stack_with_logins, step, wait_for, wait_for_matching_commitments,
};

const VALIDATOR: &str = "validator";

const TOPOLOGY: &str = r#"
name = "netdr"
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
workload = { rate_per_second = 4.0 }
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
workload = { rate_per_second = 2.0 }
[[node]]
id = "participant3"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant4"
kind = "participant"
organisation = "operator"
[[node]]
id = "validator1"
kind = "participant"
organisation = "validator"
[[node]]
id = "sv1-app"
kind = "app"
organisation = "operator"
participant = "participant1"
[[node]]
id = "sv2-app"
kind = "app"
organisation = "operator"
participant = "participant2"
[[node]]
id = "sv3-app"
kind = "app"
organisation = "operator"
participant = "participant3"
[[node]]
id = "sv4-app"
kind = "app"
organisation = "operator"
participant = "participant4"
[[node]]
id = "validator1-app"
kind = "app"
organisation = "validator"
participant = "validator1"
"#;

const SV_APPS: [&str; 4] = ["sv1-app", "sv2-app", "sv3-app", "sv4-app"];
const PARTICIPANTS: [&str; 5] = [
    "participant1",
    "participant2",
    "participant3",
    "participant4",
    "validator1",
];
/// The participant behind an app of [`TOPOLOGY`].
fn participant_of(app: &str) -> &'static str {
    match app {
        "sv1-app" => "participant1",
        "sv2-app" => "participant2",
        "sv3-app" => "participant3",
        "sv4-app" => "participant4",
        _ => "validator1",
    }
}

/// The validator's coordinator dies right after its second command publish (the dump, after
/// the disconnect), before it sees the dump's ack.
const VALIDATOR_FAILPOINT: &str = "driver-after-publish=1*off->return";

const DEADLINE: Duration = Duration::from_secs(90);

fn count(stack: &Stack, node: &str, sql: &str) -> i64 {
    node_psql(stack, node, sql)
        .parse()
        .unwrap_or_else(|e| panic!("{node}: {sql}: {e}"))
}

/// The stakeholders of the node's contracts (active or archived) created after `since_micros`.
fn parties(stack: &Stack, node: &str, since_micros: i64) -> std::collections::BTreeSet<String> {
    node_psql(
        stack,
        node,
        &format!(
            "SELECT DISTINCT unnest(stakeholders) FROM (SELECT stakeholders, created_ts_micros \
             FROM participant_contract UNION ALL SELECT stakeholders, created_ts_micros \
             FROM participant_archived_contract) c WHERE created_ts_micros > {since_micros}"
        ),
    )
    .lines()
    .map(|party| party.trim().to_owned())
    .filter(|party| !party.is_empty())
    .collect()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

fn micros_now() -> i64 {
    e2e::now_unix_ms() * 1000
}

/// Polls `holds` every 200 ms until it is true, logging how long it took.
/// The run of `organisation` waiting for the approval of `step`.
fn awaits_approval(stack: &Stack, organisation: &str, run: &str, step: &str) -> bool {
    let (status, runs) = ops_json_of(
        stack,
        organisation,
        &["runs", "--status", "awaiting_approval"],
    );
    status.success()
        && runs
            .iter()
            .any(|r| r["run_id"] == run && r["current_step"] == step)
}

fn migration_dump(stack: &Stack, app: &str) -> PathBuf {
    backup_root(stack)
        .join("migration")
        .join(app)
        .join("migration-1")
        .join("migration-dump.json")
}

fn modified(path: &PathBuf) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Successful imports of a migration dump in the app's own action log.
async fn migrations(stack: &Stack, app: &str) -> usize {
    node_calls(stack, app)
        .await
        .iter()
        .filter(|(method, outcome)| method == canton_sim::app::MIGRATE_METHOD && outcome == "OK")
        .count()
}

/// Each participant's uid as `canton-ops nodes` of its organisation shows it.
fn uids(stack: &Stack) -> BTreeMap<String, String> {
    let (status, ours) = ops_json_of(stack, ORGANISATION, &["nodes"]);
    assert!(status.success(), "{ours:#?}");
    let (_, theirs) = ops_json_of(stack, VALIDATOR, &["nodes"]);
    ours.iter()
        .chain(&theirs)
        .filter(|node| PARTICIPANTS.contains(&node["node"].as_str().unwrap_or_default()))
        .map(|node| {
            (
                node["node"].as_str().unwrap_or_default().to_owned(),
                node["uid"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn start_network_dr(stack: &Stack, organisation: &str, hash: &str, incident: &str) -> String {
    let started = ops_ok_of(
        stack,
        organisation,
        &[
            "dr",
            "run",
            "network-dr",
            "--proposal",
            hash,
            "--migration-id",
            "1",
            "--incident",
            incident,
            "--request-id",
            &format!("netdr-{organisation}"),
        ],
    );
    started["run"]["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id: {started:#?}"))
        .to_owned()
}

fn approve(stack: &Stack, organisation: &str, run: &str, apps: &[&str]) {
    let args = observe::signed_approval_args_for(
        stack,
        organisation,
        run,
        ["new-synchronizer", "redeploy"],
        apps,
    )
    .expect("approval args");
    let (status, values) = ops_json_of(
        stack,
        organisation,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(status.success(), "{organisation} approves: {values:#?}");
}

async fn restart_coordinator(stack: &mut Stack, why: &str) {
    stack.coordinators[ORGANISATION]
        .process
        .signal(Signal::SIGKILL)
        .expect("killing the SV coordinator");
    let took = stack
        .start_coordinator(ORGANISATION, Duration::from_secs(60))
        .await
        .expect("the SV coordinator back");
    eprintln!("SV coordinator killed {why}, leading again after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_dr_moves_both_organisations_to_a_new_synchronizer_at_the_agreed_timestamp() {
    let started = Instant::now();
    let mut stack = running_stack_with_logins(TOPOLOGY).await;
    stack
        .start_coordinator_with_env(
            VALIDATOR,
            Duration::from_secs(60),
            &[("FAILPOINTS", VALIDATOR_FAILPOINT)],
        )
        .await
        .expect("the validator's coordinator");
    let before = uids(&stack);
    assert_eq!(before.len(), PARTICIPANTS.len(), "{before:?}");

    // T: the latest period a quorum of SV participants agreed on, minus a 1 s margin, once
    // participant1 has contracts from before it (they must survive the recovery).
    let waited = Instant::now();
    let (proposal, t_micros) = loop {
        let (status, values) = ops_json_of(
            &stack,
            ORGANISATION,
            &["dr", "timestamp", "--param", "margin=1s"],
        );
        let answer = values.last().cloned().unwrap_or_default();
        if status.success()
            && let Some(t_micros) = answer["timestamp_micros"].as_i64()
            && count(
                &stack,
                "participant1",
                &format!(
                    "SELECT count(*) FROM participant_contract WHERE created_ts_micros <= {t_micros}"
                ),
            ) > 0
        {
            let run = answer["run_id"].as_str().expect("run id").to_owned();
            break (
                ops_ok_of(&stack, ORGANISATION, &["dr", "propose", &run]),
                t_micros,
            );
        }
        assert!(
            waited.elapsed() < DEADLINE,
            "no recovery timestamp after participant1's first contracts: {values:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let hash = proposal["proposal_hash"].as_str().expect("hash").to_owned();
    assert_eq!(
        proposal["parameters"]["timestamp_micros"],
        t_micros.to_string(),
        "{proposal:#?}"
    );
    eprintln!(
        "T = {t_micros} proposed as {hash} after {:?}",
        waited.elapsed()
    );

    // A proposal the validator aborts can never start a run.
    let (status, values) = ops_json_of(
        &stack,
        ORGANISATION,
        &["dr", "timestamp", "--param", "margin=1s"],
    );
    assert!(status.success(), "{values:#?}");
    let other_run = values.last().expect("answer")["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let other = ops_ok_of(&stack, ORGANISATION, &["dr", "propose", &other_run]);
    let other_hash = other["proposal_hash"].as_str().expect("hash").to_owned();
    assert_ne!(other_hash, hash);
    ops_ok_of(
        &stack,
        VALIDATOR,
        &[
            "proposals",
            "abort",
            &other_hash,
            "--reason",
            "not this one",
        ],
    );
    let refused = ops_output_of(
        &stack,
        ORGANISATION,
        &[
            "dr",
            "run",
            "network-dr",
            "--proposal",
            &other_hash,
            "--migration-id",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("aborted by validator (not this one)"),
        "an aborted proposal is refused: {stderr}"
    );

    // Not accepted by the validator yet: nothing starts.
    let refused = ops_output_of(
        &stack,
        ORGANISATION,
        &[
            "dr",
            "run",
            "network-dr",
            "--proposal",
            &hash,
            "--migration-id",
            "1",
        ],
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains("not accepted by validator"),
        "names the organisation: {stderr}"
    );
    let (_, runs) = ops_json_of(&stack, ORGANISATION, &["runs"]);
    assert!(
        runs.iter().all(|run| run["runbook"] != "network-dr"),
        "nothing started: {runs:#?}"
    );
    for app in SV_APPS {
        assert!(
            !migration_dump(&stack, app).exists(),
            "{app} dumped nothing"
        );
    }

    // Contracts created after T exist before the recovery (the workload goes on).
    let after_t =
        format!("SELECT count(*) FROM participant_contract WHERE created_ts_micros > {t_micros}");
    tokio::task::block_in_place(|| {
        wait_for("contracts created after T", DEADLINE, || {
            count(&stack, "participant1", &after_t) > 0
        });
    });

    let accepted = ops_ok_of(&stack, VALIDATOR, &["proposals", "accept", &hash[..12]]);
    assert_eq!(accepted["status"], "agreed", "{accepted:#?}");

    // The synchronizer is lost.
    stack
        .with_sims(|sims| {
            for node in ["sequencer1", "mediator1"] {
                sims.node_mut(node).expect(node).stop().expect("stopping");
            }
        })
        .expect("sims");
    let incident_micros = micros_now();
    let incident = rfc3339(SystemTime::now());
    let lost = format!(
        "SELECT count(*) FROM participant_contract \
         WHERE created_ts_micros > {t_micros} AND created_ts_micros <= {incident_micros}"
    );
    let to_lose = count(&stack, "participant1", &lost);
    let parties_before = parties(&stack, "participant1", 0);
    assert!(
        to_lose > 0,
        "participant1 created contracts between T and the incident"
    );
    let operator_run = start_network_dr(&stack, ORGANISATION, &hash, &incident);
    let validator_run = start_network_dr(&stack, VALIDATOR, &hash, &incident);
    let validator = stack
        .coordinators
        .get_mut(VALIDATOR)
        .expect("the validator's coordinator");
    tokio::task::block_in_place(|| {
        validator
            .process
            .wait_for_log(DEADLINE, |log| {
                log.contains("failpoint fired").then_some(())
            })
            .expect("the validator's failpoint fired");
        testkit::wait_until(
            "the validator's coordinator exited at the failpoint",
            DEADLINE,
            || !validator.process.is_running(),
        )
        .expect("exited");
    });
    let took = stack
        .start_coordinator(VALIDATOR, Duration::from_secs(60))
        .await
        .expect("the validator's coordinator back");
    eprintln!("validator coordinator died after publishing the dump, leading again after {took:?}");
    tokio::task::block_in_place(|| {
        wait_for(
            "both runs waiting for the new synchronizer",
            DEADLINE,
            || {
                awaits_approval(&stack, ORGANISATION, &operator_run, "new-synchronizer")
                    && awaits_approval(&stack, VALIDATOR, &validator_run, "new-synchronizer")
            },
        );
    });
    let mut dumped = BTreeMap::new();
    for app in SV_APPS.iter().chain(&["validator1-app"]) {
        let path = migration_dump(&stack, app);
        let dump: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("the dump")).expect("JSON");
        assert_eq!(dump["migration_id"], 1, "{app}");
        let participant = participant_of(app);
        assert_eq!(
            dump["identities"]["participant"]["id"].as_str(),
            before.get(participant).map(String::as_str),
            "{app}'s dump holds its participant's identity"
        );
        let at = humantime::parse_rfc3339_weak(
            dump["data_snapshot"]["acs_timestamp"]
                .as_str()
                .expect("acs_timestamp"),
        )
        .expect("RFC 3339");
        let at_micros = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch")
            .as_micros() as i64;
        assert_eq!(at_micros, t_micros, "{app} dumped at T");
        assert!(
            std::fs::read_to_string(path.with_extension("json.sha256"))
                .expect("checksum")
                .starts_with(char::is_alphanumeric),
            "{app} has a checksum"
        );
        dumped.insert(app.to_owned(), modified(&path));
    }

    restart_coordinator(&mut stack, "while waiting for the approval").await;
    tokio::task::block_in_place(|| {
        wait_for("the resumed run waiting again", DEADLINE, || {
            awaits_approval(&stack, ORGANISATION, &operator_run, "new-synchronizer")
        });
    });

    // The new synchronizer is deployed: a sequencer and mediator on new, empty databases.
    let took = stack
        .with_sims(|sims| {
            ["sequencer1", "mediator1"]
                .iter()
                .map(|node| {
                    sims.node_mut(node)
                        .expect(node)
                        .redeploy_fresh()
                        .expect("redeploy")
                })
                .sum::<Duration>()
        })
        .expect("sims");
    eprintln!("new synchronizer deployed in {took:?}");
    tokio::task::block_in_place(|| {
        approve(&stack, ORGANISATION, &operator_run, &SV_APPS);
        approve(&stack, VALIDATOR, &validator_run, &["validator1-app"]);
    });
    restart_coordinator(&mut stack, "right after the approval").await;

    let mut runs = BTreeMap::new();
    for (organisation, run) in [(ORGANISATION, &operator_run), (VALIDATOR, &validator_run)] {
        let (_, values) = ops_json_of(&stack, organisation, &["watch", run]);
        let run = final_run(&values).clone();
        assert_eq!(run["status"], "succeeded", "{organisation}: {run:#}");
        assert_eq!(step(&run, "commitments")["status"], "done", "{run:#}");
        runs.insert(organisation, run);
    }
    let reconnected = micros_now();

    // Contracts created on the new synchronizer are fine; none from between T and the loss.
    eprintln!("participant1 had {to_lose} contracts created between T and the incident");
    for participant in PARTICIPANTS {
        assert_eq!(
            count(&stack, participant, &lost),
            0,
            "{participant} holds no contract created between T and the incident"
        );
    }
    assert!(
        count(
            &stack,
            "participant1",
            "SELECT count(*) FROM participant_contract"
        ) > 0,
        "participant1 kept its contracts from before T"
    );
    for app in dumped.keys() {
        let log = std::fs::read_to_string(stack.agents[*app].process.log_path())
            .expect("the agent's log");
        let dumps = log
            .lines()
            .filter(|line| {
                line.contains("action migration_dump") && line.contains("action finished")
            })
            .count();
        assert_eq!(dumps, 1, "{app}'s agent took its dump once");
    }
    for (app, at) in &dumped {
        assert_eq!(
            modified(&migration_dump(&stack, app)),
            *at,
            "{app}'s dump was written once"
        );
        assert_eq!(migrations(&stack, app).await, 1, "{app} migrated once");
        assert_eq!(
            node_psql(&stack, app, "SELECT migration_id FROM app_state"),
            "1",
            "{app} is at migration 1"
        );
    }
    let after = uids(&stack);
    assert_eq!(after, before, "every participant kept its id");

    // The workload flows on the new synchronizer.
    let new_contracts = format!(
        "SELECT count(*) FROM participant_contract WHERE created_ts_micros > {reconnected}"
    );
    tokio::task::block_in_place(|| {
        wait_for("new contracts on the new synchronizer", DEADLINE, || {
            count(&stack, "participant1", &new_contracts) > 0
        });
    });

    // The new contracts are between the same party ids as before.
    let parties_after = parties(&stack, "participant1", reconnected);
    assert!(
        !parties_after.is_empty() && parties_after.is_subset(&parties_before),
        "party ids on the new synchronizer {parties_after:?} are among the old ones {parties_before:?}"
    );

    // Every participant's commitments on the new synchronizer match a counter-participant's,
    // and none mismatch.
    tokio::task::block_in_place(|| {
        wait_for_matching_commitments(&stack, reconnected, DEADLINE, |commitments| {
            commitments.len() == PARTICIPANTS.len()
                && commitments.iter().all(|c| c.matching_peers > 0)
        });
    });

    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}

/// Prunes the participant behind `ledger_url` up to its ledger end (Ledger API pruning).
async fn prune_to_ledger_end(ledger_url: &str) {
    use proto_canton::ledger::v2 as ledger;
    let end = ledger::state_service_client::StateServiceClient::connect(ledger_url.to_owned())
        .await
        .expect("the ledger API")
        .get_ledger_end(ledger::GetLedgerEndRequest {})
        .await
        .expect("the ledger end")
        .into_inner()
        .offset;
    ledger::admin::participant_pruning_service_client::ParticipantPruningServiceClient::connect(
        ledger_url.to_owned(),
    )
    .await
    .expect("the pruning service")
    .prune(ledger::admin::PruneRequest {
        prune_up_to: end,
        ..Default::default()
    })
    .await
    .expect("pruning");
    eprintln!("pruned up to offset {end}");
}

const PRUNED_TOPOLOGY: &str = r#"
name = "netdrpruned"
synchronizer = "global"
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
workload = { rate_per_second = 4.0 }
[[node]]
id = "sv1-app"
kind = "app"
organisation = "operator"
participant = "participant1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dump_at_a_pruned_timestamp_fails_with_the_reason_and_rolls_back() {
    let started = Instant::now();
    let stack = running_stack(PRUNED_TOPOLOGY).await;
    let before_pruning = SystemTime::now() - Duration::from_millis(500);
    let since = micros_now();
    tokio::task::block_in_place(|| {
        wait_for("contracts to prune", DEADLINE, || {
            count(
                &stack,
                "participant1",
                &format!(
                    "SELECT count(*) FROM participant_contract WHERE created_ts_micros > {since}"
                ),
            ) > 0
        });
    });
    let ledger_url = stack
        .with_sims(|sims| sims.node("participant1").and_then(|n| n.ledger_url()))
        .expect("sims")
        .expect("ledger API");
    prune_to_ledger_end(&ledger_url).await;

    let (_, values) = ops_json_of(
        &stack,
        ORGANISATION,
        &[
            "run",
            "network-dr",
            "--param",
            &format!("timestamp={}", rfc3339(before_pruning)),
            "--param",
            "migration_id=1",
            "--wait",
        ],
    );
    let run = final_run(&values);
    assert_eq!(run["status"], "compensated", "{run:#}");
    let dump = step(run, "dump-svs").to_string();
    assert!(
        dump.contains("400") && dump.contains("pruned"),
        "the app's reason: {dump}"
    );
    assert_eq!(step(run, "redeploy")["status"], "pending", "{run:#}");
    assert!(!migration_dump(&stack, "sv1-app").exists());
    assert_eq!(migrations(&stack, "sv1-app").await, 0);
    // The disconnect was rolled back: the participant processes again.
    let rolled_back = micros_now();
    tokio::task::block_in_place(|| {
        wait_for("participant1 connected again", DEADLINE, || {
            count(
                &stack,
                "participant1",
                &format!(
                    "SELECT count(*) FROM participant_contract WHERE created_ts_micros > {rolled_back}"
                ),
            ) > 0
        });
    });
    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}
