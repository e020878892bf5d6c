//! The `commitments` probe part (participants, asked only by name): the evidence the
//! coordinator picks a disaster-recovery timestamp from. Per counter-participant, the period
//! ends (sequencer time, µs) at which the commitment it sent matched ours and those at which it
//! did not, from `LookupReceivedAcsCommitments` over the last day.
//!
//! The answer travels in a signed ack (64 KiB envelopes), so only the latest
//! [`MAX_PERIODS`] ends of each kind are kept per counter-participant; the agreed period of a
//! recovery is normally among the latest few.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use canton_client::CantonClient;
use canton_client::types::CommitmentState;
use serde_json::{Value, json};
use sidecar_core::dr_timestamp::{CommitmentReport, CounterPeriods};

use super::ActionError;

pub const COMMITMENTS: &str = "commitments";
/// Period ends kept per counter-participant and state.
pub const MAX_PERIODS: usize = 128;
const LOOKBACK: Duration = Duration::from_secs(24 * 3600);

pub struct CommitmentEvidence {
    node: String,
    client: CantonClient,
}

fn micros(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl CommitmentEvidence {
    pub fn new(node: &str, client: CantonClient) -> Self {
        Self {
            node: node.to_owned(),
            client,
        }
    }

    fn failed(&self, what: &str, error: canton_client::Error) -> ActionError {
        let text = format!("{}: {what}: {error}", self.node);
        match error.kind() {
            canton_client::ErrorKind::Unavailable | canton_client::ErrorKind::DeadlineExceeded => {
                ActionError::Unavailable(format!("{text}; retry when the node answers"))
            }
            _ => ActionError::Failed(text),
        }
    }

    /// The synchronizer the commitments are read for: the connected one, else the registered
    /// one (a participant disconnected for recovery still has its commitments).
    async fn synchronizer_id(&self) -> Result<String, ActionError> {
        let connected = self
            .client
            .list_connected_synchronizers()
            .await
            .map_err(|e| self.failed("listing connected synchronizers", e))?;
        if let Some(first) = connected.first() {
            return Ok(first.physical_synchronizer_id.clone());
        }
        let registered = self
            .client
            .list_registered_synchronizers()
            .await
            .map_err(|e| self.failed("listing registered synchronizers", e))?;
        Ok(registered
            .into_iter()
            .find_map(|s| s.physical_synchronizer_id)
            .unwrap_or_default())
    }

    /// The report, as the JSON the coordinator reads (`sidecar_core::dr_timestamp`).
    pub async fn report(&self, uid: Option<String>, now: SystemTime) -> Result<Value, ActionError> {
        let uid = match uid {
            Some(uid) => uid,
            None => self
                .client
                .status()
                .await
                .map_err(|e| self.failed("reading the node's status", e))?
                .uid
                .ok_or_else(|| {
                    ActionError::Unavailable(format!(
                        "{}: the participant has no identity yet; retry once it is initialised",
                        self.node
                    ))
                })?,
        };
        let synchronizer_id = self.synchronizer_id().await?;
        let received = self
            .client
            .received_commitments(
                &synchronizer_id,
                Some((now - LOOKBACK, now + LOOKBACK)),
                &[CommitmentState::Match, CommitmentState::Mismatch],
            )
            .await
            .map_err(|e| self.failed("looking up received commitments", e))?;
        let mut by_counter: BTreeMap<String, CounterPeriods> = BTreeMap::new();
        for commitment in received {
            let Some(end) = commitment.period_end_inclusive.map(micros) else {
                continue;
            };
            let entry = by_counter
                .entry(commitment.counter_participant_uid.clone())
                .or_insert_with(|| CounterPeriods {
                    uid: commitment.counter_participant_uid.clone(),
                    ..CounterPeriods::default()
                });
            match commitment.state {
                CommitmentState::Match => entry.matched.push(end),
                CommitmentState::Mismatch => entry.mismatched.push(end),
                _ => {}
            }
        }
        let counter_participants = by_counter
            .into_values()
            .map(|mut periods| {
                for ends in [&mut periods.matched, &mut periods.mismatched] {
                    ends.sort_unstable();
                    ends.dedup();
                    let excess = ends.len().saturating_sub(MAX_PERIODS);
                    ends.drain(..excess);
                }
                periods
            })
            .collect();
        let report = CommitmentReport {
            node: self.node.clone(),
            participant_uid: uid,
            counter_participants,
        };
        Ok(json!({
            "synchronizer_id": synchronizer_id,
            "report": report,
        }))
    }
}
