//! The pure leadership decision: what we may believe about our lease at a given instant.
//!
//! Nothing here reads a clock or talks to NATS; every method takes `now` (or the send time of a
//! write) as an input, so the timing argument can be tested with exact instants.

use std::time::Duration;

use tokio::time::Instant;

/// Lease timing, validated so the safety argument in ARCHITECTURE.md holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    ttl: Duration,
    epsilon: Duration,
}

/// Lease timing that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error(
        "leader.lease_ttl {ttl:?} is below {min:?}; raise it (one JetStream election must not depose a healthy leader)"
    )]
    TtlTooShort { ttl: Duration, min: Duration },
    #[error(
        "leader.lease_ttl {ttl:?} is not whole seconds; the server keeps TTLs in seconds, so round it"
    )]
    TtlNotWholeSeconds { ttl: Duration },
    #[error(
        "leader.epsilon {epsilon:?} must be above zero and at most a quarter of leader.lease_ttl {ttl:?}"
    )]
    EpsilonOutOfRange { epsilon: Duration, ttl: Duration },
}

impl LeaseTiming {
    /// The shortest TTL a deployment may use: a JetStream leader election takes seconds and
    /// must not cost a healthy coordinator its lease.
    pub const MIN_TTL: Duration = Duration::from_secs(15);
    /// Default margin for clock-rate difference and publish in-flight time (ARCHITECTURE.md).
    pub const DEFAULT_EPSILON: Duration = Duration::from_secs(1);
    /// The shortest TTL [`LeaseTiming::short_for_tests`] accepts.
    pub const MIN_TEST_TTL: Duration = Duration::from_secs(2);

    /// Production timing: `ttl` ≥ [`LeaseTiming::MIN_TTL`], whole seconds, 0 < ε ≤ ttl/4.
    pub fn new(ttl: Duration, epsilon: Duration) -> Result<Self, TimingError> {
        Self::checked(ttl, epsilon, Self::MIN_TTL)
    }

    /// Short leases so tests observe expiry in seconds. Not for deployments: a JetStream
    /// election can outlast such a lease.
    #[doc(hidden)]
    pub fn short_for_tests(ttl: Duration, epsilon: Duration) -> Result<Self, TimingError> {
        Self::checked(ttl, epsilon, Self::MIN_TEST_TTL)
    }

    fn checked(ttl: Duration, epsilon: Duration, min: Duration) -> Result<Self, TimingError> {
        if ttl < min {
            return Err(TimingError::TtlTooShort { ttl, min });
        }
        if ttl.subsec_nanos() != 0 {
            return Err(TimingError::TtlNotWholeSeconds { ttl });
        }
        if epsilon.is_zero() || epsilon > ttl / 4 {
            return Err(TimingError::EpsilonOutOfRange { epsilon, ttl });
        }
        Ok(Self { ttl, epsilon })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn epsilon(&self) -> Duration {
        self.epsilon
    }

    /// Renewals are due every TTL/4, so three can fail before the lease runs out.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 4
    }

    /// Every lease request gives up after TTL/5 (< TTL/4), so a hung request never delays the
    /// next renewal.
    pub fn request_timeout(&self) -> Duration {
        self.ttl / 5
    }

    /// Pause after an attempt whose outcome stayed unknown, before trying again.
    pub fn retry_pause(&self) -> Duration {
        self.ttl / 20
    }

    /// Until when a lease written by a request sent at `sent_at` is ours for sure. The server
    /// starts the TTL when it applies the write, which is after `sent_at`; ε covers our clock
    /// running slower than the server's and a publish still in flight at the deadline.
    pub fn valid_until(&self, sent_at: Instant) -> Instant {
        sent_at + self.ttl - self.epsilon
    }
}

/// Our role as the rest of the coordinator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// We hold the lease and have advanced the epoch to `epoch` for this tenure.
    Leader {
        epoch: u64,
    },
}

impl Role {
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Role::Leader { epoch } => Some(*epoch),
            Role::Follower => None,
        }
    }
}

/// What the election loop should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Try to create the lease (it is free or unknown to us).
    Acquire,
    /// We hold the lease but have not advanced the epoch for this tenure yet.
    AdvanceEpoch,
    /// Renew the lease held at `revision`.
    Renew { revision: u64 },
    /// Nothing to do before `until` (a renewal, a retry, or our own lease running out).
    Wait { until: Instant },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    revision: u64,
    last_renew_sent: Instant,
    valid_until: Instant,
    epoch: Option<u64>,
}

/// The lease as far as our successful CAS writes prove it; reads never make us leader.
#[derive(Clone, Debug)]
pub struct LeaseState {
    timing: LeaseTiming,
    held: Option<Held>,
    /// After a failed or unknown attempt, nothing before this instant.
    retry_at: Option<Instant>,
    /// The highest epoch we have seen anywhere; a tenure below it is void.
    highest_seen_epoch: u64,
}

impl LeaseState {
    pub fn new(timing: LeaseTiming) -> Self {
        Self {
            timing,
            held: None,
            retry_at: None,
            highest_seen_epoch: 0,
        }
    }

    pub fn timing(&self) -> &LeaseTiming {
        &self.timing
    }

    /// Leader only with an established epoch and strictly before the validity deadline.
    pub fn role(&self, now: Instant) -> Role {
        match self.held {
            Some(Held {
                epoch: Some(epoch),
                valid_until,
                ..
            }) if now < valid_until => Role::Leader { epoch },
            _ => Role::Follower,
        }
    }

    /// The revision of the lease we hold, if any (also after it ran out locally: a CAS on it
    /// can only succeed if nobody wrote the key since).
    pub fn held_revision(&self) -> Option<u64> {
        self.held.map(|held| held.revision)
    }

    pub fn next_step(&self, now: Instant) -> Step {
        if let Some(retry_at) = self.retry_at
            && now < retry_at
        {
            return Step::Wait {
                until: self.earliest_deadline(retry_at),
            };
        }
        match self.held {
            None => Step::Acquire,
            Some(Held { epoch: None, .. }) => Step::AdvanceEpoch,
            Some(held) => {
                let due = held.last_renew_sent + self.timing.renew_interval();
                if now >= due {
                    Step::Renew {
                        revision: held.revision,
                    }
                } else {
                    Step::Wait {
                        until: self.earliest_deadline(due),
                    }
                }
            }
        }
    }

    /// `until`, or earlier when our validity ends before it (so the role flips on time).
    fn earliest_deadline(&self, until: Instant) -> Instant {
        match self.held {
            Some(held) if held.valid_until < until && held.epoch.is_some() => held.valid_until,
            _ => until,
        }
    }

    /// A create of the lease sent at `sent_at` applied at `revision`.
    pub fn on_acquired(&mut self, sent_at: Instant, revision: u64) {
        self.held = Some(Held {
            revision,
            last_renew_sent: sent_at,
            valid_until: self.timing.valid_until(sent_at),
            epoch: None,
        });
        self.retry_at = None;
    }

    /// The epoch key now holds `epoch`, written by us during this tenure.
    pub fn on_epoch_advanced(&mut self, epoch: u64) {
        self.highest_seen_epoch = self.highest_seen_epoch.max(epoch);
        if let Some(held) = &mut self.held {
            held.epoch = Some(epoch);
        }
        self.retry_at = None;
    }

    /// A renewal sent at `sent_at` applied at `revision`. A renewal that lands after our
    /// validity ran out still proves nobody else wrote the lease in between (it was a CAS on
    /// our revision), so the tenure and its epoch continue.
    pub fn on_renewed(&mut self, sent_at: Instant, revision: u64) {
        if let Some(held) = &mut self.held {
            held.revision = revision;
            held.last_renew_sent = sent_at;
            held.valid_until = self.timing.valid_until(sent_at);
        }
        self.retry_at = None;
    }

    /// The lease moved past our revision (someone else wrote it, or it expired): the tenure is
    /// over at once.
    pub fn on_lost(&mut self) {
        self.held = None;
        self.retry_at = None;
    }

    /// An attempt ended without a known outcome, or was refused; try again after a pause.
    pub fn on_attempt_failed(&mut self, now: Instant) {
        self.retry_at = Some(now + self.timing.retry_pause());
    }

    /// Somebody rejected our message for a stale epoch: a higher epoch exists, so we are
    /// deposed even if our lease still looks valid.
    pub fn on_stale_epoch(&mut self, seen_epoch: u64) -> bool {
        self.highest_seen_epoch = self.highest_seen_epoch.max(seen_epoch);
        let deposed = self
            .held
            .is_some_and(|held| held.epoch.is_none_or(|epoch| epoch < seen_epoch));
        if deposed {
            self.on_lost();
        }
        deposed
    }

    pub fn highest_seen_epoch(&self) -> u64 {
        self.highest_seen_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> LeaseTiming {
        LeaseTiming::new(Duration::from_secs(20), Duration::from_secs(1)).unwrap()
    }

    fn leader_at(t0: Instant, epoch: u64) -> LeaseState {
        let mut state = LeaseState::new(timing());
        state.on_acquired(t0, 7);
        state.on_epoch_advanced(epoch);
        state
    }

    #[test]
    fn timing_is_validated_with_named_keys() {
        let short = LeaseTiming::new(Duration::from_secs(10), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(short, TimingError::TtlTooShort { .. }));
        assert!(short.to_string().contains("leader.lease_ttl"));
        let fractional =
            LeaseTiming::new(Duration::from_millis(15_500), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(fractional, TimingError::TtlNotWholeSeconds { .. }));
        for epsilon in [Duration::ZERO, Duration::from_secs(6)] {
            let bad = LeaseTiming::new(Duration::from_secs(20), epsilon).unwrap_err();
            assert!(matches!(bad, TimingError::EpsilonOutOfRange { .. }));
        }
        let ok = timing();
        assert_eq!(ok.renew_interval(), Duration::from_secs(5));
        assert!(ok.request_timeout() < ok.renew_interval());
    }

    #[test]
    fn leader_only_before_send_time_plus_ttl_minus_epsilon() {
        let t0 = Instant::now();
        let state = leader_at(t0, 3);
        let deadline = t0 + Duration::from_secs(19);
        assert_eq!(
            state.role(deadline - Duration::from_nanos(1)),
            Role::Leader { epoch: 3 }
        );
        assert_eq!(state.role(deadline), Role::Follower);
    }

    #[test]
    fn no_leadership_before_the_epoch_is_advanced() {
        let t0 = Instant::now();
        let mut state = LeaseState::new(timing());
        state.on_acquired(t0, 7);
        assert_eq!(state.role(t0), Role::Follower);
        assert_eq!(state.next_step(t0), Step::AdvanceEpoch);
    }

    #[test]
    fn renewal_extends_from_its_send_time_not_its_completion() {
        let t0 = Instant::now();
        let mut state = leader_at(t0, 1);
        let sent = t0 + Duration::from_secs(5);
        assert_eq!(state.next_step(sent), Step::Renew { revision: 7 });
        state.on_renewed(sent, 9);
        assert_eq!(
            state.role(sent + Duration::from_millis(18_999)),
            Role::Leader { epoch: 1 }
        );
        assert_eq!(state.role(sent + Duration::from_secs(19)), Role::Follower);
        assert_eq!(
            state.next_step(sent + Duration::from_secs(5)),
            Step::Renew { revision: 9 }
        );
    }

    #[test]
    fn waiting_wakes_up_when_validity_ends() {
        let t0 = Instant::now();
        let mut state = leader_at(t0, 1);
        // A failed renewal at 18.5 s retries 1 s later, but validity ends at 19 s: the retry
        // pause must not hide the role change.
        state.on_attempt_failed(t0 + Duration::from_millis(18_500));
        assert_eq!(
            state.next_step(t0 + Duration::from_millis(18_600)),
            Step::Wait {
                until: t0 + Duration::from_secs(19)
            }
        );
    }

    #[test]
    fn a_lost_cas_ends_the_tenure_at_once() {
        let t0 = Instant::now();
        let mut state = leader_at(t0, 4);
        state.on_lost();
        assert_eq!(state.role(t0), Role::Follower);
        assert_eq!(state.next_step(t0), Step::Acquire);
    }

    #[test]
    fn a_stale_epoch_rejection_deposes_only_when_the_epoch_is_higher() {
        let t0 = Instant::now();
        let mut state = leader_at(t0, 4);
        assert!(!state.on_stale_epoch(4));
        assert_eq!(state.role(t0), Role::Leader { epoch: 4 });
        assert!(state.on_stale_epoch(5));
        assert_eq!(state.role(t0), Role::Follower);
        assert_eq!(state.highest_seen_epoch(), 5);
    }

    #[test]
    fn follower_retries_acquisition_after_a_pause() {
        let t0 = Instant::now();
        let mut state = LeaseState::new(timing());
        assert_eq!(state.next_step(t0), Step::Acquire);
        state.on_attempt_failed(t0);
        assert_eq!(
            state.next_step(t0),
            Step::Wait {
                until: t0 + Duration::from_secs(1)
            }
        );
        assert_eq!(state.next_step(t0 + Duration::from_secs(1)), Step::Acquire);
    }

    proptest::proptest! {
        /// Whatever renewals succeed at whatever times, we are never leader at or after the
        /// last successful send time + TTL − ε.
        #[test]
        fn never_leader_past_the_last_renewal_deadline(
            gaps_ms in proptest::collection::vec(0u64..30_000, 1..20),
            probe_ms in 0u64..60_000,
        ) {
            let t0 = Instant::now();
            let mut state = leader_at(t0, 1);
            let mut last_sent = t0;
            for (i, gap) in gaps_ms.iter().enumerate() {
                let sent = last_sent + Duration::from_millis(*gap);
                state.on_renewed(sent, 10 + i as u64);
                last_sent = sent;
            }
            let probe = last_sent + Duration::from_millis(probe_ms);
            let deadline = last_sent + Duration::from_secs(19);
            proptest::prop_assert_eq!(state.role(probe).epoch().is_some(), probe < deadline);
        }
    }
}
