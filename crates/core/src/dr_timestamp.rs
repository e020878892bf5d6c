//! The disaster-recovery timestamp (DESIGN §6 `dr-timestamp`): the latest ACS commitment period
//! end at which a quorum of the listed SV participants mutually agreed, minus a margin.
//!
//! Each participant reports, per counter-participant, the period ends at which the commitment
//! it received matched its own and those at which it did not. Two participants *mutually agree*
//! at a period end when each reported a match from the other for it. A quorum agrees at `t`
//! when a set of at least `required` answering participants agree pairwise at `t` (a clique of
//! the agreement graph at `t`). Everything is sequencer time in microseconds; no wall clock.
//!
//! Operators used to do this by reading "Commitment correct for sender … and period …" log
//! lines and picking an end most SVs matched, then going 15 minutes further back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The most participants one computation handles (the agreement graph is a 64-bit mask per
/// node); SV networks have a few dozen.
pub const MAX_PARTICIPANTS: usize = 64;

/// How many of the listed participants must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Quorum {
    /// At least `numerator / denominator` of the listed participants, rounded up.
    Fraction { numerator: u32, denominator: u32 },
    /// At least this many.
    Count { count: u32 },
}

impl Default for Quorum {
    /// Two thirds of the listed SV participants.
    fn default() -> Self {
        Self::Fraction {
            numerator: 2,
            denominator: 3,
        }
    }
}

impl Quorum {
    /// `2/3` (a fraction of the listed participants, 0 < a/b ≤ 1) or `3` (a count ≥ 1).
    pub fn parse(text: &str) -> Result<Self, String> {
        let number = |part: &str| -> Result<u32, String> {
            part.trim()
                .parse::<u32>()
                .map_err(|_| format!("{text:?} is not a count like 3 or a fraction like 2/3"))
        };
        match text.split_once('/') {
            Some((numerator, denominator)) => {
                let (numerator, denominator) = (number(numerator)?, number(denominator)?);
                if numerator == 0 || denominator == 0 || numerator > denominator {
                    return Err(format!("{text:?}: a fraction must lie in (0, 1]"));
                }
                Ok(Self::Fraction {
                    numerator,
                    denominator,
                })
            }
            None => match number(text)? {
                0 => Err(format!("{text:?}: the quorum is at least 1")),
                count => Ok(Self::Count { count }),
            },
        }
    }

    /// Participants needed out of `listed`.
    pub fn required(self, listed: usize) -> usize {
        match self {
            Self::Fraction {
                numerator,
                denominator,
            } => {
                let listed = listed as u64;
                let needed = (listed * u64::from(numerator)).div_ceil(u64::from(denominator));
                usize::try_from(needed).unwrap_or(usize::MAX).max(1)
            }
            Self::Count { count } => usize::try_from(count).unwrap_or(usize::MAX),
        }
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fraction {
                numerator,
                denominator,
            } => write!(f, "{numerator}/{denominator}"),
            Self::Count { count } => write!(f, "{count}"),
        }
    }
}

/// What one participant saw from one counter-participant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterPeriods {
    /// The counter-participant's unique identifier (`name::fingerprint`).
    pub uid: String,
    /// Period ends (inclusive) at which the received commitment matched our own.
    #[serde(default)]
    pub matched: Vec<i64>,
    /// Period ends at which it did not.
    #[serde(default)]
    pub mismatched: Vec<i64>,
}

/// One participant's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentReport {
    /// The logical node id.
    pub node: String,
    pub participant_uid: String,
    #[serde(default)]
    pub counter_participants: Vec<CounterPeriods>,
}

/// A listed participant without a usable answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    pub node: String,
    pub reason: String,
}

/// Who agreed with whom up to when (one row per ordered pair of answering participants).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRow {
    pub node: String,
    pub counter: String,
    /// The latest period end at which both reported a match from the other.
    pub last_agreed_micros: Option<i64>,
    /// The first period end after that at which either reported a mismatch.
    pub mismatch_from_micros: Option<i64>,
}

/// An answering participant outside the agreeing set at the chosen period end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outsider {
    pub node: String,
    /// The latest period end at which it agreed with every member of the agreeing set.
    pub last_agreed_with_quorum_micros: Option<i64>,
}

/// The proposed recovery timestamp with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// `agreed_period_end_micros − margin_micros`.
    pub timestamp_micros: i64,
    pub agreed_period_end_micros: i64,
    pub margin_micros: i64,
    pub quorum: Quorum,
    pub required: usize,
    pub listed: Vec<String>,
    /// The participants that mutually agreed at the period end, sorted.
    pub agreeing: Vec<String>,
    pub outside: Vec<Outsider>,
    pub missing: Vec<Missing>,
    pub evidence: Vec<AgreementRow>,
}

/// Why no timestamp can be proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DrTimestampError {
    #[error(
        "no quorum for a recovery timestamp: {answered} of {listed} listed SV participants answered, \
         {required} needed (quorum {quorum}); no answer from {}",
        missing_list(.missing)
    )]
    NotEnoughAnswers {
        answered: usize,
        listed: usize,
        required: usize,
        quorum: Quorum,
        missing: Vec<Missing>,
    },
    #[error(
        "no commitment period on which {required} of the {listed} listed SV participants mutually \
         agreed (quorum {quorum}); the most that agreed on one period was {best}{}",
        if .missing.is_empty() { String::new() } else { format!("; no answer from {}", missing_list(.missing)) }
    )]
    NoAgreement {
        listed: usize,
        required: usize,
        quorum: Quorum,
        best: usize,
        missing: Vec<Missing>,
    },
    #[error(
        "the quorum {quorum} needs {required} participants but only {listed} are listed; list more or lower the quorum"
    )]
    QuorumAboveListed {
        listed: usize,
        required: usize,
        quorum: Quorum,
    },
    #[error("{listed} participants are listed; one computation handles at most {MAX_PARTICIPANTS}")]
    TooManyParticipants { listed: usize },
    #[error("participants {first} and {second} report the same uid {uid}")]
    DuplicateUid {
        first: String,
        second: String,
        uid: String,
    },
}

fn missing_list(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| format!("{} ({})", m.node, m.reason))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reports of the answering listed participants, indexed.
struct Graph<'a> {
    nodes: Vec<&'a CommitmentReport>,
    /// `matched[i][j]`: period ends at which node i saw a match from node j.
    matched: Vec<Vec<BTreeSet<i64>>>,
    mismatched: Vec<Vec<BTreeSet<i64>>>,
}

impl<'a> Graph<'a> {
    fn new(nodes: Vec<&'a CommitmentReport>) -> Self {
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, report)| (report.participant_uid.as_str(), i))
            .collect();
        let n = nodes.len();
        let mut matched = vec![vec![BTreeSet::new(); n]; n];
        let mut mismatched = vec![vec![BTreeSet::new(); n]; n];
        for (i, report) in nodes.iter().enumerate() {
            for counter in &report.counter_participants {
                let Some(&j) = index.get(counter.uid.as_str()) else {
                    continue;
                };
                if i == j {
                    continue;
                }
                matched[i][j].extend(counter.matched.iter().copied());
                mismatched[i][j].extend(counter.mismatched.iter().copied());
            }
        }
        Self {
            nodes,
            matched,
            mismatched,
        }
    }

    fn agree(&self, i: usize, j: usize, at: i64) -> bool {
        self.matched[i][j].contains(&at) && self.matched[j][i].contains(&at)
    }

    /// Adjacency masks of the agreement graph at `at`.
    fn adjacency(&self, at: i64) -> Vec<u64> {
        let n = self.nodes.len();
        (0..n)
            .map(|i| {
                (0..n)
                    .filter(|&j| j != i && self.agree(i, j, at))
                    .fold(0u64, |mask, j| mask | (1 << j))
            })
            .collect()
    }

    fn last_agreed(&self, i: usize, j: usize) -> Option<i64> {
        self.matched[i][j]
            .iter()
            .rev()
            .copied()
            .find(|at| self.matched[j][i].contains(at))
    }

    fn mismatch_after(&self, i: usize, j: usize, after: Option<i64>) -> Option<i64> {
        let floor = after.unwrap_or(i64::MIN);
        let first = |set: &BTreeSet<i64>| set.range((floor.saturating_add(1))..).next().copied();
        match (first(&self.mismatched[i][j]), first(&self.mismatched[j][i])) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The largest clique of `adjacency` (ties: the first found, exploring nodes in index order).
fn largest_clique(adjacency: &[u64]) -> u64 {
    fn extend(adjacency: &[u64], chosen: u64, candidates: u64, best: &mut u64) {
        if candidates == 0 {
            if chosen.count_ones() > best.count_ones() {
                *best = chosen;
            }
            return;
        }
        if chosen.count_ones() + candidates.count_ones() <= best.count_ones() {
            return;
        }
        let next = candidates.trailing_zeros() as usize;
        let bit = 1u64 << next;
        extend(adjacency, chosen | bit, candidates & adjacency[next], best);
        extend(adjacency, chosen, candidates & !bit, best);
    }
    let all = if adjacency.len() >= 64 {
        u64::MAX
    } else {
        (1u64 << adjacency.len()) - 1
    };
    let mut best = 0;
    extend(adjacency, 0, all, &mut best);
    best
}

fn members(mask: u64, n: usize) -> impl Iterator<Item = usize> {
    (0..n).filter(move |i| mask & (1 << i) != 0)
}

/// Proposes the recovery timestamp from the answers of the `listed` participants. A listed
/// participant without a report (or named in `missing`) counts against the quorum; reports of
/// unlisted participants (e.g. mid-party-onboarding ones, whose mismatches are expected) are
/// left out of the evidence.
pub fn propose(
    listed: &[String],
    reports: &[CommitmentReport],
    missing: &[Missing],
    quorum: Quorum,
    margin_micros: i64,
) -> Result<Proposal, DrTimestampError> {
    let listed: Vec<String> = listed
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if listed.len() > MAX_PARTICIPANTS {
        return Err(DrTimestampError::TooManyParticipants {
            listed: listed.len(),
        });
    }
    let required = quorum.required(listed.len());
    if required > listed.len() {
        return Err(DrTimestampError::QuorumAboveListed {
            listed: listed.len(),
            required,
            quorum,
        });
    }
    let mut answering: Vec<&CommitmentReport> = Vec::new();
    let mut absent: Vec<Missing> = Vec::new();
    for node in &listed {
        let declared = missing.iter().find(|m| &m.node == node);
        match reports.iter().find(|r| &r.node == node) {
            Some(report) if declared.is_none() => answering.push(report),
            _ => absent.push(declared.cloned().unwrap_or_else(|| Missing {
                node: node.clone(),
                reason: "no answer".to_owned(),
            })),
        }
    }
    let mut uids: BTreeMap<&str, &str> = BTreeMap::new();
    for report in &answering {
        if let Some(first) = uids.insert(&report.participant_uid, &report.node) {
            return Err(DrTimestampError::DuplicateUid {
                first: first.to_owned(),
                second: report.node.clone(),
                uid: report.participant_uid.clone(),
            });
        }
    }
    if answering.len() < required {
        return Err(DrTimestampError::NotEnoughAnswers {
            answered: answering.len(),
            listed: listed.len(),
            required,
            quorum,
            missing: absent,
        });
    }
    let graph = Graph::new(answering);
    let n = graph.nodes.len();
    let candidates: BTreeSet<i64> = graph
        .matched
        .iter()
        .flatten()
        .flat_map(|set| set.iter().copied())
        .collect();
    let mut best = 0;
    let mut chosen = None;
    for &at in candidates.iter().rev() {
        let clique = largest_clique(&graph.adjacency(at));
        let size = clique.count_ones() as usize;
        best = best.max(size);
        if size >= required {
            chosen = Some((at, clique));
            break;
        }
    }
    let Some((at, clique)) = chosen else {
        return Err(DrTimestampError::NoAgreement {
            listed: listed.len(),
            required,
            quorum,
            best,
            missing: absent,
        });
    };
    let agreeing: Vec<usize> = members(clique, n).collect();
    let outside = (0..n)
        .filter(|i| clique & (1 << i) == 0)
        .map(|i| Outsider {
            node: graph.nodes[i].node.clone(),
            last_agreed_with_quorum_micros: candidates
                .iter()
                .rev()
                .copied()
                .find(|&t| agreeing.iter().all(|&j| graph.agree(i, j, t))),
        })
        .collect();
    let mut evidence = Vec::new();
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let last = graph.last_agreed(i, j);
            evidence.push(AgreementRow {
                node: graph.nodes[i].node.clone(),
                counter: graph.nodes[j].node.clone(),
                last_agreed_micros: last,
                mismatch_from_micros: graph.mismatch_after(i, j, last),
            });
        }
    }
    let mut agreeing_names: Vec<String> = agreeing
        .iter()
        .map(|&i| graph.nodes[i].node.clone())
        .collect();
    agreeing_names.sort();
    Ok(Proposal {
        timestamp_micros: at.saturating_sub(margin_micros),
        agreed_period_end_micros: at,
        margin_micros,
        quorum,
        required,
        listed,
        agreeing: agreeing_names,
        outside,
        missing: absent,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_parse_and_round_up() {
        assert_eq!(Quorum::default().required(4), 3);
        assert_eq!(Quorum::default().required(3), 2);
        assert_eq!(Quorum::parse("3/4").map(|q| q.required(4)), Ok(3));
        assert_eq!(Quorum::parse("4").map(|q| q.required(10)), Ok(4));
        assert!(Quorum::parse("0").is_err());
        assert!(Quorum::parse("4/3").is_err());
        assert!(Quorum::parse("two").is_err());
    }

    #[test]
    fn the_largest_clique_is_found() {
        // 0-1-2 triangle, 3 linked to 0 only.
        let adjacency = [0b1110, 0b0101, 0b0011, 0b0001];
        assert_eq!(largest_clique(&adjacency), 0b0111);
    }
}
