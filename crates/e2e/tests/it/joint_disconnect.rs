//! A synchronized disconnect across two organisations as a proposal (DESIGN §5). Nobody
//! touches a node before every organisation accepted: a proposal the validator aborts
//! disconnects nothing. An agreed one is run by each organisation's own coordinator on its own
//! participants; with the validator's coordinator cut off after it accepted, the SV
//! organisation's phase is done and the proposal names the validator as missing; when that
//! coordinator comes back it runs and reports its part, and the phase is done by both, with
//! every participant's outcome. Each organisation ran one disconnect, all over the generated
//! NATS logins.
use std::time::{Duration, Instant};

use e2e::stack::Stack;
use proto_sidecar as pb;
use serde_json::Value;

use crate::support::{
    ORGANISATION, listed_proposal, node_calls, ops_json_of, ops_ok_of, publish_proposal_message,
    running_stack_with_logins,
};

const VALIDATOR: &str = "validator";

const TOPOLOGY: &str = r#"
name = "joint"
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
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
[[node]]
id = "validator1"
kind = "participant"
organisation = "validator"
"#;

const PARTICIPANTS: [&str; 3] = ["participant1", "participant2", "validator1"];

fn propose(stack: &Stack, request_id: &str) -> Value {
    ops_ok_of(
        stack,
        ORGANISATION,
        &[
            "proposals",
            "propose",
            "joint-disconnect",
            "--request-id",
            request_id,
            "--param",
            "synchronizer_alias=global",
        ],
    )
}

/// Successful DisconnectSynchronizer calls in the node's own action log.
async fn disconnects(stack: &Stack, node: &str) -> usize {
    node_calls(stack, node)
        .await
        .iter()
        .filter(|(method, outcome)| method.ends_with("/DisconnectSynchronizer") && outcome == "OK")
        .count()
}

/// Polls the SV organisation's view of `hash` until `holds`, logging how long it took.
fn wait_for_view(stack: &Stack, hash: &str, what: &str, holds: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let view = listed_proposal(stack, ORGANISATION, hash);
        if holds(&view) {
            eprintln!("{what} after {:?}", started.elapsed());
            return view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s: {view:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joint_disconnect_waits_for_every_organisation_and_resumes_a_cut_off_one() {
    let started = Instant::now();
    let mut stack = running_stack_with_logins(TOPOLOGY).await;
    stack
        .start_coordinator(VALIDATOR, Duration::from_secs(60))
        .await
        .expect("the validator's coordinator");

    // Refused: aborted by the validator before anyone acted.
    let refused = propose(&stack, "joint-refused");
    let refused_hash = refused["proposal_hash"].as_str().expect("hash").to_owned();
    assert_eq!(refused["status"], "awaiting", "{refused:#?}");
    assert_eq!(
        refused["phases"][0]["missing"],
        serde_json::json!([ORGANISATION, VALIDATOR])
    );
    let aborted = ops_ok_of(
        &stack,
        VALIDATOR,
        &[
            "proposals",
            "abort",
            &refused_hash,
            "--reason",
            "maintenance window not agreed",
        ],
    );
    assert_eq!(aborted["status"], "aborted");

    // The validator's coordinator is cut off; its acceptance of the next proposal is already
    // on the stream (signed with its key, sent with its credential).
    let validator = stack
        .coordinators
        .get_mut(VALIDATOR)
        .expect("validator coordinator");
    validator.process.kill();
    let agreed = propose(&stack, "joint-1");
    let hash = agreed["proposal_hash"].as_str().expect("hash").to_owned();
    assert_eq!(agreed["missing"], serde_json::json!([VALIDATOR]));
    publish_proposal_message(
        &stack,
        VALIDATOR,
        VALIDATOR,
        &pb::ProposalMessage {
            kind: Some(pb::proposal_message::Kind::Accept(pb::Accept {
                proposal_hash: hex::decode(&hash).expect("hex"),
                organisation: VALIDATOR.to_owned(),
                at_unix_ms: e2e::now_unix_ms(),
            })),
        },
    )
    .await;
    let half = tokio::task::block_in_place(|| {
        wait_for_view(&stack, &hash, "the SV organisation's phase done", |view| {
            view["status"] == "agreed" && names(&view["phases"][0]["done_by"]) == [ORGANISATION]
        })
    });
    assert_eq!(
        names(&half["phases"][0]["missing"]),
        [VALIDATOR],
        "the cut-off organisation is named: {half:#?}"
    );
    for node in ["participant1", "participant2"] {
        assert_eq!(
            disconnects(&stack, node).await,
            1,
            "{node} disconnected once"
        );
    }
    assert_eq!(
        disconnects(&stack, "validator1").await,
        0,
        "the validator's node is the validator's to disconnect"
    );

    let took = stack
        .start_coordinator(VALIDATOR, Duration::from_secs(60))
        .await
        .expect("the validator's coordinator back");
    eprintln!("validator coordinator back and leading after {took:?}");
    let done = tokio::task::block_in_place(|| {
        wait_for_view(&stack, &hash, "the phase done by both", |view| {
            view["phases"][0]["missing"]
                .as_array()
                .is_some_and(Vec::is_empty)
        })
    });
    let mut outcomes: Vec<(String, String)> = done["phases"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        PARTICIPANTS.map(|node| (node.to_owned(), "done".to_owned())),
        "{done:#?}"
    );
    for node in PARTICIPANTS {
        assert_eq!(
            disconnects(&stack, node).await,
            1,
            "{node} disconnected once"
        );
    }
    for organisation in [ORGANISATION, VALIDATOR] {
        let (_, runs) = ops_json_of(&stack, organisation, &["runs"]);
        let disconnect_runs = runs
            .iter()
            .filter(|run| run["runbook"] == "disconnect")
            .count();
        assert_eq!(
            disconnect_runs, 1,
            "{organisation} ran one disconnect (none for the aborted proposal): {runs:#?}"
        );
    }
    assert_eq!(
        listed_proposal(&stack, ORGANISATION, &refused_hash)["status"],
        "aborted"
    );

    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}
