//! The backup-set rule: sequencers after every member in sequencer time, apps not ahead of
//! their participants.

use proptest::prelude::*;
use sidecar_core::NodeKind;
use sidecar_core::backup_set::{SnapshotPoint, Violation, check_backup_set};

fn point(node: &str, kind: NodeKind, before: i64, after: i64) -> SnapshotPoint {
    SnapshotPoint {
        node: node.to_owned(),
        kind,
        participant: None,
        sequencer_time_before: before,
        sequencer_time_after: after,
        ledger_offset_before: 0,
        ledger_offset_after: 0,
    }
}

fn app(node: &str, participant: &str, offset_before: i64, offset_after: i64) -> SnapshotPoint {
    SnapshotPoint {
        participant: Some(participant.to_owned()),
        ledger_offset_before: offset_before,
        ledger_offset_after: offset_after,
        ..point(node, NodeKind::App, 0, 0)
    }
}

fn with_offsets(mut p: SnapshotPoint, before: i64, after: i64) -> SnapshotPoint {
    p.ledger_offset_before = before;
    p.ledger_offset_after = after;
    p
}

#[test]
fn ordered_set_passes_with_its_margin() {
    let set = [
        app("app1", "p1", 10, 12),
        with_offsets(point("p1", NodeKind::Participant, 100, 180), 12, 15),
        point("m1", NodeKind::Mediator, 120, 200),
        point("s1", NodeKind::Sequencer, 250, 260),
    ];
    let verdict = check_backup_set(&set).expect("ordered set");
    assert_eq!(verdict.members_up_to, 200);
    assert_eq!(verdict.sequencers_from, Some(250));
    assert_eq!(verdict.nodes, 4);
}

#[test]
fn sequencer_taken_before_a_member_is_named() {
    let set = [
        point("p1", NodeKind::Participant, 100, 180),
        point("p2", NodeKind::Participant, 100, 300),
        point("s1", NodeKind::Sequencer, 250, 260),
    ];
    let violations = check_backup_set(&set).expect_err("p2 is after s1");
    assert_eq!(
        violations,
        [Violation::SequencerNotAfterMember {
            sequencer: "s1".into(),
            member: "p2".into(),
            sequencer_lower: 250,
            member_upper: 300,
        }]
    );
    let text = violations[0].to_string();
    assert!(
        text.contains("p2") && text.contains("ForkHappened"),
        "{text}"
    );
}

/// A quiet network: the sequencer's latest event is the one the members processed last, so
/// the sequencer's dump holds everything the members saw.
#[test]
fn equal_times_are_in_order_and_one_microsecond_less_is_not() {
    let quiet = [
        point("m1", NodeKind::Mediator, 100, 200),
        point("s1", NodeKind::Sequencer, 200, 200),
    ];
    let verdict = check_backup_set(&quiet).expect("equal times are in order");
    assert_eq!(verdict.members_up_to, 200);
    assert_eq!(verdict.sequencers_from, Some(200));
    let early = [
        point("m1", NodeKind::Mediator, 100, 200),
        point("s1", NodeKind::Sequencer, 199, 200),
    ];
    assert!(check_backup_set(&early).is_err());
}

#[test]
fn app_ahead_of_or_without_its_participant_is_refused() {
    let participant = with_offsets(point("p1", NodeKind::Participant, 1, 2), 20, 25);
    let ahead = check_backup_set(&[app("app1", "p1", 18, 21), participant.clone()])
        .expect_err("app upper 21 > participant lower 20");
    assert!(matches!(
        &ahead[..],
        [Violation::AppAheadOfParticipant {
            app_upper: 21,
            participant_lower: 20,
            ..
        }]
    ));
    assert!(check_backup_set(&[app("app1", "p1", 18, 20), participant]).is_ok());
    let orphan = check_backup_set(&[app("app1", "p9", 1, 1)]).expect_err("no p9");
    assert_eq!(
        orphan,
        [Violation::AppWithoutParticipant {
            app: "app1".into(),
            participant: "p9".into()
        }]
    );
}

#[test]
fn inverted_interval_is_refused() {
    let violations =
        check_backup_set(&[point("p1", NodeKind::Participant, 50, 40)]).expect_err("inverted");
    assert_eq!(
        violations,
        [Violation::InvertedInterval { node: "p1".into() }]
    );
}

fn interval() -> impl Strategy<Value = (i64, i64)> {
    (0i64..1_000, 0i64..200).prop_map(|(start, length)| (start, start + length))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// The set passes exactly when the earliest sequencer lower bound is at or above the
    /// latest member upper bound, and every reported violation is a real offending pair.
    #[test]
    fn verdict_matches_the_extremes(
        members in prop::collection::vec(interval(), 1..6),
        sequencers in prop::collection::vec(interval(), 1..4),
    ) {
        let mut set = Vec::new();
        for (i, (before, after)) in members.iter().enumerate() {
            set.push(point(&format!("p{i}"), NodeKind::Participant, *before, *after));
        }
        for (i, (before, after)) in sequencers.iter().enumerate() {
            set.push(point(&format!("s{i}"), NodeKind::Sequencer, *before, *after));
        }
        let latest_member = members.iter().map(|(_, after)| *after).max().unwrap_or(0);
        let earliest_sequencer = sequencers.iter().map(|(before, _)| *before).min().unwrap_or(0);
        match check_backup_set(&set) {
            Ok(verdict) => {
                prop_assert!(earliest_sequencer >= latest_member);
                prop_assert_eq!(verdict.members_up_to, latest_member);
                prop_assert_eq!(verdict.sequencers_from, Some(earliest_sequencer));
            }
            Err(violations) => {
                prop_assert!(earliest_sequencer < latest_member);
                for violation in violations {
                    let Violation::SequencerNotAfterMember { sequencer_lower, member_upper, .. } =
                        violation
                    else {
                        return Err(TestCaseError::fail(format!("unexpected {violation:?}")));
                    };
                    prop_assert!(sequencer_lower < member_upper);
                }
            }
        }
    }
}
