//! The election loop: turns [`Step`]s of the pure [`LeaseState`] into NATS writes and feeds
//! the outcomes back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{Operation, Store};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sidecar_bus::{Bucket, Kv, KvErrorKind, Network, valid_token};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::state::{LeaseState, LeaseTiming, Role, Step};

/// Who contends for which lease.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// The organisation whose coordinators elect one leader.
    pub organisation: String,
    /// This coordinator's name (a per-process suffix is added, so a restart is a new holder).
    pub holder: String,
    pub timing: LeaseTiming,
}

/// An election that cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    #[error("organisation {0:?} must be 1-128 of [A-Za-z0-9_-]; fix `organisation` in the config")]
    InvalidOrganisation(String),
    #[error("holder name {0:?} must be 1-64 of [A-Za-z0-9_-]; fix `name` in the config")]
    InvalidHolder(String),
}

/// The lease key of an organisation (with TTL).
pub fn lease_key(organisation: &str) -> String {
    format!("lease.{organisation}")
}

/// The epoch key of an organisation (no TTL; only ever advanced by CAS).
pub fn epoch_key(organisation: &str) -> String {
    format!("epoch.{organisation}")
}

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Unique per write of this holder, so a read-back recognises which write applied.
    write: u64,
    epoch: u64,
}

#[derive(Serialize, Deserialize)]
struct EpochRecord {
    epoch: u64,
    holder: String,
    /// The lease revision that started the tenure which wrote this epoch.
    tenure: u64,
}

/// Counters of the election loop, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionStats {
    pub acquisitions: u64,
    pub renewals: u64,
    /// Lease writes that ended without a server answer.
    pub write_timeouts: u64,
    /// Of those, writes a read-back showed had applied.
    pub resolved_by_read_back: u64,
    /// Tenures ended by a lost CAS or a stale-epoch rejection.
    pub losses: u64,
}

#[derive(Default)]
struct Counters {
    acquisitions: AtomicU64,
    renewals: AtomicU64,
    write_timeouts: AtomicU64,
    resolved_by_read_back: AtomicU64,
    losses: AtomicU64,
}

struct Shared {
    state: Mutex<LeaseState>,
    wake: Notify,
    counters: Counters,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, LeaseState> {
        // The state is plain data updated by whole-value methods; a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running election for one organisation's lease. Dropping it stops renewing; the lease
/// then expires by its TTL.
pub struct Election {
    shared: Arc<Shared>,
    roles: watch::Receiver<Role>,
    holder_instance: String,
    task: JoinHandle<()>,
}

impl Election {
    /// Starts contending. Leadership is reported through [`Election::roles`] once the lease
    /// is ours and the epoch advanced.
    pub fn start(network: &Network, config: ElectionConfig) -> Result<Self, ElectionError> {
        if !valid_token(&config.organisation) {
            return Err(ElectionError::InvalidOrganisation(config.organisation));
        }
        if config.holder.len() > 64 || !valid_token(&config.holder) {
            return Err(ElectionError::InvalidHolder(config.holder));
        }
        let holder_instance = format!("{}-{}", config.holder, uuid::Uuid::now_v7().simple());
        let shared = Arc::new(Shared {
            state: Mutex::new(LeaseState::new(config.timing)),
            wake: Notify::new(),
            counters: Counters::default(),
        });
        let (roles_tx, roles) = watch::channel(Role::Follower);
        let kv = network.kv(Bucket::Leader).clone();
        let lease_key = lease_key(&config.organisation);
        let contender = Contender {
            jetstream: network.jetstream.clone(),
            lease_subject: format!("{}{}", kv.store().prefix, lease_key),
            lease_key,
            epoch_key: epoch_key(&config.organisation),
            kv,
            timing: config.timing,
            holder_instance: holder_instance.clone(),
            writes: 0,
            unconfirmed: VecDeque::new(),
            tenure: 0,
            shared: shared.clone(),
            roles_tx,
        };
        let task = tokio::spawn(contender.run());
        Ok(Self {
            shared,
            roles,
            holder_instance,
            task,
        })
    }

    /// Whether we may publish as leader right now. Call it immediately before every publish.
    pub fn is_leader_now(&self) -> bool {
        self.epoch_now().is_some()
    }

    /// Our epoch if we are leader right now.
    pub fn epoch_now(&self) -> Option<u64> {
        self.shared.state().role(Instant::now()).epoch()
    }

    /// Role changes, with the epoch of each tenure.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.roles.clone()
    }

    /// Reports that an agent rejected our message because it has seen `seen_epoch`. Returns
    /// whether that deposed us; if so we stop acting as leader at once (before this returns).
    pub fn deposed(&self, seen_epoch: u64) -> bool {
        let deposed = self.shared.state().on_stale_epoch(seen_epoch);
        if deposed {
            self.shared.counters.losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(seen_epoch, "deposed by a stale-epoch rejection");
            self.shared.wake.notify_one();
        }
        deposed
    }

    /// The name this process writes into the lease.
    pub fn holder_instance(&self) -> &str {
        &self.holder_instance
    }

    pub fn stats(&self) -> ElectionStats {
        let c = &self.shared.counters;
        ElectionStats {
            acquisitions: c.acquisitions.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
            write_timeouts: c.write_timeouts.load(Ordering::Relaxed),
            resolved_by_read_back: c.resolved_by_read_back.load(Ordering::Relaxed),
            losses: c.losses.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum LeaseWrite {
    Applied {
        sent_at: Instant,
        revision: u64,
    },
    /// The key moved past the expected revision and none of our writes is there.
    Conflict,
    Unknown,
}

struct Contender {
    jetstream: async_nats::jetstream::Context,
    kv: Kv,
    lease_key: String,
    lease_subject: String,
    epoch_key: String,
    timing: LeaseTiming,
    holder_instance: String,
    writes: u64,
    /// Lease writes without an answer yet: (write number, send time). One may still apply.
    unconfirmed: VecDeque<(u64, Instant)>,
    /// The lease revision that started the current tenure.
    tenure: u64,
    shared: Arc<Shared>,
    roles_tx: watch::Sender<Role>,
}

/// Unconfirmed writes remembered for read-back; older ones cannot apply any more because
/// every later write of ours used a revision they would have moved.
const UNCONFIRMED_KEPT: usize = 8;

impl Contender {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            let (step, role) = {
                let state = self.shared.state();
                (state.next_step(now), state.role(now))
            };
            self.roles_tx.send_if_modified(|current| {
                let changed = *current != role;
                if changed {
                    tracing::info!(?role, "leadership changed");
                    *current = role;
                }
                changed
            });
            match step {
                Step::Wait { until } => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = self.shared.wake.notified() => {}
                    }
                }
                Step::Acquire => self.acquire().await,
                Step::AdvanceEpoch => self.advance_epoch().await,
                Step::Renew { revision } => self.renew(revision).await,
            }
        }
    }

    fn store(&self) -> &Store {
        self.kv.store()
    }

    async fn acquire(&mut self) {
        let read = timeout(
            self.timing.request_timeout(),
            self.store().entry(&self.lease_key),
        )
        .await;
        let expected = match read {
            Ok(Ok(None)) => 0,
            Ok(Ok(Some(entry))) if entry.operation != Operation::Put => entry.revision,
            Ok(Ok(Some(entry))) => match self.own_write(&entry.value) {
                // An earlier create of ours applied late: the read proves nothing, but the
                // write was a CAS, so it counts from its own send time.
                Some(sent_at) => {
                    self.record_acquired(sent_at, entry.revision);
                    return;
                }
                None => {
                    self.shared.state().on_attempt_failed(Instant::now());
                    return;
                }
            },
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading the lease failed");
                self.shared.state().on_attempt_failed(Instant::now());
                return;
            }
            Err(_elapsed) => {
                self.shared.state().on_attempt_failed(Instant::now());
                return;
            }
        };
        match self.write_lease(expected).await {
            LeaseWrite::Applied { sent_at, revision } => self.record_acquired(sent_at, revision),
            LeaseWrite::Conflict | LeaseWrite::Unknown => {
                self.shared.state().on_attempt_failed(Instant::now());
            }
        }
    }

    fn record_acquired(&mut self, sent_at: Instant, revision: u64) {
        self.tenure = revision;
        self.unconfirmed.clear();
        self.shared
            .counters
            .acquisitions
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(revision, "lease acquired; advancing the epoch");
        self.shared.state().on_acquired(sent_at, revision);
    }

    async fn renew(&mut self, revision: u64) {
        match self.write_lease(revision).await {
            LeaseWrite::Applied { sent_at, revision } => {
                self.shared
                    .counters
                    .renewals
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.state().on_renewed(sent_at, revision);
            }
            LeaseWrite::Conflict => {
                self.shared.counters.losses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(revision, "lease lost: it moved past our revision");
                self.shared.state().on_lost();
            }
            LeaseWrite::Unknown => self.shared.state().on_attempt_failed(Instant::now()),
        }
    }

    /// One CAS write of the lease with its TTL, expecting `expected` (0: no live value). A
    /// write without an answer is resolved by reading the key back.
    async fn write_lease(&mut self, expected: u64) -> LeaseWrite {
        self.writes += 1;
        let epoch = self
            .shared
            .state()
            .role(Instant::now())
            .epoch()
            .unwrap_or(0);
        let record = LeaseRecord {
            holder: self.holder_instance.clone(),
            write: self.writes,
            epoch,
        };
        let payload = match serde_json::to_vec(&record) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::error!(%error, "encoding the lease record failed");
                return LeaseWrite::Unknown;
            }
        };
        let message = PublishMessage::build()
            .payload(payload)
            .expected_last_subject_sequence(expected)
            .ttl(self.timing.ttl());
        let sent_at = Instant::now();
        let outcome = timeout(self.timing.request_timeout(), async {
            self.jetstream
                .send_publish(self.lease_subject.clone(), message)
                .await?
                .await
        })
        .await;
        match outcome {
            Ok(Ok(ack)) => {
                self.unconfirmed.clear();
                LeaseWrite::Applied {
                    sent_at,
                    revision: ack.sequence,
                }
            }
            Ok(Err(error)) if error.kind() == PublishErrorKind::WrongLastSequence => self
                .read_back(expected)
                .await
                .unwrap_or(LeaseWrite::Conflict),
            Ok(Err(_)) | Err(_) => {
                self.shared
                    .counters
                    .write_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                self.unconfirmed.push_back((self.writes, sent_at));
                if self.unconfirmed.len() > UNCONFIRMED_KEPT {
                    self.unconfirmed.pop_front();
                }
                tracing::warn!(expected, "lease write unanswered; reading back");
                self.read_back(expected)
                    .await
                    .unwrap_or(LeaseWrite::Unknown)
            }
        }
    }

    /// Reads the lease after a write without a clear answer. `Some(Applied)` when one of our
    /// unconfirmed writes is there, `Some(Conflict)` when the key moved past `expected`
    /// without one, `None` when the read tells nothing.
    async fn read_back(&mut self, expected: u64) -> Option<LeaseWrite> {
        let entry = timeout(
            self.timing.request_timeout(),
            self.store().entry(&self.lease_key),
        )
        .await
        .ok()?
        .ok()?;
        let moved = match &entry {
            Some(entry) => entry.revision > expected,
            None => expected != 0,
        };
        if let Some(entry) = entry
            && entry.operation == Operation::Put
            && let Some(sent_at) = self.own_write(&entry.value)
        {
            self.shared
                .counters
                .resolved_by_read_back
                .fetch_add(1, Ordering::Relaxed);
            self.unconfirmed.clear();
            return Some(LeaseWrite::Applied {
                sent_at,
                revision: entry.revision,
            });
        }
        moved.then_some(LeaseWrite::Conflict)
    }

    /// The send time of the unconfirmed write of ours that `value` holds, if it is one.
    fn own_write(&self, value: &[u8]) -> Option<Instant> {
        let record: LeaseRecord = serde_json::from_slice(value).ok()?;
        if record.holder != self.holder_instance {
            return None;
        }
        self.unconfirmed
            .iter()
            .find(|(write, _)| *write == record.write)
            .map(|(_, sent_at)| *sent_at)
    }

    async fn advance_epoch(&mut self) {
        let current = match self.kv.get(&self.epoch_key).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "reading the epoch failed");
                self.shared.state().on_attempt_failed(Instant::now());
                return;
            }
        };
        let record = current
            .as_ref()
            .and_then(|v| serde_json::from_slice::<EpochRecord>(&v.value).ok());
        if let Some(record) = &record
            && record.holder == self.holder_instance
            && record.tenure == self.tenure
        {
            // Our own advance for this tenure applied after an unanswered write.
            self.shared.state().on_epoch_advanced(record.epoch);
            return;
        }
        let highest_seen = self.shared.state().highest_seen_epoch();
        let epoch = record.map_or(0, |r| r.epoch).max(highest_seen) + 1;
        let next = EpochRecord {
            epoch,
            holder: self.holder_instance.clone(),
            tenure: self.tenure,
        };
        let value = match serde_json::to_vec(&next) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::error!(%error, "encoding the epoch record failed");
                self.shared.state().on_attempt_failed(Instant::now());
                return;
            }
        };
        let written = match current {
            Some(current) => {
                self.kv
                    .update(&self.epoch_key, value, current.revision)
                    .await
            }
            None => self.kv.create(&self.epoch_key, value).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(epoch, "epoch advanced");
                self.shared.state().on_epoch_advanced(epoch);
            }
            // Someone advanced it in between (a previous leader finishing late): read again.
            Err(error) if error.kind() == KvErrorKind::Conflict => {}
            Err(error) => {
                tracing::warn!(%error, "advancing the epoch failed");
                self.shared.state().on_attempt_failed(Instant::now());
            }
        }
    }
}
