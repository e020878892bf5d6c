//! The journal's meaning: the fold of its records ([`JournalState`]), and [`CommandLog`], which
//! appends through a [`Journal`] off the async runtime and keeps the fold current.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sidecar_trust::{BodyHash, CommandJournal, RevokedCommands};

use super::journal::{Journal, JournalError, Record};

/// Finished entries are kept this long past their command's expiry: the command stream keeps
/// an undelivered command for a day, so a later delivery is impossible.
const KEEP_FINISHED_PAST_EXPIRY_MS: i64 = 24 * 3600 * 1000;
/// Revocations are kept this long after they were recorded.
const KEEP_REVOCATIONS_MS: i64 = 7 * 24 * 3600 * 1000;
/// The log is rewritten from the live state once it grows past this.
pub const COMPACT_ABOVE_BYTES: u64 = 4 * 1024 * 1024;

/// Where a command stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryState {
    Started,
    Done { result: Vec<u8>, detail: String },
    Failed { detail: String },
    OutcomeUnknown { detail: String },
}

impl EntryState {
    pub fn is_final(&self) -> bool {
        !matches!(self, EntryState::Started)
    }
}

/// A child process group recorded for a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildGroup {
    pub pgid: i32,
    pub leader_start: Option<u64>,
    pub kernel_boot: Option<String>,
}

/// One attempt of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub body_hash: BodyHash,
    /// The boot that started it: Started in this boot = running now; in an earlier one =
    /// interrupted by a crash.
    pub boot_id: String,
    pub action: String,
    pub expires_at_unix_ms: i64,
    pub started_at_unix_ms: i64,
    pub state: EntryState,
    pub children: Vec<ChildGroup>,
    finished_at_unix_ms: Option<i64>,
}

/// Everything the journal says, as of its last record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalState {
    entries: BTreeMap<(String, u32), Entry>,
    highest_epoch: u64,
    /// Command id → (highest revoked attempt, when recorded).
    revoked: BTreeMap<String, (u32, i64)>,
    last_boot: Option<(String, i64)>,
    lost_before_unix_ms: Option<i64>,
    config_serial: Option<u64>,
    records: usize,
}

impl JournalState {
    pub fn replay(records: &[Record]) -> Self {
        let mut state = Self::default();
        for record in records {
            state.apply(record);
        }
        state
    }

    /// Folds one record in. Records for an unknown attempt (a compaction dropped it) are
    /// ignored rather than inventing an entry.
    pub fn apply(&mut self, record: &Record) {
        self.records += 1;
        match record {
            Record::Boot {
                boot_id,
                started_at_unix_ms,
            } => self.last_boot = Some((boot_id.clone(), *started_at_unix_ms)),
            Record::Started {
                command_id,
                attempt,
                body_hash,
                boot_id,
                action,
                expires_at_unix_ms,
                at_unix_ms,
            } => {
                self.entries.insert(
                    (command_id.clone(), *attempt),
                    Entry {
                        body_hash: *body_hash,
                        boot_id: boot_id.clone(),
                        action: action.clone(),
                        expires_at_unix_ms: *expires_at_unix_ms,
                        started_at_unix_ms: *at_unix_ms,
                        state: EntryState::Started,
                        children: Vec::new(),
                        finished_at_unix_ms: None,
                    },
                );
            }
            Record::Child {
                command_id,
                attempt,
                pgid,
                leader_start,
                kernel_boot,
            } => {
                if let Some(entry) = self.entries.get_mut(&(command_id.clone(), *attempt)) {
                    entry.children.push(ChildGroup {
                        pgid: *pgid,
                        leader_start: *leader_start,
                        kernel_boot: kernel_boot.clone(),
                    });
                }
            }
            Record::Done {
                command_id,
                attempt,
                result,
                detail,
                at_unix_ms,
            } => self.finish(
                command_id,
                *attempt,
                EntryState::Done {
                    result: result.clone(),
                    detail: detail.clone(),
                },
                *at_unix_ms,
            ),
            Record::Failed {
                command_id,
                attempt,
                detail,
                at_unix_ms,
            } => self.finish(
                command_id,
                *attempt,
                EntryState::Failed {
                    detail: detail.clone(),
                },
                *at_unix_ms,
            ),
            Record::OutcomeUnknown {
                command_id,
                attempt,
                detail,
                at_unix_ms,
            } => self.finish(
                command_id,
                *attempt,
                EntryState::OutcomeUnknown {
                    detail: detail.clone(),
                },
                *at_unix_ms,
            ),
            Record::Epoch { epoch } => self.highest_epoch = self.highest_epoch.max(*epoch),
            Record::Revoked {
                command_id,
                up_to_attempt,
                at_unix_ms,
            } => {
                let slot = self
                    .revoked
                    .entry(command_id.clone())
                    .or_insert((0, *at_unix_ms));
                if *up_to_attempt >= slot.0 {
                    *slot = (*up_to_attempt, *at_unix_ms);
                }
            }
            Record::JournalLost { before_unix_ms } => {
                self.lost_before_unix_ms = Some(
                    self.lost_before_unix_ms
                        .map_or(*before_unix_ms, |t| t.max(*before_unix_ms)),
                );
            }
            Record::ConfigSerial { serial } => {
                self.config_serial = Some(self.config_serial.map_or(*serial, |s| s.max(*serial)));
            }
        }
    }

    fn finish(&mut self, command_id: &str, attempt: u32, state: EntryState, at: i64) {
        if let Some(entry) = self.entries.get_mut(&(command_id.to_owned(), attempt)) {
            entry.state = state;
            entry.finished_at_unix_ms = Some(at);
        }
    }

    pub fn entry(&self, command_id: &str, attempt: u32) -> Option<&Entry> {
        self.entries.get(&(command_id.to_owned(), attempt))
    }

    /// Entries still Started (interrupted, when they come from an earlier boot).
    pub fn unfinished(&self) -> impl Iterator<Item = (&(String, u32), &Entry)> {
        self.entries
            .iter()
            .filter(|(_, entry)| !entry.state.is_final())
    }

    pub fn highest_epoch(&self) -> u64 {
        self.highest_epoch
    }

    /// Commands issued before this instant are refused (the journal was lost once).
    pub fn lost_before_unix_ms(&self) -> Option<i64> {
        self.lost_before_unix_ms
    }

    pub fn config_serial(&self) -> Option<u64> {
        self.config_serial
    }

    /// Whether the journal has never recorded anything (missing, or only a header).
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// The records that rebuild the live state: what a compaction writes. Finished entries
    /// long past their expiry and old revocations are dropped.
    pub fn snapshot(&self, now_unix_ms: i64) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(serial) = self.config_serial {
            records.push(Record::ConfigSerial { serial });
        }
        records.push(Record::Epoch {
            epoch: self.highest_epoch,
        });
        if let Some(before_unix_ms) = self.lost_before_unix_ms {
            records.push(Record::JournalLost { before_unix_ms });
        }
        if let Some((boot_id, started_at_unix_ms)) = &self.last_boot {
            records.push(Record::Boot {
                boot_id: boot_id.clone(),
                started_at_unix_ms: *started_at_unix_ms,
            });
        }
        for (command_id, (up_to_attempt, at_unix_ms)) in &self.revoked {
            if now_unix_ms.saturating_sub(*at_unix_ms) <= KEEP_REVOCATIONS_MS {
                records.push(Record::Revoked {
                    command_id: command_id.clone(),
                    up_to_attempt: *up_to_attempt,
                    at_unix_ms: *at_unix_ms,
                });
            }
        }
        for ((command_id, attempt), entry) in &self.entries {
            let expired_long_ago = entry.state.is_final()
                && now_unix_ms
                    > entry
                        .expires_at_unix_ms
                        .saturating_add(KEEP_FINISHED_PAST_EXPIRY_MS);
            if expired_long_ago {
                continue;
            }
            records.extend(entry_records(command_id, *attempt, entry));
        }
        records
    }
}

fn entry_records(command_id: &str, attempt: u32, entry: &Entry) -> Vec<Record> {
    let mut records = vec![Record::Started {
        command_id: command_id.to_owned(),
        attempt,
        body_hash: entry.body_hash,
        boot_id: entry.boot_id.clone(),
        action: entry.action.clone(),
        expires_at_unix_ms: entry.expires_at_unix_ms,
        at_unix_ms: entry.started_at_unix_ms,
    }];
    for child in &entry.children {
        records.push(Record::Child {
            command_id: command_id.to_owned(),
            attempt,
            pgid: child.pgid,
            leader_start: child.leader_start,
            kernel_boot: child.kernel_boot.clone(),
        });
    }
    let at_unix_ms = entry
        .finished_at_unix_ms
        .unwrap_or(entry.started_at_unix_ms);
    let command_id = command_id.to_owned();
    match &entry.state {
        EntryState::Started => {}
        EntryState::Done { result, detail } => records.push(Record::Done {
            command_id,
            attempt,
            result: result.clone(),
            detail: detail.clone(),
            at_unix_ms,
        }),
        EntryState::Failed { detail } => records.push(Record::Failed {
            command_id,
            attempt,
            detail: detail.clone(),
            at_unix_ms,
        }),
        EntryState::OutcomeUnknown { detail } => records.push(Record::OutcomeUnknown {
            command_id,
            attempt,
            detail: detail.clone(),
            at_unix_ms,
        }),
    }
    records
}

impl CommandJournal for JournalState {
    fn recorded_body_hash(&self, command_id: &str, attempt: u32) -> Option<BodyHash> {
        self.entry(command_id, attempt).map(|entry| entry.body_hash)
    }
}

impl RevokedCommands for JournalState {
    fn is_revoked(&self, command_id: &str, attempt: u32) -> bool {
        self.revoked
            .get(command_id)
            .is_some_and(|(up_to, _)| attempt <= *up_to)
    }
}

/// The journal as the command path uses it: appends go through the [`Journal`] on a blocking
/// thread (fsync must not stall the runtime) and only then into the in-memory state, so the
/// state never claims more than the disk holds.
#[derive(Clone)]
pub struct CommandLog {
    inner: Arc<Inner>,
}

struct Inner {
    journal: Mutex<Box<dyn Journal>>,
    state: Mutex<JournalState>,
    compact_above: u64,
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both guarded values are changed by whole calls that cannot panic halfway (an append
    // either happened or not), so a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CommandLog {
    /// Wraps an opened journal with the state its records replay to; compacts at once when the
    /// log holds more records than its live state needs.
    pub fn new(
        journal: Box<dyn Journal>,
        records: &[Record],
        now_unix_ms: i64,
    ) -> Result<Self, JournalError> {
        Self::with_compaction_bound(journal, records, now_unix_ms, COMPACT_ABOVE_BYTES)
    }

    /// As [`CommandLog::new`], compacting once the log grows past `compact_above` bytes.
    pub fn with_compaction_bound(
        mut journal: Box<dyn Journal>,
        records: &[Record],
        now_unix_ms: i64,
        compact_above: u64,
    ) -> Result<Self, JournalError> {
        let state = JournalState::replay(records);
        let snapshot = state.snapshot(now_unix_ms);
        if !records.is_empty() && snapshot.len() < records.len() {
            journal.rewrite(&snapshot)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                journal: Mutex::new(journal),
                state: Mutex::new(state),
                compact_above,
            }),
        })
    }

    /// Appends `record` durably, then folds it into the state. Runs on a blocking thread.
    pub async fn append(&self, record: Record) -> Result<(), JournalError> {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || inner.append_blocking(&record)).await {
            Ok(result) => result,
            Err(join) => Err(JournalError::Io {
                path: "journal".into(),
                action: "appending (the writer thread failed)",
                source: std::io::Error::other(join.to_string()),
            }),
        }
    }

    /// Reads the state (briefly locked; never held across an await).
    pub fn read<R>(&self, f: impl FnOnce(&JournalState) -> R) -> R {
        f(&lock(&self.inner.state))
    }
}

impl Inner {
    fn append_blocking(&self, record: &Record) -> Result<(), JournalError> {
        let mut journal = lock(&self.journal);
        journal.append(record)?;
        let mut state = lock(&self.state);
        state.apply(record);
        if journal.len_bytes() > self.compact_above {
            let snapshot = state.snapshot(super::unix_ms_now());
            if let Err(error) = journal.rewrite(&snapshot) {
                // The appended record is safe; compaction is retried on the next append.
                tracing::warn!(%error, "journal compaction failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn started(id: &str, attempt: u32, boot: &str) -> Record {
        Record::Started {
            command_id: id.into(),
            attempt,
            body_hash: [attempt as u8; 32],
            boot_id: boot.into(),
            action: "disconnect".into(),
            expires_at_unix_ms: 1_000,
            at_unix_ms: 10,
        }
    }

    #[test]
    fn the_fold_tracks_states_epochs_and_revocations_per_attempt() {
        let records = vec![
            Record::Epoch { epoch: 4 },
            started("r/s/p", 1, "b1"),
            Record::Done {
                command_id: "r/s/p".into(),
                attempt: 1,
                result: b"{}".to_vec(),
                detail: String::new(),
                at_unix_ms: 20,
            },
            Record::Epoch { epoch: 2 },
            Record::Revoked {
                command_id: "r/s/p".into(),
                up_to_attempt: 1,
                at_unix_ms: 30,
            },
            started("r/s/p", 2, "b1"),
        ];
        let state = JournalState::replay(&records);
        assert_eq!(state.highest_epoch(), 4);
        assert!(state.is_revoked("r/s/p", 1));
        assert!(!state.is_revoked("r/s/p", 2));
        assert_eq!(state.recorded_body_hash("r/s/p", 2), Some([2; 32]));
        assert!(matches!(
            state.entry("r/s/p", 1).unwrap().state,
            EntryState::Done { .. }
        ));
        assert_eq!(state.unfinished().count(), 1);
    }

    #[tokio::test]
    async fn a_large_log_is_compacted_while_appending_and_keeps_its_meaning() {
        use crate::commands::journal::FileJournal;
        let dir = tempfile::tempdir().unwrap();
        let opened = FileJournal::open(dir.path()).unwrap();
        let log =
            CommandLog::with_compaction_bound(Box::new(opened.journal), &[], 0, 4 * 1024).unwrap();
        for epoch in 1..=200 {
            log.append(Record::Epoch { epoch }).await.unwrap();
        }
        log.append(started("r/s/p", 1, "b1")).await.unwrap();
        let size = std::fs::metadata(dir.path().join(crate::commands::journal::JOURNAL_FILE))
            .unwrap()
            .len();
        assert!(size < 8 * 1024, "log of {size} bytes was not compacted");
        let replayed = JournalState::replay(&FileJournal::open(dir.path()).unwrap().records);
        assert_eq!(replayed.highest_epoch(), 200);
        assert_eq!(
            replayed.entry("r/s/p", 1),
            log.read(|state| state.entry("r/s/p", 1).cloned()).as_ref()
        );
    }

    #[test]
    fn a_snapshot_rebuilds_the_same_live_state_and_drops_long_expired_entries() {
        let records = vec![
            Record::ConfigSerial { serial: 3 },
            Record::Boot {
                boot_id: "b1".into(),
                started_at_unix_ms: 1,
            },
            started("r/s/p", 1, "b1"),
            Record::Child {
                command_id: "r/s/p".into(),
                attempt: 1,
                pgid: 77,
                leader_start: Some(5),
                kernel_boot: None,
            },
            Record::Epoch { epoch: 9 },
            started("old/s/p", 1, "b1"),
            Record::Failed {
                command_id: "old/s/p".into(),
                attempt: 1,
                detail: "x".into(),
                at_unix_ms: 40,
            },
        ];
        let state = JournalState::replay(&records);
        let now = 1_000 + KEEP_FINISHED_PAST_EXPIRY_MS + 1;
        let rebuilt = JournalState::replay(&state.snapshot(now));
        assert_eq!(rebuilt.highest_epoch(), 9);
        assert_eq!(rebuilt.config_serial(), Some(3));
        assert_eq!(rebuilt.entry("r/s/p", 1), state.entry("r/s/p", 1));
        assert_eq!(rebuilt.entry("old/s/p", 1), None);
        // Not yet past the retention: kept.
        let kept = JournalState::replay(&state.snapshot(2_000));
        assert_eq!(kept.entry("old/s/p", 1), state.entry("old/s/p", 1));
    }
}
