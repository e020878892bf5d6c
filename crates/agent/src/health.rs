//! The node's verdict from the probes' latest results: pure, so every rule is unit-tested.

use std::fmt;

use crate::probe::{Board, Facts, Reason, ReasonKind};

/// The agent's verdict on its node (the coordinator judges liveness from heartbeat ages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeCondition {
    /// Some probe has not answered yet and none has failed.
    Starting,
    Healthy,
    /// A healthy passive HA replica: its health endpoints report "not serving" by design.
    Passive,
    Unhealthy,
}

impl NodeCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeCondition::Starting => "starting",
            NodeCondition::Healthy => "healthy",
            NodeCondition::Passive => "passive",
            NodeCondition::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            NodeCondition::Starting,
            NodeCondition::Healthy,
            NodeCondition::Passive,
            NodeCondition::Unhealthy,
        ]
        .into_iter()
        .find(|h| h.as_str() == text)
    }
}

impl fmt::Display for NodeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health, its reasons (sorted, so equal situations compare equal) and the merged facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub condition: NodeCondition,
    pub reasons: Vec<Reason>,
    pub facts: Facts,
}

/// Judges the node from the latest result of every probe.
///
/// Any failed probe makes the node unhealthy. "Not serving" answers are expected of a passive
/// replica, so when the status says `active = false` and nothing else is wrong the node is
/// `Passive`, not unhealthy. A synchronizer reported unhealthy by the node is a reason too.
pub fn assess(board: &Board) -> Assessment {
    let mut facts = Facts::default();
    let mut reasons = Vec::new();
    let mut pending = false;
    for (name, record) in board {
        let Some(record) = record else {
            pending = true;
            continue;
        };
        if let Some(probe_facts) = record.outcome.facts() {
            facts.merge(probe_facts);
        }
        if let Some(reason) = record.outcome.reason(name) {
            reasons.push(reason);
        }
    }
    if let Some(synchronizers) = &facts.synchronizers {
        for unhealthy in synchronizers.iter().filter(|s| !s.healthy) {
            reasons.push(Reason {
                probe: "synchronizers".to_owned(),
                kind: ReasonKind::Synchronizer,
                detail: format!("synchronizer {} reported unhealthy", unhealthy.id),
            });
        }
    }
    reasons.sort();
    reasons.dedup();
    let passive = facts.active == Some(false);
    let only_not_serving = reasons.iter().all(|r| r.kind == ReasonKind::NotServing);
    let condition = if reasons.is_empty() {
        if pending {
            NodeCondition::Starting
        } else if passive {
            NodeCondition::Passive
        } else {
            NodeCondition::Healthy
        }
    } else if passive && only_not_serving {
        NodeCondition::Passive
    } else {
        NodeCondition::Unhealthy
    };
    if condition == NodeCondition::Passive {
        reasons.clear();
    }
    Assessment {
        condition,
        reasons,
        facts,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use tokio::time::Instant;

    use super::*;
    use crate::probe::{ProbeOutcome, ProbeRecord, Synchronizer};

    fn record(outcome: ProbeOutcome) -> Option<ProbeRecord> {
        Some(ProbeRecord {
            outcome,
            finished_at: Instant::now(),
            finished_wall: SystemTime::now(),
            took: Duration::from_millis(3),
            period: Duration::from_secs(1),
            consecutive_failures: 0,
        })
    }

    fn status(active: bool) -> ProbeOutcome {
        ProbeOutcome::Healthy(Facts {
            active: Some(active),
            version: Some("3.4.9".to_owned()),
            ..Facts::default()
        })
    }

    fn not_serving() -> ProbeOutcome {
        ProbeOutcome::Unhealthy {
            facts: Facts {
                serving: Some(false),
                ..Facts::default()
            },
            kind: ReasonKind::NotServing,
            detail: "NOT_SERVING".to_owned(),
        }
    }

    #[test]
    fn all_healthy_is_healthy_and_merges_facts() {
        let board = Board::from([
            ("status", record(status(true))),
            (
                "ledger_end",
                record(ProbeOutcome::Healthy(Facts {
                    ledger_end: Some(42),
                    ..Facts::default()
                })),
            ),
        ]);
        let assessment = assess(&board);
        assert_eq!(assessment.condition, NodeCondition::Healthy);
        assert_eq!(assessment.facts.ledger_end, Some(42));
        assert_eq!(assessment.facts.version.as_deref(), Some("3.4.9"));
    }

    #[test]
    fn pending_probe_means_starting_unless_another_failed() {
        let mut board = Board::from([("status", record(status(true))), ("database", None)]);
        assert_eq!(assess(&board).condition, NodeCondition::Starting);
        board.insert(
            "status",
            record(ProbeOutcome::failed(
                ReasonKind::Timeout,
                "no answer within 1s",
            )),
        );
        let assessment = assess(&board);
        assert_eq!(assessment.condition, NodeCondition::Unhealthy);
        assert_eq!(assessment.reasons[0].kind, ReasonKind::Timeout);
        assert_eq!(assessment.reasons[0].probe, "status");
    }

    #[test]
    fn not_serving_passive_replica_is_passive_but_active_one_is_unhealthy() {
        let mut board = Board::from([
            ("status", record(status(false))),
            ("grpc_health", record(not_serving())),
        ]);
        let assessment = assess(&board);
        assert_eq!(assessment.condition, NodeCondition::Passive);
        assert!(assessment.reasons.is_empty());

        board.insert("status", record(status(true)));
        let assessment = assess(&board);
        assert_eq!(assessment.condition, NodeCondition::Unhealthy);
        assert_eq!(assessment.reasons[0].kind, ReasonKind::NotServing);

        board.insert("status", record(status(false)));
        board.insert(
            "database",
            record(ProbeOutcome::failed(ReasonKind::Unreachable, "refused")),
        );
        assert_eq!(assess(&board).condition, NodeCondition::Unhealthy);
    }

    #[test]
    fn unhealthy_synchronizer_is_a_reason() {
        let board = Board::from([(
            "synchronizers",
            record(ProbeOutcome::Healthy(Facts {
                synchronizers: Some(vec![
                    Synchronizer {
                        alias: "global".to_owned(),
                        id: "global::1220".to_owned(),
                        healthy: false,
                    },
                    Synchronizer {
                        alias: "global".to_owned(),
                        id: "other::1220".to_owned(),
                        healthy: true,
                    },
                ]),
                ..Facts::default()
            })),
        )]);
        let assessment = assess(&board);
        assert_eq!(assessment.condition, NodeCondition::Unhealthy);
        assert_eq!(assessment.reasons.len(), 1);
        assert_eq!(assessment.reasons[0].kind, ReasonKind::Synchronizer);
        assert!(assessment.reasons[0].detail.contains("global::1220"));
    }
}
