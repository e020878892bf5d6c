//! The recovery timestamp as a cross-organisation proposal, over real coordinators of two
//! organisations: the SV organisation proposes a `dr-timestamp` result, the validator's
//! coordinator reads it from the proposal stream and accepts by signature, and both then show
//! it agreed. A second proposal aborted by the validator is aborted for both and cannot be
//! accepted any more; an acceptance in the validator's name signed with the SV's key changes
//! nothing, even sent with the validator's stolen NATS credential; proposing again sends
//! nothing twice. The NATS server requires the generated logins, so every read and write of
//! the proposal stream runs under the permissions operators deploy.
use std::time::{Duration, Instant};

use e2e::stack::Stack;
use proto_sidecar as pb;
use serde_json::Value;

use crate::support::{
    ORGANISATION, listed_proposal, ops_json_of, ops_ok_of, publish_proposal_message,
    running_stack_with_logins,
};

const VALIDATOR: &str = "validator";

const TOPOLOGY: &str = r#"
name = "props"
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
workload = { rate_per_second = 2.0 }
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
[[node]]
id = "validator1"
kind = "participant"
organisation = "validator"
"#;

/// A finished dr-timestamp run of the SV organisation and its proposal.
fn propose_timestamp(stack: &Stack, request_id: &str) -> (String, Value) {
    let timestamp = ops_ok_of(
        stack,
        ORGANISATION,
        &[
            "dr",
            "timestamp",
            "--request-id",
            request_id,
            "--param",
            "margin=1s",
        ],
    );
    let run = timestamp["run_id"].as_str().expect("run id").to_owned();
    let proposal = ops_ok_of(stack, ORGANISATION, &["dr", "propose", &run]);
    assert_eq!(
        proposal["parameters"]["timestamp_micros"],
        timestamp["timestamp_micros"].to_string(),
        "the proposal carries the run's timestamp: {proposal:#?}"
    );
    (run, proposal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_timestamp_is_agreed_only_when_every_organisation_signs_it() {
    let started = Instant::now();
    let mut stack = running_stack_with_logins(TOPOLOGY).await;
    let took = stack
        .start_coordinator(VALIDATOR, Duration::from_secs(60))
        .await
        .expect("the validator's coordinator");
    eprintln!("validator coordinator leads after {took:?}");
    let answered = Instant::now();
    let (run, proposal) = loop {
        // Commitments need a few reconciliation periods before a quorum has agreed on one.
        let (status, values) = ops_json_of(
            &stack,
            ORGANISATION,
            &["dr", "timestamp", "--param", "margin=1s"],
        );
        if status.success() {
            let run = values.last().expect("answer")["run_id"]
                .as_str()
                .expect("run id")
                .to_owned();
            let proposal = ops_ok_of(&stack, ORGANISATION, &["dr", "propose", &run]);
            break (run, proposal);
        }
        assert!(
            answered.elapsed() < Duration::from_secs(60),
            "no recovery timestamp within 60 s: {values:#?}"
        );
    };
    eprintln!("first timestamp proposed after {:?}", answered.elapsed());
    let hash = proposal["proposal_hash"].as_str().expect("hash").to_owned();
    assert_eq!(proposal["status"], "awaiting", "{proposal:#?}");
    assert_eq!(proposal["accepted"], serde_json::json!([ORGANISATION]));
    assert_eq!(proposal["missing"], serde_json::json!([VALIDATOR]));
    assert_eq!(proposal["proposal_id"], run.as_str());

    // The validator's coordinator reads the same document from the stream.
    let seen = listed_proposal(&stack, VALIDATOR, &hash);
    assert_eq!(seen["parameters"], proposal["parameters"]);
    assert_eq!(seen["status"], "awaiting");

    // Proposing again sends nothing new: same hash, one proposal.
    let again = ops_ok_of(&stack, ORGANISATION, &["dr", "propose", &run]);
    assert_eq!(again["proposal_hash"], hash.as_str());

    let accepted = ops_ok_of(&stack, VALIDATOR, &["proposals", "accept", &hash[..12]]);
    assert_eq!(accepted["status"], "agreed", "{accepted:#?}");
    for organisation in [ORGANISATION, VALIDATOR] {
        let view = listed_proposal(&stack, organisation, &hash);
        assert_eq!(view["status"], "agreed", "{organisation}: {view:#?}");
        assert_eq!(view["missing"], serde_json::json!([]));
    }
    let agreed_abort = ops_json_of(
        &stack,
        VALIDATOR,
        &["proposals", "abort", &hash, "--reason", "too late"],
    );
    assert!(
        !agreed_abort.0.success(),
        "an agreed proposal cannot be withdrawn"
    );

    // A second timestamp: the validator refuses it.
    let (_, second) = propose_timestamp(&stack, "second-timestamp");
    let second_hash = second["proposal_hash"].as_str().expect("hash").to_owned();
    assert_ne!(second_hash, hash);

    // Forged: the SV organisation's coordinator key signing an acceptance in the validator's
    // name, published where the validator's answers go with the validator's coordinators'
    // NATS credential (which NATS lets through). Verification refuses it.
    forge_acceptance(&stack, &second_hash).await;
    let still = listed_proposal(&stack, ORGANISATION, &second_hash);
    assert_eq!(
        still["status"], "awaiting",
        "a forged acceptance counts for nothing: {still:#?}"
    );

    let aborted = ops_ok_of(
        &stack,
        VALIDATOR,
        &[
            "proposals",
            "abort",
            &second_hash,
            "--reason",
            "our participant was mid party onboarding",
        ],
    );
    assert_eq!(aborted["status"], "aborted");
    let view = listed_proposal(&stack, ORGANISATION, &second_hash);
    assert_eq!(view["status"], "aborted", "{view:#?}");
    assert_eq!(view["aborted_by"], VALIDATOR);
    assert_eq!(
        view["abort_reason"],
        "our participant was mid party onboarding"
    );
    let (status, _) = ops_json_of(&stack, VALIDATOR, &["proposals", "accept", &second_hash]);
    assert!(!status.success(), "an aborted proposal cannot be accepted");
    let (status, values) = ops_json_of(&stack, ORGANISATION, &["proposals", "list"]);
    assert!(status.success());
    assert_eq!(values.len(), 2, "two proposals, none doubled: {values:#?}");
    assert_eq!(
        listed_proposal(&stack, VALIDATOR, &hash)["status"],
        "agreed"
    );

    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}

/// Publishes an `Accept` of `hash` that claims to be the validator's but is signed with the
/// SV organisation's coordinator key, logged in as the validator's coordinators.
async fn forge_acceptance(stack: &Stack, hash: &str) {
    let message = pb::ProposalMessage {
        kind: Some(pb::proposal_message::Kind::Accept(pb::Accept {
            proposal_hash: hex::decode(hash).expect("hex"),
            organisation: VALIDATOR.to_owned(),
            at_unix_ms: 1,
        })),
    };
    publish_proposal_message(stack, ORGANISATION, VALIDATOR, &message).await;
}
