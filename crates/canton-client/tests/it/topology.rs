use std::time::{Duration, SystemTime};

use canton_client::types::CommitmentState;

use crate::fake_node::FakeNode;

#[tokio::test]
async fn synchronizer_parameters_are_read_from_the_synchronizer_store_head_state() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let periods = served
        .client()
        .synchronizer_parameters("global::1220")
        .await
        .unwrap();
    assert_eq!(periods.len(), 1);
    assert_eq!(
        periods[0].ledger_time_record_time_tolerance,
        Duration::from_secs(60)
    );
    assert_eq!(
        periods[0].mediator_reaction_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(periods[0].serial, 2);
    assert_eq!(
        periods[0].valid_from,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100))
    );
    assert_eq!(
        node.calls().last().unwrap(),
        "ListSynchronizerParametersState store=Some(Id(\"global::1220\")) head=true filter=global::1220"
    );
}

#[tokio::test]
async fn received_commitments_map_periods_and_states() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let commitments = served
        .client()
        .received_commitments("global::1220", None, &[CommitmentState::Match])
        .await
        .unwrap();
    assert_eq!(commitments.len(), 1);
    assert_eq!(commitments[0].state, CommitmentState::Match);
    assert_eq!(commitments[0].counter_participant_uid, "p2::1220");
    assert_eq!(
        commitments[0].period_end_inclusive,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(120))
    );
    assert_eq!(
        node.calls().last().unwrap(),
        "LookupReceivedAcsCommitments synchronizer=global::1220 states=[1]"
    );
}
