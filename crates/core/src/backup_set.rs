//! The consistency rule of a backup set, decided from the snapshot points the agents measured
//! around their dumps (DESIGN §3, §6). Pure: the coordinator feeds it the manifests' numbers.
//!
//! A set restores to a working network only if
//! - every sequencer snapshot lies after every member snapshot in sequencer time: the lower
//!   bound of each sequencer's interval is at or above the upper bound of each participant's
//!   and mediator's interval. Otherwise a restored member has processed events the restored
//!   sequencer never sequenced, and Canton refuses the connection (ForkHappened). Equal is
//!   safe: both numbers are timestamps of sequenced events, so a sequencer whose latest event
//!   is the member's last processed one has that event in its dump. On a quiet network every
//!   correctly ordered set is equal;
//! - every app is not ahead of its participant: the app's upper ledger offset is at most its
//!   participant's lower one. Otherwise the app refers to transactions the restored
//!   participant never saw.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NodeKind;

/// What one node's manifest says about where its dump lies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPoint {
    pub node: String,
    pub kind: NodeKind,
    /// For an app: the participant it reads from.
    pub participant: Option<String>,
    /// Sequencer time (µs) read before and after the dump: the last processed event of a
    /// member, the latest sequenced event of a sequencer. 0 when the node has none (an app).
    pub sequencer_time_before: i64,
    pub sequencer_time_after: i64,
    /// Ledger offsets read before and after the dump (participants and apps; 0 otherwise).
    pub ledger_offset_before: i64,
    pub ledger_offset_after: i64,
}

/// One way a set breaks the rule, naming the nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// Read-after below read-before: the manifest is not a measurement of one dump.
    InvertedInterval { node: String },
    SequencerNotAfterMember {
        sequencer: String,
        member: String,
        sequencer_lower: i64,
        member_upper: i64,
    },
    AppAheadOfParticipant {
        app: String,
        participant: String,
        app_upper: i64,
        participant_lower: i64,
    },
    /// An app whose participant has no snapshot in the set.
    AppWithoutParticipant { app: String, participant: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvertedInterval { node } => write!(
                f,
                "{node}: the snapshot interval ends before it starts; take its backup again"
            ),
            Self::SequencerNotAfterMember {
                sequencer,
                member,
                sequencer_lower,
                member_upper,
            } => write!(
                f,
                "sequencer {sequencer} was dumped at sequencer time {sequencer_lower} µs, not \
                 after member {member} (up to {member_upper} µs): restoring this set makes \
                 {member} fail with ForkHappened; take the sequencer backup after the members'"
            ),
            Self::AppAheadOfParticipant {
                app,
                participant,
                app_upper,
                participant_lower,
            } => write!(
                f,
                "app {app} is at ledger offset {app_upper}, ahead of its participant \
                 {participant} (from {participant_lower}): back up the app before its participant"
            ),
            Self::AppWithoutParticipant { app, participant } => write!(
                f,
                "app {app} reads from {participant}, which has no backup in this set"
            ),
        }
    }
}

/// Where the set lies, for its manifest of manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVerdict {
    /// Highest member upper bound and lowest sequencer lower bound (µs); the gap between them
    /// is the margin by which the ordering held.
    pub members_up_to: i64,
    pub sequencers_from: Option<i64>,
    pub nodes: usize,
}

/// Checks the rule over every pair; all violations are reported, not just the first.
pub fn check_backup_set(points: &[SnapshotPoint]) -> Result<SetVerdict, Vec<Violation>> {
    let mut violations: Vec<Violation> = points
        .iter()
        .filter(|p| {
            p.sequencer_time_after < p.sequencer_time_before
                || p.ledger_offset_after < p.ledger_offset_before
        })
        .map(|p| Violation::InvertedInterval {
            node: p.node.clone(),
        })
        .collect();
    let members = || {
        points
            .iter()
            .filter(|p| matches!(p.kind, NodeKind::Participant | NodeKind::Mediator))
    };
    let sequencers = || points.iter().filter(|p| p.kind == NodeKind::Sequencer);
    for sequencer in sequencers() {
        for member in members() {
            if sequencer.sequencer_time_before < member.sequencer_time_after {
                violations.push(Violation::SequencerNotAfterMember {
                    sequencer: sequencer.node.clone(),
                    member: member.node.clone(),
                    sequencer_lower: sequencer.sequencer_time_before,
                    member_upper: member.sequencer_time_after,
                });
            }
        }
    }
    for app in points.iter().filter(|p| p.kind == NodeKind::App) {
        let participant_id = app.participant.clone().unwrap_or_default();
        match points
            .iter()
            .find(|p| p.kind == NodeKind::Participant && p.node == participant_id)
        {
            None => violations.push(Violation::AppWithoutParticipant {
                app: app.node.clone(),
                participant: participant_id,
            }),
            Some(participant) if app.ledger_offset_after > participant.ledger_offset_before => {
                violations.push(Violation::AppAheadOfParticipant {
                    app: app.node.clone(),
                    participant: participant.node.clone(),
                    app_upper: app.ledger_offset_after,
                    participant_lower: participant.ledger_offset_before,
                });
            }
            Some(_) => {}
        }
    }
    if violations.is_empty() {
        Ok(SetVerdict {
            members_up_to: members().map(|p| p.sequencer_time_after).max().unwrap_or(0),
            sequencers_from: sequencers().map(|p| p.sequencer_time_before).min(),
            nodes: points.len(),
        })
    } else {
        Err(violations)
    }
}
