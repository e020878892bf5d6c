//! The recovery timestamp: the latest period end a quorum mutually agreed on, minus the margin,
//! checked against a brute-force search over every subset of participants.

use std::collections::BTreeSet;

use proptest::prelude::*;
use sidecar_core::dr_timestamp::*;

/// What participant `i` saw from `j` at each period: `Some(true)` match, `Some(false)` mismatch.
type Views = Vec<Vec<Vec<Option<bool>>>>;

fn node(i: usize) -> String {
    format!("p{}", i + 1)
}

fn uid(i: usize) -> String {
    format!("p{}::1220{:02}", i + 1, i)
}

fn period_end(k: usize) -> i64 {
    1_000_000 * (k as i64 + 1)
}

fn reports(views: &Views, answering: &[usize]) -> Vec<CommitmentReport> {
    answering
        .iter()
        .map(|&i| CommitmentReport {
            node: node(i),
            participant_uid: uid(i),
            counter_participants: (0..views.len())
                .filter(|&j| j != i)
                .map(|j| CounterPeriods {
                    uid: uid(j),
                    matched: (0..views[i][j].len())
                        .filter(|&k| views[i][j][k] == Some(true))
                        .map(period_end)
                        .collect(),
                    mismatched: (0..views[i][j].len())
                        .filter(|&k| views[i][j][k] == Some(false))
                        .map(period_end)
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

fn listed(n: usize) -> Vec<String> {
    (0..n).map(node).collect()
}

fn agree(views: &Views, i: usize, j: usize, k: usize) -> bool {
    views[i][j][k] == Some(true) && views[j][i][k] == Some(true)
}

/// The latest period with a pairwise-agreeing subset of `answering` of at least `required`,
/// and the size of the largest such subset there; by enumerating every subset.
fn oracle(views: &Views, answering: &[usize], required: usize) -> Option<(i64, usize)> {
    let periods = views.first().and_then(|v| v.first()).map_or(0, Vec::len);
    let candidate = |k: usize| {
        answering.iter().any(|&i| {
            answering
                .iter()
                .any(|&j| j != i && views[i][j][k] == Some(true))
        })
    };
    for k in (0..periods).rev().filter(|&k| candidate(k)) {
        let mut largest = 0;
        for mask in 0u32..(1 << answering.len()) {
            let chosen: Vec<usize> = (0..answering.len())
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| answering[b])
                .collect();
            let clique = chosen
                .iter()
                .all(|&a| chosen.iter().all(|&b| a == b || agree(views, a, b, k)));
            if clique {
                largest = largest.max(chosen.len());
            }
        }
        if largest >= required {
            return Some((period_end(k), largest));
        }
    }
    None
}

fn views_strategy() -> impl Strategy<Value = Views> {
    (1usize..=6, 1usize..=6).prop_flat_map(|(n, periods)| {
        let cell = prop_oneof![
            3 => Just(Some(true)),
            1 => Just(Some(false)),
            1 => Just(None),
        ];
        prop::collection::vec(
            prop::collection::vec(prop::collection::vec(cell, periods), n),
            n,
        )
    })
}

proptest! {
    #[test]
    fn the_proposal_is_the_latest_period_a_quorum_agreed_on(
        views in views_strategy(),
        absent_mask in 0u32..64,
        count in 1u32..=6,
        fraction in prop::bool::ANY,
        margin in 0i64..2_000_000,
    ) {
        let n = views.len();
        let answering: Vec<usize> = (0..n).filter(|i| absent_mask & (1 << i) == 0).collect();
        let quorum = if fraction {
            Quorum::default()
        } else {
            Quorum::Count { count: count.min(n as u32) }
        };
        let required = quorum.required(n);
        let result = propose(&listed(n), &reports(&views, &answering), &[], quorum, margin);
        match (oracle(&views, &answering, required), result) {
            (_, Err(DrTimestampError::NotEnoughAnswers { answered, missing, .. })) => {
                prop_assert!(answering.len() < required);
                prop_assert_eq!(answered, answering.len());
                let named: BTreeSet<String> = missing.iter().map(|m| m.node.clone()).collect();
                let absent: BTreeSet<String> =
                    (0..n).filter(|i| !answering.contains(i)).map(node).collect();
                prop_assert_eq!(named, absent);
            }
            (None, Err(DrTimestampError::NoAgreement { best, .. })) => {
                prop_assert!(answering.len() >= required);
                prop_assert!(best < required);
            }
            (Some((end, largest)), Ok(proposal)) => {
                prop_assert_eq!(proposal.agreed_period_end_micros, end);
                prop_assert_eq!(proposal.timestamp_micros, end - margin);
                prop_assert_eq!(proposal.agreeing.len(), largest);
                prop_assert!(proposal.agreeing.len() >= required);
                let k = (0..).find(|&k| period_end(k) == end).unwrap();
                let index = |name: &String| (0..n).find(|&i| &node(i) == name).unwrap();
                for a in &proposal.agreeing {
                    prop_assert!(answering.contains(&index(a)), "{} did not answer", a);
                    for b in &proposal.agreeing {
                        prop_assert!(a == b || agree(&views, index(a), index(b), k));
                    }
                }
                prop_assert_eq!(
                    proposal.agreeing.len() + proposal.outside.len(),
                    answering.len()
                );
                prop_assert_eq!(proposal.missing.len(), n - answering.len());
                prop_assert_eq!(
                    proposal.evidence.len(),
                    answering.len() * answering.len().saturating_sub(1)
                );
            }
            (expected, got) => prop_assert!(false, "expected {:?}, got {:?}", expected, got),
        }
    }

    #[test]
    fn the_order_of_the_reports_does_not_matter(views in views_strategy(), seed in 0usize..720) {
        let n = views.len();
        let all: Vec<usize> = (0..n).collect();
        let forward = reports(&views, &all);
        let mut shuffled = forward.clone();
        shuffled.rotate_left(seed % n.max(1));
        shuffled.swap(0, seed % n.max(1));
        prop_assert_eq!(
            propose(&listed(n), &forward, &[], Quorum::default(), 5),
            propose(&listed(n), &shuffled, &[], Quorum::default(), 5)
        );
    }
}

/// Four SV participants agree on every period until p4's ACS diverges after period 6.
fn diverging_after_six() -> Views {
    let mut views = vec![vec![vec![Some(true); 10]; 4]; 4];
    let diverged = |(i, j): (usize, usize)| (i == 3) != (j == 3);
    for (i, row) in views.iter_mut().enumerate() {
        for (j, periods) in row.iter_mut().enumerate() {
            if diverged((i, j)) {
                periods[6..].fill(Some(false));
            }
        }
    }
    views
}

#[test]
fn a_participant_diverging_after_t_is_named_and_an_all_party_quorum_stays_before_t() {
    let views = diverging_after_six();
    let all: Vec<usize> = (0..4).collect();
    let margin = 500_000;
    let everyone = propose(
        &listed(4),
        &reports(&views, &all),
        &[],
        Quorum::Count { count: 4 },
        margin,
    )
    .unwrap();
    assert_eq!(everyone.agreed_period_end_micros, period_end(5));
    assert_eq!(everyone.timestamp_micros, period_end(5) - margin);
    let p4_rows: Vec<&AgreementRow> = everyone
        .evidence
        .iter()
        .filter(|row| row.node == "p4")
        .collect();
    assert_eq!(p4_rows.len(), 3);
    for row in p4_rows {
        assert_eq!(row.last_agreed_micros, Some(period_end(5)), "{row:?}");
        assert_eq!(row.mismatch_from_micros, Some(period_end(6)), "{row:?}");
    }

    let two_thirds = propose(
        &listed(4),
        &reports(&views, &all),
        &[],
        Quorum::default(),
        margin,
    )
    .unwrap();
    assert_eq!(two_thirds.agreed_period_end_micros, period_end(9));
    assert_eq!(two_thirds.agreeing, ["p1", "p2", "p3"]);
    assert_eq!(
        two_thirds.outside,
        [Outsider {
            node: "p4".into(),
            last_agreed_with_quorum_micros: Some(period_end(5)),
        }]
    );
}

#[test]
fn two_of_four_down_is_a_quorum_error_naming_them() {
    let views = diverging_after_six();
    let missing = [Missing {
        node: "p3".into(),
        reason: "past its deadline".into(),
    }];
    let error = propose(
        &listed(4),
        &reports(&views, &[0, 1]),
        &missing,
        Quorum::default(),
        0,
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("2 of 4 listed SV participants answered, 3 needed")
            && text.contains("p3 (past its deadline)")
            && text.contains("p4 (no answer)"),
        "{text}"
    );
}

#[test]
fn reports_of_unlisted_participants_stay_out_of_the_evidence() {
    let views = diverging_after_six();
    let all: Vec<usize> = (0..4).collect();
    let listed_three = listed(3);
    let proposal = propose(
        &listed_three,
        &reports(&views, &all),
        &[],
        Quorum::Count { count: 3 },
        0,
    )
    .unwrap();
    assert_eq!(proposal.agreed_period_end_micros, period_end(9));
    assert!(
        proposal
            .evidence
            .iter()
            .all(|row| row.node != "p4" && row.counter != "p4")
    );
}
